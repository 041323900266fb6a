"""kaext.adapters through the real libraries: requests, httpx (sync, asyncio, trio) and asyncio.

Against real loopback servers -- an HTTP server, the same server behind TLS, and a
real forward proxy (tinyproxy: absolute-URI GET for http://, CONNECT tunnels for
https://) -- every test reads the options back with plain ``socket.getsockopt``
from the very socket the library used: the one to the proxy when the request was
proxied (checked with ``getpeername``).  Whether a request goes through the proxy
is not decided here but by the library itself: each httpx case is run with plain
``httpx.Client(**kwargs)`` too, and both must reach the same peer.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import servers

import kaext
from kaext import adapters

IDLE, INTERVAL, COUNT = 37, 7, 4
USER_TIMEOUT_MS = 71_000  # longer than idle + interval * count = 65 s
HAS_USER_TIMEOUT = "user_timeout" in kaext.capabilities()
# read back through Python's own constant, where Python has it and it is the option kaext uses (Linux)
CHECK_USER_TIMEOUT = (
    HAS_USER_TIMEOUT and getattr(socket, "TCP_USER_TIMEOUT", None) == kaext.capabilities()["user_timeout"].optname
)
_IDLE_OPT = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _policy() -> kaext.Policy:
    return kaext.Policy(
        idle=IDLE, interval=INTERVAL, count=COUNT, user_timeout=USER_TIMEOUT_MS / 1000 if HAS_USER_TIMEOUT else None
    )


def read_options(sock_like: Any) -> dict[str, Any]:
    """Keepalive options and the peer of the socket behind ``sock_like``, via Python's socket module."""
    with socket.socket(fileno=os.dup(sock_like.fileno())) as s:
        out = {
            "peer": s.getpeername()[:2],
            "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            "idle": s.getsockopt(socket.IPPROTO_TCP, _IDLE_OPT),
            "interval": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        }
        if CHECK_USER_TIMEOUT:
            out["user_timeout"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    return out


def assert_policy_on(got: dict[str, Any]) -> None:
    expected = {"keepalive": 1, "idle": IDLE, "interval": INTERVAL, "count": COUNT}
    if CHECK_USER_TIMEOUT:
        expected["user_timeout"] = USER_TIMEOUT_MS
    assert {k: got[k] for k in expected} == expected


def _ca(cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert)


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without proxy variables from the environment running the suite."""
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    with servers.http_server() as url:
        yield url


@pytest.fixture(scope="module")
def tls_origin() -> Iterator[tuple[str, str]]:
    with servers.https_server() as pair:
        yield pair


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with servers.http_proxy() as url:
        yield url


# --------------------------------------------------------------------------------------
# The policy argument
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_policy_argument_accepts_a_policy_a_middlebox_name_or_a_spec() -> None:
    policy = _policy()
    assert adapters.as_policy(policy) is policy
    assert adapters.as_policy("aws-nlb") == kaext.Policy.for_middlebox("aws-nlb")
    assert adapters.as_policy("5m:30s:4") == kaext.Policy(idle=300, interval=30, count=4)
    with pytest.raises(ValueError, match="invalid keepalive spec"):
        adapters.as_policy("aws-nlbx")
    with pytest.raises(TypeError, match="kaext.Policy or a str"):
        adapters.as_policy(350)  # type: ignore[arg-type]


@pytest.mark.one_implementation
@pytest.mark.parametrize("typo", ["aws_nlb", "awsnlb", "aws-nbl"])
def test_a_string_that_is_neither_names_the_middleboxes(typo: str) -> None:
    from kaext import presets

    with pytest.raises(ValueError) as exc:
        adapters.as_policy(typo)
    message = str(exc.value)
    assert f"invalid keepalive spec {typo!r}" in message
    assert all(name in message for name in presets.MIDDLEBOXES)


@pytest.mark.one_implementation
def test_importing_adapters_imports_neither_requests_nor_httpx() -> None:
    import subprocess
    import sys

    code = "import sys, kaext.adapters; print('requests' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------


def _requests_get(session: Any, url: str, **kwargs: Any) -> dict[str, Any]:
    with session.get(url, stream=True, timeout=10, **kwargs) as r:
        assert r.status_code == 200
        got = read_options(r.raw.connection.sock)
        assert r.raw.read() == b"ok\n"
    return got


@pytest.mark.one_implementation
def test_requests_direct_http_and_https(origin: str, tls_origin: tuple[str, str]) -> None:
    requests = servers.library("requests")
    tls_url, cert = tls_origin
    with requests.Session() as session:
        session.trust_env = False
        adapter = adapters.KeepaliveAdapter(_policy())
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        for url, extra in ((origin, {}), (tls_url, {"verify": cert})):
            got = _requests_get(session, url + "/", **extra)
            assert got["peer"] == _address(url)
            assert_policy_on(got)
            assert got["nodelay"] == 1  # urllib3's default socket option kept


@pytest.mark.one_implementation
def test_requests_through_a_proxy_forward_and_connect(origin: str, tls_origin: tuple[str, str], proxy: str) -> None:
    requests = servers.library("requests")
    tls_url, cert = tls_origin
    proxies = {"http": proxy, "https": proxy}
    with requests.Session() as plain:
        plain.trust_env = False
        # without the adapter the socket to the proxy has no keepalive: the proxy path is what is tested
        assert _requests_get(plain, origin + "/", proxies=proxies)["keepalive"] == 0
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", adapters.KeepaliveAdapter(_policy()))
        session.mount("https://", adapters.KeepaliveAdapter(_policy()))
        for url, extra in ((origin, {}), (tls_url, {"verify": cert})):  # GET http://..., CONNECT
            got = _requests_get(session, url + "/", proxies=proxies, **extra)
            assert got["peer"] == _address(proxy)
            assert_policy_on(got)
            assert got["nodelay"] == 1


@pytest.mark.one_implementation
def test_requests_environment_proxy_and_no_proxy(origin: str, proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = servers.library("requests")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    with requests.Session() as session:
        session.mount("http://", adapters.KeepaliveAdapter(_policy()))
        got = _requests_get(session, origin + "/")
        assert got["peer"] == _address(proxy)
        assert_policy_on(got)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        got = _requests_get(session, origin + "/")
        assert got["peer"] == _address(origin)
        assert_policy_on(got)


_WITH_BUFFER: list[type] = []


def _adapter_with_a_buffer() -> type:
    """A subclass that passes its own socket_options (module level, so that it pickles)."""
    if not _WITH_BUFFER:
        global WithBuffer

        class WithBuffer(adapters.KeepaliveAdapter):  # type: ignore[no-redef]
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                kwargs["socket_options"] = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]
                super().init_poolmanager(*args, **kwargs)

        WithBuffer.__qualname__ = "WithBuffer"
        _WITH_BUFFER.append(WithBuffer)
    return _WITH_BUFFER[0]


@pytest.mark.one_implementation
def test_requests_adapter_keeps_a_subclass_socket_options_and_pickles(origin: str) -> None:
    requests = servers.library("requests")
    WithBuffer = _adapter_with_a_buffer()
    adapter = pickle.loads(pickle.dumps(WithBuffer("5m:30s:4", pool_maxsize=3)))
    assert adapter.policy == kaext.Policy(idle=300, interval=30, count=4)
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", adapter)
        with session.get(origin + "/", stream=True, timeout=10) as r:
            sock = r.raw.connection.sock
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
            assert sock.getsockopt(socket.IPPROTO_TCP, _IDLE_OPT) == 300
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the subclass replaced the base


# --------------------------------------------------------------------------------------
# httpx, sync: the same client arguments, with and without kaext, reach the same peer
# --------------------------------------------------------------------------------------


def _httpx_get(client: Any, url: str) -> dict[str, Any]:
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        got = read_options(r.extensions["network_stream"].get_extra_info("socket"))
        assert r.read() == b"ok\n"
    return got


# (name, environment, client kwargs as a function of the proxy URL, via the proxy?)
HTTPX_CASES = [
    ("direct", {}, lambda p, cert: {"verify": _ca(cert)}, False),
    ("env HTTP(S)_PROXY", {"HTTP_PROXY": "{p}", "HTTPS_PROXY": "{p}"}, lambda p, cert: {"verify": _ca(cert)}, True),
    ("env ALL_PROXY", {"ALL_PROXY": "{p}"}, lambda p, cert: {"verify": _ca(cert)}, True),
    ("env NO_PROXY", {"ALL_PROXY": "{p}", "NO_PROXY": "127.0.0.1"}, lambda p, cert: {"verify": _ca(cert)}, False),
    ("trust_env=False", {"ALL_PROXY": "{p}"}, lambda p, cert: {"verify": _ca(cert), "trust_env": False}, False),
    ("proxy=", {}, lambda p, cert: {"verify": _ca(cert), "proxy": p}, True),
]


@pytest.mark.one_implementation
@pytest.mark.parametrize(("case", "env", "make_kwargs", "via_proxy"), HTTPX_CASES, ids=[c[0] for c in HTTPX_CASES])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_httpx_client_behaves_like_httpx_and_carries_the_policy(
    case: str,
    env: dict[str, str],
    make_kwargs: Any,
    via_proxy: bool,
    scheme: str,
    origin: str,
    tls_origin: tuple[str, str],
    proxy: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    httpx = servers.library("httpx")
    tls_url, cert = tls_origin
    url = (origin if scheme == "http" else tls_url) + "/"
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(p=proxy))
    with httpx.Client(**make_kwargs(proxy, cert)) as plain:
        reference = _httpx_get(plain, url)
    with adapters.httpx_client(_policy(), **make_kwargs(proxy, cert)) as client:
        got = _httpx_get(client, url)
    expected_peer = _address(proxy) if via_proxy else _address(url)
    assert reference["peer"] == expected_peer  # plain httpx decides: proxy or not
    assert got["peer"] == reference["peer"]
    assert reference["keepalive"] == 0
    assert_policy_on(got)
    assert got["nodelay"] == 1  # httpcore's own TCP_NODELAY kept


@pytest.mark.one_implementation
def test_httpx_client_with_mounts_and_transport(origin: str, proxy: str) -> None:
    httpx = servers.library("httpx")
    mounts = {"http://": httpx.HTTPTransport(proxy=proxy)}
    with adapters.httpx_client(_policy(), mounts=mounts) as client:
        got = _httpx_get(client, origin + "/")
    assert got["peer"] == _address(proxy)
    assert_policy_on(got)
    # transport= turns environment proxies off in httpx; the given transport gets the policy
    with adapters.httpx_client("5m:30s:4", transport=httpx.HTTPTransport(retries=1)) as client:
        got = _httpx_get(client, origin + "/")
    assert got["peer"] == _address(origin)
    assert (got["keepalive"], got["idle"], got["interval"], got["count"]) == (1, 300, 30, 4)
    # a transport without connections is used as given
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    with adapters.httpx_client(_policy(), transport=mock) as client:
        assert client.get("http://example.invalid/").status_code == 204


# --------------------------------------------------------------------------------------
# httpx, async: asyncio and trio, direct and through the proxy
# --------------------------------------------------------------------------------------


async def _httpx_async_get(client: Any, url: str) -> dict[str, Any]:
    async with client.stream("GET", url) as r:
        assert r.status_code == 200
        got = read_options(r.extensions["network_stream"].get_extra_info("socket"))
        assert await r.aread() == b"ok\n"
    return got


@pytest.mark.one_implementation
@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_httpx_async_client_direct_and_proxied(
    runner: str, origin: str, tls_origin: tuple[str, str], proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers.library("httpx")
    tls_url, cert = tls_origin
    monkeypatch.setenv("HTTP_PROXY", proxy)  # http:// through the proxy, https:// direct

    async def main() -> list[dict[str, Any]]:
        async with adapters.httpx_async_client(_policy(), verify=_ca(cert)) as client:
            return [await _httpx_async_get(client, origin + "/"), await _httpx_async_get(client, tls_url + "/")]

    if runner == "trio":
        trio = servers.library("trio")
        proxied, direct = trio.run(main)
    else:
        proxied, direct = asyncio.run(main())
    assert proxied["peer"] == _address(proxy)
    assert direct["peer"] == _address(tls_url)
    assert_policy_on(proxied)
    assert_policy_on(direct)


@pytest.mark.one_implementation
def test_httpx_async_client_connect_tunnel(tls_origin: tuple[str, str], proxy: str) -> None:
    servers.library("httpx")
    tls_url, cert = tls_origin

    async def main() -> dict[str, Any]:
        async with adapters.httpx_async_client(_policy(), verify=_ca(cert), proxy=proxy) as client:
            return await _httpx_async_get(client, tls_url + "/")

    got = asyncio.run(main())
    assert got["peer"] == _address(proxy)
    assert_policy_on(got)


# --------------------------------------------------------------------------------------
# asyncio
# --------------------------------------------------------------------------------------


def test_asyncio_open_connection_round_trip() -> None:
    async def main() -> dict[str, Any]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            reader, writer = await adapters.open_connection(host, port, _policy())
            got = read_options(writer.get_extra_info("socket"))
            writer.write(b"ping")
            await writer.drain()
            assert await reader.read(100) == b"ping"
            writer.close()
            await writer.wait_closed()
            return got

    assert_policy_on(asyncio.run(main()))


def test_asyncio_create_connection_round_trip() -> None:
    class Echoed(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            if not self.data.done():
                self.data.set_result(data)

    async def main() -> dict[str, Any]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            transport, protocol = await adapters.create_connection(Echoed, host, port, "37:7:4")
            try:
                got = read_options(transport.get_extra_info("socket"))
                transport.write(b"pong")  # type: ignore[attr-defined]
                assert await asyncio.wait_for(protocol.data, 10) == b"pong"  # type: ignore[attr-defined]
            finally:
                transport.close()
            return got

    got = asyncio.run(main())
    assert (got["keepalive"], got["idle"], got["interval"], got["count"]) == (1, IDLE, INTERVAL, COUNT)


@pytest.mark.one_implementation
def test_httpx_client_refuses_a_transport_it_cannot_reach() -> None:
    httpx = servers.library("httpx")
    transport = httpx.HTTPTransport()
    transport._pool = object()  # as if a future httpx kept its connections elsewhere
    with pytest.raises(RuntimeError, match="would not carry the policy"):
        adapters.httpx_client(_policy(), transport=transport)


# --------------------------------------------------------------------------------------
# redis-py, gRPC: the keyword arguments and channel options, through the real libraries
# --------------------------------------------------------------------------------------


def test_dead_peer_budget_and_reconnect_timeout() -> None:
    policy = _policy()
    # the longer of the keepalive schedule (37 + 7 * 4 = 65 s) and the user timeout (71 s)
    assert adapters.dead_peer_budget(policy) == (USER_TIMEOUT_MS / 1000 if HAS_USER_TIMEOUT else 65)
    assert adapters.reconnect_timeout(policy) == adapters.dead_peer_budget(policy) / 2  # type: ignore[operator]
    assert adapters.dead_peer_budget(kaext.Policy(user_timeout=8)) == 8
    assert adapters.dead_peer_budget(kaext.Policy()) is None
    assert adapters.reconnect_timeout(kaext.Policy()) is None
    assert adapters.dead_peer_budget("aws-nlb") == 175 + 35 * 5

    # a policy that bounds connecting itself: the shorter of the two wins (3 s: Linux's shortest,
    # one SYN retransmission; every OS with a connect timeout accepts it)
    own = kaext.Policy(idle=IDLE, interval=INTERVAL, count=COUNT, connect_timeout=3)
    assert adapters.reconnect_timeout(own) == 3.0


def test_redis_kwargs_fit_both_redis_clients_without_a_warning() -> None:
    import warnings

    servers.library("redis")
    import redis.asyncio
    import redis.backoff

    kwargs = adapters.redis_kwargs(_policy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sync Retry given to the asyncio client warns
        sync = redis.Redis(**kwargs).connection_pool.make_connection()
        aio = redis.asyncio.Redis(**kwargs).connection_pool.make_connection()
    for conn, retry_class in ((sync, redis.retry.Retry), (aio, redis.asyncio.retry.Retry)):
        assert type(conn.retry) is retry_class
        assert conn.retry.get_retries() == 1
        assert isinstance(conn.retry._backoff, redis.backoff.NoBackoff)
        assert conn.socket_connect_timeout == adapters.reconnect_timeout(_policy()) / 2  # type: ignore[operator]


def test_redis_kwargs_put_the_policy_on_both_clients_sockets() -> None:
    servers.library("redis")
    import redis.asyncio

    kwargs = adapters.redis_kwargs(_policy())
    with servers.redis_server() as port:
        client = redis.Redis(port=port, **kwargs)
        assert client.ping()
        conn = client.connection_pool.get_connection()
        try:
            read = read_options(conn._sock)
        finally:
            client.connection_pool.release(conn)
        client.close()

        async def asyncio_options() -> dict[str, Any]:
            aclient = redis.asyncio.Redis(port=port, **kwargs)
            assert await aclient.ping()
            aconn = await aclient.connection_pool.get_connection()
            try:
                return read_options(aconn._writer.transport.get_extra_info("socket"))
            finally:
                await aclient.connection_pool.release(aconn)
                await aclient.aclose()

        aread = asyncio.run(asyncio_options())
    for got in (read, aread):
        assert got["keepalive"] == 1
        assert (got["idle"], got["interval"], got["count"]) == (IDLE, INTERVAL, COUNT)
        if CHECK_USER_TIMEOUT:
            assert got["user_timeout"] == USER_TIMEOUT_MS


def test_grpc_options_are_what_grpc_is_given() -> None:
    servers.library("grpc")
    options = dict(adapters.grpc_options(_policy()))
    budget = adapters.dead_peer_budget(_policy())
    assert budget is not None
    assert options["grpc.keepalive_time_ms"] == IDLE * 1000
    assert options["grpc.keepalive_time_ms"] + options["grpc.keepalive_timeout_ms"] == budget * 1000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    with pytest.raises(ValueError, match="idle"):
        adapters.grpc_options(kaext.Policy(user_timeout=5))
