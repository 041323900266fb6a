"""connect_timeout with real sockets: a connect to a host that drops every SYN ends within the budget.

A listener on 127.0.0.1 behind a ``kaext.testing.Path`` that has vanished: every packet through
it is dropped, SYNs included, so a connect to ``path.address`` is never answered -- no RST, no
ICMP: the kernel's SYN retransmissions are all that can end it.  With ``Policy.from_timeout(T)`` set
before the SYN, through each path that does so -- ``Policy.apply`` on the unconnected socket,
``kaext.inject``, the preload library under ``kaext-run`` (a shell's ``/dev/tcp`` connect, not
Python), and ``kaext.enforce`` (the sock_ops program's BPF_SOCK_OPS_TCP_CONNECT_CB, as root) --
the connect fails with ETIMEDOUT after about T: Linux ends it when the user timeout
(``TCP_USER_TIMEOUT`` before the SYN, to the millisecond: net/ipv4/tcp_timer.c,
tcp_clamp_rto_to_user_timeout) or the SYN count (``TCP_SYNCNT`` 1: 1 + 2 s) runs out, both T
here.  ``Policy(connect_timeout=T)`` alone (TCP_SYNCNT only) and ``Policy(user_timeout=T)``
alone (TCP_USER_TIMEOUT only, the system's SYN count) each do the same.  Without kaext the
same connect is still in SYN-SENT after 3 T (the system's 6 SYN retransmissions: 127 s and more).

All paths run at once, each on its own socket, so the module takes about 3 T.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("nftables is Linux-only", allow_module_level=True)

import kaext
from kaext import enforce, run, testing

T = 3  # the budget, s: TCP_SYNCNT 1 gives up after 1 + 2 = 3 s, the user timeout after 3 s
EARLY = 0.5  # s before T a path may end (the timers are T; anything much earlier is another error)
LATE = 1.5  # s after T allowed for a loaded machine (subprocess starts are timed inside them)
TCP_SYN_SENT = 2  # include/net/tcp_states.h


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    """The address of a path to a listener on 127.0.0.1, vanished: no SYN to it is answered."""
    reason = testing.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"connect-timeout tests cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"connect-timeout tests: {reason}")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener, testing.Path(listener.getsockname()) as path:
        socket.create_connection(path.address, timeout=10).close()  # through the path: it is the path that drops
        path.vanish()
        yield path.address


def _blocking_connect(sock: socket.socket, address: tuple[str, int]) -> tuple[float, int | None]:
    """(seconds, errno) of a blocking connect that fails (errno None: it connected)."""
    start = time.monotonic()
    try:
        sock.connect(address)
    except OSError as exc:
        return time.monotonic() - start, exc.errno
    return time.monotonic() - start, None


def _client(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[arg-type]
    )


# bash's /dev/tcp connects through the C library's connect(): the preload library's and the cgroup's
# programs see it, not Python.  EPOCHREALTIME (bash 5) times the connect alone, inside the process.
_SHELL_CONNECT = 's=$EPOCHREALTIME; (exec 3<>"/dev/tcp/$0/$1") 2>/dev/null; rc=$?; e=$EPOCHREALTIME; echo "$s $e $rc"'


def _shell_seconds(proc: subprocess.CompletedProcess[str]) -> tuple[float, int]:
    assert proc.returncode == 0, proc.stderr
    start, end, rc = proc.stdout.split()
    return float(end) - float(start), int(rc)


# Python in a process of its own: kaext.inject, a socket, a connect.
_INJECTED_CONNECT = """
import socket, sys, time, kaext
kaext.inject(kaext.Policy.from_timeout(float(sys.argv[3])))
s = socket.socket()
start = time.monotonic()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(time.monotonic() - start, 0)
except OSError as exc:
    print(time.monotonic() - start, exc.errno)
"""


@pytest.fixture
def sockets() -> Iterator[Callable[[], socket.socket]]:
    """Fresh TCP sockets, closed (with an RST, no lingering) after the test."""
    made: list[socket.socket] = []

    def make() -> socket.socket:
        made.append(socket.socket())
        return made[-1]

    yield make
    for sock in made:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _check(outcome: tuple[float, int | None], what: str) -> None:
    seconds, err = outcome
    print(f"{what}: connect failed with errno {err} after {seconds:.3f} s (budget {T} s)")
    assert err == errno.ETIMEDOUT, (what, outcome)
    assert T - EARLY <= seconds <= T + LATE, (what, outcome)


def test_a_connect_to_a_host_that_drops_syns_ends_within_the_budget_on_every_path(
    address: tuple[str, int], sockets: Callable[[], socket.socket]
) -> None:
    policy = kaext.Policy.from_timeout(T)
    assert policy.connect_timeout == T and policy.user_timeout == T  # Linux: TCP_SYNCNT 1, TCP_USER_TIMEOUT 3000

    def applied() -> tuple[float, int | None]:
        sock = sockets()
        policy.apply(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT) == 1
        return _blocking_connect(sock, address)

    def connect_timeout_alone() -> tuple[float, int | None]:
        sock = sockets()
        kaext.Policy(connect_timeout=T).apply(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0  # TCP_SYNCNT alone
        return _blocking_connect(sock, address)

    def user_timeout_alone() -> tuple[float, int | None]:
        sock = sockets()
        kaext.Policy(user_timeout=T).apply(sock)  # TCP_USER_TIMEOUT alone
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT) >= 3  # the system's SYN count: 15 s or more
        return _blocking_connect(sock, address)

    def injected() -> tuple[float, int | None]:
        proc = _client([sys.executable, "-c", _INJECTED_CONNECT, address[0], str(address[1]), str(T)])
        assert proc.returncode == 0, proc.stderr
        seconds, err = proc.stdout.split()
        return float(seconds), int(err)

    jobs: dict[str, Callable[[], tuple[float, int | None]]] = {
        "apply": applied,
        "connect_timeout alone": connect_timeout_alone,
        "user timeout alone": user_timeout_alone,
        "inject": injected,
    }
    if run.PRELOAD_LIBRARY is not None:

        def preloaded() -> tuple[float, int | None]:
            argv = [sys.executable, "-m", "kaext.run", "--policy", str(policy), "--", "bash", "-c", _SHELL_CONNECT]
            seconds, rc = _shell_seconds(_client([*argv, address[0], str(address[1])]))
            assert rc != 0
            return seconds, errno.ETIMEDOUT  # bash says only that it failed; the time says how

        jobs["preload (kaext-run, bash /dev/tcp)"] = preloaded

    def baseline() -> tuple[int, int]:
        """A non-blocking connect without kaext: (its state, SO_ERROR) after 3 T."""
        sock = sockets()
        sock.setblocking(False)
        assert sock.connect_ex(address) == errno.EINPROGRESS
        _, writable, _ = select.select([], [sock], [], 3 * T)
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        return (state if not writable else -1), sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        still = pool.submit(baseline)
        outcomes = {what: pool.submit(job) for what, job in jobs.items()}
        results = {what: future.result() for what, future in outcomes.items()}
        blocked = still.result()
    for what, outcome in results.items():
        _check(outcome, what)
    print(f"without kaext: after {3 * T} s the connect is in state {blocked[0]} (SYN-SENT = {TCP_SYN_SENT})")
    assert blocked == (TCP_SYN_SENT, 0), blocked
    if run.PRELOAD_LIBRARY is None:
        pytest.skip("the preload library is not built here (pure-Python install): that path was not run")


def test_enforce_bounds_the_connect_of_a_program_in_the_cgroup(address: tuple[str, int]) -> None:
    """As root: kaext.enforce on a fresh cgroup; a shell in it connects through the path."""
    if os.geteuid() != 0 or kaext.IMPLEMENTATION != "c":
        pytest.skip("kaext.enforce needs root and the C extension")
    try:
        parent = enforce.own_cgroup()
    except OSError as exc:
        pytest.skip(f"no cgroup v2 here: {exc}")
    path = os.path.join(parent, f"kaext-connect-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(path)
    try:
        try:
            enforce.attach(path, kaext.Policy.from_timeout(T))
        except OSError as exc:
            if os.environ.get("KAEXT_REQUIRE_BPF") == "1":
                raise
            pytest.skip(f"kaext.enforce cannot attach here: {exc}")

        def enter() -> None:
            Path(path, "cgroup.procs").write_text("0")

        outcomes: list[tuple[float, int]] = []

        def connect() -> None:
            proc = _client(["bash", "-c", _SHELL_CONNECT, address[0], str(address[1])], preexec_fn=enter)
            outcomes.append(_shell_seconds(proc))

        thread = threading.Thread(target=connect)
        thread.start()
        thread.join(60)
        assert outcomes, "the shell did not finish"
        seconds, rc = outcomes[0]
        assert rc != 0
        _check((seconds, errno.ETIMEDOUT), "enforce (sock_ops at TCP_CONNECT_CB, bash /dev/tcp)")
        (found,) = [e for e in enforce.enforcements() if e.cgroup == path]
        assert found.policy.connect_timeout == T, found
    finally:
        enforce.detach(path)
        enforce._remove_cgroup(path)
