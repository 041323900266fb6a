"""``kaext.connections()``: the TCP sockets a running process holds, as the kernel sees them.

Linux (``_platform.CONNECTIONS == "proc"``), any process ``pid``: its descriptors
from ``/proc/<pid>/fd``, each read through a duplicate (``pidfd_getfd``), and the
kernel's TCP tables (sock_diag, or ``/proc/<pid>/net/tcp`` in another network
namespace), in ``kaext._connections_linux``; this module makes the rows.

Other POSIX systems (``"fds"``): this process's own sockets, found by trying each
descriptor number below the open-files limit, each read once through one ``dup``
with the C library's calls (no socket object: nothing changes its blocking mode);
the kernel's timers are not shown there (``timer`` None).  Elsewhere: OSError ENOSYS.

``Connection.apply`` reaches the listed socket the same way and checks its inode first.
"""

from __future__ import annotations

import errno
import os

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]

# Internal names, in one place.
from . import _backend, _platform
from ._capabilities import caps
from ._connections_linux import _FAMILY_NAME, _live_thread, _open_pidfd, _processes, _unreadable
from ._functions import KeepaliveState, get_keepalive, get_user_timeout
from ._policy import as_policy
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from ._backend import Backend
    from ._connections_linux import Socket, TableRow
    from ._policy import Policy

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
        to ptrace the process (Linux: as for reading its options), OSError EINVAL for a
        process whose main thread has exited on a kernel before Linux 6.9 (no
        ``PIDFD_THREAD``; its message says so, as the row's ``reason`` does), TypeError /
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
    process, without CAP_DAC_READ_SEARCH: CAP_SYS_PTRACE alone does not open its
    ``/proc/<pid>/fd``).

    Other POSIX systems: this process's sockets only (``pid`` None or
    ``os.getpid()``; another pid raises OSError ENOSYS), without timers.
    Windows: OSError ENOSYS.
    """
    return _list_connections(pid, _backend)


def _list_connections(pid: int | None, backend: Backend) -> list[Connection]:
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
# Linux: the rows of what kaext._connections_linux read
# --------------------------------------------------------------------------------------


def _collect(
    pids: Iterable[int], backend: Backend = _backend, workers: int = 1
) -> tuple[list[Connection], list[tuple[int, OSError]]]:
    """Connections of several processes, with one sock_diag dump for all that share this
    network namespace; the errors (ProcessLookupError, PermissionError) per pid.

    ``workers`` > 1: the processes' descriptors are read by that many threads at once
    (the C backend's batch read releases the GIL; the kernel's work per descriptor is
    the cost, so a scrape of many busy processes uses every core)."""
    readings, errors = _processes(pids, backend, workers)
    rows: list[Connection] = []
    for pid, sockets, reason, table in readings:
        rows.extend(_rows(pid, sockets, reason, table))
    return rows, errors


def _tally(
    pids: Iterable[int], backend: Backend = _backend, workers: int = 1
) -> tuple[list[tuple[Connection, int]], list[tuple[int, OSError]]]:
    """What ``_collect`` reads, for a caller that needs of each row only its pid, state,
    ``keepalive`` and ``user_timeout`` (the metrics' counts by verdict): one Connection per
    process and distinct (state, options read) -- the first such row ``_collect`` would
    give -- with how many rows are like it; the errors as ``_collect``'s.  100,000 sockets
    of a few kinds make a few rows, not 100,000."""
    readings, errors = _processes(pids, backend, workers)
    tally: list[tuple[Connection, int]] = []
    for pid, sockets, reason, table in readings:
        first: dict[tuple[str, tuple[int, int, int, int, int | None] | None], int] = {}  # kind -> its first inode
        counts: dict[int, int] = {}  # that inode -> rows like it
        get = table.get
        for inode, (_, _, options) in sockets.items():
            entry = get(inode)
            if entry is None:  # as in _rows: not TCP, or in no table
                continue
            kind = (entry[1], options)
            known = first.get(kind)
            if known is None:
                first[kind] = known = inode
                counts[inode] = 1
            else:
                counts[known] += 1
        chosen = {inode: sockets[inode] for inode in counts}  # in descriptor order, as ``sockets``
        tally.extend(zip(_rows(pid, chosen, reason, table), counts.values(), strict=True))
    return tally, errors


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

    if _pure_fd._raw_available():
        return _row_of(pid, fd, dup, _pure_fd._RawFd(dup))
    # no ctypes, or a C library dlopen(NULL) does not reach: a socket object over the
    # duplicate, detached after (the pure backend's own fallback, with its limit: under
    # socket.setdefaulttimeout() the object makes the description non-blocking)
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        return None
    try:
        return _row_of(pid, fd, dup, sock)
    finally:
        sock.detach()


def _row_of(pid: int, fd: int, dup: int, s: Any) -> Connection | None:
    """The row of descriptor ``fd`` (``dup``: this process's duplicate of it), read through
    ``s``, an object with socket.socket's getsockopt, getsockname, getpeername and family."""
    try:
        family = int(s.family)
        if family not in _FAMILY_NAME or s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
            return None
        local = tuple(s.getsockname()[:2])
        inode = os.fstat(dup).st_ino
    except OSError:
        return None
    try:
        listening = bool(s.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 0x2)))
    except OSError:
        listening = False
    try:
        remote = tuple(s.getpeername()[:2])
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
    rows: Iterable[Connection], policy: Policy, backend: Backend = _backend
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


def _apply_row(row: Connection, policy: Policy, backend: Backend, pidfds: dict[int, int] | None) -> None:
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


def _duplicate(row: Connection, backend: Backend, pidfds: dict[int, int] | None) -> int:
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
    tid = 0
    try:
        if pidfd < 0:
            tid = _live_thread(row.pid)
            pidfd = _open_pidfd(row.pid, tid, backend)
            if pidfds is not None:
                pidfds[row.pid] = pidfd
        return int(backend.pidfd_getfd(pidfd, row.fd))
    except OSError as exc:
        err = exc.errno or errno.EIO
        if err in (errno.ESRCH, errno.EBADF):
            if err == errno.ESRCH:
                gone = OSError(errno.EBADF, f"pid {row.pid} has exited: fd {row.fd} is gone; nothing applied")
            raise gone from None
        raise OSError(err, _unreadable(err, row.pid, tid)) from None
    finally:
        if close and pidfd >= 0:
            os.close(pidfd)
