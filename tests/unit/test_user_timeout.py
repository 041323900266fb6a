"""set_user_timeout / get_user_timeout (Linux TCP_USER_TIMEOUT, kernel unit ms) on real sockets."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from paths import DATA
from sockets import KINDS, HasFileno, open_socket

import kaext

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TCP_USER_TIMEOUT")

UT_MIN, UT_MAX = json.loads((DATA / "reference.json").read_text())["ranges"]["linux"]["user_timeout_ms"]


@pytest.fixture(params=KINDS)
def sock(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    with open_socket(*request.param) as s:
        yield s


def raw_ms(s: socket.socket) -> int:
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)


def keepalive_raw(s: socket.socket) -> tuple[int, int, int, int]:
    return (
        s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def test_fresh_socket_reads_zero(sock: socket.socket) -> None:
    assert raw_ms(sock) == 0
    value = kaext.get_user_timeout(sock)
    assert value == 0.0 and type(value) is float


@pytest.mark.parametrize("seconds", [1, 30, 2.5, 0.001, 600])
def test_round_trip(sock: socket.socket, seconds: float) -> None:
    assert kaext.set_user_timeout(sock, seconds) is None
    assert raw_ms(sock) == round(seconds * 1000)
    assert kaext.get_user_timeout(sock) == seconds


def test_zero_restores_system_default(sock: socket.socket) -> None:
    kaext.set_user_timeout(sock, 12)
    assert raw_ms(sock) == 12000
    kaext.set_user_timeout(sock, 0)
    assert raw_ms(sock) == 0
    assert kaext.get_user_timeout(sock) == 0.0
    for zero in (0.0, timedelta(0), Decimal(0), Fraction(0)):
        kaext.set_user_timeout(sock, 7)
        kaext.set_user_timeout(sock, zero)
        assert raw_ms(sock) == 0


MS_VALUES = [
    (1, 1000),
    (1.0, 1000),
    (0.25, 250),
    (1.001, 1001),
    (0.3, 300),
    # below the millisecond: round UP, never to 0 (which would mean "system default")
    (0.0015, 2),
    (0.0001, 1),
    (1e-12, 1),
    (Fraction(1, 3), 334),
    (Fraction(2, 1000), 2),
    (Decimal("0.0001"), 1),
    (Decimal("1.5"), 1500),
    (timedelta(milliseconds=1500), 1500),
    (timedelta(microseconds=1), 1),
    (timedelta(microseconds=1001), 2),
    (timedelta(days=1), 86_400_000),
    (Fraction(UT_MAX, 1000), UT_MAX),
    (Decimal(UT_MAX) / 1000, UT_MAX),
    (2147483.6465, UT_MAX),
]


@pytest.mark.parametrize(("value", "ms"), MS_VALUES, ids=[repr(v) for v, _ in MS_VALUES])
def test_millisecond_resolution_rounds_up(sock: socket.socket, value: object, ms: int) -> None:
    kaext.set_user_timeout(sock, value)  # type: ignore[arg-type]
    assert raw_ms(sock) == ms
    assert kaext.get_user_timeout(sock) == ms / 1000


def test_range_end_from_reference(sock: socket.socket) -> None:
    assert UT_MIN == 0
    kaext.set_user_timeout(sock, timedelta(milliseconds=UT_MAX))
    assert raw_ms(sock) == UT_MAX
    with pytest.raises(
        ValueError, match="user_timeout=datetime.timedelta\\(days=24, .* is out of range: TCP_USER_TIMEOUT accepts"
    ):
        kaext.set_user_timeout(sock, timedelta(milliseconds=UT_MAX + 1))
    assert raw_ms(sock) == UT_MAX


def test_does_not_touch_keepalive(sock: socket.socket) -> None:
    before = keepalive_raw(sock)
    kaext.set_user_timeout(sock, 5)
    assert keepalive_raw(sock) == before
    kaext.set_keepalive(sock, idle=10, interval=2, count=3)
    kaext.set_user_timeout(sock, 0)
    assert keepalive_raw(sock) == (1, 10, 2, 3)


def test_keepalive_functions_do_not_touch_user_timeout(sock: socket.socket) -> None:
    kaext.set_user_timeout(sock, 4.321)
    kaext.set_keepalive(sock, idle=10, interval=2, count=3)
    kaext.disable_keepalive(sock)
    assert raw_ms(sock) == 4321


def test_get_sees_plain_setsockopt(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 777)
    assert kaext.get_user_timeout(sock) == 0.777


@pytest.mark.parametrize("form", ["socket", "fileno", "int"])
def test_socket_forms(tcp_pair: tuple[socket.socket, socket.socket], form: str) -> None:
    client, server = tcp_pair
    target = {"socket": client, "fileno": HasFileno(client), "int": client.fileno()}[form]
    kaext.set_user_timeout(target, 3.25)
    assert raw_ms(client) == 3250
    assert kaext.get_user_timeout(target) == 3.25
    client.sendall(b"x")
    assert server.recv(1) == b"x"


# --------------------------------------------------------------------------------------
# A user timeout shorter than the keepalive schedule cuts probing short (Linux): warned
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    getattr(kaext.capabilities().get("user_timeout"), "option", None) != "TCP_USER_TIMEOUT",
    reason="only TCP_USER_TIMEOUT ends keepalive probing",
)
def test_a_user_timeout_shorter_than_the_probe_schedule_warns() -> None:
    import warnings

    with pytest.warns(RuntimeWarning, match=r"shorter than idle \+ interval\*count = 110 s") as caught:
        kaext.Policy(idle=60, interval=10, count=5, user_timeout=90)
    assert caught[0].filename == __file__  # points at the caller
    with pytest.warns(RuntimeWarning):
        kaext.Policy.parse("60:10:5 user_timeout=109")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kaext.Policy(idle=60, interval=10, count=5, user_timeout=110)  # equal: agrees
        kaext.Policy(idle=60, interval=10, count=5, user_timeout=0)  # 0: the system default
        kaext.Policy(idle=60, user_timeout=5)  # interval and count left to the system: not judged
        kaext.Policy.from_timeout(60)
        kaext.Policy.for_middlebox("aws-nlb")


@pytest.mark.skipif(
    getattr(kaext.capabilities().get("user_timeout"), "option", None) != "TCP_USER_TIMEOUT",
    reason="only TCP_USER_TIMEOUT ends keepalive probing",
)
def test_the_warning_points_at_the_callers_line_for_every_constructor() -> None:
    import inspect

    def line_here() -> int:
        frame = inspect.currentframe()
        assert frame is not None and frame.f_back is not None
        return frame.f_back.f_lineno

    for make in (
        lambda: (kaext.Policy.parse("60:10:5 user_timeout=30"), line_here())[1],
        lambda: (kaext.Policy(60, 10, 5, 30), line_here())[1],
    ):
        with pytest.warns(RuntimeWarning, match="shorter than") as caught:
            line = make()
        assert (caught[0].filename, caught[0].lineno) == (__file__, line)
