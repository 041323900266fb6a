"""``Policy``: a complete keepalive configuration, validated once, applied in one call.

Also the budget arithmetic (``from_timeout``, ``for_idle_timeout``) and nginx's
``so_keepalive`` syntax (``parse`` and ``str()``).  The framework shapes
(``socket_options()`` ...) are built by ``_shapes`` from the policy's plan.
"""

from __future__ import annotations

import errno
import math
import os
import sys

from . import _backend, _platform
from ._backend import Plan
from ._capabilities import (
    caps,
    check_total_on,
    duration_ns,
    in_seconds,
    make_plan,
    max_keepalive_total,
    read_back_knobs,
    whole_seconds,
)
from ._functions import warn_if_not_inherited
from ._platform import CONNECT_TIMEOUT, COUNT, IDLE, INTERVAL, USER_TIMEOUT

_CHECK_TOTAL = _platform.FAMILY in _platform.KEEPALIVE_TOTAL_MAX_MS
_WARN_INHERIT = _platform.FAMILY in _platform.NOT_INHERITED_BY_ACCEPT

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, TypeVar

    from ._types import Duration, SocketLike

    _P = TypeVar("_P", bound="Policy")

__all__ = ["Policy"]

#: Probes sent before the peer is declared dead (``count``) in ``for_idle_timeout``.
PROBES = 5

#: This package's directory: a warning names the first line outside it.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

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


def format_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    whole = ms // 1000
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{suffix}"
    return f"{whole}s"


def _warn_if_user_timeout_cuts_probing(user_timeout: float, schedule: float, count: int) -> None:
    """RuntimeWarning when a TCP_USER_TIMEOUT ends keepalive probing before its last probe.

    Linux drops a connection whose keepalive probes are unanswered once the user
    timeout has passed since data was last received (net/ipv4/tcp_timer.c,
    tcp_keepalive_timer), so a shorter user timeout silently replaces the probe count.
    """
    knob = caps().get("user_timeout")
    if knob is None or knob.option != "TCP_USER_TIMEOUT" or user_timeout >= schedule:
        return
    import warnings

    # point at the caller's line, whichever constructor (``Policy()``, ``parse``, ...) it used
    frame, stacklevel = sys._getframe(), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(
        f"user_timeout={user_timeout:g} s is shorter than idle + interval*count = {schedule:g} s: "
        f"TCP_USER_TIMEOUT drops a probed connection once {user_timeout:g} s have passed since data was "
        f"last received, before keepalive has sent its {count} probe{'' if count == 1 else 's'}; "
        f"use user_timeout >= {schedule:g} s "
        "(Policy.from_timeout picks agreeing values)",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


class Policy:
    """A complete keepalive configuration, validated for this platform when it is made.

    ``idle``, ``interval`` and ``user_timeout`` are seconds (int, float, ``Fraction``,
    ``Decimal`` or ``timedelta``), rounded **up** to each option's unit on this platform
    (1 s, or 1 ms where the option takes milliseconds); ``count`` is probes; ``None``
    leaves a knob as it is.  ``keepalive=False`` is a policy that turns SO_KEEPALIVE off.
    Values are never clamped: one outside this platform's range (see
    ``kaext.capabilities()``), or a knob the platform lacks, raises here, not at
    ``apply``.  A policy is immutable and hashable; its attributes hold the values that
    will be applied, in seconds.

    The options per platform are those of ``set_keepalive`` and ``set_user_timeout``
    (every OS's options, units and ranges: the platforms page of the documentation,
    docs/platforms.md); NetBSD, DragonFly and illumos / Solaris have no user timeout;
    OpenBSD: only ``Policy()`` and ``Policy(keepalive=False)``.

    ``connect_timeout`` (seconds, keyword only) bounds connection establishment: applied
    before ``connect()``, a connect to a host that never answers fails within it
    (ETIMEDOUT).  The option per OS (``capabilities()["connect_timeout"]``): Linux
    ``TCP_SYNCNT`` -- SYN retransmissions, so the value is rounded *down* to the
    nearest give-up time 3, 7, 15, 31, 63, 127 s (then 120 s more each; at least 3 s) --,
    macOS ``TCP_CONNECTIONTIMEOUT``, FreeBSD / NetBSD / DragonFly ``TCP_KEEPINIT``,
    illumos ``TCP_CONN_ABORT_THRESHOLD``; none on Windows.  ``Policy.from_timeout`` sets it.
    It bounds a connect only when it is on the socket before the SYN (``apply`` before
    ``connect()``, ``kaext.inject``, the preload library, ``kaext.enforce``); applied after the connection
    is established it changes nothing for that connection.
    """

    __slots__ = ("idle", "interval", "count", "user_timeout", "connect_timeout", "keepalive", "_plan")

    idle: float | None
    interval: float | None
    count: int | None
    user_timeout: float | None
    connect_timeout: float | None
    keepalive: bool
    _plan: Plan

    def __init__(
        self,
        idle: Duration | None = None,
        interval: Duration | None = None,
        count: int | None = None,
        user_timeout: Duration | None = None,
        *,
        keepalive: bool = True,
        connect_timeout: Duration | None = None,
    ) -> None:
        if not isinstance(keepalive, bool):
            raise TypeError(f"keepalive must be True or False, got {keepalive!r}")
        if not keepalive and (idle, interval, count) != (None, None, None):
            raise ValueError("a policy that turns keepalive off cannot also set idle, interval or count")
        plan = make_plan(idle, interval, count, user_timeout, 1 if keepalive else 0, connect_timeout)
        mask = plan.set_mask
        init = object.__setattr__
        init(self, "_plan", plan)
        init(self, "keepalive", keepalive)
        init(self, "idle", in_seconds("idle", plan.idle) if mask & (1 << IDLE) else None)
        init(self, "interval", in_seconds("interval", plan.interval) if mask & (1 << INTERVAL) else None)
        init(self, "count", plan.count if mask & (1 << COUNT) else None)
        user_timeout_s = in_seconds("user_timeout", plan.user_timeout) if mask & (1 << USER_TIMEOUT) else None
        init(self, "user_timeout", user_timeout_s)
        connect_s = in_seconds("connect_timeout", plan.connect_timeout) if mask & (1 << CONNECT_TIMEOUT) else None
        init(self, "connect_timeout", connect_s)
        if self.user_timeout and self.idle and self.interval and self.count:
            _warn_if_user_timeout_cuts_probing(self.user_timeout, self.idle + self.interval * self.count, self.count)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable; make a new one (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Policy is immutable (cannot delete {name!r})")

    def _key(self) -> tuple[object, ...]:
        return (self.idle, self.interval, self.count, self.user_timeout, self.keepalive, self.connect_timeout)

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
        if self.connect_timeout is not None:
            parts.append(f"connect_timeout={self.connect_timeout!r}")
        return f"Policy({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        names = ("idle", "interval", "count", "user_timeout", "keepalive", "connect_timeout")
        kwargs = dict(zip(names, self._key(), strict=True))
        if kwargs["connect_timeout"] is None:
            del kwargs["connect_timeout"]  # unpickles on a kaext that has no connect_timeout
        return (_policy_from_kwargs, (kwargs,))

    if TYPE_CHECKING:

        def apply(self, sock: SocketLike) -> None: ...

        @classmethod
        def from_socket(cls: type[_P], sock: SocketLike) -> _P: ...

    else:
        # The backend's functions themselves: one call into the C extension per apply or
        # read-back, the hot paths; they carry the user documentation (_APPLY_DOC,
        # _FROM_SOCKET_DOC below), so help() shows it.  macOS: a Python wrapper that warns
        # when the socket is listening (accepted sockets do not inherit idle/user timeout).
        # macOS, FreeBSD: a policy setting only some of idle/interval/count counts the
        # socket's current ones in the 32-bit sum (check_total_on).
        if _CHECK_TOTAL or _WARN_INHERIT:

            def apply(self, sock):
                if _CHECK_TOTAL:
                    check_total_on(sock, self._plan)
                _backend.apply_policy(self, sock)
                if _WARN_INHERIT:
                    warn_if_not_inherited(sock, self._plan.set_mask)

        else:
            apply = _backend.apply_policy
        from_socket = classmethod(_backend.read_policy)

    def applied_to(self, sock: SocketLike) -> bool:
        """Is this policy in force on ``sock``?  Reads; changes nothing.

        ``sock`` is a socket, anything with ``fileno()``, or an int fd.  Reads SO_KEEPALIVE
        and each knob the policy sets, with one ``getsockopt`` of the option ``apply``
        writes (``capabilities()`` names them: e.g. ``TCP_KEEPIDLE`` and ``TCP_KEEPINTVL``
        in s, ``TCP_KEEPCNT`` in probes, ``TCP_USER_TIMEOUT`` in ms), and compares each in
        that option's own unit with the value ``apply`` writes (the policy's seconds
        rounded up to the unit): True when SO_KEEPALIVE is on (off for
        ``keepalive=False``) and every knob the policy sets holds its value.  Knobs the
        policy leaves alone are not compared, so ``Policy(idle=60).applied_to(s)`` is
        True after ``Policy(idle=60).apply(s)`` whatever interval and count ``s`` has
        (``Policy.from_socket(s) == policy`` compares every knob).

        A knob the policy sets that this platform cannot read back (``Knob.readable``
        False: Windows' ``SIO_KEEPALIVE_VALS``) raises OSError ENOPROTOOPT: whether it
        is in force cannot be told.  Otherwise raises what ``get_keepalive`` raises (OSError
        EBADF for a closed socket, the kernel's errno for one that is not TCP, TypeError
        for an object without ``fileno()``).
        """
        plan = self._plan
        knobs = plan.set_mask & ((1 << len(_platform.KNOBS)) - 1)
        for k, (name, knob) in enumerate(zip(_platform.KNOBS, read_back_knobs(), strict=True)):
            if knobs & (1 << k) and (knob is None or not knob.readable):
                raise OSError(
                    errno.ENOPROTOOPT,
                    f"{name} cannot be read back on this platform, so whether the policy is in force cannot be told",
                )
        held = _backend.read(sock, knobs | _platform.WANT_KEEPALIVE)
        if (held[0] != 0) != (plan.keepalive != 0):  # BSDs read the option's flag bit: any non-zero is on
            return False
        wanted = (plan.idle, plan.interval, plan.count, plan.user_timeout, plan.connect_timeout)
        return all(held[1 + k] == wanted[k] for k in range(len(wanted)) if knobs & (1 << k))

    # -- budgets ---------------------------------------------------------------------

    @classmethod
    def from_timeout(cls, seconds: Duration) -> Policy:
        """Split a dead-peer budget into idle, interval and count, and a user timeout.

        Chooses whole seconds with ``idle + interval * count <= seconds`` (about a
        quarter of the budget idle, then up to 10 probes), and sets the user timeout
        to exactly ``idle + interval * count`` so that unacknowledged data is given up
        on within the same budget (Linux: with TCP_USER_TIMEOUT set, the kernel drops
        a keepalive-probed connection once that much time has passed since the last
        data received).  Needs at least 2 s; the budget is rounded down to whole seconds.

        ``connect_timeout`` is set to the budget too, where the platform has the knob
        (``capabilities()``), so that a connect made after ``apply`` (a reconnect to a
        host that vanished) ends within it.  Linux counts it in SYN retransmissions: the
        largest whose give-up time is within the budget (3 s for a budget of 3 to 6 s, 7 s
        for 7 to 14 s, ...; 3 s for a budget of 2 s); the user timeout, set before the SYN
        too, ends the connect at ``idle + interval * count`` <= the budget in any case.

        Each value is clamped to this platform's range (``kaext.capabilities()``): the
        user timeout to the option's maximum (Linux ``TCP_USER_TIMEOUT`` ms, macOS
        ``TCP_RXT_CONNDROPTIME`` s, Windows ``TCP_MAXRT`` s).  A knob the platform lacks is
        left out: no user timeout on NetBSD, DragonFly, illumos / Solaris (FreeBSD's is
        ``TCP_MAXUNACKTIME``, s); no count on Windows before 10 1703, whose kernel sends 10
        probes, fixed: the interval is then the rest of the budget over those 10 (in ms,
        ``SIO_KEEPALIVE_VALS``); nothing on OpenBSD (``Policy()``).
        """
        budget_ns = duration_ns("timeout", seconds)
        if budget_ns < 2 * 10**9:
            raise ValueError(f"timeout={seconds!r} is too short: need at least 2 s (1 s idle + 1 probe of 1 s)")
        budget = budget_ns // 10**9  # whole seconds, rounded down: never exceed the budget
        total_max = max_keepalive_total()  # macOS: 32-bit ms
        if total_max is not None:
            budget = min(budget, total_max)
        known = caps()
        # each knob's range in whole seconds, from its own unit (s, ms, NetBSD's slow ticks)
        idle_min, idle_max = whole_seconds(known["idle"]) if "idle" in known else (1, budget)
        interval_min, interval_max = whole_seconds(known["interval"]) if "interval" in known else (1, budget)
        count_max = known["count"].max if "count" in known else 10
        idle = min(idle_max, max(idle_min, budget // 4))
        rest = budget - idle
        if rest < interval_min:
            raise ValueError(
                f"timeout={seconds!r} is too short for this platform: idle at least {idle_min} s "
                f"and one probe of at least {interval_min} s"
            )
        fixed = None if "count" in known else _platform.FIXED_PROBE_COUNT.get(_platform.FAMILY)
        interval: int | float
        if fixed is not None and "interval" in known:
            # the kernel's own count (Windows before 1703: 10): the interval in the option's
            # unit, rounded down, so that interval * fixed <= rest
            spec = known["interval"]
            per = _platform.UNITS_PER_SECOND[spec.unit]
            units = min(spec.max, rest * per // fixed)
            if units < spec.min:
                raise ValueError(
                    f"timeout={seconds!r} is too short for this platform: idle at least {idle_min} s "
                    f"and {fixed} probes (a fixed count here) of at least {spec.min / per} s"
                )
            interval = units // per if units % per == 0 else units / per
            count = fixed
        else:
            count = min(10, count_max, rest // interval_min)
            interval = min(interval_max, max(interval_min, rest // count))  # interval * count <= rest
        user_timeout = None
        if "user_timeout" in known:
            user_timeout = min(math.floor(idle + interval * count), whole_seconds(known["user_timeout"])[1])
        connect_timeout = None
        if "connect_timeout" in known:
            connect_min, connect_max = whole_seconds(known["connect_timeout"])
            connect_timeout = min(connect_max, max(connect_min, budget))
        return cls(
            idle=idle if "idle" in known else None,
            interval=interval if "interval" in known else None,
            count=count if "count" in known else None,
            user_timeout=user_timeout,
            connect_timeout=connect_timeout,
        )

    # -- nginx so_keepalive syntax -------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> Policy:
        """Parse nginx's ``so_keepalive`` syntax: ``on``, ``off`` or ``[idle]:[interval]:[count]``, or a middlebox name.

        Durations take ``s``, ``m``, ``h``, ``d`` (and ``ms``) suffixes and may be
        combined (``1h30m``); a bare number is seconds; an empty field leaves that
        knob as it is (``30m::10``) and trailing fields may be left out (``10:``
        sets only idle); as in nginx, a spec that sets nothing (``::``) is refused.
        kaext also reads ``user_timeout=DURATION`` and ``connect_timeout=DURATION`` words
        after it (``30m::10 user_timeout=5m connect_timeout=5s``), which ``str(policy)`` writes;
        without the keepalive part they follow ``on`` (``connect_timeout=5s`` is
        ``on connect_timeout=5s``).

        A spec that is a middlebox name from ``kaext.presets.MIDDLEBOXES``, in any case
        (``"aws-nlb"``, ``"AWS-NLB"``), is ``Policy.for_middlebox(spec)``.
        """
        if not isinstance(spec, str):
            raise TypeError(f"spec must be a str, got {type(spec).__name__}")
        words = spec.split()
        if not words:
            raise ValueError(f"invalid keepalive spec {spec!r}: empty")
        head, extra = words[0], words[1:]
        if "=" in head:  # only the words: keepalive "on"
            head, extra = "on", words
        if not extra and head not in ("on", "off") and ":" not in head and not head[:1].isdigit():
            from ._middleboxes import lookup, names  # dataclasses: imported only when asked

            box = lookup(head)
            if box is not None:
                return for_idle_timeout(box.idle_timeout, cls)
            raise ValueError(
                f"invalid keepalive spec {spec!r}: expected 'on', 'off', [idle]:[interval]:[count] "
                f"or a middlebox name ({names()})"
            )
        words_given: dict[str, int | float] = {}
        for word in extra:
            key, sep, val = word.partition("=")
            if key not in ("user_timeout", "connect_timeout") or not sep or key in words_given:
                raise ValueError(f"invalid keepalive spec {spec!r}: unexpected {word!r}")
            words_given[key] = _parse_duration(val, key, spec)
        ut = words_given.get("user_timeout")
        ct = words_given.get("connect_timeout")
        if head == "on":
            return cls(user_timeout=ut, connect_timeout=ct)
        if head == "off":
            return cls(keepalive=False, user_timeout=ut, connect_timeout=ct)
        fields = head.split(":")
        if len(fields) > 3 or not any(fields):
            raise ValueError(f"invalid keepalive spec {spec!r}: expected 'on', 'off' or [idle]:[interval]:[count]")
        # like nginx, trailing fields may be left out: "10" and "10:" set only idle
        idle_s, interval_s, count_s = (*fields, "", "")[:3]
        idle = _parse_duration(idle_s, "idle", spec) if idle_s else None
        interval = _parse_duration(interval_s, "interval", spec) if interval_s else None
        if count_s and not (count_s.isascii() and count_s.isdigit()):
            raise ValueError(f"invalid keepalive spec {spec!r}: count {count_s!r} is not a whole number")
        count = int(count_s) if count_s else None
        return cls(idle=idle, interval=interval, count=count, user_timeout=ut, connect_timeout=ct)

    def __str__(self) -> str:
        """The policy in nginx's ``so_keepalive`` syntax, which ``Policy.parse`` reads back.

        ``on`` / ``off`` / ``[idle]:[interval]:[count]`` with the shortest whole unit
        (``30m``, ``90s``, ``1500ms``), then ``user_timeout=DURATION`` and
        ``connect_timeout=DURATION`` when set.
        """
        if not self.keepalive:
            head = "off"
        elif (self.idle, self.interval, self.count) == (None, None, None):
            head = "on"
        else:
            head = ":".join(
                (
                    "" if self.idle is None else format_duration(self.idle),
                    "" if self.interval is None else format_duration(self.interval),
                    "" if self.count is None else str(self.count),
                )
            )
        if self.user_timeout is not None:
            head += f" user_timeout={format_duration(self.user_timeout)}"
        if self.connect_timeout is not None:
            head += f" connect_timeout={format_duration(self.connect_timeout)}"
        return head

    # -- framework shapes ------------------------------------------------------------------

    @classmethod
    def for_idle_timeout(cls, seconds: Duration) -> Policy:
        """A policy whose probes keep a flow alive through a NAT / load balancer with this idle timeout.

        With ``T`` the timeout in whole seconds (rounded down): ``idle = T // 2``,
        ``interval = max(1, T // 10)``, ``count = 5`` (fewer when ``T`` is under 10 s, so
        that ``idle + interval * count <= T``), each clamped to this platform's range
        (``kaext.capabilities()``; an idle option in ms is used in whole seconds), and
        always ``idle + interval < T``, so that one lost probe is made good before the
        middlebox forgets the flow; a dead peer is declared after about ``T``.  The user
        timeout is left as it is.  Needs ``T >= 3``.  Where the platform has no idle knob
        (OpenBSD) it raises OSError ENOPROTOOPT; without interval or count (Solaris
        before 11.4, Windows before 10 1703) those are left out.  See ``kaext.presets``.
        """
        return for_idle_timeout(seconds, cls)

    @classmethod
    def for_middlebox(cls, name: str) -> Policy:
        """``for_idle_timeout`` for a known middlebox's default idle timeout, e.g. ``"aws-nlb"`` (350 s).

        Names (in any case: ``"AWS-NLB"`` too) and sourced numbers: ``kaext.presets.MIDDLEBOXES``.
        """
        return for_middlebox(name, cls)

    def socket_options(self, base: Iterable[Sequence[Any]] = (), *, strict: bool = True) -> list[tuple[Any, ...]]:
        """The policy as ``(level, optname, value)`` tuples, for ``socket_options`` arguments.

        For urllib3 / requests (``HTTPConnection.default_socket_options``), httpx /
        httpcore (``HTTPTransport(socket_options=...)``), websocket-client
        (``sockopt=``), kafka-python (``socket_options=``).  ``base`` (e.g. urllib3's
        ``HTTPConnection.default_socket_options``, TCP_NODELAY) is kept, first, except
        entries for the same (level, optname), which this policy replaces.  The TCP-level
        options come first, ``(SOL_SOCKET, SO_KEEPALIVE, 1 or 0)`` last.  Values are in
        each option's OS unit (Linux: TCP_KEEPIDLE s, TCP_USER_TIMEOUT ms, TCP_SYNCNT
        for ``connect_timeout``; macOS: idle as TCP_KEEPALIVE).  The connect timeout
        bounds the connect only where the library sets the options before connecting
        (urllib3 / requests, websocket-client and kafka-python do; httpcore sets them
        after ``create_connection``).

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
        left out).  redis-py sets these options before it connects, so the policy's
        ``connect_timeout`` (Linux ``TCP_SYNCNT``) bounds its connects and reconnects;
        py-amqp sets them after connecting, where it changes nothing for that connect.

        The user timeout is always in the dict where it is a plain socket option whose
        range starts at 0, "the system default" (Linux ``TCP_USER_TIMEOUT``, ms): the
        policy's value, or 0 when the policy sets none (unless ``base`` has the key).
        py-amqp otherwise keeps its own ``TCP_USER_TIMEOUT=1000`` ms.
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
        and left out).  ``connect_timeout`` is not in this shape (pika takes none of the
        connect-timeout options; its own ``socket_timeout`` bounds its connect).
        """
        from . import _shapes

        return _shapes.named_options(self, base, strict)

    def libpq_params(self, *, strict: bool = True) -> dict[str, int]:
        """libpq keyword parameters, for psycopg, psycopg2, asyncpg-style DSNs and friends.

        ``keepalives`` (1 or 0) always; ``keepalives_idle``, ``keepalives_interval``
        (whole seconds, rounded up), ``keepalives_count`` and ``tcp_user_timeout`` (ms,
        PostgreSQL 12+) for the knobs the policy sets, and ``connect_timeout`` (libpq's own
        bound on each connection attempt: whole seconds, rounded down, at least 2).  libpq maps them to each OS
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


def for_idle_timeout(seconds: Duration, policy_class: type[_P]) -> _P:
    """``Policy.for_idle_timeout`` (see there), made with ``policy_class``."""
    timeout_ns = duration_ns("idle_timeout", seconds)
    if timeout_ns <= 0:
        raise ValueError(f"idle_timeout={seconds!r} must be positive")
    budget = timeout_ns // 10**9
    total_max = max_keepalive_total()  # macOS: 32-bit ms
    if total_max is not None:
        budget = min(budget, total_max)
    known = caps()
    if "idle" not in known:
        raise OSError(
            errno.ENOPROTOOPT,
            "idle cannot be set on this platform, so no policy can probe before an idle timeout; "
            "see kaext.capabilities()",
        )
    idle_knob = known["idle"]
    idle_min, idle_max = whole_seconds(idle_knob)
    idle = min(idle_max, max(budget // 2, idle_min))
    interval = None
    count = None
    if "interval" in known:
        knob = known["interval"]
        interval_min, interval_max = whole_seconds(knob)
        interval = min(interval_max, max(budget // 10, interval_min))
    if idle + (interval or 0) >= budget:
        raise ValueError(
            f"idle_timeout={seconds!r} is too short: the first probe and one retry must both go out "
            f"before it (idle {idle} s + interval {interval or 0} s must be under {budget} s)"
        )
    if "count" in known:
        # 5 probes, fewer for a short timeout so that a dead peer is declared within it
        fit = (budget - idle) // interval if interval else PROBES
        count = min(known["count"].max, max(min(PROBES, fit), known["count"].min))
    return policy_class(idle=idle, interval=interval, count=count)


def for_middlebox(name: str, policy_class: type[_P]) -> _P:
    """``for_idle_timeout`` for a known middlebox's default idle timeout (``MIDDLEBOXES``)."""
    from ._middleboxes import lookup, names  # dataclasses: imported only when asked

    if not isinstance(name, str):
        raise TypeError(f"middlebox name must be a str, got {type(name).__name__}")
    box = lookup(name)
    if box is None:
        raise ValueError(f"unknown middlebox {name!r}; known: {names()}")
    return for_idle_timeout(box.idle_timeout, policy_class)


def as_policy(policy: Policy | str) -> Policy:
    """``policy`` itself, or the policy a string names.

    A string is read by ``Policy.parse``: a spec (``"5m:30s:4"``, ``"on"``,
    ``"2m:10s:6 user_timeout=3m"``) or a middlebox name in any case
    (``kaext.presets.MIDDLEBOXES``: ``"aws-nlb"`` gives ``Policy.for_middlebox("aws-nlb")``).
    The one reading of a ``policy`` argument for ``kaext.inject``, ``kaext.run``,
    ``kaext.enforce``, the tools' ``--policy`` / ``--apply`` and ``kaext.adapters``.  Raises
    TypeError for anything else, ValueError for a bad spec or a value out of range.
    """
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a kaext.Policy or a str, got {type(policy).__name__} {policy!r}")
    return Policy.parse(policy)


_APPLY_DOC = """Apply the whole policy to ``sock``, all or nothing.

``sock`` is a socket, anything with ``fileno()``, or an int fd.  The calls: each knob the
policy sets, as this platform's option in its unit (``capabilities()`` names them: e.g.
``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``, the user timeout option), then
``WSAIoctl(SIO_KEEPALIVE_VALS)`` where Windows needs it for idle and interval, then
``SO_KEEPALIVE`` last (with no TCP-level knob, a ``TCP_NODELAY`` read first proves the socket
is TCP).  Every value was checked when the policy was made, and the first call is the one a
closed fd or a non-TCP socket refuses.  Where the kernel may still refuse a value kaext's
range allows, the readable knobs written before it are read first and put back, so a refusal
(OSError with errno, knob and option) leaves the socket as it was.

On a listening socket the policy is inherited by accepted connections where the OS copies
the options to them; where it copies only some (macOS), a policy that sets one it does not
copy warns (RuntimeWarning): apply it to each accepted socket as well.

The option, unit and range of each knob on each OS: the platforms page of the
documentation (docs/platforms.md).
"""

_FROM_SOCKET_DOC = """The policy that reproduces ``sock``'s keepalive and user timeout: what ``apply`` needs.

Reads SO_KEEPALIVE and every knob this platform can read back, each with one
``getsockopt`` of the option ``capabilities()`` names, values in seconds exactly as the
kernel holds them.  A knob the platform cannot read back (write-only mechanisms such as
``SIO_KEEPALIVE_VALS``; ``Knob.readable`` is False) or that ``capabilities()`` does not
list is ``None``: the policy leaves it as it is.

``Policy.from_socket(s).apply(t)`` makes ``t`` read back like ``s``:

- SO_KEEPALIVE off gives ``keepalive=False`` (the knobs are not carried: they take no
  effect while keepalive is off, and ``t`` keeps its own);
- keepalive on gives ``idle``, ``interval`` and ``count`` as read, also where they were
  never set (they read as the system defaults, ``system_defaults()``);
- no user timeout reads as 0 and gives ``user_timeout=0.0``, which ``apply`` sets (0 = the
  system default), so a user timeout on ``t`` is cleared too.

The policy says what the socket holds: unlike ``Policy(...)`` it does not warn when that
user timeout is shorter than the keepalive probing.

A knob that reads back outside the range a policy accepts here (``capabilities()``) is
``None`` too: the kernel's "unset" (illumos' 0 interval and count on a fresh socket,
Windows' -1 ``TCP_MAXRT``), so reading never raises for a socket whose options could be read.

Raises the same errors as ``get_keepalive`` (OSError EBADF for a closed socket, the
kernel's errno for one that is not TCP, TypeError for an object without ``fileno()``).
One backend call, like ``apply``.  Which options each OS reads: the
platforms page of the documentation (docs/platforms.md).
"""
# help(Policy.apply) / help(Policy.from_socket) show the user documentation: the methods are
# the backend's own functions (no wrapper on the hot path), so they carry it.
for _method, _doc in ((Policy.apply, _APPLY_DOC), (Policy.from_socket, _FROM_SOCKET_DOC)):
    getattr(_method, "__func__", _method).__doc__ = _doc
del _method, _doc

# The backend makes the Policy that from_socket returns itself, in one call.
_backend.bind_policy(Policy, read_back_knobs())


def _policy_from_kwargs(kwargs: dict[str, Any]) -> Policy:
    return Policy(**kwargs)
