"""Build script: compiles the Cython extension unless told not to.

``KAEXT_NO_EXTENSIONS=1`` (or a Python other than CPython, such as PyPy) gives a
pure-Python package with the same API (see ``kaext._pure``) in a
``py3-none-any`` wheel.  Without a working C compiler the extension is skipped
with a warning and the package falls back to the same pure-Python code, unless
``KAEXT_REQUIRE_EXTENSION=1`` is set (CI and the wheel builds set it), which
makes a failed compile a failed build.

Release builds carry no debug information: with gcc or clang (every platform but
MSVC on Windows) the extension (and the preload library) is compiled with
``-g0 -O2`` and, on ELF platforms, linked with ``-s``.  ``KAEXT_DEBUG=1`` asks for a debug build instead
(``-g -O0``, not stripped), e.g. for gdb or the sanitizers.

``KAEXT_LIMITED_API=1`` builds the extension against Python's Limited API
(``Py_LIMITED_API`` 3.10): one ``cp310-abi3`` wheel for CPython 3.10 and every later
version.  The released wheels are version-specific: the Limited API measured slower on
the hot paths (``Policy.from_socket`` +20 %, ``Policy.apply`` +7 %, ``import kaext``
3 ms -> 8 ms; ``docs/performance.md``).  A free-threaded CPython (3.14t, 3.15t) has no
stable ABI Cython builds for yet (PEP 803's abi3t): its build is always version-specific.
"""

import os
import platform
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _want_extension() -> bool:
    if _flag("KAEXT_NO_EXTENSIONS"):
        return False
    return platform.python_implementation() == "CPython"


# --- release / debug build flags (gcc and clang; MSVC keeps its defaults) -------------
def _build_flags() -> tuple[list[str], list[str]]:
    """(extra compile args, extra link args) for the extension.

    Python's own CFLAGS usually contain ``-g``; the extra arguments come after
    them on the command line, so ``-g0`` wins.  ``-s`` strips the linked module
    (macOS's linker keeps no debug info in the module and calls ``-s`` obsolete).
    """
    if os.name == "nt":
        return [], []
    if _flag("KAEXT_DEBUG"):
        return ["-g", "-O0"], []
    link = [] if platform.system() == "Darwin" else ["-s"]
    return ["-g0", "-O2"], link


extra_compile_args, extra_link_args = _build_flags()

#: The oldest CPython the Limited-API build serves: the wheel tag (cp310-abi3) and the macro.
LIMITED_API_TAG = "cp310"
LIMITED_API_HEX = "0x030A0000"


def _want_limited_api() -> bool:
    """The Limited API when asked for (KAEXT_LIMITED_API=1) and the interpreter is not free-threaded."""
    if not _flag("KAEXT_LIMITED_API"):
        return False
    return not sysconfig.get_config_var("Py_GIL_DISABLED")


limited_api = _want_extension() and _want_limited_api()
# ----------------------------------------------------------------------------------------

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
                depends=[
                    "ext/_kaext_proc.pxi",
                    "ext/_kaext_bpf.pxi",
                    "ext/_kaext_watch.pxi",
                    "ext/kaext_shim.h",
                    "ext/kaext_posix.h",
                    "ext/kaext_windows.h",
                    "ext/kaext_proc.h",
                    "ext/kaext_bpf.h",
                    "ext/kaext_watch.h",
                ],
                libraries=libraries,
                extra_compile_args=extra_compile_args,
                extra_link_args=extra_link_args,
                define_macros=[("Py_LIMITED_API", LIMITED_API_HEX)] if limited_api else [],
                py_limited_api=limited_api,
            )
        ],
        compiler_directives={"language_level": "3"},
    )


# --- The extension is optional unless KAEXT_REQUIRE_EXTENSION=1 -------------------------
# cythonize() drops Extension(optional=True), so the fallback is done here: a failed
# compile or link leaves the pure-Python implementation (kaext._pure, same API) and
# says so; with KAEXT_REQUIRE_EXTENSION=1 (CI, the wheel builds) it fails the build.
_FALLBACK_MESSAGE = (
    "kaext: the C extension could not be built ({error}); the pure-Python "
    "implementation was installed instead (same API, kaext.IMPLEMENTATION == 'python'). "
    "Install a C compiler and reinstall for the extension, or set "
    "KAEXT_REQUIRE_EXTENSION=1 to make this an error."
)


# -- Linux: the preload library of `python -m kaext.run` ----------------------------------
# A plain shared library (no Python in it), kaext/libkaext_preload.so, built from the
# same shim as the extension; kaext.run finds it next to the package and puts it in
# LD_PRELOAD.  Built with the extension, never in a pure-Python build.  A failed build
# of it leaves kaext.run covering Python code only (KAEXT_REQUIRE_EXTENSION=1: an error).
PRELOAD = "kaext.libkaext_preload"
_PRELOAD_FALLBACK_MESSAGE = (
    "kaext: the preload library could not be built ({error}); python -m kaext.run will cover Python code only."
)


class BuildExt(build_ext):
    #: Set when the C extension could not be built: the package is pure Python from then on.
    pure = False

    def get_ext_filename(self, fullname: str) -> str:
        # lib*.so without a Python ABI tag; called with the dotted name and its last part
        if fullname in (PRELOAD, PRELOAD.rsplit(".", 1)[1]):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext: Extension) -> None:
        if ext.name == PRELOAD and self.pure:
            # no extension, no preload library: not one left by an earlier build either, which
            # setuptools would take for up to date when it is newer than its sources
            self._remove_stale(ext)
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a missing compiler
            if _flag("KAEXT_REQUIRE_EXTENSION"):
                raise
            # a library left by an earlier build of older sources would be packaged and
            # loaded instead of the fallback the message promises
            self._remove_stale(ext)
            if ext.name != PRELOAD:
                # a pure-Python package now: installed as purelib, a py3-none-any wheel
                BuildExt.pure = True
                self.distribution.ext_modules = []
            message = _PRELOAD_FALLBACK_MESSAGE if ext.name == PRELOAD else _FALLBACK_MESSAGE
            error = f"{type(exc).__name__}: {exc}"
            print("\nWARNING: " + message.format(error=error) + "\n", file=sys.stderr, flush=True)

    def _remove_stale(self, ext: Extension) -> None:
        stale = self.get_ext_fullpath(ext.name)
        if os.path.exists(stale):
            os.remove(stale)


class BdistWheel(bdist_wheel):
    """The wheel is tagged pure (``py3-none-any``) when the build left no compiled code:
    the tag is otherwise chosen before the build, from the extensions it was asked for
    (``cp310-abi3`` for the Limited-API build)."""

    def finalize_options(self) -> None:
        if limited_api and not self.py_limited_api:
            self.py_limited_api = LIMITED_API_TAG
        super().finalize_options()

    def run_command(self, command: str) -> None:
        super().run_command(command)
        if command == "build":
            self.root_is_pure = not (self.distribution.has_ext_modules() or self.distribution.has_c_libraries())


if ext_modules and platform.system() == "Linux":
    ext_modules.append(
        Extension(
            PRELOAD,
            sources=["ext/kaext_preload.c"],
            include_dirs=["ext"],
            depends=["ext/kaext_shim.h", "ext/kaext_posix.h"],
            libraries=["dl"],  # dlsym: in libc only since glibc 2.34
            extra_compile_args=["-fvisibility=hidden", *extra_compile_args],
            extra_link_args=extra_link_args,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt, "bdist_wheel": BdistWheel})
