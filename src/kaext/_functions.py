"""The socket functions: set, read back and turn off keepalive and the user timeout.

Each validates and converts its values (``_capabilities``) before the first system
call, then makes one backend call.
"""

from __future__ import annotations

from . import _backend, _platform
from ._capabilities import KEEPALIVE_LEAVE, caps, in_seconds, knob, make_plan, read_back_knobs
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._types import Duration, SocketLike

__all__ = [
    "KeepaliveState",
    "disable_keepalive",
    "get_keepalive",
    "get_user_timeout",
    "set_keepalive",
    "set_user_timeout",
    "system_defaults",
]

# what get_user_timeout reads back (bit k = knob k)
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


# The backend makes the KeepaliveState itself, in one call (see ``read_state``).
_backend.bind_state(KeepaliveState, read_back_knobs())
_read_state = _backend.read_state


def get_keepalive(sock: SocketLike) -> KeepaliveState:
    """Read SO_KEEPALIVE, the idle time, the probe interval and the probe count.

    Linux: ``getsockopt`` of ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``,
    ``TCP_KEEPCNT``; a knob never set reads as the system default.  macOS: idle via
    ``TCP_KEEPALIVE``.  Seconds; ``None`` where the platform cannot read a knob back
    (or does not list it in ``capabilities()``).
    """
    state: KeepaliveState = _read_state(sock)
    return state


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
    _backend.apply(sock, make_plan(idle, interval, count, None, 1))


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
    _backend.apply(sock, make_plan(None, None, None, seconds, KEEPALIVE_LEAVE))


def system_defaults() -> KeepaliveState:
    """The system-wide keepalive defaults, in seconds.

    Linux: ``/proc/sys/net/ipv4/tcp_keepalive_time``, ``_intvl``, ``_probes``.
    Elsewhere: what a fresh, unconfigured TCP socket reports.  ``enabled`` is whether
    a new socket has SO_KEEPALIVE on.
    """
    import socket

    values: dict[str, Any] = {}
    for name, path in _platform.DEFAULT_FILES.items():
        try:
            with open(path, encoding="ascii") as f:
                values[name] = int(f.read().strip())
        except (OSError, ValueError):
            values[name] = None
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
