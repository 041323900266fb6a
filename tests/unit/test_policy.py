"""Policy: immutable value object, validated at construction, applied all or nothing."""

from __future__ import annotations

import copy
import errno
import json
import math
import pickle
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from paths import DATA
from sockets import KINDS, open_socket, raw

from kaext import Policy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options and ranges")

RANGES = json.loads((DATA / "reference.json").read_text())["ranges"]["linux"]
UT_MAX = RANGES["user_timeout_ms"][1]
TCP = socket.IPPROTO_TCP


def configure(s: socket.socket, keepalive: int = 1) -> None:
    s.setsockopt(TCP, socket.TCP_KEEPIDLE, 111)
    s.setsockopt(TCP, socket.TCP_KEEPINTVL, 22)
    s.setsockopt(TCP, socket.TCP_KEEPCNT, 3)
    s.setsockopt(TCP, socket.TCP_USER_TIMEOUT, 4444)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)


@pytest.fixture(params=KINDS)
def sock(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    with open_socket(*request.param) as s:
        yield s


def expected_raw(p: Policy, start: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    """What a socket in state ``start`` holds after ``p`` is applied, from the policy's own attributes."""
    return (
        1 if p.keepalive else 0,
        start[1] if p.idle is None else int(p.idle),
        start[2] if p.interval is None else int(p.interval),
        start[3] if p.count is None else p.count,
        start[4] if p.user_timeout is None else round(p.user_timeout * 1000),
    )


# --------------------------------------------------------------------------------------
# a value object
# --------------------------------------------------------------------------------------


def test_attributes_hold_the_values_that_will_be_applied() -> None:
    p = Policy(idle=1.2, interval=timedelta(seconds=75), count=9, user_timeout=0.0015)
    assert (p.idle, p.interval, p.count, p.user_timeout, p.keepalive) == (2.0, 75.0, 9, 0.002, True)
    assert type(p.idle) is float and type(p.interval) is float and type(p.count) is int
    assert type(p.user_timeout) is float
    q = Policy()
    assert (q.idle, q.interval, q.count, q.user_timeout, q.keepalive) == (None, None, None, None, True)
    assert Policy(60, 10, 5, 30) == Policy(idle=60, interval=10, count=5, user_timeout=30)


def test_immutable() -> None:
    p = Policy(idle=60, count=5)
    for name in ("idle", "interval", "count", "user_timeout", "keepalive", "_plan", "other"):
        with pytest.raises(AttributeError, match=r"Policy is immutable; make a new one \(cannot set '"):
            setattr(p, name, 1)
        with pytest.raises(AttributeError, match=r"Policy is immutable \(cannot delete '"):
            delattr(p, name)
    assert not hasattr(p, "__dict__")
    assert (p.idle, p.count) == (60.0, 5)


def test_equality_and_hash() -> None:
    same = [
        Policy(idle=60, count=5),
        Policy(idle=60.0, count=5),
        Policy(idle=59.2, count=5),  # rounds up to 60
        Policy(idle=timedelta(minutes=1), count=5),
        Policy(idle=Decimal("60"), count=5),
        Policy(idle=Fraction(120, 2), count=5),
        Policy.parse("1m::5"),
    ]
    for p in same:
        assert p == same[0]
        assert hash(p) == hash(same[0])
        assert not (p != same[0])  # noqa: SIM202 (__ne__ under test)
    different = [
        Policy(idle=61, count=5),
        Policy(idle=60, count=6),
        Policy(idle=60),
        Policy(idle=60, count=5, interval=60),
        Policy(idle=60, count=5, user_timeout=0),
        Policy(),
        Policy(keepalive=False),
        Policy(keepalive=False, user_timeout=0),
        Policy(user_timeout=0),
    ]
    for p in different:
        assert p != same[0]
    assert len(set(different)) == len(different)
    assert len({*same, *different}) == len(different) + 1
    assert Policy() != "on"
    assert Policy() != None  # noqa: E711
    assert {Policy(idle=60, count=5): "x"}[Policy(idle=60.0, count=5)] == "x"


def test_keepalive_flag_validation() -> None:
    for bad in (1, 0, "yes", None, 1.0):
        with pytest.raises(TypeError, match="keepalive must be True or False, got "):
            Policy(keepalive=bad)  # type: ignore[arg-type]
    for kwargs in ({"idle": 5}, {"interval": 5}, {"count": 5}, {"idle": 1, "interval": 1, "count": 1}):
        with pytest.raises(
            ValueError, match="a policy that turns keepalive off cannot also set idle, interval or count"
        ):
            Policy(keepalive=False, **kwargs)  # type: ignore[arg-type]
    assert Policy(keepalive=False, user_timeout=5).user_timeout == 5.0
    with pytest.raises(TypeError, match="takes from 1 to 5 positional arguments but 6 were given"):
        Policy(1, 2, 3, 4, False)  # type: ignore[misc]  # keepalive is keyword-only


def test_repr_is_informative() -> None:
    r = repr(Policy(idle=60, count=5, user_timeout=1.5))
    assert r.startswith("Policy(") and "idle=60" in r and "count=5" in r and "user_timeout=1.5" in r
    assert "keepalive=False" in repr(Policy(keepalive=False))


# --------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------

APPLY_CASES = [
    Policy(idle=60, interval=10, count=5, user_timeout=30),
    Policy(idle=1, interval=1, count=1, user_timeout=0.001),
    Policy(idle=32767, interval=32767, count=127, user_timeout=UT_MAX / 1000),
    Policy(),
    Policy(count=4),
    Policy(idle=7),
    Policy(interval=8, user_timeout=2.5),
    Policy(user_timeout=0),
    Policy(keepalive=False),
    Policy(keepalive=False, user_timeout=3),
]


@pytest.mark.parametrize("policy", APPLY_CASES, ids=[str(p) for p in APPLY_CASES])
@pytest.mark.parametrize("start_keepalive", [0, 1])
def test_apply(sock: socket.socket, policy: Policy, start_keepalive: int) -> None:
    configure(sock, start_keepalive)
    start = raw(sock)
    assert policy.apply(sock) is None
    assert raw(sock) == expected_raw(policy, start)
    policy.apply(sock)  # idempotent
    assert raw(sock) == expected_raw(policy, start)


class HasFileno:
    def __init__(self, fd: object) -> None:
        self.fd = fd

    def fileno(self) -> object:
        return self.fd


@pytest.mark.parametrize("form", ["socket", "int", "fileno"])
def test_apply_socket_forms(tcp_pair: tuple[socket.socket, socket.socket], form: str) -> None:
    client, server = tcp_pair
    target = {"socket": client, "int": client.fileno(), "fileno": HasFileno(client.fileno())}[form]
    Policy(idle=12, interval=3, count=4, user_timeout=5).apply(target)
    assert raw(client) == (1, 12, 3, 4, 5000)
    client.sendall(b"still open")
    assert server.recv(10) == b"still open"


def test_apply_is_all_or_nothing_for_a_policy_that_sets_everything(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = tcp_pair
    full = Policy(idle=60, interval=10, count=5, user_timeout=30)
    off = Policy(keepalive=False, user_timeout=30)
    for keepalive in (0, 1):
        configure(client, keepalive)
        before = raw(client)
        # the right socket reached through broken handles: refused before any call
        for bad in (HasFileno(True), HasFileno(str(client.fileno())), HasFileno(float(client.fileno()))):
            for p in (full, off):
                with pytest.raises(TypeError, match="HasFileno.fileno\\(\\) returned (bool|str|float), not int"):
                    p.apply(bad)
                assert raw(client) == before
        # a closed duplicate of the same socket: EBADF, and the live one is untouched
        dup = client.dup()
        dup.close()
        for p in (full, off):
            with pytest.raises(OSError, match="file descriptor -1 is not valid"):
                p.apply(dup)
            assert raw(client) == before


@pytest.mark.parametrize("kind", ["udp", "unix"])
@pytest.mark.parametrize("keepalive", [0, 1])
def test_apply_refused_by_non_tcp_socket_changes_nothing(kind: str, keepalive: int) -> None:
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)
        for p in APPLY_CASES:
            with pytest.raises(OSError) as info:
                p.apply(s)
            assert info.value.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == keepalive


# --------------------------------------------------------------------------------------
# from_timeout
# --------------------------------------------------------------------------------------

TIMEOUTS: list[Any] = [
    *range(2, 300),
    *range(300, 20000, 97),
    2.0,
    2.5,
    2.999,
    3.5,
    59.9,
    1000.5,
    3599,
    3600,
    7200,
    86400,
    100_000,
    131_068,
    131_072,
    10**6,
    10**7,
    10**9,
    10**12,
    timedelta(minutes=5),
    timedelta(seconds=2),
    timedelta(days=3, microseconds=1),
    Decimal("12.7"),
    Fraction(7, 2),
]


def _seconds(t: Any) -> Fraction:
    if isinstance(t, timedelta):
        return Fraction(t.days * 86400 + t.seconds) + Fraction(t.microseconds, 10**6)
    return Fraction(t)


def test_from_timeout_invariants() -> None:
    lo_idle, hi_idle = RANGES["idle"]
    lo_intvl, hi_intvl = RANGES["interval"]
    lo_cnt, hi_cnt = RANGES["count"]
    for t in TIMEOUTS:
        budget = _seconds(t)
        p = Policy.from_timeout(t)
        assert p.keepalive is True
        assert p.idle is not None and p.interval is not None and p.count is not None, t
        assert p.user_timeout is not None, t
        assert p.idle.is_integer() and p.interval.is_integer(), t  # whole seconds
        assert lo_idle <= p.idle <= hi_idle, t
        assert lo_intvl <= p.interval <= hi_intvl, t
        assert lo_cnt <= p.count <= min(10, hi_cnt), t
        dead_after = p.idle + p.interval * p.count
        assert dead_after <= budget, t
        assert 0 < p.user_timeout <= budget, t
        assert p.user_timeout == dead_after, t
        assert p.user_timeout * 1000 <= UT_MAX
        assert p.idle <= max(1, budget / 4), t  # about a quarter idle
        if budget <= 100_000:  # below the kernel's caps the budget is mostly used
            assert dead_after >= budget / 2, t


@pytest.mark.parametrize("t", [2, 7, 30, 300, 3600, 10**6])
def test_from_timeout_applies(sock: socket.socket, t: int) -> None:
    p = Policy.from_timeout(t)
    p.apply(sock)
    on, idle, interval, count, ut = raw(sock)
    assert on == 1
    assert idle + interval * count <= t
    assert ut <= t * 1000
    assert (idle, interval, count, ut) == (p.idle, p.interval, p.count, p.user_timeout * 1000)  # type: ignore[operator]


@pytest.mark.parametrize(
    "t", [1.999, 1, 0, -1, 0.5, timedelta(seconds=1), Decimal("1.999999"), -math.inf, math.inf, math.nan]
)
def test_from_timeout_too_short_or_invalid(t: Any) -> None:
    with pytest.raises(
        ValueError, match=r"timeout must be a finite number of seconds|timeout=.* is too short: need at least 2 s"
    ):
        Policy.from_timeout(t)


@pytest.mark.parametrize("t", ["30", True, None, [30], 3 + 0j])
def test_from_timeout_type_errors(t: Any) -> None:
    with pytest.raises(TypeError, match="timeout must be seconds as int, float or datetime.timedelta, got "):
        Policy.from_timeout(t)


# --------------------------------------------------------------------------------------
# nginx so_keepalive syntax
# --------------------------------------------------------------------------------------

PARSE_CASES = [
    ("on", Policy()),
    ("off", Policy(keepalive=False)),
    ("30m::10", Policy(idle=1800, count=10)),
    ("1h30m:75s:9", Policy(idle=5400, interval=75, count=9)),
    ("::5", Policy(count=5)),
    ("10:", Policy(idle=10)),
    ("10", Policy(idle=10)),
    (":75", Policy(interval=75)),
    ("10::", Policy(idle=10)),
    (":1m:", Policy(interval=60)),
    ("2h:1m:3", Policy(idle=7200, interval=60, count=3)),
    ("9h6m7s:1s:127", Policy(idle=32767, interval=1, count=127)),
    ("1m30s::", Policy(idle=90)),
    ("1500ms::", Policy(idle=2)),
    ("  on  ", Policy()),
    ("on user_timeout=5m", Policy(user_timeout=300)),
    ("30m::10 user_timeout=1500ms", Policy(idle=1800, count=10, user_timeout=1.5)),
    ("off user_timeout=0", Policy(keepalive=False, user_timeout=0)),
    ("1:1:1 user_timeout=1d", Policy(idle=1, interval=1, count=1, user_timeout=86400)),
]


@pytest.mark.parametrize(("spec", "expected"), PARSE_CASES, ids=[s for s, _ in PARSE_CASES])
def test_parse(spec: str, expected: Policy) -> None:
    assert Policy.parse(spec) == expected


BAD_SPECS = [
    "",
    "   ",
    "yes",
    "ON",
    "Off",
    "true",
    "::",
    ":",
    ":::",
    "1:2:3:4",
    "a::",
    "10x::",
    "10 s::",
    "::1.5",
    "::-1",
    "::+1",
    ":-5:",
    "-5::",
    "1.5::",
    "m::",
    "0::",
    "::0",
    ":0:",
    "1d::",  # 86400 s is beyond TCP_KEEPIDLE's 32767
    "::128",
    "on off",
    "on user_timeout",
    "on user_timeout=",
    "on user_timeout=abc",
    "on user_timeout=-5",
    "on timeout=5",
    "on user_timeout=5 user_timeout=6",
    "30m::10 extra",
    "on user_timeout=25d",  # beyond TCP_USER_TIMEOUT's 2**31-1 ms
]


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match=r"is out of range|invalid keepalive spec"):
        Policy.parse(spec)


@pytest.mark.parametrize("spec", [None, b"on", 5, ["on"]])
def test_parse_needs_a_str(spec: Any) -> None:
    with pytest.raises(TypeError, match="spec must be a str, got "):
        Policy.parse(spec)


ROUND_TRIP = [
    Policy(),
    Policy(keepalive=False),
    Policy(keepalive=False, user_timeout=3),
    Policy(idle=1),
    Policy(idle=59),
    Policy(idle=60),
    Policy(idle=90),
    Policy(idle=3600),
    Policy(idle=5400),
    Policy(idle=32767),
    Policy(idle=1.2),
    Policy(interval=1),
    Policy(interval=75),
    Policy(interval=32767),
    Policy(count=1),
    Policy(count=127),
    Policy(user_timeout=0),
    Policy(user_timeout=0.001),
    Policy(user_timeout=0.0015),
    Policy(user_timeout=1.5),
    Policy(user_timeout=59.999),
    Policy(user_timeout=86400),
    Policy(user_timeout=UT_MAX / 1000),
    Policy(idle=1800, count=10),
    Policy(idle=5400, interval=75, count=9),
    Policy(idle=60, interval=10, count=5, user_timeout=30),
    Policy(idle=61, interval=59, count=7, user_timeout=3599.999),
    *(Policy.from_timeout(t) for t in (2, 7, 30, 300, 3600, 86400, 10**6)),
]


@pytest.mark.parametrize("policy", ROUND_TRIP, ids=[repr(p) for p in ROUND_TRIP])
def test_str_parses_back(policy: Policy) -> None:
    text = str(policy)
    assert isinstance(text, str)
    assert Policy.parse(text) == policy
    assert str(Policy.parse(text)) == text


def test_str_of_on_and_off() -> None:
    assert str(Policy()) == "on"
    assert str(Policy(keepalive=False)) == "off"
    assert str(Policy(idle=1800, count=10)).split(":")[1:] == ["", "10"]
    assert str(Policy(user_timeout=0)) == "on user_timeout=0s"


# --------------------------------------------------------------------------------------
# socket_options
# --------------------------------------------------------------------------------------


def test_socket_options_from_the_definition() -> None:
    p = Policy(idle=60, interval=10, count=5, user_timeout=30)
    opts = p.socket_options()
    assert all(isinstance(o, tuple) and len(o) == 3 and all(type(x) is int for x in o) for o in opts)
    assert sorted(opts) == sorted(
        [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (TCP, socket.TCP_KEEPIDLE, 60),
            (TCP, socket.TCP_KEEPINTVL, 10),
            (TCP, socket.TCP_KEEPCNT, 5),
            (TCP, socket.TCP_USER_TIMEOUT, 30000),
        ]
    )
    assert Policy().socket_options() == [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    assert sorted(Policy(keepalive=False, user_timeout=1.5).socket_options()) == sorted(
        [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0), (TCP, socket.TCP_USER_TIMEOUT, 1500)]
    )


SOCKET_OPTION_CASES = APPLY_CASES + [Policy.from_timeout(45), Policy(idle=1.2, user_timeout=0.0015)]


@pytest.mark.parametrize("policy", SOCKET_OPTION_CASES, ids=[str(p) for p in SOCKET_OPTION_CASES])
@pytest.mark.parametrize("configured", [False, True])
def test_socket_options_match_apply(policy: Policy, configured: bool) -> None:
    with socket.socket() as by_hand, socket.socket() as by_apply:
        if configured:
            configure(by_hand)
            configure(by_apply)
        assert raw(by_hand) == raw(by_apply)
        for level, optname, value in policy.socket_options():
            by_hand.setsockopt(level, optname, value)
        policy.apply(by_apply)
        assert raw(by_hand) == raw(by_apply)


def test_socket_options_with_base() -> None:
    base = [
        (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1),
        (TCP, socket.TCP_NODELAY, 1),
        (TCP, socket.TCP_KEEPIDLE, 999),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),
        (socket.SOL_SOCKET, socket.SO_SNDBUF, 65536),
    ]
    original = list(base)
    p = Policy(idle=60, interval=10, count=5)
    merged = p.socket_options(base)
    assert base == original  # not modified
    # base entries that the policy does not set are kept, first and in order
    assert merged[:3] == [base[0], base[1], base[4]]
    assert sorted(merged[3:]) == sorted(p.socket_options())
    keys = [(level, opt) for level, opt, _ in merged]
    assert len(keys) == len(set(keys))
    assert (TCP, socket.TCP_KEEPIDLE, 999) not in merged
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0) not in merged
    # a knob the policy leaves alone keeps the base's value
    only_count = Policy(count=3).socket_options(base)
    assert (TCP, socket.TCP_KEEPIDLE, 999) in only_count
    assert (TCP, socket.TCP_KEEPCNT, 3) in only_count
    # any iterable of 3-sequences; the result holds tuples
    from_lists = p.socket_options(iter([list(b) for b in base]))
    assert from_lists == merged
    assert all(type(o) is tuple for o in from_lists)


def test_socket_options_with_base_apply_like_a_library_would(tcp: socket.socket) -> None:
    base = [(TCP, socket.TCP_NODELAY, 1)]  # e.g. urllib3's HTTPConnection.default_socket_options
    for level, optname, value in Policy(idle=70, interval=7, count=2, user_timeout=9).socket_options(base):
        tcp.setsockopt(level, optname, value)
    assert tcp.getsockopt(TCP, socket.TCP_NODELAY) == 1
    assert raw(tcp) == (1, 70, 7, 2, 9000)


# --------------------------------------------------------------------------------------
# pickling and copying
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ROUND_TRIP, ids=[repr(p) for p in ROUND_TRIP])
def test_pickle_and_copy(policy: Policy) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(policy, protocol))
        assert back == policy and hash(back) == hash(policy)
        assert back.socket_options() == policy.socket_options()
        assert str(back) == str(policy)
    assert copy.copy(policy) == policy
    assert copy.deepcopy(policy) == policy


def test_unpickled_policy_applies(tcp: socket.socket) -> None:
    p = pickle.loads(pickle.dumps(Policy(idle=13, interval=4, count=6, user_timeout=0.5)))
    p.apply(tcp)
    assert raw(tcp) == (1, 13, 4, 6, 500)


def test_a_policy_is_usable_across_threads() -> None:
    # immutable and shareable: the same object applied from several threads
    import threading

    p = Policy(idle=31, interval=4, count=3, user_timeout=2)
    errors: list[BaseException] = []
    results: list[tuple[int, int, int, int, int]] = []

    def work() -> None:
        try:
            with socket.socket() as s:
                p.apply(s)
                results.append(raw(s))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [(1, 31, 4, 3, 2000)] * 8


@pytest.mark.one_implementation
def test_from_timeout_takes_the_user_timeout_maximum_in_its_own_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS: TCP_RXT_CONNDROPTIME is seconds (up to 4294967 s), not milliseconds."""
    from kaext import _capabilities, _platform

    caps = dict(_capabilities.caps())
    if "user_timeout" not in caps:
        pytest.skip("no user timeout here")
    darwin = _platform.DARWIN["user_timeout"]
    caps["user_timeout"] = caps["user_timeout"]._replace(option=darwin.option, unit=darwin.unit, max=darwin.max)
    monkeypatch.setattr(_capabilities, "_CAPABILITIES", caps)
    policy = Policy.from_timeout(100_000)
    assert policy.idle is not None and policy.interval is not None and policy.count is not None
    assert policy.user_timeout == policy.idle + policy.interval * policy.count > 4294
