"""kaext.testing, the dead-peer kit users run on their own stack: the proof that it does what it says.

* For a plain socket, redis-py (against Debian's ``redis-server``) and requests (against an HTTP
  server that holds its response), each blocked in a call through a :class:`kaext.testing.Path`
  that then vanishes, resets or forgets the idle flow: without a policy the call is still blocked
  after 3 x T; with ``Policy.from_timeout(T)`` it ends within T + 2 s, with the kernel's errno
  (ETIMEDOUT for a vanished or forgotten flow, ECONNRESET for a reset).  All 18 scenarios run at
  once in one child process (tests/support/kit_scenarios.py), as root and as uid 65534 under
  ``kaext testing --`` (a user and network namespace), both children at the same time.
* 32 threads through one path lose nothing before ``vanish()``; afterwards nothing gets through.
* Nothing is left behind (nftables tables, namespaces, processes) after a test that fails or a
  run interrupted with SIGINT, or killed (its tables are removed by the next path).
* Where the kernel has no nftables for IP traffic (Linux 6.1 under user-mode-linux: no
  CONFIG_NF_TABLES_INET) a path is made of iptables-legacy chains, and every method but
  forget_idle works the same; forget_idle says EOPNOTSUPP.  Which one a kernel gets is asked of
  the kernel itself (``nft`` with a NAT chain of the inet family); KAEXT_TESTING_FIREWALL=iptables
  makes iptables paths on any kernel (checked on both).
* ``ends_within``, the pytest plugin (skip, strict), the ``kaext testing`` command.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path as FilePath
from typing import Any

import kit_scenarios
import measured
import plain_user
import pytest

import kaext
from kaext import testing

pytestmark = [
    # the kit is pure Python, whichever backend sets the policies: the suite's pure-Python rerun
    # (.ci/steps/07-pure-suite.sh, 300 s for everything) adds nothing; the dead-peer proof runs both
    pytest.mark.one_implementation,
    pytest.mark.skipif(os.environ.get("KAEXT_NO_EXTENSIONS") == "1", reason="the main run covers kaext.testing"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kaext.testing is Linux-only"),
]

T = 2  # s: Policy.from_timeout(T) in the scenarios
USER = plain_user.USER
SCENARIOS = str(FilePath(kit_scenarios.__file__).resolve())
EXPECTED_ERRNO = {"vanish": "ETIMEDOUT", "reset": "ECONNRESET", "forget_idle": "ETIMEDOUT"}

_MEASURED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> None:
    measured.report(request.config, "kaext.testing: a blocked call after the path fails (measured)", _MEASURED)


@pytest.fixture(scope="module")
def kit() -> None:
    """The kit works in this process (root): else skip, or fail in CI."""
    reason = testing.unavailable_reason()
    if reason is not None:
        plain_user.missing(reason)


def _kernel_firewall() -> str:
    """What the kernel can hold a path in, asked of it with ``nft`` (not kaext): a NAT chain of
    the inet family needs CONFIG_NF_TABLES_INET and CONFIG_NFT_NAT; without them, iptables."""
    chosen = os.environ.get(testing.FIREWALL_VARIABLE)
    if chosen:
        return chosen
    table = f"kaext_fwprobe_{os.getpid()}"
    chain = "chain o { type nat hook output priority -100; }"
    script = f"table inet {table} {{\n  {chain}\n}}\ndelete table inet {table}\n"
    nft = shutil.which("nft") or "/usr/sbin/nft"
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    assert "syntax error" not in proc.stderr, proc.stderr  # the question, not the kernel's answer, was wrong
    return "nftables" if proc.returncode == 0 else "iptables"


FIREWALL = _kernel_firewall() if sys.platform.startswith("linux") and os.geteuid() == 0 else "nftables"


@pytest.fixture(scope="module")
def user_can_run_python() -> None:
    plain_user.python(namespace=True)


# --------------------------------------------------------------------------------------
# The scenarios: 3 clients x 3 failures x (no policy, from_timeout(T)), as root and as uid 65534
# --------------------------------------------------------------------------------------


def _scenarios(python: list[str]) -> dict[tuple[str, str, bool], dict[str, Any]]:
    proc = subprocess.run(
        [*python, SCENARIOS, str(T)],
        capture_output=True,
        text=True,
        cwd="/",
        env=plain_user.clean_env() if python == [sys.executable] else plain_user.env(),
        timeout=3 * T + 180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {(r["client"], r["failure"], r["policy"] is not None): r for r in rows}


@pytest.fixture(scope="module")
def runs(kit: None) -> Iterator[dict[str, Future[dict[tuple[str, str, bool], Any]] | BaseException]]:
    """Both runs of every scenario, at the same time: as root, and as uid 65534 under ``kaext testing --``
    (or why that one cannot run: raised by each of its tests)."""
    with ThreadPoolExecutor(2) as pool:
        out: dict[str, Future[dict[tuple[str, str, bool], Any]] | BaseException] = {
            "root": pool.submit(_scenarios, [sys.executable])
        }
        try:
            out["uid 65534"] = pool.submit(_scenarios, plain_user.python(namespace=True))
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            out["uid 65534"] = exc
        yield out


@pytest.mark.root
@pytest.mark.parametrize("user", ["root", "uid 65534"])
@pytest.mark.parametrize("failure", kit_scenarios.FAILURES)
@pytest.mark.parametrize("client", kit_scenarios.CLIENTS)
def test_without_a_policy_blocked_after_3t_with_one_ended_within_t_plus_2(
    runs: dict[str, Future[dict[tuple[str, str, bool], Any]] | BaseException], user: str, failure: str, client: str
) -> None:
    if client != "socket" and importlib.util.find_spec(client) is None:
        # the installed-wheel runs hold kaext, pytest and hypothesis only; the main run has the clients
        reason = f"the {client} library is not installed here"
        pytest.fail(f"{reason}, but KAEXT_REQUIRE_SERVERS=1") if os.environ.get(
            "KAEXT_REQUIRE_SERVERS"
        ) == "1" else pytest.skip(reason)
    run = runs[user]
    if isinstance(run, BaseException):
        raise run
    results = run.result()
    without, with_policy = results[(client, failure, False)], results[(client, failure, True)]
    _MEASURED.append(
        f"{user}, {client}, {failure}: without a policy {without['outcome']} at {without['seconds']} s; "
        f"with {with_policy['policy']}: {with_policy['outcome']} after {with_policy['seconds']} s"
    )
    if failure == "forget_idle" and FIREWALL == "iptables":  # no idle timers in iptables: refused, clearly
        for row in (without, with_policy):
            assert row["outcome"].startswith(f"failure refused: OSError({errno.EOPNOTSUPP}, 'forget_idle needs"), row
        return
    assert without["outcome"] == "blocked", without
    assert without["seconds"] >= 3 * T, without
    assert with_policy["policy"] == str(kaext.Policy.from_timeout(T))
    assert with_policy["seconds"] is not None and with_policy["seconds"] <= T + 2, with_policy
    assert with_policy["outcome"].endswith(" " + EXPECTED_ERRNO[failure]), with_policy


# --------------------------------------------------------------------------------------
# The path itself
# --------------------------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    with kit_scenarios.echo_server() as port:
        yield ("127.0.0.1", port)


def _exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    return got


@pytest.mark.root
def test_a_32_thread_storm_through_one_path_loses_nothing_before_vanish(
    kit: None, echo: tuple[str, int], kaext_path: Any
) -> None:
    path = kaext_path(echo)
    threads, rounds, conns = 32, 40, 3
    before = threading.Barrier(threads + 1)
    after = threading.Barrier(threads + 1)
    errors: list[str] = []
    echoed = [0] * threads
    lost_after = [""] * threads

    def storm(i: int) -> None:
        try:
            socks = []
            for c in range(conns):  # connections opened while the others are busy
                sock = socket.create_connection(path.address, timeout=10)
                socks.append(sock)
                for r in range(rounds):
                    data = os.urandom(64 + (i * 997 + c * 131 + r * 17) % 4000)
                    if _exchange(sock, data) != data:
                        errors.append(f"thread {i}: echo differs")
                    echoed[i] += len(data)
        except Exception as exc:
            errors.append(f"thread {i}: {exc!r}")
        before.wait()
        after.wait()  # the path has vanished
        try:
            socks[-1].settimeout(1)
            socks[-1].sendall(b"x")
            lost_after[i] = repr(socks[-1].recv(1))
        except TimeoutError:
            lost_after[i] = "timeout"
        except Exception as exc:
            lost_after[i] = repr(exc)
        for sock in socks:
            sock.close()

    workers = [threading.Thread(target=storm, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    before.wait(120)
    path.vanish()
    after.wait(10)
    for w in workers:
        w.join(30)
    assert not errors, errors[:5]
    assert all(n > 0 for n in echoed)
    _MEASURED.append(f"storm: {threads} threads x {conns} connections, {sum(echoed)} bytes echoed, none lost")
    assert lost_after == ["timeout"] * threads  # after vanish() nothing answers
    with pytest.raises(TimeoutError):
        socket.create_connection(path.address, timeout=1)  # new connects get no answer either


@pytest.mark.root
def test_several_paths_to_one_server_fail_each_on_its_own(kit: None, echo: tuple[str, int], kaext_path: Any) -> None:
    a, b, c = kaext_path(echo), kaext_path(echo), kaext_path(echo)
    assert len({a.address, b.address, c.address, echo}) == 4
    sa, sb, sc = (socket.create_connection(p.address, timeout=2) for p in (a, b, c))
    a.vanish()
    b.reset()
    with pytest.raises(TimeoutError):
        _exchange(sa, b"a")
    with pytest.raises(ConnectionResetError):
        _exchange(sb, b"b")
    assert _exchange(sc, b"c") == b"c"  # the third path is untouched
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(b.address, timeout=2)  # a reset path refuses new connects
    a.heal()
    b.heal()
    assert _exchange(sa, b"a2").endswith(b"a2")  # the vanished flow comes back (its "a" was queued)
    assert _exchange(socket.create_connection(b.address, timeout=2), b"new") == b"new"
    for s in (sa, sb, sc):
        s.close()


@pytest.mark.root
def test_forget_idle_forgets_only_idle_flows_and_rst_answers_them(kit: None, echo: tuple[str, int]) -> None:
    with testing.Path(echo) as path:
        assert path.firewall == FIREWALL
        idle, busy, reset_me = (socket.create_connection(path.address, timeout=2) for _ in range(3))
        if FIREWALL == "iptables":
            with pytest.raises(OSError) as refused:
                path.forget_idle(1.0)
            assert refused.value.errno == errno.EOPNOTSUPP and "forget_idle needs nftables" in str(refused.value)
            assert _exchange(idle, b"still") == b"still"  # the path is as it was
            return
        path.forget_idle(1.0)
        for _ in range(6):  # 1.5 s of traffic every 0.25 s: remembered
            assert _exchange(busy, b"k") == b"k"
            time.sleep(0.25)
        with pytest.raises(TimeoutError):
            _exchange(idle, b"late")  # idle 1.5 s: forgotten, its packets dropped
        assert _exchange(socket.create_connection(path.address, timeout=2), b"new") == b"new"
        path.forget_idle(0.3, rst=True)
        time.sleep(0.6)
        with pytest.raises(ConnectionResetError):
            _exchange(reset_me, b"late")


@pytest.mark.root
def test_a_path_is_held_where_the_kernel_can(kit: None, echo: tuple[str, int]) -> None:
    with testing.Path(echo) as path:
        assert path.firewall == FIREWALL
        assert f"{FIREWALL} " in repr(path)
        assert _exchange(socket.create_connection(path.address, timeout=2), b"hi") == b"hi"


def _iptables_chains(name: str) -> list[str]:
    """The iptables-legacy rules that name ``name``, both tables, both families (from iptables itself)."""
    lines = []
    for cmd in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("nat", "filter"):
            out = subprocess.run([cmd, "-w", "-t", table, "-S"], capture_output=True, text=True, timeout=30).stdout
            lines += [f"{cmd} {table} {line}" for line in out.splitlines() if name in line.split()]
    return lines


@pytest.mark.root
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_iptables_paths_on_request_vanish_reset_heal_and_leave_nothing(
    kit: None, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KAEXT_TESTING_FIREWALL=iptables: what a kernel without nftables for IP gets, on this one."""
    monkeypatch.setenv(testing.FIREWALL_VARIABLE, "iptables")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, 0), family=family)
    except OSError as exc:
        pytest.skip(f"no {host} loopback here: {exc}")
    with listener, testing.Path(listener.getsockname()[:2]) as path:
        name = repr(path).split()[-1].rstrip(">")
        assert path.firewall == "iptables" and name.startswith(f"kaext_{os.getpid()}_")
        rules = _iptables_chains(name)
        cmd = "iptables-legacy" if family == socket.AF_INET else "ip6tables-legacy"
        assert f"{cmd} nat -N {name}" in rules and f"{cmd} filter -N {name}" in rules, rules
        client = socket.create_connection(path.address, timeout=2)
        server, _ = listener.accept()
        server.settimeout(1)
        client.sendall(b"a")
        assert server.recv(1) == b"a"
        path.vanish()
        client.sendall(b"b")
        with pytest.raises(TimeoutError):
            server.recv(1)  # dropped
        path.heal()
        server.settimeout(10)
        assert server.recv(1) == b"b"  # retransmitted, let through
        with pytest.raises(OSError) as refused:
            path.forget_idle(1)
        assert refused.value.errno == errno.EOPNOTSUPP
        path.reset()
        client.sendall(b"c")
        with pytest.raises(ConnectionResetError):
            client.settimeout(5)
            while True:
                client.recv(1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(path.address, timeout=2)  # a reset path refuses new connects
        client.close()
        server.close()
    assert _iptables_chains(name) == []


def test_an_unknown_firewall_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.FIREWALL_VARIABLE, "pf")
    with pytest.raises(ValueError, match=r"KAEXT_TESTING_FIREWALL='pf' is not a firewall kaext.testing knows"):
        testing.Path(("127.0.0.1", 9))


@pytest.mark.root
def test_ipv6_loopback(kit: None) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener, testing.Path(listener.getsockname()[:2]) as path:
        assert path.address[0] == "::1" and path.address[1] != listener.getsockname()[1]
        client = socket.create_connection(path.address, timeout=2)
        server, _ = listener.accept()
        server.sendall(b"6")
        assert client.recv(1) == b"6"
        path.reset()
        client.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            client.recv(1)
        client.close()
        server.close()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="target must be a"):
        testing.Path("127.0.0.1:80")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target port must be an int"):
        testing.Path(("127.0.0.1", "80"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"target port=70000 is out of range \(1 .. 65535\)"):
        testing.Path(("127.0.0.1", 70000))
    with pytest.raises(OSError) as info:
        testing.Path(("name.invalid", 80))
    assert info.value.errno is not None


@pytest.mark.root
def test_forget_idle_bad_arguments(kit: None, echo: tuple[str, int]) -> None:
    with testing.Path(echo) as path:
        with pytest.raises(ValueError, match=r"seconds=0 is out of range \(0.01 .. 86400\)"):
            path.forget_idle(0)
        with pytest.raises(TypeError, match="seconds must be a number"):
            path.forget_idle("5")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="rst must be a bool"):
            path.forget_idle(5, rst=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closed"):
        path.vanish()


@pytest.mark.root  # setpriv: running as another user takes root
def test_without_cap_net_admin_one_clear_line(tmp_path: FilePath) -> None:
    """As uid 65534 outside a namespace: OSError EPERM, one line that says what to do."""
    script = (
        "import kaext.testing as t\ntry:\n    t.Path(('127.0.0.1', 9))\nexcept OSError as e:\n    print(e.errno, e)\n"
    )
    proc = subprocess.run(
        [*plain_user.python(namespace=False), "-c", script], capture_output=True, text=True, cwd="/", timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{errno.EPERM} ") and proc.stdout.count("\n") == 1, proc.stdout
    assert "CAP_NET_ADMIN" in proc.stdout and "kaext testing -- COMMAND" in proc.stdout


# --------------------------------------------------------------------------------------
# Nothing left behind
# --------------------------------------------------------------------------------------


def _tables_of(pid: int) -> list[str]:
    """The paths of process ``pid`` the kernel holds: nftables tables, iptables chains (filter)."""
    if FIREWALL == "nftables":
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30).stdout
    else:
        out = "".join(
            subprocess.run([cmd, "-w", "-S"], capture_output=True, text=True, timeout=30).stdout
            for cmd in ("iptables-legacy", "ip6tables-legacy")
        )
        out = "\n".join(line for line in out.splitlines() if line.startswith("-N "))
    return re.findall(rf"\bkaext_{pid}_\d+\b", out)


def _child_pytest(tmp: FilePath, body: str, env: dict[str, str]) -> subprocess.Popen[str]:
    (tmp / "test_child.py").write_text(textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp), str(tmp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp,
        env={**os.environ, **env},
    )


CHILD = """
    import os, socket, time
    import kaext.testing

    def serve():
        s = socket.create_server(("127.0.0.1", 0))
        return s

    def test_fails(kaext_path, tmp_path):
        server = serve()
        path = kaext_path(server.getsockname())
        with kaext.testing.Path(server.getsockname()) as other:
            open(os.environ["TEST_CHILD_PID_FILE"], "w").write(str(os.getpid()))
            assert path.address != other.address
            if os.environ.get("TEST_CHILD_WAIT"):
                time.sleep(120)
            assert False, "this test fails"
"""


@pytest.mark.root
@pytest.mark.parametrize("how", ["failing test", "SIGINT"])
def test_nothing_left_after_a_failing_or_interrupted_test(kit: None, tmp_path: FilePath, how: str) -> None:
    pid_file = tmp_path / "pid"
    env = {"TEST_CHILD_PID_FILE": str(pid_file), "TEST_CHILD_WAIT": "1" if how == "SIGINT" else ""}
    child = _child_pytest(tmp_path, CHILD, env)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert child.poll() is None or how != "SIGINT", child.communicate()[0]
            if child.poll() is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        if how == "SIGINT":
            assert len(_tables_of(pid)) == 2  # both paths are there while the test runs
            child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if how == "SIGINT":
        assert child.returncode == 2 and "KeyboardInterrupt" in out, out  # pytest's "interrupted"
    else:
        assert child.returncode == 1 and "this test fails" in out, out
    assert _tables_of(pid) == []


@pytest.mark.root
def test_a_killed_process_tables_go_with_the_next_path(kit: None, echo: tuple[str, int]) -> None:
    code = f"import kaext.testing, time\np = kaext.testing.Path({echo!r})\nprint(p.address, flush=True)\ntime.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline()
        assert len(_tables_of(child.pid)) == 1
    finally:
        child.kill()
        child.wait()
    assert len(_tables_of(child.pid)) == 1  # SIGKILL: nothing could run
    testing.Path(echo).close()
    assert _tables_of(child.pid) == []


NAMESPACE_CHILD = """
import os, socket, subprocess, sys, time
import kaext.testing
server = socket.create_server(("127.0.0.1", 0))
sleeper = subprocess.Popen(["sleep", "120"])  # a process of the command's own, stopped by it
try:
    with kaext.testing.Path(server.getsockname()) as path:
        print(os.readlink("/proc/self/ns/net"), sleeper.pid, flush=True)
        socket.create_connection(path.address).recv(1)  # blocked until interrupted
finally:
    sleeper.kill()
    sleeper.wait()
"""


def _in_netns(inode: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == inode:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.mark.root
def test_sigint_under_kaext_testing_leaves_no_namespace_or_process(user_can_run_python: None) -> None:
    child = subprocess.Popen(
        [*plain_user.python(namespace=True), "-c", NAMESPACE_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env=plain_user.env(),
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line, child.communicate(timeout=30)
        inode = line[0]
        assert inode != os.readlink("/proc/self/ns/net")
        assert child.pid in _in_netns(inode)  # exec: COMMAND is the process started
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Python ends an uncaught KeyboardInterrupt by dying of SIGINT, as a shell expects
    assert child.returncode == -signal.SIGINT and "KeyboardInterrupt" in err, err
    assert _in_netns(inode) == []  # no process left in it: the namespace is gone with them


# --------------------------------------------------------------------------------------
# ends_within
# --------------------------------------------------------------------------------------


def test_ends_within_cuts_a_blocked_call_short_and_fails_the_test() -> None:
    a, b = socket.socketpair()
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"still running after 0.5 s"), testing.ends_within(0.5):
        a.recv(1)  # never answered
    took = time.monotonic() - start
    assert 0.45 <= took < 3, took
    a.close()
    b.close()


def test_ends_within_passes_what_the_block_raises_and_restores_the_alarm() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(ConnectionResetError), testing.ends_within(5):
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        with testing.ends_within(5):
            time.sleep(0.01)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        signal.setitimer(signal.ITIMER_REAL, 0.6)  # an outer timer survives an inner block
        with testing.ends_within(5):
            time.sleep(0.1)
        time.sleep(1)
        assert seen == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_ends_within_in_another_thread_fails_when_the_block_ends_late() -> None:
    caught: list[BaseException] = []

    def late() -> None:
        try:
            with testing.ends_within(0.1):
                time.sleep(0.3)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=late)
    thread.start()
    thread.join(10)
    assert len(caught) == 1 and "later than 0.1 s" in str(caught[0])


def test_ends_within_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seconds=0 must be > 0"), testing.ends_within(0):
        pass
    with pytest.raises(TypeError, match="seconds must be a number"), testing.ends_within("1"):  # type: ignore[arg-type]
        pass


# --------------------------------------------------------------------------------------
# The pytest plugin and the command
# --------------------------------------------------------------------------------------

PLUGIN_TEST = """
    import sys, socket

    def test_untouched():
        assert "kaext.testing" not in sys.modules  # the plugin imports nothing until asked

    def test_path(kaext_path):
        server = socket.create_server(("127.0.0.1", 0))
        path = kaext_path(server.getsockname())
        path.reset()
        try:
            socket.create_connection(path.address, timeout=2)
        except ConnectionRefusedError:
            print("REFUSED")
"""


def _plugin_run(python: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    as_root = python == [sys.executable]
    tmp = tempfile.mkdtemp(prefix="kaext-plugin-")
    try:
        os.chmod(tmp, 0o755)
        with open(os.path.join(tmp, "test_plugin_child.py"), "w") as f:
            f.write(textwrap.dedent(PLUGIN_TEST))
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        if not as_root:
            os.chown(base, USER, USER)
        return subprocess.run(
            [
                *python,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-rs",
                "-s",
                "--basetemp",
                os.path.join(base, "t"),
                tmp,
            ]
            + list(args),
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env or (plain_user.clean_env() if as_root else plain_user.env()),
            timeout=120,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.root
def test_plugin_as_root(kit: None) -> None:
    proc = _plugin_run([sys.executable])
    assert proc.returncode == 0 and "2 passed" in proc.stdout and "REFUSED" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.root
def test_plugin_as_a_plain_user_under_kaext_testing(user_can_run_python: None) -> None:
    proc = _plugin_run(plain_user.python(namespace=True))
    assert proc.returncode == 0 and "2 passed" in proc.stdout and "REFUSED" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.root
@pytest.mark.parametrize("strict", [None, "env", "option", "ini"])
def test_plugin_without_cap_net_admin_skips_or_fails_when_strict(strict: str | None) -> None:
    env = plain_user.env()
    args: list[str] = []
    if strict == "env":
        env["KAEXT_TESTING_STRICT"] = "1"
    elif strict == "option":
        args = ["--kaext-strict"]
    elif strict == "ini":
        args = ["-o", "kaext_testing_strict=true"]
    proc = _plugin_run(plain_user.python(namespace=False), *args, env=env)
    line = "kaext.testing cannot run here: kaext.testing needs CAP_NET_ADMIN in this network namespace"
    if strict is None:
        assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, proc.stdout[-2000:]
    else:
        assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, proc.stdout[-2000:]
    assert line in proc.stdout and "Traceback" not in proc.stdout, proc.stdout[-2000:]


def test_kaext_testing_command_exit_status(tmp_path: FilePath) -> None:
    run = [sys.executable, "-m", "kaext.testing", "--"]
    proc = subprocess.run([*run, sys.executable, "-c", "import sys; sys.exit(7)"], timeout=60)
    if proc.returncode == 2:
        plain_user.missing("kaext testing cannot make a namespace here")
    assert proc.returncode == 7
    proc = subprocess.run([*run, "sh", "-c", "kill -TERM $$"], timeout=60)
    assert proc.returncode == -signal.SIGTERM  # exec: the signal reaches COMMAND, its death is ours
    proc = subprocess.run([*run, "kaext-no-such-command"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 127 and proc.stderr.count("\n") == 1 and "command not found" in proc.stderr
    inside = subprocess.run(
        [
            *run,
            sys.executable,
            "-c",
            "import os, socket; print(os.readlink('/proc/self/ns/net')); "
            "s = socket.create_server(('127.0.0.1', 0)); "
            "socket.create_connection(s.getsockname()).close(); print('ok')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inside.returncode == 0, inside.stderr
    netns, ok = inside.stdout.split()
    assert netns != os.readlink("/proc/self/ns/net") and ok == "ok"  # a namespace of its own, loopback up
