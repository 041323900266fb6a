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
``/sys/fs/bpf/kaext/`` (one directory per cgroup), so the enforcement stays after the
calling process exits, and :func:`enforcements` lists it.

The pure-Python install (no C extension) and other systems raise ``OSError(ENOSYS)``.

Command line: ``python -m kaext.enforce`` / ``kaext-enforce``::

    kaext-enforce CGROUP --policy SPEC [--respect-existing | --force]
    kaext-enforce CGROUP --remove
    kaext-enforce --list [--json]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from urllib.parse import quote, unquote

from . import _backend, _platform
from ._cli import Parser, one_line_warnings, prog_name
from ._policy import Policy, as_policy
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Enforcement", "attach", "detach", "enforcements", "main", "own_cgroup", "run_in_cgroup"]

# the map's option order (_platform.ENFORCE_OPTIONS)
_KEEPALIVE, _IDLE, _INTERVAL, _COUNT, _USER_TIMEOUT, _CONNECT_TIMEOUT = range(6)
_RESPECT_EXISTING = 1
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
    """

    __slots__ = ("cgroup", "policy", "respect_existing", "force", "applied", "skipped", "failed", "last_error")
    _fields = __slots__

    cgroup: str
    policy: Policy
    respect_existing: bool
    force: bool
    applied: int
    skipped: int
    failed: int
    last_error: str | None

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
    ) -> None:
        self._init(cgroup, policy, respect_existing, force, applied, skipped, failed, last_error)

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
        }


# --- where things are ------------------------------------------------------------------


def _mounts(fstype: str) -> list[str]:
    """Mount points of file systems of type ``fstype`` (from /proc/self/mountinfo)."""
    points = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == fstype:
                    points.append(left.split(" ")[4].replace("\\040", " "))
    except FileNotFoundError:
        pass
    return points


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


def _pin_dir(path: str) -> str:
    """The pins' directory for the cgroup at absolute ``path``: its path again, below the pin root.

    Each component is ``=`` and the name (``%`` and ``.`` escaped), so no component can be
    taken for a pin (``map``, ``sock_ops``, ``setsockopt``) and each stays as short as the
    cgroup's own (one name per component: no length limit for deep cgroups).
    """
    parts = ["=" + quote(c, safe="").replace(".", "%2E") for c in path.strip("/").split("/") if c]
    return os.path.join(_pin_root(), *parts)


def _cgroup_of_pin(pin_dir: str) -> str:
    rel = os.path.relpath(pin_dir, _pin_root())
    return "/" + "/".join(unquote(c[1:]) for c in rel.split("/") if c.startswith("="))


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
            _backend.bpf_mount(_platform.BPF_FS)
        except PermissionError as exc:
            raise PermissionError(
                exc.errno, f"mounting the BPF file system on {_platform.BPF_FS} {_PRIVILEGES}"
            ) from None
    finally:
        os.close(lock)


def _bpf(call: str, fn: object, *args: object) -> int:
    """Run a backend BPF call; EPERM/EACCES become a PermissionError that names the privileges."""
    try:
        return fn(*args)  # type: ignore[operator,no-any-return]
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise PermissionError(exc.errno, f"kaext.enforce {_PRIVILEGES} ({call}: {exc.strerror})") from None
        raise


def _load(kind: int, map_fd: int) -> int:
    what = "sock_ops" if kind == _backend.BPF_SOCK_OPS else "cgroup/setsockopt"
    try:
        return _bpf("BPF_PROG_LOAD", _backend.bpf_load, kind, map_fd)
    except PermissionError:
        raise
    except OSError as exc:
        text = str(exc.filename or "")  # the verifier's log
        if "unknown func" in text:
            helper = "bpf_setsockopt" if "#49" in text else "bpf_getsockopt" if "#57" in text else "a helper"
            reason = f"this kernel has no {helper} for {what} programs"
        elif exc.errno == errno.EINVAL:
            reason = (
                f"this kernel refuses kaext's {what} program (sock_ops needs Linux 4.13, cgroup/setsockopt 5.3, "
                f"bpf_setsockopt with {', '.join(_platform.ENFORCE_OPTIONS)} 5.9)"
            )
        else:
            reason = f"loading kaext's {what} program failed"
        last = "; ".join(text.splitlines()[-2:])
        raise OSError(exc.errno, f"{reason}: {exc.strerror}" + (f" (verifier: {last})" if last else "")) from None


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
    mask = 1 << _KEEPALIVE
    values = [1 if policy.keepalive else 0, 0, 0, 0, 0, 0]
    for knob, option, value in (
        (_platform.IDLE, _IDLE, plan.idle),
        (_platform.INTERVAL, _INTERVAL, plan.interval),
        (_platform.COUNT, _COUNT, plan.count),
        (_platform.USER_TIMEOUT, _USER_TIMEOUT, plan.user_timeout),
        (_platform.CONNECT_TIMEOUT, _CONNECT_TIMEOUT, plan.connect_timeout),  # TCP_SYNCNT, set before the SYN
    ):
        if plan.set_mask & (1 << knob):
            mask |= 1 << option
            values[option] = int(value)
    return mask, tuple(values)


def _policy_of(mask: int, values: tuple[int, ...]) -> Policy:
    def value(option: int) -> int | None:
        return values[option] if mask & (1 << option) else None

    ut = value(_USER_TIMEOUT)
    user_timeout = None if ut is None else ut / 1000
    syncnt = value(_CONNECT_TIMEOUT) if len(values) > _CONNECT_TIMEOUT else None
    connect_timeout = None if syncnt is None else _platform.syn_seconds(syncnt)
    with warnings.catch_warnings():  # attach warned about the policy already; reading does not
        warnings.simplefilter("ignore", RuntimeWarning)
        if not values[_KEEPALIVE]:
            return Policy(user_timeout=user_timeout, keepalive=False, connect_timeout=connect_timeout)
        return Policy(value(_IDLE), value(_INTERVAL), value(_COUNT), user_timeout, connect_timeout=connect_timeout)


def _read(pin_dir: str, cgroup: str) -> Enforcement | None:
    try:
        map_fd = _backend.bpf_obj_get(os.path.join(pin_dir, "map"))
    except OSError:
        return None
    try:
        mask, flags, values, cgroup_id = _backend.bpf_config_read(map_fd)
        applied, skipped, failed, last_errno, last_option = _backend.bpf_counters_read(map_fd)
    finally:
        os.close(map_fd)
    try:
        if os.stat(cgroup).st_ino != cgroup_id:
            return None  # the cgroup it was made for is gone (a new one may have its name)
    except OSError:
        return None
    last_error = None
    if last_errno:
        last_error = f"{_option_name(last_option)}: {os.strerror(last_errno)}"
    return Enforcement(
        cgroup,
        _policy_of(mask, values),
        bool(flags & _RESPECT_EXISTING),
        os.path.exists(os.path.join(pin_dir, "setsockopt")),
        applied,
        skipped,
        failed,
        last_error,
    )


def _remove_pins(pin_dir: str) -> None:
    for name in ("setsockopt", "sock_ops", "map"):
        try:
            os.unlink(os.path.join(pin_dir, name))
        except FileNotFoundError:
            pass
    root = _pin_root()
    while pin_dir == root or pin_dir.startswith(root + "/"):  # the now empty ones, the pin root's too
        try:
            os.rmdir(pin_dir)
        except FileNotFoundError:
            pass
        except OSError:  # another cgroup's pins below
            return
        pin_dir = os.path.dirname(pin_dir)


def _detach_pinned(cgroup_fd: int, pin_dir: str, name: str, kind: int) -> None:
    try:
        prog = _backend.bpf_obj_get(os.path.join(pin_dir, name))
    except FileNotFoundError:
        return
    try:
        _backend.bpf_detach(cgroup_fd, prog, kind)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: no longer attached (the cgroup went away)
            raise
    finally:
        os.close(prog)
    os.unlink(os.path.join(pin_dir, name))


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
    (``"system.slice/nginx.service"``); descendants are covered too.  ``policy``: a
    :class:`kaext.Policy`, a ``Policy.parse`` spec or a middlebox name.  When kaext
    already enforces on that cgroup the policy (and the flags) are updated in place: a
    map update, reaching the next connection.  It stays in force after this process
    exits (pinned under ``/sys/fs/bpf/kaext``); connections established before are not
    touched.

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
    CAP_NET_ADMIN), OSError ENOENT (no cgroup2 mount), OSError naming what the kernel
    lacks, OSError ENOSYS (not Linux; the pure-Python install).  Nothing is left half
    attached.
    """
    for name, flag in (("respect_existing", respect_existing), ("force", force)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if respect_existing and force:
        raise ValueError("respect_existing=True and force=True contradict each other: choose one")
    resolved = as_policy(policy)
    _require_os()
    path, rel = _resolve(cgroup)
    mask, values = _config(resolved)
    flags = _RESPECT_EXISTING if respect_existing else 0
    cgroup_id = os.stat(path).st_ino
    _probe(mask, values, flags)
    cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _ensure_bpffs()
        pin_dir = _pin_dir(path)
        if os.path.isdir(pin_dir) and os.path.exists(os.path.join(pin_dir, "map")):
            if _read(pin_dir, path) is not None:
                _update(cgroup_fd, pin_dir, mask, flags, values, cgroup_id, force)
                result = _read(pin_dir, path)
                assert result is not None
                return result
            _remove_pins(pin_dir)  # left by a cgroup of that name that is gone
        _attach_new(cgroup_fd, pin_dir, mask, flags, values, cgroup_id, force)
        result = _read(pin_dir, path)
        assert result is not None
        return result
    finally:
        os.close(cgroup_fd)


def _update(
    cgroup_fd: int, pin_dir: str, mask: int, flags: int, values: tuple[int, ...], cgroup_id: int, force: bool
) -> None:
    map_fd = _bpf("BPF_OBJ_GET", _backend.bpf_obj_get, os.path.join(pin_dir, "map"))
    try:
        had_force = os.path.exists(os.path.join(pin_dir, "setsockopt"))
        if force and not had_force:
            prog = _load(_backend.BPF_SETSOCKOPT, map_fd)
            try:
                _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, cgroup_fd, prog, _backend.BPF_SETSOCKOPT)
                try:
                    _backend.bpf_pin(prog, os.path.join(pin_dir, "setsockopt"))
                except OSError:
                    _backend.bpf_detach(cgroup_fd, prog, _backend.BPF_SETSOCKOPT)
                    raise
            finally:
                os.close(prog)
        _bpf("BPF_MAP_UPDATE_ELEM", _backend.bpf_config_write, map_fd, mask, flags, values, cgroup_id)
        if had_force and not force:
            _detach_pinned(cgroup_fd, pin_dir, "setsockopt", _backend.BPF_SETSOCKOPT)
    finally:
        os.close(map_fd)


def _attach_new(
    cgroup_fd: int, pin_dir: str, mask: int, flags: int, values: tuple[int, ...], cgroup_id: int, force: bool
) -> None:
    fds: list[int] = []
    attached: list[tuple[int, int]] = []
    made_dir = False
    try:
        map_fd = _bpf("BPF_MAP_CREATE", _backend.bpf_map_create)
        fds.append(map_fd)
        _bpf("BPF_MAP_UPDATE_ELEM", _backend.bpf_config_write, map_fd, mask, flags, values, cgroup_id)
        progs = [(_backend.BPF_SOCK_OPS, "sock_ops")]
        if force:
            progs.append((_backend.BPF_SETSOCKOPT, "setsockopt"))
        loaded = []
        for kind, name in progs:
            prog = _load(kind, map_fd)
            fds.append(prog)
            loaded.append((kind, name, prog))
        for attempt in range(3):
            try:
                os.makedirs(pin_dir, exist_ok=True)
                break
            except FileNotFoundError:  # a parent pruned at that moment by another detach
                if attempt == 2:
                    raise
        made_dir = True
        _backend.bpf_pin(map_fd, os.path.join(pin_dir, "map"))
        for _kind, name, prog in loaded:
            _backend.bpf_pin(prog, os.path.join(pin_dir, name))
        for kind, _name, prog in loaded:
            _bpf("BPF_PROG_ATTACH", _backend.bpf_attach, cgroup_fd, prog, kind)
            attached.append((kind, prog))
    except BaseException:
        for kind, prog in reversed(attached):
            try:
                _backend.bpf_detach(cgroup_fd, prog, kind)
            except OSError:
                pass
        if made_dir:
            _remove_pins(pin_dir)
        raise
    finally:
        for fd in fds:
            os.close(fd)


def detach(cgroup: str | os.PathLike[str]) -> bool:
    """Stop enforcing on ``cgroup``: detach kaext's programs and remove their pins.

    True when kaext enforced a policy there, False when it did not.  New connections
    then get the system defaults again; established ones keep what they were given.
    Raises as :func:`attach` does.
    """
    _require_os()
    path, _rel = _resolve(cgroup, must_exist=False)
    pin_dir = _pin_dir(path)
    if not os.path.exists(os.path.join(pin_dir, "map")):
        return False
    try:
        cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        _remove_pins(pin_dir)  # the cgroup is gone, and its programs with it
        return True
    try:
        if _read(pin_dir, path) is None:
            _remove_pins(pin_dir)  # made for a cgroup of that name that is gone
            return False
        _detach_pinned(cgroup_fd, pin_dir, "setsockopt", _backend.BPF_SETSOCKOPT)
        _detach_pinned(cgroup_fd, pin_dir, "sock_ops", _backend.BPF_SOCK_OPS)
        _remove_pins(pin_dir)
        return True
    finally:
        os.close(cgroup_fd)


def enforcements() -> list[Enforcement]:
    """Every policy kaext enforces on this host, with its counters (reads only).

    Empty on other systems and in the pure-Python install, or when nothing is pinned.
    PermissionError when the pins cannot be read (not root).
    """
    if not _platform.ENFORCE or _backend.IMPLEMENTATION != "c":
        return []
    root = _pin_root()
    try:
        os.listdir(root)
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise PermissionError(exc.errno, f"reading {root} {_PRIVILEGES}") from None
    found = []
    for pin_dir, dirs, files in os.walk(root):
        dirs.sort()
        if "map" in files:
            e = _read(pin_dir, _cgroup_of_pin(pin_dir))
            if e is not None:
                found.append(e)
    return found


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


def run_in_cgroup(command: Sequence[str], policy: Policy | str, *, force: bool = False) -> int:
    """Run ``command`` in a fresh child cgroup of this process's own, with ``policy`` attached.

    For ``kaext-run --cgroup``: every TCP connection of the command and its children,
    static binaries and Go programs included, gets the policy; processes outside are
    untouched.  The cgroup (``kaext-run-PID-RANDOM``) and its pins are removed when the
    command exits (also on failure).  Returns the command's exit status (127 not found,
    126 not executable, 128+N killed by signal N); raises as :func:`attach` does.  An
    exception while waiting (KeyboardInterrupt) terminates the command and is re-raised.
    """
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

        def enter() -> None:  # in the child, before exec: its connections are the cgroup's from the start
            with open(procs, "w") as f:
                f.write("0")

        try:
            child = subprocess.Popen(list(command), preexec_fn=enter)
        except FileNotFoundError:
            return 127
        except PermissionError:
            return 126
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
        usage="%(prog)s CGROUP --policy SPEC [--respect-existing | --force] | CGROUP --remove | --list [--json]",
        description="Enforce a TCP keepalive policy on every TCP connection of a cgroup v2 directory "
        "(and its descendants), whatever the program, with BPF programs that stay after this command "
        "exits. Linux, root. Exit status: 0 done, 1 --remove of a cgroup kaext does not enforce on, "
        "2 bad arguments or an error.",
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
    p.add_argument("--list", action="store_true", help="list what kaext enforces, with counters")
    p.add_argument("--json", action="store_true", help="with --list: JSON")
    return p


def _fail(prog: str, exc: BaseException) -> int:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(text):
        text = f"{text}: {exc.filename}"
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``kaext-enforce``: attach/update, ``--remove``, ``--list [--json]``; returns the exit status."""
    parser = _parser()
    with one_line_warnings(lambda: parser.prog):  # a policy whose user timeout cuts probing short
        return _main(parser, sys.argv[1:] if argv is None else list(argv))


def _main(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.json and not args.list:
        parser.error("--json goes with --list")
    if args.list:
        if args.cgroup or args.policy or args.remove or args.force or args.respect_existing:
            parser.error("--list takes no other arguments (but --json)")
        try:
            found = enforcements()
        except OSError as exc:
            return _fail(prog, exc)
        if args.json:
            print(json.dumps({"enforcements": [e.as_dict() for e in found]}))
        else:
            for e in found:
                mode = " (respect existing)" if e.respect_existing else " (force)" if e.force else ""
                print(f"{e.cgroup}: {e.policy}{mode}  applied={e.applied} skipped={e.skipped} failed={e.failed}")
        return 0
    if not args.cgroup:
        parser.error("CGROUP is required (or --list)")
    if args.remove:
        if args.policy or args.force or args.respect_existing:
            parser.error("--remove takes no --policy, --force or --respect-existing")
        try:
            removed = detach(args.cgroup)
        except (OSError, ValueError, TypeError) as exc:
            return _fail(prog, exc)
        if not removed:
            print(f"{prog}: {args.cgroup}: kaext enforces no policy there", file=sys.stderr)
            return 1
        return 0
    if not args.policy:
        parser.error("--policy SPEC is required (or --remove, --list)")
    try:
        e = attach(args.cgroup, args.policy, respect_existing=args.respect_existing, force=args.force)
    except (OSError, ValueError, TypeError, Warning) as exc:  # Warning: under -W error
        return _fail(prog, exc)
    mode = " (respect existing)" if e.respect_existing else " (force)" if e.force else ""
    print(f"{e.cgroup}: {e.policy}{mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
