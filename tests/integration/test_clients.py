"""Proof with real clients: each finds a vanished server within its kaext budget.

Two hosts are two Linux network namespaces joined by a veth pair (netns.py).  The
servers -- redis-server, a PostgreSQL cluster, and an HTTP server that starts a
streamed response and then sends nothing more -- run inside the server namespace;
every client runs as its own process inside the client namespace, once with kaext
(each through the hook it documents) and once without.  When every client is
waiting (the server itself reports it: a blocked BLPOP, a running pg_sleep, a
started stream), the server's link goes down: the server vanishes without a FIN or
RST, like a crashed host or a pulled cable.  A client with kaext must end within
the ``Policy.from_timeout(T)`` budget (+ ``SLACK``), the same client without kaext
must still be blocked at ``3 * T``.

Clients, and the hook each uses:

* an asyncio client (asyncio streams speaking RESP to redis): ``kaext.inject(policy)``
* redis-cli (hiredis, which sets its own 15 s keepalive after connecting):
  ``kaext-run --force`` (without it hiredis's values win)
* psql: ``kaext-run`` (the preload library applies the policy to libpq's connect)

The Python client libraries (redis-py, psycopg, requests and 16 more) are in the client
matrix (tests/integration/test_client_matrix.py), which runs the recipes docs/clients.md shows.

All clients of one run are started together, so the file takes about
``3 * T`` plus the servers' start-up.  Run with ``-s`` to see what each client
printed and when it ended; the summary is printed after the module either way.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import measured
import netns
import pytest
import servers

import kaext

pytestmark = [pytest.mark.root, pytest.mark.one_implementation]

T = 4  # s: the dead-peer budget given to Policy.from_timeout
SLACK = 2.5  # s beyond the budget a client with kaext may take (timers, scheduling, start-up)
WITHOUT_BLOCKED = 3 * T  # s a client without kaext must still be waiting
READY_TIMEOUT = 60  # s for every client to be connected and waiting
REDIS_PORT = 6379
PG_PORT = 5432
HTTP_PORT = 8080

_SUMMARY: list[str] = []


# --------------------------------------------------------------------------------------
# Servers inside the server namespace
# --------------------------------------------------------------------------------------


def _in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _redis_query(ns: str, *command: str) -> str:
    proc = subprocess.run(
        _in_ns(ns, "redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), *command),
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.stdout


@pytest.fixture
def redis_in(lab: netns.Lab) -> Iterator[Callable[[], int]]:
    """redis-server in the server namespace on 192.0.2.2 and its loopback; yields "clients in BLPOP"."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        servers.missing("redis-server / redis-cli are not installed (Debian package redis-server)")
    ns = lab.server.netns
    netns.ip("-n", ns, "link", "set", "dev", "lo", "up")  # for the readiness queries
    with tempfile.TemporaryDirectory(prefix="kaext-clients-redis-") as tmp:
        proc = subprocess.Popen(
            _in_ns(
                ns,
                binary,
                "--port",
                str(REDIS_PORT),
                "--bind",
                lab.server.address,
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
                "--protected-mode",
                "no",
                "--tcp-keepalive",
                "0",
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(tmp, "log"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(lambda: _redis_query(ns, "PING").strip() == "PONG", 15, "redis-server")

            def blocked() -> int:
                return _redis_query(ns, "CLIENT", "LIST").count("cmd=blpop")

            yield blocked
        finally:
            _stop(proc)


@pytest.fixture
def postgres_in(lab: netns.Lab) -> Iterator[Callable[[], int]]:
    """A PostgreSQL cluster in the server namespace on 192.0.2.2; yields "sessions in pg_sleep"."""
    psql = shutil.which("psql")
    if psql is None:
        servers.missing("psql is not installed (Debian package postgresql-client)")
    # tcp_keepalives_idle etc. left at their defaults; the server end never matters here
    # (its link is down), only the client's.
    with servers.postgres_cluster(
        lab.server.address, PG_PORT, start_in=_in_ns(lab.server.netns), trust=[f"{lab.client.address}/32"]
    ) as cluster:

        def sleeping() -> int:
            proc = subprocess.run(
                [
                    *cluster.prefix,
                    psql,
                    "-h",
                    cluster.sockdir,
                    "-p",
                    str(PG_PORT),
                    "-U",
                    "postgres",
                    "-At",
                    "-c",
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return int(proc.stdout.strip() or 0)

        yield sleeping


# An HTTP/1.1 server that answers every GET with a chunked response, sends one
# chunk and then nothing (a long poll, a log tail, a model streaming its answer).
_STREAM_SERVER = r"""
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=64)
print("listening", flush=True)
def serve(conn):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"6\r\nfirst\n\r\n")
    print("streaming", flush=True)
    threading.Event().wait()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture
def http_in(lab: netns.Lab) -> Iterator[Callable[[], int]]:
    """The streaming HTTP server in the server namespace; yields "streams started"."""
    proc = subprocess.Popen(
        _in_ns(lab.server.netns, sys.executable, "-I", "-S", "-c", _STREAM_SERVER, lab.server.address, str(HTTP_PORT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    started = [0]

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "streaming":
                started[0] += 1

    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        yield lambda: started[0]
    finally:
        _stop(proc)


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    reason = netns.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"client tests cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"client tests: {reason}")
    built = netns.Lab()
    try:
        yield built
    finally:
        built.close()


# --------------------------------------------------------------------------------------
# Clients inside the client namespace
# --------------------------------------------------------------------------------------

# Each Python client prints what ended its wait (an exception's type and text) and exits.
_PY_PRELUDE = """
import sys, time
import kaext
policy = kaext.Policy.from_timeout({T}) if {with_kaext} else None
def done(exc):
    print(f"{{type(exc).__name__}}: {{exc}}".replace("\\n", " ").strip(), flush=True)
    sys.exit(0)
"""

_PY_CLIENTS = {
    "asyncio streams": """
import asyncio
if policy:
    kaext.inject(policy)
async def main():
    reader, writer = await asyncio.open_connection("{server}", {redis})
    writer.write(b"*3\\r\\n$5\\r\\nBLPOP\\r\\n$11\\r\\nkaext-never\\r\\n$1\\r\\n0\\r\\n")
    await writer.drain()
    try:
        line = await reader.readline()
        done(RuntimeError(f"the server answered {{line!r}}"))
    except Exception as exc:
        done(exc)
asyncio.run(main())
""",
}


def _native_clients(lab: netns.Lab, with_kaext: bool) -> dict[str, list[str]]:
    spec = str(kaext.Policy.from_timeout(T))
    run: dict[str, list[str]] = {}
    server = lab.server.address
    redis_cli = ["redis-cli", "-h", server, "-p", str(REDIS_PORT), "BLPOP", "kaext-never", "0"]
    psql = [
        "psql",
        "-X",
        "-At",
        f"host={server} port={PG_PORT} user=postgres dbname=postgres",
        "-c",
        "SELECT pg_sleep(600)",
    ]
    if with_kaext:
        # --force: hiredis sets its own keepalive (15 s idle) after connecting, which
        # would otherwise overwrite the policy's
        run["redis-cli"] = [sys.executable, "-m", "kaext.run", "--policy", spec, "--force", "--", *redis_cli]
        run["psql"] = [sys.executable, "-m", "kaext.run", "--policy", spec, "--", *psql]
    else:
        run["redis-cli"] = redis_cli
        run["psql"] = psql
    return run


@dataclass
class Client:
    name: str
    with_kaext: bool
    proc: subprocess.Popen[str]
    ended_after: float | None = None
    output: str = ""
    _waiter: threading.Thread | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} {'with' if self.with_kaext else 'without'} kaext"


def _start(lab: netns.Lab, name: str, argv: list[str], with_kaext: bool) -> Client:
    proc = subprocess.Popen(
        _in_ns(lab.client.netns, *argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return Client(name, with_kaext, proc)


def _python_argv(name: str, lab: netns.Lab, with_kaext: bool) -> list[str]:
    code = (_PY_PRELUDE + _PY_CLIENTS[name]).format(
        T=T, with_kaext=with_kaext, server=lab.server.address, redis=REDIS_PORT, pg=PG_PORT, http=HTTP_PORT
    )
    return [sys.executable, "-c", textwrap.dedent(code)]


# --------------------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, f"clients after the server vanished (Policy.from_timeout({T}))", _SUMMARY)


#: What the Python clients import (the programs in _PY_CLIENTS).
CLIENT_LIBRARIES: tuple[str, ...] = ()


@pytest.fixture
def run_all(
    lab: netns.Lab,
    redis_in: Callable[[], int],
    postgres_in: Callable[[], int],
) -> Iterator[Callable[[], dict[str, Client]]]:
    absent = [name for name in CLIENT_LIBRARIES if importlib.util.find_spec(name) is None]
    if absent:  # the 'test' extra installs them; a venv with the package alone skips (CI must not)
        servers.missing(f"the client libraries {', '.join(absent)} are not installed: pip install '.[test]'")
    clients: list[Client] = []

    def run() -> dict[str, Client]:
        for with_kaext in (True, False):
            for name in _PY_CLIENTS:
                clients.append(_start(lab, name, _python_argv(name, lab, with_kaext), with_kaext))
            for name, argv in _native_clients(lab, with_kaext).items():
                clients.append(_start(lab, name, argv, with_kaext))
        n_redis = sum(c.name.startswith("redis") for c in clients)
        n_pg = sum(c.name in ("psycopg", "psql") for c in clients)

        def ready() -> bool:
            early = [c for c in clients if c.proc.poll() is not None]
            if early:
                c = early[0]
                raise AssertionError(
                    f"{c.label} ended before the server vanished: {c.proc.stdout.read()!r}"
                    if c.proc.stdout
                    else c.label
                )
            return redis_in() >= n_redis and postgres_in() >= n_pg

        _wait(ready, READY_TIMEOUT, f"{n_redis} BLPOPs and {n_pg} pg_sleeps")
        time.sleep(0.3)  # the last requests' acknowledgements are home
        lab.link_down(lab.server)
        vanished = time.monotonic()

        def wait_for(c: Client) -> None:
            try:
                c.proc.wait(WITHOUT_BLOCKED)
            except subprocess.TimeoutExpired:
                return
            c.ended_after = time.monotonic() - vanished

        for c in clients:
            c._waiter = threading.Thread(target=wait_for, args=(c,), daemon=True)
            c._waiter.start()
        for c in clients:
            assert c._waiter is not None
            c._waiter.join(WITHOUT_BLOCKED + 10)
        for c in clients:
            _stop(c.proc)
            assert c.proc.stdout is not None
            c.output = " ".join(c.proc.stdout.read().split())[-300:]
        return {c.label: c for c in clients}

    try:
        yield run
    finally:
        for c in clients:
            _stop(c.proc)


NAMES = [*_PY_CLIENTS, "redis-cli", "psql"]


def test_every_client_finds_the_vanished_server_only_with_kaext(
    run_all: Callable[[], dict[str, Client]],
) -> None:
    budget = kaext.Policy.from_timeout(T)
    assert budget.idle + budget.interval * budget.count <= T  # the budget the clients are held to
    outcome = run_all()
    for label, c in sorted(outcome.items()):
        ended = "still blocked" if c.ended_after is None else f"ended after {c.ended_after:.2f} s"
        _SUMMARY.append(f"{label}: {ended} -- {c.output or '(no output)'}")
        print(_SUMMARY[-1])
    failures = []
    for name in NAMES:
        try:
            _check(outcome, name)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def _check(outcome: dict[str, Client], name: str) -> None:
    with_k, without = outcome[f"{name} with kaext"], outcome[f"{name} without kaext"]
    assert with_k.ended_after is not None, f"{with_k.label} still blocked at {WITHOUT_BLOCKED} s: {with_k.output}"
    assert with_k.ended_after <= T + SLACK, (
        f"{with_k.label} found the dead server after {with_k.ended_after:.2f} s, budget {T} + {SLACK} s: "
        f"{with_k.output}"
    )
    assert without.ended_after is None, (
        f"{without.label} ended after {without.ended_after:.2f} s, expected still blocked at "
        f"{WITHOUT_BLOCKED} s: {without.output}"
    )
