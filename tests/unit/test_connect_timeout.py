"""Policy.connect_timeout: the knob, its parsing, validation, read-back and shapes (Linux: TCP_SYNCNT).

Expected values come from the kernel (plain ``socket.getsockopt``) and from the kernel's own
model of a SYN count (``sockets.syn_give_up_seconds``: net/ipv4/tcp_timer.c,
tcp_model_timeout), never from kaext.  The connects themselves: tests/integration/
test_connect_timeout.py.
"""

from __future__ import annotations

import errno
import math
import pickle
import socket
import sys
from types import ModuleType

import pytest
from sockets import syn_give_up_seconds

import kaext
from kaext import Policy, _capabilities, _platform

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's TCP_SYNCNT")

TCP = socket.IPPROTO_TCP


def largest_schedule_within(seconds: float) -> float:
    """The give-up time of the largest TCP_SYNCNT (1..127) that ends within ``seconds``."""
    within = [syn_give_up_seconds(n) for n in range(1, 128) if syn_give_up_seconds(n) <= seconds]
    return within[-1]


def test_the_knob_is_tcp_syncnt_in_syn_retransmissions() -> None:
    knob = kaext.capabilities()["connect_timeout"]
    assert (knob.option, knob.level, knob.optname) == ("TCP_SYNCNT", TCP, socket.TCP_SYNCNT)
    assert (knob.unit, knob.min, knob.max, knob.readable, knob.per_second) == ("syns", 1, 127, True, None)
    assert knob.mechanism == "setsockopt(IPPROTO_TCP, TCP_SYNCNT)"


@pytest.mark.parametrize("seconds", [3, 3.5, 6, 6.999, 7, 10, 14, 15, 30, 31, 100, 127, 128, 246, 247, 14647])
def test_the_value_is_the_largest_syn_schedule_within_it(tcp: socket.socket, seconds: float) -> None:
    policy = Policy(connect_timeout=seconds)
    assert policy.connect_timeout == largest_schedule_within(seconds)
    assert type(policy.connect_timeout) is float
    policy.apply(tcp)
    held = tcp.getsockopt(TCP, socket.TCP_SYNCNT)
    assert syn_give_up_seconds(held) == policy.connect_timeout
    assert syn_give_up_seconds(held) <= seconds < syn_give_up_seconds(held + 1)
    assert Policy.from_socket(tcp).connect_timeout == policy.connect_timeout
    assert policy.applied_to(tcp)


@pytest.mark.parametrize("value", [0, 1, 2.999, 14648, -3])
def test_out_of_range_names_the_knob_the_option_and_the_range_and_changes_nothing(
    tcp: socket.socket, value: float
) -> None:
    before = tcp.getsockopt(TCP, socket.TCP_SYNCNT)
    with pytest.raises(ValueError) as info:
        Policy(idle=60, connect_timeout=value)
    text = str(info.value)
    assert text.startswith(f"connect_timeout={value!r} is out of range"), text
    assert "TCP_SYNCNT" in text and "(3 s)" in text and "(14647 s)" in text, text
    assert tcp.getsockopt(TCP, socket.TCP_SYNCNT) == before


@pytest.mark.parametrize("value", [True, "5", b"5", [5]])
def test_wrong_types_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError, match="connect_timeout"):
        Policy(connect_timeout=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_is_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        Policy(connect_timeout=value)


def test_parse_str_repr_eq_hash_pickle() -> None:
    policy = Policy.parse("30m::10 user_timeout=5m connect_timeout=20s")
    assert (policy.idle, policy.count, policy.user_timeout, policy.connect_timeout) == (1800.0, 10, 300.0, 15.0)
    assert str(policy) == "30m::10 user_timeout=5m connect_timeout=15s"
    assert Policy.parse(str(policy)) == policy
    assert repr(policy) == "Policy(idle=1800.0, count=10, user_timeout=300.0, connect_timeout=15.0)"
    assert Policy.parse("on connect_timeout=5s") == Policy(connect_timeout=5) == Policy(connect_timeout=3)
    assert str(Policy.parse("off connect_timeout=1m")) == "off connect_timeout=31s"
    without = Policy.parse("30m::10 user_timeout=5m")
    assert policy != without and hash(policy) != hash(without)
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert pickle.loads(pickle.dumps(without)).connect_timeout is None


@pytest.mark.parametrize(
    "spec",
    [
        "on connect_timeout=5s connect_timeout=5s",  # twice
        "on connect_timeout=",
        "on connect_timeout=5x",
        "on connect_timeout=2s",  # below the first SYN schedule (3 s)
        "on connect-timeout=5s",
    ],
)
def test_parse_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match="connect_timeout|unexpected"):
        Policy.parse(spec)


@pytest.mark.parametrize("budget", [2, 3, 5, 6, 7, 10, 14, 15, 20, 31, 60, 127, 300, 3600])
def test_from_timeout_sets_the_budget(budget: int) -> None:
    policy = Policy.from_timeout(budget)
    # the budget, as the knob takes it: the largest SYN schedule within it (3 s at least)
    assert policy.connect_timeout == largest_schedule_within(max(budget, 3))
    assert policy.user_timeout is not None and policy.user_timeout <= budget
    # the connect ends at the earlier of the two, both set before the SYN: within the budget
    assert min(policy.connect_timeout, policy.user_timeout) <= budget


def test_a_refused_value_names_connect_timeout_and_tcp_syncnt(backend: ModuleType, tcp: socket.socket) -> None:
    """The kernel's refusal (TCP_SYNCNT 0 is EINVAL: 1 .. MAX_TCP_SYNCNT), from either backend."""
    mask = 1 << _platform.CONNECT_TIMEOUT
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(mask, 0, 0, 0, 0, -1, 0))
    exc = info.value
    assert exc.errno == errno.EINVAL
    assert (exc.knob, exc.option, exc.value) == ("connect_timeout", "TCP_SYNCNT", 0)  # type: ignore[attr-defined]
    assert "connect_timeout" in str(exc) and "TCP_SYNCNT" in str(exc)


def test_both_backends_read_it_back(backend: ModuleType, tcp: socket.socket) -> None:
    tcp.setsockopt(TCP, socket.TCP_SYNCNT, 4)
    assert backend.read(tcp)[1 + _platform.CONNECT_TIMEOUT] == 4
    backend.bind_policy(Policy, _capabilities.read_back_knobs())  # as kaext._policy does for the one in use
    assert backend.read_policy(Policy, tcp).connect_timeout == syn_give_up_seconds(4) == 31.0


def test_shapes_carry_it_where_the_library_can() -> None:
    policy = Policy(idle=60, interval=10, count=5, connect_timeout=10)
    assert (TCP, socket.TCP_SYNCNT, 2) in policy.socket_options()
    assert policy.tcp_options()[socket.TCP_SYNCNT] == 2
    assert policy.libpq_params()["connect_timeout"] == 7  # libpq's own timer, whole seconds
    assert "TCP_SYNCNT" not in policy.named_options()  # pika takes no connect option
    with socket.socket() as s:
        for level, name, value in policy.socket_options():
            s.setsockopt(level, name, value)
        assert Policy.from_socket(s) == Policy(idle=60, interval=10, count=5, user_timeout=0, connect_timeout=7)


def test_parse_takes_the_words_without_a_keepalive_part() -> None:
    """``connect_timeout=5s`` alone (and ``user_timeout=...`` alone) is ``on`` with those words."""
    assert kaext.Policy.parse("connect_timeout=7s") == kaext.Policy.parse("on connect_timeout=7s")
    assert kaext.Policy.parse("user_timeout=9s connect_timeout=7s") == kaext.Policy(user_timeout=9, connect_timeout=7)
    with pytest.raises(ValueError, match=r"unexpected 'connect_timeout=7s'"):
        kaext.Policy.parse("connect_timeout=7s connect_timeout=7s")
    with pytest.raises(ValueError, match=r"unexpected 'idle=7s'"):
        kaext.Policy.parse("idle=7s")
