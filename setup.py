"""Build script: compiles the Cython extension unless told not to.

``KAEXT_NO_EXTENSIONS=1`` (or a Python other than CPython, such as PyPy) gives a
pure-Python package with the same API (see ``kaext._pure``) in a
``py3-none-any`` wheel.  Without a working C compiler the extension is skipped
with a warning and the package falls back to the same pure-Python code, unless
``KAEXT_REQUIRE_EXTENSION=1`` is set (CI and the wheel builds set it), which
makes a failed compile a failed build.
"""

import os
import platform

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _want_extension() -> bool:
    if _flag("KAEXT_NO_EXTENSIONS"):
        return False
    return platform.python_implementation() == "CPython"


ext_modules = []
if _want_extension():
    from Cython.Build import cythonize

    libraries = ["ws2_32"] if os.name == "nt" else []
    ext_modules = cythonize(
        [
            Extension(
                "kaext._kaext",
                sources=["ext/_kaext.pyx"],
                include_dirs=["ext"],
                depends=["ext/kaext_shim.h", "ext/kaext_posix.h", "ext/kaext_windows.h"],
                libraries=libraries,
                # optional: a compiler error warns and leaves the pure-Python
                # fallback, so the sdist installs anywhere.
                optional=not _flag("KAEXT_REQUIRE_EXTENSION"),
            )
        ],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
