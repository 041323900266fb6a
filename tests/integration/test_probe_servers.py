"""kaext-probe against servers that, not the path, end idle connections or make them not
idle: one that resets each connection at once, one that keeps sending, one that stops
accepting after two connections; and a name that does not resolve.  Each is reported as
what it is (exit status 1, ``outcome`` in the JSON), within the documented time bound.
Real servers on loopback, the probe as a real process."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kaext import probe

MAX = 6


@contextlib.contextmanager
def server(handle: Callable[[socket.socket], None], backlog: int = 128, accept: int | None = None) -> Iterator[int]:
    """A loopback server handling each accepted connection in a thread (``accept``: only that
    many are accepted, then the listener stays open without accepting); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        n = 0
        listener.settimeout(0.1)
        while not stop.is_set() and (accept is None or n < accept):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n += 1
            held.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


def reset_at_once(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    conn.close()


def chat(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn.sendall(b"tick\n")
            time.sleep(0.2)


def hold(conn: socket.socket) -> None:
    pass  # kept open (and closed) by server()


def run_probe(port: int, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kaext.probe", "127.0.0.1", str(port), "--max", str(MAX), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    result = json.loads(done.stdout) if "--json" in args and done.stdout else {}
    return done, result, took


def test_a_server_that_resets_at_once_is_not_a_path_timeout() -> None:
    """Before: "the path forgets idle connections after 0.0 s", exit 0."""
    with server(reset_at_once) as port:
        done, result, took = run_probe(port, "--json")
    assert done.returncode == 1, done.stderr
    assert result["outcome"] == "server_resets", result
    assert result["idle_timeout"] is None and result["policy"] is None, result
    assert result["server_reset_after"] is not None and result["server_reset_after"] < 0.5, result
    assert took < probe.time_bound(MAX) + 5 and took < 10, took  # it stops at the first reset
    with server(reset_at_once) as port:
        text, _, _ = run_probe(port)
    assert text.returncode == 1
    assert "no idle timeout measured: the server resets connections" in text.stdout, text.stdout


def test_a_server_that_keeps_sending_is_reported_within_the_time_bound() -> None:
    """Before: with --max 6 still running at 40 s."""
    with server(chat) as port:
        done, result, took = run_probe(port, "--json")
    assert done.returncode == 1, done.stderr
    assert result["outcome"] == "server_sends", result
    assert result["idle_timeout"] is None and result["policy"] is None, result
    assert result["server_sent_after"] is not None and result["server_sent_after"] < 1, result
    assert took < probe.time_bound(MAX) + 5, (took, probe.time_bound(MAX))
    with server(chat) as port:
        text, _, _ = run_probe(port)
    assert "no idle timeout measured: the server sends data unasked" in text.stdout, text.stdout


def test_a_server_that_stops_accepting_after_two_connections() -> None:
    """Before: a 42 s run reporting 6 connections and no word of the limit."""
    # backlog 0: the kernel queues one more handshake beyond the two accepted, then drops SYNs
    with server(hold, backlog=0, accept=2) as port:
        time.sleep(0.2)
        done, result, took = run_probe(port, "--json")
    assert done.returncode == 1, done.stderr
    assert result["outcome"] == "connection_limit", result
    assert 2 <= result["connection_limit"] <= 4, result
    assert result["connections"] == result["connection_limit"] + 1  # the one refused, counted as opened
    assert result["idle_timeout"] is None, result  # the ones it took survived (loopback forgets nothing)
    assert took < probe.time_bound(MAX) + 5, (took, probe.time_bound(MAX))
    with server(hold, backlog=0, accept=2) as port:
        time.sleep(0.2)
        text, _, _ = run_probe(port)
    assert f"the server took {result['connection_limit']} connections and refused or ignored the next" in text.stdout


@pytest.mark.parametrize("command", [["-m", "kaext.probe"], ["-m", "kaext", "probe"]])
def test_a_name_that_does_not_resolve_is_a_resolver_failure(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command, "nosuchhost.invalid", "80"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "cannot resolve 'nosuchhost.invalid'" in line, line
    assert "113" not in line and "No route to host" not in line, line
    with pytest.raises(socket.gaierror) as info:
        probe.measure("nosuchhost.invalid", 80)
    assert info.value.errno in (socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
