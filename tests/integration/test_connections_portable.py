"""kaext.connections() on every platform: this process's own sockets, or a clear ENOSYS.

Runs wherever the tests run (the wheel builds run it on macOS and Windows too);
the Linux-only tests against other processes are in test_connections.py.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest

import kaext
from kaext import _platform


def test_own_sockets_or_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        server, _ = listener.accept()
        with server:
            if _platform.CONNECTIONS == "":
                with pytest.raises(OSError, match="not available") as info:
                    kaext.connections()
                assert info.value.errno == errno.ENOSYS
                return
            rows = {r.fd: r for r in kaext.connections()}
            for sock, state in ((listener, "LISTEN"), (client, "ESTABLISHED"), (server, "ESTABLISHED")):
                row = rows[sock.fileno()]
                assert (row.pid, row.family, row.state) == (os.getpid(), "IPv4", state)
                assert row.local == sock.getsockname()[:2]
                assert row.remote == (("0.0.0.0", 0) if state == "LISTEN" else sock.getpeername()[:2])
                assert row.keepalive is not None
                assert row.keepalive.enabled == bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
                assert row.keepalive == kaext.get_keepalive(sock)
                if _platform.CONNECTIONS == "fds":
                    assert (row.timer, row.timer_left, row.probes) == (None, None, None)
            assert rows[client.fileno()].keepalive.enabled  # type: ignore[union-attr]


def test_another_process_where_only_own_sockets_can_be_listed() -> None:
    if _platform.CONNECTIONS == "proc":
        pytest.skip("Linux reads other processes (test_connections.py)")
    with pytest.raises(OSError) as info:
        kaext.connections(os.getppid())
    assert info.value.errno == errno.ENOSYS


def test_own_row_without_the_c_library_through_ctypes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python without ctypes (or a C library dlopen(NULL) does not reach): the row of one of
    this process's sockets is still read, through a socket object over a duplicate, and the
    descriptor is left open and in its blocking mode (as the pure backend's own fallback)."""
    from kaext import _connections, _pure_fd

    def no_ctypes() -> tuple[object, object]:
        raise ImportError("No module named '_ctypes'")

    monkeypatch.setattr(_pure_fd, "_libc", no_ctypes)
    monkeypatch.setattr(_pure_fd, "_RAW_OK", None)
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        kaext.set_keepalive(client, idle=61)
        row = _connections._own_fd(os.getpid(), client.fileno())
        assert row is not None
        assert (row.state, row.local, row.remote) == ("ESTABLISHED", client.getsockname(), client.getpeername())
        assert row.keepalive == kaext.get_keepalive(client)
        assert client.getblocking() and client.fileno() >= 0
        client.sendall(b"x")  # still open and usable
