"""The public API: validate, convert to the OS unit, and hand a plan to the backend.

Both implementations (the C extension ``kaext._kaext`` and ``kaext._pure``)
take the same plan, so everything a user can get wrong is checked here, once,
before the first system call.
"""

from __future__ import annotations

import math
import operator
import sys

from . import _backend as _impl
from . import _platform
from ._platform import KNOBS
from ._record import Record

# Nothing heavy at import time (typing, dataclasses, fractions, decimal, datetime, re):
# ``import kaext`` must stay cheap.  Type-only names come from ._types.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

    from ._types import Duration, SocketLike

__all__ = [
    "Duration",
    "KeepaliveState",
    "Knob",
    "Policy",
    "SocketLike",
    "capabilities",
    "disable_keepalive",
    "get_keepalive",
    "get_user_timeout",
    "set_keepalive",
    "set_user_timeout",
    "system_defaults",
]


def __getattr__(name: str) -> Any:
    # SocketLike and Duration are built with typing, on first use only.
    if name in ("SocketLike", "Duration"):
        from . import _types

        return getattr(_types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_NS_PER_UNIT = {"s": 10**9, "ms": 10**6}
_IDLE, _INTERVAL, _COUNT, _USER_TIMEOUT = range(4)
_KEEPALIVE_ONLY = -1
# what to read back (the shim's "want" mask: bit k = knob k, bit 4 = SO_KEEPALIVE)
_WANT_KEEPALIVE = 0b10111
_WANT_USER_TIMEOUT = 0b01000


# --------------------------------------------------------------------------------------
# What this platform offers
# --------------------------------------------------------------------------------------


class Knob(Record):
    """One keepalive knob as this platform implements it.

    ``option`` is the header name of the socket option (``"TCP_KEEPIDLE"``), ``level``
    and ``optname`` the numbers to pass to setsockopt, ``unit`` what the kernel takes
    (``"s"``, ``"ms"`` or ``"probes"``), ``min``/``max`` the range it accepts in that
    unit, ``readable`` whether getsockopt reads it back, ``mechanism`` the call kaext
    makes (``"setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)"``, or on Windows before 10 version
    1709 ``"WSAIoctl(SIO_KEEPALIVE_VALS)"``, where ``level`` is -1 and ``optname`` the
    ioctl code), and ``note`` what else to know (empty when nothing).
    """

    __slots__ = ("option", "level", "optname", "unit", "min", "max", "readable", "mechanism", "note")
    _fields = __slots__

    option: str
    level: int
    optname: int
    unit: str
    min: int
    max: int
    readable: bool
    mechanism: str
    note: str

    def __init__(
        self,
        option: str,
        level: int,
        optname: int,
        unit: str,
        min: int,
        max: int,
        readable: bool,
        mechanism: str,
        note: str = "",
    ) -> None:
        self._init(option, level, optname, unit, min, max, readable, mechanism, note)


def _build_capabilities() -> dict[str, Knob]:
    """Knobs as the running system sets them: the backend probes each once (``mechanism``),
    ``_platform`` describes that mechanism (unit, range, read-back)."""
    knobs: dict[str, Knob] = {}
    for index, name in enumerate(KNOBS):
        entry = _impl.KNOB_OPTIONS[index]
        if entry is None:
            continue
        option, level, optname = entry
        spec = _platform.spec_for(name, option, _impl.mechanism(index))
        if spec is None:
            continue
        if spec.mechanism == _platform.MECH_SIO:
            option, level, optname = spec.option, -1, _impl.CONSTANTS["SIO_KEEPALIVE_VALS"]
        knobs[name] = Knob(
            option=option,
            level=level,
            optname=optname,
            unit=spec.unit,
            min=spec.min,
            max=spec.max,
            readable=spec.readable,
            mechanism=spec.describe(),
            note=spec.note,
        )
    return knobs


_CAPABILITIES: dict[str, Knob] | None = None


def _caps() -> dict[str, Knob]:
    global _CAPABILITIES
    if _CAPABILITIES is None:
        _CAPABILITIES = _build_capabilities()
    return _CAPABILITIES


def capabilities() -> dict[str, Knob]:
    """The knobs this platform supports: ``idle``, ``interval``, ``count``, ``user_timeout``.

    A knob is listed only when the headers define its option and the running kernel
    accepted it in a one-time probe on a throwaway socket.  Linux: all four
    (``TCP_KEEPIDLE`` 1..32767 s, ``TCP_KEEPINTVL`` 1..32767 s, ``TCP_KEEPCNT``
    1..127 probes, ``TCP_USER_TIMEOUT`` 0..2**31-1 ms).
    """
    return dict(_caps())


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


def _duration_ns(knob: str, value: object) -> int:
    """A duration in whole nanoseconds, exact for int, float, Fraction, Decimal and timedelta.

    Rounded to the nearest nanosecond (so that 0.1 s is 100 ms, not 100.000000000000006 ms),
    except that a nonzero value below 1 ns keeps its sign.  The modules of the exotic types
    are looked up in ``sys.modules``: a value cannot be a Decimal if nobody imported decimal.
    """
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise _duration_type_error(knob, value)
    if hasattr(value, "__index__"):
        whole: int = operator.index(value)  # type: ignore[call-overload, unused-ignore]
        return whole * 10**9
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}")
        num, den = value.as_integer_ratio()
    else:
        datetime = sys.modules.get("datetime")
        decimal = sys.modules.get("decimal")
        if datetime is not None and isinstance(value, datetime.timedelta):
            delta: Any = value
            return int((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000)
        if decimal is not None and isinstance(value, decimal.Decimal):
            if not value.is_finite():
                raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}")
            # as_integer_ratio() builds 10**exponent exactly: Decimal("1E-999999999") would
            # take minutes.  Past 1e30 s every knob is out of range and below 1e-30 s only
            # the sign matters, so such values are clamped first.
            if value and value.adjusted() > 30:
                num, den = (10**31 if value > 0 else -(10**31)), 1
            elif value and value.adjusted() < -30:
                num, den = (1 if value > 0 else -1), 10**31
            else:
                num, den = value.as_integer_ratio()
        elif _is_real(value):  # Fraction, NumPy floats, other numbers.Real
            ratio = getattr(value, "as_integer_ratio", None)
            if ratio is None:
                number = float(value)  # type: ignore[arg-type]
                if not math.isfinite(number):
                    raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}")
                ratio = number.as_integer_ratio
            try:
                num, den = ratio()
            except (OverflowError, ValueError):  # NaN or infinity of another float type
                raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}") from None
        else:
            raise _duration_type_error(knob, value)
    ns, rest = divmod(num * 10**9, den)
    if 2 * rest > den or (2 * rest == den and ns & 1):
        ns += 1
    if ns == 0 and num != 0:
        # below 1 ns: keep the sign, so that a tiny positive value rounds up to the
        # OS resolution and a tiny negative one is refused, not taken as 0
        ns = 1 if num > 0 else -1
    return ns


def _duration_type_error(knob: str, value: object) -> TypeError:
    return TypeError(
        f"{knob} must be seconds as int, float or datetime.timedelta, "
        f"got {type(value).__name__} {value!r}"
    )


def _is_real(value: object) -> bool:
    import numbers

    return isinstance(value, numbers.Real)


def _range_error(knob: str, value: object, spec: Knob | _platform.KnobSpec, why: str = "") -> ValueError:
    unit = spec.unit
    lo = _fmt_unit(spec.min, unit)
    hi = _fmt_unit(spec.max, unit)
    extra = f" ({why})" if why else ""
    return ValueError(
        f"{knob}={value!r} is out of range{extra}: {spec.option} accepts {lo} .. {hi} "
        f"on this platform"
    )


def _fmt_unit(n: int, unit: str) -> str:
    if unit == "probes":
        return f"{n} probes"
    if unit == "ms":
        seconds = f"{n / 1000:.3f}".rstrip("0").rstrip(".")
        return f"{n} ms ({seconds} s)"
    return f"{n} s"


def _spec(knob: str) -> Knob:
    spec = _caps().get(knob)
    if spec is None:
        import errno

        raise OSError(
            errno.ENOPROTOOPT,
            f"{knob} cannot be set on this platform ({_platform.FAMILY}): "
            f"{_platform.unsupported_reason(knob)}; see kaext.capabilities()",
        )
    return spec


def _native(knob: str, value: object) -> int:
    """Validate ``value`` for ``knob`` and convert it to the OS unit, rounding up."""
    spec = _spec(knob)
    if spec.unit == "probes":
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"{knob} must be an int number of probes, got {type(value).__name__} {value!r}")
        n = operator.index(value)  # type: ignore[call-overload, unused-ignore]
        if n < spec.min or n > spec.max:
            raise _range_error(knob, value, spec)
        return n
    try:
        ns = _duration_ns(knob, value)
    except ValueError:
        raise _range_error(knob, value, spec, "not a finite number") from None
    if ns < 0 or (ns == 0 and spec.min > 0):
        raise _range_error(knob, value, spec, "must be positive" if spec.min > 0 else "negative")
    per = _NS_PER_UNIT[spec.unit]
    n = -(-ns // per)  # round up: a timer never fires earlier than asked
    if n < spec.min or n > spec.max:
        raise _range_error(knob, value, spec)
    return n


def _seconds(knob: str, native: int | None) -> float | None:
    if native is None:
        return None
    return native / _PER_SECOND[_caps()[knob].unit]


_PER_SECOND = {"s": 1.0, "ms": 1000.0}


# --------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------


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
        caps = _caps()
        return {knob: caps[knob].mechanism for knob in ("idle", "interval", "count") if knob in caps}

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
    enabled, idle, interval, count, _ = _impl.read(sock, _WANT_KEEPALIVE)
    caps = _caps()
    # a knob outside capabilities() may still read back (e.g. one the probe found refused)
    return KeepaliveState(
        bool(enabled),
        None if idle is None or "idle" not in caps else idle / _PER_SECOND[caps["idle"].unit],
        None if interval is None or "interval" not in caps else interval / _PER_SECOND[caps["interval"].unit],
        count if "count" in caps else None,
    )


def get_user_timeout(sock: SocketLike) -> float | None:
    """Read the user timeout in seconds: Linux ``TCP_USER_TIMEOUT`` (kernel unit ms).

    ``0.0`` means the system default (no per-socket timeout).  ``None`` where the
    platform cannot read it back.
    """
    if "user_timeout" not in _caps():
        _spec("user_timeout")
    return _seconds("user_timeout", _impl.read(sock, _WANT_USER_TIMEOUT)[4])


# --------------------------------------------------------------------------------------
# Setting
# --------------------------------------------------------------------------------------


def _plan(
    idle: object,
    interval: object,
    count: object,
    user_timeout: object,
    keepalive: int,
) -> tuple[int, int, int, int, int, int]:
    values = [0, 0, 0, 0]
    mask = 0
    for index, (name, value) in enumerate(
        (("idle", idle), ("interval", interval), ("count", count), ("user_timeout", user_timeout))
    ):
        if value is not None:
            values[index] = _native(name, value)
            mask |= 1 << index
    return (mask, values[0], values[1], values[2], values[3], keepalive)


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
    _impl.apply(sock, _plan(idle, interval, count, None, 1))


def disable_keepalive(sock: SocketLike) -> None:
    """Turn SO_KEEPALIVE off (the knobs keep their values for when it is turned on again)."""
    _impl.apply(sock, (0, 0, 0, 0, 0, 0))


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
    _impl.apply(sock, _plan(None, None, None, seconds, _KEEPALIVE_ONLY))


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
    for knob in ("idle", "interval", "count"):
        if values.get(knob) is None:
            values[knob] = getattr(fresh, knob)
    return KeepaliveState(
        enabled=fresh.enabled,
        idle=None if values["idle"] is None else float(values["idle"]),
        interval=None if values["interval"] is None else float(values["interval"]),
        count=values["count"],
    )


# --------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------

_SUFFIX_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _parse_duration(text: str, what: str, spec: str) -> int | float:
    """nginx-style duration (``30m``, ``1h30m``, ``90``, ``250ms``) in seconds."""
    if not text:
        raise ValueError(f"invalid keepalive spec {spec!r}: empty {what}")
    total_ms, pos = 0, 0
    while pos < len(text):
        end = pos
        while end < len(text) and "0" <= text[end] <= "9":
            end += 1
        digits = text[pos:end]
        suffix = text[end : end + 2] if text[end : end + 2] == "ms" else text[end : end + 1]
        if not digits or (suffix and suffix not in _SUFFIX_MS):
            raise ValueError(
                f"invalid keepalive spec {spec!r}: {what} {text!r} is not a duration "
                "(digits with an optional s, m, h, d or ms suffix, e.g. 30m or 1h30m)"
            )
        total_ms += int(digits) * _SUFFIX_MS[suffix or "s"]
        pos = end + len(suffix)
    seconds, ms = divmod(total_ms, 1000)
    return seconds if ms == 0 else total_ms / 1000


def _format_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    whole = ms // 1000
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{suffix}"
    return f"{whole}s"


class Policy:
    """A complete keepalive configuration, validated for this platform when it is made.

    ``idle``, ``interval`` and ``user_timeout`` are seconds (int, float or
    ``timedelta``; fractions round up to the platform's resolution), ``count`` is
    probes; ``None`` leaves a knob as it is.  ``keepalive=False`` is a policy that
    turns SO_KEEPALIVE off.  A policy is immutable and hashable; its attributes hold
    the values that will be applied, in seconds.
    """

    __slots__ = ("idle", "interval", "count", "user_timeout", "keepalive", "_plan")

    idle: float | None
    interval: float | None
    count: int | None
    user_timeout: float | None
    keepalive: bool
    _plan: tuple[int, int, int, int, int, int]

    def __init__(
        self,
        idle: Duration | None = None,
        interval: Duration | None = None,
        count: int | None = None,
        user_timeout: Duration | None = None,
        *,
        keepalive: bool = True,
    ) -> None:
        if not isinstance(keepalive, bool):
            raise TypeError(f"keepalive must be True or False, got {keepalive!r}")
        if not keepalive and (idle, interval, count) != (None, None, None):
            raise ValueError("a policy that turns keepalive off cannot also set idle, interval or count")
        plan = _plan(idle, interval, count, user_timeout, 1 if keepalive else 0)
        mask = plan[0]
        init = object.__setattr__
        init(self, "_plan", plan)
        init(self, "keepalive", keepalive)
        init(self, "idle", _seconds("idle", plan[1]) if mask & 1 else None)
        init(self, "interval", _seconds("interval", plan[2]) if mask & 2 else None)
        init(self, "count", plan[3] if mask & 4 else None)
        init(self, "user_timeout", _seconds("user_timeout", plan[4]) if mask & 8 else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable; make a new one (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Policy is immutable (cannot delete {name!r})")

    def _key(self) -> tuple[object, ...]:
        return (self.idle, self.interval, self.count, self.user_timeout, self.keepalive)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [
            f"{name}={getattr(self, name)!r}"
            for name in ("idle", "interval", "count", "user_timeout")
            if getattr(self, name) is not None
        ]
        if not self.keepalive:
            parts.append("keepalive=False")
        return f"Policy({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_policy_from_kwargs, (dict(zip(("idle", "interval", "count", "user_timeout", "keepalive"), self._key())),))

    if TYPE_CHECKING:

        def apply(self, sock: SocketLike) -> None:
            """Apply the whole policy to ``sock``, all or nothing."""

    else:
        #: Apply the whole policy to ``sock``, all or nothing.
        #:
        #: Order of calls: TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT
        #: (Linux names), then SO_KEEPALIVE.  Every value was range-checked when the
        #: policy was made and the first call is the one a closed fd or a non-TCP socket
        #: refuses, so a refusal leaves the socket as it was.  One C call: the hot path.
        apply = _impl.apply_policy

    # -- budgets ---------------------------------------------------------------------

    @classmethod
    def from_timeout(cls, seconds: Duration) -> Policy:
        """Split a dead-peer budget into idle, interval and count, and a user timeout.

        Chooses whole seconds with ``idle + interval * count <= seconds`` (about a
        quarter of the budget idle, then up to 10 probes), and sets the user timeout
        to exactly ``idle + interval * count`` so that unacknowledged data is given up
        on within the same budget (Linux: with TCP_USER_TIMEOUT set, the kernel drops
        a keepalive-probed connection once that much time has passed since the last
        data received).  Needs at least 2 s.
        """
        budget_ns = _duration_ns("timeout", seconds)
        if budget_ns < 2 * 10**9:
            raise ValueError(f"timeout={seconds!r} is too short: need at least 2 s (1 s idle + 1 probe of 1 s)")
        budget = budget_ns // 10**9  # whole seconds, rounded down: never exceed the budget
        caps = _caps()
        idle_max = caps["idle"].max if "idle" in caps else budget
        interval_max = caps["interval"].max if "interval" in caps else budget
        count_max = caps["count"].max if "count" in caps else 10
        idle = min(idle_max, max(1, budget // 4))
        rest = budget - idle  # >= 1
        count = min(10, count_max, rest)
        interval = min(interval_max, rest // count)  # >= 1, and interval * count <= rest
        user_timeout = None
        if "user_timeout" in caps:
            user_timeout = min(idle + interval * count, caps["user_timeout"].max // 1000)
        return cls(
            idle=idle if "idle" in caps else None,
            interval=interval if "interval" in caps else None,
            count=count if "count" in caps else None,
            user_timeout=user_timeout,
        )

    # -- nginx so_keepalive syntax -------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> Policy:
        """Parse nginx's ``so_keepalive`` syntax: ``on``, ``off`` or ``[idle]:[interval]:[count]``.

        Durations take ``s``, ``m``, ``h``, ``d`` (and ``ms``) suffixes and may be
        combined (``1h30m``); a bare number is seconds; an empty field leaves that
        knob as it is (``30m::10``) and trailing fields may be left out (``10:``
        sets only idle); as in nginx, a spec that sets nothing (``::``) is refused.
        kaext also reads a ``user_timeout=DURATION`` word after it
        (``30m::10 user_timeout=5m``), which ``str(policy)`` writes.
        """
        if not isinstance(spec, str):
            raise TypeError(f"spec must be a str, got {type(spec).__name__}")
        words = spec.split()
        if not words:
            raise ValueError(f"invalid keepalive spec {spec!r}: empty")
        head, extra = words[0], words[1:]
        user_timeout: int | float | None = None
        for word in extra:
            key, sep, val = word.partition("=")
            if key != "user_timeout" or not sep or user_timeout is not None:
                raise ValueError(f"invalid keepalive spec {spec!r}: unexpected {word!r}")
            user_timeout = _parse_duration(val, "user_timeout", spec)
        ut = user_timeout
        if head == "on":
            return cls(user_timeout=ut)
        if head == "off":
            return cls(keepalive=False, user_timeout=ut)
        fields = head.split(":")
        if len(fields) > 3 or not any(fields):
            raise ValueError(
                f"invalid keepalive spec {spec!r}: expected 'on', 'off' or [idle]:[interval]:[count]"
            )
        # like nginx, trailing fields may be left out: "10" and "10:" set only idle
        idle_s, interval_s, count_s = (*fields, "", "")[:3]
        idle = _parse_duration(idle_s, "idle", spec) if idle_s else None
        interval = _parse_duration(interval_s, "interval", spec) if interval_s else None
        if count_s and not (count_s.isascii() and count_s.isdigit()):
            raise ValueError(f"invalid keepalive spec {spec!r}: count {count_s!r} is not a whole number")
        count = int(count_s) if count_s else None
        return cls(idle=idle, interval=interval, count=count, user_timeout=ut)

    def __str__(self) -> str:
        if not self.keepalive:
            head = "off"
        elif (self.idle, self.interval, self.count) == (None, None, None):
            head = "on"
        else:
            head = ":".join(
                (
                    "" if self.idle is None else _format_duration(self.idle),
                    "" if self.interval is None else _format_duration(self.interval),
                    "" if self.count is None else str(self.count),
                )
            )
        if self.user_timeout is not None:
            head += f" user_timeout={_format_duration(self.user_timeout)}"
        return head

    # -- framework shapes ------------------------------------------------------------------

    @classmethod
    def for_idle_timeout(cls, seconds: Duration) -> Policy:
        """A policy whose probes keep a flow alive through a NAT / load balancer with this idle timeout.

        ``idle = T // 2``, ``interval = max(1, T // 10)``, ``count = 5`` (whole seconds,
        clamped to this platform's ranges), always ``idle + interval < T`` so that one
        lost probe is made good before the middlebox forgets the flow; a dead peer is
        declared after about ``T``.  See ``kaext.presets``.
        """
        from . import presets

        return presets.for_idle_timeout(seconds, cls)

    @classmethod
    def for_middlebox(cls, name: str) -> Policy:
        """``for_idle_timeout`` for a known middlebox's default idle timeout, e.g. ``"aws-nlb"`` (350 s).

        Names and sourced numbers: ``kaext.presets.MIDDLEBOXES``.
        """
        from . import presets

        return presets.for_middlebox(name, cls)


    def socket_options(self, base: Iterable[Sequence[Any]] = (), *, strict: bool = True) -> list[tuple[Any, ...]]:
        """The policy as ``(level, optname, value)`` tuples, for ``socket_options`` arguments.

        For urllib3 / requests (``HTTPConnection.default_socket_options``), httpx /
        httpcore (``HTTPTransport(socket_options=...)``), websocket-client
        (``sockopt=``), kafka-python (``socket_options=``).  ``base`` (e.g. urllib3's
        ``HTTPConnection.default_socket_options``, TCP_NODELAY) is kept, first, except
        entries for the same (level, optname), which this policy replaces.  The TCP-level
        options come first, ``(SOL_SOCKET, SO_KEEPALIVE, 1 or 0)`` last.  Values are in
        each option's OS unit (Linux: TCP_KEEPIDLE s, TCP_USER_TIMEOUT ms; macOS: idle
        as TCP_KEEPALIVE).

        A knob this platform cannot set with setsockopt (see ``Knob.mechanism``, e.g.
        an ioctl) raises ValueError; ``strict=False`` leaves it out with a
        RuntimeWarning instead.
        """
        from . import _shapes

        return _shapes.socket_options(self, base, strict)

    def tcp_options(self, base: Mapping[int, Any] | None = None, *, strict: bool = True) -> dict[int, Any]:
        """The TCP-level knobs as ``{optname: value}``, for redis-py and py-amqp / kombu.

        redis-py: ``Redis(socket_keepalive=True, socket_keepalive_options=...)`` (the
        dict is ignored unless ``socket_keepalive`` is true); py-amqp / kombu:
        ``socket_settings=`` / ``transport_options={"socket_settings": ...}`` (py-amqp
        turns SO_KEEPALIVE on itself).  SO_KEEPALIVE is not in the dict, so a policy
        with ``keepalive=False`` raises ValueError.  ``base`` (e.g. redis-py's
        ``get_default_socket_keepalive_options()``) is kept, with this policy's options
        replacing the same keys.  Values are in the OS unit; knobs that are not a
        plain setsockopt here raise ValueError (``strict=False``: RuntimeWarning and
        left out).
        """
        from . import _shapes

        return _shapes.tcp_options(self, base, strict)

    def named_options(self, base: Mapping[str, Any] | None = None, *, strict: bool = True) -> dict[str, Any]:
        """The knobs as ``{name: value}`` with portable names, for pika's ``tcp_options``.

        Names: ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL`` (s), ``TCP_KEEPCNT``,
        ``TCP_USER_TIMEOUT`` (ms) -- the keys pika accepts, which it looks up in
        Python's ``socket`` module.  A knob whose option Python's socket module does not
        offer under that name and unit (macOS: idle is TCP_KEEPALIVE, so pika cannot
        set it), a policy with ``keepalive=False``, and a policy that turns keepalive on
        without idle, interval or count (pika enables SO_KEEPALIVE only when a
        TCP_KEEP* key is present) raise ValueError (``strict=False``: RuntimeWarning
        and left out).
        """
        from . import _shapes

        return _shapes.named_options(self, base, strict)

    def libpq_params(self, *, strict: bool = True) -> dict[str, int]:
        """libpq keyword parameters, for psycopg, psycopg2, asyncpg-style DSNs and friends.

        ``keepalives`` (1 or 0) always; ``keepalives_idle``, ``keepalives_interval``
        (whole seconds, rounded up), ``keepalives_count`` and ``tcp_user_timeout`` (ms,
        PostgreSQL 12+) for the knobs the policy sets.  libpq maps them to each OS
        itself (Windows: SIO_KEEPALIVE_VALS); it sets ``tcp_user_timeout`` only with
        TCP_USER_TIMEOUT, so a user timeout on a platform that has another option
        raises ValueError (``strict=False``: RuntimeWarning and left out).  libpq
        ignores all of them on Unix-domain sockets.
        """
        from . import _shapes

        return _shapes.libpq_params(self, strict)

    def socket_factory(self) -> Callable[[Sequence[Any]], socket.socket]:
        """A callable ``factory(addr_info) -> socket`` that makes a socket with this policy applied.

        ``addr_info`` is a ``getaddrinfo()`` entry ``(family, type, proto, ...)``.  For
        aiohttp's ``TCPConnector(socket_factory=...)`` (aiohttp >= 3.12), and for
        asyncio: make the socket, ``setblocking(False)``, ``await
        loop.sock_connect(sock, addr)``, then ``loop.create_connection(..., sock=sock)``.
        Works for every knob this platform supports (it calls ``apply``).
        """
        from . import _shapes

        return _shapes.socket_factory(self)

def _use_implementation(module: Any) -> None:
    """Point the API at another implementation module (``kaext._kaext`` or ``kaext._pure``).

    For the test suite, which runs every test against both implementations.
    """
    global _impl, _CAPABILITIES
    _impl = module
    _CAPABILITIES = None
    type.__setattr__(Policy, "apply", module.apply_policy)


def _policy_from_kwargs(kwargs: dict[str, Any]) -> Policy:
    return Policy(**kwargs)
