"""The dead-peer scenarios of kaext.testing, all at once: ``python kit_scenarios.py T``.

For each client (a plain socket, redis-py against a ``redis-server`` this script starts, requests
against an HTTP server that holds its response), each failure of the path (``vanish``, ``reset``,
``forget_idle``) and each of "no policy" / ``Policy.from_timeout(T)``: the client is blocked in a
call through its own :class:`kaext.testing.Path` (a plain ``recv``, ``BLPOP`` on an empty list, a
GET whose body never completes), then the path fails.  Every scenario runs in a thread of its
own, concurrently; the script waits until each call has ended or 3 x T seconds have passed since
its failure, prints one JSON line per scenario (client, failure, policy, outcome: the exception's
name and errno or "blocked", seconds from the failure to the end) and exits (``os._exit``: the
calls still blocked go with the process), its paths closed.

It runs as root, or as a plain user under ``kaext testing --``; the proof is
tests/integration/test_testing_kit.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kaext
from kaext.testing import Path

CLIENTS = ("socket", "redis", "requests")
FAILURES = ("vanish", "reset", "forget_idle")
#: forget_idle's idle time: shorter than the policy's first probe (idle >= 1 s), so that probe
#: meets a forgotten flow.
FORGET_AFTER = 0.5
#: Seconds the call is left blocked before the path fails (its request has reached the server).
SETTLE = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not listen on {port}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-kit-redis-") as tmp:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", tmp, "--daemonize", "no", "--logfile", os.path.join(tmp, "log")]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(port, proc)
            yield port
        finally:
            proc.kill()
            proc.wait()


class _Hold(BaseHTTPRequestHandler):
    """``/ok``: a whole response; anything else: headers, 4 of 10 bytes of body, then nothing until
    the client goes away."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.write(b"held")
        self.wfile.flush()
        with contextlib.suppress(OSError):
            while self.rfile.read(1):
                pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def hold_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hold)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def blocked_call(client: str, path: Path, policy: kaext.Policy | None) -> Callable[[], object]:
    """Connect ``client`` through ``path``, check it works, and return its blocking call."""
    host, port = path.address
    if client == "socket":
        sock = socket.create_connection((host, port), timeout=10)
        if policy is not None:
            policy.apply(sock)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.settimeout(None)
        return lambda: sock.recv(64)
    if client == "redis":
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {}
        if policy is not None:
            options = {"socket_keepalive": True, "socket_keepalive_options": policy.tcp_options()}
        r = redis.Redis(
            host, port, retry=Retry(NoBackoff(), 0), socket_timeout=None, single_connection_client=True, **options
        )
        assert r.ping()
        return lambda: r.blpop(f"kaext-kit-{os.getpid()}-{port}", timeout=0)
    if client == "requests":
        import requests

        from kaext.adapters import KeepaliveAdapter

        session = requests.Session()
        session.trust_env = False  # loopback, never a proxy
        if policy is not None:
            session.mount("http://", KeepaliveAdapter(policy))
        assert session.get(f"http://{host}:{port}/ok").text == "ok"  # the connection the call reuses
        return lambda: session.get(f"http://{host}:{port}/hold")
    raise ValueError(client)


def outcome(exc: BaseException) -> str:
    """The exception a call ended with, and the errno under it (redis-py and requests wrap it)."""
    seen: BaseException | None = exc
    code = None
    while seen is not None and code is None:
        code = getattr(seen, "errno", None) if isinstance(seen, OSError) else None
        for arg in getattr(seen, "args", ()):
            if code is None and isinstance(arg, BaseException):
                code = getattr(arg, "errno", None)
        seen = seen.__cause__ or seen.__context__
    if code is None:
        for name in ("ETIMEDOUT", "ECONNRESET"):
            if f"Errno {getattr(errno, name)}]" in str(exc) or f"Error {getattr(errno, name)} " in str(exc):
                code = getattr(errno, name)
    name = errno.errorcode.get(code, str(code)) if isinstance(code, int) else "?"
    return f"{type(exc).__name__} {name}"


def run(t: float) -> list[dict[str, Any]]:
    """Every scenario, concurrently; their results."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    threads = []
    paths: list[Path] = []
    with redis_server() as redis_port, hold_server() as http_port, echo_server() as echo_port:
        ports = {"socket": echo_port, "redis": redis_port, "requests": http_port}
        start = threading.Barrier(len(CLIENTS) * len(FAILURES) * 2 + 1)

        def scenario(client: str, failure: str, with_policy: bool) -> None:
            policy = kaext.Policy.from_timeout(t) if with_policy else None
            row: dict[str, Any] = {"client": client, "failure": failure, "policy": str(policy) if policy else None}
            try:
                path = Path(("127.0.0.1", ports[client]))
                with lock:
                    paths.append(path)
                call = blocked_call(client, path, policy)
            except BaseException as exc:
                row.update(outcome=f"setup failed: {exc!r}", seconds=None)
                with lock:
                    results.append(row)
                start.wait()
                return
            done = threading.Event()
            ended: dict[str, Any] = {}

            def blocked() -> None:
                try:
                    value = call()
                    ended["outcome"] = f"returned {value!r}"[:80]
                except BaseException as exc:
                    ended["outcome"] = outcome(exc)
                ended["at"] = time.monotonic()
                done.set()

            threading.Thread(target=blocked, daemon=True).start()
            start.wait()
            time.sleep(SETTLE)
            if done.is_set():
                row.update(outcome=f"ended before the failure: {ended['outcome']}", seconds=None)
            else:
                try:
                    if failure == "forget_idle":
                        path.forget_idle(FORGET_AFTER)
                    else:
                        getattr(path, failure)()
                except OSError as exc:  # forget_idle on an iptables path (a kernel without nftables for IP)
                    row.update(outcome=f"failure refused: {exc!r}", seconds=None)
                    with lock:
                        results.append(row)
                    return
                failed_at = time.monotonic()
                if done.wait(3 * t):
                    row.update(outcome=ended["outcome"], seconds=round(ended["at"] - failed_at, 3))
                else:
                    row.update(outcome="blocked", seconds=round(time.monotonic() - failed_at, 3))
            with lock:
                results.append(row)

        for client in CLIENTS:
            for failure in FAILURES:
                for with_policy in (False, True):
                    thread = threading.Thread(target=scenario, args=(client, failure, with_policy), daemon=True)
                    thread.start()
                    threads.append(thread)
        start.wait()
        for thread in threads:
            thread.join(3 * t + 60)
        for path in paths:
            path.close()
    return results


if __name__ == "__main__":
    rows = run(float(sys.argv[1]))
    for row in rows:
        print(json.dumps(row), flush=True)
    sys.stderr.flush()
    os._exit(0)  # the calls still blocked end with the process
