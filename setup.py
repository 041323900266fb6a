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
from setuptools.command.build_ext import build_ext as _setuptools_build_ext


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

# -- Linux: the preload library of `python -m kaext.run` ----------------------------
# A plain shared library (no Python in it), kaext/libkaext_preload.so, built from the
# same shim as the extension; kaext.run finds it next to the package and puts it in
# LD_PRELOAD.  Built with the extension, never in a pure-Python build.
PRELOAD = "kaext.libkaext_preload"


class build_ext(_setuptools_build_ext):
    """build_ext that names the preload library lib*.so, without a Python ABI tag."""

    def get_ext_filename(self, fullname: str) -> str:
        # called with the full dotted name and with its last part alone
        if PRELOAD.endswith("." + fullname) or fullname == PRELOAD:
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)


if ext_modules and platform.system() == "Linux":
    ext_modules.append(
        Extension(
            PRELOAD,
            sources=["ext/kaext_preload.c"],
            include_dirs=["ext"],
            depends=["ext/kaext_shim.h"],
            libraries=["dl"],  # dlsym: in libc only since glibc 2.34
            extra_compile_args=["-fvisibility=hidden"],
            optional=not _flag("KAEXT_REQUIRE_EXTENSION"),
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
