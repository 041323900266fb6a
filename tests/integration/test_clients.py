"""Proof with real clients: each finds a vanished server within its kaext budget.

The servers -- redis-server and a PostgreSQL cluster (tests/support/servers.py) -- run
on 127.0.0.1; every client runs as its own process and connects through a
``kaext.testing.Path`` to its server (one path per server, all the clients' connections
through it), once with kaext (each through the hook it documents) and once without.
When every client is waiting (the server itself reports it: a blocked BLPOP, a running
pg_sleep), ``path.vanish()``: from then on every packet of those connections is dropped
both ways, without a FIN or RST, like a crashed host or a pulled cable.  A client with
kaext must end within the ``Policy.from_timeout(T)`` budget (+ ``SLACK``), the same
client without kaext must still be blocked at ``3 * T``.

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

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import measured
import pytest
import servers

import kaext
from kaext import testing

pytestmark = [pytest.mark.root, pytest.mark.one_implementation]

T = 4  # s: the dead-peer budget given to Policy.from_timeout
SLACK = 2.5  # s beyond the budget a client with kaext may take (timers, scheduling, start-up)
WITHOUT_BLOCKED = 3 * T  # s a client without kaext must still be waiting
READY_TIMEOUT = 60  # s for every client to be connected and waiting

_SUMMARY: list[str] = []


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------
# Servers on 127.0.0.1, each behind a path
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server, the path its clients connect through, and the server's own count of the
    clients waiting on it (asked directly, not through the path)."""

    path: testing.Path
    waiting: Callable[[], int]


@pytest.fixture
def _paths_available() -> None:
    reason = testing.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"client tests cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"client tests: {reason}")


@pytest.fixture
def redis(_paths_available: None) -> Iterator[Server]:
    """redis-server on 127.0.0.1; its waiting count is "clients in BLPOP"."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        servers.missing("redis-cli is not installed (Debian package redis-server)")
    with servers.redis_server() as port, testing.Path(("127.0.0.1", port)) as path:

        def blocked() -> int:
            proc = subprocess.run(
                [redis_cli, "-h", "127.0.0.1", "-p", str(port), "CLIENT", "LIST"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return proc.stdout.count("cmd=blpop")

        yield Server(path, blocked)


@pytest.fixture
def postgres(_paths_available: None) -> Iterator[Server]:
    """A PostgreSQL cluster on 127.0.0.1; its waiting count is "sessions in pg_sleep"."""
    psql = shutil.which("psql")
    if psql is None:
        servers.missing("psql is not installed (Debian package postgresql-client)")
    # tcp_keepalives_idle etc. left at their defaults; the server end never matters here
    # (the path drops what it sends), only the client's.
    with servers.postgres_cluster() as cluster, testing.Path(("127.0.0.1", cluster.port)) as path:

        def sleeping() -> int:
            proc = subprocess.run(
                [
                    *cluster.prefix,
                    psql,
                    "-h",
                    cluster.sockdir,
                    "-p",
                    str(cluster.port),
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

        yield Server(path, sleeping)


# --------------------------------------------------------------------------------------
# Clients, each a process of its own, connecting to path.address
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
    reader, writer = await asyncio.open_connection("{redis_host}", {redis_port})
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


def _python_clients(redis: Server, with_kaext: bool) -> dict[str, list[str]]:
    host, port = redis.path.address
    run = {}
    for name, body in _PY_CLIENTS.items():
        code = (_PY_PRELUDE + body).format(T=T, with_kaext=with_kaext, redis_host=host, redis_port=port)
        run[name] = [sys.executable, "-c", textwrap.dedent(code)]
    return run


def _native_clients(redis: Server, postgres: Server, with_kaext: bool) -> dict[str, list[str]]:
    spec = str(kaext.Policy.from_timeout(T))
    run: dict[str, list[str]] = {}
    (redis_host, redis_port), (pg_host, pg_port) = redis.path.address, postgres.path.address
    redis_cli = ["redis-cli", "-h", redis_host, "-p", str(redis_port), "BLPOP", "kaext-never", "0"]
    psql = [
        "psql",
        "-X",
        "-At",
        f"host={pg_host} port={pg_port} user=postgres dbname=postgres",
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


def _start(name: str, argv: list[str], with_kaext: bool) -> Client:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return Client(name, with_kaext, proc)


# --------------------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, f"clients after the server vanished (Policy.from_timeout({T}))", _SUMMARY)


@pytest.fixture
def run_all(redis: Server, postgres: Server) -> Iterator[Callable[[], dict[str, Client]]]:
    clients: list[Client] = []

    def run() -> dict[str, Client]:
        for with_kaext in (True, False):
            programs = {**_python_clients(redis, with_kaext), **_native_clients(redis, postgres, with_kaext)}
            for name, argv in programs.items():
                clients.append(_start(name, argv, with_kaext))
        n_redis = sum(c.name != "psql" for c in clients)
        n_pg = sum(c.name == "psql" for c in clients)

        def ready() -> bool:
            early = [c for c in clients if c.proc.poll() is not None]
            if early:
                c = early[0]
                raise AssertionError(
                    f"{c.label} ended before the server vanished: {c.proc.stdout.read()!r}"
                    if c.proc.stdout
                    else c.label
                )
            return redis.waiting() >= n_redis and postgres.waiting() >= n_pg

        _wait(ready, READY_TIMEOUT, f"{n_redis} BLPOPs and {n_pg} pg_sleeps")
        time.sleep(0.3)  # the last requests' acknowledgements are home
        redis.path.vanish()
        postgres.path.vanish()
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
        for c in clients:  # before the paths and servers go (fixtures torn down after this one)
            with contextlib.suppress(subprocess.TimeoutExpired):
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
