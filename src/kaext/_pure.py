"""kaext._pure -- the pure-Python implementation of ``kaext._kaext``.

Same functions, same plans, same errors, through ``socket.setsockopt`` and
``socket.getsockopt``.  Used where the extension cannot be built (PyPy, no
compiler) or when ``KAEXT_NO_EXTENSIONS=1`` is set.  Option numbers come from
Python's :mod:`socket` module; where Python lacks a name the platform's header
defines (``TCP_KEEPALIVE`` on macOS before Python 3.10, ``TCP_KEEPIDLE`` on old
Windows builds), the value documented in :mod:`kaext._platform` is used.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from . import _platform
from ._errors import bad_fd_error, fd_type_error, socket_error
from ._platform import (
    FALLBACK_CONSTANTS,
    FAMILY,
    IDLE,
    INTERVAL,
    KNOBS,
    MECH_NONE,
    MECH_SETSOCKOPT,
    MECH_SIO,
    SPECS,
    STEP_KEEPALIVE,
    STEP_PROBE,
    WANT_ALL,
    WINDOWS_SIO_DEFAULT_IDLE_MS,
    WINDOWS_SIO_DEFAULT_INTERVAL_MS,
    KnobSpec,
    spec_for,
)

IMPLEMENTATION = "python"

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


CONSTANTS, CONSTANT_SOURCES = _collect()
#: The largest socket handle accepted (``kaext._platform.FD_MAX``).
FD_MAX: int = _platform.FD_MAX

_TCP = CONSTANTS.get("IPPROTO_TCP", 6)
_SOL_SOCKET = CONSTANTS["SOL_SOCKET"]
_SO_KEEPALIVE = CONSTANTS["SO_KEEPALIVE"]
_TCP_NODELAY = socket.TCP_NODELAY

KNOB_OPTIONS: tuple[tuple[str, int, int] | None, ...] = tuple(
    (SPECS[k].option, _TCP, CONSTANTS[SPECS[k].option])
    if k in SPECS and SPECS[k].option in CONSTANTS
    else None
    for k in KNOBS
)


def knob_supported(k: int) -> bool:
    """Does the running kernel accept knob ``k`` (probed on a throwaway socket)?"""
    entry = KNOB_OPTIONS[k] if 0 <= k < len(KNOB_OPTIONS) else None
    if entry is None:
        return False
    _, level, opt = entry
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    with s:
        try:
            value = s.getsockopt(level, opt)
        except OSError:
            value = 1
        try:
            s.setsockopt(level, opt, value if value > 0 else 1)
        except OSError:
            return False
    return True


_mechanisms: dict[int, int] = {}


def _probe_mechanism(k: int) -> int:
    if knob_supported(k):
        return MECH_SETSOCKOPT
    if FAMILY == "windows" and k in (IDLE, INTERVAL) and hasattr(socket, "SIO_KEEPALIVE_VALS"):
        return MECH_SIO  # Windows before 10 version 1709, wine
    return MECH_NONE


def mechanism(k: int) -> int:
    """How knob ``k`` is set on the running system (``MECH_*``), probed once per process.

    ``MECH_SETSOCKOPT``, ``MECH_SIO`` (Windows without TCP_KEEPIDLE: ``socket.ioctl(
    SIO_KEEPALIVE_VALS, (on, idle_ms, interval_ms))``, write-only) or ``MECH_NONE``.
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
    """The unit knob ``k`` is taken in under its mechanism: "s", "ms", "probes" or ""."""
    spec = _spec(k)
    return spec.unit if spec is not None else ""


def _apply_sio(s: socket.socket, plan: tuple[int, int, int, int, int, int]) -> None:
    """Windows without TCP_KEEPIDLE: idle and interval (ms) together, the missing one defaulted."""
    mask = plan[0]
    step = IDLE if mask & 1 else INTERVAL
    idle = plan[1] if mask & 1 else WINDOWS_SIO_DEFAULT_IDLE_MS
    interval = plan[2] if mask & 2 else WINDOWS_SIO_DEFAULT_INTERVAL_MS
    if idle < 1 or interval < 1:  # idle 0: keepalive storm on some Windows versions
        raise socket_error(errno.EINVAL, step, "SIO_KEEPALIVE_VALS", plan[step + 1], _spec(step))
    try:
        s.ioctl(socket.SIO_KEEPALIVE_VALS, (0 if plan[5] == 0 else 1, idle, interval))  # type: ignore[attr-defined]
    except OSError as exc:
        raise socket_error(exc.errno or errno.EINVAL, step, "SIO_KEEPALIVE_VALS", plan[step + 1], _spec(step)) from None


def _fd(sock: Any) -> int:
    if isinstance(sock, int):
        if isinstance(sock, bool):
            raise fd_type_error(sock)
        fd = sock
    else:
        try:
            fileno = sock.fileno
        except AttributeError:
            raise fd_type_error(sock) from None
        except (OSError, TypeError, ValueError):
            raise
        except Exception as exc:  # a fileno property that raises
            raise TypeError(f"{type(sock).__name__}.fileno raised {exc!r}") from exc
        try:
            fd = fileno()
        except (OSError, TypeError, ValueError):
            raise
        except Exception as exc:
            raise TypeError(f"{type(sock).__name__}.fileno() raised {exc!r}") from exc
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    if fd < 0 or fd > FD_MAX:
        raise bad_fd_error(fd)
    return int(fd)


class _Borrowed:
    """A socket object for a file descriptor we do not own: never closes it."""

    __slots__ = ("sock", "borrowed")

    def __init__(self, sock: Any) -> None:
        if type(sock) is socket.socket:
            if sock.fileno() < 0:
                raise bad_fd_error(-1)
            self.sock, self.borrowed = sock, False
            return
        fd = _fd(sock)
        # socket.socket(fileno=fd) makes the fd non-blocking when a default timeout is
        # set (socket.setdefaulttimeout): put the caller's blocking mode back.
        blocking = _get_blocking(fd) if socket.getdefaulttimeout() is not None else None
        try:
            self.sock = socket.socket(fileno=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.EBADF):
                raise socket_error(exc.errno, STEP_PROBE, "") from None
            raise
        if blocking is not None and _get_blocking(fd) != blocking:
            os.set_blocking(fd, blocking)
        self.borrowed = True

    def __enter__(self) -> socket.socket:
        return self.sock

    def __exit__(self, *exc: object) -> None:
        if self.borrowed:
            self.sock.detach()


def _get_blocking(fd: int) -> bool | None:
    """The fd's blocking mode where the OS can tell (POSIX), else None."""
    try:
        return os.get_blocking(fd)
    except (AttributeError, OSError):  # Windows sockets: no way to ask
        return None


def _probe_tcp(s: socket.socket) -> None:
    try:
        s.getsockopt(_TCP, _TCP_NODELAY)
    except OSError as exc:
        raise socket_error(exc.errno or errno.EINVAL, STEP_PROBE, "") from None


def apply(sock: Any, plan: tuple[int, int, int, int, int, int]) -> None:
    """Write a plan ``(set_mask, idle, interval, count, user_timeout, keepalive)``.

    Same order as the C shim: TCP-level knobs first, SO_KEEPALIVE last.
    """
    mask = plan[0]
    for k in range(4):  # refused before any call: the socket stays as it was
        if mask & (1 << k) and mechanism(k) == MECH_NONE:
            entry = KNOB_OPTIONS[k]
            raise socket_error(errno.ENOPROTOOPT, k, entry[0] if entry else "", plan[k + 1])
    with _Borrowed(sock) as s:
        first = True
        done = 0
        if mask & 3 and mechanism(IDLE) == MECH_SIO:
            _probe_tcp(s)  # the ioctl alone does not prove TCP
            _apply_sio(s, plan)
            done, first = 3, False
        for k in range(4):
            if not mask & (1 << k) or done & (1 << k):
                continue
            entry = KNOB_OPTIONS[k]
            if entry is None:
                raise socket_error(errno.ENOPROTOOPT, k, "", plan[k + 1])
            name, level, opt = entry
            try:
                s.setsockopt(level, opt, plan[k + 1])
            except OSError as exc:
                raise socket_error(exc.errno or errno.EINVAL, k, name, plan[k + 1], _spec(k)) from None
            first = False
        if first:
            _probe_tcp(s)
        if plan[5] >= 0:
            try:
                s.setsockopt(_SOL_SOCKET, _SO_KEEPALIVE, 1 if plan[5] else 0)
            except OSError as exc:
                raise socket_error(exc.errno or errno.EINVAL, STEP_KEEPALIVE, "", plan[5]) from None


def apply_policy(self: Any, sock: Any) -> None:
    """Apply this policy to ``sock``, all or nothing (see :class:`kaext.Policy`)."""
    apply(sock, self._plan)


def read(sock: Any, want: int = WANT_ALL) -> tuple[int, int | None, int | None, int | None, int | None]:
    """Read ``(keepalive, idle, interval, count, user_timeout)`` in OS units.

    ``want`` picks what to read (bit k: knob k, bit 4: SO_KEEPALIVE), as in the C shim:
    only when no knob could be read does a TCP_NODELAY probe tell "not readable here"
    from "not a TCP socket".
    """
    with _Borrowed(sock) as s:
        keepalive = 0
        if want & (1 << STEP_KEEPALIVE):
            try:
                keepalive = s.getsockopt(_SOL_SOCKET, _SO_KEEPALIVE)
            except OSError as exc:
                raise socket_error(exc.errno or errno.EINVAL, STEP_KEEPALIVE, "") from None
        values: list[int | None] = []
        for k, entry in enumerate(KNOB_OPTIONS):
            value = None
            if want & (1 << k) and entry is not None and mechanism(k) != MECH_SIO:  # SIO is write-only
                try:
                    value = s.getsockopt(entry[1], entry[2])
                except OSError:
                    value = None
            values.append(value)
        if all(value is None for value in values):
            _probe_tcp(s)
    return (keepalive, values[0], values[1], values[2], values[3])
