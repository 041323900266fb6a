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
   saying why.  This process's own descriptors are duplicated with ``dup``.
   Everything of one descriptor is read from its duplicate, so a number reused
   meanwhile cannot mix two sockets.  A process whose main thread has exited
   (``pthread_exit``) is read through a live thread, ``/proc/<pid>/task/<tid>``;
3. the kernel's TCP tables give address, state and timer of each inode:
   sock_diag netlink (``NETLINK_SOCK_DIAG``, a dump per address family) when the
   process shares this process's network namespace, else ``/proc/<pid>/net/tcp``
   and ``tcp6``, which show the process's own namespace.

The system calls and the dump parser are the backend's (``pidfd_open``,
``pidfd_getfd``, ``proc_read``, ``diag_parse``): the C extension reads all
descriptors in one call and parses the dump in C (``ext/kaext_proc.h``);
``kaext._pure`` does the same with ``socket.getsockopt``, ctypes and ``struct``.
The functions below take the backend as an argument (default: the one ``import
kaext`` chose), so that the tests run both.

Other POSIX systems (``"fds"``): this process's own sockets, found by trying each
descriptor number below the open-files limit, each read once through one ``dup``
with the C library's calls (no socket object: nothing changes its blocking mode);
the kernel's timers are not shown there (``timer`` None).  Elsewhere: OSError ENOSYS.

``Connection.apply`` reaches the listed socket the same way and checks its inode first.
"""

from __future__ import annotations

import errno
import functools
import os

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]
import struct

# Internal names, in one place.
from . import _backend, _platform
from ._capabilities import caps
from ._functions import KeepaliveState, get_keepalive, get_user_timeout
from ._policy import as_policy
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import ModuleType
    from typing import Any

    from ._policy import Policy

    #: (family, state, local, remote, timer, timer_left, probes)
    TableRow = tuple[str, str, tuple[str, int], tuple[str, int], str, float | None, int | None]
    Parser = Callable[[bytearray, int, set[int], dict[int, TableRow], tuple[str, ...], tuple[str, ...], int], bool]
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

    ``inode``: the socket's inode number, which socket this is (Linux: ``socket:[INODE]``
    in ``/proc/<pid>/fd``, the inode ``ss -e`` shows); 0 when not known.
    :meth:`apply` changes this socket only.
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
        "inode",
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
        inode: int

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
        inode: int = 0,
    ) -> None:
        object.__setattr__(
            self,
            "_v",
            (pid, fd, family, local, remote, state, keepalive, user_timeout, timer, timer_left, probes, reason, inode),
        )

    def _values(self) -> tuple[Any, ...]:
        return self._v

    def apply(self, policy: Policy | str) -> None:
        """Apply ``policy`` to exactly the socket this row lists, all or nothing.

        ``policy``: a :class:`Policy`, a ``Policy.parse`` spec (``"5m:30s:4"``) or a
        middlebox name (``"aws-nlb"``).  The socket is reached through a duplicate of
        descriptor ``fd`` (``pidfd_getfd`` for another process, ``dup`` for this one),
        checked to be the same socket (its inode) before anything is set; then
        ``Policy.apply`` sets it (SO_KEEPALIVE, the keepalive knobs and the user timeout,
        as that method says), the process keeps its own descriptor.

        Raises OSError ESTALE when descriptor ``fd`` now holds another socket (or no
        socket: it was closed and its number reused since it was listed), OSError EBADF
        when it is closed or the process has exited, PermissionError without the right
        to ptrace the process (Linux: as for reading its options), TypeError /
        ValueError for a bad ``policy`` (ValueError also for a row made by hand, whose
        ``inode`` is 0) and whatever ``Policy.apply`` raises; in each case nothing was
        changed.
        """
        _apply_row(self, as_policy(policy), _backend, None)


#: What each field holds (help() of the field; the class docstring has them all together).
_FIELD_DOCS = {
    "pid": "The process that holds the socket (its id).",
    "fd": "The socket's descriptor number in that process.",
    "family": 'The address family: ``"IPv4"`` or ``"IPv6"``.',
    "local": "The local address as ``(host, port)``.",
    "remote": 'The remote address as ``(host, port)``; ``("0.0.0.0", 0)`` / ``("::", 0)`` for a listener.',
    "state": 'The kernel\'s TCP state name (``"ESTABLISHED"``, ``"LISTEN"``, ``"CLOSE_WAIT"``, ...).',
    "keepalive": "SO_KEEPALIVE and the keepalive knobs as a ``KeepaliveState``, or None when the "
    "socket could not be read (``reason`` says why).",
    "user_timeout": "The user timeout in seconds (0 is the system default), or None when it could not be read.",
    "timer": 'The kernel\'s pending timer: ``"keepalive"``, ``"retransmit"``, ``"persist"``, '
    '``"timewait"`` or ``"off"``; None where the OS does not show it.',
    "timer_left": "Seconds until the pending timer fires (None when it is off or not shown).",
    "probes": "Keepalive probes sent and not answered while the keepalive timer runs (else None).",
    "reason": "Why the socket's options could not be read (no right to ptrace the process, the "
    "descriptor closed meanwhile, ...), or None.",
    "inode": "The socket's inode number (Linux: ``socket:[INODE]`` in ``/proc/<pid>/fd``), which socket "
    "this is; 0 when not known.",
}


def _field(index: int, name: str) -> property:
    def get(self: Connection) -> Any:
        return self._v[index]

    get.__name__ = name
    return property(get, doc=_FIELD_DOCS[name])


for _index, _name in enumerate(Connection._fields):
    setattr(Connection, _name, _field(_index, _name))
del _index, _name

_new = object.__new__
_store: Callable[[Connection, tuple[Any, ...]], None] = Connection.__dict__["_v"].__set__


def _connection(values: tuple[Any, ...]) -> Connection:
    """A Connection from its 13 field values, without the call to ``__init__``."""
    row: Connection = _new(Connection)
    _store(row, values)
    return row


def connections(pid: int | None = None) -> list[Connection]:
    """The TCP sockets (IPv4 and IPv6) that process ``pid`` holds (default: this process), by descriptor.

    ``pid`` may also be the id of one of a process's threads: the rows are then the
    process's, with its pid.  A process whose main thread has exited (``pthread_exit``)
    is read through a thread still running (its options need Linux 6.9+,
    ``pidfd_open(PIDFD_THREAD)``; before that ``reason`` says so).  Each row's
    :meth:`Connection.apply` changes that socket and no other.

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
    return _list_connections(pid, _backend)


def _list_connections(pid: int | None, backend: ModuleType) -> list[Connection]:
    """``connections(pid)`` through ``backend`` (``kaext._kaext`` or ``kaext._pure``)."""
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise TypeError(f"pid must be an int or None, got {type(pid).__name__} {pid!r}")
    if pid is not None and pid <= 0:
        raise ValueError(f"pid={pid!r} is not a process id (must be positive)")
    mode = _platform.CONNECTIONS
    if mode == "proc":
        rows, errors = _collect([os.getpid() if pid is None else pid], backend)
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


def _list_fds(pid: int) -> tuple[list[int], int]:
    """The descriptor numbers of process ``pid``, ascending: one read of ``/proc/<pid>/fd``;
    and the live thread they were read through when the main thread has exited (else 0).

    A process whose main thread called ``pthread_exit`` while others run on: its thread
    group leader is a zombie without files, and ``/proc/<pid>/fd`` is empty; the
    descriptors, the network namespace and its TCP tables are then those of
    ``/proc/<pid>/task/<tid>``, a thread still running."""
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
    tid = 0
    if not names:  # nothing held, a kernel thread, or a main thread that has exited
        tid = _live_thread(pid)
        if tid:
            try:
                names = os.listdir(f"/proc/{pid}/task/{tid}/fd")
            except OSError:  # that thread has exited meanwhile too
                names, tid = [], 0
    return sorted(map(int, names)), tid


def _state(stat_path: str) -> bytes:
    """The one-letter state of ``/proc/.../stat`` (after the command's closing parenthesis), or b""."""
    try:
        with open(stat_path, "rb") as f:
            stat = f.read()
    except OSError:
        return b""
    return stat[stat.rfind(b")") + 2 :][:1]


def _live_thread(pid: int) -> int:
    """A running thread of process ``pid`` when its main thread has exited (the leader is a
    zombie), else 0."""
    if _state(f"/proc/{pid}/stat") != b"Z":
        return 0
    try:
        tids = sorted(int(name) for name in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0
    for tid in tids:
        if tid != pid and _state(f"/proc/{pid}/task/{tid}/stat") not in (b"", b"Z", b"X"):
            return tid
    return 0


def _where(pid: int, tid: int) -> str:
    """``/proc/<pid>``, or ``/proc/<pid>/task/<tid>`` when read through live thread ``tid``."""
    return f"/proc/{pid}/task/{tid}" if tid else f"/proc/{pid}"


def _socket_links(pid: int, fds: list[int], tid: int = 0) -> dict[int, int]:
    """``{inode: fd}`` from ``readlink /proc/<pid>/fd/N`` (``socket:[INODE]``): the way when
    the descriptors themselves cannot be duplicated (it needs only PTRACE_MODE_READ)."""
    found: dict[int, int] = {}
    readlink = os.readlink
    prefix = f"{_where(pid, tid)}/fd/"
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


def _open_pidfd(pid: int, tid: int, backend: ModuleType) -> int:
    """A pidfd through which ``pidfd_getfd`` reaches process ``pid``'s descriptors: the
    process's own, or live thread ``tid``'s (PIDFD_THREAD) when its main thread has exited."""
    if tid and _platform.PIDFD_THREAD:
        return int(backend.pidfd_open(tid, _platform.PIDFD_THREAD))
    return int(backend.pidfd_open(pid))


def _sockets(pid: int, backend: ModuleType) -> tuple[dict[int, Socket], str | None, int]:
    """``{inode: (fd, err, options)}`` for the sockets process ``pid`` holds, lowest fd
    first for a shared one; why no options could be read, when none could; and the live
    thread they were read through (0: the process itself)."""
    fds, tid = _list_fds(pid)
    if not fds:  # a kernel thread, or a process that holds nothing
        return {}, None, tid
    pidfd = -1
    if pid != os.getpid():
        try:
            pidfd = _open_pidfd(pid, tid, backend)
        except ProcessLookupError:
            raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
        except OSError as exc:  # ENOSYS: a kernel before 5.3; EINVAL: PIDFD_THREAD before 6.9
            err = exc.errno or errno.ENOSYS
            links = _socket_links(pid, fds, tid)
            return {inode: (fd, err, None) for inode, fd in links.items()}, _unreadable(err, pid, tid), tid
    try:
        results = backend.proc_read(pidfd, fds)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    found: dict[int, Socket] = {}
    for fd, (err, inode, keepalive, idle, interval, count, user_timeout) in zip(fds, results, strict=True):
        if inode:
            if inode not in found:
                found[inode] = (fd, err, None if err else (keepalive, idle, interval, count, user_timeout))
        elif err in (errno.EPERM, errno.EACCES, errno.ENOSYS):  # the same for every descriptor of the process
            reason = _unreadable(err, pid)
            return {inode: (fd, err, None) for inode, fd in _socket_links(pid, fds, tid).items()}, reason, tid
    return found, None, tid


def _thread_group(pid: int) -> int:
    """The process (thread group) that thread ``pid`` belongs to: ``pid`` itself for a
    process, its leader's pid for another thread's id (``ps -L``, ``top -H``, logs), whose
    descriptors ``pidfd_getfd`` reaches only through the process."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line[5:])
    except OSError:  # gone, or not a pid: _list_fds says which
        pass
    return pid


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
_TIMERS = _platform.LINUX_TIMERS
_KEEPALIVE_TIMER = 2

#: Every state but TIME_WAIT and NEW_SYN_RECV, which no process holds a descriptor of.
_DUMP_STATES = 0xFFFFFFFF & ~((1 << 6) | (1 << 12))
# nlmsghdr (len, type, flags, seq, pid) + inet_diag_req_v2 (include/uapi/linux/inet_diag.h:
# family, protocol, ext, pad, states, inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2])
_REQUEST = struct.Struct("=IHHII BBBxI 48x")
# Room past a read's limit: the pure-Python parser's scan of a message's header and inode
# (88 bytes) may run past a short last message.
_READ_SLACK = 128

_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _netlink_table(wanted: set[int], backend: ModuleType = _backend) -> dict[int, TableRow]:
    """The TCP sockets of this network namespace from sock_diag: the ``wanted`` inodes.

    One dump per address family; the IPv6 one only while a wanted socket is still
    missing, and a dump is left as soon as none is (closing the netlink socket ends it).
    """
    table: dict[int, TableRow] = {}
    parse = _dump_parser(backend)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _platform.NETLINK_SOCK_DIAG) as nl:
        buf = bytearray((1 << 16) + _READ_SLACK)  # a dump message is at most 32 KiB
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            nl.send(
                _REQUEST.pack(
                    _REQUEST.size, _platform.SOCK_DIAG_BY_FAMILY, _platform.NLM_F_REQUEST | _platform.NLM_F_DUMP,
                    seq, 0, family, socket.IPPROTO_TCP, 0, _DUMP_STATES,
                )
            )
            if not _read_dump(nl, buf, wanted, table, parse):
                break  # every wanted socket found: no need to read on
    return table


def _read_dump(
    nl: socket.socket, buf: bytearray, wanted: set[int], table: dict[int, TableRow], parse: Parser
) -> bool:
    """Read one dump into ``table``; False when it was left early with every wanted socket found."""
    limit = len(buf) - _READ_SLACK
    total = len(wanted)
    states, timers, keepalive_timer = _STATES, _TIMERS, _KEEPALIVE_TIMER
    while True:
        n = nl.recv_into(buf, limit)
        if parse(buf, n, wanted, table, states, timers, keepalive_timer):
            return len(table) < total
        if len(table) >= total:
            return False


@functools.cache
def _dump_parser(backend: ModuleType) -> Parser:
    """``backend.diag_parse``; the pure-Python one where the extension was built without
    the kernel's sock_diag headers (its parser then fails with ENOSYS).  Decided once per
    backend, with an NLMSG_DONE message."""
    done = bytearray(struct.pack("=IHHIIi", 20, _platform.NLMSG_DONE, 0, 0, 0, 0)) + bytearray(_READ_SLACK)
    parse: Parser = backend.diag_parse
    try:
        parse(done, 20, set(), {}, _STATES, _TIMERS, _KEEPALIVE_TIMER)
    except OSError:
        from . import _pure

        parse = _pure.diag_parse
    return parse


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


def _proc_table(pid: int, wanted: set[int], tid: int = 0) -> dict[int, TableRow]:
    """The same from ``/proc/<pid>/net/tcp`` and ``tcp6``: the namespace of process ``pid``
    (read through its live thread ``tid`` when its main thread has exited)."""
    table: dict[int, TableRow] = {}
    ticks = os.sysconf("SC_CLK_TCK")  # the "when" column is in clock_t ticks (USER_HZ)
    where = _where(pid, tid)
    for family, name in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        try:
            with open(f"{where}/net/{name}", encoding="ascii") as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            if not os.path.exists(where):
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


def _netns(pid: int, tid: int = 0) -> tuple[int, int] | None:
    try:
        st = os.stat(f"{_where(pid, tid)}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------------------
# Linux: the options, through pidfd_getfd
# --------------------------------------------------------------------------------------


def _unreadable(err: int, pid: int, tid: int = 0) -> str:
    if tid and err == errno.EINVAL:
        return (
            f"the main thread of process {pid} has exited: its descriptors are reached through thread "
            f"{tid} (pidfd_open PIDFD_THREAD, Linux 6.9+), which this kernel refused"
        )
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


def _collect(
    pids: Iterable[int], backend: ModuleType = _backend, workers: int = 1
) -> tuple[list[Connection], list[tuple[int, OSError]]]:
    """Connections of several processes, with one sock_diag dump for all that share this
    network namespace; the errors (ProcessLookupError, PermissionError) per pid.

    ``workers`` > 1: the processes' descriptors are read by that many threads at once
    (the C backend's batch read releases the GIL; the kernel's work per descriptor is
    the cost, so a scrape of many busy processes uses every core)."""
    rows: list[Connection] = []
    errors: list[tuple[int, OSError]] = []
    found: list[tuple[int, dict[int, Socket], str | None, int]] = []

    def read(pid: int) -> tuple[int, dict[int, Socket] | OSError, str | None, int]:
        try:
            pid = _thread_group(pid)
            sockets, reason, tid = _sockets(pid, backend)
        except OSError as exc:
            return pid, exc, None, 0
        return pid, sockets, reason, tid

    pids = list(pids)
    if workers > 1 and len(pids) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(pids)), thread_name_prefix="kaext-collect") as pool:
            results = list(pool.map(read, pids))
    else:
        results = [read(pid) for pid in pids]
    for pid, sockets, reason, tid in results:
        if isinstance(sockets, OSError):
            errors.append((pid, sockets))
        elif sockets:
            found.append((pid, sockets, reason, tid))
    # One table per network namespace (keyed by its device and inode): this process's
    # from one sock_diag dump, another's from /proc/<pid>/net/tcp of a process in it.
    own_ns = _netns(os.getpid())
    groups: dict[object, list[int]] = {}  # namespace -> indexes into found
    for index, (pid, _, _, tid) in enumerate(found):
        ns = _netns(pid, tid)
        key: object = ns if ns is not None else ("pid", pid)  # unknown: the process's own view
        groups.setdefault("own" if own_ns is not None and ns == own_ns else key, []).append(index)
    tables: dict[int, dict[int, TableRow]] = {}  # index into found -> its namespace's table
    for key, members in groups.items():
        wanted: set[int] = set().union(*(found[i][1] for i in members))
        if key == "own":
            try:
                table = _netlink_table(wanted, backend)
            except OSError:  # no sock_diag (a kernel without it, or a seccomp filter)
                table = _proc_table(os.getpid(), wanted)
            tables.update(dict.fromkeys(members, table))
            continue
        pending = list(members)
        while pending:  # read through the first member that is still there
            first = pending.pop(0)
            try:
                table = _proc_table(found[first][0], wanted, found[first][3])
            except OSError as exc:
                errors.append((found[first][0], exc))
                continue
            tables.update(dict.fromkeys([first, *pending], table))
            break
    for index, (pid, sockets, reason, _) in enumerate(found):
        if index in tables:  # else its namespace's table could not be read: in errors
            rows.extend(_rows(pid, sockets, reason, tables[index]))
    return rows, errors


def _rows(pid: int, sockets: dict[int, Socket], reason: str | None, table: dict[int, TableRow]) -> list[Connection]:
    out: list[Connection] = []
    append = out.append
    make = _connection
    state_of = KeepaliveState
    reasons: dict[int, str] = {}
    # Sockets of one process mostly share their settings: one (immutable) KeepaliveState per
    # distinct reading, made once; a scrape of 100,000 connections spends no time re-making them.
    settings: dict[tuple[int, int, int, int, int | None], tuple[KeepaliveState, float | None]] = {}
    get = table.get
    for inode, (fd, err, options) in sockets.items():
        entry = get(inode)
        if entry is None:  # not TCP, or in no table (neither bound nor connected)
            continue
        family, state, local, remote, timer, left, probes = entry
        if options is None:
            why = reason or reasons.get(err) or reasons.setdefault(err, _unreadable(err, pid))
            append(make((pid, fd, family, local, remote, state, None, None, timer, left, probes, why, inode)))
        else:
            known = settings.get(options)
            if known is None:
                enabled, idle, interval, count, ut = options
                known = settings[options] = (
                    state_of(enabled == 1, float(idle), float(interval), count),
                    None if ut is None else ut / 1000,
                )
            keepalive, user_timeout = known
            append(
                make((pid, fd, family, local, remote, state, keepalive, user_timeout, timer, left, probes, None, inode))
            )
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
    """The row of this process's descriptor ``fd``, read once through one duplicate of it
    (C library calls on the number: no socket object that could change its blocking mode)."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        return _own_row(pid, fd, dup)
    finally:
        os.close(dup)


def _own_row(pid: int, fd: int, dup: int) -> Connection | None:
    from . import _pure_fd  # its C library calls on a descriptor number (ctypes), whatever the backend

    s = _pure_fd._RawFd(dup)
    try:
        family = s.family
        if family not in _FAMILY_NAME or s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
            return None
        local = s.getsockname()
        inode = os.fstat(dup).st_ino
    except OSError:
        return None
    try:
        listening = bool(s.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 0x2)))
    except OSError:
        listening = False
    try:
        remote = s.getpeername()
        state = "ESTABLISHED"
    except OSError:
        remote = ("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0)
        state = "LISTEN" if listening else "CLOSE"
    try:
        keepalive: KeepaliveState | None = get_keepalive(dup)
        # no user timeout on this OS (NetBSD, OpenBSD, DragonFly, illumos): None, not an error
        user_timeout = get_user_timeout(dup) if "user_timeout" in caps() else None
        reason = None
    except OSError as exc:
        keepalive, user_timeout, reason = None, None, f"could not read the socket: {exc.strerror}"
    return Connection(
        pid, fd, _FAMILY_NAME[family], local, remote, state, keepalive, user_timeout, None, None, None, reason, inode
    )


# --------------------------------------------------------------------------------------
# Changing another process's sockets (python -m kaext.inspect --apply)
# --------------------------------------------------------------------------------------


def _apply(
    rows: Iterable[Connection], policy: Policy, backend: ModuleType = _backend
) -> list[tuple[Connection, OSError | None]]:
    """:meth:`Connection.apply` for each row, one pidfd per process; ``(row, error or None)``."""
    results: list[tuple[Connection, OSError | None]] = []
    pidfds: dict[int, int] = {}
    try:
        for row in rows:
            try:
                _apply_row(row, policy, backend, pidfds)
            except OSError as exc:
                results.append((row, exc))
            else:
                results.append((row, None))
    finally:
        for pidfd in pidfds.values():
            os.close(pidfd)
    return results


def _apply_row(row: Connection, policy: Policy, backend: ModuleType, pidfds: dict[int, int] | None) -> None:
    """``policy`` to the socket ``row`` lists, through a duplicate of its descriptor checked to
    hold the same socket (inode); ``pidfds``: the pidfds opened so far, by pid, which the
    caller closes (None: the one opened here is closed here)."""
    if not row.inode:
        raise ValueError(f"{row!r} has no inode: only a row kaext.connections() listed can be applied to")
    fd = _duplicate(row, backend, pidfds)
    try:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_ino != row.inode:
            now = f"socket inode {st.st_ino}" if stat.S_ISSOCK(st.st_mode) else "no socket"
            raise OSError(
                errno.ESTALE,
                f"pid {row.pid} fd {row.fd} now holds {now}, not the listed socket (inode {row.inode}): "
                "closed and reused since it was listed; nothing applied",
            )
        policy.apply(fd)
        if not policy.applied_to(fd):  # all or nothing was written, yet the kernel holds otherwise
            raise OSError(errno.EIO, f"applied, but the socket does not hold {policy} when read back")
    finally:
        os.close(fd)


def _duplicate(row: Connection, backend: ModuleType, pidfds: dict[int, int] | None) -> int:
    """A descriptor in this process for ``row``'s: ``dup`` of this process's own,
    ``pidfd_getfd`` of another's (OSError EBADF when it is closed or the process gone)."""
    gone = OSError(errno.EBADF, f"pid {row.pid} fd {row.fd}: closed since it was listed; nothing applied")
    if row.pid == os.getpid():
        try:
            return os.dup(row.fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise gone from None
            raise
    if _platform.CONNECTIONS != "proc":
        raise OSError(errno.ENOSYS, f"Connection.apply: {_platform.connections_unavailable(_platform.CONNECTIONS)}")
    close = pidfds is None
    pidfd = -1 if pidfds is None else pidfds.get(row.pid, -1)
    try:
        if pidfd < 0:
            pidfd = _open_pidfd(row.pid, _live_thread(row.pid), backend)
            if pidfds is not None:
                pidfds[row.pid] = pidfd
        return int(backend.pidfd_getfd(pidfd, row.fd))
    except OSError as exc:
        err = exc.errno or errno.EIO
        if err in (errno.ESRCH, errno.EBADF):
            if err == errno.ESRCH:
                gone = OSError(errno.EBADF, f"pid {row.pid} has exited: fd {row.fd} is gone; nothing applied")
            raise gone from None
        raise OSError(err, _unreadable(err, row.pid)) from None
    finally:
        if close and pidfd >= 0:
            os.close(pidfd)
