"""Real servers on loopback for the framework tests: HTTP (+ WebSocket upgrade), Redis, PostgreSQL.

Each server is started on a free port in a temporary directory and stopped
afterwards.  ``need()`` decides what a missing server or library means: a clear
skip on a developer's machine, a failure in CI (``KAEXT_REQUIRE_SERVERS=1``), where
``.ci/apt-packages.txt`` and the ``test`` extra install everything.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import NoReturn

import pytest

# Set by the project's CI (.ci/run), which must never skip these tests.
REQUIRED = os.environ.get("KAEXT_REQUIRE_SERVERS") == "1"


def missing(reason: str) -> NoReturn:
    """Skip with a reason; fail where KAEXT_REQUIRE_SERVERS=1 (the project's CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (KAEXT_REQUIRE_SERVERS=1: see .ci/apt-packages.txt and the 'test' extra)")
    pytest.skip(reason)


def library(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"library {name!r} is not installed ({exc}); pip install '.[test]'")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------------------
# HTTP/1.1 with keep-alive, and a minimal WebSocket upgrade (RFC 6455 handshake only)
# --------------------------------------------------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if key and self.headers.get("Upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            with contextlib.suppress(OSError):
                while self.rfile.read(1):  # hold the connection until the client closes it
                    pass
            self.close_connection = True
            return
        if self.path == "/hold":
            # half a body, then wait for the client to go away: the client's connection
            # stays checked out (aiohttp releases it as soon as a body is complete)
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"held")
            self.wfile.flush()
            with contextlib.suppress(OSError):
                while self.rfile.read(1):
                    pass
            self.close_connection = True
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """An HTTP/1.1 server in a thread; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway ``redis-server`` (Debian package) on a free port, no persistence; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-redis-") as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(tmp, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, 15, proc)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    return shutil.which(name)


def _version_key(path: str) -> tuple[int, ...]:
    version = path.split("/")[4]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


class PostgresCluster:
    """A running cluster: its ``port``, the directory of its Unix socket (``sockdir``) and the
    command prefix that runs a program as the cluster's owner (``prefix``: empty, or runuser)."""

    def __init__(self, port: int, sockdir: str, prefix: list[str]) -> None:
        self.port, self.sockdir, self.prefix = port, sockdir, prefix


@contextlib.contextmanager
def postgres_cluster(address: str = "127.0.0.1", port: int | None = None) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster (Debian package postgresql) listening on ``address``, trust auth.

    ``port``: a free one when None.
    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user the
    package creates (``runuser``).  The superuser is ``postgres``.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed (Debian package postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            missing("running as root needs the 'postgres' user and runuser to start PostgreSQL")
        prefix = [runuser, "-u", "postgres", "--"]
    port = free_port() if port is None else port
    tmp = tempfile.mkdtemp(prefix="kaext-pg-")
    data, sockdir, log = os.path.join(tmp, "data"), os.path.join(tmp, "sock"), os.path.join(tmp, "log")
    os.mkdir(sockdir)
    if prefix:
        for path in (tmp, sockdir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    started = False
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        options = f"-p {port} -k {sockdir} -c listen_addresses={address} -c fsync=off"
        subprocess.run(
            [*prefix, pg_ctl, "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=90,
        )
        started = True
        wait_for_port(port, 30)
        yield PostgresCluster(port, sockdir, prefix)
    finally:
        if started:
            subprocess.run(
                [*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[int]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (:func:`postgres_cluster`); yields its port."""
    with postgres_cluster() as cluster:
        yield cluster.port


# --------------------------------------------------------------------------------------
# HTTPS (self-signed, for CONNECT tunnels) and an HTTP forward proxy (tinyproxy)
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def https_server() -> Iterator[tuple[str, str]]:
    """The HTTP server behind TLS with a throwaway self-signed certificate for 127.0.0.1.

    Yields ``(base URL, path of the certificate)``: pass the path as the client's CA.
    """
    import ssl

    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl is not installed (needed to make a test certificate)")
    with tempfile.TemporaryDirectory(prefix="kaext-tls-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key,
                "-out",
                cert,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="https-server", daemon=True)
        thread.start()
        try:
            yield f"https://127.0.0.1:{server.server_address[1]}", cert
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


@contextlib.contextmanager
def http_proxy() -> Iterator[str]:
    """``tinyproxy`` (Debian package) on a free loopback port: a forward proxy that relays
    absolute-URI requests (``GET http://...``) and tunnels ``CONNECT`` to any port.

    Yields its URL, ``http://127.0.0.1:PORT``.
    """
    binary = shutil.which("tinyproxy")
    if binary is None:
        missing("tinyproxy is not installed (Debian package tinyproxy)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-proxy-") as tmp:
        conf = os.path.join(tmp, "tinyproxy.conf")
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "Allow 127.0.0.1",
            "MaxClients 50",
            "LogLevel Connect",
            f'LogFile "{os.path.join(tmp, "tinyproxy.log")}"',
            "DisableViaHeader Yes",
        ]
        if os.geteuid() == 0:
            lines += ["User nobody", "Group nogroup"]
            os.chmod(tmp, 0o777)
        with open(conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-d", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, 15, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------------------


class Prometheus:
    """A running Prometheus server: its base URL and its HTTP query API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: str) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def query(self, promql: str) -> list[dict[str, object]]:
        """``/api/v1/query``: the instant vector's samples (``{"metric": {...}, "value": [t, "v"]}``)."""
        import json
        import urllib.parse
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        assert doc["data"]["resultType"] == "vector", doc
        return list(doc["data"]["result"])


@contextlib.contextmanager
def prometheus_server(target: str, scrape_interval: str = "1s") -> Iterator[Prometheus]:
    """A throwaway Prometheus (Debian package prometheus) on 127.0.0.1 scraping ``target``
    (``HOST:PORT``, path /metrics) every ``scrape_interval``; its own storage in a temporary
    directory, removed afterwards with the server stopped (also on failure)."""
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus is not installed (Debian package prometheus)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-prometheus-") as tmp:
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                "global:\n"
                f"  scrape_interval: {scrape_interval}\n"
                f"  scrape_timeout: {scrape_interval}\n"
                "scrape_configs:\n"
                "  - job_name: kaext\n"
                "    static_configs:\n"
                f"      - targets: ['{target}']\n"
            )
        log = os.path.join(tmp, "prometheus.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        try:
            wait_for_port(port, 60, proc)
            url = f"http://127.0.0.1:{port}"
            _wait_ready(f"{url}/-/ready", 60, proc)  # the port opens before the storage is: 503 until then
            yield Prometheus(url, proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:  # URLError, HTTPError 503
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode} before it was ready") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready after {timeout} s") from None
            time.sleep(0.1)


# --------------------------------------------------------------------------------------
# MariaDB, RabbitMQ, mosquitto, memcached (Debian packages), for the client matrix
# --------------------------------------------------------------------------------------


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def mariadb_server() -> Iterator[int]:
    """A throwaway MariaDB server (Debian package mariadb-server) on 127.0.0.1, a fresh data
    directory; user ``root`` without a password from any host.  Yields the port."""
    install_db, mariadbd = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or shutil.which("mysqld")
    if mariadbd is None and os.path.exists("/usr/sbin/mariadbd"):
        mariadbd = "/usr/sbin/mariadbd"
    if install_db is None or mariadbd is None:
        missing("MariaDB is not installed (Debian package mariadb-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-mariadb-") as tmp:
        data, sock = os.path.join(tmp, "data"), os.path.join(tmp, "mysqld.sock")
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [install_db, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *user],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180,
        )  # fmt: skip
        init = os.path.join(tmp, "init.sql")
        with open(init, "w", encoding="ascii") as f:
            f.write("CREATE USER IF NOT EXISTS 'root'@'%';\nGRANT ALL ON *.* TO 'root'@'%';\n")
        proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
             "--bind-address=127.0.0.1", "--skip-name-resolve", f"--init-file={init}", f"--pid-file={tmp}/pid",
             "--innodb-buffer-pool-size=16M", "--skip-log-bin", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, 90, proc)
            yield port
        finally:
            _stop_process(proc, 60)


@contextlib.contextmanager
def rabbitmq_server() -> Iterator[int]:
    """A throwaway RabbitMQ node (Debian package rabbitmq-server) of its own name, AMQP on a free
    port of 127.0.0.1; user ``guest`` / ``guest``, allowed from any address.  Yields the port."""
    # the server script itself: Debian's /usr/sbin wrapper switches to the rabbitmq user
    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(binary):
        missing("RabbitMQ is not installed (Debian package rabbitmq-server)")
    port, dist, epmd = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-rabbitmq-") as tmp:
        conf = os.path.join(tmp, "rabbitmq.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(f"listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n")
        plugins = os.path.join(tmp, "enabled_plugins")
        with open(plugins, "w", encoding="ascii") as f:
            f.write("[].\n")
        env = dict(
            os.environ,
            HOME=tmp,
            RABBITMQ_NODENAME=f"kaext{os.getpid()}x{port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_CONFIG_FILE=conf,
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_MNESIA_BASE=os.path.join(tmp, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(tmp, "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_PID_FILE=os.path.join(tmp, "pid"),
            ERL_EPMD_PORT=str(epmd),  # an epmd of its own, ended with the node
        )
        with open(os.path.join(tmp, "out.log"), "wb") as out:
            proc = subprocess.Popen(
                [binary], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_port(port, 120, proc)
            yield port
        finally:
            # the node is an Erlang VM started by a shell script: end the whole group it leads
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
                    proc.wait()
            epmd_binary = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            subprocess.run([epmd_binary, "-port", str(epmd), "-kill"], env=env, capture_output=True, timeout=30)


@contextlib.contextmanager
def mosquitto_server() -> Iterator[int]:
    """A throwaway mosquitto MQTT broker (Debian package mosquitto) on 127.0.0.1, anonymous; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        missing("mosquitto is not installed (Debian package mosquitto)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaext-mosquitto-") as tmp:
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            if os.geteuid() == 0:
                f.write("user root\n")
        proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, 15, proc)
            yield port
        finally:
            _stop_process(proc)


@contextlib.contextmanager
def memcached_server() -> Iterator[int]:
    """A throwaway memcached (Debian package memcached) on 127.0.0.1; yields the port."""
    binary = shutil.which("memcached")
    if binary is None:
        missing("memcached is not installed (Debian package memcached)")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", *user],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 15, proc)
        yield port
    finally:
        _stop_process(proc)
