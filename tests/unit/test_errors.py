"""Every error case: TypeError / ValueError before any system call, OSError from the kernel.

After every error the socket's options -- read back with plain ``socket.getsockopt``,
not through kaext -- are exactly what they were before.  Every error carries enough to
act on: knob, value, valid range, OS option name, errno and strerror, also as attributes
of the OSError (``knob``, ``option``, ``value``, ``fd``), which stays a plain OSError.

Sections by the error: closed and invalid descriptors; sockets that are not TCP; a value
the kernel refuses; what is not a socket (TypeError); bad values (TypeError / ValueError).
The tests that check Linux's errno values and ranges carry ``linux_only``; the ones that
read the platform from ``kaext.capabilities()`` run everywhere.  Tests of the backend
interface take the ``backend`` fixture (both implementations, see conftest.py).
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from paths import DATA
from sockets import HAVE_IPV6

import kaext
from kaext import Policy, _platform

# Not the module's pytestmark: the tests that read the platform's capabilities run everywhere.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux errno values and ranges")

RANGES = json.loads((DATA / "reference.json").read_text())["ranges"]["linux"]
UT_MAX = RANGES["user_timeout_ms"][1]
TCP_NAMES = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
NOT_TCP = {errno.ENOPROTOOPT, errno.EOPNOTSUPP}


def snapshot(s: Any) -> dict[str, object]:
    """Every option kaext touches, through Python's socket module; a refused read is recorded too."""
    out: dict[str, object] = {"SO_KEEPALIVE": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in TCP_NAMES:
        try:
            out[name] = s.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
        except OSError as exc:
            out[name] = f"errno {exc.errno}"
    return out


def configure(s: socket.socket, keepalive: int) -> None:
    """Non-default values everywhere, so that any write (even of a default) shows."""
    tcp = socket.IPPROTO_TCP
    s.setsockopt(tcp, socket.TCP_KEEPIDLE, 111)
    s.setsockopt(tcp, socket.TCP_KEEPINTVL, 22)
    s.setsockopt(tcp, socket.TCP_KEEPCNT, 3)
    s.setsockopt(tcp, socket.TCP_USER_TIMEOUT, 4444)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)


def _strerror(code: int) -> str:
    return os.strerror(code)


class HasFileno:
    def __init__(self, fd: object) -> None:
        self.fd = fd

    def fileno(self) -> object:
        return self.fd

    def __repr__(self) -> str:
        return f"HasFileno({self.fd!r})"


def _id(value: object) -> str:
    """A test id that is the same in every run (a plain ``object()``'s repr holds its address)."""
    return "object()" if type(value) is object else repr(value)


@pytest.fixture(params=[0, 1], ids=["keepalive-off", "keepalive-on"])
def configured_tcp(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            configure(client, request.param)
            yield client


# --------------------------------------------------------------------------------------
# the operations, each of which must fail cleanly
# --------------------------------------------------------------------------------------

P_FULL = Policy(idle=10, interval=5, count=3, user_timeout=7)
P_ON = Policy()
P_OFF = Policy(keepalive=False)
P_OFF_UT = Policy(keepalive=False, user_timeout=3)
P_COUNT = Policy(count=4)
P_UT = Policy(user_timeout=0)

# Policy.apply is looked up at call time: the test harness swaps implementations.
OPERATIONS: dict[str, Callable[[Any], object]] = {
    "set_keepalive(all)": lambda s: kaext.set_keepalive(s, idle=10, interval=5, count=3),
    "set_keepalive()": lambda s: kaext.set_keepalive(s),
    "set_keepalive(count)": lambda s: kaext.set_keepalive(s, count=3),
    "set_keepalive(interval)": lambda s: kaext.set_keepalive(s, interval=3),
    "disable_keepalive": lambda s: kaext.disable_keepalive(s),
    "set_user_timeout(5)": lambda s: kaext.set_user_timeout(s, 5),
    "set_user_timeout(0)": lambda s: kaext.set_user_timeout(s, 0),
    "get_keepalive": lambda s: kaext.get_keepalive(s),
    "get_user_timeout": lambda s: kaext.get_user_timeout(s),
    "Policy(all).apply": lambda s: P_FULL.apply(s),
    "Policy().apply": lambda s: P_ON.apply(s),
    "Policy(off).apply": lambda s: P_OFF.apply(s),
    "Policy(off, user_timeout).apply": lambda s: P_OFF_UT.apply(s),
    "Policy(count).apply": lambda s: P_COUNT.apply(s),
    "Policy(user_timeout=0).apply": lambda s: P_UT.apply(s),
}
op_params = pytest.mark.parametrize("op", list(OPERATIONS.values()), ids=list(OPERATIONS))


# --------------------------------------------------------------------------------------
# OSError: closed and invalid descriptors
# --------------------------------------------------------------------------------------


def _closed_fd() -> int:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    return fd


@linux_only
@op_params
def test_closed_socket_is_ebadf(op: Callable[[Any], object]) -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(OSError) as info:
        op(s)
    assert info.value.errno == errno.EBADF
    assert "closed" in str(info.value) or "not open" in str(info.value)


@linux_only
@op_params
@pytest.mark.parametrize("form", ["int", "fileno"])
def test_closed_fd_number_is_ebadf(op: Callable[[Any], object], form: str) -> None:
    fd = _closed_fd()
    with pytest.raises(OSError) as info:
        op(fd if form == "int" else HasFileno(fd))
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError, match="Bad file descriptor"):  # kaext did not leave anything open under that number
        os.fstat(fd)


@linux_only
@op_params
@pytest.mark.parametrize("fd", [-1, -2, 2**31 - 1, 2**31, 2**40, 2**64, -(2**63)])
def test_bogus_fd_numbers_are_ebadf(op: Callable[[Any], object], fd: int) -> None:
    with pytest.raises(OSError) as info:
        op(fd)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        op(HasFileno(fd))
    assert info.value.errno == errno.EBADF


@linux_only
@op_params
@pytest.mark.parametrize("kind", ["file", "pipe", "devnull"])
def test_non_socket_fd_is_enotsock(op: Callable[[Any], object], kind: str, tmp_path: Path) -> None:
    if kind == "file":
        path = tmp_path / "data"
        path.write_bytes(b"content")
        fds = [os.open(path, os.O_RDWR)]
    elif kind == "pipe":
        fds = list(os.pipe())
    else:
        fds = [os.open(os.devnull, os.O_RDWR)]
    try:
        fd = fds[0]
        before = os.fstat(fd)
        for form in (fd, HasFileno(fd)):
            with pytest.raises(OSError) as info:
                op(form)
            assert info.value.errno == errno.ENOTSOCK
            assert "not a socket" in str(info.value)
        after = os.fstat(fd)  # still open: kaext borrowed it and did not close it
        assert (after.st_ino, after.st_size, after.st_mode) == (before.st_ino, before.st_size, before.st_mode)
        if kind == "file":
            assert os.pread(fd, 100, 0) == b"content"
    finally:
        for fd in fds:
            os.close(fd)


def test_closed_socket_says_closed_and_carries_the_fd(implementation: str) -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(OSError) as info:
        kaext.Policy(idle=30).apply(s)
    exc = info.value
    assert exc.errno == errno.EBADF
    assert _strerror(errno.EBADF) in str(exc) and "closed" in str(exc)
    assert exc.fd == -1  # type: ignore[attr-defined]


def test_impossible_fd_number_says_out_of_range(implementation: str) -> None:
    fd = _platform.FD_MAX + 1
    with pytest.raises(OSError) as info:
        kaext.get_keepalive(fd)
    assert info.value.errno == errno.EBADF
    assert "out of range" in str(info.value) and str(_platform.FD_MAX) in str(info.value)
    assert info.value.fd == fd  # type: ignore[attr-defined]


def test_not_a_socket(implementation: str) -> None:
    with tempfile.TemporaryFile() as f, pytest.raises(OSError) as info:
        kaext.set_keepalive(f, idle=10)
    assert info.value.errno == errno.ENOTSOCK
    assert _strerror(errno.ENOTSOCK) in str(info.value) and "not a socket" in str(info.value)


# --------------------------------------------------------------------------------------
# OSError: sockets that are not TCP (the kernel would accept SO_KEEPALIVE on them)
# --------------------------------------------------------------------------------------


@contextmanager
def non_tcp_socket(kind: str) -> Iterator[tuple[socket.socket, socket.socket | None]]:
    """(socket under test, its peer for a liveness check or None)."""
    if kind == "udp4":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            yield s, None
    elif kind == "udp6":
        if not HAVE_IPV6:
            pytest.skip("no IPv6 loopback")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            yield s, None
    elif kind == "udp4-connected":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(peer.getsockname())
                peer.connect(s.getsockname())
                yield s, peer
    elif kind == "unix-stream":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            yield a, b
    elif kind == "unix-dgram":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            yield a, b
    elif kind == "unix-unbound":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            yield s, None
    else:  # pragma: no cover
        raise AssertionError(kind)


NON_TCP = ["udp4", "udp6", "udp4-connected", "unix-stream", "unix-dgram", "unix-unbound"]


@linux_only
@op_params
@pytest.mark.parametrize("kind", NON_TCP)
@pytest.mark.parametrize("keepalive_before", [0, 1])
def test_non_tcp_socket_is_refused_and_left_alone(
    op: Callable[[Any], object], kind: str, keepalive_before: int
) -> None:
    with non_tcp_socket(kind) as (s, peer):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive_before)
        before = snapshot(s)
        assert bool(before["SO_KEEPALIVE"]) == bool(keepalive_before)
        for target in (s, s.fileno(), HasFileno(s.fileno())):
            with pytest.raises(OSError) as info:
                op(target)
            assert info.value.errno in NOT_TCP
            assert "not a TCP socket" in str(info.value)
            assert snapshot(s) == before
        if peer is not None:  # still open and working
            s.send(b"x")
            assert peer.recv(1) == b"x"


@linux_only
def test_error_names_the_refused_knob_and_option() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(OSError) as info:
            kaext.set_keepalive(s, count=5)
        assert "count" in str(info.value) and "TCP_KEEPCNT" in str(info.value)
        with pytest.raises(OSError) as info:
            kaext.set_user_timeout(s, 2)
        assert "user_timeout" in str(info.value) and "TCP_USER_TIMEOUT" in str(info.value)


def test_udp_refusal_names_knob_value_option_errno(implementation: str) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps:
        pytest.skip("no idle knob here")
    option = caps["idle"].option
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError) as info:
        kaext.set_keepalive(udp, idle=60)
    exc = info.value
    assert type(exc) is OSError
    assert exc.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
    message = str(exc)
    assert _strerror(exc.errno) in message
    assert "idle=60" in message and option in message and "not a TCP socket" in message
    assert (exc.knob, exc.option, exc.value) == ("idle", option, 60)  # type: ignore[attr-defined]


def _refusing_calls(target: Any) -> dict[str, Any]:
    """Public calls that a UDP socket refuses, on ``target`` (the socket or its int fd)."""
    calls: dict[str, Any] = {
        "get_keepalive": lambda: kaext.get_keepalive(target),
        "Policy.from_socket": lambda: kaext.Policy.from_socket(target),
        "Policy().apply": lambda: kaext.Policy().apply(target),
    }
    if "idle" in kaext.capabilities():
        calls["set_keepalive"] = lambda: kaext.set_keepalive(target, idle=60)
    if "user_timeout" in kaext.capabilities():
        calls["get_user_timeout"] = lambda: kaext.get_user_timeout(target)
    return calls


@pytest.mark.parametrize("as_int", [False, True], ids=["socket", "int-fd"])
def test_a_refusal_on_a_live_socket_carries_its_fd(implementation: str, as_int: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        target = udp.fileno() if as_int else udp
        for name, call in _refusing_calls(target).items():
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP), name
            assert info.value.fd == udp.fileno(), name  # type: ignore[attr-defined]


@pytest.mark.parametrize("as_int", [False, True], ids=["socket", "int-fd"])
def test_each_backend_puts_the_fd_on_a_refusal(backend: Any, as_int: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        target = udp.fileno() if as_int else udp
        for call in (
            lambda: backend.apply(target, backend.Plan(0, 0, 0, 0, 0, 1)),
            lambda: backend.read(target, _platform.WANT_ALL),
        ):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.fd == udp.fileno()  # type: ignore[attr-defined]
    with tempfile.TemporaryFile() as f:
        with pytest.raises(OSError) as info:
            backend.apply(f.fileno() if as_int else f, backend.Plan(0, 0, 0, 0, 0, 1))
        assert info.value.errno == errno.ENOTSOCK and info.value.fd == f.fileno()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------
# OSError: a value the kernel refuses (the backend called directly, past the API's validation)
# --------------------------------------------------------------------------------------


def test_kernel_refusal_names_the_valid_range(backend: Any, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps or caps["idle"].min < 1:
        pytest.skip("no idle knob with a positive minimum here")
    # Bypass the API's validation to see what the backend says when the kernel refuses.
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(1 << _platform.IDLE, 0, 0, 0, 0, 1))
    exc = info.value
    assert exc.errno == errno.EINVAL
    message = str(exc)
    assert "idle=0" in message and caps["idle"].option in message
    assert f"{caps['idle'].min} s" in message and f"{caps['idle'].max} s" in message
    assert (exc.knob, exc.value) == ("idle", 0)  # type: ignore[attr-defined]


def test_a_kernel_refusal_of_a_value_carries_the_fd(backend: Any, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps or caps["idle"].min < 1:
        pytest.skip("no idle knob with a positive minimum here")
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(1 << _platform.IDLE, 0, 0, 0, 0, 1))
    assert info.value.errno == errno.EINVAL and info.value.fd == tcp.fileno()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------
# TypeError: what is not a socket
# --------------------------------------------------------------------------------------

NOT_SOCKETS = [None, "3", b"3", 3.0, True, False, object(), [3], HasFileno("3"), HasFileno(3.0), HasFileno(True)]


@linux_only
@op_params
@pytest.mark.parametrize("bad", NOT_SOCKETS, ids=[_id(b) for b in NOT_SOCKETS])
def test_not_a_socket_is_type_error(op: Callable[[Any], object], bad: object) -> None:
    with pytest.raises(
        TypeError,
        match=r"fileno\(\) returned \w+, not int|expected a socket, an object with fileno\(\), or an int",
    ):
        op(bad)


@linux_only
def test_fileno_returning_bool_does_not_reach_the_socket(configured_tcp: socket.socket) -> None:
    # True == 1 would be stdout's neighbour; kaext must refuse it, not use fd 1
    before = snapshot(configured_tcp)
    for op in OPERATIONS.values():
        with pytest.raises(TypeError, match="HasFileno.fileno\\(\\) returned bool, not int"):
            op(HasFileno(True))
    assert snapshot(configured_tcp) == before


# --------------------------------------------------------------------------------------
# TypeError / ValueError for values: the socket left exactly as it was, the message naming the knob
# --------------------------------------------------------------------------------------

BAD_DURATION_TYPES = [True, False, "10", b"10", "1.5", [10], (10,), {10: 1}, 1 + 2j, complex(3, 0), object()]
BAD_COUNT_TYPES = [True, False, 1.0, 3.5, Fraction(3), Decimal(3), "3", [3], 3 + 0j, timedelta(seconds=3), object()]

BAD_KEEPALIVE_DURATIONS = [
    0,
    0.0,
    -0.0,
    Decimal(0),
    Fraction(0),
    -1,
    -1.5,
    -1e-12,
    Fraction(-1, 3),
    math.nan,
    math.inf,
    -math.inf,
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    timedelta(0),
    timedelta(seconds=-1),
    timedelta(microseconds=-1),
    32768,
    32767.5,  # rounds up to 32768
    32767.000001,
    timedelta(hours=10),
    10**100,
]
BAD_COUNTS = [0, -1, 128, 2**31, 10**100]
BAD_USER_TIMEOUTS = [
    -1,
    -0.001,
    -1e-12,
    Fraction(-1, 10**12),
    math.nan,
    math.inf,
    -math.inf,
    Decimal("NaN"),
    Decimal("Infinity"),
    timedelta(microseconds=-1),
    UT_MAX / 1000 + 0.001,
    Fraction(UT_MAX + 1, 1000),
    Fraction(UT_MAX, 1000) + Fraction(1, 10**9),  # rounds up past the end
    timedelta(days=25),
    10**10,
]

KNOB_RANGE_TEXT = {
    "idle": (str(RANGES["idle"][0]), str(RANGES["idle"][1]), "TCP_KEEPIDLE"),
    "interval": (str(RANGES["interval"][0]), str(RANGES["interval"][1]), "TCP_KEEPINTVL"),
    "count": (str(RANGES["count"][0]), str(RANGES["count"][1]), "TCP_KEEPCNT"),
    "user_timeout": (str(RANGES["user_timeout_ms"][0]), str(UT_MAX), "TCP_USER_TIMEOUT"),
}


def calls_for(knob: str, value: object) -> list[Callable[[Any], object]]:
    """Every public way to pass ``value`` for ``knob``; the good knobs before it must not be written either."""
    good = {"idle": 10, "interval": 5, "count": 3, "user_timeout": 7}
    kwargs = {**good, knob: value}
    ka = {k: v for k, v in kwargs.items() if k != "user_timeout"}
    calls: list[Callable[[Any], object]] = [lambda s: Policy(**kwargs).apply(s)]
    if knob == "user_timeout":
        calls.append(lambda s: kaext.set_user_timeout(s, value))  # type: ignore[arg-type]
    else:
        calls.append(lambda s: kaext.set_keepalive(s, **{knob: value}))
        calls.append(lambda s: kaext.set_keepalive(s, **ka))
    return calls


def _ids(values: list[object]) -> list[str]:
    return [f"{type(v).__name__}:{_id(v)}"[:40] for v in values]


def _check_value_error(exc: ValueError, knob: str, value: object) -> None:
    message = str(exc)
    lo, hi, option = KNOB_RANGE_TEXT[knob]
    assert knob in message
    assert repr(value) in message
    assert lo in message and hi in message
    assert option in message


@linux_only
@pytest.mark.parametrize("knob", ["idle", "interval"])
@pytest.mark.parametrize("value", BAD_DURATION_TYPES, ids=_ids(BAD_DURATION_TYPES))
def test_duration_type_errors(configured_tcp: socket.socket, knob: str, value: object) -> None:
    before = snapshot(configured_tcp)
    for call in calls_for(knob, value):
        with pytest.raises(TypeError) as info:
            call(configured_tcp)
        assert knob in str(info.value)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("value", BAD_DURATION_TYPES + [None], ids=_ids(BAD_DURATION_TYPES + [None]))
def test_user_timeout_type_errors(configured_tcp: socket.socket, value: object) -> None:
    before = snapshot(configured_tcp)
    calls = calls_for("user_timeout", value)
    if value is None:  # None means "leave as is" for a Policy, but set_user_timeout needs a value
        calls = calls[1:]
    for call in calls:
        with pytest.raises(TypeError) as info:
            call(configured_tcp)
        assert "user_timeout" in str(info.value)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("value", BAD_COUNT_TYPES, ids=_ids(BAD_COUNT_TYPES))
def test_count_type_errors(configured_tcp: socket.socket, value: object) -> None:
    before = snapshot(configured_tcp)
    for call in calls_for("count", value):
        with pytest.raises(TypeError) as info:
            call(configured_tcp)
        assert "count" in str(info.value)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("knob", ["idle", "interval"])
@pytest.mark.parametrize("value", BAD_KEEPALIVE_DURATIONS, ids=_ids(BAD_KEEPALIVE_DURATIONS))
def test_duration_value_errors(configured_tcp: socket.socket, knob: str, value: object) -> None:
    before = snapshot(configured_tcp)
    for call in calls_for(knob, value):
        with pytest.raises(ValueError) as info:
            call(configured_tcp)
        _check_value_error(info.value, knob, value)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("value", BAD_COUNTS, ids=_ids(BAD_COUNTS))
def test_count_value_errors(configured_tcp: socket.socket, value: int) -> None:
    before = snapshot(configured_tcp)
    for call in calls_for("count", value):
        with pytest.raises(ValueError) as info:
            call(configured_tcp)
        _check_value_error(info.value, "count", value)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("value", BAD_USER_TIMEOUTS, ids=_ids(BAD_USER_TIMEOUTS))
def test_user_timeout_value_errors(configured_tcp: socket.socket, value: object) -> None:
    before = snapshot(configured_tcp)
    for call in calls_for("user_timeout", value):
        with pytest.raises(ValueError) as info:
            call(configured_tcp)
        _check_value_error(info.value, "user_timeout", value)
    assert snapshot(configured_tcp) == before


@linux_only
def test_validation_comes_before_the_descriptor() -> None:
    # a bad value on a closed socket is reported as the bad value: nothing was called
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="idle=0 is out of range \\(must be positive\\)"):
        kaext.set_keepalive(s, idle=0)
    with pytest.raises(TypeError, match="count must be an int number of probes, got float 1.5"):
        kaext.set_keepalive(s, count=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user_timeout=-1 is out of range \\(negative\\)"):
        kaext.set_user_timeout(s, -1)
    with pytest.raises(TypeError, match="user_timeout must be seconds as int, float or datetime.timedelta, got None"):
        kaext.set_user_timeout(s, None)  # type: ignore[arg-type]


@linux_only
def test_a_later_bad_knob_leaves_earlier_good_ones_unwritten(configured_tcp: socket.socket) -> None:
    before = snapshot(configured_tcp)
    with pytest.raises(ValueError, match="count=0 is out of range"):
        kaext.set_keepalive(configured_tcp, idle=60, interval=10, count=0)
    with pytest.raises(TypeError, match="count must be an int number of probes, got float 2.0"):
        kaext.set_keepalive(configured_tcp, idle=60, interval=10, count=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval=40000 is out of range"):
        kaext.set_keepalive(configured_tcp, idle=60, interval=40000)
    with pytest.raises(ValueError, match="user_timeout=-1 is out of range \\(negative\\)"):
        Policy(idle=60, interval=10, count=5, user_timeout=-1)
    assert snapshot(configured_tcp) == before


@linux_only
@pytest.mark.parametrize("knob", ["idle", "interval", "count"])
def test_one_below_and_above_the_range(tcp: socket.socket, knob: str) -> None:
    lo, hi = RANGES[knob]
    before = snapshot(tcp)
    for value in (lo - 1, hi + 1):
        with pytest.raises(ValueError) as info:
            kaext.set_keepalive(tcp, **{knob: value})
        _check_value_error(info.value, knob, value)
    assert snapshot(tcp) == before


@pytest.mark.parametrize("knob", ["idle", "interval", "count", "user_timeout"])
def test_value_errors_name_knob_value_option_and_range(knob: str, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if knob not in caps:
        pytest.skip(f"no {knob} here")
    info_knob = caps[knob]
    too_big = 10**12
    with pytest.raises(ValueError) as info:
        kaext.Policy(**{knob: too_big})
    message = str(info.value)
    assert knob in message and str(too_big) in message and info_knob.option in message
    assert str(info_knob.min) in message and str(info_knob.max) in message


def test_type_errors_name_knob_and_type() -> None:
    with pytest.raises(TypeError) as info:
        kaext.Policy(idle="30")  # type: ignore[arg-type]
    assert "idle" in str(info.value) and "str" in str(info.value)
    with pytest.raises(TypeError) as info:
        kaext.Policy(count=2.5)  # type: ignore[arg-type]
    assert "count" in str(info.value) and "float" in str(info.value)


# --------------------------------------------------------------------------------------
# Number types that lie about themselves
# --------------------------------------------------------------------------------------


class _FloatWithBrokenRatio(float):
    def as_integer_ratio(self) -> tuple[int, int]:
        return (1, 0)


class _DecimalWithBrokenRatio(Decimal):
    def as_integer_ratio(self) -> tuple[int, int]:
        return (1, 0)


class _FractionWithBrokenRatio(Fraction):
    def as_integer_ratio(self) -> tuple[int, int]:
        return (1, 0)


@pytest.mark.parametrize("kind", [_FloatWithBrokenRatio, _DecimalWithBrokenRatio], ids=["float", "decimal"])
def test_a_float_or_decimal_subclass_is_read_by_its_value_not_its_override(kind: type) -> None:
    """A float or Decimal is its value: an overridden as_integer_ratio() returning (1, 0) once
    escaped as ZeroDivisionError."""
    assert Policy(idle=kind("5.5") if kind is _DecimalWithBrokenRatio else kind(5.5)).idle == Policy(idle=5.5).idle


def test_another_real_whose_ratio_is_no_ratio_is_a_value_error_naming_the_knob() -> None:
    with socket.socket() as s:
        before = kaext.get_keepalive(s)
        for call in (
            lambda: Policy(interval=_FractionWithBrokenRatio(3)),
            lambda: kaext.set_keepalive(s, interval=_FractionWithBrokenRatio(3)),
            lambda: kaext.set_user_timeout(s, _FractionWithBrokenRatio(3)),
        ):
            with pytest.raises(ValueError, match=r"(interval|user_timeout).*_FractionWithBrokenRatio\(3, 1\)"):
                call()
        assert kaext.get_keepalive(s) == before


def test_a_huge_int_subclass_descriptor_is_an_oserror_naming_the_range() -> None:
    class Big(int):
        pass

    with pytest.raises(OSError, match=r"out of range") as caught:
        kaext.get_keepalive(Big(10**30))
    assert caught.value.errno == errno.EBADF
