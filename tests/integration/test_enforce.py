"""kaext.enforce: the BPF programs on a real cgroup v2 directory, read back from the very sockets.

Linux, root, cgroup v2, the C extension.  Every test makes its own cgroup
(``kaext-test-PID-RANDOM``, below this process's own) and removes it, with its pins,
whatever happened; nothing else on the machine (another test's or a real user's
enforcement) is looked at or touched.  Processes are put into the cgroup before they
exec (``cgroup.procs`` written in the child), so every connection they make is the
cgroup's from the start.  Options are read with plain getsockopt from the very
sockets, through pidfd_getfd (tests/support/procsock.py).  Missing parts skip here and fail
in CI (``KAEXT_REQUIRE_BPF=1``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("kaext.enforce is Linux-only", allow_module_level=True)

from paths import ROOT
from procsock import fresh_options, options, options_of

import kaext
from kaext import _platform, enforce

REQUIRED = os.environ.get("KAEXT_REQUIRE_BPF") == "1"
DEFAULTS = fresh_options()
POLICY = "175s:35s:5 user_timeout=19m"
WANT = (
    1,
    175,
    35,
    5,
    19 * 60 * 1000,
)  # SO_KEEPALIVE, TCP_KEEPIDLE s, TCP_KEEPINTVL s, TCP_KEEPCNT, TCP_USER_TIMEOUT ms
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN)"
    try:
        from kaext import _kaext  # noqa: F401
    except ImportError:
        return "needs the C extension"
    try:
        enforce.own_cgroup()
    except OSError as exc:
        return f"no cgroup v2 here: {exc}"
    return None


@pytest.fixture(scope="module")
def _bpf_reason() -> str | None:
    return _unavailable()


@pytest.fixture
def cgroup(_bpf_reason: str | None) -> Iterator[str]:
    """A fresh cgroup v2 directory of this test alone; detached and removed afterwards."""
    if kaext.IMPLEMENTATION != "c":
        # the pure-Python rerun: attach raises ENOSYS there (test_the_pure_python_install_raises_enosys
        # checks that in a child of the extension's run)
        pytest.skip("kaext.enforce needs the C extension; this run uses the pure-Python backend")
    if _bpf_reason is not None:
        if REQUIRED:
            pytest.fail(f"kaext.enforce tests cannot run, but KAEXT_REQUIRE_BPF=1: {_bpf_reason}")
        pytest.skip(f"kaext.enforce: {_bpf_reason}")
    path = os.path.join(enforce.own_cgroup(), f"kaext-test-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for sub in sorted(Path(path).glob("**/"), key=lambda p: len(str(p)), reverse=True):
            enforce.detach(str(sub))
            _kill_all(str(sub))
            enforce._remove_cgroup(str(sub))


def _kill_all(path: str) -> None:
    try:
        pids = Path(path, "cgroup.procs").read_text().split()
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass


def _into(path: str) -> Callable[[], None]:
    def enter() -> None:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")

    return enter


# A child that connects to HOST:PORT (or to its own listener when PORT is 0), then
# reports its addresses and waits until its stdin closes.  ARGV[3]: "own-keepalive"
# (SO_KEEPALIVE + TCP_KEEPIDLE 15 before connecting) or "after" (TCP_KEEPIDLE 15 and
# TCP_KEEPCNT 2 after connecting), else nothing.
CHILD = r"""
import json, socket, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = None
if port == 0:
    listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen()
    port = listener.getsockname()[1]
c = socket.socket()
if mode == "own-keepalive":
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15)
c.connect((host, port))
if mode == "after":
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
if host == "127.0.0.1" and sys.argv[2] == "0":
    server, _ = listener.accept()
print(json.dumps({"client": c.getsockname(), "server": server.getsockname() if server else None,
                  "peer": c.getpeername(), "idle_read": c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)}),
      flush=True)
sys.stdin.read()
"""


class Child:
    def __init__(self, argv: list[str], cgroup: str | None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
            preexec_fn=_into(cgroup) if cgroup else None,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"child {argv[:3]} said nothing (exit {self.proc.wait()})"
        self.info = json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def python_child(cgroup: str | None, host: str = "127.0.0.1", port: int = 0, mode: str = "-") -> Child:
    return Child([sys.executable, "-c", CHILD, host, str(port), mode], cgroup)


def client_options(child: Child) -> tuple[int, ...]:
    return options_of(tuple(child.info["client"]), child.proc.pid)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s
    s.close()


def _mine(cgroup: str) -> list[enforce.Enforcement]:
    return [e for e in enforce.enforcements() if e.cgroup == cgroup]


# --------------------------------------------------------------------------------------
# What the program does, on both ends, for every kind of program
# --------------------------------------------------------------------------------------


def test_python_client_and_server_in_the_cgroup_get_the_policy_on_both_ends(cgroup: str) -> None:
    e = enforce.attach(cgroup, POLICY)
    assert (e.cgroup, str(e.policy), e.respect_existing, e.force) == (cgroup, POLICY, False, False)
    child = python_child(cgroup)
    try:
        assert client_options(child) == WANT
        assert options_of(tuple(child.info["server"]), child.proc.pid, tuple(child.info["client"])) == WANT
    finally:
        child.close()
    (mine,) = _mine(cgroup)
    assert (mine.applied, mine.skipped, mine.failed) == (2, 0, 0)


def test_processes_outside_the_cgroup_keep_the_system_defaults(cgroup: str, listener: socket.socket) -> None:
    enforce.attach(cgroup, POLICY)
    outside = python_child(None)
    try:
        assert client_options(outside) == DEFAULTS
    finally:
        outside.close()
    with socket.create_connection(listener.getsockname()) as here:
        accepted, _ = listener.accept()
        with accepted:
            assert options(here) == DEFAULTS and options(accepted) == DEFAULTS


def test_curl_in_the_cgroup(cgroup: str, listener: socket.socket) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl") if not REQUIRED else pytest.fail("needs curl (KAEXT_REQUIRE_BPF=1)")
    enforce.attach(cgroup, POLICY)
    proc = subprocess.Popen(
        [curl, "-s", "-m", "30", f"http://127.0.0.1:{listener.getsockname()[1]}/"],
        stdout=subprocess.DEVNULL,
        preexec_fn=_into(cgroup),
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},  # curl as it is (no sanitizer runtime)
    )
    try:
        listener.settimeout(10)
        server, peer = listener.accept()  # curl waits for an answer that does not come yet
        with server:
            assert options_of(None, proc.pid, listener.getsockname()) == WANT
            assert options(server) == DEFAULTS  # this end is outside the cgroup
            server.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


STATIC_C = r"""
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
/* connects with raw system calls: no C library wrapper a preload could replace */
int main(int argc, char **argv)
{
    struct sockaddr_in a = {0};
    char c;
    long fd = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (fd < 0 || syscall(SYS_connect, fd, &a, sizeof(a)) != 0)
        return 1;
    printf("connected\n");
    fflush(stdout);
    return (int)syscall(SYS_read, 0, &c, 1) < 0;
}
"""


@pytest.fixture(scope="module")
def static_program(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc") if not REQUIRED else pytest.fail("needs gcc (KAEXT_REQUIRE_BPF=1)")
    d = tmp_path_factory.mktemp("static")
    (d / "raw.c").write_text(STATIC_C)
    proc = subprocess.run(
        [gcc, "-static", "-O1", "-o", str(d / "raw"), str(d / "raw.c")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        msg = f"gcc -static failed: {proc.stderr.strip()}"
        pytest.skip(msg) if not REQUIRED else pytest.fail(msg)
    return str(d / "raw")


def _run_static(program: str, cgroup: str, listener: socket.socket) -> tuple[int, ...]:
    proc = subprocess.Popen(
        [program, str(listener.getsockname()[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=_into(cgroup),
    )
    try:
        listener.settimeout(10)
        server, _ = listener.accept()
        with server:
            assert proc.stdout is not None and proc.stdout.readline() == b"connected\n"
            return options_of(None, proc.pid, listener.getsockname())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def test_a_static_program_making_raw_system_calls(cgroup: str, listener: socket.socket, static_program: str) -> None:
    out = (
        subprocess.run(["file", static_program], capture_output=True, text=True).stdout if shutil.which("file") else ""
    )
    assert "dynamically" not in out
    enforce.attach(cgroup, POLICY)
    assert _run_static(static_program, cgroup, listener) == WANT


# --------------------------------------------------------------------------------------
# Update, respect_existing, force, remove, descendants
# --------------------------------------------------------------------------------------


def test_a_policy_update_reaches_the_next_connection_and_leaves_earlier_ones(cgroup: str) -> None:
    enforce.attach(cgroup, POLICY)
    first = python_child(cgroup)
    try:
        e = enforce.attach(cgroup, "7s:3s:4")
        assert str(e.policy) == "7s:3s:4" and len(_mine(cgroup)) == 1
        second = python_child(cgroup)
        try:
            assert client_options(second) == (1, 7, 3, 4, DEFAULTS[4])
            assert client_options(first) == WANT  # established before the update: untouched
        finally:
            second.close()
    finally:
        first.close()


def test_connections_established_before_attach_are_not_touched(cgroup: str) -> None:
    before = python_child(cgroup)
    try:
        enforce.attach(cgroup, POLICY)
        assert client_options(before) == DEFAULTS
    finally:
        before.close()


def test_respect_existing_leaves_a_socket_that_turned_keepalive_on(cgroup: str) -> None:
    e = enforce.attach(cgroup, POLICY, respect_existing=True)
    assert e.respect_existing and not e.force
    own = python_child(cgroup, mode="own-keepalive")
    plain = python_child(cgroup)
    try:
        assert client_options(own) == (1, 15, *DEFAULTS[2:])
        assert client_options(plain) == WANT
    finally:
        own.close()
        plain.close()
    (mine,) = _mine(cgroup)
    # own: its client end skipped, its server end (accepted, no keepalive of its own) applied; plain: both applied
    assert (mine.applied, mine.skipped, mine.failed) == (3, 1, 0)


def test_without_force_the_programs_own_setsockopt_after_connecting_wins(cgroup: str) -> None:
    enforce.attach(cgroup, POLICY)
    child = python_child(cgroup, mode="after")
    try:
        assert child.info["idle_read"] == 15
        assert client_options(child) == (1, 15, 35, 2, WANT[4])
    finally:
        child.close()


def test_force_holds_the_policy_against_the_programs_own_setsockopt(cgroup: str) -> None:
    e = enforce.attach(cgroup, POLICY, force=True)
    assert e.force
    child = python_child(cgroup, mode="after")
    try:
        assert child.info["idle_read"] == 175  # its setsockopt(TCP_KEEPIDLE, 15) succeeded, with the policy's value
        assert client_options(child) == WANT
    finally:
        child.close()
    # force off again (an update in place): the program's own value wins once more
    assert not enforce.attach(cgroup, POLICY).force
    child = python_child(cgroup, mode="after")
    try:
        assert child.info["idle_read"] == 15
    finally:
        child.close()


def test_force_leaves_options_the_policy_does_not_set(cgroup: str) -> None:
    enforce.attach(cgroup, "on", force=True)
    child = python_child(cgroup, mode="after")
    try:
        assert client_options(child) == (1, 15, DEFAULTS[2], 2, DEFAULTS[4])
    finally:
        child.close()


def test_remove_leaves_new_connections_at_the_system_defaults(cgroup: str) -> None:
    enforce.attach(cgroup, POLICY, force=True)
    assert enforce.detach(cgroup) is True
    assert _mine(cgroup) == []
    assert enforce.detach(cgroup) is False
    child = python_child(cgroup, mode="after")
    try:
        assert client_options(python_child_plain := python_child(cgroup)) == DEFAULTS
        python_child_plain.close()
        assert child.info["idle_read"] == 15
    finally:
        child.close()


def test_a_descendant_cgroup_inherits_the_parents_program(cgroup: str) -> None:
    enforce.attach(cgroup, POLICY)
    sub = os.path.join(cgroup, "child", "grandchild")
    os.makedirs(sub)
    child = python_child(sub)
    try:
        assert client_options(child) == WANT
    finally:
        child.close()
    assert _mine(sub) == []  # inherited, not attached there


def test_a_relative_path_is_below_the_cgroup2_mount(cgroup: str) -> None:
    mount = enforce._mounts("cgroup2")[0]
    rel = os.path.relpath(cgroup, os.path.realpath(mount))
    assert enforce.attach(rel, "on").cgroup == cgroup


def test_it_stays_after_the_attaching_process_exits(cgroup: str) -> None:
    code = "import sys, kaext.enforce as e; e.attach(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, cgroup, POLICY], check=True, env=ENV)
    assert [str(e.policy) for e in _mine(cgroup)] == [POLICY]
    child = python_child(cgroup)
    try:
        assert client_options(child) == WANT
    finally:
        child.close()


# --------------------------------------------------------------------------------------
# The dead-peer budget, with the policy set only by the cgroup program
# --------------------------------------------------------------------------------------


def test_dead_peer_budget_through_a_namespace_pair_with_the_policy_from_the_cgroup(cgroup: str) -> None:
    """Through a veth pair, not kaext.testing: this runs on the second kernel too (Debian's
    user-mode Linux 6.1 has no nftables for IP, which the kit needs)."""
    import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1" or REQUIRED:
            pytest.fail(f"needs network namespaces: {reason}")
        pytest.skip(reason)
    budget = 8
    policy = kaext.Policy.from_timeout(budget)
    enforce.attach(cgroup, policy)
    lab = netns.Lab()
    own = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].split()[0]
    home = os.path.join(os.path.realpath(enforce._mounts("cgroup2")[0]), own.lstrip("/"))
    try:
        listener = lab.listener()
        # the client's socket is made by a helper process started from the cgroup: it is the cgroup's
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        try:
            client, server = lab.connect(listener)
        finally:
            Path(home, "cgroup.procs").write_text(str(os.getpid()))
        assert options(client)[1:4] == (policy.idle, policy.interval, policy.count)
        client.sendall(b"x")
        assert server.recv(1) == b"x"
        last = time.monotonic()
        lab.link_down(lab.server)
        client.settimeout(budget + 20)
        with pytest.raises(OSError) as info:
            client.recv(1)
        took = time.monotonic() - last
        assert info.value.errno == errno.ETIMEDOUT
        assert policy.idle and policy.interval
        print(f"ETIMEDOUT after {took:.2f} s (budget {budget} s, {policy})")
        assert policy.idle - 0.5 <= took <= budget + 1.5
        assert math.isfinite(took)
    finally:
        lab.close()


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_respect_existing_and_force_together_are_refused(cgroup: str) -> None:
    with pytest.raises(ValueError, match="respect_existing.*force"):
        enforce.attach(cgroup, POLICY, respect_existing=True, force=True)
    assert _mine(cgroup) == []


def test_bad_arguments(cgroup: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="policy"):
        enforce.attach(cgroup, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="middlebox"):
        enforce.attach(cgroup, "nonsense")
    with pytest.raises(TypeError, match="force"):
        enforce.attach(cgroup, POLICY, force=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a cgroup v2 directory"):
        enforce.attach(str(tmp_path), POLICY)
    with pytest.raises(FileNotFoundError):
        enforce.attach(os.path.join(cgroup, "nonexistent"), POLICY)
    assert _mine(cgroup) == []


# Drops to user nobody (no capabilities left) after loading every module as root: our
# interpreter and kaext may live where that user cannot read.  argv[1]: the cgroup;
# argv[2]: "api" or "cli".
AS_NOBODY = """
import contextlib, io, os, sys
import fcntl, json, subprocess, warnings
import kaext.enforce as e
import kaext._middleboxes
with contextlib.redirect_stderr(io.StringIO()):  # a dry run as root loads what the real one needs
    try:
        e.main(["--no-such-option"])
    except SystemExit:
        pass
    try:
        e.attach(sys.argv[1], "on", force=1)
    except TypeError:
        pass
if os.environ.get("DROP_TO_NOBODY", "1") == "1":
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
if sys.argv[2] == "cli":
    sys.exit(e.main([sys.argv[1], "--policy", "on"]))
try:
    e.attach(sys.argv[1], "on")
except PermissionError as exc:
    print("PermissionError", exc)
    sys.exit(3)
"""


def test_not_root_is_a_permission_error_and_leaves_nothing(cgroup: str) -> None:
    proc = subprocess.run([sys.executable, "-c", AS_NOBODY, cgroup, "api"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "CAP_BPF" in proc.stdout and "CAP_NET_ADMIN" in proc.stdout
    cli = subprocess.run([sys.executable, "-c", AS_NOBODY, cgroup, "cli"], capture_output=True, text=True, env=ENV)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert len(cli.stderr.splitlines()) == 1 and "Traceback" not in cli.stderr and "CAP_BPF" in cli.stderr
    # still uid 0, but without CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN (and CAP_PERFMON): the same
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        drop = ["--inh-caps=-all", "--bounding-set=-bpf,-net_admin,-sys_admin,-perfmon"]
        proc = subprocess.run(
            [setpriv, *drop, sys.executable, "-c", AS_NOBODY, cgroup, "api"],
            capture_output=True,
            text=True,
            env={**ENV, "DROP_TO_NOBODY": "0"},
        )
        assert proc.returncode == 3, proc.stdout + proc.stderr
    assert _mine(cgroup) == []


def test_no_cgroup2_mount(cgroup: str) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    mounts = " ".join(enforce._mounts("cgroup2"))
    code = (
        "import errno, sys, kaext.enforce as e\n"
        "try:\n    e.attach(sys.argv[1], 'on')\n"
        "except OSError as exc:\n    print(exc.errno == errno.ENOENT, exc); sys.exit(3)\n"
    )
    script = f'umount -l {mounts} && exec {sys.executable} -c "$0" "$1"'
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, code, cgroup],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.startswith("True") and "no cgroup2" in proc.stdout


def test_the_pure_python_install_raises_enosys(cgroup: str) -> None:
    code = (
        "import errno, sys, kaext.enforce as e\n"
        "try:\n    e.attach(sys.argv[1], 'on')\n"
        "except OSError as exc:\n    print(exc.errno == errno.ENOSYS, exc); sys.exit(3)\n"
        "print(e.enforcements())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, cgroup], capture_output=True, text=True, env={**ENV, "KAEXT_NO_EXTENSIONS": "1"}
    )
    assert proc.returncode == 3 and proc.stdout.startswith("True"), proc.stdout + proc.stderr
    assert _mine(cgroup) == []


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------


def cli(*args: str, tool: str = "kaext.enforce") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True, env=ENV, timeout=60)


def test_cli_attach_list_json_and_remove(cgroup: str) -> None:
    assert cli(cgroup, "--policy", POLICY, "--force").returncode == 0
    child = python_child(cgroup)
    child.close()
    listed = json.loads(cli("--list", "--json").stdout)
    mine = [e for e in listed["enforcements"] if e["cgroup"] == cgroup]
    assert mine == [
        {
            "cgroup": cgroup,
            "policy": POLICY,
            "respect_existing": False,
            "force": True,
            "applied": 2,
            "skipped": 0,
            "failed": 0,
            "cgroup_id": os.stat(cgroup).st_ino,  # the cgroup's id: its directory's inode number
            "state": "enforced",
            "repair": None,
        }
    ]
    assert cgroup in cli("--list").stdout
    assert cli(cgroup, "--remove").returncode == 0
    again = cli(cgroup, "--remove")
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--policy", "on", "--force", "--respect-existing"],
        ["--policy", "nonsense"],
        [],
        ["--policy", "on", "/nonexistent-cgroup"],
    ],
)
def test_cli_errors_are_one_line_and_exit_2(cgroup: str, args: list[str]) -> None:
    full = [a for a in args if a != "/nonexistent-cgroup"]
    target = "/nonexistent-cgroup" if "/nonexistent-cgroup" in args else cgroup
    proc = cli(target, *full) if args else cli()
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert _mine(cgroup) == []


def _runner_cgroups(pid: int) -> list[str]:
    """The cgroups kaext-run (process ``pid``) made: only those (other tests make theirs meanwhile)."""
    return [n for n in os.listdir(enforce.own_cgroup()) if n.startswith(f"kaext-run-{pid}-")]


def test_kaext_run_cgroup_covers_a_static_program_and_removes_its_cgroup(
    cgroup: str, listener: socket.socket, static_program: str
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaext.run",
            "--cgroup",
            "--policy",
            POLICY,
            "--",
            static_program,
            str(listener.getsockname()[1]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
    )
    try:
        listener.settimeout(20)
        server, _ = listener.accept()
        with server:
            assert proc.stdout is not None and proc.stdout.readline() == b"connected\n"
            owner = [p for p in os.listdir(f"/proc/{proc.pid}/task")]  # the runner waits; its child connected
            assert owner
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert options_of(None, int(children[0]), listener.getsockname()) == WANT
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(20) == 0
    assert _runner_cgroups(proc.pid) == []  # the fresh cgroup is gone
    outside = python_child(None)
    try:
        assert client_options(outside) == DEFAULTS
    finally:
        outside.close()


# --------------------------------------------------------------------------------------
# The ABI kaext_bpf.h spells out, against the kernel's own header
# --------------------------------------------------------------------------------------

ABI_CHECK = r"""
#include <stddef.h>
#include <linux/bpf.h>
#include "kaext_bpf.h"
#define SAME(a, b) _Static_assert((a) == (b), #a " != " #b)
SAME(KAEXT_BPF_MAP_CREATE, BPF_MAP_CREATE);
SAME(KAEXT_BPF_MAP_LOOKUP_ELEM, BPF_MAP_LOOKUP_ELEM);
SAME(KAEXT_BPF_MAP_UPDATE_ELEM, BPF_MAP_UPDATE_ELEM);
SAME(KAEXT_BPF_PROG_LOAD, BPF_PROG_LOAD);
SAME(KAEXT_BPF_OBJ_PIN, BPF_OBJ_PIN);
SAME(KAEXT_BPF_OBJ_GET, BPF_OBJ_GET);
SAME(KAEXT_BPF_PROG_ATTACH, BPF_PROG_ATTACH);
SAME(KAEXT_BPF_PROG_DETACH, BPF_PROG_DETACH);
SAME(KAEXT_BPF_PROG_GET_FD_BY_ID, BPF_PROG_GET_FD_BY_ID);
SAME(KAEXT_BPF_MAP_GET_FD_BY_ID, BPF_MAP_GET_FD_BY_ID);
SAME(KAEXT_BPF_OBJ_GET_INFO_BY_FD, BPF_OBJ_GET_INFO_BY_FD);
SAME(KAEXT_BPF_PROG_QUERY, BPF_PROG_QUERY);
SAME(KAEXT_BPF_F_QUERY_EFFECTIVE, BPF_F_QUERY_EFFECTIVE);
SAME(KAEXT_BPF_F_STRICT_ALIGNMENT, BPF_F_STRICT_ALIGNMENT);
SAME(KAEXT_BPF_TAG_SIZE, BPF_TAG_SIZE);
SAME(KAEXT_BPF_OBJ_NAME_LEN, BPF_OBJ_NAME_LEN);
SAME(KAEXT_SOCK_OPS_REPLY, offsetof(struct bpf_sock_ops, reply));
SAME(KAEXT_SOCKOPT_OPTLEN, offsetof(struct bpf_sockopt, optlen));
SAME(offsetof(kaext_bpf_prog_data, id), offsetof(struct bpf_prog_info, id));
SAME(offsetof(kaext_bpf_prog_data, tag), offsetof(struct bpf_prog_info, tag));
SAME(offsetof(kaext_bpf_prog_data, nr_map_ids), offsetof(struct bpf_prog_info, nr_map_ids));
SAME(offsetof(kaext_bpf_prog_data, map_ids), offsetof(struct bpf_prog_info, map_ids));
SAME(offsetof(kaext_bpf_prog_data, name), offsetof(struct bpf_prog_info, name));
SAME(offsetof(kaext_bpf_map_info, id), offsetof(struct bpf_map_info, id));
SAME(offsetof(kaext_bpf_attr, query.prog_ids), offsetof(union bpf_attr, query.prog_ids));
SAME(offsetof(kaext_bpf_attr, query.prog_cnt), offsetof(union bpf_attr, query.prog_cnt));
SAME(offsetof(kaext_bpf_attr, info.info), offsetof(union bpf_attr, info.info));
SAME(offsetof(kaext_bpf_attr, get_id.open_flags), offsetof(union bpf_attr, open_flags));
SAME(K_LDX | K_MEM | K_B, BPF_LDX | BPF_MEM | BPF_B);
SAME(K_ALU64 | K_RSH | K_K, BPF_ALU64 | BPF_RSH | BPF_K);
SAME(KAEXT_BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY);
SAME(KAEXT_BPF_PROG_TYPE_SOCK_OPS, BPF_PROG_TYPE_SOCK_OPS);
SAME(KAEXT_BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_PROG_TYPE_CGROUP_SOCKOPT);
SAME(KAEXT_BPF_CGROUP_SOCK_OPS, BPF_CGROUP_SOCK_OPS);
SAME(KAEXT_BPF_CGROUP_SETSOCKOPT, BPF_CGROUP_SETSOCKOPT);
SAME(KAEXT_BPF_F_ALLOW_MULTI, BPF_F_ALLOW_MULTI);
SAME(KAEXT_BPF_FUNC_map_lookup_elem, BPF_FUNC_map_lookup_elem);
SAME(KAEXT_BPF_FUNC_setsockopt, BPF_FUNC_setsockopt);
SAME(KAEXT_BPF_FUNC_getsockopt, BPF_FUNC_getsockopt);
SAME(KAEXT_BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB);
SAME(KAEXT_BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB);
SAME(KAEXT_BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_FD);
SAME(KAEXT_SOCK_OPS_OP, offsetof(struct bpf_sock_ops, op));
SAME(KAEXT_SOCKOPT_SK, offsetof(struct bpf_sockopt, sk));
SAME(KAEXT_SOCKOPT_OPTVAL, offsetof(struct bpf_sockopt, optval));
SAME(KAEXT_SOCKOPT_OPTVAL_END, offsetof(struct bpf_sockopt, optval_end));
SAME(KAEXT_SOCKOPT_LEVEL, offsetof(struct bpf_sockopt, level));
SAME(KAEXT_SOCKOPT_OPTNAME, offsetof(struct bpf_sockopt, optname));
SAME(KAEXT_BPF_SOCK_PROTOCOL, offsetof(struct bpf_sock, protocol));
SAME(sizeof(kaext_insn), sizeof(struct bpf_insn));
SAME(offsetof(kaext_insn, off), offsetof(struct bpf_insn, off));
SAME(offsetof(kaext_insn, imm), offsetof(struct bpf_insn, imm));
SAME(K_LD | K_DW | K_IMM, BPF_LD | BPF_DW | BPF_IMM);
SAME(K_STX | K_ATOMIC | K_DW, BPF_STX | BPF_ATOMIC | BPF_DW);
SAME(K_JMP | K_CALL, BPF_JMP | BPF_CALL);
SAME(K_ALU64 | K_MOV | K_X, BPF_ALU64 | BPF_MOV | BPF_X);
SAME(K_JMP | K_JGT | K_X, BPF_JMP | BPF_JGT | BPF_X);
SAME(K_ALU64 | K_NEG, BPF_ALU64 | BPF_NEG);
SAME(offsetof(kaext_bpf_attr, load.expected_attach_type), offsetof(union bpf_attr, expected_attach_type));
SAME(offsetof(kaext_bpf_attr, load.log_buf), offsetof(union bpf_attr, log_buf));
SAME(offsetof(kaext_bpf_attr, load.prog_name), offsetof(union bpf_attr, prog_name));
SAME(offsetof(kaext_bpf_attr, elem.value), offsetof(union bpf_attr, value));
SAME(offsetof(kaext_bpf_attr, obj.bpf_fd), offsetof(union bpf_attr, bpf_fd));
SAME(offsetof(kaext_bpf_attr, attach.attach_flags), offsetof(union bpf_attr, attach_flags));
SAME(offsetof(kaext_bpf_attr, map.max_entries), offsetof(union bpf_attr, max_entries));
int main(void) { return 0; }
"""


def test_the_abi_in_kaext_bpf_h_matches_the_kernels_linux_bpf_h(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    header = Path("/usr/include/linux/bpf.h")
    if gcc is None or not header.exists():
        msg = "needs gcc and the kernel's <linux/bpf.h> (Debian: linux-libc-dev)"
        pytest.skip(msg) if not REQUIRED else pytest.fail(msg)
    ext = ROOT / "ext"
    (tmp_path / "abi.c").write_text(ABI_CHECK)
    proc = subprocess.run(
        [gcc, "-fsyntax-only", "-Wall", "-I", str(ext), str(tmp_path / "abi.c")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


USES_ALL = r"""
#include "kaext_bpf.h"
int main(void)
{
    kaext_bpf_config c = {0};
    kaext_bpf_counters n = {0};
    kaext_bpf_prog_data p;
    uint32_t ids[1], cnt = 1;
    char log[8];
    return kaext_bpf_load(KAEXT_BPF_SOCK_OPS, 0, log, 8, 0) + kaext_bpf_map_create() + kaext_bpf_config_write(0, &c) +
           kaext_bpf_config_read(0, &c) + kaext_bpf_counters_read(0, &n) + kaext_bpf_pin(0, "") +
           kaext_bpf_obj_get("") + kaext_bpf_attach(0, 0, 0, 0) + kaext_bpf_mount("") +
           kaext_bpf_prog_query(0, 0, 0, ids, &cnt) + kaext_bpf_fd_by_id(0, 0) + kaext_bpf_prog_info(0, &p, &cnt) +
           kaext_bpf_map_id(0, &cnt);
}
"""


@pytest.mark.parametrize("cc", ["gcc", "gcc -U__linux__", "x86_64-w64-mingw32-gcc"])
def test_kaext_bpf_h_compiles_warning_free_on_linux_and_as_enosys_stubs_elsewhere(tmp_path: Path, cc: str) -> None:
    argv = cc.split()
    if shutil.which(argv[0]) is None:
        msg = f"needs {argv[0]}"
        pytest.skip(msg) if os.environ.get("KAEXT_REQUIRE_CROSS") != "1" and not REQUIRED else pytest.fail(msg)
    ext = ROOT / "ext"
    (tmp_path / "uses.c").write_text(USES_ALL)
    proc = subprocess.run(
        [*argv, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", str(ext), str(tmp_path / "uses.c")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_an_option_the_kernels_bpf_setsockopt_refuses_is_named_before_anything_is_attached(cgroup: str) -> None:
    # TCP_KEEPIDLE 0 is out of the kernel's range (1..32767 s): its bpf_setsockopt refuses it
    # the way a kernel without that option refuses any value.  Policy() never makes such a
    # value, so the check is run directly with it.
    with pytest.raises(OSError, match="refuses TCP_KEEPIDLE") as info:
        enforce._probe(0b11, (1, 0, 0, 0, 0, 0))
    assert info.value.errno == errno.EINVAL
    enforce._probe(0b111111, (1, 175, 35, 5, 1140000, 2))  # a policy it takes (TCP_SYNCNT 2 too): no error
    # TCP_SYNCNT 0 (the kernel takes 1..127): refused as the connect starts (BPF_SOCK_OPS_TCP_CONNECT_CB)
    with pytest.raises(OSError, match="refuses TCP_SYNCNT") as info:
        enforce._probe(0b100001, (1, 0, 0, 0, 0, 0))
    assert info.value.errno == errno.EINVAL
    assert [p for p in os.listdir(enforce.own_cgroup()) if p.startswith(f"kaext-probe-{os.getpid()}-")] == []


def test_both_backends_name_the_programs_alike() -> None:
    from kaext import _pure

    try:
        from kaext import _kaext
    except ImportError:
        pytest.skip("the C extension kaext._kaext is not built here")
    assert (_kaext.BPF_SOCK_OPS, _kaext.BPF_SETSOCKOPT) == (_pure.BPF_SOCK_OPS, _pure.BPF_SETSOCKOPT)
    with pytest.raises(OSError) as info:
        _pure.bpf_map_create()
    assert info.value.errno == errno.ENOSYS


def test_kaext_run_cgroup_interrupted_stops_the_command_and_removes_its_cgroup(cgroup: str) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "kaext.run", "--cgroup", "--policy", "on", "--", "sleep", "60"], env=ENV
    )
    deadline = time.monotonic() + 20
    while not _runner_cgroups(proc.pid):  # its cgroup is there
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)  # the command has started
    proc.send_signal(signal.SIGINT)  # to the runner alone, not to the command
    assert proc.wait(20) == 130
    assert _runner_cgroups(proc.pid) == []


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _stop_runner(proc: subprocess.Popen[bytes]) -> None:
    """On a failed check: the runner's session (the runner and its command) goes, then its cgroup."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for name in _runner_cgroups(proc.pid):
        path = os.path.join(enforce.own_cgroup(), name)
        with contextlib.suppress(OSError):
            enforce.detach(path)
        with contextlib.suppress(OSError):
            os.rmdir(path)


def test_kaext_run_cgroup_a_signal_during_set_up_reaches_the_command_not_a_set_up_child(cgroup: str) -> None:
    """Setting up runs a short-lived child of kaext's own (the check that this kernel takes the
    policy, enforce._probe); a SIGINT that arrives meanwhile is kept for COMMAND, which gets it the
    moment it starts, and the runner ends with 128 + SIGINT.  (Once it went to the set-up child, and
    kaext-run waited for the whole of ``sleep 60``.)"""
    import signal

    caught = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaext.run", "--cgroup", "--policy", "on", "--", "sleep", "60"],
            env=ENV,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while not (children := _children_of(proc.pid)):  # the first child is set-up's own
                assert time.monotonic() < deadline and proc.poll() is None
            with open(f"/proc/{children[0]}/cmdline", "rb") as f:
                during_set_up = f.read().split(b"\0")[0:3] != [b"sleep", b"60", b""]
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 128 + signal.SIGINT, err
            assert _runner_cgroups(proc.pid) == []
            caught += during_set_up
        finally:
            _stop_runner(proc)
    assert caught, "no SIGINT of five arrived while kaext-run was setting up: the check checked nothing"


def _probes_of(pid: int) -> list[str]:
    return [n for n in os.listdir(enforce.own_cgroup()) if n.startswith(f"kaext-probe-{pid}-")]


def test_sigterm_during_the_capability_check_leaves_no_scratch_cgroup(cgroup: str) -> None:
    """kaext-enforce first tries the policy on a connection of a child in a scratch cgroup of its
    own (``kaext-probe-PID-*``); a SIGTERM then (systemd stopping the unit, ``timeout``) ends it
    like Ctrl-C: the child, the scratch cgroup and its program are gone, nothing is attached,
    exit 143.  (Once SIGTERM killed it outright and the scratch cgroup stayed.)"""
    import signal

    caught = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaext.enforce", cgroup, "--policy", "on"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while not _probes_of(proc.pid) and proc.poll() is None:
                pass
            if proc.poll() is not None:  # done before the check could be caught: again
                assert proc.wait() == 0 and enforce.detach(cgroup)
                continue
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 128 + signal.SIGTERM, err
            assert err.splitlines() == ["python -m kaext.enforce: terminated (SIGTERM)"], err
            assert _probes_of(proc.pid) == []
            assert _mine(cgroup) == []
            caught += 1
            break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for name in _probes_of(proc.pid):  # only after a failed check
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(enforce.own_cgroup(), name))
    assert caught, "the capability check ended before a SIGTERM of five could reach it"


def test_a_cgroup_v1_directory_is_not_a_cgroup_v2_directory(cgroup: str) -> None:
    v1 = [m for m in enforce._mounts("cgroup") if os.path.isdir(m)]
    if not v1:
        pytest.skip("no cgroup v1 hierarchy mounted here")
    with pytest.raises(ValueError, match="not a cgroup v2 directory"):
        enforce.attach(v1[0], POLICY)
    proc = cli(v1[0], "--policy", "on")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1


def test_another_os_raises_enosys(cgroup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaext import _platform

    monkeypatch.setattr(_platform, "ENFORCE", False)  # the one per-OS fact enforce asks
    for call in (lambda: enforce.attach(cgroup, POLICY), lambda: enforce.detach(cgroup)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENOSYS and "Linux" in str(info.value)
    assert enforce.enforcements() == []


def test_detaching_leaves_no_pins_and_kaexts_directory_roots_alone(cgroup: str) -> None:
    root = os.path.join(_platform.BPF_FS, _platform.ENFORCE_PIN_DIR)
    e = enforce.attach(cgroup, "aws-nlb")
    name = f"cgroup-{os.stat(cgroup).st_ino}"
    assert e.cgroup_id == os.stat(cgroup).st_ino and sorted(os.listdir(os.path.join(root, name))) == ["map", "sock_ops"]
    st = os.stat(root)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
    assert enforce.detach(cgroup)
    assert name not in os.listdir(root)  # the directory stays (a lock waiter may hold it), its pins go
    assert _mine(cgroup) == []


def test_an_enforcement_is_an_immutable_value() -> None:
    """Like every kaext value: equal, hashable and printable by its fields, picklable, frozen."""
    import pickle

    from kaext._record import FrozenError

    policy = kaext.Policy.for_middlebox("aws-nlb")
    e = enforce.Enforcement("/sys/fs/cgroup/x", policy, False, True, 3, 1, 0, None)
    assert e == enforce.Enforcement("/sys/fs/cgroup/x", policy, False, True, 3, 1, 0, None)
    assert e != enforce.Enforcement("/sys/fs/cgroup/x", policy, False, True, 4, 1, 0, None)
    assert len({e, enforce.Enforcement("/sys/fs/cgroup/x", policy, False, True, 3, 1, 0, None)}) == 1
    assert pickle.loads(pickle.dumps(e)) == e
    assert "applied=3" in repr(e) and "force=True" in repr(e)
    with pytest.raises(FrozenError):
        e.applied = 9  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Issue 30: nested cgroups, the kernel's truth, concurrency, planted pins, the cgroup's id
# --------------------------------------------------------------------------------------


def _kaext_programs(path: str) -> dict[str, list[int]]:
    """Ids of kaext's programs the kernel has attached to the cgroup itself (BPF_PROG_QUERY), by kind."""
    from kaext import _backend

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found: dict[str, list[int]] = {}
        for kind, const in (("sock_ops", _backend.BPF_SOCK_OPS), ("setsockopt", _backend.BPF_SETSOCKOPT)):
            found[kind] = []
            for prog_id in _backend.bpf_prog_query(fd, const):
                prog = _backend.bpf_fd_by_id(False, prog_id)
                try:
                    if _backend.bpf_prog_info(prog)[2].startswith("kaext_"):
                        found[kind].append(prog_id)
                finally:
                    os.close(prog)
        return found
    finally:
        os.close(fd)


def test_nested_cgroups_get_the_nearest_policy_whole(cgroup: str) -> None:
    child = os.path.join(cgroup, "b")
    grandchild = os.path.join(child, "c")
    sibling = os.path.join(cgroup, "s")
    os.makedirs(grandchild)
    os.mkdir(sibling)
    enforce.attach(cgroup, "100s:10s:3")  # the parent: no user timeout
    enforce.attach(child, "7s:3s:4 user_timeout=19s")
    for where, want in (
        (child, (1, 7, 3, 4, 19000)),
        (grandchild, (1, 7, 3, 4, 19000)),
        (sibling, (1, 100, 10, 3, DEFAULTS[4])),
        (cgroup, (1, 100, 10, 3, DEFAULTS[4])),
    ):
        c = python_child(where)
        try:
            assert client_options(c) == want, where
        finally:
            c.close()
    (parent,) = _mine(cgroup)
    (mine,) = _mine(child)
    assert (parent.applied, mine.applied) == (4, 4)  # each end counted once, by the policy that applied
    for where, owner in ((child, child), (grandchild, child), (sibling, cgroup), (cgroup, cgroup)):
        e = enforce.which(where)
        assert e is not None and e.cgroup == owner, where
    proc = cli("--which", grandchild)
    assert proc.returncode == 0 and f"the policy of {child}: 7s:3s:4 user_timeout=19s" in proc.stdout
    enforce.detach(child)
    assert enforce.which(grandchild).cgroup == cgroup  # type: ignore[union-attr]


def test_an_ancestors_force_stays_out_of_a_nearer_policy(cgroup: str) -> None:
    child = os.path.join(cgroup, "b")
    os.mkdir(child)
    enforce.attach(cgroup, POLICY, force=True)
    enforce.attach(child, "on")  # no force: the program's own setsockopt after connecting wins
    c = python_child(child, mode="after")
    try:
        assert c.info["idle_read"] == 15
        assert client_options(c) == (1, 15, DEFAULTS[2], 2, DEFAULTS[4])
    finally:
        c.close()
    enforce.attach(child, "7s:3s:4", force=True)  # the nearer force holds its own values
    c = python_child(child, mode="after")
    try:
        assert c.info["idle_read"] == 7
        assert client_options(c) == (1, 7, 3, 4, DEFAULTS[4])
    finally:
        c.close()
    c = python_child(cgroup, mode="after")
    try:
        assert client_options(c) == WANT
    finally:
        c.close()


def test_a_child_enforced_before_its_parent_is_forced_keeps_its_policy(cgroup: str) -> None:
    child = os.path.join(cgroup, "b")
    os.mkdir(child)
    enforce.attach(child, "on")
    enforce.attach(cgroup, POLICY, force=True)
    c = python_child(child, mode="after")
    try:
        assert client_options(c) == (1, 15, DEFAULTS[2], 2, DEFAULTS[4])
    finally:
        c.close()


def test_force_on_odd_lengths_and_other_options(cgroup: str) -> None:
    import struct

    enforce.attach(cgroup, POLICY, force=True)
    code = (
        "import socket, struct, json\n"
        "l = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(l.getsockname())\n"
        "out = {}\n"
        "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, struct.pack('ii', 15, 77))\n"
        "out['long'] = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)\n"
        "try:\n    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, b'\\x01\\x00')\n"
        "except OSError as e:\n    out['short'] = e.errno\n"
        "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "out['nodelay'] = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)\n"
        "c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)\n"
        "out['rcvbuf'] = c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "u.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)\n"
        "out['udp'] = u.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_into(cgroup))
    out = json.loads(proc.stdout)
    with socket.socket() as plain:
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        rcvbuf = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with pytest.raises(OSError) as short:
            plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, b"\x01\x00")
    assert out == {"long": 175, "short": short.value.errno, "nodelay": 1, "rcvbuf": rcvbuf, "udp": 0}
    assert struct.calcsize("ii") == 8


def test_the_setsockopt_program_passes_a_strict_alignment_verifier(cgroup: str) -> None:
    # BPF_F_STRICT_ALIGNMENT: the checks of a kernel without efficient unaligned access (a 6.1
    # user-mode-linux kernel refused a 4-byte access to optval as "misaligned packet access")
    from kaext import _backend

    map_fd = _backend.bpf_map_create()
    try:
        for kind in (_backend.BPF_SOCK_OPS, _backend.BPF_SETSOCKOPT):
            os.close(_backend.bpf_load(kind, map_fd, True))
    finally:
        os.close(map_fd)


def _small_map() -> int:
    """A BPF array map whose values are 4 bytes: kaext's programs read past them (the verifier refuses)."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("5I", 2, 4, 4, 2, 0), 128)  # ARRAY, key 4, value 4, 2 entries
    nr = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)
    if nr is None:
        pytest.skip("the bpf system call number of this machine is not known here")
    fd = libc.syscall(nr, 0, attr, 128)  # BPF_MAP_CREATE
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return int(fd)


def test_a_verifier_refusal_names_the_verifiers_reason_not_root(cgroup: str) -> None:
    from kaext import _backend

    fd = _small_map()
    try:
        with pytest.raises(OSError) as raw:
            _backend.bpf_load(_backend.BPF_SOCK_OPS, fd)
        log = str(raw.value.filename)
        assert "\0" not in log and len(log) < 16384 and "value_size=4" in log  # the log, cut at its NUL
        with pytest.raises(OSError) as info:
            enforce._load(_backend.BPF_SOCK_OPS, fd)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EACCES and not isinstance(info.value, PermissionError)
    text = str(info.value)
    assert "root" not in text and "CAP_BPF" not in text and "verifier" in text
    assert '"' in text and "outside of the allowed memory range" in text  # its last words, quoted


def test_a_program_detached_behind_kaexts_back_is_listed_as_such_and_attach_repairs_it(cgroup: str) -> None:
    from kaext import _backend

    enforce.attach(cgroup, POLICY)
    (prog_id,) = _kaext_programs(cgroup)["sock_ops"]
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    prog = _backend.bpf_fd_by_id(False, prog_id)
    try:
        _backend.bpf_detach(fd, prog, _backend.BPF_SOCK_OPS)  # as bpftool cgroup detach does
    finally:
        os.close(prog)
        os.close(fd)
    (mine,) = _mine(cgroup)
    assert mine.state == "not attached" and mine.repair is not None and cgroup in mine.repair
    listed = cli("--list")
    assert listed.returncode == 1 and f"{cgroup}: {POLICY}" in listed.stdout and "NOT ATTACHED" in listed.stdout
    assert cli(cgroup, "--policy", POLICY).returncode == 0  # re-running attach repairs it
    assert [e.state for e in _mine(cgroup)] == ["enforced"] and len(_kaext_programs(cgroup)["sock_ops"]) == 1
    c = python_child(cgroup)
    try:
        assert client_options(c) == WANT
    finally:
        c.close()


def test_a_force_program_detached_behind_kaexts_back_is_listed_and_repaired(cgroup: str) -> None:
    from kaext import _backend

    enforce.attach(cgroup, POLICY, force=True)
    (prog_id,) = _kaext_programs(cgroup)["setsockopt"]
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    prog = _backend.bpf_fd_by_id(False, prog_id)
    try:
        _backend.bpf_detach(fd, prog, _backend.BPF_SETSOCKOPT)
    finally:
        os.close(prog)
        os.close(fd)
    (mine,) = _mine(cgroup)
    assert (mine.state, mine.force) == ("not attached", True) and "--force" in (mine.repair or "")
    assert enforce.attach(cgroup, POLICY, force=True).state == "enforced"
    assert [len(ids) for ids in _kaext_programs(cgroup).values()] == [1, 1]
    child = python_child(cgroup, mode="after")
    try:
        assert child.info["idle_read"] == 175
    finally:
        child.close()


def test_a_program_whose_pins_are_gone_is_listed_and_removed(cgroup: str) -> None:
    enforce.attach(cgroup, POLICY, force=True)
    pins = os.path.join(_platform.BPF_FS, _platform.ENFORCE_PIN_DIR, f"cgroup-{os.stat(cgroup).st_ino}")
    shutil.rmtree(pins)  # rm -r of the pins: the programs stay attached
    (mine,) = _mine(cgroup)
    assert (mine.state, str(mine.policy), mine.force) == ("not pinned", POLICY, True)
    assert cli(cgroup, "--remove").returncode == 0
    assert _kaext_programs(cgroup) == {"sock_ops": [], "setsockopt": []} and _mine(cgroup) == []
    c = python_child(cgroup)
    try:
        assert client_options(c) == DEFAULTS
    finally:
        c.close()


def test_pins_of_a_cgroup_that_is_gone_are_listed_and_pruned(cgroup: str) -> None:
    gone = os.path.join(cgroup, "gone")
    os.mkdir(gone)
    cgroup_id = enforce.attach(gone, "on").cgroup_id
    os.rmdir(gone)  # the kernel detaches the programs with the cgroup; the pins stay
    (e,) = [e for e in enforce.enforcements() if e.cgroup_id == cgroup_id]
    assert (e.state, e.repair) == ("cgroup gone", "kaext-enforce --prune")
    proc = cli("--prune")
    assert proc.returncode == 0 and f"cgroup id {cgroup_id}" in proc.stdout
    assert [e for e in enforce.enforcements() if e.cgroup_id == cgroup_id] == []
    pins = os.path.join(_platform.BPF_FS, _platform.ENFORCE_PIN_DIR, f"cgroup-{cgroup_id}")
    assert not os.path.exists(pins)


def test_concurrent_attaches_and_removes_of_one_cgroup_are_serialised(cgroup: str) -> None:
    code = "import sys, kaext.enforce as e; e.attach(sys.argv[1], sys.argv[2])"
    for _round in range(3):
        procs = [
            subprocess.Popen([sys.executable, "-c", code, cgroup, f"{10 + i}s:3s:4"], env=ENV, stderr=subprocess.PIPE)
            for i in range(6)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        programs = _kaext_programs(cgroup)
        assert len(programs["sock_ops"]) == 1 and programs["setsockopt"] == []
        (mine,) = _mine(cgroup)
        assert mine.state == "enforced"
        removes = [
            subprocess.Popen([sys.executable, "-m", "kaext.enforce", cgroup, "--remove"], env=ENV) for _ in range(3)
        ]
        codes = sorted(p.wait(timeout=120) for p in removes)
        assert codes == [0, 1, 1]  # one removed it; the others found nothing left to remove
        assert _kaext_programs(cgroup) == {"sock_ops": [], "setsockopt": []} and _mine(cgroup) == []


def _in_private_mounts(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a mount namespace of its own (private propagation): its mounts are its own."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)") if not REQUIRED else pytest.fail("needs unshare")
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_a_directory_planted_by_another_user_is_named_not_used(cgroup: str) -> None:
    # a fresh BPF file system of this namespace alone, world-writable as kaext used to mount it,
    # where user nobody makes kaext's directory first (or a link in its place)
    for plant in ("mkdir /sys/fs/bpf/kaext", "ln -s /tmp /sys/fs/bpf/kaext", "mkdir -m 0777 /sys/fs/bpf/kaext"):
        owner = "setpriv --reuid=65534 --regid=65534 --clear-groups" if "0777" not in plant else "command"
        script = (
            "umount -l /sys/fs/bpf 2>/dev/null; mount -t bpf -o mode=1777 bpf /sys/fs/bpf && "
            f"{owner} {plant} && "
            f'{sys.executable} -m kaext.enforce "$1" --policy on; echo "attach=$?"; '
            f'{sys.executable} -m kaext.enforce --list; echo "list=$?"; '
            f'{sys.executable} -m kaext.enforce "$1" --remove; echo "remove=$?"'
        )
        proc = _in_private_mounts(script, cgroup)
        assert "attach=2" in proc.stdout and "list=2" in proc.stdout and "remove=2" in proc.stdout, (
            plant,
            proc.stdout,
            proc.stderr,
        )
        lines = proc.stderr.splitlines()
        assert len(lines) == 3 and all("/sys/fs/bpf/kaext" in line for line in lines), (plant, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert _kaext_programs(cgroup) == {"sock_ops": [], "setsockopt": []}  # nothing attached meanwhile


def test_the_bpf_file_system_kaext_mounts_is_roots_alone(cgroup: str) -> None:
    script = (
        "umount -l /sys/fs/bpf 2>/dev/null; "
        f'{sys.executable} -m kaext.enforce "$1" --policy on >/dev/null && stat -c "%a %u" /sys/fs/bpf '
        "/sys/fs/bpf/kaext && grep ' /sys/fs/bpf ' /proc/self/mountinfo"
    )
    proc = _in_private_mounts(script, cgroup)
    assert proc.returncode == 0, proc.stderr
    (fs_mode, fs_owner), (dir_mode, dir_owner) = (line.split() for line in proc.stdout.splitlines()[:2])
    assert (int(fs_mode, 8) & 0o077, fs_owner) == (0, "0"), proc.stdout  # kaext mounted it: no one else's to write
    assert (dir_mode, dir_owner) == ("700", "0"), proc.stdout
    assert " - bpf " in proc.stdout.splitlines()[2]
    # its pins went with that namespace; the programs are still attached, now "not pinned": removed here
    assert enforce.detach(cgroup) is True
    assert _kaext_programs(cgroup) == {"sock_ops": [], "setsockopt": []}


def test_the_cgroup_tree_mounted_elsewhere_names_the_same_enforcement(cgroup: str, tmp_path: Path) -> None:
    mount = os.path.realpath(enforce._mounts("cgroup2")[0])
    rel = os.path.relpath(cgroup, mount)
    elsewhere = tmp_path / "host-cgroup"
    elsewhere.mkdir()
    script = (
        f'mount --bind "{mount}" "$1" && '
        f'{sys.executable} -m kaext.enforce "$1/$2" --policy "{POLICY}" && {sys.executable} -m kaext.enforce --list'
    )
    proc = _in_private_mounts(script, str(elsewhere), rel)
    assert proc.returncode in (0, 1), proc.stderr
    assert f"{elsewhere}/{rel}: {POLICY}" in proc.stdout or f"{cgroup}: {POLICY}" in proc.stdout
    (mine,) = _mine(cgroup)  # seen from here, under this mount's path
    assert (mine.state, str(mine.policy), mine.cgroup_id) == ("enforced", POLICY, os.stat(cgroup).st_ino)
    c = python_child(cgroup)
    try:
        assert client_options(c) == WANT
    finally:
        c.close()
    assert cli(cgroup, "--remove").returncode == 0  # removed from here, what was attached there
    assert _kaext_programs(cgroup) == {"sock_ops": [], "setsockopt": []} and _mine(cgroup) == []


def test_not_root_list_is_one_line_and_exit_2(cgroup: str) -> None:
    code = (
        "import contextlib, io, os, sys\n"
        "import kaext.enforce as e, kaext._middleboxes\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    e.main(['--list'])  # as root first: every module it needs is loaded (ours may be root's to read)\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
        "sys.exit(e.main(['--list']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "root" in proc.stderr and "Traceback" not in proc.stderr


def test_reattaching_a_broken_enforcement_leaves_no_connection_without_the_policy(cgroup: str) -> None:
    # a child connecting in a loop while the enforcement is broken (pins removed) and repaired, 5 times:
    # the new programs are attached before the old ones are detached, so every connection has the policy
    loop = (
        "import socket, sys\n"
        "l = socket.create_server(('127.0.0.1', 0)); bad = n = 0\n"
        "while sys.stdin.readline().strip() != 'stop':\n"
        "    for _ in range(20):\n"
        "        c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n"
        "        bad += c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) != 175; n += 1\n"
        "        c.close(); s.close()\n"
        "    print(n, bad, flush=True)\n"
    )
    enforce.attach(cgroup, POLICY)
    proc = subprocess.Popen(
        [sys.executable, "-c", loop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_into(cgroup),
        env=ENV,
    )
    assert proc.stdin is not None and proc.stdout is not None
    pins = os.path.join(_platform.BPF_FS, _platform.ENFORCE_PIN_DIR, f"cgroup-{os.stat(cgroup).st_ino}")
    line = ""
    try:
        for _ in range(5):
            shutil.rmtree(pins)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            enforce.attach(cgroup, POLICY)
            line = proc.stdout.readline()
        proc.stdin.write("stop\n")
        proc.stdin.close()
    finally:
        proc.kill()
        proc.wait(30)
    n, bad = (int(x) for x in line.split())
    assert n == 100 and bad == 0, (n, bad)
    assert len(_kaext_programs(cgroup)["sock_ops"]) == 1


# --------------------------------------------------------------------------------------
# The map layout and helper ids: C, the extension, Python state them alike
# --------------------------------------------------------------------------------------

FACTS_C = r"""
#include <stdio.h>
#include "kaext_bpf.h"
int main(void)
{
    printf("{\"KEEPALIVE\": %d, \"IDLE\": %d, \"INTERVAL\": %d, \"COUNT\": %d, \"USER_TIMEOUT\": %d, "
           "\"CONNECT_TIMEOUT\": %d, \"NOPTIONS\": %d, \"READ_KEEPALIVE\": %d, "
           "\"RESPECT_EXISTING\": %u, \"FORCE\": %u, \"CLAIM\": %u, "
           "\"CLAIM_AT\": %d, \"VALUE_SIZE\": %d, \"MAP_ENTRIES\": %d, \"FUNC_SETSOCKOPT\": %d, "
           "\"FUNC_GETSOCKOPT\": %d}\n",
           KAEXT_BPF_KEEPALIVE, KAEXT_BPF_IDLE, KAEXT_BPF_INTERVAL, KAEXT_BPF_COUNT, KAEXT_BPF_USER_TIMEOUT,
           KAEXT_BPF_CONNECT_TIMEOUT, KAEXT_BPF_NOPTIONS, KAEXT_BPF_READ_KEEPALIVE,
           KAEXT_BPF_RESPECT_EXISTING, KAEXT_BPF_FORCE,
           KAEXT_BPF_CLAIM, KAEXT_BPF_CLAIM_AT, KAEXT_BPF_VALUE_SIZE, KAEXT_BPF_MAP_ENTRIES,
           KAEXT_BPF_FUNC_setsockopt, KAEXT_BPF_FUNC_getsockopt);
    return sizeof(kaext_bpf_config) > KAEXT_BPF_VALUE_SIZE || KAEXT_BPF_CLAIM_AT + 4 > 16 ||
           memcmp(&(unsigned){KAEXT_BPF_CLAIM}, KAEXT_BPF_CLAIM_BYTES, 4) == 0;
}
"""


def test_the_map_layout_and_helper_ids_are_one_in_c_the_extension_and_python(tmp_path: Path) -> None:
    from kaext import _pure_bpf

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc") if not REQUIRED else pytest.fail("needs gcc")
    (tmp_path / "facts.c").write_text(FACTS_C)
    subprocess.run(
        [gcc, "-Wall", "-I", str(ROOT / "ext"), "-o", str(tmp_path / "facts"), str(tmp_path / "facts.c")], check=True
    )
    proc = subprocess.run([str(tmp_path / "facts")], capture_output=True, text=True)
    assert json.loads(proc.stdout) == _pure_bpf.BPF_FACTS
    assert proc.returncode == 0  # the policy fits a value; the claim bytes sit inside the kernel's 16
    # the option order is the one kaext names them in
    order = sorted(
        _platform.ENFORCE_OPTIONS,
        key=lambda o: _pure_bpf.BPF_FACTS[
            {
                "SO_KEEPALIVE": "KEEPALIVE",
                "TCP_KEEPIDLE": "IDLE",
                "TCP_KEEPINTVL": "INTERVAL",
                "TCP_KEEPCNT": "COUNT",
                "TCP_USER_TIMEOUT": "USER_TIMEOUT",
                "TCP_SYNCNT": "CONNECT_TIMEOUT",
            }[o]
        ],
    )
    assert tuple(order) == _platform.ENFORCE_OPTIONS
    try:
        from kaext import _kaext
    except ImportError:
        return
    assert _kaext.BPF_FACTS == _pure_bpf.BPF_FACTS


def test_list_is_what_the_list_flag_shows(cgroup: str) -> None:
    """``kaext.enforce.list()``: the enforcements ``--list`` prints, read from the kernel."""
    enforce.attach(cgroup, POLICY)
    try:
        listed = [e for e in enforce.list() if e.cgroup == cgroup]
        assert [(e.state, str(e.policy)) for e in listed] == [("enforced", POLICY)]
        assert listed == [e for e in enforce.enforcements() if e.cgroup == cgroup]
        assert cgroup in cli("--list").stdout
    finally:
        enforce.detach(cgroup)
    assert [e for e in enforce.list() if e.cgroup == cgroup] == []
