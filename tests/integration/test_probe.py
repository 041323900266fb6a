"""kaext.probe: the path's idle timeout, measured through real NATs, and its command line.

The proof runs, as root, through a :class:`kaext.testing.Path` on loopback that forgets a
flow idle for T seconds (``forget_idle(T)``): its later packets are dropped, or with
``rst=True`` answered by an RST, as a NAT or load balancer does.  The expected timeout is
that T, set in the kernel's packet filter; the bound on width and run time are the issue's:
``max(1 s, 0.05 * T)`` and ``1.2 * T + 20 s``.

The scenarios run in parallel threads (one module fixture); each test asserts one.
The probe itself runs as a subprocess, exactly as a user runs
``python -m kaext.probe HOST PORT --json``, against the path's address.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import measured
import pytest

import kaext
from kaext import probe, testing

FIELDS = [
    "host",
    "port",
    "idle_timeout",
    "survived",
    "server_closed_after",
    "policy",
    "elapsed",
    "connections",
    "server_reset_after",
    "server_sent_after",
    "connection_limit",
    "outcome",
]
SLACK = 0.3  # s: the probe's look at each socket every 50 ms, and jiffies

# A server for the namespaces: accepts, echoes, and (argv[1] > 0) closes a connection
# that many seconds after accepting it.  Prints its port, then serves until killed.
SERVER = r"""
import socket, sys, threading, time
close_after = float(sys.argv[1])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(1024)
print(l.getsockname()[1], flush=True)
def serve(c):
    if close_after > 0:
        threading.Timer(close_after, lambda: c.shutdown(socket.SHUT_WR)).start()
    while True:
        try:
            data = c.recv(65536)
        except OSError:
            return
        if not data:
            return
        c.sendall(data)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _server(close_after: float = 0) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(close_after)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the test server did not start")
    return proc, int(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def _probe(address: tuple[str, int], *args: str) -> tuple[dict[str, Any], float]:
    """Run ``python -m kaext.probe HOST PORT --json``; its JSON and the wall time it took."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kaext.probe", address[0], str(address[1]), "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout), took


def _scenario(timeout: int | None, mode: str = "drop", close_after: float = 0, *args: str) -> dict[str, Any]:
    """The probe through a path that forgets idle flows after ``timeout`` s (None: never)."""
    server, port = _server(close_after)
    try:
        with testing.Path(("127.0.0.1", port)) as path:
            if timeout is not None:
                path.forget_idle(timeout, rst=mode == "reset")
            result, took = _probe(path.address, *args)
            out: dict[str, Any] = {"result": result, "took": took}
            if mode == "reset" and result["policy"]:
                out["kept"], out["control"] = _keep_alive(path, result["policy"], 3 * (timeout or 0))
            return out
    finally:
        _stop(server)


def _keep_alive(path: testing.Path, spec: str, idle: float) -> tuple[str, str]:
    """Two connections through the path, idle for ``idle`` s, then real traffic: with the policy, without."""
    socks = []
    try:
        for policy in (kaext.Policy.parse(spec), kaext.Policy(keepalive=False)):
            sock = socket.socket()
            socks.append(sock)
            policy.apply(sock)
            sock.settimeout(10)
            sock.connect(path.address)
        time.sleep(idle)
        outcomes = []
        for sock in socks:
            try:
                sock.sendall(b"ping")
                outcomes.append(sock.recv(4).decode())
            except OSError as exc:
                outcomes.append(f"error {exc.errno}")
        return outcomes[0], outcomes[1]
    finally:
        for sock in socks:
            sock.close()


SCENARIOS: dict[str, tuple[Any, ...]] = {
    "nat8": (8,),
    "nat20": (20,),
    "nonat": (None, "drop", 0, "--max", "10"),
    "server5": (None, "drop", 5),
    "reset8": (8, "reset"),
}


_MEASURED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, "kaext-probe through paths that forget idle flows (measured)", _MEASURED)


def _measured(name: str, result: dict[str, Any]) -> None:
    _MEASURED.append(
        f"{name}: survived {result['survived']} s, lost at {result['idle_timeout']} s, server closed after "
        f"{result['server_closed_after']} s, policy {result['policy']}, {result['elapsed']:.1f} s, "
        f"{result['connections']} connections"
    )


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[dict[str, Any]]]]:
    reason = testing.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"probe tests cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
        pytest.skip(f"probe tests: {reason}")
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        yield {name: pool.submit(_scenario, *args) for name, args in SCENARIOS.items()}


def _bracketed(result: dict[str, Any], timeout: int, took: float) -> None:
    low, high = result["survived"], result["idle_timeout"]
    assert list(result) == FIELDS
    assert low is not None and high is not None, result
    assert low - SLACK <= timeout <= high + SLACK, result
    assert high - low <= max(1.0, 0.05 * timeout) + SLACK, result
    assert result["elapsed"] <= 1.2 * timeout + 20, result
    assert took <= 1.2 * timeout + 20 + 5, (took, result)  # + the interpreter's start
    assert result["server_closed_after"] is None
    assert result["policy"] == str(kaext.Policy.for_idle_timeout(low))
    assert 0 < result["connections"] <= len(probe.idle_times())


@pytest.mark.root
@pytest.mark.parametrize("name,timeout", [("nat8", 8), ("nat20", 20), ("reset8", 8)])
def test_nat_timeout_is_bracketed(runs: dict[str, Future[dict[str, Any]]], name: str, timeout: int) -> None:
    run = runs[name].result()
    _measured(f"{name} (the path forgets after {timeout} s)", run["result"])
    _bracketed(run["result"], timeout, run["took"])


@pytest.mark.root
def test_no_nat_no_timeout_up_to_max(runs: dict[str, Future[dict[str, Any]]]) -> None:
    result = runs["nonat"].result()["result"]
    _measured("nonat (nothing forgotten, --max 10)", result)
    assert result["idle_timeout"] is None and result["policy"] is None and result["server_closed_after"] is None
    assert 10 - SLACK <= result["survived"] <= 10 + 1, result
    assert result["connections"] == len(probe.idle_times(10))


@pytest.mark.root
def test_server_idle_close_is_not_a_path_timeout(runs: dict[str, Future[dict[str, Any]]]) -> None:
    result = runs["server5"].result()["result"]
    _measured("server5 (the server closes idle connections after 5 s)", result)
    assert result["idle_timeout"] is None and result["policy"] is None, result
    assert result["server_closed_after"] is not None and abs(result["server_closed_after"] - 5) <= 0.5, result
    assert result["elapsed"] < 15, result  # it stops once the server's own close is seen


@pytest.mark.root
def test_policy_keeps_a_connection_through_a_resetting_nat(runs: dict[str, Future[dict[str, Any]]]) -> None:
    run = runs["reset8"].result()
    _MEASURED.append(
        f"reset8, the recommended policy over 24 s idle: {run['kept']}; without keepalive: {run['control']}"
    )
    assert run["kept"] == "ping", run  # 24 s idle through an 8 s NAT, then real traffic
    assert run["control"].startswith("error"), run  # without keepalive the NAT forgot it


# --------------------------------------------------------------------------------------
# API and command line, on loopback (no root)
# --------------------------------------------------------------------------------------


def test_server_idle_close_on_loopback() -> None:
    """A server that closes each connection 3 s after accepting it: its own close, no path timeout."""
    server, port = _server(3)
    try:
        result = probe.measure("127.0.0.1", port, max_idle=8).as_dict()
    finally:
        _stop(server)
    assert result["idle_timeout"] is None and result["policy"] is None, result
    assert result["server_closed_after"] is not None and abs(result["server_closed_after"] - 3) <= 0.5, result
    assert result["elapsed"] < 8, result  # it stops once the server's own close is seen


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaext.probe", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args,needle",
    [
        ([], "required"),
        (["127.0.0.1", "x"], "not a number"),
        (["127.0.0.1", "70000"], "port=70000 is out of range (1 .. 65535)"),
        (["127.0.0.1", "80", "--max", "0"], "max_idle=0.0 is out of range (1 .. 32767)"),
        (["127.0.0.1", "80", "--resolution", "2"], "resolution=2.0 is out of range (0.01 .. 1.0)"),
        (["127.0.0.1", "80", "--max", "32767", "--resolution", "0.01"], "connections, more than 500"),
    ],
)
def test_bad_arguments_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_server_one_line_exit_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        proc = _cli("127.0.0.1", str(port))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot connect to 127.0.0.1 port" in proc.stderr


def test_api_errors() -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        probe.measure("127.0.0.1", "80")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_idle must be a number"):
        probe.measure("127.0.0.1", 80, max_idle="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"resolution=0 is out of range"):
        probe.measure("127.0.0.1", 80, resolution=0)
    with pytest.raises(OSError) as info:
        probe.measure("name.invalid", 80)
    assert info.value.errno is not None


def test_idle_times_step_bound() -> None:
    times = probe.idle_times()
    assert times[0] == 1 and times[-1] <= 1200 and len(times) == 114
    for a, b in zip(times, times[1:], strict=False):
        assert b - a <= max(1, 0.05 * a)


@pytest.fixture
def loopback_server() -> Iterator[int]:
    proc, port = _server()
    try:
        yield port
    finally:
        _stop(proc)


def test_json_on_loopback(loopback_server: int) -> None:
    proc = _cli("127.0.0.1", str(loopback_server), "--max", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress when stderr is not a terminal
    result = json.loads(proc.stdout)
    assert list(result) == FIELDS
    assert result["idle_timeout"] is None and result["connections"] == 3
    assert 3 <= result["survived"] <= 4


def test_progress_and_verdict_on_a_terminal(loopback_server: int) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kaext.probe", "127.0.0.1", str(loopback_server), "--max", "2"],
            stderr=follower,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert b"\r" in shown and b"survived" in shown and b"bracket" in shown
    assert proc.stdout.count("\n") == 1 and "no idle timeout up to" in proc.stdout


def test_ctrl_c_closes_every_socket_exit_130() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaext.probe", "127.0.0.1", str(listener.getsockname()[1])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while len(accepted) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert err.count("\n") == 1 and "Traceback" not in err
        stop.set()
        thread.join()
        assert len(accepted) >= 5
        for conn in accepted:  # every connection the probe opened was closed: EOF on the server side
            conn.settimeout(5)
            assert conn.recv(1) == b""
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
