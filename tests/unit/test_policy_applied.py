"""``Policy.applied_to(sock)``: is the policy in force?  Only the knobs it sets, in the OS's units.

The sockets are changed behind kaext's back with ``socket.setsockopt`` (the kernel's own
options), so a True or False is checked against what the kernel holds, not against kaext.
"""

from __future__ import annotations

import errno
import socket

import pytest

import kaext
from kaext import Policy

CAPS = kaext.capabilities()
LINUX_OPTIONS = all(hasattr(socket, name) for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"))


def _policies() -> list[Policy]:
    out = [Policy(), Policy(keepalive=False), Policy.parse("7s:3s:4 user_timeout=19s")]
    if "idle" in CAPS and "interval" in CAPS:
        out += [Policy.for_middlebox("aws-nlb"), Policy(idle=60), Policy(idle=1.5), Policy(interval=7)]
    if "user_timeout" in CAPS:
        out += [Policy(user_timeout=30), Policy(user_timeout=0.0015), Policy(keepalive=False, user_timeout=12)]
    return out


@pytest.mark.parametrize("policy", _policies(), ids=str)
@pytest.mark.parametrize("as_int", [False, True], ids=["socket", "int-fd"])
def test_true_after_apply(tcp_pair: tuple[socket.socket, socket.socket], policy: Policy, as_int: bool) -> None:
    client, _ = tcp_pair
    target = client.fileno() if as_int else client
    policy.apply(target)
    assert policy.applied_to(target) is True


@pytest.mark.skipif(not LINUX_OPTIONS, reason="Linux's option names")
def test_only_the_knobs_the_policy_sets_count(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    policy = Policy(idle=60)
    policy.apply(client)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 9)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    assert policy.applied_to(client) is True
    assert Policy.from_socket(client) != policy  # the question from_socket cannot answer


@pytest.mark.skipif(not LINUX_OPTIONS, reason="Linux's option names")
@pytest.mark.parametrize(
    ("level", "option", "value"),
    [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), 176),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), 36),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), 6),
    ],
    ids=["SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"],
)
def test_false_when_one_option_differs(
    tcp_pair: tuple[socket.socket, socket.socket], level: int, option: int, value: int
) -> None:
    client, _ = tcp_pair
    policy = Policy.for_middlebox("aws-nlb")  # 175 s : 35 s : 5, user timeout left alone
    policy.apply(client)
    client.setsockopt(level, option, value)
    assert policy.applied_to(client) is False


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="no TCP_USER_TIMEOUT here")
def test_the_user_timeout_is_compared_in_milliseconds(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    policy = Policy(user_timeout=0.0015)  # rounded up to 2 ms, the option's unit
    policy.apply(client)
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2
    assert policy.applied_to(client) is True
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1)
    assert policy.applied_to(client) is False


def test_a_fresh_socket(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    keepalive_on = client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert Policy().applied_to(client) is keepalive_on
    assert Policy(keepalive=False).applied_to(client) is not keepalive_on
    if "idle" in CAPS:
        default_idle = kaext.get_keepalive(client).idle
        assert default_idle is not None
        other = Policy(idle=default_idle + 1)
        assert other.applied_to(client) is False


def test_reading_changes_nothing(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    Policy.parse("7s:3s:4 user_timeout=19s").apply(client)
    before = Policy.from_socket(client)
    for policy in _policies():
        policy.applied_to(client)
    assert Policy.from_socket(client) == before


def test_errors() -> None:
    closed = socket.socket()
    closed.close()
    with pytest.raises(OSError) as info:
        Policy().applied_to(closed)
    assert info.value.errno == errno.EBADF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError) as info:
        Policy(user_timeout=30 if "user_timeout" in CAPS else None).applied_to(udp)
    with pytest.raises(
        TypeError, match="expected a socket, an object with fileno\\(\\), or an int file descriptor; got str"
    ):
        Policy().applied_to("3")  # type: ignore[arg-type]
