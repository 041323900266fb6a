"""``python -m kaext.verify``: prove on this machine that what kaext sets is what the kernel stores.

For fresh TCP sockets (IPv4 and IPv6 where available; unconnected, listening,
and both ends of a connected loopback pair) it sets every keepalive knob and the
user timeout this platform supports (``kaext.capabilities()``; not the
``connect_timeout``, which bounds connection establishment and is proven by the
test suite with connects to a host that drops SYNs) to several values including both ends of
the range, reads each back through kaext *and* through Python's own
``socket.getsockopt`` where Python has the constant, and prints one row per
check.  It also feeds kaext values just outside the range and checks that kaext
refuses them before any system call, leaving the socket unchanged.

Verdicts in lower case pass (``ok``, ``rejected``, ``write-only``); verdicts in
upper case fail:

* ``CLAMPED``  -- the kernel stored a different value than was set;
* ``REFUSED``  -- the kernel (or kaext) refused a value inside the documented range;
* ``MISMATCH`` -- kaext's reading differs from Python's ``socket.getsockopt``, a
  header value differs from Python's constant, or a refused call changed the socket;
* ``NOT REJECTED`` -- kaext passed an out-of-range value on to the kernel.

``--live`` opens a loopback connection, applies a policy and checks the
kernel's own view of the keepalive timer (``/proc/net/tcp``, ``/proc/net/tcp6``
and ``TCP_INFO`` where the system has them); a policy that turns keepalive off
(``--policy off``) is checked to stop the timer of a socket whose keepalive was on.  ``--idle-timeout N`` checks that a
policy sends its first probe before a middlebox that forgets idle flows after
``N`` seconds does so.

Exit status: 0 when every check passes, 1 when one fails, 2 for bad arguments.
Only kaext's public API and :mod:`socket` are used, so this checks what a user
of kaext gets.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from typing import Any, NamedTuple

import kaext

# presentation only: the checks use the public API
from kaext._cli import Parser, prog_name, run_tool, table
from kaext._linux_abi import KEEPALIVE_TIMER, ProcTcpLine, proc_tcp, timer_name
from kaext._tcp_info import tcp_info

try:
    import socket
except ImportError:  # WASI / Emscripten builds: every check reports OSError(ENOSYS)
    from kaext import _nosocket as socket  # type: ignore[no-redef]

__all__ = ["judge", "main", "run_checks", "run_idle_timeout", "run_live"]

#: Default policy for ``--live``: distinct values, so a reading shows which knob it is.
LIVE_POLICY = "7s:3s:4 user_timeout=19s"

_PASS = ("ok", "rejected", "write-only")


# --------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------


def judge(
    expected: int,
    via_kaext: float | None,
    via_socket: int | None,
    *,
    readable: bool = True,
) -> str:
    """The verdict for one round trip, all values in the option's native unit.

    ``expected`` is what was set (after rounding up), ``via_kaext`` what kaext read
    back, ``via_socket`` what Python's ``socket.getsockopt`` read back (``None`` where
    Python lacks the constant).  Returns ``"ok"``, ``"CLAMPED"``, ``"MISMATCH"`` or
    ``"write-only"`` (the platform cannot read the knob back, and nothing else can).
    """
    if via_kaext is None:
        if readable or via_socket is not None:
            return "MISMATCH" if readable else ("ok" if via_socket == expected else "CLAMPED")
        return "write-only"
    if via_socket is not None and via_kaext != via_socket:
        return "MISMATCH"
    return "ok" if via_kaext == expected else "CLAMPED"


def passed(verdict: str) -> bool:
    """Does this verdict count as a pass?"""
    return verdict in _PASS


# --------------------------------------------------------------------------------------
# Sockets under test
# --------------------------------------------------------------------------------------

_FAMILIES = (("IPv4", socket.AF_INET, "127.0.0.1"), ("IPv6", getattr(socket, "AF_INET6", None), "::1"))


def _loopback_pair(family: int, host: str, stack: ExitStack) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    listener.bind((host, 0))
    listener.listen(1)
    client = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    client.connect(listener.getsockname()[:2])
    accepted, _ = listener.accept()
    stack.enter_context(accepted)
    return listener, client, accepted


@contextmanager
def _sockets(notes: list[str]) -> Iterator[list[tuple[str, str, socket.socket]]]:
    """(family name, state, socket) for every kind of socket under test."""
    out: list[tuple[str, str, socket.socket]] = []
    with ExitStack() as stack:
        for name, family, host in _FAMILIES:
            if family is None or (name == "IPv6" and not socket.has_ipv6):
                notes.append(f"{name}: not available in this Python")
                continue
            try:
                inner = ExitStack()
                with inner:
                    unconnected = inner.enter_context(socket.socket(family, socket.SOCK_STREAM))
                    listener, client, accepted = _loopback_pair(family, host, inner)
                    kept = inner.pop_all()
            except OSError as exc:
                notes.append(f"{name}: not available ({exc})")
                continue
            stack.enter_context(kept)
            out += [
                (name, "unconnected", unconnected),
                (name, "listening", listener),
                (name, "connected", client),
                (name, "accepted", accepted),
            ]
        yield out


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


def _knobs() -> dict[str, kaext.Knob]:
    """The knobs the round trips cover: those ``set_keepalive`` / ``set_user_timeout`` set."""
    return {name: knob for name, knob in kaext.capabilities().items() if name != "connect_timeout"}


def _per_second(unit: str) -> int:
    """How many of ``unit`` make a second here (``Knob.per_second``: ms, NetBSD's slow ticks)."""
    for knob in kaext.capabilities().values():
        if knob.unit == unit and knob.per_second is not None:
            return knob.per_second
    return 1


def _to_seconds(native: int, unit: str) -> int | Fraction:
    per = _per_second(unit)
    return Fraction(native, per) if per != 1 else native


def _as_float(seconds: int | float | Fraction) -> float | int:
    return seconds if isinstance(seconds, int) else float(seconds)


def _fmt_seconds(seconds: float | Fraction | None) -> str:
    if seconds is None:
        return "-"
    return f"{float(seconds):g} s" if float(seconds) < 1e6 else f"{float(seconds):.3f} s"


def _fmt_native(n: float | None, unit: str) -> str:
    if n is None:
        return "-"
    n = int(n) if float(n).is_integer() else n
    return f"{n} {unit[:-1] if unit == 'probes' and n == 1 else unit}"


def _values(knob: kaext.Knob) -> list[tuple[int | float | Fraction, int]]:
    """(seconds or probes to pass to kaext, native value expected back) to try for ``knob``."""
    lo, hi = knob.min, knob.max
    if knob.unit == "probes":
        natives = [lo, min(max(9, lo), hi), hi]
        return [(n, n) for n in dict.fromkeys(natives)]
    if knob.per_second not in (None, 1):  # ms, ticks
        natives = [lo, max(lo, 1), min(max(19000, lo), hi), hi]
        pairs: list[tuple[int | float | Fraction, int]] = [
            (_to_seconds(n, knob.unit), n) for n in dict.fromkeys(natives)
        ]
        if knob.unit == "ms" and lo <= 2 <= hi:
            pairs.insert(2, (0.0015, 2))  # a fraction of the OS unit rounds up
        return pairs
    natives = [lo, min(max(60, lo), hi), hi]
    pairs = [(n, n) for n in dict.fromkeys(natives)]
    if lo + 1 <= hi:
        pairs.insert(1, (lo + 0.5, lo + 1))  # a fraction of a second rounds up
    return pairs


def _read_kaext(sock: socket.socket, name: str, unit: str) -> float | None:
    """kaext's reading of one knob, in the native unit."""
    if name == "user_timeout":
        seconds = kaext.get_user_timeout(sock)
    else:
        seconds = getattr(kaext.get_keepalive(sock), name)
    if seconds is None:
        return None
    if unit != "probes" and _per_second(unit) != 1:  # ms, ticks
        n = seconds * _per_second(unit)
        return float(round(n)) if abs(n - round(n)) < 1e-3 else n
    return seconds


def _read_socket(sock: socket.socket, knob: kaext.Knob) -> tuple[int | None, str]:
    """Python's own reading of one knob through its socket constant, and a note."""
    if not knob.mechanism.is_setsockopt:  # e.g. WSAIoctl(SIO_KEEPALIVE_VALS)
        return None, f"set with {knob.mechanism}, which cannot be read back"
    optname = getattr(socket, knob.option, None)
    if not isinstance(optname, int):
        return None, f"Python's socket module has no {knob.option}"
    if optname != knob.optname:
        return None, f"socket.{knob.option} = {optname}, but the header value kaext uses is {knob.optname}"
    try:
        return sock.getsockopt(knob.level, optname), ""
    except OSError as exc:
        return None, f"socket.getsockopt: {exc}"


def _set(sock: socket.socket, name: str, value: Any) -> None:

    with warnings.catch_warnings():
        # macOS warns that accepted sockets do not inherit idle / the user timeout from a
        # listening socket: the verifier sets them there only to read them back
        warnings.simplefilter("ignore", RuntimeWarning)
        if name == "user_timeout":
            kaext.set_user_timeout(sock, value)
        else:
            kaext.set_keepalive(sock, **{name: value})


class Check(NamedTuple):
    """One check of the report: a value set on one socket, and what came back."""

    family: str  #: "IPv4" or "IPv6"
    state: str  #: "unconnected", "listening", "connected" or "accepted"
    check: str  #: "keepalive", "roundtrip" or "out_of_range"
    knob: str  #: a knob name, or "keepalive" (SO_KEEPALIVE)
    option: str  #: the option's header name
    constant: int | None  #: its number (the header value kaext uses)
    unit: str  #: the option's own unit ("on/off" for SO_KEEPALIVE)
    set_seconds: int | float | Fraction | None  #: what kaext was given (None: SO_KEEPALIVE)
    set_native: int | float | None  #: the value expected in the option's unit
    via_kaext: float | None  #: what kaext read back, in that unit
    via_socket: int | None  #: what Python's socket.getsockopt read back
    verdict: str  #: "ok", "rejected", "write-only", or a failure in capitals
    detail: str = ""

    def row(self) -> dict[str, Any]:
        """The report's row of this check (``run_checks``, ``--json``)."""
        return {
            "socket": f"{self.family} {self.state}",
            "family": self.family,
            "state": self.state,
            "check": self.check,
            "knob": self.knob,
            "option": self.option,
            "constant": self.constant,
            "unit": self.unit,
            "set_seconds": None if self.set_seconds is None else _as_float(self.set_seconds),
            "set_native": self.set_native,
            "kaext": self.via_kaext,
            "socket_getsockopt": self.via_socket,
            "verdict": self.verdict,
            "ok": passed(self.verdict),
            "detail": self.detail,
        }


def _roundtrip(family: str, state: str, sock: socket.socket, name: str, knob: kaext.Knob) -> list[dict[str, Any]]:
    rows = []
    for seconds, expected in _values(knob):
        via_kaext: float | None = None
        via_socket: int | None = None
        try:
            _set(sock, name, seconds)
        except (OSError, ValueError, TypeError) as exc:
            verdict, detail = "REFUSED", f"{type(exc).__name__}: {exc}"
        else:
            via_kaext = _read_kaext(sock, name, knob.unit)
            via_socket, detail = _read_socket(sock, knob)
            verdict = judge(expected, via_kaext, via_socket, readable=knob.readable)
            if detail.startswith("socket.") and "header value" in detail:
                verdict = "MISMATCH"
        rows.append(
            Check(
                family=family,
                state=state,
                check="roundtrip",
                knob=name,
                option=knob.option,
                constant=knob.optname,
                unit=knob.unit,
                set_seconds=seconds,
                set_native=expected,
                via_kaext=via_kaext,
                via_socket=via_socket,
                verdict=verdict,
                detail=detail,
            ).row()
        )
    return rows


def _keepalive_rows(family: str, state: str, sock: socket.socket) -> list[dict[str, Any]]:
    rows = []
    optname = getattr(kaext.constants, "SO_KEEPALIVE", None)
    level = getattr(kaext.constants, "SOL_SOCKET", socket.SOL_SOCKET)
    py_optname = getattr(socket, "SO_KEEPALIVE", None)
    for want, action in ((0, kaext.disable_keepalive), (1, kaext.set_keepalive)):
        via_kaext = via_socket = None
        detail = ""
        try:
            action(sock)
        except (OSError, ValueError, TypeError) as exc:
            verdict, detail = "REFUSED", f"{type(exc).__name__}: {exc}"
        else:
            via_kaext = int(kaext.get_keepalive(sock).enabled)
            if py_optname is not None and py_optname != optname:
                verdict, detail = "MISMATCH", f"socket.SO_KEEPALIVE = {py_optname}, header value {optname}"
            else:
                if py_optname is not None:
                    # BSDs report the option's flag bit rather than 1: any non-zero is on
                    via_socket = int(sock.getsockopt(level, py_optname) != 0)
                verdict = judge(want, via_kaext, via_socket)
        rows.append(
            Check(
                family=family,
                state=state,
                check="keepalive",
                knob="keepalive",
                option="SO_KEEPALIVE",
                constant=optname,
                unit="on/off",
                set_seconds=None,
                set_native=want,
                via_kaext=via_kaext,
                via_socket=via_socket,
                verdict=verdict,
                detail=detail,
            ).row()
        )
    return rows


def _kernel_alone(family: int, knob: kaext.Knob, native: int) -> str:
    """What the kernel itself does with ``native`` on a scratch socket (for information)."""
    if not -(2**31) <= native < 2**31:
        return "not a C int"
    if not knob.mechanism.is_setsockopt:
        return f"not tried ({knob.mechanism})"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as scratch:
            scratch.setsockopt(knob.level, knob.optname, native)
            stored = scratch.getsockopt(knob.level, knob.optname) if knob.readable else None
    except OSError as exc:
        return f"kernel refuses it ({exc.strerror or exc})"
    return "kernel accepts it" + ("" if stored is None else f", stores {stored}")


def _snapshot(sock: socket.socket) -> tuple[Any, ...]:
    caps = kaext.capabilities()
    user = kaext.get_user_timeout(sock) if "user_timeout" in caps else None
    return (kaext.get_keepalive(sock), user)


def _plain_seconds(native: int, unit: str) -> int | float | Fraction:
    """``native`` in seconds, as a float where that converts back exactly (for readable messages)."""
    exact = _to_seconds(native, unit)
    if isinstance(exact, int):
        return exact
    as_float = float(exact)
    return as_float if round(Fraction(as_float) * 1000) == native else exact


def _out_of_range(family: str, state: str, family_number: int, sock: socket.socket) -> list[dict[str, Any]]:
    rows = []
    for name, knob in _knobs().items():
        for native in (knob.min - 1, knob.max + 1):
            seconds = _plain_seconds(native, knob.unit)
            before = _snapshot(sock)
            info = _kernel_alone(family_number, knob, native)
            try:
                _set(sock, name, seconds)
            except (ValueError, TypeError) as exc:
                verdict, detail = "rejected", f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                verdict, detail = "NOT REJECTED", f"reached the kernel: {exc}"
            else:
                verdict, detail = "NOT REJECTED", "kaext accepted it"
            if verdict == "rejected" and _snapshot(sock) != before:
                verdict, detail = "MISMATCH", "the refused call changed the socket"
            rows.append(
                Check(
                    family=family,
                    state=state,
                    check="out_of_range",
                    knob=name,
                    option=knob.option,
                    constant=knob.optname,
                    unit=knob.unit,
                    set_seconds=seconds,
                    set_native=native,
                    via_kaext=None,
                    via_socket=None,
                    verdict=verdict,
                    detail=f"{detail} [{info}]",
                ).row()
            )
    return rows


def run_checks(notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every round trip and range check on every kind of socket; one dict per check."""
    notes = [] if notes is None else notes
    caps = _knobs()
    if not caps:
        notes.append("this platform supports no keepalive knob beyond SO_KEEPALIVE")
    results: list[dict[str, Any]] = []
    with _sockets(notes) as socks:
        for family, state, sock in socks:
            results += _keepalive_rows(family, state, sock)
            for name, knob in caps.items():
                results += _roundtrip(family, state, sock, name, knob)
            if state == "connected":
                results += _out_of_range(family, state, sock.family, sock)
    return results


# --------------------------------------------------------------------------------------
# --live: the kernel's own view of the keepalive timer
# --------------------------------------------------------------------------------------

_PROC = {"IPv4": "/proc/net/tcp", "IPv6": "/proc/net/tcp6"}


def _proc_entry(path: str, inode: int) -> ProcTcpLine | None:
    """The /proc/net/tcp{,6} line of the socket with this inode (the package's one reader of it)."""
    return next((line for line in proc_tcp(path) if line.inode == inode), None)


def _tcp_info(sock: socket.socket) -> dict[str, Any] | None:
    """The socket's TCP_INFO as the report shows it (``tcp_info`` of a live connection)."""
    info = tcp_info(sock)
    if info is None:
        return None
    return {
        "state": info.state,
        "probes": info.probes,
        "rto_ms": info.rto_us / 1000,
        "last_data_recv_ms": info.last_data_recv_ms,
        "last_ack_recv_ms": info.last_ack_recv_ms,
    }


def _live_one(family_name: str, family: int, host: str, policy: kaext.Policy) -> dict[str, Any]:
    ticks_per_s = os.sysconf("SC_CLK_TCK")  # /proc/net/tcp prints clock_t (USER_HZ) ticks
    with ExitStack() as stack:
        _, client, accepted = _loopback_pair(family, host, stack)
        if not policy.keepalive:  # keepalive on first, so that the policy has a timer to stop
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        policy.apply(client)
        applied = time.monotonic()
        try:
            in_force: bool | None = policy.applied_to(client)
        except OSError as exc:
            if exc.errno != errno.ENOPROTOOPT:
                raise
            in_force = None  # a knob the policy sets cannot be read back here
        state = kaext.get_keepalive(client)
        entry = _proc_entry(_PROC[family_name], os.fstat(client.fileno()).st_ino)
        peer = _proc_entry(_PROC[family_name], os.fstat(accepted.fileno()).st_ino)
        elapsed = time.monotonic() - applied
        info = _tcp_info(client)
    idle = state.idle
    out: dict[str, Any] = {
        "socket": f"{family_name} connected",
        "source": _PROC[family_name],
        "keepalive": state.enabled,
        "idle": idle,
        "interval": state.interval,
        "count": state.count,
        "in_force": in_force,
        "timer": None,
        "remaining": None,
        "peer_timer": None,
        "tcp_info": info,
    }
    if entry is None or peer is None:
        out.update(verdict="MISMATCH", ok=False, detail="socket not found in " + _PROC[family_name])
        return out
    remaining = entry.when / ticks_per_s
    # the timer named as kaext-inspect names it (kaext.Connection.timer)
    out.update(timer=timer_name(entry.timer), remaining=remaining, peer_timer=timer_name(peer.timer))
    # The timer was armed for ``idle`` when SO_KEEPALIVE went on, at most ``elapsed``
    # seconds before the read; the kernel prints the rest truncated to whole ticks.
    tolerance = 2 / ticks_per_s + 0.02
    if in_force is False:
        verdict, detail = "MISMATCH", f"the socket does not hold policy {policy} after apply (Policy.applied_to)"
    elif not policy.keepalive:
        if entry.timer == KEEPALIVE_TIMER:
            verdict, detail = "MISMATCH", f"keepalive still on (timer {out['timer']}) after policy {policy}"
        else:
            verdict, detail = "ok", f"keepalive off and no keepalive timer (timer {out['timer']})"
    elif entry.timer != KEEPALIVE_TIMER:
        verdict, detail = "MISMATCH", f"keepalive timer not armed (timer {out['timer']})"
    elif idle is None:
        verdict, detail = "write-only", f"timer armed, {remaining:g} s left; idle cannot be read back here"
    elif not idle - elapsed - tolerance <= remaining <= idle:
        verdict, detail = "MISMATCH", f"timer armed for {remaining:g} s, expected {idle:g} s minus {elapsed:.3f} s"
    elif peer.timer == KEEPALIVE_TIMER:
        verdict, detail = "MISMATCH", "the peer, which has no policy, has a keepalive timer too"
    else:
        verdict, detail = "ok", f"keepalive timer armed: first probe in {remaining:g} s (idle {idle:g} s)"
    out.update(verdict=verdict, ok=passed(verdict), detail=detail)
    return out


def run_live(spec: str = LIVE_POLICY) -> dict[str, Any]:
    """Apply a policy to a loopback connection and read the kernel's keepalive timer.

    Returns ``{"available": bool, "policy": str, "connections": [...], "ok": bool}``;
    where the system has no per-connection timer view, ``available`` is False and
    ``ok`` True.
    """
    policy = kaext.Policy.parse(spec)
    out: dict[str, Any] = {"available": False, "policy": str(policy), "connections": [], "ok": True, "detail": ""}
    if not os.path.exists(_PROC["IPv4"]):
        out["detail"] = "not available: this system has no /proc/net/tcp view of TCP timers"
        return out
    out["available"] = True
    for name, family, host in _FAMILIES:
        if family is None or not os.path.exists(_PROC[name]):
            continue
        try:
            out["connections"].append(_live_one(name, family, host, policy))
        except OSError as exc:
            if name == "IPv4":
                raise
            out["detail"] = f"{name}: not available ({exc})"
    out["ok"] = all(c["ok"] for c in out["connections"])
    return out


# --------------------------------------------------------------------------------------
# --idle-timeout: does the first probe beat a middlebox's idle timeout?
# --------------------------------------------------------------------------------------


def run_idle_timeout(seconds: float, spec: str | None) -> dict[str, Any]:
    """Check that a policy probes before a middlebox forgetting idle flows after ``seconds``.

    The policy is ``spec`` (``Policy.parse`` syntax or a middlebox name) or, without one,
    ``Policy.for_idle_timeout(seconds)``.  It is applied to a real loopback
    connection and the idle time in force is read back, so a knob the policy
    leaves alone counts with the kernel's default.
    """
    if spec is not None:
        policy, source = kaext.Policy.parse(spec), "--policy"
    else:
        policy, source = kaext.Policy.for_idle_timeout(seconds), "Policy.for_idle_timeout"
    with ExitStack() as stack:
        _, client, _ = _loopback_pair(socket.AF_INET, "127.0.0.1", stack)
        policy.apply(client)
        state = kaext.get_keepalive(client)
    idle = state.idle
    out: dict[str, Any] = {
        "idle_timeout": seconds,
        "policy": str(policy),
        "source": source,
        "keepalive": state.enabled,
        "idle": idle,
        "interval": state.interval,
        "margin": None if idle is None else seconds - idle,
    }
    if not state.enabled:
        ok, detail = False, "keepalive is off: nothing is sent on an idle connection"
    elif idle is None:
        ok, detail = False, "the idle time in force cannot be read back on this platform"
    elif idle < seconds:
        ok, detail = True, f"first probe after {idle:g} s idle, {seconds - idle:g} s before the flow is forgotten"
        if state.interval is not None and state.interval >= seconds:
            detail += f" (note: an unanswered probe is retried only after {state.interval:g} s)"
    else:
        ok, detail = False, f"first probe after {idle:g} s idle: the middlebox forgets the flow after {seconds:g} s"
    out.update(ok=ok, verdict="ok" if ok else "TOO LATE", detail=detail)
    return out


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _header() -> dict[str, Any]:
    defaults = kaext.system_defaults()
    return {
        "platform": f"{platform.system()} {platform.machine()}".strip(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kaext": kaext.__version__,
        "implementation": kaext.IMPLEMENTATION,
        "system_defaults": {
            "keepalive": defaults.enabled,
            "idle": defaults.idle,
            "interval": defaults.interval,
            "count": defaults.count,
        },
        # how each knob is set here: the probe's choice (e.g. WSAIoctl on old Windows)
        "mechanisms": {name: knob.mechanism for name, knob in kaext.capabilities().items()},
    }


def _cells(r: dict[str, Any]) -> list[str]:
    unit = r["unit"]
    option = f"{r['option']}={r['constant']}" if r["constant"] is not None else r["option"]
    if r["check"] == "keepalive":
        sets = "on" if r["set_native"] else "off"
        got = "-" if r["kaext"] is None else ("on" if r["kaext"] else "off")
        via_sock = "-" if r["socket_getsockopt"] is None else ("on" if r["socket_getsockopt"] else "off")
    else:
        native = _fmt_native(r["set_native"], unit)
        sets = native if unit == "probes" else f"{_fmt_seconds(r['set_seconds'])} = {native}"
        got = _fmt_native(r["kaext"], unit)
        via_sock = _fmt_native(r["socket_getsockopt"], unit)
    if r["check"] == "out_of_range":
        got = via_sock = ""
    return [r["socket"], r["knob"], option, sets, got, via_sock, r["verdict"]]


def _print_text(report: dict[str, Any], quiet: bool, out: Callable[[str], None]) -> None:
    d = report["system_defaults"]
    out(f"kaext {report['kaext']} ({report['implementation']} implementation)")
    out(f"platform: {report['platform']}, kernel {report['kernel']}, Python {report['python']}")
    out(
        f"system defaults: keepalive {'on' if d['keepalive'] else 'off'}, idle {d['idle']} s, "
        f"interval {d['interval']} s, count {d['count']}"
    )
    out("mechanisms: " + (", ".join(f"{k} {m}" for k, m in report["mechanisms"].items()) or "SO_KEEPALIVE only"))
    for note in report["notes"]:
        out(f"note: {note}")
    out("")
    results = report["results"]
    shown = [r for r in results if not (quiet and r["ok"])]
    head = ["socket", "knob", "option=value", "set", "kaext read", "socket.getsockopt", "verdict"]
    if shown:
        out("\n".join(table(head, [_cells(r) for r in shown], rule=True, group=True)))
        out("")
    failed = [r for r in results if not r["ok"]]
    details, seen = [], set()
    for r in results:
        key = (r["knob"], r["set_native"], r["verdict"], r["detail"])
        explain = not quiet and r["check"] == "out_of_range" and key not in seen
        if r["detail"] and (not r["ok"] or explain):
            details.append(r)
            seen.add(key)
    for r in details:
        out(f"{r['socket']} {r['knob']} {_fmt_native(r['set_native'], r['unit'])}: {r['verdict']}: {r['detail']}")
    if details:
        out("")
    out(f"{len(results)} checks: {len(results) - len(failed)} passed, {len(failed)} failed")
    live = report.get("live")
    if live is not None:
        out("")
        out(f"live: policy {live['policy']!r} on a loopback connection")
        if not live["available"]:
            out(f"live: {live['detail']}")
        for c in live["connections"]:
            info = c["tcp_info"]
            extra = ""
            if info is not None:
                state = "established" if info["state"] == 1 else f"state {info['state']}"
                extra = (
                    f"; TCP_INFO: {state}, probes out {info['probes']}, "
                    f"last data received {info['last_data_recv_ms']} ms ago"
                )
            out(
                f"  {c['socket']}: {c['source']} timer {c['timer']}, {c['remaining']} s left; "
                f"peer timer {c['peer_timer']}{extra}"
            )
            out(f"  {c['socket']}: {c['verdict']}: {c['detail']}")
        if live["available"] and live["detail"]:
            out(f"  {live['detail']}")
    idle = report.get("idle_timeout")
    if idle is not None:
        out("")
        out(
            f"idle timeout {idle['idle_timeout']:g} s, policy {idle['policy']!r} ({idle['source']}): "
            f"{idle['verdict']}: {idle['detail']}"
        )
    out("")
    out("OK: every value round-trips" if report["ok"] else "FAILED: see the verdicts above")


class _Parser(Parser):
    error_tail = " (see --help)"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog_name("kaext-verify", "kaext.verify"),
        description="Set every keepalive knob kaext supports on fresh TCP sockets, read each back "
        "through kaext and through Python's socket.getsockopt, and report whether the kernel "
        "stored exactly what was set. Exit 0 when everything round-trips, 1 otherwise, 2 for bad arguments.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="in the table, show only the checks that fail")
    p.add_argument(
        "--live",
        action="store_true",
        help="also open a loopback connection, apply a policy (--policy, default "
        f"{LIVE_POLICY!r}) and check the kernel's keepalive timer (/proc/net/tcp, TCP_INFO); "
        "reports 'not available' where the system has no such view",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="N",
        help="also check that the policy (--policy, or Policy.for_idle_timeout(N)) sends its first "
        "keepalive probe before a middlebox that forgets idle flows after N seconds",
    )
    p.add_argument(
        "--policy",
        metavar="SPEC",
        help="policy for --live and --idle-timeout, in Policy.parse syntax, e.g. '5m:30s:4 user_timeout=7m', "
        "or a middlebox name such as aws-nlb",
    )
    return p


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what cannot run and flags that would have no effect (exit 2, one line)."""
    if args.quiet and args.json:
        parser.error("--quiet has no effect with --json (the JSON report always has every check)")
    if args.policy is not None and not args.live and args.idle_timeout is None:
        parser.error("--policy has no effect without --live or --idle-timeout N")
    if args.idle_timeout is not None and (not math.isfinite(args.idle_timeout) or args.idle_timeout <= 0):
        parser.error(f"--idle-timeout must be a positive number of seconds, got {args.idle_timeout:g}")
    if args.policy is not None:
        try:
            kaext.Policy.parse(args.policy)
        except (TypeError, ValueError, OSError, Warning) as exc:  # Warning: under -W error
            parser.error(f"--policy: {exc}")
    elif args.idle_timeout is not None:
        try:
            kaext.Policy.for_idle_timeout(args.idle_timeout)
        except (TypeError, ValueError, OSError) as exc:
            parser.error(f"--idle-timeout {args.idle_timeout:g}: {exc}; pass a longer timeout or --policy SPEC")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verifier; returns the exit status (0 all passed, 1 a check failed, 2 bad arguments
    or an error, 130 Ctrl-C)."""
    parser = _parser()
    return run_tool(lambda: parser.prog, lambda: _main(parser, argv))


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    _check_arguments(parser, args)

    notes: list[str] = []
    report = _header()
    report["results"] = run_checks(notes)
    report["notes"] = notes
    ok = all(r["ok"] for r in report["results"])
    if args.live:
        report["live"] = run_live(args.policy or LIVE_POLICY)
        ok = ok and report["live"]["ok"]
    if args.idle_timeout is not None:
        report["idle_timeout"] = run_idle_timeout(args.idle_timeout, args.policy)
        ok = ok and report["idle_timeout"]["ok"]
    report["ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False))
    else:
        _print_text(report, args.quiet, print)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
