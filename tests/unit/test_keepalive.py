"""set_keepalive / get_keepalive / disable_keepalive on real sockets.

Every value is read back twice: through kaext and through Python's own
``socket.getsockopt``, so a bug that is symmetric in kaext cannot hide.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from paths import DATA
from sockets import KINDS, HasFileno, open_socket, raw

import kaext
from kaext import KeepaliveState

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options")

RANGES = json.loads((DATA / "reference.json").read_text())["ranges"]["linux"]


@pytest.fixture(params=KINDS)
def sock(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    with open_socket(*request.param) as s:
        yield s


def state_of(s: socket.socket) -> KeepaliveState:
    """What kaext.get_keepalive should say, computed from plain getsockopt."""
    on, idle, interval, count, _ = raw(s)
    return KeepaliveState(enabled=bool(on), idle=float(idle), interval=float(interval), count=count)


# --------------------------------------------------------------------------------------
# round trips on every kind of socket
# --------------------------------------------------------------------------------------


def test_get_keepalive_of_untouched_socket(sock: socket.socket) -> None:
    state = kaext.get_keepalive(sock)
    assert state == state_of(sock)
    assert state.enabled is False
    assert type(state.idle) is float and type(state.interval) is float and type(state.count) is int


@pytest.mark.parametrize(
    ("idle", "interval", "count"),
    [(60, 10, 5), (1, 1, 1), (32767, 32767, 127), (7200, 75, 9), (3, 32767, 1)],
)
def test_round_trip(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    assert kaext.set_keepalive(sock, idle=idle, interval=interval, count=count) is None
    assert raw(sock) == (1, idle, interval, count, 0)
    assert kaext.get_keepalive(sock) == KeepaliveState(True, float(idle), float(interval), count)


def test_none_leaves_a_knob_as_it_was(sock: socket.socket) -> None:
    kaext.set_keepalive(sock, idle=100, interval=20, count=4)
    kaext.set_keepalive(sock, interval=7)
    assert raw(sock) == (1, 100, 7, 4, 0)
    kaext.set_keepalive(sock, count=3)
    assert raw(sock) == (1, 100, 7, 3, 0)
    kaext.set_keepalive(sock, idle=50, interval=None, count=None)
    assert raw(sock) == (1, 50, 7, 3, 0)
    kaext.set_keepalive(sock)
    assert raw(sock) == (1, 50, 7, 3, 0)
    assert kaext.get_keepalive(sock) == KeepaliveState(True, 50.0, 7.0, 3)


def test_bare_set_keepalive_only_turns_it_on(sock: socket.socket) -> None:
    before = raw(sock)
    assert before[0] == 0
    kaext.set_keepalive(sock)
    assert raw(sock) == (1, *before[1:])


def test_disable_keeps_the_knobs(sock: socket.socket) -> None:
    kaext.set_keepalive(sock, idle=33, interval=44, count=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1234)
    assert kaext.disable_keepalive(sock) is None
    assert raw(sock) == (0, 33, 44, 5, 1234)
    assert kaext.get_keepalive(sock) == KeepaliveState(False, 33.0, 44.0, 5)
    kaext.disable_keepalive(sock)  # idempotent
    assert raw(sock) == (0, 33, 44, 5, 1234)
    kaext.set_keepalive(sock)  # on again, with the same knobs
    assert raw(sock) == (1, 33, 44, 5, 1234)


def test_disable_on_untouched_socket(sock: socket.socket) -> None:
    before = raw(sock)
    kaext.disable_keepalive(sock)
    assert raw(sock) == before


def test_get_keepalive_sees_plain_setsockopt(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 11)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 22)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 33)
    assert kaext.get_keepalive(sock) == KeepaliveState(True, 11.0, 22.0, 33)


# --------------------------------------------------------------------------------------
# range ends (from the reference data, not from kaext)
# --------------------------------------------------------------------------------------

OPTION = {"idle": socket.TCP_KEEPIDLE, "interval": socket.TCP_KEEPINTVL, "count": socket.TCP_KEEPCNT}


@pytest.mark.parametrize("knob", ["idle", "interval", "count"])
@pytest.mark.parametrize("end", [0, 1])
def test_range_ends(tcp: socket.socket, knob: str, end: int) -> None:
    value = RANGES[knob][end]
    kaext.set_keepalive(tcp, **{knob: value})
    assert tcp.getsockopt(socket.IPPROTO_TCP, OPTION[knob]) == value
    assert getattr(kaext.get_keepalive(tcp), knob) == value


@pytest.mark.parametrize("knob", ["idle", "interval"])
def test_range_ends_as_timedelta_and_float(tcp: socket.socket, knob: str) -> None:
    lo, hi = RANGES[knob]
    for value in (timedelta(seconds=lo), float(hi), timedelta(seconds=hi), hi - 0.5):
        kaext.set_keepalive(tcp, **{knob: value})
        expected = lo if value == timedelta(seconds=lo) else hi
        assert tcp.getsockopt(socket.IPPROTO_TCP, OPTION[knob]) == expected


# --------------------------------------------------------------------------------------
# value types and rounding up
# --------------------------------------------------------------------------------------

DURATIONS = [
    (42, 42),
    (42.0, 42),
    (Fraction(84, 2), 42),
    (Decimal("42"), 42),
    (timedelta(seconds=42), 42),
    (timedelta(minutes=2), 120),
    (timedelta(hours=1, seconds=1), 3601),
    # fractions of a second round UP: a timer never fires earlier than asked
    (1.2, 2),
    (0.001, 1),
    (0.5, 1),
    (59.999, 60),
    (1.000000001, 2),
    (1e-12, 1),
    (Fraction(85, 2), 43),
    (Fraction(1, 3), 1),
    (Decimal("42.5"), 43),
    (Decimal("0.000000001"), 1),
    (timedelta(seconds=42, microseconds=1), 43),
    (timedelta(microseconds=1), 1),
    (32766.000001, 32767),
]


@pytest.mark.parametrize(("value", "expected"), DURATIONS, ids=[repr(v) for v, _ in DURATIONS])
@pytest.mark.parametrize("knob", ["idle", "interval"])
def test_duration_types_and_rounding(tcp: socket.socket, knob: str, value: object, expected: int) -> None:
    kaext.set_keepalive(tcp, **{knob: value})
    assert tcp.getsockopt(socket.IPPROTO_TCP, OPTION[knob]) == expected
    assert getattr(kaext.get_keepalive(tcp), knob) == float(expected)


def test_count_accepts_int_subclasses(tcp: socket.socket) -> None:
    class Probes(int):
        pass

    kaext.set_keepalive(tcp, count=Probes(7))
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 7


def test_int_seconds_of_an_int_subclass(tcp: socket.socket) -> None:
    class Seconds(int):
        pass

    kaext.set_keepalive(tcp, idle=Seconds(77), interval=Seconds(8))
    assert raw(tcp)[:3] == (1, 77, 8)


# --------------------------------------------------------------------------------------
# the forms a socket may take
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["socket", "fileno", "int"])
def test_socket_forms(tcp_pair: tuple[socket.socket, socket.socket], form: str) -> None:
    client, server = tcp_pair
    target = {"socket": client, "fileno": HasFileno(client), "int": client.fileno()}[form]
    kaext.set_keepalive(target, idle=61, interval=6, count=7)
    assert raw(client) == (1, 61, 6, 7, 0)
    assert kaext.get_keepalive(target) == KeepaliveState(True, 61.0, 6.0, 7)
    kaext.disable_keepalive(target)
    assert raw(client)[0] == 0
    assert kaext.get_keepalive(target).enabled is False
    # kaext borrowed the descriptor: it is still open and the connection still works
    assert client.fileno() >= 0
    client.sendall(b"ping")
    assert server.recv(4) == b"ping"
    server.sendall(b"pong")
    assert client.recv(4) == b"pong"


def test_server_side_is_independent_of_client(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    before = raw(server)
    kaext.set_keepalive(client, idle=5, interval=6, count=7)
    assert raw(server) == before
    kaext.set_keepalive(server, idle=8, interval=9, count=10)
    assert raw(client) == (1, 5, 6, 7, 0)
    assert raw(server) == (1, 8, 9, 10, 0)


def test_asyncio_transport_socket() -> None:
    async def main() -> None:
        accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put(writer)
            data = await reader.read(5)
            writer.write(data.upper())
            await writer.drain()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            server_writer = await accepted.get()
            for w in (writer, server_writer):
                tsock = w.get_extra_info("socket")
                assert not isinstance(tsock, int)
                kaext.set_keepalive(tsock, idle=timedelta(seconds=90), interval=15, count=4)
                kaext.set_user_timeout(tsock, 2.5)
                assert kaext.get_keepalive(tsock) == KeepaliveState(True, 90.0, 15.0, 4)
                assert kaext.get_user_timeout(tsock) == 2.5
                assert raw(tsock) == (1, 90, 15, 4, 2500)  # TransportSocket.getsockopt
            kaext.Policy(idle=30, interval=3, count=2, user_timeout=9).apply(writer.get_extra_info("socket"))
            assert raw(writer.get_extra_info("socket")) == (1, 30, 3, 2, 9000)
            writer.write(b"hello")
            await writer.drain()
            assert await reader.readexactly(5) == b"HELLO"
            writer.close()
            await writer.wait_closed()
            server_writer.close()

    asyncio.run(main())


@pytest.mark.parametrize("blocking", [True, False])
def test_fd_blocking_mode_is_left_alone_even_with_a_default_timeout(blocking: bool) -> None:
    """socket.socket(fileno=...) would make an fd non-blocking under setdefaulttimeout."""
    import os

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            os.set_blocking(s.fileno(), blocking)
            kaext.set_keepalive(s.fileno(), idle=11)
            assert kaext.get_keepalive(s.fileno()).idle == 11
            assert os.get_blocking(s.fileno()) is blocking
    finally:
        socket.setdefaulttimeout(previous)
