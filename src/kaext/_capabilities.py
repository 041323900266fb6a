"""What this platform offers, and values in its units.

``capabilities()`` joins the backend's run-time probe (which mechanism sets each knob)
with ``_platform``'s description of that mechanism (option, unit, range); the
conversion functions turn seconds (int, float, Fraction, Decimal, ``timedelta``) into
that unit, rounding up, and build the plan both backends take.
"""

from __future__ import annotations

import math
import operator
import sys

from . import _backend, _platform
from ._backend import Plan
from ._errors import range_error, unsupported_error
from ._platform import (
    CONNECT_TIMEOUT,
    COUNT,
    IDLE,
    INTERVAL,
    KNOBS,
    MECH_SIO,
    SYN_UNIT,
    UNITS_PER_SECOND,
    USER_TIMEOUT,
    spec_for,
    syn_retries,
    syn_seconds,
)
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._platform import Mechanism

__all__ = ["Knob", "capabilities"]

_NS_PER_UNIT = {unit: 10**9 // per for unit, per in UNITS_PER_SECOND.items()}


class Knob(Record):
    """One keepalive knob as this platform implements it.

    ``option`` is the header name of the socket option (``"TCP_KEEPIDLE"``), ``level``
    and ``optname`` the numbers to pass to setsockopt, ``unit`` what the kernel takes
    (``"s"``, ``"ms"``, ``"ticks"`` -- NetBSD's slow ticks of 0.5 s --, ``"probes"``, or
    ``"syns"`` -- Linux's TCP_SYNCNT, SYN retransmissions, for ``connect_timeout``),
    ``min``/``max`` the range it accepts in that
    unit, ``readable`` whether getsockopt reads it back, ``mechanism`` the call kaext
    makes (``"setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)"``, or on Windows before 10 version
    1709 ``"WSAIoctl(SIO_KEEPALIVE_VALS)"``, where ``level`` is -1 and ``optname`` the
    ioctl code; a ``str`` whose ``is_setsockopt`` tells the two apart), and ``note`` what
    else to know (empty when nothing).
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
    mechanism: Mechanism
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
        mechanism: Mechanism,
        note: str = "",
    ) -> None:
        self._init(option, level, optname, unit, min, max, readable, mechanism, note)

    @property
    def per_second(self) -> int | None:
        """How many of ``unit`` make one second: 1 (s), 1000 (ms), 2 (NetBSD's ticks);
        None for a count of probes or of SYN retransmissions.  Not a field: it follows from ``unit``."""
        return UNITS_PER_SECOND.get(self.unit)

    def __repr__(self) -> str:
        # the fields, then per_second: how a reader turns min and max into seconds
        return f"{super().__repr__()[:-1]}, per_second={self.per_second!r})"


def _build_capabilities() -> dict[str, Knob]:
    """Knobs as the running system sets them: the backend probes each once (``mechanism``),
    ``_platform`` describes that mechanism (unit, range, read-back)."""
    knobs: dict[str, Knob] = {}
    for index, name in enumerate(KNOBS):
        entry = _backend.KNOB_OPTIONS[index]
        if entry is None:
            continue
        option, level, optname = entry
        spec = spec_for(name, option, _backend.mechanism(index))
        if spec is None:
            continue
        if spec.mechanism == MECH_SIO:
            option, level, optname = spec.option, -1, _backend.CONSTANTS["SIO_KEEPALIVE_VALS"]
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


def caps() -> dict[str, Knob]:
    """The capabilities, built once (not a copy: callers must not change it)."""
    global _CAPABILITIES
    if _CAPABILITIES is None:
        _CAPABILITIES = _build_capabilities()
    return _CAPABILITIES


def capabilities() -> dict[str, Knob]:
    """The knobs this system supports, by name: ``idle``, ``interval``, ``count``, ``user_timeout``,
    ``connect_timeout``.

    A knob is listed only when the headers define its option and the running kernel
    accepted it in a one-time probe on a throwaway socket.  Each :class:`Knob` gives the
    option, the numbers for setsockopt, the unit the kernel takes, the range kaext
    accepts in that unit and the call kaext makes (``mechanism``).

    What each OS offers (options, units and ranges of every OS: the platforms page of
    the documentation, docs/platforms.md):

    * Linux, macOS / iOS, FreeBSD, Windows: all four (the user timeout as
      ``TCP_USER_TIMEOUT``, ``TCP_RXT_CONNDROPTIME``, ``TCP_MAXUNACKTIME``, ``TCP_MAXRT``).
    * NetBSD: idle and interval in ``"ticks"`` (slow ticks of 0.5 s), ``readable`` False
      for all three; no ``user_timeout``.
    * DragonFly, illumos / Solaris: no ``user_timeout``.
    * Older Windows: idle and interval as ``WSAIoctl(SIO_KEEPALIVE_VALS)`` (ms,
      ``readable`` False, ``level`` -1, ``optname`` the ioctl code); count only where the
      kernel has ``TCP_KEEPCNT``.
    * A probe that fails with anything but ENOPROTOOPT does not remove a knob: the
      headers decide (Windows: the build number, as Go does).
    * ``connect_timeout``, the bound on connection establishment: Linux ``TCP_SYNCNT`` (unit
      ``"syns"``, SYN retransmissions), macOS ``TCP_CONNECTIONTIMEOUT`` (s), FreeBSD, NetBSD
      and DragonFly ``TCP_KEEPINIT``, illumos ``TCP_CONN_ABORT_THRESHOLD`` (ms, C extension
      only); not on Windows.
    * OpenBSD: empty.
    """
    return dict(caps())


def read_back_knobs() -> tuple[Knob | None, ...]:
    """Per knob (``KNOBS`` order), what the backends need to read it back into the public
    types: its capability (unit, range), or None for a knob ``capabilities()`` does not
    list (it reads back as None)."""
    known = caps()
    return tuple(known.get(name) for name in KNOBS)


def knob(name: str) -> Knob:
    """The capability of ``name``; OSError ENOPROTOOPT, with the reason, where there is none."""
    spec = caps().get(name)
    if spec is None:
        raise unsupported_error(name)
    return spec


# --------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------


def duration_ns(knob: str, value: object) -> int:
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
        num, den = float.as_integer_ratio(value)  # the float's own: a subclass may override it
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
                num, den = decimal.Decimal.as_integer_ratio(value)
        elif _is_real(value):  # Fraction, NumPy floats, other numbers.Real
            ratio = getattr(value, "as_integer_ratio", None)
            if ratio is None:
                number = float(value)  # type: ignore[arg-type]
                if not math.isfinite(number):
                    raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}")
                ratio = number.as_integer_ratio
            try:
                pair = ratio()
            except (OverflowError, ValueError):  # NaN or infinity of another float type
                raise ValueError(f"{knob} must be a finite number of seconds, got {value!r}") from None
            # another type's answer: two ints, the denominator positive (else no number at all)
            if not (type(pair) is tuple and len(pair) == 2 and all(type(n) is int for n in pair) and pair[1] > 0):
                raise ValueError(
                    f"{knob} must be a number of seconds, got {value!r}, whose as_integer_ratio() "
                    f"returned {pair!r} (not a ratio of two ints with a positive denominator)"
                )
            num, den = pair
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
        f"{knob} must be seconds as int, float or datetime.timedelta, got {type(value).__name__} {value!r}"
    )


def _is_real(value: object) -> bool:
    import numbers

    return isinstance(value, numbers.Real)


def native(name: str, value: object) -> int:
    """Validate ``value`` for knob ``name`` and convert it to the OS unit, rounding up."""
    spec = knob(name)
    if spec.unit == "probes":
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"{name} must be an int number of probes, got {type(value).__name__} {value!r}")
        n = operator.index(value)  # type: ignore[call-overload, unused-ignore]
        if n < spec.min or n > spec.max:
            raise range_error(name, value, spec)
        return n
    try:
        ns = duration_ns(name, value)
    except ValueError:
        raise range_error(name, value, spec, "not a finite number") from None
    if ns < 0 or (ns == 0 and spec.min > 0):
        raise range_error(name, value, spec, "must be positive" if spec.min > 0 else "negative")
    if spec.unit == SYN_UNIT:
        # rounded down: the most SYN retransmissions whose give-up time is within the value
        n = syn_retries(ns / 10**9)
        if n < spec.min or ns > syn_seconds(spec.max) * 10**9:
            raise range_error(name, value, spec)
        return n
    per = _NS_PER_UNIT[spec.unit]
    n = -(-ns // per)  # round up: a timer never fires earlier than asked
    if n < spec.min or n > spec.max:
        raise range_error(name, value, spec)
    return n


def in_seconds(name: str, value: int | None) -> float | None:
    """A value of knob ``name`` in its OS unit, as seconds (None stays None)."""
    if value is None:
        return None
    unit = caps()[name].unit
    if unit == SYN_UNIT:
        return float(syn_seconds(value))
    return value / UNITS_PER_SECOND[unit]


def whole_seconds(spec: Knob) -> tuple[int, int]:
    """A time knob's range in whole seconds: (min rounded up, at least 1; max rounded down)."""
    if spec.unit == SYN_UNIT:
        return syn_seconds(spec.min), syn_seconds(spec.max)
    per = UNITS_PER_SECOND[spec.unit]
    return max(1, -(-spec.min // per)), spec.max // per


def _check_total(values: list[int], mask: int) -> None:
    """Refuse idle + interval * count past what this OS keeps without wrapping (macOS: 32-bit ms).

    Only the knobs the plan sets count (the socket's own values are not known here): the
    product needs both interval and count.
    """
    limit_ms = _platform.KEEPALIVE_TOTAL_MAX_MS.get(_platform.FAMILY)
    if limit_ms is None or not mask & 0b111:
        return
    known = caps()
    parts: dict[str, float] = {}
    for index, name in enumerate(("idle", "interval", "count")):
        if mask & (1 << index):
            parts[name] = values[index] if name == "count" else values[index] / UNITS_PER_SECOND[known[name].unit]
    total = parts.get("idle", 0) + parts.get("interval", 0) * parts.get("count", 0)
    if total * 1000 > limit_ms:
        given = ", ".join(f"{name}={_plain(value)}" for name, value in parts.items())
        kept = "32-bit milliseconds" if limit_ms == 2**32 - 1 else "a signed 32-bit count of kernel ticks"
        raise ValueError(
            f"idle + interval * count = {_plain(total)} s is out of range ({given}): this platform "
            f"keeps it in {kept}, at most {_plain(limit_ms / 1000)} s "
            f"(about {limit_ms / 86_400_000:.1f} days), and would wrap"
        )


def check_total_on(sock: object, plan: Plan) -> None:
    """Where the kernel sums idle + interval * count in 32 bits (``KEEPALIVE_TOTAL_MAX_MS``:
    macOS, FreeBSD, DragonFly): a plan that sets only some of the three counts the socket's current
    values for the others (one read of those), so ``set_keepalive(s, idle=...)`` cannot
    wrap the sum either.  ValueError before anything is written."""
    limit_ms = _platform.KEEPALIVE_TOTAL_MAX_MS.get(_platform.FAMILY)
    mask = plan.set_mask & 0b111
    if limit_ms is None or not mask or mask == 0b111:
        return
    current = _backend.read(sock, 0b111 & ~mask)
    values = [plan.idle, plan.interval, plan.count, plan.user_timeout, plan.connect_timeout]
    for k in range(3):
        if not mask & (1 << k):
            value = current[1 + k]
            if value is None:  # not readable here: nothing to add
                return
            values[k] = value
    _check_total(values, 0b111)


def rollback_bits(mask: int) -> int:
    """The set_mask bits asking the backend to read, and put back on a later refusal, the
    readable knobs written before the last one this OS's kernel may refuse although
    kaext's table allows the value (``_platform.KERNEL_MAY_REFUSE``).

    Write order: the setsockopt knobs by index, then Windows' SIO_KEEPALIVE_VALS.
    """
    refusable = _platform.KERNEL_MAY_REFUSE.get(_platform.FAMILY, ())
    known = caps()
    given = [k for k in range(len(KNOBS)) if mask & (1 << k) and KNOBS[k] in known]
    order = [k for k in given if known[KNOBS[k]].mechanism.is_setsockopt]
    order += [k for k in given if not known[KNOBS[k]].mechanism.is_setsockopt]
    last = max((i for i, k in enumerate(order) if KNOBS[k] in refusable), default=0)
    bits = 0
    for k in order[:last]:
        spec = known[KNOBS[k]]
        if spec.readable and spec.mechanism.is_setsockopt:
            bits |= 1 << k
    return bits << _platform.ROLLBACK_SHIFT


def max_keepalive_total() -> int | None:
    """The largest idle + interval * count in whole seconds this OS keeps without wrapping (None: no limit)."""
    limit_ms = _platform.KEEPALIVE_TOTAL_MAX_MS.get(_platform.FAMILY)
    return None if limit_ms is None else limit_ms // 1000


def _plain(seconds: float) -> str:
    """3600 -> "3600", 4294967.295 -> "4294967.295" (no exponent)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------

#: ``keepalive`` of a plan that leaves SO_KEEPALIVE as it is.
KEEPALIVE_LEAVE = -1


def make_plan(
    idle: object,
    interval: object,
    count: object,
    user_timeout: object,
    keepalive: int,
    connect_timeout: object = None,
) -> Plan:
    """The backend's plan: the knobs given (not None), each validated and in its OS unit."""
    mask = 0
    n_idle = n_interval = n_count = n_user_timeout = n_connect_timeout = 0
    if idle is not None:
        n_idle = native("idle", idle)
        mask |= 1 << IDLE
    if interval is not None:
        n_interval = native("interval", interval)
        mask |= 1 << INTERVAL
    if count is not None:
        n_count = native("count", count)
        mask |= 1 << COUNT
    if user_timeout is not None:
        n_user_timeout = native("user_timeout", user_timeout)
        mask |= 1 << USER_TIMEOUT
    if connect_timeout is not None:
        n_connect_timeout = native("connect_timeout", connect_timeout)
        mask |= 1 << CONNECT_TIMEOUT
    _check_total([n_idle, n_interval, n_count, n_user_timeout], mask)
    if _platform.FAMILY in _platform.KERNEL_MAY_REFUSE:
        mask |= rollback_bits(mask)
    return Plan(mask, n_idle, n_interval, n_count, n_user_timeout, keepalive, n_connect_timeout)
