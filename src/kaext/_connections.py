"""``kaext.connections()``: the TCP sockets a running process holds, as the kernel sees them.

Linux (``_platform.CONNECTIONS == "proc"``), for any process ``pid``:

1. ``/proc/<pid>/fd``: one directory read gives the descriptor numbers;
2. each descriptor (of any kind: which are sockets is not known yet) is
   duplicated into this process with ``pidfd_getfd`` and read: ``fstat`` (is it a
   socket, which inode), SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
   TCP_USER_TIMEOUT; then closed (the process keeps its own, so this closes nothing).  That needs the
   right to ptrace ``pid`` (PTRACE_MODE_ATTACH: the same real user id and Yama's
   ``ptrace_scope`` rules, or CAP_SYS_PTRACE).  Without it the sockets are found
   by ``readlink`` of each ``/proc/<pid>/fd/N`` (``socket:[INODE]``, which needs
   only PTRACE_MODE_READ) and listed with ``keepalive`` None and ``reason``
   saying why.  This process's own descriptors are read directly;
3. the kernel's TCP tables give address, state and timer of each inode:
   sock_diag netlink (``NETLINK_SOCK_DIAG``, a dump per address family) when the
   process shares this process's network namespace, else ``/proc/<pid>/net/tcp``
   and ``tcp6``, which show the process's own namespace.

The C extension reads all descriptors in one call and parses the dump in C
(``ext/kaext_proc.h``); the pure-Python version does the same with
``socket.getsockopt``, ctypes and ``struct``.

Other POSIX systems (``"fds"``): this process's own sockets, found by trying each
descriptor number below the open-files limit; the kernel's timers are not shown
there (``timer`` None).  Elsewhere: OSError ENOSYS.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

# Internal names, in one place.
from . import _backend, _platform
from ._functions import KeepaliveState, get_keepalive, get_user_timeout
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from ._policy import Policy

    #: (err, inode, keepalive, idle, interval, count, user_timeout) in kernel units
    OptionsRow = tuple[int, int, int, int, int, int, int | None]
    #: (family, state, local, remote, timer, timer_left, probes)
    TableRow = tuple[str, str, tuple[str, int], tuple[str, int], str, float | None, int | None]
    Reader = Callable[[int, Sequence[int]], list[OptionsRow]]
    #: One socket of a process: (fd, err, [keepalive, idle, interval, count, user_timeout]
    #: in kernel units, or None when err)
    Socket = tuple[int, int, "tuple[int, int, int, int, int | None] | None"]

__all__ = ["Connection", "connections"]


class Connection(Record):
    """One TCP socket a process holds, with its keepalive settings and the kernel's timer.

    ``pid`` and ``fd``: the process and its descriptor number.  ``family``: ``"IPv4"``
    or ``"IPv6"``.  ``local`` / ``remote``: ``(host, port)``; ``remote`` is
    ``("0.0.0.0", 0)`` / ``("::", 0)`` for a listener.  ``state``: the kernel's TCP
    state name (``"ESTABLISHED"``, ``"LISTEN"``, ``"CLOSE_WAIT"``, ...).

    ``keepalive``: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL (seconds) and
    TCP_KEEPCNT as a :class:`KeepaliveState`, or None when the socket could not be
    read; ``reason`` then says why (no right to ptrace the process, the descriptor
    closed meanwhile, ...), and is None otherwise.  ``user_timeout``:
    TCP_USER_TIMEOUT in seconds (Linux unit ms; 0 is the system default), or None.

    ``timer``: the kernel's pending timer for the socket: ``"keepalive"`` (the next
    keepalive probe, or the FIN_WAIT2 timeout), ``"retransmit"``, ``"persist"``
    (zero-window probe), ``"timewait"`` or ``"off"``; None where the OS does not show
    it.  ``timer_left``: seconds until it fires (None when off).  ``probes``: keepalive
    probes sent and not answered, while the keepalive timer runs (else None).
    Linux: sock_diag's ``idiag_timer``, ``idiag_expires`` and ``idiag_retrans`` (the
    columns ``ss -o`` shows).
    """

    _fields = (
        "pid",
        "fd",
        "family",
        "local",
        "remote",
        "state",
        "keepalive",
        "user_timeout",
        "timer",
        "timer_left",
        "probes",
        "reason",
    )
    # Thousands are made per call: the fields live in one tuple, read through
    # properties (made below), so that making one is a single store.
    __slots__ = ("_v",)
    _v: tuple[Any, ...]

    if TYPE_CHECKING:
        pid: int
        fd: int
        family: str
        local: tuple[str, int]
        remote: tuple[str, int]
        state: str
        keepalive: KeepaliveState | None
        user_timeout: float | None
        timer: str | None
        timer_left: float | None
        probes: int | None
        reason: str | None

    def __init__(
        self,
        pid: int,
        fd: int,
        family: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        state: str,
        keepalive: KeepaliveState | None,
        user_timeout: float | None,
        timer: str | None,
        timer_left: float | None,
        probes: int | None,
        reason: str | None = None,
    ) -> None:
        object.__setattr__(
            self,
            "_v",
            (pid, fd, family, local, remote, state, keepalive, user_timeout, timer, timer_left, probes, reason),
        )

    def _values(self) -> tuple[Any, ...]:
        return self._v


def _field(index: int, name: str) -> property:
    def get(self: Connection) -> Any:
        return self._v[index]

    get.__name__ = name
    return property(get, doc=f"``{name}``: see :class:`Connection`")


for _index, _name in enumerate(Connection._fields):
    setattr(Connection, _name, _field(_index, _name))
del _index, _name

_new = object.__new__
_store: Callable[[Connection, tuple[Any, ...]], None] = Connection.__dict__["_v"].__set__


def _connection(values: tuple[Any, ...]) -> Connection:
    """A Connection from its 12 field values, without the call to ``__init__``."""
    row: Connection = _new(Connection)
    _store(row, values)
    return row


def connections(pid: int | None = None) -> list[Connection]:
    """The TCP sockets (IPv4 and IPv6) that process ``pid`` holds (default: this process), by descriptor.

    Linux: listeners and connections in every state the kernel's TCP tables hold
    (a socket neither bound nor connected is in none and is not listed); options
    read through ``pidfd_getfd`` (Linux 5.6+), which needs the right to ptrace
    ``pid``; without it ``keepalive`` and ``user_timeout`` are None and ``reason``
    says why.  Raises ProcessLookupError when there is no such process and
    PermissionError when its descriptors cannot even be listed (another user's
    process, without CAP_SYS_PTRACE).

    Other POSIX systems: this process's sockets only (``pid`` None or
    ``os.getpid()``; another pid raises OSError ENOSYS), without timers.
    Windows: OSError ENOSYS.
    """
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise TypeError(f"pid must be an int or None, got {type(pid).__name__} {pid!r}")
    if pid is not None and pid <= 0:
        raise ValueError(f"pid={pid!r} is not a process id (must be positive)")
    mode = _platform.CONNECTIONS
    if mode == "proc":
        rows, errors = _collect([os.getpid() if pid is None else pid])
        if errors:
            raise errors[0][1]
        return rows
    if mode == "fds" and (pid is None or pid == os.getpid()):
        return _own_fds()
    missing = _platform.connections_unavailable(mode)
    raise OSError(errno.ENOSYS, f"kaext.connections(pid={pid!r}): {missing}")


# --------------------------------------------------------------------------------------
# Linux: /proc/<pid>/fd, and the sockets behind it
# --------------------------------------------------------------------------------------


def _list_fds(pid: int) -> list[int]:
    """The descriptor numbers of process ``pid``, ascending: one read of ``/proc/<pid>/fd``."""
    path = f"/proc/{pid}/fd"
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES,
            f"no permission to list the descriptors of process {pid} ({path}): it belongs to "
            "another user; run as that user or with CAP_SYS_PTRACE",
        ) from None
    return sorted(map(int, names))


def _socket_links(pid: int, fds: list[int]) -> dict[int, int]:
    """``{inode: fd}`` from ``readlink /proc/<pid>/fd/N`` (``socket:[INODE]``): the way when
    the descriptors themselves cannot be duplicated (it needs only PTRACE_MODE_READ)."""
    found: dict[int, int] = {}
    readlink = os.readlink
    prefix = f"/proc/{pid}/fd/"
    for fd in fds:
        try:
            link = readlink(prefix + str(fd))
        except FileNotFoundError:  # closed since the directory was read
            continue
        except PermissionError:
            raise PermissionError(
                errno.EACCES, f"no permission to read the descriptors of process {pid} ({prefix}N)"
            ) from None
        if link.startswith("socket:["):
            found.setdefault(int(link[8:-1]), fd)
    return found


def _sockets(pid: int) -> tuple[dict[int, Socket], str | None]:
    """``{inode: (fd, err, options)}`` for the sockets process ``pid`` holds, lowest fd
    first for a shared one; and why no options could be read, when none could."""
    fds = _list_fds(pid)
    if not fds:  # a kernel thread, or a process that holds nothing
        return {}, None
    pidfd = -1
    if pid != os.getpid():
        try:
            pidfd = _pidfd_open(pid)
        except ProcessLookupError:
            raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
        except OSError as exc:  # ENOSYS: a kernel before 5.3
            err = exc.errno or errno.ENOSYS
            return {inode: (fd, err, None) for inode, fd in _socket_links(pid, fds).items()}, _unreadable(err, pid)
    try:
        results = _read_options(pidfd, fds)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    found: dict[int, Socket] = {}
    for fd, (err, inode, keepalive, idle, interval, count, user_timeout) in zip(fds, results, strict=True):
        if inode:
            if inode not in found:
                found[inode] = (fd, err, None if err else (keepalive, idle, interval, count, user_timeout))
        elif err in _DENIED:  # the same for every descriptor of the process
            reason = _unreadable(err, pid)
            return {inode: (fd, err, None) for inode, fd in _socket_links(pid, fds).items()}, reason
    return found, None


_DENIED = (errno.EPERM, errno.EACCES, errno.ENOSYS)


def _all_pids() -> list[int]:
    """Every process this system shows (Linux: the numeric entries of /proc)."""
    if _platform.CONNECTIONS != "proc":
        raise OSError(
            errno.ENOSYS, f"listing every process's sockets: {_platform.connections_unavailable(_platform.CONNECTIONS)}"
        )
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


# --------------------------------------------------------------------------------------
# Linux: the kernel's TCP tables
# --------------------------------------------------------------------------------------

#: include/net/tcp_states.h; 13 is TCP_BOUND_INACTIVE (bound, not listening, Linux 6.8+).
_STATES = (
    "?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE",
)
#: idiag_timer and /proc/net/tcp's "tr" column (net/ipv4/inet_diag.c, tcp_ipv4.c).
_TIMERS = ("off", "retransmit", "keepalive", "timewait", "persist")
_KEEPALIVE_TIMER = 2

#: include/uapi/linux/{netlink,sock_diag,inet_diag}.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
#: Every state but TIME_WAIT and NEW_SYN_RECV, which no process holds a descriptor of.
_DUMP_STATES = 0xFFFFFFFF & ~((1 << 6) | (1 << 12))
# nlmsghdr (len, type, flags, seq, pid) + inet_diag_req_v2 (family, protocol, ext, pad,
# states, inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2])
_REQUEST = struct.Struct("=IHHII BBBxI 48x")
# nlmsghdr + inet_diag_msg: family, state, timer, retrans, sport, dport (big-endian),
# src[16], dst[16], if, cookie[8], expires (ms), rqueue, wqueue, uid, inode
_MESSAGE = struct.Struct("=IHHII BBBB 2s2s16s16s I8x IIIII")
# the message length, its type and the inode alone: the scan over every socket
_SCAN = struct.Struct("=IH78xI")
_INODE_WORD = 21  # the inode's offset (84) in 32-bit words

_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_ADDR_LEN: dict[int, int] = {socket.AF_INET: 4, socket.AF_INET6: 16}


def _netlink_table(wanted: set[int]) -> dict[int, TableRow]:
    """The TCP sockets of this network namespace from sock_diag: the ``wanted`` inodes.

    One dump per address family; the IPv6 one only while a wanted socket is still
    missing, and a dump is left as soon as none is (closing the netlink socket ends it).
    """
    table: dict[int, TableRow] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        buf = bytearray((1 << 16) + _SCAN.size)  # a dump message is at most 32 KiB
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            nl.send(
                _REQUEST.pack(
                    _REQUEST.size, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0,
                    family, socket.IPPROTO_TCP, 0, _DUMP_STATES,
                )
            )
            if not _read_dump(nl, buf, wanted, table):
                break  # every wanted socket found: no need to read on
    return table


def _read_dump(nl: socket.socket, buf: bytearray, wanted: set[int], table: dict[int, TableRow]) -> bool:
    """Read one dump into ``table``; False when it was left early with every wanted socket found."""
    parse = _parse_read
    limit = len(buf) - _SCAN.size
    total = len(wanted)
    while True:
        n = nl.recv_into(buf, limit)
        if parse(buf, n, wanted, table):
            return len(table) < total
        if len(table) >= total:
            return False


def _parse_read_python(buf: bytearray, n: int, wanted: set[int], table: dict[int, TableRow]) -> bool:
    """Parse one read of the dump into ``table``; True at the end of the dump."""
    if n < 16:
        raise OSError(errno.EPROTO, "sock_diag: short netlink message")
    view = memoryview(buf)
    words = view.cast("I")
    size = words[0]
    # Usually every message of one read has the same size: then the inodes are a
    # strided slice of the buffer, and only the wanted ones are unpacked.
    if size >= _MESSAGE.size and size % 4 == 0 and n % size == 0 and words[1] & 0xFFFF == _SOCK_DIAG_BY_FAMILY:
        stride = size // 4
        count = n // size
        if words[0 : count * stride : stride].tolist() == [size] * count:
            inodes = words[_INODE_WORD : count * stride : stride].tolist()
            message = _MESSAGE.unpack_from
            for index in (i for i, inode in enumerate(inodes) if inode in wanted):
                table[inodes[index]] = _parse_message(message(view, index * size))
            return False
    return _read_messages(buf, view, n, wanted, table)


def _read_messages(buf: bytearray, view: memoryview, n: int, wanted: set[int], table: dict[int, TableRow]) -> bool:
    """One read of the dump, message by message; True at its end."""
    scan = _SCAN.unpack_from
    message = _MESSAGE.unpack_from
    off = 0
    while off + 16 <= n:
        # the slack after the read's limit lets the scan read past a short last message
        length, kind, inode = scan(buf, off)
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", buf, off + 16)[0]
            raise OSError(code, f"sock_diag: {os.strerror(code)}")
        if length < _MESSAGE.size:
            raise OSError(errno.EPROTO, "sock_diag: malformed netlink message")
        if inode in wanted:
            table[inode] = _parse_message(message(view, off))
        off += (length + 3) & ~3
    return False


def _parse_message(m: tuple[Any, ...]) -> TableRow:
    family, state, timer, retrans, sport, dport, src, dst = m[5:13]
    expires = m[14]
    size = _ADDR_LEN[family]
    local = (socket.inet_ntop(family, src[:size]), int.from_bytes(sport, "big"))
    remote = (socket.inet_ntop(family, dst[:size]), int.from_bytes(dport, "big"))
    return _row(family, state, local, remote, timer, expires / 1000, retrans)


def _row(
    family: int, state: int, local: tuple[str, int], remote: tuple[str, int], timer: int, left: float, retrans: int
) -> TableRow:
    timer_name = _TIMERS[timer] if timer < len(_TIMERS) else str(timer)
    return (
        _FAMILY_NAME[family],
        _STATES[state] if state < len(_STATES) else str(state),
        local,
        remote,
        timer_name,
        None if timer == 0 else left,
        retrans if timer == _KEEPALIVE_TIMER else None,
    )


def _proc_table(pid: int, wanted: set[int]) -> dict[int, TableRow]:
    """The same from ``/proc/<pid>/net/tcp`` and ``tcp6``: the namespace of process ``pid``."""
    table: dict[int, TableRow] = {}
    ticks = os.sysconf("SC_CLK_TCK")  # the "when" column is in clock_t ticks (USER_HZ)
    for family, name in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        try:
            with open(f"/proc/{pid}/net/{name}", encoding="ascii") as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
            continue  # no IPv6 in this kernel
        for line in lines:
            fields = line.split()
            inode = int(fields[9])
            if inode not in wanted:
                continue
            timer, when = fields[5].split(":")
            table[inode] = _row(
                family,
                int(fields[3], 16),
                _proc_address(family, fields[1]),
                _proc_address(family, fields[2]),
                int(timer, 16),
                int(when, 16) / ticks,
                int(fields[8]),  # icsk_probes_out (the "timeout" column)
            )
    return table


def _proc_address(family: int, text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ``("127.0.0.1", 8080)``: 32-bit words in host order, then the port."""
    address, port = text.split(":")
    raw = b"".join(struct.pack("=I", int(address[i : i + 8], 16)) for i in range(0, len(address), 8))
    return socket.inet_ntop(family, raw), int(port, 16)


def _netns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------------------
# Linux: the options, through pidfd_getfd
# --------------------------------------------------------------------------------------


def _read_options_python(pidfd: int, fds: Sequence[int]) -> list[OptionsRow]:
    """What ``_kaext.proc_read`` does, with ctypes and ``socket.getsockopt``."""
    import stat

    getfd = _pidfd_getfd_ctypes() if pidfd >= 0 else None
    tcp, sol = socket.IPPROTO_TCP, socket.SOL_SOCKET
    user_timeout_opt = getattr(socket, "TCP_USER_TIMEOUT", None)
    out: list[OptionsRow] = []
    for index, fd in enumerate(fds):
        if getfd is not None:
            try:
                fd = getfd(pidfd, fd)
            except OSError as exc:
                err = exc.errno or errno.EIO
                if err in _DENIED:  # the same for every descriptor: stop here
                    out.extend([(err, 0, 0, 0, 0, 0, None)] * (len(fds) - index))
                    return out
                out.append((err, 0, 0, 0, 0, 0, None))
                continue
        inode = 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISSOCK(st.st_mode):
                out.append((errno.ENOTSOCK, 0, 0, 0, 0, 0, None))
                continue
            inode = st.st_ino
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
            try:
                keepalive = 1 if s.getsockopt(sol, socket.SO_KEEPALIVE) else 0
                idle = s.getsockopt(tcp, socket.TCP_KEEPIDLE)
                interval = s.getsockopt(tcp, socket.TCP_KEEPINTVL)
                count = s.getsockopt(tcp, socket.TCP_KEEPCNT)
                ut: int | None = None
                if user_timeout_opt is not None:
                    try:
                        ut = s.getsockopt(tcp, user_timeout_opt)
                    except OSError:
                        ut = None
                out.append((0, inode, keepalive, idle, interval, count, ut))
            finally:
                s.detach()
        except OSError as exc:
            out.append((exc.errno or errno.EIO, inode, 0, 0, 0, 0, None))
        finally:
            if getfd is not None:
                os.close(fd)
    return out


_GETFD_CTYPES: Callable[[int, int], int] | None = None


def _pidfd_getfd_ctypes() -> Callable[[int, int], int]:
    """pidfd_getfd(2) through libc's ``syscall()``."""
    global _GETFD_CTYPES
    if _GETFD_CTYPES is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        number = _platform.sys_pidfd_getfd()

        def getfd(pidfd: int, fd: int) -> int:
            new = int(syscall(ctypes.c_long(number), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0)))
            if new < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            return new

        _GETFD_CTYPES = getfd
    return _GETFD_CTYPES


def _pidfd_getfd_python(pidfd: int, fd: int) -> int:
    return _pidfd_getfd_ctypes()(pidfd, fd)


def _pidfd_open_python(pid: int) -> int:
    """pidfd_open(2): Python's own (3.9+, where the build knew the call), else ENOSYS."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        raise OSError(errno.ENOSYS, "pidfd_open is not available in this Python")
    return int(pidfd_open(pid))


def _parse_read_c(buf: bytearray, n: int, wanted: set[int], table: dict[int, TableRow]) -> bool:
    from ._kaext import diag_parse

    return diag_parse(buf, n, wanted, table, _STATES, _TIMERS, _KEEPALIVE_TIMER)


def _c_parser_works() -> bool:
    """Was the C parser built (with the kernel's sock_diag headers)?  Fed an NLMSG_DONE."""
    done = bytearray(struct.pack("=IHHIIi", 20, _NLMSG_DONE, 0, 0, 0, 0))
    try:
        return _parse_read_c(done, len(done), set(), {})
    except OSError:
        return False


#: The batch reader, pidfd_getfd and the dump parser: the C extension's when
#: ``import kaext`` chose it.
_read_options: Reader = _read_options_python
_pidfd_open: Callable[[int], int] = _pidfd_open_python
_pidfd_getfd: Callable[[int, int], int] = _pidfd_getfd_python
_parse_read: Callable[[bytearray, int, set[int], dict[int, TableRow]], bool] = _parse_read_python


def _use_implementation(name: str) -> None:
    """``"c"`` (``kaext._kaext``) or ``"python"``: for the tests and the benchmark."""
    global _read_options, _pidfd_open, _pidfd_getfd, _parse_read
    if name == "c":
        from ._kaext import diag_parse, pidfd_getfd, pidfd_open, proc_read  # noqa: F401 (diag_parse: is it built?)

        _read_options, _pidfd_open, _pidfd_getfd = proc_read, pidfd_open, pidfd_getfd
        _parse_read = _parse_read_c if _c_parser_works() else _parse_read_python
    else:
        _read_options, _pidfd_open, _pidfd_getfd = _read_options_python, _pidfd_open_python, _pidfd_getfd_python
        _parse_read = _parse_read_python


if _backend.IMPLEMENTATION == "c":
    try:
        _use_implementation("c")
    except ImportError:  # an extension built without this section: the same in Python
        pass


def _unreadable(err: int, pid: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return (
            f"no permission to duplicate the descriptor (pidfd_getfd: {os.strerror(err)}): needs the "
            f"right to ptrace process {pid} (same user, Yama ptrace_scope, or CAP_SYS_PTRACE)"
        )
    if err == errno.ENOSYS:
        return "pidfd_open/pidfd_getfd are not available in this kernel (Linux 5.6+)"
    if err in (errno.EBADF, errno.ENOENT):
        return "the descriptor was closed while it was read"
    return f"could not read the socket: {os.strerror(err)}"


# --------------------------------------------------------------------------------------
# Linux: all together
# --------------------------------------------------------------------------------------


def _collect(pids: Iterable[int]) -> tuple[list[Connection], list[tuple[int, OSError]]]:
    """Connections of several processes, with one sock_diag dump for all that share this
    network namespace; the errors (ProcessLookupError, PermissionError) per pid."""
    rows: list[Connection] = []
    errors: list[tuple[int, OSError]] = []
    found: list[tuple[int, dict[int, Socket], str | None]] = []
    for pid in pids:
        try:
            sockets, reason = _sockets(pid)
        except OSError as exc:
            errors.append((pid, exc))
            continue
        if sockets:
            found.append((pid, sockets, reason))
    own_ns = _netns(os.getpid())
    shared = [own_ns is not None and _netns(pid) == own_ns for pid, _, _ in found]
    table: dict[int, TableRow] = {}
    if any(shared):
        wanted = set().union(*(sockets for (_, sockets, _), here in zip(found, shared, strict=True) if here))
        try:
            table = _netlink_table(wanted)
        except OSError:  # no sock_diag (a kernel without it, or a seccomp filter)
            table = _proc_table(os.getpid(), wanted)
    for (pid, sockets, reason), here in zip(found, shared, strict=True):
        if not here:  # another network namespace (or unknown): the process's own view
            try:
                table = _proc_table(pid, set(sockets))
            except OSError as exc:
                errors.append((pid, exc))
                continue
        rows.extend(_rows(pid, sockets, reason, table))
    return rows, errors


def _rows(pid: int, sockets: dict[int, Socket], reason: str | None, table: dict[int, TableRow]) -> list[Connection]:
    out: list[Connection] = []
    append = out.append
    make = _connection
    state_of = KeepaliveState
    reasons: dict[int, str] = {}
    get = table.get
    for inode, (fd, err, options) in sockets.items():
        entry = get(inode)
        if entry is None:  # not TCP, or in no table (neither bound nor connected)
            continue
        family, state, local, remote, timer, left, probes = entry
        if options is None:
            why = reason or reasons.get(err) or reasons.setdefault(err, _unreadable(err, pid))
            append(make((pid, fd, family, local, remote, state, None, None, timer, left, probes, why)))
        else:
            enabled, idle, interval, count, ut = options
            keepalive = state_of(enabled == 1, float(idle), float(interval), count)
            user_timeout = None if ut is None else ut / 1000
            append(make((pid, fd, family, local, remote, state, keepalive, user_timeout, timer, left, probes, None)))
    return out  # in descriptor order: ``sockets`` was filled that way


# --------------------------------------------------------------------------------------
# Other POSIX systems: this process's own descriptors
# --------------------------------------------------------------------------------------

_FDS_LIMIT = 1 << 16


def _own_fds() -> list[Connection]:
    import stat

    try:
        import resource

        limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], _FDS_LIMIT)
    except (ImportError, OSError, ValueError):
        limit = 1024
    if limit < 0:  # RLIM_INFINITY
        limit = _FDS_LIMIT
    pid = os.getpid()
    rows: list[Connection] = []
    for fd in range(limit):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
        except OSError:
            continue
        row = _own_fd(pid, fd)
        if row is not None:
            rows.append(row)
    return rows


def _own_fd(pid: int, fd: int) -> Connection | None:
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with s:
        if s.family not in _FAMILY_NAME or s.type != socket.SOCK_STREAM:
            return None
        try:
            local = s.getsockname()[:2]
        except OSError:
            return None
        listening = bool(s.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 0x2)))
        try:
            remote = s.getpeername()[:2]
            state = "ESTABLISHED"
        except OSError:
            remote = ("0.0.0.0", 0) if s.family == socket.AF_INET else ("::", 0)
            state = "LISTEN" if listening else "CLOSE"
        try:
            keepalive: KeepaliveState | None = get_keepalive(s)
            user_timeout = get_user_timeout(s)
            reason = None
        except OSError as exc:
            keepalive, user_timeout, reason = None, None, f"could not read the socket: {exc.strerror}"
        return Connection(
            pid, fd, _FAMILY_NAME[s.family], (str(local[0]), int(local[1])), (str(remote[0]), int(remote[1])),
            state, keepalive, user_timeout, None, None, None, reason,
        )


# --------------------------------------------------------------------------------------
# Changing another process's sockets (python -m kaext.inspect --apply)
# --------------------------------------------------------------------------------------


def _apply(rows: Iterable[Connection], policy: Policy) -> list[tuple[Connection, OSError | None]]:
    """Apply ``policy`` to each socket, all or nothing per socket; ``(row, error or None)``.

    This process's own sockets directly; another process's through a descriptor
    duplicated with ``pidfd_getfd`` (the duplicate shares the socket), checked to
    still name the same socket (family and addresses) before anything is set.
    Errors: PermissionError without the right to ptrace the process; OSError ESTALE
    when the descriptor now names another socket; what ``Policy.apply`` raised.
    """
    results: list[tuple[Connection, OSError | None]] = []
    pidfds: dict[int, int] = {}
    me = os.getpid()
    try:
        for row in rows:
            results.append((row, _apply_one(row, policy, me, pidfds)))
    finally:
        for pidfd in pidfds.values():
            os.close(pidfd)
    return results


def _apply_one(row: Connection, policy: Policy, me: int, pidfds: dict[int, int]) -> OSError | None:
    if _platform.CONNECTIONS != "proc" or row.pid == me:
        fd, dup = row.fd, False
    else:
        try:
            pidfd = pidfds.get(row.pid)
            if pidfd is None:
                pidfd = pidfds[row.pid] = _pidfd_open(row.pid)
            fd, dup = _pidfd_getfd(pidfd, row.fd), True
        except OSError as exc:
            err = exc.errno or errno.EIO
            return OSError(err, _unreadable(err, row.pid))
    try:
        if not _same_socket(fd, row):
            return OSError(
                errno.ESTALE, f"descriptor {row.fd} now names another socket (closed and reused since it was listed)"
            )
        policy.apply(fd)
    except OSError as exc:
        return exc
    finally:
        if dup:
            os.close(fd)
    return None


def _same_socket(fd: int, row: Connection) -> bool:
    """Does ``fd`` still name the socket of ``row`` (not one that took its number since)?"""
    family = socket.AF_INET if row.family == "IPv4" else socket.AF_INET6
    s = socket.socket(family, socket.SOCK_STREAM, 0, fd)
    try:
        domain = getattr(socket, "SO_DOMAIN", None)
        if domain is not None and s.getsockopt(socket.SOL_SOCKET, domain) != family:
            return False
        if s.getsockname()[:2] != row.local:
            return False
        if row.state == "LISTEN":
            return True
        try:
            return bool(s.getpeername()[:2] == row.remote)
        except OSError:  # no longer connected: the same local address is all that can be checked
            return True
    finally:
        s.detach()
