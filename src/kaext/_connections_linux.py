"""``kaext.connections()`` on Linux (``_platform.CONNECTIONS == "proc"``): what the kernel
shows of a running process's TCP sockets, for any process ``pid``:

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
``kaext._pure_proc`` does the same with ``socket.getsockopt``, ctypes and ``struct``.
The functions below take the backend as an argument (default: the one ``import
kaext`` chose), so that the tests run both.

This module reads; ``kaext._connections`` makes the :class:`~kaext.Connection` rows
(``_collect``) and applies a policy to one (``Connection.apply``, through
``_open_pidfd`` here).
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

from . import _backend, _linux_abi, _platform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from concurrent.futures import Future

    from ._backend import Backend

    #: (family, state, local, remote, timer, timer_left, probes)
    TableRow = tuple[str, str, tuple[str, int], tuple[str, int], str, float | None, int | None]
    Parser = Callable[[bytearray, int, set[int], dict[int, TableRow], tuple[str, ...], tuple[str, ...], int], bool]
    #: One socket of a process: (fd, err, [keepalive, idle, interval, count, user_timeout]
    #: in kernel units, or None when err)
    Socket = tuple[int, int, "tuple[int, int, int, int, int | None] | None"]
    #: One process's sockets with its namespace's table: (pid, {inode: Socket}, reason, {inode: TableRow})
    Reading = tuple[int, dict[int, Socket], str | None, dict[int, TableRow]]


# --------------------------------------------------------------------------------------
# /proc/<pid>/fd, and the sockets behind it
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
            "another user; run as that user, or with CAP_DAC_READ_SEARCH (to list them) and CAP_SYS_PTRACE "
            "(to read their sockets)",
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


def _open_pidfd(pid: int, tid: int, backend: Backend) -> int:
    """A pidfd through which ``pidfd_getfd`` reaches process ``pid``'s descriptors: the
    process's own, or live thread ``tid``'s (PIDFD_THREAD) when its main thread has exited."""
    if tid and _platform.PIDFD_THREAD:
        return int(backend.pidfd_open(tid, _platform.PIDFD_THREAD))
    return int(backend.pidfd_open(pid))


def _sockets(pid: int, backend: Backend) -> tuple[dict[int, Socket], str | None, int]:
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
# The kernel's TCP tables
# --------------------------------------------------------------------------------------

# the kernel's names of its TCP states and timers (kaext._linux_abi), handed to the dump parsers
_STATES = _linux_abi.TCP_STATES
_TIMERS = _linux_abi.TIMERS
_KEEPALIVE_TIMER = _linux_abi.KEEPALIVE_TIMER

#: Every state but TIME_WAIT and NEW_SYN_RECV, which no process holds a descriptor of.
_DUMP_STATES = 0xFFFFFFFF & ~((1 << 6) | (1 << 12))
# nlmsghdr (len, type, flags, seq, pid) + inet_diag_req_v2 (include/uapi/linux/inet_diag.h:
# family, protocol, ext, pad, states, inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2])
_REQUEST = struct.Struct("=IHHII BBBxI 48x")
#: One read of a dump (a dump message is at most 32 KiB).
_READ_SIZE = 1 << 16
# Room past a read's limit: the pure-Python parser's scan of a message's header and inode
# (88 bytes) may run past a short last message.
_READ_SLACK = 128

_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _netlink_table(
    wanted: set[int], backend: Backend = _backend, families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)
) -> dict[int, TableRow]:
    """The TCP sockets of this network namespace from sock_diag: the ``wanted`` inodes.

    One dump per address family (of ``families``, in that order); the next one only while
    a wanted socket is still missing, and a dump is left as soon as none is (closing the
    netlink socket ends it).  Each dump walks the namespace's whole table (both families).
    """
    table: dict[int, TableRow] = {}
    parse = _dump_parser(backend)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _linux_abi.NETLINK_SOCK_DIAG) as nl:
        buf = bytearray(_READ_SIZE + _READ_SLACK)
        for seq, family in enumerate(families, 1):
            nl.send(_request(seq, family))
            if not _read_dump(nl, buf, wanted, table, parse):
                break  # every wanted socket found: no need to read on
    return table


def _request(seq: int, family: int) -> bytes:
    """The sock_diag request for a dump of the TCP sockets of ``family``."""
    return _REQUEST.pack(
        _REQUEST.size,
        _linux_abi.SOCK_DIAG_BY_FAMILY,
        _linux_abi.NLM_F_REQUEST | _linux_abi.NLM_F_DUMP,
        seq,
        0,
        family,
        socket.IPPROTO_TCP,
        0,
        _DUMP_STATES,
    )


def _netlink_dump(backend: Backend = _backend) -> list[tuple[bytearray, int]]:
    """Every IPv4 TCP socket of this network namespace from sock_diag, as read: ``(buffer,
    length)`` per read of the dump, for ``_netlink_parse`` once the wanted inodes are known
    (``_own_table`` looks up those it lacks in the IPv6 dump).  It needs only the
    namespace: ``_processes`` reads it while the descriptors are read (the kernel's walk
    of its tables is most of its cost, and ``recv`` releases the GIL)."""
    reads: list[tuple[bytearray, int]] = []
    parse = _dump_parser(backend)
    nothing: set[int] = set()
    ignored: dict[int, TableRow] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _linux_abi.NETLINK_SOCK_DIAG) as nl:
        nl.send(_request(1, socket.AF_INET))
        while True:
            buf = bytearray(_READ_SIZE + _READ_SLACK)
            n = nl.recv_into(buf, _READ_SIZE)
            del buf[n + _READ_SLACK :]  # keep only what was read (and the parser's slack)
            reads.append((buf, n))
            if parse(buf, n, nothing, ignored, _STATES, _TIMERS, _KEEPALIVE_TIMER):  # its end (or an error)
                break
    return reads


def _netlink_parse(reads: list[tuple[bytearray, int]], wanted: set[int], backend: Backend) -> dict[int, TableRow]:
    """The ``wanted`` inodes of a ``_netlink_dump``."""
    table: dict[int, TableRow] = {}
    parse = _dump_parser(backend)
    for buf, n in reads:
        parse(buf, n, wanted, table, _STATES, _TIMERS, _KEEPALIVE_TIMER)
    return table


def _read_dump(nl: socket.socket, buf: bytearray, wanted: set[int], table: dict[int, TableRow], parse: Parser) -> bool:
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
def _dump_parser(backend: Backend) -> Parser:
    """``backend.diag_parse``; the pure-Python one where the extension was built without
    the kernel's sock_diag headers (its parser then fails with ENOSYS).  Decided once per
    backend, with an NLMSG_DONE message."""
    done = bytearray(struct.pack("=IHHIIi", 20, _linux_abi.NLMSG_DONE, 0, 0, 0, 0)) + bytearray(_READ_SLACK)
    parse: Parser = backend.diag_parse
    try:
        parse(done, 20, set(), {}, _STATES, _TIMERS, _KEEPALIVE_TIMER)
    except OSError:
        from . import _pure_proc

        parse = _pure_proc.diag_parse
    return parse


def _row(
    family: int, state: int, local: tuple[str, int], remote: tuple[str, int], timer: int, left: float, retrans: int
) -> TableRow:
    timer_name = _linux_abi.timer_name(timer)
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
            lines = list(_linux_abi.proc_tcp(f"{where}/net/{name}"))
        except FileNotFoundError:
            if not os.path.exists(where):
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
            continue  # no IPv6 in this kernel
        for line in lines:
            if line.inode not in wanted:
                continue
            table[line.inode] = _row(
                family,
                line.state,
                _proc_address(family, line.local),
                _proc_address(family, line.remote),
                line.timer,
                line.when / ticks,
                line.probes,
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
# The options, through pidfd_getfd
# --------------------------------------------------------------------------------------


def _unreadable(err: int, pid: int, tid: int = 0) -> str:
    if tid and err == errno.EINVAL:
        return (
            f"the main thread of process {pid} has exited: its descriptors are reached through thread "
            f"{tid} (pidfd_open PIDFD_THREAD, Linux 6.9+), which this kernel refused"
        )
    if err in (errno.EPERM, errno.EACCES):
        refused = _pidfd_getfd_refused()
        if refused:
            return refused
        return (
            f"no permission to duplicate the descriptor (pidfd_getfd: {os.strerror(err)}): needs the "
            f"right to ptrace process {pid} (same user, Yama ptrace_scope, or CAP_SYS_PTRACE)"
        )
    if err == errno.ENOSYS:
        return "pidfd_open/pidfd_getfd are not available in this kernel (Linux 5.6+)"
    if err in (errno.EBADF, errno.ENOENT):
        return "the descriptor was closed while it was read"
    return f"could not read the socket: {os.strerror(err)}"


_REFUSED: list[str] = []  # _pidfd_getfd_refused's answer, once found


def _pidfd_getfd_refused() -> str:
    """Why pidfd_getfd fails whatever the target ("" when it does not): a seccomp filter
    (systemd-nspawn's default, a container runtime's profile, SystemCallFilter=) or a
    security module refusing the call itself.  Found by duplicating one of this process's
    own descriptors, which the ptrace rules always allow; asked once per process."""
    if _REFUSED:
        return _REFUSED[0]
    answer = ""
    try:
        pidfd = int(_backend.pidfd_open(os.getpid()))
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            os.close(int(_backend.pidfd_getfd(pidfd, pidfd)))
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                answer = (
                    f"pidfd_getfd is refused to this process ({os.strerror(exc.errno)} even for its own "
                    "descriptors, which ptrace rights always allow): "
                    + (
                        "its seccomp filter refuses the call (systemd-nspawn's default, a container "
                        "runtime's profile, systemd's SystemCallFilter=); allow pidfd_getfd"
                        if _seccomp_filtered()
                        else "a security module (AppArmor, SELinux) refuses it"
                    )
                )
        finally:
            os.close(pidfd)
    _REFUSED.append(answer)
    return answer


def _seccomp_filtered() -> bool:
    """Whether this process runs under a seccomp filter (``Seccomp: 2`` in /proc/self/status)."""
    try:
        with open("/proc/self/status", "rb") as f:
            return any(line.split() == [b"Seccomp:", b"2"] for line in f)
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# All together
# --------------------------------------------------------------------------------------


def _processes(
    pids: Iterable[int], backend: Backend = _backend, workers: int = 1
) -> tuple[list[Reading], list[tuple[int, OSError]]]:
    """The sockets of several processes, each with its network namespace's table, with one
    sock_diag dump for all that share this network namespace: ``(pid, sockets, reason,
    table)`` per process that holds any, in the order given (``kaext._connections._collect``
    makes them rows); the errors (ProcessLookupError, PermissionError) per pid.

    ``workers`` > 1: the processes' descriptors are read by that many threads at once
    (the C backend's batch read releases the GIL; the kernel's work per descriptor is
    the cost, so a scrape of many busy processes uses every core)."""
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
    own_ns = _netns(os.getpid())
    dump: Future[list[tuple[bytearray, int]]] | None = None
    if workers > 1 and len(pids) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(pids)) + 1, thread_name_prefix="kaext-collect") as pool:
            if own_ns is not None and any(_netns(pid) == own_ns for pid in pids):
                # this namespace's socket table, read meanwhile (kept whole: which inodes
                # are wanted is known only once every process has been read)
                dump = pool.submit(_netlink_dump, backend)
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
            table = _own_table(wanted, [found[i][1] for i in members], dump, backend)
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
    readings = [
        (pid, sockets, reason, tables[index])
        for index, (pid, sockets, reason, _) in enumerate(found)
        if index in tables  # else its namespace's table could not be read: in errors
    ]
    return readings, errors


#: Errors of a descriptor that is a socket but not TCP (a Unix or UDP socket): one the
#: TCP tables cannot hold.
_NOT_TCP = frozenset((errno.ENOTSOCK, errno.EOPNOTSUPP, errno.ENOPROTOOPT))


def _own_table(
    wanted: set[int],
    sockets: list[dict[int, Socket]],
    dump: Future[list[tuple[bytearray, int]]] | None,
    backend: Backend,
) -> dict[int, TableRow]:
    """The ``wanted`` inodes of this network namespace's table: from ``dump`` (read while the
    descriptors were read) when there is one, else from a dump now; from
    ``/proc/self/net/tcp`` without sock_diag.

    ``dump`` holds the IPv4 sockets; a TCP socket (or one of unknown kind) that it lacks
    is looked up in the IPv6 dump, then, if still missing (opened while ``dump`` was
    read), in an IPv4 dump again: the rows are those of dumps read after the descriptors."""
    reads = None
    if dump is not None:
        try:
            reads = dump.result()
        except OSError:  # no sock_diag: as below
            pass
    if reads is not None:
        table = _netlink_parse(reads, wanted, backend)
        missing = wanted.difference(table)  # then only those that may be TCP
        if missing:
            missing = {
                inode for held in sockets for inode in missing.intersection(held) if held[inode][1] not in _NOT_TCP
            }
        if not missing:
            return table
        try:
            table.update(_netlink_table(missing, backend, (socket.AF_INET6, socket.AF_INET)))
        except OSError:
            table.update(_proc_table(os.getpid(), missing))
        return table
    try:
        return _netlink_table(wanted, backend)
    except OSError:  # no sock_diag (a kernel without it, or a seccomp filter)
        return _proc_table(os.getpid(), wanted)
