"""``kaext-inspect --listen``: concurrent scrapes, idle and slow clients, the bind address
rules and TLS with client certificates -- real sockets, real processes, openssl-made certificates."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from processes import cli_env
from sockets import HAVE_IPV6

from kaext import _platform

pytestmark = pytest.mark.skipif(_platform.CONNECTIONS != "proc", reason="Linux /proc and pidfd_getfd")
pytest.importorskip("prometheus_client")

PREFIX = "python -m kaext.inspect: serving "


@contextlib.contextmanager
def exporter(implementation: str, *args: str) -> Iterator[str]:
    """``kaext-inspect ARGS`` (with a --listen) running; yields the URL it says it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaext.inspect", *args],
        env=cli_env(implementation),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith(PREFIX), line + proc.stderr.read()
        yield line[len(PREFIX) :].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(url: str, timeout: float, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
        assert r.status == 200
        return str(r.read().decode())


@contextlib.contextmanager
def held_connections(n: int) -> Iterator[None]:
    """``n`` loopback connections (both ends in this process) for the exporter to count."""
    with socket.create_server(("127.0.0.1", 0), backlog=n) as listener:
        ends = []
        try:
            for _ in range(n):
                ends.append(socket.create_connection(listener.getsockname()))
                ends.append(listener.accept()[0])
            yield
        finally:
            for end in ends:
                end.close()


@contextlib.contextmanager
def stalled_clients(host: str, port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` idle clients (connect, send nothing) and ``n`` slow ones (half a request line)."""
    clients = []
    try:
        for i in range(2 * n):
            c = socket.create_connection((host, port), timeout=10)
            if i % 2:
                c.sendall(b"GET /metr")
            clients.append(c)
        yield clients
    finally:
        for c in clients:
            c.close()


def host_port(url: str) -> tuple[str, int]:
    netloc = url.split("/")[2]
    host, _, port = netloc.rpartition(":")
    return host.strip("[]"), int(port)


def test_an_idle_or_slow_client_delays_no_scrape(implementation: str) -> None:
    """Before: one thread read one client at a time with no timeout; a client that sent
    nothing held every scrape until it left."""
    port = servers.free_port()
    with held_connections(200), exporter(implementation, "--all", "--listen", f"127.0.0.1:{port}") as url:
        alone = time.monotonic()
        scrape(url, timeout=60)
        alone = time.monotonic() - alone
        with stalled_clients("127.0.0.1", port, 5):
            for _ in range(3):
                start = time.monotonic()
                text = scrape(url, timeout=alone + 20)
                assert "kaext_tcp_connections" in text
                assert time.monotonic() - start < alone + 20


def test_200_concurrent_scrapes_beside_idle_clients_all_answer(implementation: str) -> None:
    port = servers.free_port()
    with held_connections(500), exporter(implementation, "--all", "--listen", f"127.0.0.1:{port}") as url:
        alone = time.monotonic()
        scrape(url, timeout=60)
        alone = time.monotonic() - alone
        answers: list[float] = []
        errors: list[BaseException] = []
        go = threading.Event()

        def one() -> None:
            go.wait(30)
            start = time.monotonic()
            try:
                scrape(url, timeout=120)
            except BaseException as exc:  # counted below
                errors.append(exc)
            else:
                answers.append(time.monotonic() - start)

        with stalled_clients("127.0.0.1", port, 10):
            threads = [threading.Thread(target=one) for _ in range(200)]
            for t in threads:
                t.start()
            started = time.monotonic()
            go.set()
            for t in threads:
                t.join(180)
            took = time.monotonic() - started
    assert not errors, f"{len(errors)} of 200 failed, e.g. {errors[0]!r}"
    assert len(answers) == 200
    # concurrent scrapes share collections: all of them together cost a few collections, not 200
    assert took < 20 * alone + 30, (took, alone)


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback")
def test_listen_colon_port_binds_every_ipv4_and_ipv6_address(implementation: str) -> None:
    port = servers.free_port()
    with exporter(implementation, "--all", "--listen", f":{port}") as url:
        assert url == f"http://[::]:{port}/metrics"
        for host in ("127.0.0.1", "[::1]"):
            assert "kaext_inspect_unlisted_processes" in scrape(f"http://{host}:{port}/metrics", timeout=60)
    with exporter(implementation, "--all", "--listen", f"127.0.0.1:{port}") as url:  # one address: only it
        assert url == f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(OSError), socket.create_connection(("::1", port), timeout=5):
            pass


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        servers.missing("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=kaext test CA", cwd=d)  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=kaext test {name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


def client_context(pki: Path, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


def test_tls_with_a_required_client_certificate(implementation: str, pki: Path) -> None:
    port = servers.free_port()
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    with exporter(
        implementation, "--all", "--listen", f"127.0.0.1:{port}", *tls, "--tls-client-ca", str(pki / "ca.pem")
    ) as url:
        assert url == f"https://127.0.0.1:{port}/metrics"
        with stalled_clients("127.0.0.1", port, 3):  # a TLS handshake that never comes holds no one up
            assert "kaext_tcp_connections" in scrape(url, timeout=30, context=client_context(pki, True))
        with pytest.raises(OSError):  # no client certificate: refused in the handshake
            scrape(url, timeout=30, context=client_context(pki, False))
        with pytest.raises(OSError):  # plain http on the https port
            scrape(url.replace("https", "http"), timeout=30)
        assert "kaext_tcp_connections" in scrape(url, timeout=30, context=client_context(pki, True))
    with exporter(implementation, "--all", "--listen", f"127.0.0.1:{port}", *tls) as url:  # without client CAs
        assert "kaext_tcp_connections" in scrape(url, timeout=30, context=client_context(pki, False))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--tls-cert", "x.pem"], "--tls-cert, --tls-key and --tls-client-ca go with --listen"),
        (["--listen", "127.0.0.1:9400", "--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--listen", "127.0.0.1:9400", "--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
        (["--listen", "127.0.0.1:9400", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
         "/nonexistent.pem"),
    ],
)  # fmt: skip
def test_tls_flags_bad_use_is_one_line(implementation: str, args: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kaext.inspect", "--all", *args],
        env=cli_env(implementation),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert said in line, line


def netstat(path: str) -> dict[str, int]:
    lines = Path(path).read_text().splitlines()
    names, values = [line.split()[1:] for line in lines if line.startswith("TcpExt:")][:2]
    return dict(zip(names, map(int, values), strict=True))


@pytest.mark.root
def test_counters_of_reads_another_network_namespace(implementation: str) -> None:
    """The exporter in a fresh network namespace (a pod without hostNetwork) with
    --counters-of 1 reports the counters of pid 1's namespace, not its own zeros."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux)")
    command = ["unshare", "--net", "--", sys.executable, "-m", "kaext.inspect", str(os.getpid()), "--prometheus"]
    before = netstat("/proc/1/net/netstat")
    other = subprocess.run(
        [*command, "--counters-of", "1"], env=cli_env(implementation), capture_output=True, text=True
    )
    after = netstat("/proc/1/net/netstat")
    own = subprocess.run(command, env=cli_env(implementation), capture_output=True, text=True)
    assert other.returncode == own.returncode == 0, other.stderr + own.stderr

    def value(text: str, name: str) -> float:
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{name} ")]
        return float(line.split()[1])

    for field, name in (("TCPKeepAlive", "kaext_tcp_keepalive_probes_total"),
                        ("TCPAbortOnTimeout", "kaext_tcp_aborts_on_timeout_total")):  # fmt: skip
        assert before[field] <= value(other.stdout, name) <= after[field]
        assert value(own.stdout, name) == 0  # a fresh namespace has sent nothing
    bad = subprocess.run(
        [sys.executable, "-m", "kaext.inspect", "--all", "--prometheus", "--counters-of", "999999999"],
        env=cli_env(implementation),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
