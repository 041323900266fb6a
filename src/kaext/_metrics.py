"""Prometheus metrics of the inspector: ``kaext-inspect --prometheus`` and ``--listen HOST:PORT``.

Imported only for those two flags: ``prometheus_client`` (the ``metrics`` extra,
``pip install 'kaext[metrics]'``) writes the text exposition format.  Every scrape
inspects the processes again (``_connections._collect``: one socket table per network
namespace, shared by all the processes in it) and reports:

* ``kaext_tcp_connections{pid, process, state, verdict}`` (gauge): TCP sockets the
  process holds, by the kernel's state name and the inspector's verdict in snake case
  (``ok``, ``keepalive_off``, ``first_probe_too_late``, ``user_timeout_first``, ``unreadable``; empty for a
  socket that is not judged: listeners and states other than ESTABLISHED).  ``process``
  is the process name (``/proc/<pid>/comm``).
* ``kaext_tcp_keepalive_probes_total`` and ``kaext_tcp_aborts_on_timeout_total``
  (counters): the kernel's ``TcpExt`` ``TCPKeepAlive`` (keepalive probes sent) and
  ``TCPAbortOnTimeout`` (connections dropped when retransmissions or keepalive probes
  went unanswered) from ``/proc/net/netstat`` -- of the exporter's own network namespace,
  or of process PID's with ``--counters-of PID`` (``/proc/PID/net/netstat``).
* ``kaext_inspect_unlisted_processes`` (gauge): processes whose sockets could not be
  listed in this scrape (no permission; with explicit PIDs also a process that exited).
* ``kaext_inspect_duration_seconds`` (gauge): how long this scrape's inspection took.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import _backend
from ._connections import Connection, _tally

__all__ = [
    "InspectCollector",
    "exposition",
    "kernel_counters",
    "listen_address",
    "serve",
    "tls_context",
    "verdict_label",
]

#: A verdict function: ``kaext.inspect.verdict`` with the idle timeout chosen.  It reads of
#: a row only its ``state``, ``keepalive`` and ``user_timeout``: the collector judges one row
#: of each process per distinct such reading, and counts the others like it.
Judge = Callable[[Connection], "str | None"]

#: The /proc/net/netstat TcpExt fields exported, and the counter each becomes.
KERNEL_COUNTERS = {
    "TCPKeepAlive": ("kaext_tcp_keepalive_probes", "Keepalive probes sent (TcpExt TCPKeepAlive, /proc/net/netstat)."),
    "TCPAbortOnTimeout": (
        "kaext_tcp_aborts_on_timeout",
        "Connections dropped because retransmissions or keepalive probes went unanswered "
        "(TcpExt TCPAbortOnTimeout, /proc/net/netstat).",
    ),
}


def verdict_label(verdict: str | None) -> str:
    """The ``verdict`` label of an inspector verdict: ``"KEEPALIVE OFF"`` -> ``keepalive_off``, None -> ``""``."""
    return "" if verdict is None else verdict.lower().replace(" ", "_")


def kernel_counters(path: str = "/proc/net/netstat") -> dict[str, int]:
    """The ``TcpExt`` counters of this network namespace, by name (empty where the file does not exist)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    # pairs of lines: "TcpExt: Name1 Name2 ...", then "TcpExt: value1 value2 ..."
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:  # exited since its sockets were read
        return ""


class InspectCollector(Collector):
    """A ``prometheus_client`` collector that inspects ``pids()`` on every collection.

    ``judge``: the verdict of one connection (None: not judged), from its state, keepalive
    and user timeout alone (``Judge``).  ``strict``: raise the
    first error (a process that does not exist, no permission) instead of counting it in
    ``kaext_inspect_unlisted_processes``; with ``strict`` False a process that exited is
    neither listed nor counted when ``count_exited`` is False (``--all``).  ``netstat``:
    the file the kernel counters are read from (``/proc/PID/net/netstat``: PID's network
    namespace; by default this process's own).  After each
    collection ``errors`` holds its ``(pid, OSError)`` pairs.
    """

    def __init__(
        self,
        pids: Callable[[], Iterable[int]],
        judge: Judge,
        *,
        strict: bool = False,
        count_exited: bool = True,
        backend: ModuleType = _backend,
        netstat: str = "/proc/net/netstat",
    ) -> None:
        self._pids = pids
        self._judge = judge
        self._strict = strict
        self._count_exited = count_exited
        self._backend = backend
        self._netstat = netstat
        self.errors: list[tuple[int, OSError]] = []

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        # The rows are plain tuples and records (no reference cycles), 100,000 of them at
        # fleet scale: the cyclic garbage collector would traverse them again and again
        # while they are made (0.2 s of such a scrape), and can find nothing in them.
        judge = self._judge
        workers = os.cpu_count() or 1
        enabled = gc.isenabled()
        gc.disable()
        try:
            # one row per kind of socket, with how many are like it
            tally, errors = _tally(self._pids(), self._backend, workers)
        finally:
            if enabled:
                gc.enable()
        if self._strict and errors:
            raise errors[0][1]
        if not self._count_exited:
            errors = [(pid, exc) for pid, exc in errors if not isinstance(exc, ProcessLookupError)]
        self.errors = errors
        counts: Counter[tuple[int, str, str]] = Counter()
        for row, n in tally:
            counts[row.pid, row.state, verdict_label(judge(row))] += n
        names = {pid: _process_name(pid) for pid in {pid for pid, _, _ in counts}}
        gauge = GaugeMetricFamily(
            "kaext_tcp_connections",
            "TCP sockets a process holds, by TCP state and the inspector's verdict (ok, keepalive_off, "
            "first_probe_too_late, user_timeout_first, unreadable; empty when not judged: not ESTABLISHED).",
            labels=["pid", "process", "state", "verdict"],
        )
        for (pid, state, verdict), n in sorted(counts.items()):
            gauge.add_metric([str(pid), names[pid], state, verdict], n)
        yield gauge
        kernel = kernel_counters(self._netstat)
        for field, (name, documentation) in KERNEL_COUNTERS.items():
            if field in kernel:
                yield CounterMetricFamily(name, documentation, value=kernel[field])
        yield GaugeMetricFamily(
            "kaext_inspect_unlisted_processes",
            "Processes whose sockets could not be listed in this scrape (no permission, or exited).",
            value=len(errors),
        )
        yield GaugeMetricFamily(
            "kaext_inspect_duration_seconds",
            "Seconds this scrape's inspection took.",
            value=time.perf_counter() - start,
        )


def _registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(collector: Collector) -> bytes:
    """One collection in the Prometheus text exposition format (``kaext-inspect --prometheus``)."""
    return generate_latest(_registry(collector))


#: ``--listen``: seconds a client may take for each read or write of its request and
#: answer (and for the TLS handshake); an idle or slow client is dropped after it, and only
#: ever holds its own thread.
CLIENT_TIMEOUT = 10.0
#: ``--listen``: connections served at once (one thread each); a connection beyond them is
#: closed at once.  Concurrent scrapes share one collection (``_Shared``).
MAX_CLIENTS = 512
#: What ``generate_latest`` writes: the text exposition format 0.0.4.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
#: ``--listen``: the listen backlog (the kernel caps it at ``net.core.somaxconn``).
BACKLOG = 1024


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` -> ``(host, port)``; ValueError.

    ``:PORT`` gives host ``""``: every address, IPv4 and IPv6 (``serve`` binds ``::`` with
    IPV6_V6ONLY off where the system has IPv6, else ``0.0.0.0``); ``0.0.0.0:PORT`` every
    IPv4 address only, ``[::]:PORT`` every IPv6 address only."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen takes HOST:PORT with a port from 1 to 65535, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--listen: write an IPv6 address in brackets ([::1]:9400), got {text!r}")
    return host, int(port)


class _Shared:
    """One collection at a time: a scrape that arrives while a collection runs waits for it
    and answers with its result (no older than that scrape), so any number of concurrent
    scrapes cost one collection, not one each."""

    def __init__(self, produce: Callable[[], bytes]) -> None:
        import threading

        self._produce = produce
        self._lock = threading.Lock()
        self._running: tuple[threading.Event, list[bytes | BaseException]] | None = None

    def __call__(self) -> bytes:
        import threading

        with self._lock:
            running = self._running
            owner = running is None
            if running is None:
                running = self._running = (threading.Event(), [])
        done, result = running
        if owner:
            try:
                result.append(self._produce())
            except BaseException as exc:  # every waiter gets it
                result.append(exc)
            finally:
                with self._lock:
                    self._running = None
                done.set()
        else:
            done.wait()
        (outcome,) = result
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def tls_context(
    certfile: str, keyfile: str, client_cafile: str | None = None, client_auth_required: bool = False
) -> Any:
    """The server's TLS context: prometheus_client's own (``start_http_server``'s
    ``certfile``, ``keyfile``, ``client_cafile`` and ``client_auth_required``): the
    certificate chain and key; client certificates are checked against ``client_cafile``
    (the system's CAs when None) and required when ``client_auth_required``.  OSError
    naming the file that cannot be loaded."""
    import ssl

    from prometheus_client.exposition import _get_ssl_ctx

    return _get_ssl_ctx(certfile, keyfile, ssl.PROTOCOL_TLS_SERVER, client_cafile, None, client_auth_required)


def serve(
    collector: Collector,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    failed: Callable[[str], None] | None = None,
    *,
    tls: Any = None,
    client_timeout: float = CLIENT_TIMEOUT,
    max_clients: int = MAX_CLIENTS,
) -> None:
    """Serve the metrics at ``http://HOST:PORT/metrics`` (``https://`` with ``tls``, an
    ``ssl.SSLContext`` from ``tls_context``) until interrupted.

    Each connection has its own thread (at most ``max_clients``; one more is closed at
    once) and ``client_timeout`` seconds for each read, write and the TLS handshake, so an
    idle or slow client delays no other scrape.  Concurrent scrapes share one collection
    (``_Shared``).  ``host`` ``""``: every address (``listen_address``).  ``ready`` is
    called with the URL once the port is bound; ``failed`` with one line when a collection
    raised (the scrape is answered 500, the server goes on).  OSError (EADDRINUSE,
    EADDRNOTAVAIL, ...) when the address cannot be bound.  A KeyboardInterrupt (or another
    BaseException) that arrives during a scrape is raised from here once the scrape is
    answered: wsgiref would log it and serve on."""
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server  # --listen only: 40 ms to import

    class QuietHandler(WSGIRequestHandler):
        timeout = client_timeout

        def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
            pass

    registry = _registry(collector)
    shared = _Shared(lambda: generate_latest(registry))
    interrupted: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"kaext-inspect serves /metrics\n"]
        try:
            body = shared()
        except Exception as exc:  # one line, and the next scrape tries again
            line = f"scrape failed: {getattr(exc, 'strerror', None) or exc}"
            if failed is not None:
                failed(line)
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [f"{line}\n".encode()]
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: for the caller
            interrupted.append(exc)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"kaext-inspect is stopping\n"]
        start_response("200 OK", [("Content-Type", TEXT_FORMAT), ("Content-Length", str(len(body)))])
        return [body]

    slots = threading.BoundedSemaphore(max_clients)
    dual_stack = host == "" and socket.has_ipv6
    bind_host = ("::" if dual_stack else "0.0.0.0") if host == "" else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True  # an idle client never holds the process up at exit
        request_queue_size = BACKLOG
        allow_reuse_address = True

        def server_bind(self) -> None:
            if dual_stack:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):  # as many clients as threads allowed: no more
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                request.settimeout(client_timeout)
                if tls is not None:  # the handshake in this client's thread, under its timeout
                    try:
                        request = tls.wrap_socket(request, server_side=True)
                    except OSError:
                        return
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys

            error = sys.exc_info()[1]
            if isinstance(error, OSError):  # a client that timed out, reset or failed TLS
                return
            if failed is not None:
                failed(f"client {client_address[0]}: {error!r}")

    server: WSGIServer = make_server(bind_host, port, app, server_class=Server, handler_class=QuietHandler)
    server.timeout = 0.5  # handle_request returns this often to see an interrupt from a scrape
    with server:
        shown = f"[{host}]" if ":" in host else host or ("[::]" if dual_stack else "0.0.0.0")
        scheme = "https" if tls is not None else "http"
        if ready is not None:
            ready(f"{scheme}://{shown}:{server.server_address[1]}/metrics")
        while not interrupted:
            server.handle_request()
        raise interrupted[0]
