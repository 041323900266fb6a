"""kaext._pure_proc -- running processes (kaext.connections) in the pure-Python backend.

What the extension's running-process part (``ext/_kaext_proc.pxi`` over
``ext/kaext_proc.h``) does, with ctypes, ``socket.getsockopt`` and ``struct``:
``pidfd_open``, ``pidfd_getfd``, ``proc_read`` and the sock_diag dump parser
``diag_parse``.  Linux only, OSError ENOSYS elsewhere.  ``kaext._pure`` exports
them as part of the backend interface.
"""

from __future__ import annotations

import errno
import os

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]
import struct
from typing import Any

from . import _linux_abi, _platform
from ._pure_fd import _errno_error, _libc, _RawFd


def pidfd_open(pid: int, flags: int = 0) -> int:
    """A pidfd for process ``pid``: Python's own ``os.pidfd_open`` (3.9+, where the build
    knew the call), else OSError ENOSYS.  ``flags``: 0, or PIDFD_THREAD
    (``kaext._platform.PIDFD_THREAD``, Linux 6.9+) for a pidfd of the thread ``pid``."""
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        raise OSError(errno.ENOSYS, "pidfd_open is not available in this Python")
    return int(open_pidfd(pid, flags))


_getfd: Any = None  # pidfd_getfd through libc's syscall(), made on first use


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """Duplicate descriptor ``fd`` of the process behind ``pidfd`` into this one (Linux 5.6+),
    through libc's ``syscall()``: Python's os module has no pidfd_getfd."""
    global _getfd
    if _getfd is None:
        libc, ctypes = _libc()
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        number = ctypes.c_long(_platform.sys_pidfd_getfd())

        def getfd(pidfd: int, fd: int) -> int:
            new = int(syscall(number, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0)))
            if new < 0:
                raise _errno_error(ctypes)
            return new

        _getfd = getfd
    return int(_getfd(pidfd, fd))


#: pidfd_getfd's errors that are the same for every descriptor of a process
_DENIED = (errno.EPERM, errno.EACCES, errno.ENOSYS)


def proc_read(pidfd: int, fds: Any) -> list[tuple[int, int, int, int, int, int, int | None]]:
    """Read inode, keepalive and user timeout of many descriptors, in kernel units.

    ``fds``: descriptors of the process behind ``pidfd`` (each duplicated with
    ``pidfd_getfd``), or of this process when ``pidfd`` is -1 (each duplicated with
    ``dup``); every value of one descriptor is read from its duplicate, so a number
    closed or reused meanwhile cannot mix two sockets, and the duplicate is closed.
    Returns one ``(err, inode, keepalive, idle, interval, count, user_timeout)`` per
    descriptor, as the extension's ``proc_read`` does.
    """
    out: list[tuple[int, int, int, int, int, int, int | None]] = []
    for index, fd in enumerate(fds):
        dup = -1
        try:
            dup = pidfd_getfd(pidfd, fd) if pidfd >= 0 else os.dup(fd)
            out.append(_proc_read_one(dup))
        except OSError as exc:
            if exc.errno is None:  # not the kernel's answer: a signal handler's (a SIGALRM timeout)
                raise
            err = exc.errno
            if pidfd >= 0 and dup < 0 and err in _DENIED:  # the same for every descriptor: stop here
                out.extend([(err, 0, 0, 0, 0, 0, None)] * (len(fds) - index))
                return out
            out.append((err, 0, 0, 0, 0, 0, None))
        finally:
            if dup >= 0:
                os.close(dup)
    return out


def _proc_read_one(fd: int) -> tuple[int, int, int, int, int, int, int | None]:
    """One descriptor of :func:`proc_read` (this process's duplicate)."""
    import stat

    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        return (errno.ENOTSOCK, 0, 0, 0, 0, 0, None)
    s = _RawFd(fd)
    tcp = socket.IPPROTO_TCP
    try:
        keepalive = 1 if s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) else 0
        idle = s.getsockopt(tcp, socket.TCP_KEEPIDLE)
        interval = s.getsockopt(tcp, socket.TCP_KEEPINTVL)
        count = s.getsockopt(tcp, socket.TCP_KEEPCNT)
    except OSError as exc:
        if exc.errno is None:  # a signal handler's
            raise
        return (exc.errno, st.st_ino, 0, 0, 0, 0, None)
    ut: int | None = None
    user_timeout_opt = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout_opt is not None:
        try:
            ut = s.getsockopt(tcp, user_timeout_opt)
        except OSError:
            ut = None
    return (0, st.st_ino, keepalive, idle, interval, count, ut)


# nlmsghdr + inet_diag_msg (include/uapi/linux/inet_diag.h): family, state, timer, retrans,
# sport, dport (big-endian), src[16], dst[16], if, cookie[8], expires (ms), rqueue, wqueue,
# uid, inode
_DIAG_MESSAGE = struct.Struct("=IHHII BBBB 2s2s16s16s I8x IIIII")
# the message length, its type and the inode alone: the scan over every socket
_DIAG_SCAN = struct.Struct("=IH78xI")
_DIAG_INODE_WORD = 21  # the inode's offset (84) in 32-bit words
_DIAG_FAMILY: dict[int, tuple[str, int]] = {socket.AF_INET: ("IPv4", 4), socket.AF_INET6: ("IPv6", 16)}


def diag_parse(
    buf: bytearray,
    n: int,
    wanted: set[int],
    table: dict[int, Any],
    states: tuple[str, ...],
    timers: tuple[str, ...],
    keepalive_timer: int,
) -> bool:
    """Parse one read (``buf[:n]``) of a sock_diag dump of TCP sockets into ``table``.

    Adds ``{inode: (family, state, (host, port), (host, port), timer, timer_left,
    probes)}`` for the ``wanted`` inodes (``states`` and ``timers`` name the kernel's
    numbers; probes only while the timer is ``keepalive_timer``).  Returns True at
    the end of the dump.  ``buf`` has room for a scan past ``n``.
    """
    if n < 16:
        raise OSError(errno.EPROTO, "sock_diag: short netlink message")
    view = memoryview(buf)
    words = view.cast("I")
    size = words[0]
    # Usually every message of one read has the same size: then the inodes are a
    # strided slice of the buffer, and only the wanted ones are unpacked.
    if (
        size >= _DIAG_MESSAGE.size
        and size % 4 == 0
        and n % size == 0
        and words[1] & 0xFFFF == _linux_abi.SOCK_DIAG_BY_FAMILY
    ):
        stride = size // 4
        count = n // size
        if words[0 : count * stride : stride].tolist() == [size] * count:
            inodes = words[_DIAG_INODE_WORD : count * stride : stride].tolist()
            message = _DIAG_MESSAGE.unpack_from
            for index in (i for i, inode in enumerate(inodes) if inode in wanted):
                table[inodes[index]] = _diag_row(message(view, index * size), states, timers, keepalive_timer)
            return False
    return _diag_messages(buf, view, n, wanted, table, states, timers, keepalive_timer)


def _diag_messages(
    buf: bytearray,
    view: memoryview,
    n: int,
    wanted: set[int],
    table: dict[int, Any],
    states: tuple[str, ...],
    timers: tuple[str, ...],
    keepalive_timer: int,
) -> bool:
    """One read of the dump, message by message; True at its end."""
    scan = _DIAG_SCAN.unpack_from
    message = _DIAG_MESSAGE.unpack_from
    off = 0
    while off + 16 <= n:
        # the slack after the read's limit lets the scan read past a short last message
        length, kind, inode = scan(buf, off)
        if kind == _linux_abi.NLMSG_DONE:
            return True
        if kind == _linux_abi.NLMSG_ERROR:
            code = -struct.unpack_from("=i", buf, off + 16)[0]
            raise OSError(code, f"sock_diag: {os.strerror(code)}")
        if length < _DIAG_MESSAGE.size:
            raise OSError(errno.EPROTO, "sock_diag: malformed netlink message")
        if inode in wanted:
            table[inode] = _diag_row(message(view, off), states, timers, keepalive_timer)
        off += (length + 3) & ~3
    return False


def _diag_row(m: tuple[Any, ...], states: tuple[str, ...], timers: tuple[str, ...], keepalive_timer: int) -> Any:
    family, state, timer, retrans, sport, dport, src, dst = m[5:13]
    expires = m[14]
    name, size = _DIAG_FAMILY[family]
    return (
        name,
        states[state] if state < len(states) else str(state),
        (socket.inet_ntop(family, src[:size]), int.from_bytes(sport, "big")),
        (socket.inet_ntop(family, dst[:size]), int.from_bytes(dport, "big")),
        timers[timer] if timer < len(timers) else str(timer),
        None if timer == 0 else expires / 1000,
        retrans if timer == keepalive_timer else None,
    )
