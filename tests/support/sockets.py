"""Real TCP sockets in every state the API must handle, shared by the test modules."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def have_ipv6() -> bool:
    """Can we bind the IPv6 loopback here?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = have_ipv6()
STATES = ("unconnected", "listening", "client", "server")
#: pytest params (family, state) for every kind of TCP socket; IPv6 skipped where unavailable.
KINDS = [
    pytest.param(
        (family, state),
        id=f"{family}-{state}",
        marks=pytest.mark.skipif(family == "ipv6" and not HAVE_IPV6, reason="no IPv6 loopback"),
    )
    for family in ("ipv4", "ipv6")
    for state in STATES
]


@contextmanager
def open_socket(family: str, state: str) -> Iterator[socket.socket]:
    """A TCP socket of the given family in the given state (client/server: a connected loopback pair)."""
    af, host = (socket.AF_INET, "127.0.0.1") if family == "ipv4" else (socket.AF_INET6, "::1")
    if state == "unconnected":
        with socket.socket(af, socket.SOCK_STREAM) as s:
            yield s
        return
    with socket.socket(af, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen()
        if state == "listening":
            yield listener
            return
        with socket.create_connection(listener.getsockname()[:2]) as client:
            server, _ = listener.accept()
            with server:
                yield client if state == "client" else server


class HasFileno:
    """Not a socket, only something with fileno(): what asyncio and trio hand out."""

    def __init__(self, s: socket.socket) -> None:
        self._s = s

    def fileno(self) -> int:
        return self._s.fileno()


def raw(s: Any) -> tuple[int, int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT) via Python's socket module."""
    tcp = socket.IPPROTO_TCP
    return (
        s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        s.getsockopt(tcp, socket.TCP_KEEPIDLE),
        s.getsockopt(tcp, socket.TCP_KEEPINTVL),
        s.getsockopt(tcp, socket.TCP_KEEPCNT),
        s.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    )


def syn_give_up_seconds(syncnt: int) -> float:
    """When Linux gives a connect with ``TCP_SYNCNT`` = ``syncnt`` up, in s after the first SYN.

    The kernel's own model (net/ipv4/tcp_timer.c, tcp_model_timeout): retransmissions with
    an initial RTO of 1 s (TCP_TIMEOUT_INIT) that doubles each time up to TCP_RTO_MAX
    (120 s); the connect is given up when all of them would have timed out.
    """
    rto, total = 1, 0
    for _ in range(syncnt + 1):
        total += rto
        rto = min(rto * 2, 120)
    return float(total)


def connect_timeout_of(s: Any) -> float:
    """The socket's ``TCP_SYNCNT`` as the seconds ``Policy.connect_timeout`` reads it back as."""
    return syn_give_up_seconds(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT))
