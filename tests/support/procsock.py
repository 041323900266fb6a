"""Find the very socket a library or another process opened, and read its options with plain getsockopt.

A socket is found by its local address (which the server side sees as the peer)
among the socket fds listed in ``/proc/<pid>/fd``; for this process the fd is
duplicated with ``os.dup``, for another one with ``pidfd_getfd(2)`` (Linux 5.6,
called through ``syscall``: Python's os module has ``pidfd_open`` but not
``pidfd_getfd``).  Linux only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from typing import Any

import pytest

HAVE_PROC = os.path.isdir("/proc/self/fd") and hasattr(socket, "TCP_USER_TIMEOUT")
need_proc = pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc and its TCP options")

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (new system call table)
_TCP = socket.IPPROTO_TCP


def options(s: socket.socket) -> tuple[int, int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT), by plain getsockopt."""
    return (
        s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        s.getsockopt(_TCP, socket.TCP_KEEPIDLE),
        s.getsockopt(_TCP, socket.TCP_KEEPINTVL),
        s.getsockopt(_TCP, socket.TCP_KEEPCNT),
        s.getsockopt(_TCP, socket.TCP_USER_TIMEOUT),
    )


def fresh_options() -> tuple[int, int, int, int, int]:
    """What a TCP socket nobody touched has here (the kernel's defaults)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return options(s)


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    got = libc.syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(got)


def _same(a: Any, b: Any) -> bool:
    """Same (host, port), an IPv4-mapped IPv6 address equal to its IPv4 one (dual-stack sockets)."""
    if b is None:
        return True
    if not (isinstance(a, tuple) and isinstance(b, tuple)):
        return bool(a == b)
    host_a, host_b = (str(h).removeprefix("::ffff:") for h in (a[0], b[0]))
    return (host_a, a[1]) == (host_b, b[1])


def find_socket(local: Any, pid: int | None = None, peer: Any = None) -> socket.socket:
    """Our own handle on the socket of process ``pid`` (default: this one) bound to ``local``.

    ``local`` and ``peer`` are addresses as getsockname() / getpeername() return them;
    ``peer`` picks one of several sockets with the same local address (accepted ones);
    ``local=None`` matches on ``peer`` alone.
    """
    own = pid is None or pid == os.getpid()
    proc = "/proc/self/fd" if own else f"/proc/{pid}/fd"
    pidfd = -1
    if not own:
        try:
            pidfd = os.pidfd_open(pid)  # type: ignore[arg-type]
        except OSError as exc:  # a container's seccomp filter, an old kernel
            pytest.skip(f"cannot open a pidfd here: {exc}")
    try:
        for name in os.listdir(proc):
            try:
                if not os.readlink(f"{proc}/{name}").startswith("socket:"):
                    continue
                fd = os.dup(int(name)) if own else _pidfd_getfd(pidfd, int(name))
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.ENOSYS):
                    pytest.skip(f"cannot take another process's fd here: {exc}")
                continue  # closed meanwhile
            s = socket.socket(fileno=fd)
            try:
                if _same(s.getsockname(), local) and (peer is None or _same(s.getpeername(), peer)):
                    return s
            except OSError:
                pass
            s.close()
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    raise AssertionError(f"no socket bound to {local!r} (peer {peer!r}) in {proc}")


def options_of(local: Any, pid: int | None = None, peer: Any = None) -> tuple[int, int, int, int, int]:
    """``options()`` of the socket ``find_socket`` finds."""
    with find_socket(local, pid, peer) as s:
        return options(s)
