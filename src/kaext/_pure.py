"""kaext._pure -- the pure-Python implementation of ``kaext._kaext``.

Same functions, same plans, same errors, through ``socket.setsockopt`` and
``socket.getsockopt``.  Used where the extension cannot be built (PyPy, no
compiler) or when ``KAEXT_NO_EXTENSIONS=1`` is set.  Option numbers come from
Python's :mod:`socket` module; where Python lacks a name the platform's header
defines (``TCP_KEEPALIVE`` on macOS before Python 3.10, ``TCP_KEEPIDLE`` on old
Windows builds), the value documented in :mod:`kaext._platform` is used.

In parts, as the extension is: socket options here; running processes in
``kaext._pure_proc`` (the peer of ``ext/_kaext_proc.pxi``) and kaext.enforce's BPF
calls in ``kaext._pure_bpf`` (of ``ext/_kaext_bpf.pxi``), both exported here as part of
the backend interface; a descriptor this process does not own is reached through the
C library in ``kaext._pure_fd``.
"""

from __future__ import annotations

import errno

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]
from typing import Any, Literal

from . import _platform, _pure_bpf, _pure_fd, _pure_proc
from ._errors import bad_fd_error, fileno_of, socket_error
from ._platform import (
    CONNECT_TIMEOUT,
    COUNT,
    FALLBACK_CONSTANTS,
    FAMILY,
    IDLE,
    INTERVAL,
    KNOBS,
    SPECS,
    SYN_UNIT,
    UNITS_PER_SECOND,
    USER_TIMEOUT,
    WANT_ALL,
    WANT_KEEPALIVE,
    WINDOWS_MIN_BUILD,
    WINDOWS_SIO_DEFAULT_IDLE_MS,
    WINDOWS_SIO_DEFAULT_INTERVAL_MS,
    KnobSpec,
    spec_for,
    syn_seconds,
    windows_build,
)
from ._record import Record

#: Which implementation this is: ``"python"`` (``"c"`` for ``kaext._kaext``).
IMPLEMENTATION: Literal["c", "python"] = "python"

#: The shim's numbers, as ``kaext._kaext`` exposes them (here from ``_platform``).
NKNOBS = len(KNOBS)
STEP_KEEPALIVE = _platform.STEP_KEEPALIVE
STEP_PROBE = _platform.STEP_PROBE
ROLLBACK_SHIFT = _platform.ROLLBACK_SHIFT
MECH_NONE = _platform.MECH_NONE
MECH_SETSOCKOPT = _platform.MECH_SETSOCKOPT
MECH_SIO = _platform.MECH_SIO


class Plan(Record):
    """What to write, in each knob's OS unit: the C shim's ``kaext_plan``.

    ``set_mask`` bit k says knob k (idle, interval, count, user_timeout, connect_timeout) is written
    (``connect_timeout`` last, after ``keepalive``, 0 when not given);
    bit ``ROLLBACK_SHIFT`` + k (8 + k) says knob k is read first and put back if a later
    call fails (``kaext._platform.KERNEL_MAY_REFUSE``); ``keepalive`` is -1 (leave
    SO_KEEPALIVE), 0 (off) or 1 (on).  Immutable.
    """

    _fields = ("set_mask", "idle", "interval", "count", "user_timeout", "keepalive", "connect_timeout")
    # _calls: the setsockopt calls apply_policy makes, worked out on first use (not a field)
    __slots__ = (*_fields, "_calls")

    set_mask: int
    idle: int
    interval: int
    count: int
    user_timeout: int
    keepalive: int
    connect_timeout: int

    def __init__(
        self,
        set_mask: int,
        idle: int,
        interval: int,
        count: int,
        user_timeout: int,
        keepalive: int,
        connect_timeout: int = 0,
    ) -> None:
        self._init(set_mask, idle, interval, count, user_timeout, keepalive, connect_timeout)


# Names a platform header may define that matter for keepalive and timeouts.
_NAMES = (
    "SOL_SOCKET",
    "SO_KEEPALIVE",
    "IPPROTO_TCP",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_KEEPCNT",
    "TCP_KEEPALIVE",
    "TCP_KEEPINIT",
    "TCP_USER_TIMEOUT",
    "TCP_SYNCNT",
    "TCP_CONNECTIONTIMEOUT",
    "TCP_RXT_CONNDROPTIME",
    "TCP_KEEPALIVE_THRESHOLD",
    "TCP_KEEPALIVE_ABORT_THRESHOLD",
    "TCP_MAXRT",
    "TCP_MAXRTMS",
    "TCP_MAXUNACKTIME",
    "SIO_KEEPALIVE_VALS",
)


def _collect() -> tuple[dict[str, int], dict[str, str]]:
    values: dict[str, int] = {}
    sources: dict[str, str] = {}
    for name in _NAMES:
        value = getattr(socket, name, None)
        if isinstance(value, int):
            values[name] = value
            sources[name] = "socket"
    for spec in SPECS.values():
        if spec.option not in values and spec.fallback is not None:
            values[spec.option] = spec.fallback
            sources[spec.option] = "kaext._platform (fallback)"
    for name, number in FALLBACK_CONSTANTS.items():
        if name not in values:
            values[name] = number
            sources[name] = "kaext._platform (fallback)"
    return values, sources


CONSTANTS: dict[str, int]
CONSTANT_SOURCES: dict[str, str]
CONSTANTS, CONSTANT_SOURCES = _collect()
#: The largest socket handle accepted (``kaext._platform.FD_MAX``).
FD_MAX: int = _platform.FD_MAX

_TCP = CONSTANTS.get("IPPROTO_TCP", 6)
_SOL_SOCKET = CONSTANTS["SOL_SOCKET"]
_SO_KEEPALIVE = CONSTANTS["SO_KEEPALIVE"]
_TCP_NODELAY = socket.TCP_NODELAY
_socket_type = socket.socket

KNOB_OPTIONS: tuple[tuple[str, int, int] | None, ...] = tuple(
    (SPECS[k].option, _TCP, CONSTANTS[SPECS[k].option]) if k in SPECS and SPECS[k].option in CONSTANTS else None
    for k in KNOBS
)


def knob_supported(k: int) -> bool:
    """Does the running kernel accept knob ``k`` (probed on a throwaway socket)?"""
    return _probe(k) == 1


def _probe(k: int) -> int:
    """1: knob ``k``'s option accepted; 0: refused with ENOPROTOOPT (this kernel lacks
    it); -1: nothing known (no socket could be made, or another error)."""
    entry = KNOB_OPTIONS[k] if 0 <= k < len(KNOB_OPTIONS) else None
    if entry is None:
        return 0
    _, level, opt = entry
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return -1
    with s:
        try:
            value = s.getsockopt(level, opt)
        except OSError:
            value = 1
        try:
            s.setsockopt(level, opt, value if value > 0 else 1)
        except OSError as exc:
            return probe_verdict(exc.errno)
    return 1


def probe_verdict(err: int | None) -> int:
    """What a probe's error says, as the C shim's kaext_probe_verdict(): 1 accepted (no
    error), 0 this kernel lacks the option (only ENOPROTOOPT -- WSAENOPROTOOPT on
    Windows, which Python's errno names the same), -1 nothing known (any other error)."""
    if not err:
        return 1
    return 0 if err == errno.ENOPROTOOPT else -1


_mechanisms: dict[int, int] = {}


def mechanism_from_build(k: int, build: int) -> int:
    """Knob ``k``'s mechanism on Windows build ``build`` (when the probe says nothing)."""
    if KNOBS[k] in (KNOBS[IDLE], KNOBS[INTERVAL]):
        return MECH_SETSOCKOPT if build >= WINDOWS_MIN_BUILD[KNOBS[k]] else MECH_SIO
    return MECH_SETSOCKOPT if build >= WINDOWS_MIN_BUILD[KNOBS[k]] else MECH_NONE


def _probe_mechanism(k: int) -> int:
    verdict = _probe(k)
    if verdict < 0:  # decide from what else is known: the headers, Windows' build number
        if KNOB_OPTIONS[k] is None:
            return MECH_NONE
        if FAMILY == "windows":
            m = mechanism_from_build(k, windows_build())
            return m if m != MECH_SIO or hasattr(socket, "SIO_KEEPALIVE_VALS") else MECH_NONE
        return MECH_SETSOCKOPT
    if verdict:
        return MECH_SETSOCKOPT
    if FAMILY == "windows" and k in (IDLE, INTERVAL) and hasattr(socket, "SIO_KEEPALIVE_VALS"):
        return MECH_SIO  # Windows before 10 version 1709, wine
    return MECH_NONE


def mechanism(k: int) -> int:
    """How knob ``k`` is set on the running system (``MECH_*``), probed once per process.

    ``MECH_SETSOCKOPT``, ``MECH_SIO`` (Windows without TCP_KEEPIDLE: ``socket.ioctl(
    SIO_KEEPALIVE_VALS, (on, idle_ms, interval_ms))``, write-only) or ``MECH_NONE``.
    Only ENOPROTOOPT counts as "refused"; a probe that says nothing else is decided by
    the headers (Windows: by the build number, as Go does).
    """
    m = _mechanisms.get(k)
    if m is None:
        m = _probe_mechanism(k) if 0 <= k < len(KNOB_OPTIONS) else MECH_NONE
        if FAMILY == "windows" and k in (IDLE, INTERVAL):
            # SIO_KEEPALIVE_VALS sets both at once: both go through it unless both options work
            other = _probe_mechanism(INTERVAL if k == IDLE else IDLE)
            if m != MECH_SETSOCKOPT or other != MECH_SETSOCKOPT:
                m = MECH_SIO if hasattr(socket, "SIO_KEEPALIVE_VALS") else MECH_NONE
            _mechanisms[IDLE] = _mechanisms[INTERVAL] = m
        _mechanisms[k] = m
    return m


def _spec(k: int) -> KnobSpec | None:
    """Knob ``k``'s spec under its mechanism (for error messages)."""
    entry = KNOB_OPTIONS[k]
    return spec_for(KNOBS[k], entry[0] if entry else "", mechanism(k))


def knob_unit(k: int) -> str:
    """The unit knob ``k`` is taken in under its mechanism: "s", "ms", "ticks" (NetBSD), "probes" or ""."""
    spec = _spec(k)
    return spec.unit if spec is not None else ""


def _values(plan: Plan) -> tuple[int, int, int, int, int]:
    """The knob values of a plan (this module's or the extension's), by knob index."""
    return (plan.idle, plan.interval, plan.count, plan.user_timeout, plan.connect_timeout)


def _apply_sio(s: socket.socket, plan: Plan) -> None:
    """Windows without TCP_KEEPIDLE: idle and interval (ms) together, the missing one defaulted
    (a refusal as :class:`_Refused`)."""
    mask = plan.set_mask
    step = IDLE if mask & (1 << IDLE) else INTERVAL
    value = _values(plan)[step]
    idle = plan.idle if mask & (1 << IDLE) else WINDOWS_SIO_DEFAULT_IDLE_MS
    interval = plan.interval if mask & (1 << INTERVAL) else WINDOWS_SIO_DEFAULT_INTERVAL_MS
    if idle < 1 or interval < 1:  # idle 0: keepalive storm on some Windows versions
        raise _Refused(socket_error(errno.EINVAL, step, "SIO_KEEPALIVE_VALS", value, _spec(step)))
    refused = _call(s.ioctl, socket.SIO_KEEPALIVE_VALS, (0 if plan.keepalive == 0 else 1, idle, interval))  # type: ignore[attr-defined]
    if refused is not None:
        raise _Refused(socket_error(refused.errno or errno.EINVAL, step, "SIO_KEEPALIVE_VALS", value, _spec(step)))


def _fd(sock: Any) -> int:
    fd = fileno_of(sock)
    if fd < 0 or fd > FD_MAX:
        raise bad_fd_error(fd)
    return int(fd)


class _Borrowed:
    """The socket calls for a socket kaext was handed: a ``socket.socket`` itself, else the
    descriptor number, which is never owned (nothing here can close it or change its
    blocking mode).  An OSError raised within carries the fd (``exc.fd``), as the C
    extension's do."""

    __slots__ = ("sock", "borrowed", "fd")
    sock: Any

    def __init__(self, sock: Any) -> None:
        if type(sock) is socket.socket:
            self.fd = sock.fileno()
            if self.fd < 0:
                raise bad_fd_error(-1)
            self.sock, self.borrowed = sock, False
            return
        self.fd = fd = _fd(sock)
        if _platform.RAW_SOCKOPT and _pure_fd._raw_available():
            self.sock, self.borrowed = _pure_fd._RawFd(fd), False
            return
        # Windows: a SOCKET handle, reached through a socket object over it and detached
        # after.  A limit there: with socket.setdefaulttimeout() set, Python's socket object
        # makes the handle non-blocking, and Winsock cannot tell the mode to put back.
        try:
            self.sock = socket.socket(fileno=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.EBADF):
                raise socket_error(exc.errno, STEP_PROBE, "", fd=fd) from None
            raise
        self.borrowed = True

    def __enter__(self) -> Any:
        return self.sock

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        if self.borrowed:
            self.sock.detach()
        if isinstance(exc, OSError) and getattr(exc, "fd", 0) is None:  # one of socket_error's
            exc.fd = self.fd  # type: ignore[attr-defined]


def _not_tcp(s: socket.socket) -> OSError | None:
    """The TCP_NODELAY read that proves ``s`` is TCP: None, or the error that says why not
    (a signal handler's exception passes)."""
    refused = _call(s.getsockopt, _TCP, _TCP_NODELAY)
    return None if refused is None else socket_error(refused.errno or errno.EINVAL, STEP_PROBE, "")


def _probe_tcp(s: socket.socket) -> None:
    error = _not_tcp(s)
    if error is not None:
        raise error


def apply(sock: Any, plan: Plan) -> None:
    """Write a :class:`Plan` (values in each knob's OS unit, already range-checked).

    Same order as the C shim: the setsockopt knobs, then Windows' SIO_KEEPALIVE_VALS,
    then SO_KEEPALIVE; a refusal after the first write puts back the knobs the plan
    asked to keep (set_mask bits ROLLBACK_SHIFT + k, read before the first write).
    An exception raised meanwhile by a signal handler (a SIGALRM timeout, a
    KeyboardInterrupt) is not a refusal: the plan's remaining calls are made, so the
    socket is as after, and the exception reaches the caller.
    """
    mask = plan.set_mask
    values = _values(plan)
    for k in range(NKNOBS):  # refused before any call: the socket stays as it was
        if mask & (1 << k) and mechanism(k) == MECH_NONE:
            entry = KNOB_OPTIONS[k]
            raise socket_error(errno.ENOPROTOOPT, k, entry[0] if entry else "", values[k])
    sio = mask & _SIO_KNOBS if mask & _SIO_KNOBS and mechanism(IDLE) == MECH_SIO else 0
    with _Borrowed(sock) as s:
        saved: dict[int, tuple[int, int, int]] = {}  # knob -> (level, opt, value before)
        for k in range(NKNOBS):
            entry = KNOB_OPTIONS[k]
            if mask & (1 << (ROLLBACK_SHIFT + k)) and mask & (1 << k) and not sio & (1 << k) and entry:
                try:
                    saved[k] = (entry[1], entry[2], s.getsockopt(entry[1], entry[2]))
                except OSError:
                    if _repeats(s.getsockopt, entry[1], entry[2]) is None:
                        raise  # a signal handler's: nothing written yet (as before)
                    # else nothing to put back (the write itself will say why)
        steps = [k for k in range(NKNOBS) if mask & (1 << k) and not sio & (1 << k)]
        if not steps:
            steps.append(STEP_PROBE)  # SO_KEEPALIVE and the ioctl do not prove TCP
        if sio:
            steps.append(_STEP_SIO)
        if plan.keepalive >= 0:
            steps.append(STEP_KEEPALIVE)
        done = 0
        refusal: _Refused | None = None
        first: BaseException | None = None
        try:
            while done < len(steps):
                _step(s, plan, steps[done])
                done += 1
        except _Refused as refused:
            refusal = refused
        except BaseException as exc:  # asynchronous: finish the plan (as after), then re-raise
            first = exc
        if first is not None:
            step = lambda k: _step(s, plan, k)  # noqa: E731
            try:
                _finishes(step, steps, done)
            except BaseException:
                _finishes(step, steps, done)
            raise first
        if refusal is not None:
            # put back what the plan asked to keep, in the order written; a value the kernel
            # will not take back (_call returns its error): nothing more to do for it.  A
            # signal handler's exception meanwhile: put the rest back, then raise it
            back = [saved[k] for k in steps[:done] if k in saved]
            put_back = lambda entry: _call(s.setsockopt, *entry)  # noqa: E731
            pending: BaseException | None = None
            try:
                _finish(put_back, back, 0, strict=True)
            except BaseException as exc:
                pending = exc
            if pending is not None:
                try:
                    _finishes(put_back, back, 0)
                except BaseException:
                    _finishes(put_back, back, 0)
                raise pending
            raise refusal.error from None


#: The step of Windows' SIO_KEEPALIVE_VALS ioctl in ``apply``'s list of steps (not a knob index).
_STEP_SIO = -1


class _Refused(Exception):
    """The kernel refused a step of a plan: ``error`` is the OSError that describes it."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _call(method: Any, *args: Any) -> OSError | None:
    """``method(*args)``: None when it succeeds, the kernel's OSError when it refuses.

    A refusal repeats: the same call on the same socket fails the same way.  An OSError
    raised meanwhile by a signal handler (a SIGALRM ``TimeoutError``) does not: when
    the call made again succeeds, the first exception was not the kernel's answer and
    is raised (the call has then been made).  Other exceptions pass through.
    """
    try:
        method(*args)
        return None
    except OSError:
        again = _repeats(method, *args)
        if again is None:
            raise
        return again


def _repeats(method: Any, *args: Any) -> OSError | None:
    """After ``method(*args)`` raised OSError: the same call once more.  Its OSError when it
    fails again (the kernel's answer repeats), None when it succeeds: the first exception
    was not the kernel's (a signal handler's), and the caller raises it."""
    try:
        method(*args)
    except OSError as again:
        return again
    return None


def _step(s: socket.socket, plan: Plan, step: int) -> None:
    """One call of ``apply``; the kernel's refusal as :class:`_Refused`."""
    if step == STEP_PROBE:
        error = _not_tcp(s)
        if error is not None:
            raise _Refused(error)
    elif step == _STEP_SIO:
        _apply_sio(s, plan)
    elif step == STEP_KEEPALIVE:
        refused = _call(s.setsockopt, _SOL_SOCKET, _SO_KEEPALIVE, 1 if plan.keepalive else 0)
        if refused is not None:
            raise _Refused(socket_error(refused.errno or errno.EINVAL, STEP_KEEPALIVE, "", plan.keepalive))
    else:
        entry = KNOB_OPTIONS[step]
        value = _values(plan)[step]
        if entry is None:
            raise _Refused(socket_error(errno.ENOPROTOOPT, step, "", value))
        name, level, opt = entry
        refused = _call(s.setsockopt, level, opt, value)
        if refused is not None:
            raise _Refused(socket_error(refused.errno or errno.EINVAL, step, name, value, _spec(step)))


def _setsockopt_step(setsockopt: Any, call: tuple[int, int, int]) -> None:
    """One call of ``apply_policy``'s fast path; the kernel's refusal as :class:`_Refused`."""
    refused = _call(setsockopt, *call)
    if refused is not None:
        raise _Refused(refused)


def _finishes(call: Any, steps: Any, done: int) -> bool:
    """``_finish`` through asynchronous exceptions raised where ``_finish`` itself cannot
    catch them (on entering it, between its retries): up to four times.

    A signal handler's exception is raised where the interpreter checks for signals --
    entering a function, a loop's jump back, after a call into C -- so the caller's
    ``except`` block can be left by a second one before the plan is finished.  Callers
    therefore come here straight from their ``except`` block (no check on the way: the
    end of an ``except`` block and the start of a ``try`` are no such points), and every
    call of ``_finish`` but the last is inside a ``try``.  Setting a value twice changes
    nothing, so each retry starts again at ``done``.  Callers call it inside a ``try``
    (entering a function is such a point too) and once more from its ``except``.
    """
    try:
        return _finish(call, steps, done)
    except BaseException:
        try:
            return _finish(call, steps, done)
        except BaseException:
            try:
                return _finish(call, steps, done)
            except BaseException:
                return _finish(call, steps, done)


def _finish(call: Any, steps: Any, done: int, strict: bool = False) -> bool:
    """After an exception at step ``done``: make the remaining steps (the one interrupted
    again: setting a value twice changes nothing), also through further asynchronous
    exceptions.  False at a refusal (``call`` raises :class:`_Refused`), True when all are
    made (the caller then re-raises the first exception: it was not the kernel's).
    ``strict``: make them once, and let any exception but a refusal through."""
    if strict:
        while done < len(steps):
            call(steps[done])
            done += 1
        return True
    for _ in range(len(steps) * 4):  # bounded: a handler that raises forever cannot hold us here
        try:
            while done < len(steps):
                call(steps[done])
                done += 1
            return True
        except _Refused:
            return False
        except BaseException:
            pass
    return False


_SIO_KNOBS = (1 << IDLE) | (1 << INTERVAL)


def _calls(plan: Plan) -> tuple[tuple[int, int, int], ...] | None:
    """The setsockopt calls ``plan`` makes, ``((level, optname, value), ...)`` in the shim's
    order, or None where the general path must run (an ioctl knob, or no knob: then the
    TCP check comes first)."""
    mask = plan.set_mask
    values = _values(plan)
    if mask >> ROLLBACK_SHIFT:
        return None  # knobs to put back on a refusal: they are read first (general path)
    calls = []
    for k in range(NKNOBS):
        if mask & (1 << k):
            entry = KNOB_OPTIONS[k]
            if entry is None or mechanism(k) != MECH_SETSOCKOPT:
                return None
            calls.append((entry[1], entry[2], values[k]))
    if not calls:
        return None
    if plan.keepalive >= 0:
        calls.append((_SOL_SOCKET, _SO_KEEPALIVE, 1 if plan.keepalive else 0))
    return tuple(calls)


def apply_policy(self: Any, sock: Any) -> None:
    """``Policy.apply``: this policy to ``sock``, all or nothing (see ``kaext.Policy.apply``).

    For a ``socket.socket`` the plan's setsockopt calls, worked out once per plan, are
    made directly; if one fails, the general path (:func:`apply`) makes them again and
    raises the error it describes (setting a value twice changes nothing).
    """
    plan = self._plan
    if type(sock) is _socket_type:
        try:
            calls = plan._calls
        except AttributeError:
            calls = _calls(plan)
            object.__setattr__(plan, "_calls", calls)
        if calls is not None:
            setsockopt = sock.setsockopt
            done = 0
            try:
                for level, opt, value in calls:
                    setsockopt(level, opt, value)
                    done += 1
                return
            except BaseException as exc:
                first = exc
            # Finish the plan from the call that raised: a refusal (_Refused) stops it, and
            # the general path makes the calls again and says why; otherwise the exception
            # was not the kernel's (a signal handler's): the socket is as after, raise it.
            # _finishes: a handler that raises again while that runs cannot cut it short (and
            # entering it is inside a try: a function's entry is where a signal is handled).
            step = lambda call: _setsockopt_step(setsockopt, call)  # noqa: E731
            try:
                finished = _finishes(step, calls, done)
            except BaseException:
                finished = _finishes(step, calls, done)
            if finished:
                raise first
    apply(sock, plan)


def read(sock: Any, want: int = WANT_ALL) -> tuple[int, int | None, int | None, int | None, int | None, int | None]:
    """Read ``(keepalive, idle, interval, count, user_timeout, connect_timeout)`` in OS units.

    ``want`` picks what to read (bit k: knob k, bit STEP_KEEPALIVE: SO_KEEPALIVE), as in the C shim:
    only when no knob could be read does a TCP_NODELAY probe tell "not readable here"
    from "not a TCP socket".
    """
    if type(sock) is _socket_type:
        try:
            return _read(sock, want)
        except OSError:
            if _repeats(_read, sock, want) is None:
                raise  # a signal handler's
            # a closed socket, or not TCP: the general path says which, as for any fd
    with _Borrowed(sock) as s:
        return _read(s, want)


def _read(s: socket.socket, want: int) -> tuple[int, int | None, int | None, int | None, int | None, int | None]:
    getsockopt = s.getsockopt
    keepalive = 0
    if want & WANT_KEEPALIVE:
        try:
            keepalive = getsockopt(_SOL_SOCKET, _SO_KEEPALIVE)
        except OSError:
            again = _repeats(getsockopt, _SOL_SOCKET, _SO_KEEPALIVE)
            if again is None:
                raise  # a signal handler's
            raise socket_error(again.errno or errno.EINVAL, STEP_KEEPALIVE, "") from None
    values: list[int | None] = [None] * NKNOBS
    read_any = False
    for k, level, opt in _READABLE:
        if want & (1 << k):
            try:
                values[k] = getsockopt(level, opt)
                read_any = True
            except OSError:
                if _repeats(getsockopt, level, opt) is None:
                    raise  # a signal handler's
                # not readable here
    if not read_any:
        _probe_tcp(s)
    return (keepalive, values[0], values[1], values[2], values[3], values[4])


# --------------------------------------------------------------------------------------
# Read-back straight into the public value types
# --------------------------------------------------------------------------------------
#
# The layers above hand their types over once, at import (``bind_state``,
# ``bind_policy``), with the knobs ``capabilities()`` lists: per knob None (not
# listed: reads back as None) or its ``kaext.Knob`` (unit, range, option; one that is
# not readable reads back as None).

_state_type: Any = None
_state_setters: tuple[Any, ...] = ()
_policy_type: Any = None
_policy_setters: tuple[Any, ...] = ()
# per knob: None (reads back as None), 0 (a count: int), -1 (Linux TCP_SYNCNT: syn_seconds) or the
# unit's parts per second
_per_second: list[float | None] = [None] * len(KNOBS)
_knobs: list[Any] = [None] * len(KNOBS)


def _setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    """The ``__set__`` of each slot's descriptor: sets a field of an immutable value."""
    return tuple(cls.__dict__[name].__set__ for name in names)


def _bind_knobs(knobs: tuple[Any, ...]) -> None:
    _MADE.clear()  # readings made under the knobs bound before
    for k, knob in enumerate(knobs):
        _knobs[k] = knob
        if knob is None or not knob.readable:  # NetBSD's TCP_KEEP*, WSAIoctl: never a guess
            _per_second[k] = None
        else:
            _per_second[k] = (
                0 if knob.unit == "probes" else -1 if knob.unit == SYN_UNIT else float(UNITS_PER_SECOND[knob.unit])
            )


def bind_state(cls: type, knobs: tuple[Any, ...]) -> None:
    """Called once by the layer that defines ``KeepaliveState``: the type ``read_state`` makes."""
    global _state_type, _state_setters
    _bind_knobs(knobs)
    _state_setters = _setters(cls, ("enabled", "idle", "interval", "count"))
    _state_type = cls


def bind_policy(cls: type, knobs: tuple[Any, ...]) -> None:
    """Called once by the layer that defines ``Policy``: the type ``read_policy`` makes."""
    global _policy_type, _policy_setters
    _bind_knobs(knobs)
    _policy_setters = _setters(
        cls, ("idle", "interval", "count", "user_timeout", "connect_timeout", "keepalive", "_plan")
    )
    _policy_type = cls


def _seconds(k: int, value: int | None) -> float | int | None:
    """Knob ``k`` as read back: None, a count, or seconds.  None also for a value outside the
    knob's range: "unset" (illumos' 0 interval and count on a fresh socket, Windows' -1
    TCP_MAXRT) or more than kaext sets (``kaext._platform``)."""
    per = _per_second[k]
    if value is None or per is None:
        return None
    knob = _knobs[k]
    if not knob.min <= value <= knob.max:
        return None
    if per == -1:
        return float(syn_seconds(value))
    return value / per if per else value


# Values read back, made once per distinct reading: KeepaliveState and Policy are
# immutable, so equal readings can share one instance.
_MADE: dict[tuple[Any, ...], Any] = {}
_CACHE_MAX = 256


def _read_fast(sock: Any, options: tuple[tuple[int, ...], tuple[int, ...]] | None) -> tuple[int, ...] | None:
    """For a ``socket.socket`` whose options all read back: the values, straight from C
    (``map``).  None where the general path (:func:`read`) must run, or if a read failed
    (the general path then raises the error it describes)."""
    if options is not None and type(sock) is _socket_type:
        try:
            return tuple(map(sock.getsockopt, *options))
        except OSError:
            if _repeats(lambda: tuple(map(sock.getsockopt, *options))) is None:
                raise  # a signal handler's
            return None
    return None


def read_state(sock: Any) -> Any:
    """``KeepaliveState(enabled, idle, interval, count)`` of ``sock``: one read of four options."""
    values = _read_fast(sock, _STATE_OPTIONS) or read(sock, _WANT_STATE)[:4]
    state = _MADE.get(values)
    if state is None:
        keepalive, idle, interval, count = values
        state = object.__new__(_state_type)
        set_enabled, set_idle, set_interval, set_count = _state_setters
        set_enabled(state, keepalive != 0)
        set_idle(state, _seconds(IDLE, idle))
        set_interval(state, _seconds(INTERVAL, interval))
        set_count(state, _seconds(COUNT, count))
        _remember(values, state)
    return state


def read_policy(cls: type, sock: Any) -> Any:
    """``Policy.from_socket``: the policy (of type ``cls``) that reproduces ``sock``'s keepalive
    and user timeout (see ``kaext.Policy.from_socket``).

    SO_KEEPALIVE and every knob that reads back, one getsockopt each; SO_KEEPALIVE off
    gives ``keepalive=False`` (the knobs are not carried), no user timeout gives
    ``user_timeout=0.0``; a knob that does not read back, or reads back outside the
    policy's range ("unset": illumos' 0, Windows' -1), is None: the policy leaves it.
    """
    values = _read_fast(sock, _POLICY_OPTIONS) or read(sock, WANT_ALL)
    key = (cls, values)
    policy = _MADE.get(key)
    if policy is None:
        policy = _make_policy(cls, values)
        _remember(key, policy)
    return policy


def _remember(key: tuple[Any, ...], value: Any) -> None:
    # at most _CACHE_MAX readings, the oldest made first out: the memory stays level
    if len(_MADE) >= _CACHE_MAX:
        try:
            del _MADE[next(iter(_MADE))]
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass
    _MADE[key] = value


def _make_policy(cls: type, values: tuple[Any, ...]) -> Any:
    keepalive, *knobs = values
    if not keepalive:  # keepalive off: the knobs have no effect and are not carried
        knobs[IDLE] = knobs[INTERVAL] = knobs[COUNT] = None
    mask = 0
    native = [0] * NKNOBS
    for k, value in enumerate(knobs):
        if value is None or _per_second[k] is None:
            knobs[k] = None
            continue
        knob = _knobs[k]
        if not knob.min <= value <= knob.max:  # "unset" or beyond kaext's range: left alone
            knobs[k] = None
            continue
        mask |= 1 << k
        native[k] = value
    if cls is not _policy_type and not issubclass(cls, _policy_type):
        raise TypeError(f"{cls!r} is not a subclass of {_policy_type.__name__}")
    policy: Any = object.__new__(cls)
    set_idle, set_interval, set_count, set_user_timeout, set_connect_timeout, set_keepalive, set_plan = _policy_setters
    set_idle(policy, _seconds(IDLE, knobs[IDLE]))
    set_interval(policy, _seconds(INTERVAL, knobs[INTERVAL]))
    set_count(policy, knobs[COUNT])
    set_user_timeout(policy, _seconds(USER_TIMEOUT, knobs[USER_TIMEOUT]))
    set_connect_timeout(policy, _seconds(CONNECT_TIMEOUT, knobs[CONNECT_TIMEOUT]))
    set_keepalive(policy, keepalive != 0)
    keep = 1 if keepalive else 0
    set_plan(policy, Plan(mask, native[IDLE], native[INTERVAL], native[COUNT], native[USER_TIMEOUT], keep, native[4]))
    return policy


# Every knob's mechanism now, at import, as the C extension does (no racing first probes
# from several threads); then the knobs that read back (WSAIoctl is write-only).
_READABLE = tuple(
    (k, entry[1], entry[2]) for k, entry in enumerate(KNOB_OPTIONS) if entry is not None and mechanism(k) != MECH_SIO
)
_WANT_STATE = WANT_KEEPALIVE | (1 << IDLE) | (1 << INTERVAL) | (1 << COUNT)


def _options(knobs: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(levels, optnames) of SO_KEEPALIVE and these knobs, or None unless all of them read back."""
    readable = {k: (level, opt) for k, level, opt in _READABLE}
    if not all(k in readable for k in knobs):
        return None
    pairs = [(_SOL_SOCKET, _SO_KEEPALIVE), *(readable[k] for k in knobs)]
    return tuple(level for level, _ in pairs), tuple(opt for _, opt in pairs)


_STATE_OPTIONS = _options((IDLE, INTERVAL, COUNT))
_POLICY_OPTIONS = _options((IDLE, INTERVAL, COUNT, USER_TIMEOUT, CONNECT_TIMEOUT))


# Running processes (kaext.connections): Linux only, ENOSYS elsewhere; what the extension's
# _kaext_proc.pxi does, with ctypes, ``socket.getsockopt`` and ``struct`` (kaext._pure_proc).
# Part of the backend interface, so named here too.
diag_parse = _pure_proc.diag_parse
pidfd_getfd = _pure_proc.pidfd_getfd
pidfd_open = _pure_proc.pidfd_open
proc_read = _pure_proc.proc_read

# kaext.enforce's BPF programs: the extension assembles them; here each raises ENOSYS
# (kaext._pure_bpf).  Part of the backend interface, so named here too.
BPF_FACTS = _pure_bpf.BPF_FACTS
BPF_SETSOCKOPT = _pure_bpf.BPF_SETSOCKOPT
BPF_SOCK_OPS = _pure_bpf.BPF_SOCK_OPS
bpf_attach = _pure_bpf.bpf_attach
bpf_config_read = _pure_bpf.bpf_config_read
bpf_config_write = _pure_bpf.bpf_config_write
bpf_counters_read = _pure_bpf.bpf_counters_read
bpf_detach = _pure_bpf.bpf_detach
bpf_fd_by_id = _pure_bpf.bpf_fd_by_id
bpf_load = _pure_bpf.bpf_load
bpf_map_create = _pure_bpf.bpf_map_create
bpf_map_id = _pure_bpf.bpf_map_id
bpf_mount = _pure_bpf.bpf_mount
bpf_obj_get = _pure_bpf.bpf_obj_get
bpf_pin = _pure_bpf.bpf_pin
bpf_map_lookup = _pure_bpf.bpf_map_lookup
bpf_map_new = _pure_bpf.bpf_map_new
bpf_prog_info = _pure_bpf.bpf_prog_info
bpf_prog_new = _pure_bpf.bpf_prog_new
bpf_prog_query = _pure_bpf.bpf_prog_query
bpf_raw_tracepoint_open = _pure_bpf.bpf_raw_tracepoint_open
