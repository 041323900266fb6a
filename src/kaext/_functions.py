"""The socket functions: set, read back and turn off keepalive and the user timeout.

Each validates and converts its values (``_capabilities``) before the first system
call, then makes one backend call.
"""

from __future__ import annotations

from . import _backend, _platform
from ._capabilities import KEEPALIVE_LEAVE, Knob, caps, in_seconds, knob, make_plan
from ._platform import UNITS_PER_SECOND, WANT_KEEPALIVE
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._types import Duration, SocketLike

__all__ = [
    "KeepaliveState",
    "warn_if_not_inherited",
    "disable_keepalive",
    "get_keepalive",
    "get_user_timeout",
    "set_keepalive",
    "set_user_timeout",
    "system_defaults",
]

# what to read back (bit k = knob k, WANT_KEEPALIVE = SO_KEEPALIVE)
_WANT_STATE = WANT_KEEPALIVE | (1 << _platform.IDLE) | (1 << _platform.INTERVAL) | (1 << _platform.COUNT)
_WANT_USER_TIMEOUT = 1 << _platform.USER_TIMEOUT
_KEEPALIVE_OFF = _backend.Plan(0, 0, 0, 0, 0, 0)


class KeepaliveState(Record):
    """Keepalive as the kernel reports it.

    ``enabled`` is SO_KEEPALIVE; ``idle`` and ``interval`` are seconds; ``count`` is
    probes.  A knob the platform cannot read back is ``None``.
    """

    __slots__ = ("enabled", "idle", "interval", "count")
    _fields = __slots__

    enabled: bool
    idle: float | None
    interval: float | None
    count: int | None

    @property
    def mechanisms(self) -> dict[str, str]:
        """How each knob was read and is set on this system, e.g. ``{"idle":
        "setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)", ...}`` (Windows before 10 1709:
        ``"WSAIoctl(SIO_KEEPALIVE_VALS)"``, which is why ``idle`` is ``None`` there).
        Not part of equality: it describes the platform, not the socket."""
        known = caps()
        return {name: known[name].mechanism for name in ("idle", "interval", "count") if name in known}

    def __init__(self, enabled: bool, idle: float | None, interval: float | None, count: int | None) -> None:
        init = object.__setattr__  # the read-back path: no generic loop here
        init(self, "enabled", enabled)
        init(self, "idle", idle)
        init(self, "interval", interval)
        init(self, "count", count)


def get_keepalive(sock: SocketLike) -> KeepaliveState:
    """Read SO_KEEPALIVE, the idle time, the probe interval and the probe count.

    Linux: ``getsockopt`` of ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``,
    ``TCP_KEEPCNT``; a knob never set reads as the system default.  macOS: idle via
    ``TCP_KEEPALIVE``.  Seconds; ``None`` where the platform cannot read a knob back.
    """
    enabled, idle, interval, count, _ = _backend.read(sock, _WANT_STATE)
    known = caps()
    # a knob outside capabilities() may still read back (e.g. one the probe found refused);
    # one the platform cannot read (NetBSD, Windows' SIO_KEEPALIVE_VALS) is None, never a guess
    return KeepaliveState(
        bool(enabled),
        _readable_seconds(known, "idle", idle),
        _readable_seconds(known, "interval", interval),
        count if "count" in known and known["count"].readable else None,
    )


def _readable_seconds(known: dict[str, Knob], name: str, native: int | None) -> float | None:
    spec = known.get(name)
    if native is None or spec is None or not spec.readable:
        return None
    return native / UNITS_PER_SECOND[spec.unit]


def get_user_timeout(sock: SocketLike) -> float | None:
    """Read the user timeout in seconds: Linux ``TCP_USER_TIMEOUT`` (kernel unit ms).

    ``0.0`` means the system default (no per-socket timeout).  ``None`` where the
    platform cannot read it back.
    """
    knob("user_timeout")
    return in_seconds("user_timeout", _backend.read(sock, _WANT_USER_TIMEOUT)[4])


def set_keepalive(
    sock: SocketLike,
    idle: Duration | None = None,
    interval: Duration | None = None,
    count: int | None = None,
) -> None:
    """Turn SO_KEEPALIVE on and set the knobs that are given; ``None`` leaves a knob as it is.

    Linux: ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL`` (seconds, 1..32767), ``TCP_KEEPCNT``
    (1..127).  macOS: idle via ``TCP_KEEPALIVE``.  Seconds as int, float or
    ``timedelta``; fractions round up to the platform's resolution.

    Raises TypeError or ValueError (naming the knob and the valid range) before any
    system call, OSError with the errno if the kernel refuses; the socket is then
    left as it was.
    """
    plan = make_plan(idle, interval, count, None, 1)
    _backend.apply(sock, plan)
    if _platform.FAMILY in _platform.NOT_INHERITED_BY_ACCEPT:
        warn_if_not_inherited(sock, plan.set_mask)


def disable_keepalive(sock: SocketLike) -> None:
    """Turn SO_KEEPALIVE off (the knobs keep their values for when it is turned on again)."""
    _backend.apply(sock, _KEEPALIVE_OFF)


def set_user_timeout(sock: SocketLike, seconds: Duration) -> None:
    """Set how long transmitted data may stay unacknowledged before the connection drops.

    Linux: ``TCP_USER_TIMEOUT``, kernel unit milliseconds (0..2**31-1), seconds here,
    rounded up to the millisecond; ``0`` restores the system default.  macOS:
    ``TCP_RXT_CONNDROPTIME`` (seconds); Windows: ``TCP_MAXRT`` (seconds).

    On Linux it also replaces the keepalive probe count: once keepalive probes are
    out, the connection is dropped when this much time has passed since data was
    last received, however many probes were sent.  ``Policy.from_timeout`` sets it to
    ``idle + interval * count`` so that both agree.
    """
    if seconds is None:
        raise TypeError("user_timeout must be seconds as int, float or datetime.timedelta, got None")
    plan = make_plan(None, None, None, seconds, KEEPALIVE_LEAVE)
    _backend.apply(sock, plan)
    if _platform.FAMILY in _platform.NOT_INHERITED_BY_ACCEPT:
        warn_if_not_inherited(sock, plan.set_mask)


def warn_if_not_inherited(sock: SocketLike, mask: int) -> None:
    """RuntimeWarning when knobs that accepted sockets do not inherit were set on a listening socket.

    macOS: an accepted connection takes SO_KEEPALIVE, the interval and the count from
    its listening socket, but not the idle time (``TCP_KEEPALIVE``) nor the user timeout
    (``TCP_RXT_CONNDROPTIME``) -- apply those to each accepted socket.  ``mask`` is a
    plan's mask (bit k: knob k is set).  Nothing to check elsewhere, nor for an int fd.
    """
    names = [name for name in _platform.NOT_INHERITED_BY_ACCEPT.get(_platform.FAMILY, ())
             if mask & (1 << _platform.KNOBS.index(name))]
    if not names or not _listening(sock):
        return
    import warnings

    them = "it" if len(names) == 1 else "them"
    warnings.warn(
        f"{' and '.join(names)} set on a listening socket: on this platform ({_platform.FAMILY}) "
        f"accepted connections do not inherit {them} (SO_KEEPALIVE, interval and count are "
        "inherited); apply the policy to each accepted socket as well",
        RuntimeWarning,
        stacklevel=3,
    )


def _listening(sock: object) -> bool:
    """Is ``sock`` (an object with getsockopt, e.g. a socket.socket) a listening socket?"""
    import socket

    option = getattr(socket, "SO_ACCEPTCONN", None)
    getsockopt = getattr(sock, "getsockopt", None)
    if option is None or getsockopt is None:
        return False
    try:
        return bool(getsockopt(socket.SOL_SOCKET, option))
    except (OSError, TypeError, ValueError):
        return False


def system_defaults() -> KeepaliveState:
    """The system-wide keepalive defaults, in seconds.

    Linux: ``/proc/sys/net/ipv4/tcp_keepalive_time``, ``_intvl``, ``_probes``.
    Elsewhere: what a fresh, unconfigured TCP socket reports.  ``enabled`` is whether
    a new socket has SO_KEEPALIVE on.
    """
    import socket

    values: dict[str, Any] = dict(_platform.read_system_defaults())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        fresh = get_keepalive(s)
    for name in ("idle", "interval", "count"):
        if values.get(name) is None:
            values[name] = getattr(fresh, name)
    return KeepaliveState(
        enabled=fresh.enabled,
        idle=None if values["idle"] is None else float(values["idle"]),
        interval=None if values["interval"] is None else float(values["interval"]),
        count=values["count"],
    )
