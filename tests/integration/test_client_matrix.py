"""The client matrix of docs/clients.md: every client's recipe against a server that goes away.

Real servers on 127.0.0.1 (Debian's redis-server, PostgreSQL, MariaDB, RabbitMQ, mosquitto,
memcached; Python servers for HTTP, WebSocket and gRPC), each started once for the module.
Each client runs in two processes of its own (``tests/support/client_matrix.py``): with its
recipe and without kaext.  Each process runs the five failures at once, each through a
``kaext.testing.Path`` of its own.  The code a cell runs is the code block the page shows.

The run writes its results to ``$KAEXT_CLIENT_MATRIX_OUT`` when that is set (the committed
``docs/data/client_matrix.json`` comes from such a run; ``tools/render_client_matrix.py``
renders the page's table, the figure and the README excerpt from it), and asserts that every
cell with kaext ended within ``1.5 * T + 2`` s of its failure.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import client_matrix
import measured
import pytest
import servers

pytestmark = [pytest.mark.root, pytest.mark.one_implementation]

_SUMMARY: list[str] = []


# --------------------------------------------------------------------------------------
# Python servers: HTTP (a request, a stream that stops, a watch), WebSocket, gRPC
# --------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith(("/stream", "/watch")):
            first = b'{"type": "ADDED", "object": {}}\n' if self.path.startswith("/watch") else b"first\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if self.path.startswith("/watch") else "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
            self.wfile.flush()
            with contextlib.suppress(OSError):
                while self.rfile.read(1):  # nothing more until the client goes away
                    pass
            self.close_connection = True
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _websocket_server() -> Iterator[int]:
    sync_server = servers.library("websockets.sync.server")

    def handler(ws: Any) -> None:
        with contextlib.suppress(Exception):
            for message in ws:
                if message == "wait":
                    ws.recv()  # hold: answer nothing until the next message
                else:
                    ws.send(message)

    server = sync_server.serve(handler, "127.0.0.1", 0, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()


@contextlib.contextmanager
def _grpc_server() -> Iterator[int]:
    grpc = servers.library("grpc")
    forever = threading.Event()

    def wait(request: bytes, context: Any) -> Iterator[bytes]:
        while context.is_active() and not forever.wait(0.5):
            pass
        return
        yield b""

    handler = grpc.method_handlers_generic_handler(
        "kaext.Test",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(lambda request, context: b"pong"),
            "Wait": grpc.unary_stream_rpc_method_handler(wait),
        },
    )
    # pings as often as the clients' policies send them (grpc_options)
    options = [
        ("grpc.http2.min_ping_interval_without_data_ms", 100),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=64), options=options)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        forever.set()
        server.stop(0)


_STARTERS = {
    "redis": servers.redis_server,
    "postgres": servers.postgres_server,
    "mariadb": servers.mariadb_server,
    "rabbitmq": servers.rabbitmq_server,
    "mosquitto": servers.mosquitto_server,
    "memcached": servers.memcached_server,
    "http": _http_server,
    "websocket": _websocket_server,
    "grpc": _grpc_server,
}


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, tuple[str, int]]]:
    """Every server, started at once (RabbitMQ takes the longest); ``kind -> (host, port)``."""
    import kaext
    from kaext import testing

    if kaext.IMPLEMENTATION != "c":
        # 100 s of real clients: the main suite runs it once (the recipes call the public API
        # only, which both implementations share); the pure-Python rerun has a time budget
        pytest.skip("the client matrix runs in the main suite, on the C extension")
    if not client_matrix.PAGE.exists():
        pytest.skip("not a source checkout (docs/clients.md holds the recipes)")
    for module in ("redis", "psycopg", "asyncpg", "sqlalchemy", "pymysql", "kombu", "pika", "paho.mqtt",
                   "pymemcache", "websockets", "grpc", "httpx", "requests", "aiohttp"):  # fmt: skip
        servers.library(module)
    reason = testing.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"the client matrix cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"the client matrix: {reason}")
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}

        def start(kind: str) -> None:
            ports[kind] = stack.enter_context(_STARTERS[kind]())

        with concurrent.futures.ThreadPoolExecutor(len(_STARTERS)) as pool:
            for future in [pool.submit(start, kind) for kind in _STARTERS]:
                future.result()
        yield {kind: ("127.0.0.1", port) for kind, port in ports.items()}


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, f"client matrix (Policy.from_timeout({client_matrix.T}))", _SUMMARY)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _run_cells(name: str, mode: str, targets: dict[str, tuple[str, int]], lock: str) -> list[dict[str, Any]]:
    script = Path(client_matrix.__file__)
    timeout = client_matrix.SETUP + client_matrix.IDLE + client_matrix.CAP + 120
    proc = subprocess.Popen(
        [sys.executable, str(script), name, mode, json.dumps(targets)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, KAEXT_MATRIX_LOCK=lock),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # it printed its result before removing its paths, if it got that far; what a killed
        # process leaves (its nftables tables) is removed here
        proc.kill()
        out, err = proc.communicate()
        _remove_tables_of(proc.pid)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            cells: list[dict[str, Any]] = json.loads(line[len("RESULT ") :])
            return cells
    raise AssertionError(f"{name} ({mode} kaext) printed no result: {out[-2000:]} {err[-2000:]}")


def _remove_tables_of(pid: int) -> None:
    """Delete the nftables tables of a killed cell process (kaext.testing names them ``kaext_<pid>_<n>``)."""
    listing = subprocess.run(["nft", "-j", "list", "tables", "inet"], capture_output=True, text=True, timeout=120)
    for item in json.loads(listing.stdout or "{}").get("nftables", []):
        table = item.get("table", {}).get("name", "")
        if table.startswith(f"kaext_{pid}_"):
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=120)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("redis", "psycopg", "asyncpg", "SQLAlchemy", "PyMySQL", "kombu", "amqp", "pika", "paho-mqtt",
                 "pymemcache", "websockets", "grpcio", "httpx", "requests", "urllib3", "aiohttp"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def test_every_recipe_is_in_the_matrix() -> None:
    """Each client block of the page is a cell row, and each row has its block."""
    if not client_matrix.PAGE.exists():
        pytest.skip("not a source checkout (docs/clients.md holds the recipes)")
    assert set(client_matrix.recipes()) == set(client_matrix.CLIENTS)


def test_client_matrix(targets: dict[str, tuple[str, int]], tmp_path: Path) -> None:
    started = time.monotonic()
    jobs = [(name, mode) for name in client_matrix.CLIENTS for mode in ("with", "without")]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        lock = str(tmp_path / "nft.lock")
        futures = {job: pool.submit(_run_cells, *job, targets, lock) for job in jobs}
        cells = [cell for job in jobs for cell in futures[job].result()]
    took = time.monotonic() - started
    doc = {
        "T": client_matrix.T,
        "bound": client_matrix.BOUND,
        "cap": client_matrix.CAP,
        "forget_idle": client_matrix.FORGET,
        "idle": client_matrix.IDLE,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "versions": _versions(),
        "cells": cells,
    }
    out = os.environ.get("KAEXT_CLIENT_MATRIX_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
    for cell in cells:
        seconds = "-" if cell["seconds"] is None else f"{cell['seconds']:.2f} s"
        _SUMMARY.append(
            f"{cell['client']:<18} {cell['mode']:<7} {cell['failure']:<15} {cell['outcome']:<12} {seconds:>8}  "
            f"{cell['detail'][:100]}"
        )
    _SUMMARY.append(f"the matrix took {took:.1f} s")
    broken = [c for c in cells if c["outcome"] in ("setup failed", "ended early")]
    assert not broken, "cells that never measured anything:\n" + "\n".join(map(str, broken))
    late = [
        c
        for c in cells
        if c["mode"] == "with"
        and c["recipe"]
        and c["outcome"] != "n/a"
        and (c["outcome"] == "blocked" or c["seconds"] is None or c["seconds"] > client_matrix.BOUND)
    ]
    assert not late, f"cells with kaext that did not end within {client_matrix.BOUND} s:\n" + "\n".join(
        f"{c['client']} / {c['failure']}: {c['outcome']} {c['seconds']} s {c['detail']}" for c in late
    )
