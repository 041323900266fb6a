"""kaext.inject through real libraries with no socket hook of their own, against real servers.

requests, httpx's default ``Client()``, the OpenAI SDK, trio, anyio and asyncpg
(PostgreSQL): each connects its own way, and the options are read back with plain
getsockopt from the very socket the library opened, found through /proc by its
address (procsock.py).  Libraries and servers missing: a skip on a developer's
machine, a failure in CI (``servers.missing``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import servers
from procsock import need_proc, options, options_of

import kaext

pytestmark = [pytest.mark.one_implementation, pytest.mark.usefixtures("no_injection")]

SPEC = "7s:3s:4 user_timeout=19s"
WANT = (1, 7, 3, 4, 19_000)  # SO_KEEPALIVE on, then tcp(7) units


class _JSONHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; every answer is the OpenAI list shape; records each client's address."""

    protocol_version = "HTTP/1.1"
    clients: list[Any]

    def _answer(self) -> None:
        self.clients.append(self.client_address)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http() -> Iterator[tuple[str, list[Any]]]:
    """A loopback HTTP server: (base URL, list of client addresses seen)."""
    handler = type("Handler", (_JSONHandler,), {"clients": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.clients
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- real libraries ------------------------------------------------------------------------


def _client_port(clients: list[Any]) -> Any:
    assert clients, "the server saw no request"
    return clients[-1]


@need_proc
def test_requests(http: tuple[str, list[Any]]) -> None:
    requests = servers.library("requests")
    url, clients = http
    kaext.inject(SPEC)
    with requests.Session() as session:
        assert session.get(url + "/x", timeout=30).json() == {"object": "list", "data": []}
        assert options_of(_client_port(clients)) == WANT  # the pooled socket, still open


@need_proc
def test_httpx_default_client(http: tuple[str, list[Any]]) -> None:
    httpx = servers.library("httpx")
    url, clients = http
    kaext.inject(SPEC)
    with httpx.Client() as client:  # default transport: no socket_options anywhere
        assert client.get(url + "/x", timeout=30).status_code == 200
        assert options_of(_client_port(clients)) == WANT


@need_proc
def test_openai_sdk(http: tuple[str, list[Any]]) -> None:
    openai = servers.library("openai")
    url, clients = http
    kaext.inject(SPEC)
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)
    try:
        assert list(client.models.list()) == []
        assert options_of(_client_port(clients)) == WANT
    finally:
        client.close()


@need_proc
def test_trio_and_anyio(listener: socket.socket) -> None:
    trio = servers.library("trio")
    anyio = servers.library("anyio")
    host, port = listener.getsockname()
    kaext.inject(SPEC)

    async def with_trio() -> Any:
        stream = await trio.open_tcp_stream(host, port)
        try:
            return options_of(stream.socket.getsockname())
        finally:
            await stream.aclose()

    async def with_anyio() -> Any:
        async with await anyio.connect_tcp(host, port) as stream:
            return options_of(stream.extra(anyio.abc.SocketAttribute.local_address))

    assert trio.run(with_trio) == WANT
    assert anyio.run(with_anyio, backend="asyncio") == WANT
    assert anyio.run(with_anyio, backend="trio") == WANT


@need_proc
def test_trio_server_accepts_with_policy() -> None:
    trio = servers.library("trio")
    kaext.inject(SPEC, accepted=True)
    got: list[Any] = []

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                stream = await listeners[0].accept()
                got.append(options(stream.socket))
                await stream.aclose()

            nursery.start_soon(serve)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.aclose()
        await listeners[0].aclose()

    trio.run(main)
    assert got == [WANT]


@need_proc
def test_asyncpg() -> None:
    asyncpg = servers.library("asyncpg")
    kaext.inject(SPEC)

    async def main(port: int) -> Any:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
        try:
            assert await conn.fetchval("select 41 + 1") == 42
            return options_of(None, peer=("127.0.0.1", port))
        finally:
            await conn.close()

    with servers.postgres_server() as port:
        assert asyncio.run(main(port)) == WANT
