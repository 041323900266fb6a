"""Reading a descriptor kaext was handed never changes it (issue 17, items 1 and 2).

* ``socket.setdefaulttimeout()`` in the reading process must not reach the descriptor:
  a ``socket.socket(fileno=fd)`` over it would set O_NONBLOCK on the open file
  description the owner shares, and the owner's next blocking ``recv()`` would raise
  BlockingIOError.  Expected: the kernel's own flags (``fcntl(F_GETFL)``) unchanged, and
  a thread doing blocking ping-pong on that socket meanwhile never sees BlockingIOError.
* An exception raised by a signal handler while an int descriptor is read must not
  close it: the descriptor is still open (``os.fstat``) after every interrupted call.

Both backends (``backend`` fixture); the storm and the ping-pong are bounded in count
and in time.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType

import pytest

from kaext import _connections, _platform

pytestmark = [
    pytest.mark.skipif(not _platform.RAW_SOCKOPT, reason="POSIX descriptors (Windows: SOCKET handles)"),
    pytest.mark.thread_unsafe,
]


@pytest.fixture
def default_timeout() -> Iterator[None]:
    """``socket.setdefaulttimeout(0.5)`` in this process while the test runs."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.5)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _readers(backend: ModuleType, fd: int) -> dict[str, Callable[[], object]]:
    calls: dict[str, Callable[[], object]] = {"read": lambda: backend.read(fd)}
    if _platform.CONNECTIONS == "proc":
        calls["connections"] = lambda: _connections._list_connections(None, backend)
        calls["proc_read"] = lambda: backend.proc_read(-1, [fd])
    return calls


def test_a_default_timeout_does_not_reach_a_borrowed_descriptor(
    backend: ModuleType, tcp_pair: tuple[socket.socket, socket.socket], default_timeout: None
) -> None:
    """The owner's blocking ping-pong while another thread reads its socket: 0 BlockingIOError."""
    client, server = tcp_pair
    client.settimeout(None)
    server.settimeout(None)
    fd = server.fileno()
    before = _flags(fd)
    assert not before & os.O_NONBLOCK
    errors: list[BaseException] = []
    rounds = 0
    stop = threading.Event()

    def ping_pong() -> None:
        nonlocal rounds
        try:
            while not stop.is_set():
                client.sendall(b"p")
                server.recv(1)  # blocking: a non-blocking description makes it raise
                server.sendall(b"q")
                client.recv(1)
                rounds += 1
        except BaseException as exc:  # counted and reported below
            errors.append(exc)

    worker = threading.Thread(target=ping_pong)
    worker.start()
    reads = 0
    changed = 0
    deadline = time.monotonic() + 3.0
    try:
        readers = _readers(backend, fd)
        listing = readers.pop("connections", None)  # a sock_diag dump of every TCP socket: 1 in 25 reads
        calls = list(readers.values())
        while time.monotonic() < deadline and reads < 3000 and not errors:
            if listing is not None and reads % 25 == 0:
                listing()
            else:
                calls[reads % len(calls)]()
            reads += 1
            if _flags(fd) != before:
                changed += 1
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert reads >= 100 and rounds >= 100, f"{reads} reads, {rounds} ping-pongs"
    assert (errors, changed) == ([], 0), f"{reads} reads: {errors!r}, {changed} times F_GETFL changed"
    assert _flags(fd) == before


@pytest.mark.parametrize("what", ["read", "connections", "descriptor-scan"])
def test_a_default_timeout_leaves_the_descriptor_blocking(
    backend: ModuleType,
    tcp_pair: tuple[socket.socket, socket.socket],
    default_timeout: None,
    what: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One read, the flags compared with the kernel's before and after (blocking and non-blocking).
    ``descriptor-scan``: connections() as the other POSIX systems list this process's sockets."""
    client, _ = tcp_pair
    calls = _readers(backend, client.fileno())
    if what == "descriptor-scan":
        monkeypatch.setattr(_platform, "CONNECTIONS", "fds")
        calls[what] = lambda: _connections._list_connections(None, backend)
    if what not in calls:
        pytest.skip("connections() of this process lists by descriptor scan here")
    for blocking in (True, False):
        client.setblocking(blocking)
        before = _flags(client.fileno())
        calls[what]()
        assert _flags(client.fileno()) == before


class _Storm:
    def __init__(self) -> None:
        self.armed = False
        self.raised = 0

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            self.raised += 1
            raise TimeoutError("read interrupted")


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer")
@pytest.mark.parametrize("what", ["read", "apply"])
def test_a_signal_handlers_exception_never_closes_the_descriptor(
    backend: ModuleType, tcp_pair: tuple[socket.socket, socket.socket], what: str
) -> None:
    """SIGALRM at random points of ``read(int fd)`` / ``apply(int fd)``: the fd stays open every time."""
    client, _ = tcp_pair
    dup = os.dup(client.fileno())
    plan = backend.Plan(0b1111, 50, 10, 5, 100_000, 1)
    call = {"read": lambda: backend.read(dup), "apply": lambda: backend.apply(dup, plan)}[what]
    storm = _Storm()
    old = signal.signal(signal.SIGALRM, storm.handler)
    rng = random.Random(17)
    closed = caught = rounds = 0
    gc.collect()
    gc.disable()  # a handler inside an unrelated finalizer has its exception swallowed by CPython
    deadline = time.monotonic() + 3.0
    try:
        while rounds < 3000 and time.monotonic() < deadline:
            rounds += 1
            try:
                try:
                    storm.armed = True
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 40e-6))
                    call()
                    time.sleep(0)
                    storm.armed = False
                except TimeoutError:
                    caught += 1
            finally:
                storm.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            try:
                os.fstat(dup)
            except OSError:
                closed += 1
                dup = os.dup(client.fileno())
    finally:
        gc.enable()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(dup)
    assert storm.raised >= 50, f"the storm hit only {storm.raised} times in {rounds} rounds"
    assert (closed, caught) == (0, storm.raised), (
        f"{rounds} rounds, {storm.raised} raised: {caught} reached the caller, {closed} closed the descriptor"
    )


def test_a_plain_descriptor_error_names_the_errno(backend: ModuleType) -> None:
    """A pipe and a closed number through the raw path: OSError ENOTSOCK / EBADF, as the C shim says."""
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            backend.read(r)
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError) as info:
        backend.read(r)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_raw_addresses_are_the_socket_modules(family: str) -> None:
    """The C library's getsockname/getpeername on the number, parsed: what Python's socket module says."""
    from sockets import HAVE_IPV6

    from kaext import _pure_fd

    if family == "ipv6" and not HAVE_IPV6:
        pytest.skip("no IPv6 loopback")
    host = "127.0.0.1" if family == "ipv4" else "::1"
    with socket.create_server((host, 0), family=socket.AF_INET if family == "ipv4" else socket.AF_INET6) as lsn:
        with socket.create_connection(lsn.getsockname()[:2]) as client:
            raw = _pure_fd._RawFd(client.fileno())
            assert raw.family == client.family
            assert raw.getsockname() == client.getsockname()[:2]
            assert raw.getpeername() == client.getpeername()[:2]
        with pytest.raises(OSError) as info:
            _pure_fd._RawFd(lsn.fileno()).getpeername()
        assert info.value.errno == errno.ENOTCONN


@pytest.mark.parametrize("has_len", [False, True], ids=["linux-sunos", "bsd"])
def test_sockaddr_layouts(monkeypatch: pytest.MonkeyPatch, has_len: bool) -> None:
    """``struct sockaddr_in`` / ``sockaddr_in6`` as each OS's <netinet/in.h> lays them out: 4.4BSD's
    ``uint8_t sin_len; sa_family_t sin_family`` (one byte each), elsewhere a 16-bit family in host
    order; then the port (big-endian), sin_addr at 4, sin6_flowinfo at 4 and sin6_addr at 8."""
    from kaext import _pure_fd

    monkeypatch.setattr(_platform, "SOCKADDR_HAS_LEN", has_len)

    def head(family: int, size: int) -> bytes:
        return bytes([size, family]) if has_len else family.to_bytes(2, sys.byteorder)

    v4 = head(socket.AF_INET, 16) + (8080).to_bytes(2, "big") + bytes([192, 0, 2, 7]) + bytes(8)
    assert _pure_fd._address(v4) == ("192.0.2.7", 8080)
    v6 = (
        head(socket.AF_INET6, 28)
        + (443).to_bytes(2, "big")
        + bytes(4)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::5")
        + bytes(4)
    )
    assert _pure_fd._address(v6) == ("2001:db8::5", 443)
    with pytest.raises(OSError) as info:
        _pure_fd._address(head(socket.AF_UNIX, 16) + bytes(14))
    assert info.value.errno == errno.EAFNOSUPPORT
