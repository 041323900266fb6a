"""The socket functions: set, read back and turn off keepalive and the user timeout.

Each validates and converts its values (``_capabilities``) before the first system
call, then makes one backend call.
"""

from __future__ import annotations

from . import _backend, _platform
from ._capabilities import KEEPALIVE_LEAVE, caps, check_total_on, in_seconds, knob, make_plan, read_back_knobs
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

    ``enabled`` is ``getsockopt(SOL_SOCKET, SO_KEEPALIVE)``; ``idle`` and ``interval`` are
    seconds (the kernel's value converted from its unit, so a millisecond option can
    give a fraction); ``count`` is probes.  A knob never set reads as the system default.

    Platform-specific behaviour (the same options ``set_keepalive`` writes):

    * Linux, FreeBSD, DragonFly, illumos / Solaris 11.4, Windows 10 1709+:
      ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``.
    * macOS / iOS: idle is ``TCP_KEEPALIVE``.
    * NetBSD: the kernel has no getsockopt for its ``TCP_KEEP*`` options: all three are
      ``None``.
    * Windows before 10 1709 (and wine): idle and interval are set with
      ``WSAIoctl(SIO_KEEPALIVE_VALS)``, which cannot be read back: they are ``None``.
    * A knob this platform lacks (OpenBSD: all three), or that ``capabilities()`` does not
      list, is ``None``.

    ``state.mechanisms`` names the call behind each knob.  Raises OSError (EBADF,
    ENOTSOCK, ENOPROTOOPT for a socket that is not TCP) with the fd and the call.
    """
    state: KeepaliveState = _read_state(sock)
    return state


def get_user_timeout(sock: SocketLike) -> float | None:
    """Read the user timeout in seconds; ``0.0`` means the system default.

    Platform-specific behaviour:

    * Linux: ``getsockopt(IPPROTO_TCP, TCP_USER_TIMEOUT)``, kernel unit milliseconds.
    * macOS / iOS: ``TCP_RXT_CONNDROPTIME``, seconds.
    * Windows 10 1709+: ``TCP_MAXRT``, seconds.
    * FreeBSD: ``TCP_MAXUNACKTIME``, seconds.
    * Unavailable (OSError ENOPROTOOPT, with the reason) on NetBSD, DragonFly, OpenBSD
      and illumos / Solaris, which have no per-socket user timeout.

    ``None`` where the platform has the option but cannot read it back.
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

    ``idle`` (time idle before the first probe) and ``interval`` (between unanswered
    probes) are seconds as int, float, ``Fraction``, ``Decimal`` or ``timedelta``,
    rounded **up** to the option's unit (a timer never fires earlier than asked);
    ``count`` is the number of unanswered probes before the connection drops.  Values
    are never clamped: one outside the range below raises ValueError.

    The options (units and ranges per OS: ``capabilities()`` here, and the platforms
    page of the documentation, docs/platforms.md, for every OS):

    * ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT`` on Linux, FreeBSD, DragonFly,
      NetBSD (in half-second ticks: converted, rounded up), illumos / Solaris 11.4 and
      recent Windows; macOS / iOS set idle with ``TCP_KEEPALIVE``; older Windows set idle
      and interval together with ``WSAIoctl(SIO_KEEPALIVE_VALS)`` (the one not given is
      reset to Windows' default); Solaris before 11.4 has only
      ``TCP_KEEPALIVE_THRESHOLD``; OpenBSD has no per-socket knobs (only SO_KEEPALIVE:
      ``set_keepalive(sock)`` works).
    * macOS / iOS: ``idle + interval * count`` must fit xnu's 32-bit millisecond timer,
      else ValueError; an accepted socket does not inherit idle from its listening socket
      there (RuntimeWarning on a listening socket): set it on each accepted one.
    * NetBSD: an accepted socket inherits none of the three from its listening socket
      (RuntimeWarning on a listening socket); DragonFly: ``idle + interval * count`` must
      fit its int tick counters, else ValueError.

    A knob the platform lacks raises OSError ENOPROTOOPT naming the reason.  TypeError
    and ValueError (naming the knob, the value and the valid range) come before any
    system call, OSError with the errno if the kernel refuses; the socket is then left
    as it was.  ``kaext.capabilities()`` lists what this system offers.
    """
    plan = make_plan(idle, interval, count, None, 1)
    if _platform.FAMILY in _platform.KEEPALIVE_TOTAL_MAX_MS:
        check_total_on(sock, plan)
    _backend.apply(sock, plan)
    if _platform.FAMILY in _platform.NOT_INHERITED_BY_ACCEPT:
        warn_if_not_inherited(sock, plan.set_mask)


def disable_keepalive(sock: SocketLike) -> None:
    """Turn SO_KEEPALIVE off: ``setsockopt(SOL_SOCKET, SO_KEEPALIVE, 0)``, on every platform.

    The knobs keep their values for when keepalive is turned on again.  A socket that
    is not TCP is refused (a ``TCP_NODELAY`` read proves TCP first) and left as it was.
    """
    _backend.apply(sock, _KEEPALIVE_OFF)


def set_user_timeout(sock: SocketLike, seconds: Duration) -> None:
    """Set how long transmitted data may stay unacknowledged before the connection drops.

    ``seconds`` as int, float, ``Fraction``, ``Decimal`` or ``timedelta``, rounded **up** to
    the option's unit; ``0`` restores the system default.  Out of range raises
    ValueError (never clamped).  SO_KEEPALIVE is left as it is.

    The options (units and ranges per OS: ``capabilities()`` here, and the platforms
    page of the documentation, docs/platforms.md, for every OS):

    * Linux: ``TCP_USER_TIMEOUT`` (milliseconds).  It also replaces the keepalive probe
      count: once probes are out, the connection is dropped when this much time has
      passed since data was last received (``Policy.from_timeout`` sets it to
      ``idle + interval * count`` so that both agree).
    * macOS / iOS: ``TCP_RXT_CONNDROPTIME`` (seconds), narrower than Linux: it counts
      from the first retransmission timeout, only in ESTABLISHED, is checked only when
      the retransmit timer fires, and keepalive never consults it.  Not inherited by
      accepted sockets (RuntimeWarning when set on a listening socket).
    * Windows: ``TCP_MAXRT`` (seconds; its -1, retransmit forever, is not offered).
    * FreeBSD: ``TCP_MAXUNACKTIME`` (seconds): the retransmit and persist timers drop a
      connection that made no progress for that long.
    * Unavailable (OSError ENOPROTOOPT, with the reason) on NetBSD, DragonFly, OpenBSD
      and illumos / Solaris.
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
    (``TCP_RXT_CONNDROPTIME``); NetBSD: SO_KEEPALIVE only, none of idle, interval and
    count -- apply those to each accepted socket.  ``mask`` is a
    plan's mask (bit k: knob k is set).  Nothing to check elsewhere, nor for an int fd.
    """
    names = [
        name
        for name in _platform.NOT_INHERITED_BY_ACCEPT.get(_platform.FAMILY, ())
        if mask & (1 << _platform.KNOBS.index(name))
    ]
    if not names or not _listening(sock):
        return
    import warnings

    them = "it" if len(names) == 1 else "them"
    lost = _platform.NOT_INHERITED_BY_ACCEPT[_platform.FAMILY]
    kept = ["SO_KEEPALIVE", *(k for k in ("idle", "interval", "count") if k not in lost)]
    kept_text = f"{kept[0]} is" if len(kept) == 1 else f"{', '.join(kept[:-1])} and {kept[-1]} are"
    warnings.warn(
        f"{' and '.join(names)} set on a listening socket: on this platform ({_platform.FAMILY}) "
        f"accepted connections do not inherit {them} ({kept_text} "
        "inherited); apply the policy to each accepted socket as well",
        RuntimeWarning,
        stacklevel=3,
    )


def _listening(sock: object) -> bool:
    """Is ``sock`` (an object with getsockopt, e.g. a socket.socket) a listening socket?"""
    try:
        import socket
    except ImportError:  # WASI / Emscripten builds: no socket can be listening
        return False

    option = getattr(socket, "SO_ACCEPTCONN", None)
    getsockopt = getattr(sock, "getsockopt", None)
    if option is None or getsockopt is None:
        return False
    try:
        return bool(getsockopt(socket.SOL_SOCKET, option))
    except (OSError, TypeError, ValueError):
        return False


def system_defaults() -> KeepaliveState:
    """The system-wide keepalive defaults: what a socket gets when nothing is set.

    ``idle`` and ``interval`` in seconds, ``count`` in probes, ``enabled`` whether a new
    socket has SO_KEEPALIVE on.

    Platform-specific behaviour:

    * Linux: ``/proc/sys/net/ipv4/tcp_keepalive_time``, ``_intvl``, ``_probes``.
    * Elsewhere: what a fresh, unconfigured TCP socket reports (``get_keepalive``); a
      knob the platform cannot read back (Windows before 10 1709, OpenBSD) is ``None``.
    * A Python without a usable socket module (WASI, Emscripten): OSError ENOSYS.
    """
    try:
        import socket
    except ImportError:  # WASI / Emscripten builds: its socket() raises OSError(ENOSYS)
        from . import _nosocket as socket  # type: ignore[no-redef]

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
