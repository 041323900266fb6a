"""``kaext.enforce``: a keepalive policy on every TCP connection of a cgroup, whatever the program.

Linux, cgroup v2, root (CAP_BPF and CAP_NET_ADMIN; CAP_SYS_ADMIN too when the BPF file
system has to be mounted).  :func:`attach` loads a BPF_PROG_TYPE_SOCK_OPS program, built
by kaext itself (instructions assembled in C in the extension, loaded with the ``bpf()``
system call: no clang, kernel headers or libbpf), and attaches it to a cgroup v2
directory.  For every TCP connection established by a process of that cgroup or of a
descendant, either end (``BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`` /
``PASSIVE_ESTABLISHED_CB``), it sets SO_KEEPALIVE, TCP_KEEPIDLE (s), TCP_KEEPINTVL (s),
TCP_KEEPCNT, TCP_USER_TIMEOUT (ms) and TCP_SYNCNT (the ``connect_timeout``) with
``bpf_setsockopt``; and as a connect starts, before its SYN (``BPF_SOCK_OPS_TCP_CONNECT_CB``),
TCP_SYNCNT and TCP_USER_TIMEOUT, so that the policy bounds the connect too -- Go programs,
static binaries making raw system calls, setuid programs and whole containers alike, which
``kaext.inject`` and ``kaext.run``'s preload library cannot reach.  Connections
established before ``attach`` are not touched (``kaext.inspect --apply`` fixes those).

The values live in a BPF array map: changing the policy is a map update and reaches the
next connection.  Program and map are pinned on the BPF file system under
``/sys/fs/bpf/kaext/`` (root's, mode 0700; one directory per cgroup, named by the
cgroup's id, so every mount of the cgroup tree names the same enforcement), so the
enforcement stays after the calling process exits.  :func:`enforcements` lists what
the kernel has attached, matched with the pins; :func:`which` says whose policy a
cgroup's connections get (nested cgroups: the nearest enforced one's, whole).

The pure-Python install (no C extension) and other systems raise ``OSError(ENOSYS)``.

Command line: ``python -m kaext.enforce`` / ``kaext-enforce``::

    kaext-enforce CGROUP --policy SPEC [--respect-existing | --force]
    kaext-enforce CGROUP --remove
    kaext-enforce --list [--json]
    kaext-enforce --which CGROUP
    kaext-enforce --prune
"""

from __future__ import annotations

import argparse
import builtins
import errno
import json
import os
import stat
import sys
import warnings

from . import _backend, _platform
from ._cli import Parser, UsageError, check_terminated, prog_name, run_tool
from ._policy import Policy, as_policy
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "Enforcement",
    "attach",
    "detach",
    "enforcements",
    "list",
    "main",
    "own_cgroup",
    "prune",
    "run_in_cgroup",
    "which",
]

# the map's layout (option order: _platform.ENFORCE_OPTIONS), its flags and the helper ids, as the
# backend states them (ext/kaext_bpf.h for the extension, kaext._pure_bpf in Python)
_FACTS = _backend.BPF_FACTS
_PRIVILEGES = "needs root: CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN to mount the BPF file system)"


class Enforcement(Record):
    """A policy kaext enforces on a cgroup v2 directory, with the program's counters: a
    snapshot (immutable; :func:`enforcements` reads a fresh one).

    ``cgroup``: the directory's absolute path; ``policy``: the :class:`kaext.Policy`
    the program sets (values in the kernel's units, read back from the map);
    ``respect_existing`` / ``force`` as given to :func:`attach`; ``applied``,
    ``skipped``, ``failed``: connections the program has seen since it was attached,
    per outcome (skipped: left alone by ``respect_existing``; failed: a
    ``bpf_setsockopt`` refused, ``last_error`` says which option and why).
    ``cgroup_id``: the cgroup's id (the inode number of its directory), which names the
    enforcement wherever the cgroup tree is mounted.  ``state``: ``"enforced"`` (attached
    and pinned), ``"not attached"`` (pinned, but the kernel runs no such program there),
    ``"not pinned"`` (attached, but kaext's pins do not name it), ``"cgroup gone"``;
    ``repair``: for the last three, the command that repairs it.
    """

    __slots__ = (
        "cgroup",
        "policy",
        "respect_existing",
        "force",
        "applied",
        "skipped",
        "failed",
        "last_error",
        "cgroup_id",
        "state",
        "repair",
    )
    _fields = __slots__

    cgroup: str
    policy: Policy
    respect_existing: bool
    force: bool
    applied: int
    skipped: int
    failed: int
    last_error: str | None
    cgroup_id: int
    state: str
    repair: str | None

    def __init__(
        self,
        cgroup: str,
        policy: Policy,
        respect_existing: bool,
        force: bool,
        applied: int = 0,
        skipped: int = 0,
        failed: int = 0,
        last_error: str | None = None,
        cgroup_id: int = 0,
        state: str = "enforced",
        repair: str | None = None,
    ) -> None:
        self._init(
            cgroup, policy, respect_existing, force, applied, skipped, failed, last_error, cgroup_id, state, repair
        )

    def as_dict(self) -> dict[str, object]:
        """The fields of ``kaext-enforce --list --json``."""
        return {
            "cgroup": self.cgroup,
            "policy": str(self.policy),
            "respect_existing": self.respect_existing,
            "force": self.force,
            "applied": self.applied,
            "skipped": self.skipped,
            "failed": self.failed,
            "cgroup_id": self.cgroup_id,
            "state": self.state,
            "repair": self.repair,
        }


# --- where things are ------------------------------------------------------------------


def _mounts(fstype: str) -> builtins.list[str]:
    """Mount points of file systems of type ``fstype`` (from /proc/self/mountinfo); the mounts
    of a whole file system (root ``/``) before those of a part of it (bind mounts)."""
    points = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == fstype:
                    fields = left.split(" ")
                    points.append((fields[3] != "/", fields[4].replace("\\040", " ")))
    except FileNotFoundError:
        pass
    return [point for _part, point in sorted(points, key=lambda p: p[0])]


def _require_os() -> None:
    if not _platform.ENFORCE:
        raise OSError(errno.ENOSYS, "kaext.enforce needs Linux (cgroup v2 and BPF)")
    if _backend.IMPLEMENTATION != "c":
        raise OSError(
            errno.ENOSYS,
            "kaext.enforce needs kaext's C extension, which assembles the BPF programs "
            "(this is the pure-Python install)",
        )


def _resolve(cgroup: str | os.PathLike[str], *, must_exist: bool = True) -> tuple[str, str]:
    """(absolute path, path relative to its cgroup2 mount) of a cgroup v2 directory."""
    if not isinstance(cgroup, (str, os.PathLike)):
        raise TypeError(f"cgroup must be a path (str or os.PathLike), got {type(cgroup).__name__} {cgroup!r}")
    mounts = _mounts("cgroup2")
    if not mounts:
        raise OSError(errno.ENOENT, "no cgroup2 file system is mounted (kaext.enforce needs cgroup v2)")
    text = os.fspath(cgroup)
    path = os.path.realpath(text if os.path.isabs(text) else os.path.join(mounts[0], text))
    for mount in sorted(mounts, key=len, reverse=True):
        real = os.path.realpath(mount)
        if path == real or path.startswith(real.rstrip("/") + "/"):
            rel = os.path.relpath(path, real)
            rel = "" if rel == "." else rel
            break
    else:
        if must_exist and not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, f"cgroup {text!r}: no such directory", path)
        raise ValueError(f"cgroup {text!r} is not a cgroup v2 directory (cgroup2 is mounted on {', '.join(mounts)})")
    if must_exist:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, f"cgroup {text!r}: no such directory", path)
        if not os.path.exists(os.path.join(path, _platform.CGROUP2_MARKER)):
            raise ValueError(f"cgroup {text!r} is not a cgroup v2 directory (it has no {_platform.CGROUP2_MARKER})")
    return path, rel


def _pin_root() -> str:
    return os.path.join(_platform.BPF_FS, _platform.ENFORCE_PIN_DIR)


_PIN_PREFIX = "cgroup-"  # + the cgroup's id: one directory per enforced cgroup, named by the cgroup itself


def _pin_name(cgroup_id: int) -> str:
    return f"{_PIN_PREFIX}{cgroup_id}"


def _bpffs_mounted() -> bool:
    return os.path.realpath(_platform.BPF_FS) in (os.path.realpath(m) for m in _mounts("bpf"))


def _ensure_bpffs() -> None:
    if _bpffs_mounted():
        return
    import fcntl

    # one mount, even when several processes get here at once: a second one on top would hide
    # the pins made on the first
    os.makedirs(_platform.BPF_FS, exist_ok=True)
    lock = os.open(_platform.BPF_FS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _bpffs_mounted():
            return
        try:
            _backend.bpf_mount(_platform.BPF_FS)  # mode 0700: root's alone
        except PermissionError as exc:
            raise PermissionError(
                exc.errno, f"mounting the BPF file system on {_platform.BPF_FS} {_PRIVILEGES}"
            ) from None
    finally:
        os.close(lock)


class _Pins:
    """kaext's pin directory, opened safely and locked: ``/sys/fs/bpf/kaext``, root's, mode 0700.

    Opened component by component without following links (``O_NOFOLLOW``), and its owner
    and mode checked on the open descriptor: a directory, link or file another user put
    there is named in the error and never used.  Every path handed to the kernel goes
    through this descriptor (``/proc/self/fd/N/...``).  The lock (``flock`` on it)
    serialises every change kaext makes: exclusive to attach or remove, shared to read.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, *, create: bool, exclusive: bool) -> _Pins | None:
        import fcntl

        root = _pin_root()
        if create:
            _ensure_bpffs()
        elif not _bpffs_mounted():
            return None
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fs = os.open(_platform.BPF_FS, flags)
        except PermissionError as exc:
            raise PermissionError(exc.errno, f"reading {_platform.BPF_FS} {_PRIVILEGES}") from None
        try:
            try:
                fd = os.open(_platform.ENFORCE_PIN_DIR, flags, dir_fd=fs)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(_platform.ENFORCE_PIN_DIR, 0o700, dir_fd=fs)
                except FileExistsError:
                    pass
                fd = os.open(_platform.ENFORCE_PIN_DIR, flags, dir_fd=fs)
        except PermissionError as exc:
            raise PermissionError(exc.errno, f"reading {root} {_PRIVILEGES}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _planted(root, "is not a directory but a link or a file") from None
            raise
        finally:
            os.close(fs)
        try:
            st = os.fstat(fd)
            if st.st_uid != 0:
                raise _planted(root, f"belongs to uid {st.st_uid} (mode {st.st_mode & 0o7777:04o}), not to root")
            if st.st_mode & 0o022:
                raise _planted(root, f"is writable by others (mode {st.st_mode & 0o7777:04o})")
            if st.st_mode & 0o7777 != 0o700:
                os.fchmod(fd, 0o700)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def close(self) -> None:
        os.close(self.fd)  # the lock goes with it

    def __enter__(self) -> _Pins:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, *names: str) -> str:
        return os.path.join(f"/proc/self/fd/{self.fd}", *names)

    def names(self) -> builtins.list[str]:
        return sorted(n for n in os.listdir(self.fd) if n.startswith(_PIN_PREFIX) and n[len(_PIN_PREFIX) :].isdigit())

    def get(self, name: str, obj: str) -> int | None:
        """A descriptor for the object ``obj`` (map, sock_ops, setsockopt) pinned for ``name``."""
        try:
            st = os.stat(obj, dir_fd=self._dir(name), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            self._close_dir()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            raise _planted(os.path.join(_pin_root(), name, obj), "is not a BPF object kaext pinned")
        return _bpf("BPF_OBJ_GET", _backend.bpf_obj_get, self.path(name, obj))

    _dir_fd = -1

    def _dir(self, name: str) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        self._dir_fd = os.open(name, flags, dir_fd=self.fd)
        return self._dir_fd

    def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def pin(self, fd: int, name: str, obj: str) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        try:
            os.unlink(obj, dir_fd=self._dir(name))
        except FileNotFoundError:
            pass
        finally:
            self._close_dir()
        _bpf("BPF_OBJ_PIN", _backend.bpf_pin, fd, self.path(name, obj))

    def unpin(self, name: str, obj: str) -> None:
        try:
            os.unlink(obj, dir_fd=self._dir(name))
        except FileNotFoundError:
            pass
        finally:
            self._close_dir()

    def remove(self, name: str) -> None:
        for obj in _OBJECTS:
            try:
                self.unpin(name, obj)
            except FileNotFoundError:
                return
        try:
            os.rmdir(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass


_OBJECTS = ("setsockopt", "sock_ops", "map")


def _planted(path: str, what: str) -> PermissionError:
    return PermissionError(
        errno.EPERM,
        f"{path} {what}: kaext keeps its pins only in a directory of root's that no other user can "
        f"write, and uses nothing else there (look at it, then remove it: rm -r {path})",
    )


def _bpf(call: str, fn: object, *args: object) -> int:
    """Run a backend BPF call; EPERM (and EACCES) become a PermissionError that names the privileges."""
    try:
        return fn(*args)  # type: ignore[operator,no-any-return]
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise PermissionError(exc.errno, f"kaext.enforce {_PRIVILEGES} ({call}: {exc.strerror})") from None
        raise


def _verifier_reason(log: str) -> str:
    """The verifier's own words: the last two lines of its log that are not its closing statistics."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("processed ", "verification time", "stack depth"))]
    return " / ".join(lines[-2:])


def _load(kind: int, map_fd: int) -> int:
    what = "sock_ops" if kind == _backend.BPF_SOCK_OPS else "cgroup/setsockopt"
    try:
        return int(_backend.bpf_load(kind, map_fd))
    except OSError as exc:
        log = "" if exc.filename in (None, "bpf(BPF_PROG_LOAD)") else str(exc.filename)  # the verifier's log
        reason = _verifier_reason(log)
        if exc.errno == errno.EPERM or (exc.errno == errno.EACCES and not reason):
            raise PermissionError(exc.errno, f"kaext.enforce {_PRIVILEGES} (BPF_PROG_LOAD: {exc.strerror})") from None
        unknown = {_FACTS["FUNC_SETSOCKOPT"]: "bpf_setsockopt", _FACTS["FUNC_GETSOCKOPT"]: "bpf_getsockopt"}
        if "unknown func" in reason:
            number = reason.rsplit("#", 1)[-1].strip() if "#" in reason else ""
            helper = unknown.get(int(number), "a helper") if number.isdigit() else "a helper"
            text = f"this kernel has no {helper} for {what} programs"
        elif exc.errno == errno.EACCES:
            text = f"this kernel's verifier refuses kaext's {what} program"
        elif exc.errno == errno.EINVAL:
            text = (
                f"this kernel refuses kaext's {what} program (sock_ops needs Linux 4.13, cgroup/setsockopt 5.3, "
                f"bpf_setsockopt with {', '.join(_platform.ENFORCE_OPTIONS)} 5.9)"
            )
        else:
            text = f"loading kaext's {what} program failed"
        quoted = f" (verifier: {json.dumps(reason)})" if reason else ""
        error = OSError(f"{text}: {exc.strerror}{quoted}")  # a plain OSError: EACCES here is not "not root"
        error.errno, error.strerror = exc.errno, str(error.args[0])
        raise error from None


_PROBE = (
    "import socket\n"
    "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
    "c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n"
)


def _option_name(index: int) -> str:
    if index < len(_platform.ENFORCE_OPTIONS):
        return f"bpf_setsockopt({_platform.ENFORCE_OPTIONS[index]})"
    return "bpf_getsockopt(SO_KEEPALIVE)"  # the read of respect_existing (ext/kaext_bpf.h)


def _probe(mask: int, values: tuple[int, ...], flags: int = 0) -> None:
    """Try the policy on one loopback connection in a scratch cgroup, before anything is attached.

    Raises OSError naming the option when this kernel's bpf_setsockopt refuses one
    (kernels before 5.9 take none of the keepalive options from sock_ops programs).  When
    no scratch cgroup can be made here (a delegated subtree, a full cgroup tree) the
    check is left out: the program's ``failed`` counter and ``last_error`` tell later.
    """
    import subprocess

    try:
        path = os.path.join(own_cgroup(), f"kaext-probe-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(path)
    except OSError:
        return
    try:
        map_fd = _bpf("BPF_MAP_CREATE", _backend.bpf_map_create)
        prog = -1
        cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf("BPF_MAP_UPDATE_ELEM", _backend.bpf_config_write, map_fd, mask, flags, values, 0)
            prog = _load(_backend.BPF_SOCK_OPS, map_fd)
            _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, cgroup_fd, prog, _backend.BPF_SOCK_OPS)
            procs = os.path.join(path, "cgroup.procs")

            def enter() -> None:
                with open(procs, "w") as f:
                    f.write("0")

            try:
                ran = (
                    subprocess.run(
                        [sys.executable, "-S", "-c", _PROBE], preexec_fn=enter, capture_output=True, timeout=30
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.SubprocessError):
                ran = False
            finally:
                _backend.bpf_detach(cgroup_fd, prog, _backend.BPF_SOCK_OPS)
            check_terminated()  # kaext-enforce's SIGTERM, if it came while the child was made
            _applied, _skipped, failed, last_errno, last_option = _backend.bpf_counters_read(map_fd)
        finally:
            os.close(cgroup_fd)
            os.close(map_fd)
            if prog >= 0:
                os.close(prog)
        if ran and failed and last_option >= len(_platform.ENFORCE_OPTIONS):
            raise OSError(
                last_errno,
                f"this kernel's bpf_getsockopt cannot read SO_KEEPALIVE ({os.strerror(last_errno)}) in sock_ops "
                "programs, which respect_existing needs (Linux 6.1 and later can)",
            )
        if ran and failed:
            option = _platform.ENFORCE_OPTIONS[last_option]
            raise OSError(
                last_errno,
                f"this kernel's bpf_setsockopt refuses {option} ({os.strerror(last_errno)}) in sock_ops programs: "
                f"kaext.enforce cannot set it here (Linux 5.9 and later take {', '.join(_platform.ENFORCE_OPTIONS)})",
            )
    finally:
        _remove_cgroup(path)


# --- policy <-> map ----------------------------------------------------------------------


def _config(policy: Policy) -> tuple[int, tuple[int, ...]]:
    plan = policy._plan
    mask = 1 << _FACTS["KEEPALIVE"]
    values = [0] * _FACTS["NOPTIONS"]
    values[_FACTS["KEEPALIVE"]] = 1 if policy.keepalive else 0
    for knob, option, value in (
        (_platform.IDLE, _FACTS["IDLE"], plan.idle),
        (_platform.INTERVAL, _FACTS["INTERVAL"], plan.interval),
        (_platform.COUNT, _FACTS["COUNT"], plan.count),
        (_platform.USER_TIMEOUT, _FACTS["USER_TIMEOUT"], plan.user_timeout),
        (_platform.CONNECT_TIMEOUT, _FACTS["CONNECT_TIMEOUT"], plan.connect_timeout),  # TCP_SYNCNT, before the SYN
    ):
        if plan.set_mask & (1 << knob):
            mask |= 1 << option
            values[option] = int(value)
    return mask, tuple(values)


def _policy_of(mask: int, values: tuple[int, ...]) -> Policy:
    def value(option: str) -> int | None:
        index = _FACTS[option]
        return values[index] if mask & (1 << index) else None

    ut = value("USER_TIMEOUT")
    user_timeout = None if ut is None else ut / 1000
    syncnt = value("CONNECT_TIMEOUT") if len(values) > _FACTS["CONNECT_TIMEOUT"] else None
    connect_timeout = None if syncnt is None else _platform.syn_seconds(syncnt)
    with warnings.catch_warnings():  # attach warned about the policy already; reading does not
        warnings.simplefilter("ignore", RuntimeWarning)
        if not values[_FACTS["KEEPALIVE"]]:
            return Policy(user_timeout=user_timeout, keepalive=False, connect_timeout=connect_timeout)
        return Policy(value("IDLE"), value("INTERVAL"), value("COUNT"), user_timeout, connect_timeout=connect_timeout)


# --- what the kernel has attached --------------------------------------------------------

_KINDS = (("sock_ops", "BPF_SOCK_OPS"), ("setsockopt", "BPF_SETSOCKOPT"))
_PROG_NAMES = {"kaext_sockops": "sock_ops", "kaext_setsocko": "setsockopt"}  # as bpf_prog_info names them


class _Prog:
    """One BPF program: its id, kind (sock_ops / setsockopt, when it is kaext's) and map id."""

    __slots__ = ("id", "kind", "map_id", "tag")

    def __init__(self, prog_id: int, kind: str | None, map_id: int, tag: str) -> None:
        self.id, self.kind, self.map_id, self.tag = prog_id, kind, map_id, tag


def _fd_by_id(is_map: bool, obj_id: int) -> int:
    """A descriptor of the map or program ``obj_id``: BPF_*_GET_FD_BY_ID or, without the
    CAP_SYS_ADMIN that needs (the enforcer has CAP_BPF + CAP_NET_ADMIN), through kaext's own
    pin of it; PermissionError when it is not kaext's, FileNotFoundError when it is gone."""
    call = "BPF_MAP_GET_FD_BY_ID" if is_map else "BPF_PROG_GET_FD_BY_ID"
    try:
        return _bpf(call, _backend.bpf_fd_by_id, is_map, obj_id)
    except PermissionError as denied:
        root = _pin_root()
        try:
            names = os.listdir(root)
        except OSError:
            raise denied from None
        for name in names:
            if not name.startswith(_PIN_PREFIX):
                continue
            for obj in ("map",) if is_map else ("sock_ops", "setsockopt"):
                try:
                    fd = _backend.bpf_obj_get(os.path.join(root, name, obj))
                except OSError:
                    continue
                try:
                    found = _backend.bpf_map_id(fd) if is_map else _backend.bpf_prog_info(fd)[0]
                except OSError:
                    found = -1
                if found == obj_id:
                    return fd
                os.close(fd)
        raise denied from None


def _prog(prog_id: int, cache: dict[int, _Prog | None]) -> _Prog | None:
    """What program ``prog_id`` is (None: gone meanwhile, or, without CAP_SYS_ADMIN, not one
    of kaext's pinned programs)."""
    if prog_id not in cache:
        try:
            fd = _bpf("BPF_PROG_GET_FD_BY_ID", _backend.bpf_fd_by_id, False, prog_id)
        except FileNotFoundError:
            cache[prog_id] = None
            return None
        except PermissionError:
            # BPF_PROG_GET_FD_BY_ID needs CAP_SYS_ADMIN (kernel/bpf/syscall.c), which the
            # enforcer's CAP_BPF + CAP_NET_ADMIN lack: kaext's own programs are known through
            # their pins (BPF_OBJ_GET), the others are not kaext's to tell
            if _PINNED_LOADED not in cache:
                cache[_PINNED_LOADED] = None
                cache.update(_pinned_progs())
            return cache.setdefault(prog_id, None)
        try:
            pid, tag, name, map_id = _backend.bpf_prog_info(fd)
        finally:
            os.close(fd)
        cache[prog_id] = _Prog(pid, _PROG_NAMES.get(name), map_id, tag)
    return cache[prog_id]


_PINNED_LOADED = -1  # a key of the program cache: kaext's pinned programs are in it


def _pinned_progs() -> dict[int, _Prog]:
    """kaext's pinned programs by id, read through their pins (no CAP_SYS_ADMIN needed)."""
    found: dict[int, _Prog] = {}
    root = _pin_root()
    try:
        names = os.listdir(root)
    except OSError:
        return found
    for name in names:
        if not name.startswith(_PIN_PREFIX):
            continue
        for kind, _const in _KINDS:
            try:
                fd = _backend.bpf_obj_get(os.path.join(root, name, kind))
            except OSError:
                continue
            try:
                pid, tag, prog_name, map_id = _backend.bpf_prog_info(fd)
            finally:
                os.close(fd)
            found[pid] = _Prog(pid, _PROG_NAMES.get(prog_name), map_id, tag)
    return found


def _attached(
    cgroup_fd: int, cache: dict[int, _Prog | None], *, effective: bool = False
) -> dict[str, builtins.list[_Prog]]:
    """kaext's programs attached to the cgroup (or, ``effective``: running for its sockets, in order)."""
    found: dict[str, builtins.list[_Prog]] = {}
    for kind, const in _KINDS:
        try:
            ids = _backend.bpf_prog_query(cgroup_fd, getattr(_backend, const), effective)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                text = f"kaext.enforce {_PRIVILEGES} (BPF_PROG_QUERY: {exc.strerror})"
                raise PermissionError(exc.errno, text) from None
            raise
        progs = [_prog(i, cache) for i in ids]
        found[kind] = [p for p in progs if p is not None and p.kind == kind]
    return found


def _cgroups() -> Iterator[tuple[str, os.DirEntry[str] | None]]:
    """Every cgroup v2 directory (the whole tree: the mount of its root first)."""
    mounts = _mounts("cgroup2")
    if not mounts:
        return
    top = os.path.realpath(mounts[0])
    yield top, None
    stack = [top]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        yield entry.path, entry
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue


# --- reading an enforcement ------------------------------------------------------------


STATES = ("enforced", "not attached", "not pinned", "cgroup gone")


_Config = tuple[int, int, tuple[int, ...], int, tuple[int, int, int, int, int]]  # policy entry, then counters


def _read_map(map_fd: int) -> _Config:
    mask, flags, values, cgroup_id = _backend.bpf_config_read(map_fd)
    return mask, flags, values, cgroup_id, _backend.bpf_counters_read(map_fd)


def _spec(e_policy: Policy, flags: int) -> str:
    mode = (
        " --respect-existing" if flags & _FACTS["RESPECT_EXISTING"] else " --force" if flags & _FACTS["FORCE"] else ""
    )
    return f"--policy '{e_policy}'{mode}"


def _enforcement(path: str, cgroup_id: int, config: _Config, state: str) -> Enforcement:
    mask, flags, values, _id, (applied, skipped, failed, last_errno, last_option) = config
    policy = _policy_of(mask, values)
    last_error = f"{_option_name(last_option)}: {os.strerror(last_errno)}" if last_errno else None
    repair = None
    prog = "kaext-enforce"  # the command a user types, whoever reads the enforcement
    if state in ("not attached", "not pinned"):
        repair = f"{prog} {path} {_spec(policy, flags)}  (or: {prog} {path} --remove)"
    elif state == "cgroup gone":
        repair = f"{prog} --prune"
    return Enforcement(
        path,
        policy,
        bool(flags & _FACTS["RESPECT_EXISTING"]),
        bool(flags & _FACTS["FORCE"]),
        applied,
        skipped,
        failed,
        last_error,
        cgroup_id=cgroup_id,
        state=state,
        repair=repair,
    )


def _pinned(pins: _Pins, name: str) -> tuple[_Config | None, dict[str, int]]:
    """What kaext's pins for ``name`` hold: the map's entries, and the pinned programs' ids by kind."""
    map_fd = pins.get(name, "map")
    if map_fd is None:
        return None, {}
    try:
        config = _read_map(map_fd)
    finally:
        os.close(map_fd)
    ids = {}
    for kind, _const in _KINDS:
        fd = pins.get(name, kind)
        if fd is not None:
            try:
                ids[kind] = _backend.bpf_prog_info(fd)[0]
            finally:
                os.close(fd)
    return config, ids


def _consistent(ids: dict[str, int], attached: dict[str, builtins.list[_Prog]]) -> bool:
    """Every program pinned is attached (a sock_ops program among them)."""
    return "sock_ops" in ids and all(ids[kind] in [p.id for p in attached[kind]] for kind in ids)


def _match(
    path: str, cgroup_id: int, config: _Config | None, ids: dict[str, int], attached: dict[str, builtins.list[_Prog]]
) -> builtins.list[Enforcement]:
    """One cgroup's enforcements: its pins matched with what the kernel has attached there."""
    found = []
    if config is not None:
        state = "enforced" if _consistent(ids, attached) else "not attached"
        found.append(_enforcement(path, cgroup_id, config, state))
    for p in attached["sock_ops"]:  # attached, but not (or no longer) pinned: its policy from its own map
        if p.id == ids.get("sock_ops") or not p.map_id:
            continue
        try:
            map_fd = _fd_by_id(True, p.map_id)
        except (FileNotFoundError, PermissionError):  # gone, or unreadable without CAP_SYS_ADMIN
            continue
        try:
            found.append(_enforcement(path, cgroup_id, _read_map(map_fd), "not pinned"))
        finally:
            os.close(map_fd)
    return found


def _scan(pins: _Pins | None) -> builtins.list[Enforcement]:
    """What the kernel has attached, every cgroup, matched with kaext's pins."""
    cache: dict[int, _Prog | None] = {}
    pinned: dict[int, tuple[_Config | None, dict[str, int]]] = {}
    if pins is not None:
        for name in pins.names():
            config, ids = _pinned(pins, name)
            if config is not None:
                pinned[int(name[len(_PIN_PREFIX) :])] = (config, ids)
    found = []
    for path, entry in _cgroups():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            cgroup_id = os.fstat(fd).st_ino if entry is None else entry.inode()
            attached = _attached(fd, cache)
        finally:
            os.close(fd)
        config, ids = pinned.pop(cgroup_id, (None, {}))
        found += _match(path, cgroup_id, config, ids, attached)
    for cgroup_id, (config, _ids) in pinned.items():  # pins of no cgroup there is
        assert config is not None
        found.append(_enforcement(f"(cgroup id {cgroup_id})", cgroup_id, config, "cgroup gone"))
    return found


# --- the API -----------------------------------------------------------------------------


def attach(
    cgroup: str | os.PathLike[str],
    policy: Policy | str,
    *,
    respect_existing: bool = False,
    force: bool = False,
) -> Enforcement:
    """Enforce ``policy`` on every TCP connection of the cgroup v2 directory ``cgroup``.

    ``cgroup``: a path, or a path relative to the cgroup2 mount
    (``"system.slice/nginx.service"``); descendants are covered too, unless a nearer
    cgroup has a policy of its own (the nearest enforced cgroup's policy applies, whole).
    When kaext already enforces on that cgroup the policy (and the flags) are updated in
    place: a map update, reaching the next connection.  Whatever state the cgroup is in
    (programs pinned but not attached, attached but not pinned), this repairs it without
    a moment without a policy: the new programs are attached before any old one is
    detached.  It stays in force after this process exits (pinned under
    ``/sys/fs/bpf/kaext``, named by the cgroup's id); connections established before are
    not touched.

    ``respect_existing=True``: leave a connection alone when its program has already
    turned SO_KEEPALIVE on (read back with ``bpf_getsockopt``, Linux 6.1+; a connection
    where it cannot be read is left alone too, counted as failed); nothing is set before
    the SYN then, so the policy's connect timeout does not bound the connect.  ``force=True``: also a
    cgroup/setsockopt program that replaces the value of the program's own setsockopt
    calls (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT,
    TCP_SYNCNT, for the options the policy sets, on TCP sockets) with the policy's; the
    call succeeds.

    Raises ValueError (both flags; a bad spec; not a cgroup v2 directory), TypeError,
    FileNotFoundError (no such directory), PermissionError (not root: CAP_BPF and
    CAP_NET_ADMIN; or kaext's pin directory is not root's alone, named), OSError ENOENT
    (no cgroup2 mount), OSError naming what the kernel lacks, OSError ENOSYS (not Linux;
    the pure-Python install).  Nothing is left half attached.
    """
    for name, flag in (("respect_existing", respect_existing), ("force", force)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if respect_existing and force:
        raise ValueError("respect_existing=True and force=True contradict each other: choose one")
    resolved = as_policy(policy)
    _require_os()
    path, _rel = _resolve(cgroup)
    mask, values = _config(resolved)
    flags = (_FACTS["RESPECT_EXISTING"] if respect_existing else 0) | (_FACTS["FORCE"] if force else 0)
    _probe(mask, values, flags & _FACTS["RESPECT_EXISTING"])
    cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        cgroup_id = os.fstat(cgroup_fd).st_ino
        pins = _Pins.open(create=True, exclusive=True)
        assert pins is not None
        with pins:
            _attach_locked(pins, cgroup_fd, cgroup_id, mask, flags, values)
            if force:
                _claim_below(pins, path)
            result = [e for e in _scan_one(pins, path, cgroup_fd, cgroup_id) if e.state == "enforced"]
    finally:
        os.close(cgroup_fd)
    if not result:  # the kernel took everything, yet does not list it: said, not hidden
        raise OSError(errno.EIO, f"{path}: kaext's programs are not attached after attaching them")
    return result[0]


def _scan_one(pins: _Pins, path: str, cgroup_fd: int, cgroup_id: int) -> builtins.list[Enforcement]:
    """The enforcement(s) of one cgroup, from the kernel and the pins."""
    config, ids = _pinned(pins, _pin_name(cgroup_id))
    return _match(path, cgroup_id, config, ids, _attached(cgroup_fd, {}))


def _attach_locked(pins: _Pins, cgroup_fd: int, cgroup_id: int, mask: int, flags: int, values: tuple[int, ...]) -> None:
    """Attach, update in place, or repair (under the lock)."""
    name = _pin_name(cgroup_id)
    attached = _attached(cgroup_fd, {})
    config, ids = _pinned(pins, name)
    others = [p for kind in attached for p in attached[kind] if p.id not in ids.values()]
    if config is not None and config[3] == cgroup_id and _consistent(ids, attached) and not others:
        map_fd = pins.get(name, "map")
        if map_fd is not None:
            try:
                _update(pins, name, cgroup_fd, map_fd, ids, mask, flags, values)
            finally:
                os.close(map_fd)
            return
    _replace(pins, name, cgroup_fd, attached, mask, flags, values)


def _want_setsockopt(cgroup_fd: int, flags: int) -> bool:
    """A setsockopt program for this cgroup: to force, or to claim against an ancestor's force."""
    if flags & _FACTS["FORCE"]:
        return True
    return bool(_attached(cgroup_fd, {}, effective=True)["setsockopt"])


def _update(
    pins: _Pins,
    name: str,
    cgroup_fd: int,
    map_fd: int,
    pinned: dict[str, int],
    mask: int,
    flags: int,
    values: tuple[int, ...],
) -> None:
    """The programs are in place: the policy into the map, and the setsockopt program added or taken off."""
    cgroup_id = _backend.bpf_config_read(map_fd)[3]
    want = _want_setsockopt(cgroup_fd, flags) if "setsockopt" not in pinned else True
    if want and "setsockopt" not in pinned:
        prog = _load(_backend.BPF_SETSOCKOPT, map_fd)
        try:
            pins.pin(prog, name, "setsockopt")
            _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, cgroup_fd, prog, _backend.BPF_SETSOCKOPT)
        except BaseException:
            pins.unpin(name, "setsockopt")
            raise
        finally:
            os.close(prog)
    _bpf("BPF_MAP_UPDATE_ELEM", _backend.bpf_config_write, map_fd, mask, flags, values, cgroup_id)


def _replace(
    pins: _Pins,
    name: str,
    cgroup_fd: int,
    attached: dict[str, builtins.list[_Prog]],
    mask: int,
    flags: int,
    values: tuple[int, ...],
) -> None:
    """New map and programs: pinned, attached, and only then the old ones (kaext's) detached."""
    cgroup_id = os.fstat(cgroup_fd).st_ino
    fds: builtins.list[int] = []
    done: builtins.list[tuple[int, int]] = []
    try:
        map_fd = _bpf("BPF_MAP_CREATE", _backend.bpf_map_create)
        fds.append(map_fd)
        _bpf("BPF_MAP_UPDATE_ELEM", _backend.bpf_config_write, map_fd, mask, flags, values, cgroup_id)
        kinds = [("sock_ops", _backend.BPF_SOCK_OPS)]
        if _want_setsockopt(cgroup_fd, flags):
            kinds.append(("setsockopt", _backend.BPF_SETSOCKOPT))
        loaded = []
        for kind, const in kinds:
            prog = _load(const, map_fd)
            fds.append(prog)
            loaded.append((kind, const, prog))
        for _kind, const, prog in loaded:
            _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, cgroup_fd, prog, const)
            done.append((const, prog))
    except BaseException:
        for const, prog in reversed(done):
            try:
                _backend.bpf_detach(cgroup_fd, prog, const)
            except OSError:
                pass
        for fd in fds:
            os.close(fd)
        raise
    try:
        # the new programs run (the old ones too, until they go: the first claims each connection)
        _detach_progs(cgroup_fd, attached)
        for obj in ("setsockopt", "sock_ops"):
            pins.unpin(name, obj)
        pins.pin(map_fd, name, "map")
        for kind, _const, prog in loaded:
            pins.pin(prog, name, kind)
    finally:
        for fd in fds:
            os.close(fd)


def _detach_progs(cgroup_fd: int, attached: dict[str, builtins.list[_Prog]]) -> None:
    for kind, const in _KINDS:
        for p in attached.get(kind, []):
            try:
                fd = _fd_by_id(False, p.id)
            except FileNotFoundError:
                continue
            try:
                _backend.bpf_detach(cgroup_fd, fd, getattr(_backend, const))
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # ENOENT: no longer attached
                    raise
            finally:
                os.close(fd)


def _claim_below(pins: _Pins, path: str) -> None:
    """A force on ``path``: each enforced cgroup below it without a setsockopt program gets a
    claim-only one, so the force stays out of the connections whose policy is that cgroup's."""
    for sub, entry in _cgroups_below(path):
        try:
            fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            cgroup_id = entry.inode()
            name = _pin_name(cgroup_id)
            attached = _attached(fd, {})
            if not attached["sock_ops"] or attached["setsockopt"]:
                continue
            map_fd = pins.get(name, "map")
            if map_fd is None:
                continue
            try:
                prog = _load(_backend.BPF_SETSOCKOPT, map_fd)
                try:
                    pins.pin(prog, name, "setsockopt")
                    _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, fd, prog, _backend.BPF_SETSOCKOPT)
                finally:
                    os.close(prog)
            finally:
                os.close(map_fd)
        finally:
            os.close(fd)


def _cgroups_below(path: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        yield entry.path, entry
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue


def detach(cgroup: str | os.PathLike[str]) -> bool:
    """Stop enforcing on ``cgroup``: detach kaext's programs and remove their pins.

    True when kaext enforced a policy there (attached or pinned), False when it did not.
    New connections then get the policy of the nearest enforced ancestor, or the system
    defaults; established ones keep what they were given.  Raises as :func:`attach` does.
    """
    _require_os()
    path, _rel = _resolve(cgroup, must_exist=False)
    try:
        cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # the cgroup is gone, and its programs with it (--prune removes the pins)
    try:
        cgroup_id = os.fstat(cgroup_fd).st_ino
        pins = _Pins.open(create=False, exclusive=True)  # the lock first: no attach halfway meanwhile
        try:
            attached = _attached(cgroup_fd, {})
            had = bool(attached["sock_ops"] or attached["setsockopt"])
            _detach_progs(cgroup_fd, attached)
            if pins is not None:
                name = _pin_name(cgroup_id)
                had = had or name in pins.names()
                pins.remove(name)
        finally:
            if pins is not None:
                pins.close()
        return had
    finally:
        os.close(cgroup_fd)


def prune() -> builtins.list[int]:
    """Remove the pins of enforcements whose cgroup is gone; their cgroup ids."""
    _require_os()
    pins = _Pins.open(create=False, exclusive=True)
    if pins is None:
        return []
    with pins:
        gone = [e.cgroup_id for e in _scan(pins) if e.state == "cgroup gone"]
        for cgroup_id in gone:
            pins.remove(_pin_name(cgroup_id))
    return gone


def enforcements() -> builtins.list[Enforcement]:
    """Every policy kaext enforces on this host, as the kernel has it, with its counters (reads only).

    Read from the kernel (the programs attached to each cgroup) and matched with kaext's
    pins; ``state`` says when the two disagree (``"not attached"``, ``"not pinned"``,
    ``"cgroup gone"``) and ``repair`` gives the command that repairs it.  Empty on other
    systems and in the pure-Python install.  PermissionError when the kernel or the pins
    cannot be read (not root), or kaext's pin directory is not root's alone.
    """
    if not _platform.ENFORCE or _backend.IMPLEMENTATION != "c":
        return []
    pins = _Pins.open(create=False, exclusive=False)
    try:
        return _scan(pins)
    finally:
        if pins is not None:
            pins.close()


def which(cgroup: str | os.PathLike[str]) -> Enforcement | None:
    """The enforcement whose policy the connections of ``cgroup`` get: the nearest enforced
    ancestor-or-self's, as the kernel runs the programs (None: none; system defaults).
    """
    _require_os()
    path, _rel = _resolve(cgroup)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        first = _attached(fd, {}, effective=True)["sock_ops"]
    finally:
        os.close(fd)
    if not first:
        return None
    owner = first[0]  # the first to run claims the connection
    map_fd = _fd_by_id(True, owner.map_id)
    try:
        config = _read_map(map_fd)
    finally:
        os.close(map_fd)
    cgroup_id = config[3]
    at = path
    while True:
        if os.stat(at).st_ino == cgroup_id:
            break
        parent = os.path.dirname(at)
        if parent == at or not os.path.exists(os.path.join(parent, _platform.CGROUP2_MARKER)):
            at = f"(cgroup id {cgroup_id})"
            break
        at = parent
    for e in enforcements():
        if e.cgroup_id == cgroup_id and e.state in ("enforced", "not pinned"):
            return e
    return _enforcement(at, cgroup_id, config, "not pinned")


def own_cgroup() -> str:
    """This process's cgroup v2 directory (the ``0::`` line of ``/proc/self/cgroup``), as a
    path below the cgroup2 mount: where a fresh child cgroup for a command can be made.

    OSError ENOENT when no cgroup2 file system is mounted or this process is in no v2 group.
    """
    mounts = _mounts("cgroup2")
    if not mounts:
        raise OSError(errno.ENOENT, "no cgroup2 file system is mounted (kaext.enforce needs cgroup v2)")
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(os.path.realpath(mounts[0]), line[3:].strip().lstrip("/"))
    raise OSError(errno.ENOENT, "this process is in no cgroup v2 group")


def run_in_cgroup(
    command: Sequence[str],
    policy: Policy | str,
    *,
    force: bool = False,
    started: Callable[[subprocess.Popen[bytes]], object] | None = None,
) -> int:
    """Run ``command`` in a fresh child cgroup of this process's own, with ``policy`` attached.

    For ``kaext-run --cgroup``: every TCP connection of the command and its children,
    static binaries and Go programs included, gets the policy; processes outside are
    untouched.  The cgroup (``kaext-run-PID-RANDOM``) and its pins are removed when the
    command exits (also on failure).  Returns the command's exit status (127 not found,
    126 not executable, 128+N killed by signal N); raises as :func:`attach` does.  An
    exception while waiting (KeyboardInterrupt) terminates the command and is re-raised.

    ``started`` is called with the command's :class:`subprocess.Popen` as soon as it is
    made, while SIGTERM, SIGINT and SIGHUP are still blocked: what a runner that passes
    signals on needs to know whom to pass them to (the set-up also runs short-lived
    children of its own, which are not the command).
    """
    import signal
    import subprocess

    resolved = as_policy(policy)
    _require_os()
    path = os.path.join(own_cgroup(), f"kaext-run-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.mkdir(path)
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"making the cgroup {path} {_PRIVILEGES}") from None
    try:
        attach(path, resolved, force=force)
        procs = os.path.join(path, "cgroup.procs")

        # The signals a runner passes on (kaext-run --cgroup) are blocked while the child is
        # made: one that came between fork and exec would be taken by the handler the child
        # inherited, and lost to the command.  Blocked, it waits: the runner's own is handled
        # once the command runs; the child sets its default back (unless ignored) and unblocks.
        passed_on = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

        def enter() -> None:  # in the child, before exec: its connections are the cgroup's from the start
            for signum in passed_on:
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, passed_on)
            with open(procs, "w") as f:
                f.write("0")

        mask = signal.pthread_sigmask(signal.SIG_BLOCK, passed_on)
        try:
            try:
                child = subprocess.Popen([*command], preexec_fn=enter)
            except FileNotFoundError:
                return 127
            except PermissionError:
                return 126
            try:
                if started is not None:
                    started(child)
            except BaseException:
                child.kill()
                child.wait()
                raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            status = child.wait()
        except BaseException:  # KeyboardInterrupt and the like reach the caller, the child stopped first
            child.terminate()
            child.wait()
            raise
        return 128 - status if status < 0 else status
    finally:
        try:
            detach(path)
        finally:
            _remove_cgroup(path)


def _remove_cgroup(path: str) -> None:
    import time

    for _ in range(100):  # processes left behind by the command: until they have gone
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.05)


# --- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=prog_name("kaext-enforce", "kaext.enforce"),
        usage="%(prog)s CGROUP --policy SPEC [--respect-existing | --force] | CGROUP --remove | --list [--json] "
        "| --which CGROUP | --prune",
        description="Enforce a TCP keepalive policy on every TCP connection of a cgroup v2 directory "
        "(and its descendants), whatever the program, with BPF programs that stay after this command "
        "exits. Linux, root. Nested cgroups: the nearest enforced cgroup's policy applies, whole. "
        "Exit status: 0 done, 1 --remove of a cgroup kaext does not enforce on (--list: something to "
        "repair; --which: no policy applies), 2 bad arguments or an error.",
    )
    p.add_argument(
        "cgroup", nargs="?", metavar="CGROUP", help="a cgroup v2 directory, or a path below the cgroup2 mount"
    )
    p.add_argument(
        "--policy", metavar="SPEC", help="Policy.parse syntax ('7s:3s:4 user_timeout=19s') or a middlebox name"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--respect-existing", action="store_true", help="leave connections whose program turned SO_KEEPALIVE on"
    )
    mode.add_argument("--force", action="store_true", help="also rewrite the program's own keepalive setsockopt calls")
    p.add_argument("--remove", action="store_true", help="stop enforcing on CGROUP")
    p.add_argument(
        "--list",
        action="store_true",
        help="list what the kernel has attached, matched with kaext's pins, with counters",
    )
    p.add_argument("--json", action="store_true", help="with --list or --which: JSON")
    p.add_argument("--which", action="store_true", help="whose policy CGROUP's connections get")
    p.add_argument("--prune", action="store_true", help="remove the pins of enforcements whose cgroup is gone")
    return p


def _fail(exc: BaseException) -> UsageError:
    """What the runner says for ``exc``: an OSError's reason and the file it names."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(text):
        text = f"{text}: {exc.filename}"
    return UsageError(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``kaext-enforce``: attach/update, ``--remove``, ``--list [--json]``; returns the exit status
    (0 done, 1 see the description, 2 bad arguments or an error, 130 Ctrl-C, 143 SIGTERM: what
    was half made, the capability check's scratch cgroup included, is removed first)."""
    parser = _parser()
    return run_tool(lambda: parser.prog, lambda: _main(parser, sys.argv[1:] if argv is None else [*argv]), sigterm=True)


def _line(e: Enforcement) -> str:
    mode = " (respect existing)" if e.respect_existing else " (force)" if e.force else ""
    text = f"{e.cgroup}: {e.policy}{mode}  applied={e.applied} skipped={e.skipped} failed={e.failed}"
    if e.state != "enforced":
        text += f"  [{e.state.upper()}: repair with: {e.repair}]"
    return text


def _main(parser: argparse.ArgumentParser, argv: builtins.list[str]) -> int:
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.json and not (args.list or args.which):
        parser.error("--json goes with --list or --which")
    if args.list or args.prune:
        if args.cgroup or args.policy or args.remove or args.force or args.respect_existing or args.which:
            parser.error("--list and --prune take no other arguments (but --json)")
        try:
            if args.prune:
                for cgroup_id in prune():
                    print(f"removed the pins of cgroup id {cgroup_id} (the cgroup is gone)")
                return 0
            found = enforcements()
        except OSError as exc:
            raise _fail(exc) from None
        if args.json:
            print(json.dumps({"enforcements": [e.as_dict() for e in found]}))
        else:
            for e in found:
                print(_line(e))
        return 1 if any(e.state != "enforced" for e in found) else 0
    if not args.cgroup:
        parser.error("CGROUP is required (or --list)")
    if args.which:
        if args.policy or args.remove or args.force or args.respect_existing:
            parser.error("--which takes CGROUP (and --json) alone")
        try:
            owner = which(args.cgroup)
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(exc) from None
        if args.json:
            print(json.dumps({"cgroup": args.cgroup, "enforcement": None if owner is None else owner.as_dict()}))
        elif owner is None:
            print(f"{args.cgroup}: no kaext policy applies (the system defaults)")
        else:
            print(f"{args.cgroup}: the policy of {_line(owner)}")
        return 1 if owner is None else 0
    if args.remove:
        if args.policy or args.force or args.respect_existing:
            parser.error("--remove takes no --policy, --force or --respect-existing")
        try:
            removed = detach(args.cgroup)
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(exc) from None
        if not removed:
            print(f"{prog}: {args.cgroup}: kaext enforces no policy there", file=sys.stderr)
            return 1
        return 0
    if not args.policy:
        parser.error("--policy SPEC is required (or --remove, --list)")
    try:
        e = attach(args.cgroup, args.policy, respect_existing=args.respect_existing, force=args.force)
    except (OSError, ValueError, TypeError, Warning) as exc:  # Warning: under -W error
        raise _fail(exc) from None
    mode = " (respect existing)" if e.respect_existing else " (force)" if e.force else ""
    print(f"{e.cgroup}: {e.policy}{mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def list() -> builtins.list[Enforcement]:  # kaext.enforce.list(), as --list
    """What ``kaext-enforce --list`` shows: :func:`enforcements` (the kernel's truth, matched
    with kaext's pins; reads only)."""
    return enforcements()
