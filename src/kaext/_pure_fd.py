"""kaext._pure_fd -- a descriptor the pure-Python backend does not own, reached through the C library.

``_RawFd`` makes the socket calls kaext needs (``getsockopt``, ``setsockopt``,
``getsockname``, ``getpeername``, ``family``) straight on a descriptor number
through ctypes, with no socket object over it.  ``kaext._pure`` uses it for the
descriptors it is handed (``kaext._platform.RAW_SOCKOPT``), ``kaext._pure_proc``
for the duplicates of another process's descriptors, and ``kaext._connections``
for this process's own on the systems without /proc.
"""

from __future__ import annotations

import errno
import os

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]
import sys
from typing import Any

from . import _platform


class _RawFd:
    """A descriptor this process does not own, reached through the C library (ctypes).

    The ``socket.socket`` methods kaext needs -- ``getsockopt(level, opt)`` (an int),
    ``setsockopt(level, opt, int)``, ``getsockname()``, ``getpeername()`` (``(host,
    port)`` of an IPv4/IPv6 socket) and ``family`` -- made straight on the number: no
    object that could apply ``socket.setdefaulttimeout()`` to the owner's open file
    description or close the descriptor from a finalizer.  Errors are OSError with the
    C library's errno.  ``kaext._platform.RAW_SOCKOPT`` says where this is used.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def getsockopt(self, level: int, opt: int) -> int:
        libc, ctypes = _libc()
        value = ctypes.c_int(0)
        size = ctypes.c_uint32(ctypes.sizeof(value))
        if libc.getsockopt(self.fd, level, opt, ctypes.byref(value), ctypes.byref(size)) != 0:
            raise _errno_error(ctypes)
        return int(value.value)

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        libc, ctypes = _libc()
        number = ctypes.c_int(value)
        if libc.setsockopt(self.fd, level, opt, ctypes.byref(number), ctypes.sizeof(number)) != 0:
            raise _errno_error(ctypes)

    def getsockname(self) -> tuple[str, int]:
        return _address(self._name("getsockname"))

    def getpeername(self) -> tuple[str, int]:
        return _address(self._name("getpeername"))

    @property
    def family(self) -> int:
        return _sockaddr_family(self._name("getsockname"))

    def _name(self, call: str) -> bytes:
        libc, ctypes = _libc()
        buf = ctypes.create_string_buffer(128)  # sizeof(struct sockaddr_storage)
        size = ctypes.c_uint32(len(buf))
        if getattr(libc, call)(self.fd, buf, ctypes.byref(size)) != 0:
            raise _errno_error(ctypes)
        raw: bytes = buf.raw
        return raw[: min(int(size.value), len(raw))]


_LIBC: Any = None


def _libc() -> tuple[Any, Any]:
    """The C library's socket calls through ctypes (``use_errno``), made on first use."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        c_int, ptr = ctypes.c_int, ctypes.c_void_p
        for name, args in (
            ("getsockopt", (c_int, c_int, c_int, ptr, ptr)),
            ("setsockopt", (c_int, c_int, c_int, ptr, ctypes.c_uint32)),
            ("getsockname", (c_int, ptr, ptr)),
            ("getpeername", (c_int, ptr, ptr)),
        ):
            function = getattr(libc, name)
            function.argtypes, function.restype = args, c_int
        _LIBC = (libc, ctypes)
    return _LIBC  # type: ignore[no-any-return]


def _raw_available() -> bool:
    """Whether the C library's socket calls could be found through ctypes (a Python built
    without ctypes, or a C library dlopen(NULL) does not reach: the socket object path)."""
    global _RAW_OK
    if _RAW_OK is None:
        try:
            _libc()
            _RAW_OK = True
        except (ImportError, OSError, AttributeError) as exc:
            if type(exc) not in (ImportError, ModuleNotFoundError, OSError, AttributeError):
                raise  # a signal handler's (a SIGALRM TimeoutError): not an answer, ask again next time
            _RAW_OK = False
    return _RAW_OK


_RAW_OK: bool | None = None


def _errno_error(ctypes: Any) -> OSError:
    err = ctypes.get_errno() or errno.EIO
    return OSError(err, os.strerror(err))


def _sockaddr_family(raw: bytes) -> int:
    """``sa_family`` of a ``struct sockaddr`` (``kaext._platform.SOCKADDR_HAS_LEN``: after a length byte)."""
    if len(raw) < 2:
        return socket.AF_UNSPEC
    return raw[1] if _platform.SOCKADDR_HAS_LEN else int.from_bytes(raw[:2], sys.byteorder)


def _address(raw: bytes) -> tuple[str, int]:
    """``(host, port)`` of a ``sockaddr_in`` / ``sockaddr_in6`` (port at offset 2, big-endian;
    the address at 4, or 8 for IPv6); OSError EAFNOSUPPORT for another family."""
    family = _sockaddr_family(raw)
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(family, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == getattr(socket, "AF_INET6", None) and len(raw) >= 24:
        return socket.inet_ntop(family, raw[8:24]), int.from_bytes(raw[2:4], "big")
    raise OSError(errno.EAFNOSUPPORT, f"not an IPv4 or IPv6 socket (address family {family})")
