"""``Policy.from_socket``: read a socket's whole keepalive configuration back as one policy.

Each socket is configured with plain ``socket.setsockopt``; the policy read from it is
applied to a fresh socket, and both are compared through plain ``socket.getsockopt``:
the kernel says whether the state was reproduced.
"""

from __future__ import annotations

import errno
import socket
import warnings

import pytest
from sockets import KINDS, open_socket, raw

from kaext import Policy

pytestmark = pytest.mark.skipif(
    not all(hasattr(socket, n) for n in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")),
    reason="plain socket.getsockopt needs Linux's option names to check the result",
)

TCP = socket.IPPROTO_TCP


def configure(s: socket.socket, keepalive: int, idle: int, interval: int, count: int, user_timeout_ms: int) -> None:
    s.setsockopt(TCP, socket.TCP_KEEPIDLE, idle)
    s.setsockopt(TCP, socket.TCP_KEEPINTVL, interval)
    s.setsockopt(TCP, socket.TCP_KEEPCNT, count)
    s.setsockopt(TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)


def fresh_with_other_values() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    configure(s, 1, 11, 3, 2, 123_456)
    return s


@pytest.mark.parametrize("kind", KINDS)
def test_reproduces_every_knob_set_with_setsockopt(kind: tuple[str, str]) -> None:
    with open_socket(*kind) as s, fresh_with_other_values() as target:
        configure(s, 1, 301, 29, 7, 600_000)
        Policy.from_socket(s).apply(target)
        assert raw(target) == raw(s) == (1, 301, 29, 7, 600_000)


def test_values_never_set_are_reproduced_as_the_kernel_reports_them() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # idle/interval/count: sysctl defaults
        Policy.from_socket(s).apply(target)
        assert raw(target) == raw(s)


def test_keepalive_off_is_a_policy_that_turns_it_off() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        configure(s, 0, 40, 5, 3, 9_000)
        policy = Policy.from_socket(s)
        assert policy.keepalive is False
        policy.apply(target)
        assert raw(target)[0] == 0
        assert raw(target)[4] == raw(s)[4] == 9_000


def test_user_timeout_in_milliseconds_round_trips() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        configure(s, 1, 1, 1, 1, 2_501)  # not whole seconds; over idle + interval*count: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            Policy.from_socket(s).apply(target)
        assert raw(target)[4] == 2_501


def test_system_default_user_timeout_is_zero() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert Policy.from_socket(s).user_timeout == 0
        Policy.from_socket(s).apply(target)
        assert raw(target)[4] == 0


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (errno.ENOPROTOOPT, errno.EOPNOTSUPP)),
        (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), (errno.ENOPROTOOPT, errno.EOPNOTSUPP)),
    ],
    ids=["udp", "unix"],
)
def test_not_a_tcp_socket(make: object, expected: tuple[int, ...]) -> None:
    with make() as s:  # type: ignore[operator]
        # what the kernel answers a plain getsockopt of the same option with
        with pytest.raises(OSError) as plain:
            s.getsockopt(TCP, socket.TCP_KEEPIDLE)
        with pytest.raises(OSError) as exc:
            Policy.from_socket(s)
    assert plain.value.errno in expected
    assert exc.value.errno in expected


def test_closed_socket() -> None:
    s = socket.socket()
    fd = s.detach()
    socket.socket(fileno=fd).close()
    with pytest.raises(OSError) as exc:
        Policy.from_socket(fd)
    assert exc.value.errno == errno.EBADF
