"""Each framework shape, used through the real library against a real server on loopback.

Every test reads the options back from the very socket the library opened
(through the library's public handles, or its fd) with plain
``socket.getsockopt`` -- never through kaext -- and compares them with numbers
chosen here, none of which is a system default.  Servers and libraries missing:
a skip on a developer's machine, a failure in CI (see ``servers.missing``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import servers
from paths import DATA

import kaext
from kaext import _capabilities, _platform, presets
from kaext import constants as kconst

IDLE, INTERVAL, COUNT = 37, 7, 4
USER_TIMEOUT_MS = 72_500  # not shorter than idle + interval * count = 65 s (that warns)
HAS_USER_TIMEOUT = "user_timeout" in kaext.capabilities()


def _policy() -> kaext.Policy:
    return kaext.Policy(
        idle=IDLE, interval=INTERVAL, count=COUNT, user_timeout=USER_TIMEOUT_MS / 1000 if HAS_USER_TIMEOUT else None
    )


# Plain socket-module names, independent of kaext (macOS: idle is TCP_KEEPALIVE there).
_IDLE_OPT = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)


def read_options(sock_like: Any) -> dict[str, int]:
    """Keepalive options of the socket behind ``sock_like`` (socket, TransportSocket, trio socket, fd)."""
    fd = sock_like if isinstance(sock_like, int) else sock_like.fileno()
    with socket.socket(fileno=os.dup(fd)) as s:  # same open socket, our own handle
        out = {
            "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            "idle": s.getsockopt(socket.IPPROTO_TCP, _IDLE_OPT),
            "interval": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        }
        if HAS_USER_TIMEOUT:
            out["user_timeout"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    return out


def assert_policy_on(sock_like: Any) -> dict[str, int]:
    got = read_options(sock_like)
    expected = {"keepalive": 1, "idle": IDLE, "interval": INTERVAL, "count": COUNT}
    if HAS_USER_TIMEOUT:
        expected["user_timeout"] = USER_TIMEOUT_MS
    assert {k: got[k] for k in expected} == expected
    return got


# --------------------------------------------------------------------------------------
# servers (session-scoped: started once, stopped at the end)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def http_url() -> Iterator[str]:
    with servers.http_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with servers.redis_server() as port:
        yield port


@pytest.fixture(scope="session")
def postgres_port() -> Iterator[int]:
    with servers.postgres_server() as port:
        yield port


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    """A plain TCP listener that accepts (and holds) connections in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


# --------------------------------------------------------------------------------------
# The read-back itself can tell a configured socket from a default one
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_without_kaext_the_library_socket_has_the_defaults(http_url: str) -> None:
    urllib3 = servers.library("urllib3")
    with urllib3.PoolManager() as pool:
        r = pool.request("GET", http_url + "/", preload_content=False)
        got = read_options(r.connection.sock)
        r.release_conn()
    assert got["keepalive"] == 0
    assert (got["idle"], got["interval"], got["count"]) != (IDLE, INTERVAL, COUNT)


# --------------------------------------------------------------------------------------
# socket_options(): urllib3, requests, httpx, websocket-client
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_urllib3_keeps_its_defaults_and_gets_the_policy(http_url: str) -> None:
    urllib3 = servers.library("urllib3")
    from urllib3.connection import HTTPConnection

    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in HTTPConnection.default_socket_options
    options = _policy().socket_options(HTTPConnection.default_socket_options)
    with urllib3.PoolManager(socket_options=options) as pool:
        r = pool.request("GET", http_url + "/", preload_content=False)
        assert r.status == 200
        got = assert_policy_on(r.connection.sock)
        r.release_conn()
    assert got["nodelay"] == 1  # urllib3's own default survived the merge


@pytest.mark.one_implementation
def test_requests_through_an_adapter(http_url: str) -> None:
    requests = servers.library("requests")
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection

    policy = _policy()

    class KeepaliveAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["socket_options"] = policy.socket_options(HTTPConnection.default_socket_options)
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as session:
        session.mount("http://", KeepaliveAdapter())
        with session.get(http_url + "/", stream=True) as r:
            assert r.status_code == 200
            got = assert_policy_on(r.raw.connection.sock)
    assert got["nodelay"] == 1


@pytest.mark.one_implementation
def test_httpx_transport_socket_options(http_url: str) -> None:
    httpx = servers.library("httpx")
    transport = httpx.HTTPTransport(socket_options=_policy().socket_options())
    with httpx.Client(transport=transport) as client, client.stream("GET", http_url + "/") as r:
        assert r.status_code == 200
        assert_policy_on(r.extensions["network_stream"].get_extra_info("socket"))


@pytest.mark.one_implementation
def test_httpx_async_transport_socket_options(http_url: str) -> None:
    httpx = servers.library("httpx")

    async def main() -> dict[str, int]:
        transport = httpx.AsyncHTTPTransport(socket_options=_policy().socket_options())
        async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", http_url + "/") as r:
            assert r.status_code == 200
            return assert_policy_on(r.extensions["network_stream"].get_extra_info("socket"))

    asyncio.run(main())


@pytest.mark.one_implementation
def test_websocket_client_sockopt(http_url: str) -> None:
    websocket = servers.library("websocket")
    ws = websocket.create_connection(http_url.replace("http://", "ws://") + "/ws", sockopt=_policy().socket_options())
    try:
        assert ws.connected
        assert_policy_on(ws.sock)
    finally:
        ws.close(timeout=1)


# --------------------------------------------------------------------------------------
# socket_factory(): aiohttp, asyncio create_connection(sock=...)
# --------------------------------------------------------------------------------------


def test_aiohttp_connector_socket_factory(http_url: str) -> None:
    aiohttp = servers.library("aiohttp")

    async def main() -> None:
        connector = aiohttp.TCPConnector(socket_factory=_policy().socket_factory())
        async with aiohttp.ClientSession(connector=connector) as session, session.get(http_url + "/hold") as resp:
            assert resp.status == 200
            assert_policy_on(resp.connection.transport.get_extra_info("socket"))
            resp.close()

    asyncio.run(main())


def test_asyncio_create_connection_with_a_factory_socket() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            loop = asyncio.get_running_loop()
            info = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
            sock = _policy().socket_factory()(info)
            sock.setblocking(False)
            await loop.sock_connect(sock, info[4])
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
            try:
                assert_policy_on(transport.get_extra_info("socket"))
            finally:
                transport.close()

    asyncio.run(main())


def test_socket_factory_closes_the_socket_when_apply_fails() -> None:
    factory = _policy().socket_factory()
    with pytest.raises(OSError, match="idle=37 s \\(setsockopt TCP_KEEPIDLE\\) - not a TCP socket"):
        factory((socket.AF_INET, socket.SOCK_DGRAM, 0))  # UDP refuses the TCP-level knobs
    # the socket it made is not leaked: the next fd number is free again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        fd = probe.fileno()
    with pytest.raises(OSError, match="idle=37 s \\(setsockopt TCP_KEEPIDLE\\) - not a TCP socket"):
        factory((socket.AF_INET, socket.SOCK_DGRAM, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        assert probe.fileno() == fd


# --------------------------------------------------------------------------------------
# apply(): asyncio transports (client and accepted server side), trio streams
# --------------------------------------------------------------------------------------


def test_apply_to_asyncio_transports_both_sides() -> None:
    policy = _policy()

    async def main() -> dict[str, int]:
        server_side: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            policy.apply(writer.get_extra_info("socket"))  # an accepted server socket
            server_side.set_result(read_options(writer.get_extra_info("socket")))
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            transport_socket = writer.get_extra_info("socket")  # asyncio.TransportSocket, no ioctl
            policy.apply(transport_socket)
            assert_policy_on(transport_socket)
            writer.write(b"ping")
            assert await reader.read(100) == b"ping"
            writer.close()
            return await server_side

    got = asyncio.run(main())
    assert (got["keepalive"], got["idle"], got["interval"], got["count"]) == (1, IDLE, INTERVAL, COUNT)


def test_apply_to_trio_streams_both_sides() -> None:
    trio = servers.library("trio")
    policy = _policy()
    results: dict[str, dict[str, int]] = {}

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def serve_one() -> None:
                stream = await listeners[0].accept()
                policy.apply(stream.socket)
                results["server"] = read_options(stream.socket)
                await stream.send_all(await stream.receive_some(100))
                await stream.aclose()

            nursery.start_soon(serve_one)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            policy.apply(client.socket)
            results["client"] = read_options(client.socket)
            await client.send_all(b"ping")
            assert await client.receive_some(100) == b"ping"
            await client.aclose()
        for listener in listeners:
            await listener.aclose()

    trio.run(main)
    for side in ("client", "server"):
        got = results[side]
        assert (got["keepalive"], got["idle"], got["interval"], got["count"]) == (1, IDLE, INTERVAL, COUNT), side


# --------------------------------------------------------------------------------------
# tcp_options(): redis-py, py-amqp; named_options(): pika
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_redis_socket_keepalive_options(redis_port: int) -> None:
    redis = servers.library("redis")
    try:
        from redis._defaults import get_default_socket_keepalive_options as redis_defaults
    except ImportError:  # redis-py < 7 has no defaults of its own
        base: dict[int, int] = {}
    else:
        base = redis_defaults()
    r = redis.Redis(
        host="127.0.0.1",
        port=redis_port,
        single_connection_client=True,
        socket_keepalive=True,
        socket_keepalive_options=_policy().tcp_options(base),
    )
    try:
        assert r.ping() is True
        assert_policy_on(r.connection._sock)
    finally:
        r.close()


@pytest.mark.one_implementation
def test_py_amqp_socket_settings_replace_its_defaults(tcp_listener: socket.socket) -> None:
    servers.library("amqp")
    from amqp.transport import TCPTransport

    host, port = tcp_listener.getsockname()[:2]
    # py-amqp connects, applies its defaults merged with socket_settings, writes the AMQP header
    transport = TCPTransport(f"{host}:{port}", connect_timeout=5, socket_settings=_policy().tcp_options())
    transport.connect()
    try:
        got = assert_policy_on(transport.sock)  # its TCP_USER_TIMEOUT 1000 ms default replaced
        assert got["nodelay"] == 1  # its TCP_NODELAY default kept
    finally:
        transport.close()


@pytest.mark.one_implementation
@pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="py-amqp's user timeout default is Linux's TCP_USER_TIMEOUT"
)
def test_py_amqp_loses_its_1s_user_timeout_with_any_policy(tcp_listener: socket.socket) -> None:
    servers.library("amqp")
    from amqp.transport import TCPTransport

    host, port = tcp_listener.getsockname()[:2]

    def user_timeout_ms(settings: Any) -> int:
        transport = TCPTransport(f"{host}:{port}", connect_timeout=5, socket_settings=settings)
        transport.connect()
        try:
            return int(transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
        finally:
            transport.close()

    assert user_timeout_ms(None) == 1000  # py-amqp's own default, without kaext
    # a policy without a user timeout of its own: the system default (0), not py-amqp's 1 s
    assert user_timeout_ms(kaext.Policy.for_middlebox("aws-nlb").tcp_options()) == 0
    assert user_timeout_ms(kaext.Policy(idle=IDLE, user_timeout=90).tcp_options()) == 90_000


@pytest.mark.one_implementation
def test_pika_tcp_options(tcp_listener: socket.socket, caplog: pytest.LogCaptureFixture) -> None:
    pika = servers.library("pika")
    import pika.tcp_socket_opts  # noqa: F811 (the submodule, after the skip check above)

    params = pika.ConnectionParameters(host="127.0.0.1", tcp_options=_policy().named_options())
    with socket.create_connection(tcp_listener.getsockname()) as sock, caplog.at_level(logging.WARNING):
        # the function every pika adapter calls on its new socket with params.tcp_options
        pika.tcp_socket_opts.set_sock_opts(params.tcp_options, sock)
        assert_policy_on(sock)
    assert "Unsupported TCP option" not in caplog.text


# --------------------------------------------------------------------------------------
# libpq_params(): psycopg against a real PostgreSQL
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_psycopg_libpq_params(postgres_port: int) -> None:
    psycopg = servers.library("psycopg")
    params = _policy().libpq_params()
    with psycopg.connect(host="127.0.0.1", port=postgres_port, user="postgres", dbname="postgres", **params) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert_policy_on(conn.pgconn.socket)
        assert conn.info.get_parameters()["keepalives_idle"] == str(IDLE)


@pytest.mark.one_implementation
def test_psycopg_conninfo_string(postgres_port: int) -> None:
    psycopg = servers.library("psycopg")
    from psycopg.conninfo import make_conninfo

    conninfo = f"host=127.0.0.1 port={postgres_port} user=postgres dbname=postgres"
    dsn = make_conninfo(conninfo, **_policy().libpq_params())
    with psycopg.connect(dsn) as conn:
        assert_policy_on(conn.fileno())


@pytest.mark.one_implementation
def test_psycopg_keepalive_off(postgres_port: int) -> None:
    psycopg = servers.library("psycopg")
    params = kaext.Policy(keepalive=False).libpq_params()
    assert params == {"keepalives": 0}
    with psycopg.connect(host="127.0.0.1", port=postgres_port, user="postgres", dbname="postgres", **params) as conn:
        assert read_options(conn.pgconn.socket)["keepalive"] == 0  # libpq turns it on by default


# --------------------------------------------------------------------------------------
# The shapes as data: merging, order, and refusals instead of silent drops
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_socket_options_merge_order() -> None:
    base = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),  # replaced by the policy
        [socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 99],  # replaced; lists accepted
        (socket.SOL_SOCKET, socket.SO_SNDBUF, 65536),
    ]
    got = kaext.Policy(idle=IDLE, interval=INTERVAL).socket_options(base)
    assert got == [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_SNDBUF, 65536),
        (socket.IPPROTO_TCP, _IDLE_OPT, IDLE),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, INTERVAL),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    assert kaext.Policy(keepalive=False).socket_options() == [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)]
    with pytest.raises(TypeError, match="base entries"):
        kaext.Policy().socket_options([(1, 2)])


@pytest.mark.one_implementation
def test_tcp_options_merge_and_keepalive_off() -> None:
    # Linux: a policy without a user timeout says TCP_USER_TIMEOUT=0 (the system default)
    no_user_timeout = {socket.TCP_USER_TIMEOUT: 0} if hasattr(socket, "TCP_USER_TIMEOUT") else {}
    base = {socket.TCP_KEEPIDLE: 30, socket.TCP_KEEPCNT: 3, socket.TCP_NODELAY: 1}
    got = kaext.Policy(idle=IDLE).tcp_options(base)
    assert got == {socket.TCP_KEEPIDLE: IDLE, socket.TCP_KEEPCNT: 3, socket.TCP_NODELAY: 1, **no_user_timeout}
    assert base[socket.TCP_KEEPIDLE] == 30  # the caller's dict is not changed
    with pytest.raises(ValueError, match="keepalive=False"):
        kaext.Policy(keepalive=False).tcp_options()
    with pytest.warns(RuntimeWarning, match="keepalive=False"):
        assert kaext.Policy(keepalive=False).tcp_options(strict=False) == no_user_timeout
    if no_user_timeout:  # a base entry for the user timeout wins over the policy's "not set"
        base_ut = {socket.TCP_USER_TIMEOUT: 5000}
        assert kaext.Policy(idle=IDLE).tcp_options(base_ut)[socket.TCP_USER_TIMEOUT] == 5000
        assert kaext.Policy(user_timeout=7).tcp_options(base_ut)[socket.TCP_USER_TIMEOUT] == 7000


@pytest.mark.one_implementation
def test_named_options_refuses_what_pika_would_ignore() -> None:
    with pytest.raises(ValueError, match="only when a TCP_KEEP"):
        kaext.Policy().named_options()
    with pytest.raises(ValueError, match="keepalive=False"):
        kaext.Policy(keepalive=False).named_options()
    assert kaext.Policy(count=COUNT).named_options() == {"TCP_KEEPCNT": COUNT}


@pytest.fixture
def fake_caps(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Change one knob of capabilities() the way another platform reports it, for the shapes only."""

    def change(knob: str, **fields: Any) -> None:
        caps = dict(_capabilities.caps())
        caps[knob] = caps[knob]._replace(**fields)
        monkeypatch.setattr(_capabilities, "_CAPABILITIES", caps)

    yield change


@pytest.mark.one_implementation
def test_a_knob_set_by_ioctl_is_refused_by_the_option_shapes(fake_caps: Any) -> None:
    policy = kaext.Policy(idle=IDLE, interval=INTERVAL, count=COUNT)
    # Windows before 1709: idle and interval only through WSAIoctl(SIO_KEEPALIVE_VALS)
    fake_caps("idle", mechanism=_platform.WINDOWS_SIO["idle"].describe())
    for shape in (policy.socket_options, policy.tcp_options, policy.named_options):
        with pytest.raises(ValueError, match=r"cannot express idle.*SIO_KEEPALIVE_VALS"):
            shape()
    with pytest.warns(RuntimeWarning, match="cannot express idle"):
        options = policy.socket_options(strict=False)
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, INTERVAL) in options
    assert all(opt != _IDLE_OPT for level, opt, _ in options if level == socket.IPPROTO_TCP)
    # libpq does the ioctl itself
    assert policy.libpq_params()["keepalives_idle"] == IDLE


@pytest.mark.one_implementation
def test_named_options_needs_the_name_in_pythons_socket_module(fake_caps: Any) -> None:
    policy = kaext.Policy(idle=IDLE, interval=INTERVAL)
    # macOS: idle is TCP_KEEPALIVE (0x10), which pika cannot name
    fake_caps("idle", option="TCP_KEEPALIVE", optname=0x10)
    with pytest.raises(ValueError, match="TCP_KEEPALIVE"):
        policy.named_options()
    with pytest.warns(RuntimeWarning):
        assert policy.named_options(strict=False) == {"TCP_KEEPINTVL": INTERVAL}
    # the number-keyed shapes carry the platform's own option number
    assert policy.tcp_options()[0x10] == IDLE


@pytest.mark.one_implementation
@pytest.mark.skipif(not HAS_USER_TIMEOUT, reason="needs a platform with a user timeout")
def test_libpq_user_timeout_only_with_tcp_user_timeout(fake_caps: Any) -> None:
    policy = kaext.Policy(user_timeout=1.0001)
    assert policy.libpq_params() == {"keepalives": 1, "tcp_user_timeout": 1001}  # ms, rounded up
    fake_caps("user_timeout", option="TCP_MAXRT", unit="s")  # Windows: seconds, another option
    with pytest.raises(ValueError, match="TCP_MAXRT"):
        policy.libpq_params()
    with pytest.warns(RuntimeWarning):
        assert policy.libpq_params(strict=False) == {"keepalives": 1}


# --------------------------------------------------------------------------------------
# kaext.constants: portable aliases, derived from (option name, unit), never across units
# --------------------------------------------------------------------------------------

_REFERENCE = json.loads((DATA / "reference.json").read_text())


@pytest.mark.one_implementation
def test_portable_alias_for_macos_idle() -> None:
    from kaext._platform import KnobSpec

    darwin = dict(_REFERENCE["constants"]["darwin"])
    assert "TCP_KEEPIDLE" not in darwin
    sources = {name: "netinet/tcp.h" for name in darwin}
    specs = {
        "idle": KnobSpec("TCP_KEEPALIVE", "s", 1, 10, True),
        "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, 10, True),
        "count": KnobSpec("TCP_KEEPCNT", "probes", 1, 10, True),
    }
    aliases = kconst._portable_aliases(darwin, sources, specs)
    assert aliases == {"TCP_KEEPIDLE": darwin["TCP_KEEPALIVE"]} == {"TCP_KEEPIDLE": 0x10}
    assert sources["TCP_KEEPIDLE"] == "TCP_KEEPALIVE (netinet/tcp.h)"


@pytest.mark.one_implementation
def test_no_alias_across_units() -> None:
    from kaext._platform import KnobSpec

    windows = dict(_REFERENCE["constants"]["windows"])
    assert "TCP_USER_TIMEOUT" not in windows
    specs = {"user_timeout": KnobSpec("TCP_MAXRT", "s", 0, 10, True)}
    assert kconst._portable_aliases(windows, {}, specs) == {}


@pytest.mark.one_implementation
def test_constants_name_their_source() -> None:
    for name in kconst.__all__:
        assert isinstance(getattr(kconst, name), int)
        assert name in kconst.SOURCES


# --------------------------------------------------------------------------------------
# Middlebox presets
# --------------------------------------------------------------------------------------

# Default idle timeouts, with the source each number was taken from (see kaext.presets).
SOURCED_IDLE_TIMEOUTS = {
    "aws-nlb": 350,  # AWS NLB guide: default idle timeout for TCP flows 350 s
    "aws-nat-gateway": 350,  # Amazon VPC guide: idle 350 s or more times out
    "azure-lb": 240,  # Azure Load Balancer: default 4 minutes
    "gcp-vpc": 600,  # Compute Engine: 10-minute connection tracking
    "ipvs": 900,  # Linux ip_vs_proto_tcp.c: ESTABLISHED 15*60*HZ
    "linux-conntrack": 432000,  # Linux nf_conntrack_proto_tcp.c: ESTABLISHED 5 DAYS
}


@pytest.mark.one_implementation
@pytest.mark.parametrize(("name", "seconds"), sorted(SOURCED_IDLE_TIMEOUTS.items()))
def test_middlebox_table(name: str, seconds: int) -> None:
    box = presets.MIDDLEBOXES[name]
    assert box.idle_timeout == seconds
    assert box.source
    assert kaext.Policy.for_middlebox(name) == kaext.Policy.for_idle_timeout(seconds)


@pytest.mark.one_implementation
@pytest.mark.parametrize("timeout", [3, 4, 10, 59, 60, 240, 350, 600, 900, 3600, 432000])
def test_for_idle_timeout_probes_before_the_flow_expires(timeout: int) -> None:
    policy = kaext.Policy.for_idle_timeout(timeout)
    assert policy.keepalive is True
    assert policy.idle is not None and policy.interval is not None and policy.count is not None
    assert policy.idle + policy.interval < timeout  # one lost probe is survived
    assert policy.idle >= 1 and policy.interval >= 1 and policy.count >= 1
    if timeout <= 32767 * 2:  # not clamped by the platform: about half, and a dead peer seen after about T
        assert timeout / 3 <= policy.idle <= timeout / 2
        assert policy.idle + policy.interval * policy.count <= timeout
    assert presets.check_idle_timeout(policy, timeout) == []


def test_for_idle_timeout_applied_to_a_socket(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    kaext.Policy.for_middlebox("aws-nlb").apply(client)
    got = read_options(client)
    assert got["keepalive"] == 1
    assert got["idle"] < 350 and got["idle"] + got["interval"] < 350


@pytest.mark.one_implementation
def test_for_idle_timeout_errors() -> None:
    with pytest.raises(ValueError, match="too short"):
        kaext.Policy.for_idle_timeout(2)
    with pytest.raises(ValueError, match="idle_timeout=0 must be positive"):
        kaext.Policy.for_idle_timeout(0)
    with pytest.raises(
        TypeError, match=r"idle_timeout must be seconds as int, float or datetime.timedelta, got str '350'"
    ):
        kaext.Policy.for_idle_timeout("350")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aws-nlb"):
        kaext.Policy.for_middlebox("aws-elb-classic")


@pytest.mark.one_implementation
def test_check_idle_timeout_finds_problems(tcp: socket.socket) -> None:
    assert presets.check_idle_timeout(kaext.Policy(keepalive=False), 350) != []
    assert any("not under" in p for p in presets.check_idle_timeout(kaext.Policy(idle=400, interval=10), 350))
    assert any("lost probe" in p for p in presets.check_idle_timeout(kaext.Policy(idle=300, interval=60), 350))
    assert any("idle is not set" in p for p in presets.check_idle_timeout(kaext.Policy(interval=5), 350))
    # a state read back from a socket works too
    kaext.Policy(idle=100, interval=10, count=3).apply(tcp)
    assert presets.check_idle_timeout(kaext.get_keepalive(tcp), 350) == []
    assert presets.check_idle_timeout(kaext.get_keepalive(tcp), 105) != []


@pytest.mark.one_implementation
def test_presets_doctest() -> None:
    import doctest

    with warnings.catch_warnings():
        result = doctest.testmod(presets, verbose=False)
    assert result.attempted > 0 and result.failed == 0
