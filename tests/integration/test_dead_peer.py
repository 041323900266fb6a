"""Proof on the wire: kaext's settings make the kernel find a dead peer in the configured time.

Each test runs in a network namespace of its own (netns.own_namespace): a client and a
server on loopback, every connection a real TCP connection between them through a
:class:`kaext.testing.Path`, configured only through kaext's public API, with the
implementation under test.  The peer then stays alive, crashes (``path.vanish()``: every
packet dropped both ways, no FIN, no RST), or reboots (``path.reset()``: whatever arrives is
answered with an RST, as by a host with no memory of the connection), and the test measures
when and how a blocked ``recv`` on the other side ends.  The namespace is the test's alone,
so its TCP counters count only the test's own probes.

Timing model (Linux, net/ipv4/tcp_timer.c ``tcp_keepalive_timer``): the first
probe goes out ``idle`` after the last segment *received*; an answered probe
counts as received, so a live peer is probed every ``idle``.  Unanswered probes
follow every ``interval``; without TCP_USER_TIMEOUT the connection is dropped at
the timer tick after ``count`` unanswered probes, i.e. at ``idle + interval *
count``; with TCP_USER_TIMEOUT the count is ignored and it is dropped at the
first tick (``idle + k * interval``, k >= 1) at which ``user_timeout`` has passed.
The time of the last received segment is not visible from user space, but it
lies between the moment the test sent its last "ping" and the moment the "pong"
came back, so:

* lower bound, measured from before the ping: the kernel cannot give up earlier
  than the model says, except by a few jiffies (its timers count whole ticks,
  <= 10 ms each at HZ >= 100) -- ``EARLY``;
* upper bound, measured from after the pong: kernel timers fire late, never
  early, by up to one timer-wheel granule per re-arm (tens of ms) and the test
  process must be scheduled to see the error -- ``SLACK`` covers both on a
  loaded 2-core machine.

Run with ``-s`` to see each detection time as it is measured; a summary is
printed after the module either way.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator

import measured
import netns
import pytest

import kaext
from kaext import testing

pytestmark = [pytest.mark.root]

IDLE = 2  # s before the first probe
INTERVAL = 1  # s between unanswered probes
COUNT = 3  # unanswered probes before the connection is dropped
BUDGET = IDLE + INTERVAL * COUNT  # 5 s: a crashed peer is found within this
USER_TIMEOUT = 3  # s unacknowledged data may wait
FROM_TIMEOUT = 8  # s, the budget given to Policy.from_timeout
EARLY = 0.05  # s the kernel's jiffy-based timers may run ahead of CLOCK_MONOTONIC
SLACK = 1.5  # s late timers + scheduling on a loaded machine
WATCHDOG = 15  # s beyond the expected time before a hung recv is cut short

TCP_ESTABLISHED = 1  # include/net/tcp_states.h

_MEASURED: list[str] = []


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


class Lab:
    """A server and its clients on loopback, joined through one :class:`kaext.testing.Path`."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._path: testing.Path | None = None

    @property
    def path(self) -> testing.Path:
        assert self._path is not None, "no listener yet"
        return self._path

    def listener(self) -> socket.socket:
        """The listening socket of the server (one per lab) and the path to it."""
        assert self._path is None, "one listener per lab"
        sock = socket.create_server(("127.0.0.1", 0), backlog=8)
        self._sockets.append(sock)
        self._path = testing.Path(sock.getsockname())
        return sock

    def connect(self, listener: socket.socket) -> tuple[socket.socket, socket.socket]:
        """Connect a new client through the path; return (client side, server side)."""
        client = socket.socket()
        self._sockets.append(client)
        client.settimeout(10)
        client.connect(self.path.address)
        client.settimeout(None)
        listener.settimeout(10)
        server, _ = listener.accept()
        server.settimeout(None)
        self._sockets.append(server)
        return client, server

    def crash(self) -> None:
        """The peer crashes, or its link goes down: nothing crosses the path any more, either way."""
        self.path.vanish()

    def reboot(self) -> None:
        """The peer comes back with no memory of any connection: what reaches it is answered by an RST."""
        self.path.reset()

    def keepalive_probes(self) -> int:
        """Keepalive probes sent in the test's namespace so far (TcpExt ``TCPKeepAlive``)."""
        with open("/proc/thread-self/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
        names, values = lines[0], lines[1]
        return int(values[names.index("TCPKeepAlive")])

    def close(self) -> None:
        linger_off = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
        for sock in self._sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_off)
            except OSError:
                pass
            sock.close()
        if self._path is not None:
            self._path.close()


@pytest.fixture(scope="session")
def _netns_unavailable() -> str | None:
    return netns.namespace_unavailable() or testing.unavailable_reason()


@pytest.fixture
def lab(_netns_unavailable: str | None) -> Iterator[Lab]:
    """A lab in a network namespace of the test's own; removed after the test, whatever happened."""
    reason = _netns_unavailable
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"dead-peer tests cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"dead-peer tests: {reason}")
    with netns.own_namespace():
        built = Lab()
        try:
            yield built
        finally:
            built.close()


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, "dead-peer detection times (measured)", _MEASURED)


@pytest.fixture
def report(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Callable[[str, float, float, float], None]:
    """Record one measured time with its bounds: printed, in the junit XML, and in the summary."""

    def record(what: str, seconds: float, low: float, high: float) -> None:
        line = f"{request.node.name}: {what} after {seconds:.3f} s (asserted {low:.2f} .. {high:.2f} s)"
        print(line)
        record_property(what.replace(" ", "_"), round(seconds, 3))
        _MEASURED.append(line)

    return record


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    return data


def exchange(measured: socket.socket, peer: socket.socket) -> tuple[float, float]:
    """A ping from ``measured`` and a pong back; returns (time before the ping, time after the pong).

    The last segment ``measured`` receives before the connection goes idle arrives
    between the two.
    """
    for s in (measured, peer):
        s.settimeout(10)
    try:
        before = time.monotonic()
        measured.sendall(b"ping")
        assert recv_exactly(peer, 4) == b"ping"
        peer.sendall(b"pong")
        assert recv_exactly(measured, 4) == b"pong"
        after = time.monotonic()
    finally:
        for s in (measured, peer):
            s.settimeout(None)
    return before, after


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def blocked_recv(sock: socket.socket, limit: float) -> tuple[bytes | OSError, float]:
    """A blocking ``recv`` on ``sock``: what it returned or raised, and when (monotonic).

    A watchdog shuts the socket down after ``limit`` seconds, so a peer that is never
    detected makes ``recv`` return ``b""`` instead of hanging the test run.
    """
    assert sock.gettimeout() is None, "the socket must be blocking"
    watchdog = threading.Timer(limit, _cut, (sock,))
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            outcome: bytes | OSError = sock.recv(64)
        except OSError as exc:
            outcome = exc
        return outcome, time.monotonic()
    finally:
        watchdog.cancel()


def kernel_gives_up_after(idle: float, interval: float, count: int, user_timeout: float | None) -> float:
    """Seconds after the last received segment at which Linux drops an idle connection whose probes go unanswered.

    ``tcp_keepalive_timer``: probes at ``idle``, ``idle + interval``, ...; with
    TCP_USER_TIMEOUT set the probe count is ignored and the connection is dropped at
    the first tick ``idle + k * interval`` (k >= 1) at which ``user_timeout`` has
    passed; otherwise at the tick after ``count`` probes.
    """
    if user_timeout:
        ticks = max(1, math.ceil((user_timeout - idle) / interval))
        return idle + ticks * interval
    return idle + interval * count


def tcp_state(sock: socket.socket) -> tuple[int, int]:
    """(state, retransmits) from TCP_INFO: the connection's TCP state and its unanswered RTO count."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    state, _ca_state, retransmits = struct.unpack_from("BBB", info)
    return state, retransmits


def assert_alive(sock: socket.socket) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    with pytest.raises(BlockingIOError, match="Resource temporarily unavailable"):
        sock.recv(1, socket.MSG_DONTWAIT)  # nothing to read, and no error pending


def assert_timed_out(outcome: bytes | OSError) -> None:
    assert isinstance(outcome, OSError), f"recv returned {outcome!r} instead of failing"
    assert outcome.errno == errno.ETIMEDOUT, f"expected ETIMEDOUT, got {outcome!r}"


# --------------------------------------------------------------------------------------
# The four states of a keepalive probe's peer
# --------------------------------------------------------------------------------------


def test_alive_peer_answers_probes_and_the_idle_connection_stays_usable(lab: Lab) -> None:
    client, server = lab.connect(lab.listener())
    kaext.set_keepalive(client, idle=IDLE, interval=INTERVAL, count=COUNT)
    probes_before = lab.keepalive_probes()
    _, last = exchange(client, server)

    time.sleep(IDLE + INTERVAL * COUNT * 2)  # idle: only probes and their answers cross the link

    probes = lab.keepalive_probes() - probes_before
    idle_for = time.monotonic() - last
    print(f"idle for {idle_for:.2f} s, {probes} keepalive probes sent, connection open")
    # At least COUNT probes: had they gone unanswered the kernel would have dropped
    # the connection after the COUNT-th; an answered probe restarts the idle timer.
    assert probes >= COUNT
    assert tcp_state(client)[0] == TCP_ESTABLISHED
    assert_alive(client)
    assert_alive(server)
    exchange(client, server)
    exchange(server, client)


def test_crashed_peer_is_detected_with_etimedout_within_idle_plus_interval_times_count(
    lab: Lab, report: Callable[..., None]
) -> None:
    client, server = lab.connect(lab.listener())
    kaext.set_keepalive(client, idle=IDLE, interval=INTERVAL, count=COUNT)
    probes_before = lab.keepalive_probes()
    first, last = exchange(client, server)
    lab.crash()
    assert time.monotonic() - first < IDLE, "the link went down after the first probe was due"

    outcome, end = blocked_recv(client, BUDGET + WATCHDOG)

    assert_timed_out(outcome)
    expected = kernel_gives_up_after(IDLE, INTERVAL, COUNT, None)
    report("ETIMEDOUT", end - last, expected - EARLY, BUDGET + SLACK)
    assert end - first >= expected - EARLY
    assert end - last <= BUDGET + SLACK
    assert lab.keepalive_probes() - probes_before == COUNT


def test_rebooted_peer_answers_the_probe_with_rst_econnreset(lab: Lab, report: Callable[..., None]) -> None:
    client, server = lab.connect(lab.listener())
    kaext.set_keepalive(client, idle=IDLE, interval=INTERVAL, count=COUNT)
    probes_before = lab.keepalive_probes()
    first, last = exchange(client, server)
    lab.reboot()  # no memory of the connection
    assert time.monotonic() - first < IDLE, "the peer came back after the first probe was due"

    outcome, end = blocked_recv(client, BUDGET + WATCHDOG)

    assert isinstance(outcome, ConnectionResetError), f"expected ECONNRESET, got {outcome!r}"
    assert outcome.errno == errno.ECONNRESET
    # The first probe, sent at IDLE, is the one answered by the RST.
    report("ECONNRESET", end - last, IDLE - EARLY, IDLE + SLACK)
    assert end - first >= IDLE - EARLY
    assert end - last <= IDLE + SLACK
    assert lab.keepalive_probes() - probes_before == 1


def test_user_timeout_ends_unacknowledged_data_where_keepalive_alone_does_not(
    lab: Lab, report: Callable[..., None]
) -> None:
    listener = lab.listener()
    with_timeout, with_timeout_peer = lab.connect(listener)
    keepalive_only, keepalive_only_peer = lab.connect(listener)
    for sock in (with_timeout, keepalive_only):
        kaext.set_keepalive(sock, idle=IDLE, interval=INTERVAL, count=COUNT)
    kaext.set_user_timeout(with_timeout, USER_TIMEOUT)
    assert kaext.get_user_timeout(with_timeout) == USER_TIMEOUT
    assert kaext.get_user_timeout(keepalive_only) == 0.0  # the system default: no user timeout
    exchange(with_timeout, with_timeout_peer)
    exchange(keepalive_only, keepalive_only_peer)
    lab.crash()

    before_send = time.monotonic()
    with_timeout.sendall(b"x" * 100)
    keepalive_only.sendall(b"x" * 100)
    sent = time.monotonic()
    outcome, end = blocked_recv(with_timeout, USER_TIMEOUT + WATCHDOG)

    # TCP_USER_TIMEOUT counts from the first transmission of the oldest unacknowledged
    # data; the retransmission timer is clamped so that it fires at that moment.
    assert_timed_out(outcome)
    report("ETIMEDOUT with unacked data", end - sent, USER_TIMEOUT - EARLY, USER_TIMEOUT + SLACK)
    assert end - before_send >= USER_TIMEOUT - EARLY
    assert end - sent <= USER_TIMEOUT + SLACK

    # Keepalive alone: with data in flight the kernel sends no probes, it retransmits
    # (Linux default: 15 retries, about 15 minutes).  Past both the user timeout and
    # the keepalive budget, that connection has still not failed.
    check_at = sent + max(USER_TIMEOUT, BUDGET) + SLACK
    time.sleep(max(0.0, check_at - time.monotonic()))
    state, retransmits = tcp_state(keepalive_only)
    waited = time.monotonic() - before_send
    print(f"keepalive only: still established after {waited:.2f} s, {retransmits} retransmissions")
    assert state == TCP_ESTABLISHED
    assert retransmits >= 1
    assert_alive(keepalive_only)


# --------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------


def test_policy_from_timeout_detects_a_crashed_peer_within_the_budget(lab: Lab, report: Callable[..., None]) -> None:
    policy = kaext.Policy.from_timeout(FROM_TIMEOUT)
    client, server = lab.connect(lab.listener())
    policy.apply(client)
    first, last = exchange(client, server)
    lab.crash()
    assert time.monotonic() - first < (policy.idle or 0), "the link went down after the first probe was due"

    outcome, end = blocked_recv(client, FROM_TIMEOUT + WATCHDOG)

    assert_timed_out(outcome)
    assert policy.idle and policy.interval and policy.count
    expected = kernel_gives_up_after(policy.idle, policy.interval, policy.count, policy.user_timeout)
    report(f"ETIMEDOUT ({policy})", end - last, expected - EARLY, FROM_TIMEOUT + SLACK)
    assert end - first >= expected - EARLY
    assert end - last <= FROM_TIMEOUT + SLACK


def test_listening_socket_policy_is_inherited_and_the_accepted_side_detects_a_dead_client(
    lab: Lab, report: Callable[..., None]
) -> None:
    listener = lab.listener()
    kaext.Policy(idle=IDLE, interval=INTERVAL, count=COUNT).apply(listener)
    client, accepted = lab.connect(listener)

    assert kaext.get_keepalive(accepted) == kaext.KeepaliveState(
        enabled=True, idle=float(IDLE), interval=float(INTERVAL), count=COUNT
    )
    assert not kaext.get_keepalive(client).enabled  # only the listener was configured
    probes_before = lab.keepalive_probes()
    first, last = exchange(accepted, client)
    lab.crash()
    assert time.monotonic() - first < IDLE, "the link went down after the first probe was due"

    outcome, end = blocked_recv(accepted, BUDGET + WATCHDOG)

    assert_timed_out(outcome)
    expected = kernel_gives_up_after(IDLE, INTERVAL, COUNT, None)
    report("ETIMEDOUT on the accepted socket", end - last, expected - EARLY, BUDGET + SLACK)
    assert end - first >= expected - EARLY
    assert end - last <= BUDGET + SLACK
    assert lab.keepalive_probes() - probes_before == COUNT
