"""Build script: compiles the Cython extension unless told not to.

``KAEXT_NO_EXTENSIONS=1`` (or a Python without a C compiler or Cython, such as
PyPy) gives a pure-Python package with the same API; see ``kaext._pure``.
"""

import os
import platform

from setuptools import Extension, setup


def _want_extension() -> bool:
    if os.environ.get("KAEXT_NO_EXTENSIONS", "") not in ("", "0"):
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
                depends=["ext/kaext_shim.h"],
                libraries=libraries,
            )
        ],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
