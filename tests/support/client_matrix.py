"""The client matrix: each client of docs/clients.md against a server that vanishes, resets or is forgotten.

The code a cell runs is the code block of docs/clients.md for that client (``# client: NAME``
on its first line): the block is executed and its functions ``with_kaext(host, port, policy)``,
``without_kaext(host, port)``, ``call(client)`` and, where it has one, ``wait(client)`` are
called -- nothing else is set on the client.  ``async def`` functions run in an event loop of
the scenario's own thread.

``python client_matrix.py NAME MODE TARGETS``: one process per client and mode (``with`` or
``without`` kaext); ``TARGETS`` is JSON ``{"server kind": [host, port]}``.  It runs the five
failures one after the other through one ``kaext.testing.Path`` (healed in between, each
failure with a client of its own), and prints one JSON line: a list of cells.  A cell still
running ``CAP`` seconds after its failure is reported as blocked and left running (the
process exits without waiting for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path as FilePath
from typing import Any

T = 3  # s: Policy.from_timeout(T)
BOUND = 1.5 * T + 2  # s: a cell with kaext ends within this after the failure
CAP = 3 * T  # s: a cell still running then is reported as blocked
SETUP = 40.0  # s: making a client and its first call, at most (servers loaded by the other cells)
FORGET = 2.5  # s: the NAT's idle timeout (forget_idle)
IDLE = 4.0  # s: how long the client idles before its call, once the NAT forgets after FORGET
WAIT_SETTLE = 1.5  # s: a wait() in flight this long has reached the server (and been acknowledged)

FAILURES = ("mid-call", "idle-call", "nat-drop", "nat-rst", "gone-at-connect")
FAILURE_TITLES = {
    "mid-call": "vanishes mid-call",
    "idle-call": "vanishes while idle, then a call",
    "nat-drop": "NAT forgets the idle flow",
    "nat-rst": "NAT answers with RST",
    "gone-at-connect": "host gone at (re)connect",
}

#: client name (the ``# client:`` line of its block) -> the kind of server it talks to
CLIENTS: dict[str, str] = {
    "redis-py": "redis",
    "redis-py asyncio": "redis",
    "redis-py pub/sub": "redis",
    "psycopg": "postgres",
    "asyncpg": "postgres",
    "SQLAlchemy": "postgres",
    "PyMySQL": "mariadb",
    "kombu (amqp)": "rabbitmq",
    "pika": "rabbitmq",
    "kombu (redis)": "redis",
    "kombu (redis pub/sub)": "redis",
    "paho-mqtt": "mosquitto",
    "pymemcache": "memcached",
    "websockets": "websocket",
    "grpcio": "grpc",
    "httpx": "http",
    "requests (stream)": "http",
    "aiohttp": "http",
    "watch (urllib3)": "http",
    # not recipes: what a recipe trades, shown with numbers (the page's "What the recipes trade")
    "redis-py, options only": "redis",
    "watch (urllib3), default retries": "http",
}
#: rows of the matrix that are no recipe: the bound does not apply to them
NOT_RECIPES = frozenset({"redis-py, options only", "watch (urllib3), default retries"})

ROOT = FilePath(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "clients.md"


def recipes(page: FilePath = PAGE) -> dict[str, str]:
    """name -> code of every ```python block of ``page`` whose first line is ``# client: NAME``."""
    found: dict[str, str] = {}
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            block = lines[i + 1 : end]
            if block and block[0].startswith("# client: "):
                found[block[0][len("# client: ") :].strip()] = "\n".join(block) + "\n"
            i = end
        i += 1
    return found


@contextlib.contextmanager
def nft_turn() -> Iterator[None]:
    """One nftables change at a time across the matrix's processes (``$KAEXT_MATRIX_LOCK``, a file).

    A hundred ``nft`` transactions at once restart each other for minutes; one at a time each
    takes milliseconds.  The time a cell measures starts after its change is in place.
    """
    lock = os.environ.get("KAEXT_MATRIX_LOCK")
    if not lock:
        yield
        return
    with open(lock, "a") as f:  # a file description of its own: flock excludes other threads too
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _describe(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:240]


class _Cell:
    """One failure for one client: its worker thread and what it measured."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.start: float | None = None  # the failure (or the measured call) began
        self.end: float | None = None
        self.outcome: str | None = None  # "ok", "error", "n/a", "setup failed", "ended early"
        self.detail = ""
        self.keepalive: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None

    def result(self, name: str, mode: str, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"client": name, "mode": mode, "failure": self.failure, "recipe": name not in NOT_RECIPES}
        if self.outcome is None:
            out["outcome"] = "blocked" if self.start is not None else "setup failed"
            out["seconds"] = None  # still running CAP s after the failure
            out["detail"] = self.detail or ("still running" if self.start is not None else "never got ready")
        else:
            out["outcome"] = self.outcome
            out["seconds"] = None if self.start is None or self.end is None else round(self.end - self.start, 2)
            out["detail"] = self.detail
        if self.keepalive is not None:
            out["keepalive"] = self.keepalive
        return out


def _keepalive_of(address: tuple[str, int]) -> dict[str, Any] | None:
    """What the kernel holds for this process's connection to ``address``: keepalive and user timeout."""
    import kaext

    for row in kaext.connections():
        host = row.remote[0].removeprefix("::ffff:")  # a dual-stack socket (gRPC's) shows IPv4 mapped
        if (host, row.remote[1]) == tuple(address) and row.state == "ESTABLISHED" and row.keepalive is not None:
            ka = row.keepalive
            return {
                "enabled": bool(ka.enabled),
                "idle": ka.idle,
                "interval": ka.interval,
                "count": ka.count,
                "user_timeout": row.user_timeout,
            }
    return None


def _report(results: list[dict[str, Any]]) -> None:
    sys.stdout.write("RESULT " + json.dumps(results) + "\n")
    sys.stdout.flush()


def run(name: str, mode: str, targets: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    import kaext
    import kaext.testing

    code = recipes()[name]
    namespace: dict[str, Any] = {"__name__": f"clients.md:{name}"}
    exec(compile(code, f"docs/clients.md [{name}]", "exec"), namespace)
    policy = kaext.Policy.from_timeout(T)
    target = tuple(targets[CLIENTS[name]])
    cells = {failure: _Cell(failure) for failure in FAILURES}

    def make(host: str, port: int, do: Callable[..., Any]) -> Any:
        if mode == "with":
            return do(namespace["with_kaext"], host, port, policy)
        return do(namespace["without_kaext"], host, port)

    def worker(cell: _Cell, path: kaext.testing.Path) -> None:
        loop = asyncio.new_event_loop()

        def do(fn: Callable[..., Any], *args: Any) -> Any:
            value = fn(*args)
            if inspect.isawaitable(value):
                return loop.run_until_complete(value)
            return value

        host, port = path.address
        try:
            if cell.failure == "gone-at-connect":
                with nft_turn():
                    path.vanish()
                cell.ready.set()
                cell.start = time.monotonic()
                do(namespace["call"], make(host, port, do))
            elif cell.failure == "mid-call":
                if "wait" not in namespace:
                    cell.outcome, cell.detail = "n/a", "no call that waits on the server"
                    return
                client = make(host, port, do)
                cell.ready.set()  # the controller vanishes the path WAIT_SETTLE s after this
                do(namespace["wait"], client)
                if cell.start is None:
                    cell.outcome, cell.detail = "ended early", "wait() returned before the server vanished"
                    return
            else:
                client = make(host, port, do)
                do(namespace["call"], client)
                if cell.failure == "idle-call":
                    cell.keepalive = _keepalive_of(path.address)
                    with nft_turn():
                        path.vanish()
                    time.sleep(0.2)
                else:
                    with nft_turn():
                        path.forget_idle(FORGET, rst=cell.failure == "nat-rst")
                    time.sleep(IDLE)
                cell.ready.set()
                cell.start = time.monotonic()
                do(namespace["call"], client)
            cell.end = time.monotonic()
            cell.outcome = "ok"
        except BaseException as exc:  # what ended the call is the measurement
            cell.end = time.monotonic()
            if cell.start is None and cell.failure != "mid-call":
                cell.outcome, cell.detail = "setup failed", _describe(exc)
                traceback.print_exc(file=sys.stderr)
                return
            if cell.start is None:
                cell.outcome, cell.detail = "ended early", _describe(exc)
                return
            cell.outcome, cell.detail = "error", _describe(exc)

    # One path for the process, the failures one after the other (healed in between): a
    # hundred and ninety nftables tables at once made each nft call take seconds.
    with nft_turn():
        path = kaext.testing.Path(target)
    results = []
    try:
        for failure in FAILURES:
            cell = cells[failure]
            with nft_turn():
                path.heal()
            cell.thread = threading.Thread(target=worker, args=(cell, path), name=failure, daemon=True)
            cell.thread.start()
            if failure == "mid-call" and cell.ready.wait(SETUP):
                time.sleep(WAIT_SETTLE)
                if cell.outcome is None:
                    with nft_turn():
                        path.vanish()
                    cell.start = time.monotonic()
            deadline = time.monotonic() + SETUP + IDLE + CAP
            while time.monotonic() < deadline and cell.thread.is_alive():
                if cell.start is not None and time.monotonic() - cell.start >= CAP:
                    break
                time.sleep(0.05)
            # what it is now: a call still blocked may end later, once the path is healed
            results.append(cell.result(name, mode, time.monotonic()))
        _report(results)  # before the path is removed: that may wait for nftables
        return results
    finally:
        try:
            with nft_turn():
                path.close()
        except OSError:
            pass


def main(argv: list[str]) -> None:
    name, mode, targets = argv[0], argv[1], json.loads(argv[2])
    try:
        run(name, mode, {k: (v[0], int(v[1])) for k, v in targets.items()})
    except BaseException as exc:
        traceback.print_exc()
        results = [
            {"client": name, "mode": mode, "failure": f, "outcome": "setup failed", "seconds": None,
             "detail": _describe(exc), "recipe": name not in NOT_RECIPES}
            for f in FAILURES
        ]  # fmt: skip
        _report(results)
    sys.stderr.flush()
    os._exit(0)  # blocked calls stay blocked in their threads: do not wait for them


if __name__ == "__main__":
    main(sys.argv[1:])
