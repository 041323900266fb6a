"""Property-based tests: arbitrary values and arbitrary targets through every public function.

Whatever goes in, only TypeError, ValueError or OSError come out, and a failed call
leaves every socket exactly as it was: the options of a pool of real sockets (TCP,
IPv6 TCP, a connected pair, UDP, AF_UNIX) are read with plain ``socket.getsockopt``
before and after each call and compared.  A call that succeeds changes its own
target and nothing else.  Runs for both implementations (see conftest.py).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kaext

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

ALLOWED = (TypeError, ValueError, OSError)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Options read back, with plain socket.getsockopt, from every socket of the pool.
_TCP_OPTIONS = [
    (name, getattr(socket, name))
    for name in ("TCP_NODELAY", "TCP_KEEPIDLE", "TCP_KEEPALIVE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
    if hasattr(socket, name)
]


def _snapshot(sock: socket.socket) -> dict[str, int]:
    out = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
        for name, opt in _TCP_OPTIONS:
            with contextlib.suppress(OSError):
                out[name] = sock.getsockopt(socket.IPPROTO_TCP, opt)
    if fcntl is not None:
        # file status flags (O_NONBLOCK) and fd flags (FD_CLOEXEC) must not change either
        out["F_GETFL"] = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        out["F_GETFD"] = fcntl.fcntl(sock.fileno(), fcntl.F_GETFD)
    return out


class Pool:
    """Real sockets of every kind, plus a regular file and a closed socket."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.sockets: dict[str, socket.socket] = {}
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        # Non-default values, so that "unchanged" is not "back at the default".
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, opt in _TCP_OPTIONS:
            if name != "TCP_NODELAY":
                with contextlib.suppress(OSError):
                    tcp.setsockopt(socket.IPPROTO_TCP, opt, 77)
        self.sockets["tcp"] = tcp
        if socket.has_ipv6:
            with contextlib.suppress(OSError):
                self.sockets["tcp6"] = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        client = stack.enter_context(socket.create_connection(listener.getsockname()))
        server = stack.enter_context(listener.accept()[0])
        self.sockets.update(listener=listener, client=client, server=server)
        self.sockets["udp"] = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        if hasattr(socket, "AF_UNIX"):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sockets["unix"] = stack.enter_context(a)
            stack.enter_context(b)
            self.sockets["unix_dgram"] = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        self.file = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
        closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closed_fd = closed.fileno()
        closed.close()
        self.closed = closed

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {name: _snapshot(s) for name, s in self.sockets.items()}


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    with contextlib.ExitStack() as stack:
        yield Pool(stack)


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------

_SPECIAL_FLOATS = [
    0.0,
    -0.0,
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1e-12,
    0.5,
    1.0000000001,
    sys.float_info.max,
    2.0**31,
    2.0**63,
]
_SPECIAL_DECIMALS = [
    Decimal("NaN"),
    Decimal("-NaN"),
    Decimal("sNaN"),
    Decimal("-sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("-0"),
    Decimal("0E-30"),
    Decimal("1E-40"),
    Decimal("1E+40"),
    Decimal("32767.0000001"),
    Decimal("1E-999999999"),
    Decimal("1E+999999999"),
    Decimal("-1E+999999999"),
    Decimal("9" * 60),
]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=200),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 10**100, -(10**100)]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from(_SPECIAL_FLOATS),
    st.timedeltas(),
    st.sampled_from(
        [
            timedelta(microseconds=1),
            timedelta(microseconds=-1),
            timedelta.max,
            timedelta.min,
            timedelta(0),
            timedelta(hours=1),
        ]
    ),
    st.fractions(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(_SPECIAL_DECIMALS),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.sampled_from([object(), [], (), {}, [1], {1: 2}, type, socket.socket, ...]),
)


class _Boom(Exception):
    pass


_EXCEPTIONS = [
    OSError(errno.EBADF, "bad"),
    OSError(),
    ValueError("closed"),
    TypeError("no"),
    RuntimeError("x"),
    AttributeError("fileno"),
    KeyError("k"),
    IndexError(),
    ZeroDivisionError(),
    RecursionError(),
    MemoryError(),
    StopIteration(),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    OverflowError(),
    NotImplementedError(),
    AssertionError(),
    LookupError(),
    _Boom(),
    Exception(),
]


class RaisingFileno:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def fileno(self) -> Any:
        raise self.exc


class RaisingFilenoProperty:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @property
    def fileno(self) -> Any:
        raise self.exc


class GarbageFileno:
    def __init__(self, value: Any) -> None:
        self.value = value

    def fileno(self) -> Any:
        return self.value


class NotCallableFileno:
    fileno = 5


class Wrapper:
    """Anything with fileno(): a transport, a trio stream, a Twisted transport..."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


def _free_fd_numbers() -> list[int]:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        soft = 1 << 20
    if soft <= 0 or soft >= 2**31 - 10:
        soft = 1 << 20
    # at or above RLIMIT_NOFILE no fd can be open
    return [soft, soft + 1, soft + 1000, 2**31 - 1]


# A target is described by data, resolved against the pool inside the test.
targets = st.one_of(
    st.tuples(
        st.just("socket"),
        st.sampled_from(["tcp", "tcp6", "listener", "client", "server", "udp", "unix", "unix_dgram"]),
    ),
    st.tuples(st.just("fd"), st.sampled_from(["tcp", "tcp6", "client", "udp", "unix"])),
    st.tuples(st.just("wrapper"), st.sampled_from(["tcp", "server", "udp", "unix"])),
    st.tuples(st.just("file"), st.booleans()),
    st.tuples(st.just("closed"), st.booleans()),
    st.tuples(
        st.just("int"),
        st.integers(max_value=-1) | st.integers(min_value=2**31) | st.sampled_from(_free_fd_numbers()),
    ),
    st.tuples(st.just("raises"), st.sampled_from(_EXCEPTIONS)),
    st.tuples(st.just("raises_property"), st.sampled_from(_EXCEPTIONS)),
    st.tuples(st.just("garbage"), values | st.sampled_from([-1, -(2**70), 2**70, 2**31, True, False, 3.0, "3"])),
    st.tuples(st.just("not_callable"), st.none()),
    st.tuples(st.just("value"), values),
)


_FREE_FD = _free_fd_numbers()[0]


def _not_open(value: Any) -> Any:
    """An arbitrary value, with small ints moved to numbers no descriptor can have.

    A small int may be any descriptor of the test process (pytest's capture files,
    another test's socket): aimed at by accident it would be changed legitimately.
    Real descriptors are the "fd" targets.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _FREE_FD:
        return _FREE_FD + value
    return value


def _resolve(pool: Pool, target: tuple[str, Any]) -> tuple[Any, str | None]:
    """The object to pass, and the pool socket it designates (None: none of them)."""
    kind, arg = target
    if kind in ("garbage", "value"):
        arg = _not_open(arg)
    if kind in ("socket", "fd", "wrapper"):
        name = arg if arg in pool.sockets else "tcp"
        sock = pool.sockets[name]
        obj = {"socket": sock, "fd": sock.fileno(), "wrapper": Wrapper(sock)}[kind]
        return obj, name
    if kind == "file":
        return (pool.file if arg else pool.file.fileno()), None
    if kind == "closed":
        # the closed socket object; or the number it had, now free
        return (pool.closed if arg else pool.closed_fd), None
    if kind == "int":
        return arg, None
    if kind == "raises":
        return RaisingFileno(arg), None
    if kind == "raises_property":
        return RaisingFilenoProperty(arg), None
    if kind == "garbage":
        return GarbageFileno(arg), None
    if kind == "not_callable":
        return NotCallableFileno(), None
    return arg, None


def _check_error(exc: BaseException) -> None:
    assert isinstance(exc, ALLOWED), f"{type(exc).__name__} escaped: {exc!r}"
    if any(exc is own for own in _EXCEPTIONS):
        return  # raised by the target's own fileno(), passed through as it was
    assert str(exc), f"{type(exc).__name__} without a message"
    if isinstance(exc, OSError) and type(exc) is OSError and exc.args and len(exc.args) >= 2:
        assert isinstance(exc.errno, int) and exc.errno > 0, exc
        assert exc.strerror, exc


def _run(pool: Pool, target_name: str | None, call: Callable[[], Any], changes_target: bool) -> tuple[bool, Any]:
    """Call; on error check the exception and that nothing changed.  Returns (ok, result)."""
    before = pool.snapshot()
    try:
        result = call()
    except BaseException as exc:  # noqa: B036 - the point is to see everything
        _check_error(exc)
        assert pool.snapshot() == before, f"options changed although the call raised {exc!r}"
        return False, None
    after = pool.snapshot()
    for name in before:
        if name == target_name and changes_target:
            continue
        assert after[name] == before[name], f"{name} changed by a call aimed at {target_name}"
    if target_name is not None and changes_target:
        # flags are not options: a successful call must not touch them either
        for key in ("F_GETFL", "F_GETFD"):
            assert after[target_name].get(key) == before[target_name].get(key)
    return True, result


def _raw(sock: socket.socket, knob: str) -> int:
    knob_info = kaext.capabilities()[knob]
    return sock.getsockopt(knob_info.level, knob_info.optname)


def _expect_native(knob: str, seconds_or_count: float) -> int:
    unit = kaext.capabilities()[knob].unit
    if unit == "ms":
        return round(seconds_or_count * 1000)
    return int(seconds_or_count)


# --------------------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------------------


@FUZZ
@given(target=targets, idle=values | st.none(), interval=values | st.none(), count=values | st.none())
def test_set_keepalive(pool: Pool, target: tuple[str, Any], idle: Any, interval: Any, count: Any) -> None:
    obj, name = _resolve(pool, target)
    ok, _ = _run(pool, name, lambda: kaext.set_keepalive(obj, idle=idle, interval=interval, count=count), True)
    if ok:
        assert name is not None and pool.sockets[name].type == socket.SOCK_STREAM
        assert pool.sockets[name].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


@FUZZ
@given(target=targets)
def test_disable_and_get_keepalive(pool: Pool, target: tuple[str, Any]) -> None:
    obj, name = _resolve(pool, target)
    ok, state = _run(pool, name, lambda: kaext.get_keepalive(obj), False)
    if ok:
        sock = pool.sockets[name]  # type: ignore[index]
        assert state.enabled == bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        if state.count is not None:
            assert state.count == _raw(sock, "count")
    ok, _ = _run(pool, name, lambda: kaext.disable_keepalive(obj), True)
    if ok:
        assert pool.sockets[name].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0  # type: ignore[index]
        kaext.set_keepalive(pool.sockets[name])  # type: ignore[index]


@FUZZ
@given(target=targets, seconds=values)
def test_user_timeout(pool: Pool, target: tuple[str, Any], seconds: Any) -> None:
    obj, name = _resolve(pool, target)
    _run(pool, name, lambda: kaext.get_user_timeout(obj), False)
    ok, _ = _run(pool, name, lambda: kaext.set_user_timeout(obj, seconds), True)
    if ok and "user_timeout" in kaext.capabilities():
        got = kaext.get_user_timeout(pool.sockets[name])  # type: ignore[index]
        assert got is not None and got >= 0


@FUZZ
@given(
    target=targets,
    idle=values | st.none(),
    interval=values | st.none(),
    count=values | st.none(),
    user_timeout=values | st.none(),
    keepalive=st.booleans() | values,
)
def test_policy_apply(
    pool: Pool, target: tuple[str, Any], idle: Any, interval: Any, count: Any, user_timeout: Any, keepalive: Any
) -> None:
    try:
        policy = kaext.Policy(idle, interval, count, user_timeout, keepalive=keepalive)
    except BaseException as exc:  # noqa: B036
        _check_error(exc)
        return
    obj, name = _resolve(pool, target)
    before = pool.snapshot()
    ok, _ = _run(pool, name, lambda: policy.apply(obj), True)
    if not ok:
        return
    sock = pool.sockets[name]  # type: ignore[index]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == int(policy.keepalive)
    for knob in ("idle", "interval", "count", "user_timeout"):
        wanted = getattr(policy, knob)
        if wanted is not None:
            # the policy's attributes say what the kernel now holds
            assert _raw(sock, knob) == _expect_native(knob, wanted), knob
    # knobs the policy leaves alone are left alone
    after = _snapshot(sock)
    for opt_name, _opt in _TCP_OPTIONS:
        knob = {
            "TCP_KEEPIDLE": "idle",
            "TCP_KEEPALIVE": "idle",
            "TCP_KEEPINTVL": "interval",
            "TCP_KEEPCNT": "count",
            "TCP_USER_TIMEOUT": "user_timeout",
        }.get(opt_name)
        if knob is None or getattr(policy, knob) is None:
            assert after.get(opt_name) == before[name].get(opt_name), opt_name  # type: ignore[index]


@FUZZ
@given(
    spec=st.text(max_size=40)
    | values
    | st.from_regex(
        r"\A(on|off|(\d{0,6}(ms|s|m|h|d)?){0,2}:(\d{0,6}(ms|s|m|h|d)?){0,2}:\d{0,4})"
        r"( user_timeout=\d{0,8}(ms|s|m|h|d)?)?\Z"
    )
)
def test_policy_parse(spec: Any) -> None:
    try:
        policy = kaext.Policy.parse(spec)
    except BaseException as exc:  # noqa: B036
        _check_error(exc)
        return
    assert kaext.Policy.parse(str(policy)) == policy


@FUZZ
@given(timeout=values)
def test_policy_from_timeout(timeout: Any) -> None:
    try:
        policy = kaext.Policy.from_timeout(timeout)
    except BaseException as exc:  # noqa: B036
        _check_error(exc)
        return
    assert isinstance(policy, kaext.Policy)


# Framework shapes; the ones that do not exist (yet) are skipped.
_SHAPES = ["socket_options", "tcp_options", "named_options", "libpq_params", "socket_factory"]


@FUZZ
@given(
    shape=st.sampled_from(_SHAPES),
    base=st.one_of(
        values, st.lists(st.one_of(values, st.tuples(values, values, values), st.tuples(values)), max_size=4)
    ),
    with_arg=st.booleans(),
    idle=st.integers(min_value=1, max_value=3600) | st.none(),
    user_timeout=st.integers(min_value=0, max_value=3600) | st.none(),
)
def test_framework_shapes(shape: str, base: Any, with_arg: bool, idle: Any, user_timeout: Any) -> None:
    policy = kaext.Policy(idle=idle, user_timeout=user_timeout if "user_timeout" in kaext.capabilities() else None)
    method = getattr(policy, shape, None)
    if method is None:
        pytest.skip(f"Policy.{shape} does not exist here")
    try:
        result = method(base) if with_arg else method()
    except BaseException as exc:  # noqa: B036
        _check_error(exc)
        return
    if shape == "socket_factory" and callable(result):
        return
    assert result is not None


@FUZZ
@given(seconds=values)
def test_for_idle_timeout(seconds: Any) -> None:
    method = getattr(kaext.Policy, "for_idle_timeout", None)
    if method is None:
        pytest.skip("Policy.for_idle_timeout does not exist here")
    try:
        method(seconds)
    except BaseException as exc:  # noqa: B036
        _check_error(exc)


def test_no_argument_functions() -> None:
    caps = kaext.capabilities()
    assert set(caps) <= {"idle", "interval", "count", "user_timeout", "connect_timeout"}
    caps.clear()  # a copy: the caller cannot break the library's view
    assert kaext.capabilities()
    defaults = kaext.system_defaults()
    assert isinstance(defaults, kaext.KeepaliveState)


def test_huge_decimal_exponents_are_handled_quickly(tcp: socket.socket) -> None:
    # Fraction(Decimal("1e-999999999")) would build a billion-digit integer; validation
    # must decide without materialising it (a hang here is the failure).
    with pytest.raises(ValueError, match="idle"):
        kaext.set_keepalive(tcp, idle=Decimal("1E+999999999"))
    with pytest.raises(ValueError, match="idle"):
        kaext.set_keepalive(tcp, idle=Decimal("-1E-999999999"))
    kaext.set_keepalive(tcp, idle=Decimal("1E-999999999"))  # positive: rounds up
    assert tcp.getsockopt(kaext.capabilities()["idle"].level, kaext.capabilities()["idle"].optname) == 1


def test_negative_and_tiny_durations_round_up_or_are_refused(tcp: socket.socket) -> None:
    # Positive values round UP to the OS resolution; nothing positive becomes 0.
    kaext.set_user_timeout(tcp, 1e-12)
    assert kaext.get_user_timeout(tcp) == 0.001
    kaext.set_keepalive(tcp, idle=5e-324)
    assert kaext.get_keepalive(tcp).idle == 1.0
    with pytest.raises(ValueError, match="user_timeout=-1e-12 is out of range \\(negative\\)"):
        kaext.set_user_timeout(tcp, -1e-12)


if os.name == "nt":  # pragma: no cover - the pool and fcntl are POSIX-oriented
    pytestmark = pytest.mark.skip("fuzz pool is POSIX-oriented")
