"""TCP_INFO as kaext reads it (kaext.verify --live's report, kaext.probe's timing), checked
against what the kernel did to a real loopback connection."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from kaext import _tcp_info, verify

pytestmark = [
    pytest.mark.one_implementation,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is read on Linux"),
]

QUIET = 0.6  # s the connection stays quiet before TCP_INFO is read


def test_times_since_data_and_ack_were_received(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    server.sendall(b"x")  # data for the client, acknowledged by it
    assert client.recv(1) == b"x"
    client.sendall(b"y")  # and the client's data acknowledged by the server
    assert server.recv(1) == b"y"
    time.sleep(QUIET)
    info = _tcp_info.tcp_info(client)
    assert info is not None
    assert info.state == 1  # TCP_ESTABLISHED (include/net/tcp_states.h)
    assert info.probes == 0
    # the kernel counts in jiffies: at least the quiet time less a tick, not much more
    assert QUIET * 1000 - 20 <= info.last_data_recv_ms <= QUIET * 1000 + 500
    assert QUIET * 1000 - 20 <= info.last_ack_recv_ms <= QUIET * 1000 + 500
    assert info.rto_us >= 200_000  # TCP_RTO_MIN (include/net/tcp.h)


def test_verify_reports_the_same_fields(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    server.sendall(b"x")
    assert client.recv(1) == b"x"
    time.sleep(QUIET)
    shown = verify._tcp_info(client)
    assert shown is not None
    assert QUIET * 1000 - 20 <= shown["last_data_recv_ms"] <= QUIET * 1000 + 500
    assert shown["state"] == 1 and shown["probes"] == 0


def test_closed_socket_reads_none(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    client.close()
    assert _tcp_info.tcp_info(client) is None
