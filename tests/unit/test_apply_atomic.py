"""Policy.apply is all or nothing: under a kernel refusal and under asynchronous exceptions.

* A refusal after the first write puts back what the plan was asked to keep (the
  rollback bits): the values read *before* the first write, not the ones just written.
  Linux refuses a negative TCP_USER_TIMEOUT with EINVAL (net/ipv4/tcp.c,
  do_tcp_setsockopt: ``if (val < 0) return -EINVAL``), so a plan whose last knob is -1
  is refused by the real kernel after three knobs were written.
* An exception raised by a signal handler while ``apply`` runs (a SIGALRM timeout, a
  KeyboardInterrupt) reaches the caller, every time, and the socket is then exactly as
  before or exactly as after: never half of each.  The storms are bounded in count and
  in time; signals are one-shot timers at random delays, so they land anywhere inside
  the call.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType, SimpleNamespace
from typing import Any

import pytest
from sockets import HasFileno, raw

import kaext
from kaext import _platform

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Linux kernel values"),
    pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer"),
]

BEFORE = kaext.Policy(idle=100, interval=20, count=9, user_timeout=300)
AFTER = kaext.Policy(idle=50, interval=10, count=5, user_timeout=100)
#: What Linux stores for each (SO_KEEPALIVE, TCP_KEEPIDLE s, TCP_KEEPINTVL s, TCP_KEEPCNT, TCP_USER_TIMEOUT ms)
RAW_BEFORE = (1, 100, 20, 9, 300_000)
RAW_AFTER = (1, 50, 10, 5, 100_000)
ALL_KNOBS = (1 << (_platform.USER_TIMEOUT + 1)) - 1  # the keepalive knobs and the user timeout
ROLLBACK_IDLE_INTERVAL_COUNT = 0b111 << _platform.ROLLBACK_SHIFT


def _close_quietly(s: socket.socket) -> None:
    try:
        s.close()
    except OSError:
        pass


def _plan(backend: ModuleType, mask: int, user_timeout: int) -> Any:
    return backend.Plan(mask, 50, 10, 5, user_timeout, 1)


@pytest.mark.parametrize("path", ["apply", "apply_policy"])
def test_refusal_after_writes_puts_back_the_values_from_before(
    backend: ModuleType, tcp_pair: tuple[socket.socket, socket.socket], path: str
) -> None:
    """The kernel refuses the fourth knob: idle/interval/count are back at 100/20/9 (issue 19, defect 2)."""
    sock, _ = tcp_pair
    BEFORE.apply(sock)
    assert raw(sock) == RAW_BEFORE
    plan = _plan(backend, ALL_KNOBS | ROLLBACK_IDLE_INTERVAL_COUNT, -1)
    with pytest.raises(OSError) as info:
        if path == "apply":
            backend.apply(sock, plan)
        else:
            policy = SimpleNamespace(_plan=plan)
            backend.apply_policy(policy, sock)
    assert info.value.errno == errno.EINVAL
    assert raw(sock) == RAW_BEFORE


class _Storm:
    """One-shot SIGALRM timers at random delays; the handler raises ``exc`` once per arming."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc
        self.armed = False
        self.raised = 0

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            self.raised += 1
            raise self.exc("apply interrupted")


@pytest.fixture
def storm_signal() -> Iterator[None]:
    old = signal.getsignal(signal.SIGALRM)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _run_storm(
    sock: socket.socket, apply: Callable[[], None], exc: type[BaseException], rounds: int = 4000, seconds: float = 4.0
) -> tuple[int, int, int]:
    """(raised, caught, mixed states) over at most ``rounds`` rounds or ``seconds``.

    The garbage collector is off meanwhile: a handler that runs inside another object's
    finalizer (anything the suite left behind) has its exception swallowed by CPython
    ("Exception ignored in ..."), which is no fault of kaext's.  A finalizer that still
    runs (an object freed by kaext's own code) and swallows one fails the storm.
    """
    storm = _Storm(exc)
    signal.signal(signal.SIGALRM, storm.handler)
    swallowed: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: swallowed.append(f"{u.exc_type.__name__} in {u.object!r}")
    gc.collect()
    gc.disable()
    try:
        result = _storm_rounds(storm, sock, apply, exc, rounds, seconds)
    finally:
        gc.enable()
        sys.unraisablehook = hook
    assert not swallowed, f"swallowed by a finalizer during the storm: {swallowed}"
    return result


def _storm_rounds(
    storm: _Storm, sock: socket.socket, apply: Callable[[], None], exc: type[BaseException], rounds: int, seconds: float
) -> tuple[int, int, int]:
    rng = random.Random(19)
    caught = mixed = 0
    deadline = time.monotonic() + seconds
    for _ in range(rounds):
        if time.monotonic() > deadline:
            break
        BEFORE.apply(sock)
        try:
            try:
                storm.armed = True
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 40e-6))
                apply()
                time.sleep(0)  # a signal still pending lands here, inside the try
                storm.armed = False
            except exc:
                caught += 1
        finally:  # whatever else escaped: no armed handler, no timer left behind
            storm.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        if raw(sock) not in (RAW_BEFORE, RAW_AFTER):
            mixed += 1
    return storm.raised, caught, mixed


@pytest.mark.parametrize("exc", [TimeoutError, KeyboardInterrupt], ids=["timeout", "keyboardinterrupt"])
@pytest.mark.parametrize("path", ["api", "api-fileno", "pure"])
def test_asynchronous_exception_reaches_the_caller_and_the_socket_is_whole(
    tcp_pair: tuple[socket.socket, socket.socket],
    storm_signal: None,
    exc: type[BaseException],
    path: str,
    request: pytest.FixtureRequest,
) -> None:
    """No SIGALRM TimeoutError swallowed; before or after, never a mix (issue 17, item 3)."""
    from kaext import _pure

    sock, _ = tcp_pair
    if path == "api":

        def apply() -> None:
            AFTER.apply(sock)
    elif path == "api-fileno":  # not a socket.socket: the general path, on a descriptor of its own
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        request.addfinalizer(lambda: _close_quietly(dup))
        holder = HasFileno(dup)

        def apply() -> None:
            AFTER.apply(holder)
    else:
        policy = SimpleNamespace(_plan=_pure.Plan(ALL_KNOBS, 50, 10, 5, 100_000, 1))

        def apply() -> None:
            _pure.apply_policy(policy, sock)

    raised, caught, mixed = _run_storm(sock, apply, exc)
    assert raised >= 50, f"the storm hit only {raised} times"
    assert (caught, mixed) == (raised, 0), f"{raised} raised, {caught} reached the caller, {mixed} mixed states"


@pytest.mark.parametrize(
    "read",
    ["get_keepalive", "from_socket", "get_user_timeout"],
)
def test_asynchronous_exception_during_a_read_reaches_the_caller(
    tcp_pair: tuple[socket.socket, socket.socket], storm_signal: None, read: str
) -> None:
    """Reading is never retried over a signal handler's TimeoutError (the fast path's
    ``except OSError`` once took it for "not TCP" and read again)."""
    sock, _ = tcp_pair
    call = {
        "get_keepalive": lambda: kaext.get_keepalive(sock),
        "from_socket": lambda: kaext.Policy.from_socket(sock),
        "get_user_timeout": lambda: kaext.get_user_timeout(sock),
    }[read]
    raised, caught, mixed = _run_storm(sock, call, TimeoutError, rounds=3000, seconds=3.0)
    assert raised >= 50, f"the storm hit only {raised} times"
    assert (caught, mixed) == (raised, 0), f"{raised} raised, {caught} reached the caller"


def _inject_twice(apply: Callable[[], None], after_call: int, then_entry: int) -> None:
    """Run ``apply`` with two exceptions injected where the interpreter runs a pending
    signal handler: the first right after its ``after_call``-th setsockopt returns (a
    profile function's exception at ``c_return``), the second on entering the
    ``then_entry``-th Python function after that (a trace function's at ``call``) -- a
    handler that raises again while kaext recovers from the first.  Each injector unsets
    itself when it raises; whichever exception reaches here is swallowed."""
    state = {"setsockopt": 0, "entries": 0, "fired": False}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_return" and getattr(arg, "__name__", "") == "setsockopt":
            state["setsockopt"] += 1
            if state["setsockopt"] == after_call:
                sys.setprofile(None)
                state["fired"] = True
                raise TimeoutError("first")

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and state["fired"]:
            state["entries"] += 1
            if state["entries"] > then_entry:
                sys.settrace(None)
                raise TimeoutError("second")

    sys.settrace(trace)
    sys.setprofile(profile)
    try:
        apply()
    except TimeoutError:
        pass
    finally:
        sys.setprofile(None)
        sys.settrace(None)


@pytest.mark.parametrize("path", ["fast", "general", "general-rollback"])
def test_a_second_handler_exception_during_recovery_never_leaves_half_of_each_policy(
    tcp_pair: tuple[socket.socket, socket.socket], path: str, request: pytest.FixtureRequest
) -> None:
    """Issue 30, item 11 (pure Policy.apply: 2 of 1,771 calls under a signal storm left half
    one policy, half the other).  A first exception after any of the plan's setsockopt calls,
    a second on entering any of the next functions kaext calls to finish the plan: the
    socket is exactly as before or exactly as after, every time.  Before the fix the second
    one, raised on entering the recovery function outside any try, left a mix."""
    from kaext import _pure

    sock, _ = tcp_pair
    rollback = ROLLBACK_IDLE_INTERVAL_COUNT if path == "general-rollback" else 0
    plan = _pure.Plan(ALL_KNOBS | rollback, 50, 10, 5, 100_000, 1)
    if path == "fast":
        policy = SimpleNamespace(_plan=plan)

        def apply() -> None:
            _pure.apply_policy(policy, sock)
    else:
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        request.addfinalizer(lambda: _close_quietly(dup))
        target = HasFileno(dup) if path == "general" else sock

        def apply() -> None:
            _pure.apply(target, plan)

    calls = len(_platform.KNOBS) + 1  # the knobs, then SO_KEEPALIVE
    mixed = []
    for after_call in range(1, calls + 1):
        for then_entry in range(4):
            BEFORE.apply(sock)
            _inject_twice(apply, after_call, then_entry)
            if raw(sock) not in (RAW_BEFORE, RAW_AFTER):
                mixed.append((after_call, then_entry, raw(sock)))
    assert not mixed, f"half of each policy after (setsockopt call, function entry): {mixed}"
