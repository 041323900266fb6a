"""python -m kaext.run: Python children (and theirs), the user's sitecustomize, exit status, bad
arguments, and on Linux native code through the preload library (uvloop, curl, a C program).

Options are read back from the child's very socket through pidfd_getfd (procsock.py), or
printed by the child itself with plain getsockopt.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import servers
from procsock import fresh_options, need_proc, options_of

import kaext
from kaext import _platform, run

pytestmark = pytest.mark.one_implementation

SPEC = "7s:3s:4 user_timeout=19s"
WANT = [1, 7, 3, 4, 19_000]
RUN = [sys.executable, "-m", "kaext.run"]

# the child prints its own socket's options with plain getsockopt
_READ = """
import socket
def options(s):
    t = socket.IPPROTO_TCP
    opts = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT)
    return [s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] + [s.getsockopt(t, o) for o in opts]
"""


def kaext_run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 60)
    return subprocess.run([*RUN, *args], capture_output=True, text=True, **kw)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def need_preload() -> Path:
    if run.PRELOAD_LIBRARY is not None:
        return run.PRELOAD_LIBRARY
    if _platform.FAMILY == "linux" and kaext.IMPLEMENTATION == "c":
        pytest.fail("kaext is built with its extension on Linux but libkaext_preload.so is missing")
    pytest.skip("no preload library here (not Linux, or a pure-Python install)")


# -- Python children ------------------------------------------------------------------------


@need_proc
def test_python_child_and_grandchild_get_the_policy(listener: socket.socket) -> None:
    code = (
        _READ
        + f"""
import kaext, subprocess, sys
s = socket.create_connection({listener.getsockname()!r})
print(kaext.injected(), options(s))
if len(sys.argv) < 2:
    subprocess.run([sys.executable, __file__, "grandchild"], check=True)
"""
    )
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"kaext_run_child_{os.getpid()}.py"
    script.write_text(code)
    try:
        done = kaext_run("--policy", SPEC, "--", sys.executable, str(script))
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"{SPEC} {WANT}"] * 2
    assert done.stderr == ""


def test_user_sitecustomize_is_kept(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import os\nMARK = 'user ' + os.environ['KAEXT_RUN_POLICY']\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = """
        import sys, sitecustomize, kaext
        print(sitecustomize.MARK)
        print(kaext.injected())
        print(any(p.endswith("_run_site") for p in sys.path))
    """
    done = kaext_run("--policy", "aws-nlb", "--", *python(code), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "user aws-nlb",
        str(kaext.Policy.for_middlebox("aws-nlb")),
        "False",  # kaext's own directory is off sys.path again
    ]


def test_user_sitecustomize_errors_are_reported_as_without_kaext(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("raise RuntimeError('from the user')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    plain = subprocess.run(python("print('ran')"), env=env, capture_output=True, text=True, timeout=60)
    under = kaext_run("--policy", SPEC, "--", *python("print('ran')"), env=env)
    assert plain.stdout == under.stdout == "ran\n"
    assert "from the user" in plain.stderr and "from the user" in under.stderr


def test_exit_status_is_commands() -> None:
    for status in (0, 1, 3, 77):
        done = kaext_run("--policy", SPEC, "--", *python(f"raise SystemExit({status})"))
        assert done.returncode == status
    if _platform.FAMILY != "windows":
        killed = kaext_run("--policy", SPEC, "--", *python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"))
        assert killed.returncode == -15  # exec: the process itself died of the signal
    assert kaext_run("--policy", SPEC, "--", "kaext-no-such-command").returncode == 127


def test_console_script() -> None:
    script = shutil.which("kaext-run", path=os.path.dirname(sys.executable)) or shutil.which("kaext-run")
    if script is None:
        pytest.skip("kaext-run is not installed on PATH")
    done = subprocess.run(
        [script, "--policy", SPEC, "--", *python("import kaext; print(kaext.injected())")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, SPEC + "\n")


@pytest.mark.parametrize(
    "args",
    [
        ["--policy", "bogus", "--", "true"],
        ["--policy", "1:2:999", "--", "true"],
        ["--policy", SPEC],
        ["--policy", SPEC, "--"],
        ["--", "true"],
        ["--nonsense", "--policy", SPEC, "--", "true"],
    ],
)
def test_bad_arguments_one_line_exit_2(args: list[str]) -> None:
    done = kaext_run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_help_says_what_is_covered_here() -> None:
    done = kaext_run("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    if run.PRELOAD_LIBRARY is not None:
        assert "preload library libkaext_preload.so" in text and "uvloop" in text
    else:
        assert "Python only" in text


def test_environment_keeps_existing_ld_preload_and_pythonpath() -> None:
    env = run.environment(SPEC, base={"PYTHONPATH": "/a", "LD_PRELOAD": "libfoo.so"})
    assert env["PYTHONPATH"].split(os.pathsep)[1:] == ["/a"]
    assert env["KAEXT_RUN_POLICY"] == SPEC
    if run.PRELOAD_LIBRARY is not None:
        assert env["LD_PRELOAD"].split()[0] == "libfoo.so"
        assert env["LD_PRELOAD"].split()[1] == str(run.PRELOAD_LIBRARY)


@pytest.mark.parametrize("variable", ["KAEXT_WHEEL", "KAEXT_PURE_WHEEL"])
def test_wheels_ship_the_site_directory_and_on_linux_the_preload_library(variable: str) -> None:
    import zipfile

    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"${variable} not set (the CI packaging step sets it to the file it built)")
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
    assert {"kaext/run.py", "kaext/_run_site/sitecustomize.py"} <= names
    preload = "kaext/libkaext_preload.so" in names
    assert preload == ("linux" in Path(path).name), sorted(names)


# -- native code (Linux, preload library) ---------------------------------------------------


def _hold_and_read(listener: socket.socket, proc: subprocess.Popen[Any], reply: bytes = b"") -> tuple[Any, ...]:
    """Accept the child's connection, wait for its first bytes (its connect() has returned by then,
    the policy is on), read the options of its socket in the child, then let it finish."""
    listener.settimeout(30)
    try:
        conn, peer = listener.accept()
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"the child never connected: {proc.communicate()}") from None
    with conn:
        conn.settimeout(30)
        assert conn.recv(4096)
        got = options_of(peer, pid=proc.pid)
        conn.sendall(reply)
    return got


@need_proc
def test_uvloop_under_kaext_run(listener: socket.socket) -> None:
    need_preload()
    servers.library("uvloop")
    code = f"""
        import asyncio, uvloop
        async def main():
            reader, writer = await asyncio.open_connection(*{listener.getsockname()!r})
            writer.write(b"hi")
            await reader.read()
            writer.close()
        uvloop.run(main())
        import kaext; print(kaext.injected())
    """
    proc = subprocess.Popen([*RUN, "--policy", SPEC, "--", *python(code)], stdout=subprocess.PIPE, text=True)
    got = _hold_and_read(listener, proc)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert list(got) == WANT
    assert out.strip() == SPEC  # python-level injection too, but uvloop's socket is libuv's


@need_proc
def test_uvloop_without_kaext_run_is_untouched(listener: socket.socket) -> None:
    servers.library("uvloop")
    code = f"""
        import asyncio, uvloop, kaext
        kaext.inject({SPEC!r})  # inject() cannot reach libuv: that is kaext.run's job
        async def main():
            reader, writer = await asyncio.open_connection(*{listener.getsockname()!r})
            writer.write(b"hi")
            await reader.read()
        uvloop.run(main())
    """
    proc = subprocess.Popen(python(code))
    got = _hold_and_read(listener, proc)
    assert proc.wait(30) == 0
    assert got == fresh_options()


@need_proc
def test_a_python_without_kaext_gets_the_policy_from_the_preload_library(listener: socket.socket) -> None:
    """An interpreter that cannot import kaext (here the base Python under this venv): the preload
    library still applies the policy to its connection, and the one line on stderr says so, in
    the tool's name ("kaext run:"), not that the policy was not injected."""
    need_preload()
    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-c", "import kaext"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip(f"{base} can import kaext: no Python without kaext here")
    code = _READ + f"s = socket.create_connection({listener.getsockname()!r})\ns.sendall(b'x')\ns.recv(1)\n"
    proc = subprocess.Popen([*RUN, "--policy", SPEC, "--", base, "-c", code], stderr=subprocess.PIPE, text=True)
    got = _hold_and_read(listener, proc, b"y")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert list(got) == WANT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kaext run: {base} cannot import kaext ("), err
    assert lines[0].endswith("the preload library applies the policy to its connections instead"), err


@need_proc
def test_curl_under_kaext_run(listener: socket.socket) -> None:
    need_preload()
    curl = shutil.which("curl")
    if curl is None:
        servers.missing("curl is not installed (Debian package curl)")
    host, port = listener.getsockname()
    proc = subprocess.Popen(
        [*RUN, "--policy", SPEC, "--", curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{host}:{port}/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    got = _hold_and_read(listener, proc, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "200")
    assert list(got) == WANT


@need_proc
@pytest.mark.parametrize("force", [False, True], ids=["own-values-after-connect", "force"])
def test_redis_cli_under_kaext_run(listener: socket.socket, force: bool) -> None:
    """redis-cli sets its own keepalive after connecting (redis src/redis-cli.c cliConnect:
    anetKeepAlive(REDIS_CLI_KEEPALIVE_INTERVAL = 15); src/anet.c: idle 15 s, interval 15 / 3 s,
    count 3), so without --force those win over the policy's three and the policy's user timeout
    stays; with --force the policy holds.  curl, which sets its own before connecting, gets the
    policy without --force (test_curl_under_kaext_run): docs/run.md says both."""
    need_preload()
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        servers.missing("redis-cli is not installed (Debian package redis-tools)")
    host, port = listener.getsockname()
    proc = subprocess.Popen(
        [*RUN, "--policy", SPEC, *(["--force"] if force else []), "--", redis_cli, "-h", host, "-p", str(port), "PING"],
        stdout=subprocess.PIPE,
        text=True,
    )
    got = _hold_and_read(listener, proc, b"+PONG\r\n")
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out.strip()) == (0, "PONG")
    assert list(got) == (WANT if force else [1, 15, 5, 3, 19_000])


_C_PROGRAM = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
/* connect(port) to 127.0.0.1; print rc, errno, then SO_KEEPALIVE of a UDP socket
 * connected the same way; then wait for the peer to close */
int main(int argc, char **argv)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_DGRAM, 0), rc, err, ka = -1;
    socklen_t len = sizeof ka;
    char buf[16];
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    errno = 0;
    rc = connect(s, (struct sockaddr *)&a, sizeof a);
    err = rc ? errno : 0;
    connect(u, (struct sockaddr *)&a, sizeof a);
    getsockopt(u, SOL_SOCKET, SO_KEEPALIVE, &ka, &len);
    printf("%d %d %d\n", rc, err, ka);
    fflush(stdout);
    if (rc == 0 && write(s, "x", 1) == 1)
        while (read(s, buf, sizeof buf) > 0) {}
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        servers.missing("no C compiler (Debian package gcc)")
    d = tmp_path_factory.mktemp("cprog")
    (d / "prog.c").write_text(_C_PROGRAM)
    subprocess.run([cc, "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    return d / "prog"


@need_proc
def test_c_program_gets_the_policy_udp_untouched(listener: socket.socket, c_program: Path) -> None:
    need_preload()
    port = str(listener.getsockname()[1])
    proc = subprocess.Popen([*RUN, "--policy", SPEC, "--", str(c_program), port], stdout=subprocess.PIPE, text=True)
    got = _hold_and_read(listener, proc)
    out, _ = proc.communicate(timeout=30)
    assert out.split() == ["0", "0", "0"]  # connected; UDP socket's SO_KEEPALIVE still 0
    assert list(got) == WANT


@need_proc
def test_c_program_connect_error_and_errno_unchanged(c_program: Path) -> None:
    need_preload()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])  # closed once we leave: nothing listens
    bare = subprocess.run([str(c_program), port], capture_output=True, text=True, timeout=30)
    under = kaext_run("--policy", SPEC, "--", str(c_program), port)
    assert under.stdout == bare.stdout
    assert bare.stdout.split()[:2] == ["-1", str(errno.ECONNREFUSED)]


@need_proc
def test_accepted_under_kaext_run_with_uvloop_server() -> None:
    need_preload()
    servers.library("uvloop")
    code = """
        import asyncio, sys, uvloop
        async def main():
            done = asyncio.Event()
            async def handle(reader, writer):
                writer.write(b"x")  # accept() has returned
                await reader.read()
                writer.close()
                done.set()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            print(server.sockets[0].getsockname()[1], flush=True)
            await done.wait()
            server.close()
        uvloop.run(main())
    """
    proc = subprocess.Popen(
        [*RUN, "--policy", SPEC, "--accepted", "--", *python(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as c:
            assert c.recv(1) == b"x"
            got = options_of(("127.0.0.1", port), pid=proc.pid, peer=c.getsockname())
            mine = options_of(c.getsockname())
    finally:
        proc.wait(30)
    assert list(got) == WANT
    assert mine == fresh_options()  # this process was not touched


@need_proc
def test_psql_under_kaext_run() -> None:
    """libpq in a program that is not Python: the issue's own example."""
    need_preload()
    psql = shutil.which("psql")
    if psql is None:
        servers.missing("psql is not installed (Debian package postgresql)")
    with servers.postgres_server() as port:
        proc = subprocess.Popen(
            [*RUN, "--policy", SPEC, "--", psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-At"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write("select 41 + 1;\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "42\n"  # connected and answered: connect() returned long ago
            got = options_of(None, pid=proc.pid, peer=("127.0.0.1", port))
        finally:
            proc.stdin.close()
            proc.wait(30)
    assert proc.returncode == 0
    assert list(got) == WANT


@need_proc
@pytest.mark.parametrize(
    "plan",
    [
        "",
        "1,2",
        "15,7,3,4,19000,1,0",  # a field short
        "15,7,3,4,19000,1,0,0,0,0",  # one too many
        "31,7,3,4,19000,1,0,0",  # the connect timeout's bit without its field
        "15,7,3,4,19000,1,0,9",
        "15,7,3,4,-5,1,0,0",
        "99,7,3,4,19000,1,0,0",
    ],
)
def test_preload_with_a_malformed_plan_passes_through(listener: socket.socket, c_program: Path, plan: str) -> None:
    library = need_preload()
    env = dict(os.environ, LD_PRELOAD=str(library), KAEXT_PRELOAD_PLAN=plan)
    proc = subprocess.Popen([str(c_program), str(listener.getsockname()[1])], stdout=subprocess.PIPE, env=env)
    got = _hold_and_read(listener, proc)
    assert proc.wait(30) == 0
    assert got == fresh_options()


@need_proc
def test_grpc_under_kaext_run(listener: socket.socket) -> None:
    """grpc's C core makes its own sockets: only the preload library reaches them."""
    need_preload()
    servers.library("grpc")
    code = f"""
        import grpc
        channel = grpc.insecure_channel("127.0.0.1:{listener.getsockname()[1]}")
        try:
            grpc.channel_ready_future(channel).result(timeout=30)  # the peer is no gRPC server
        except grpc.FutureTimeoutError:
            pass
    """
    proc = subprocess.Popen([*RUN, "--policy", SPEC, "--", *python(code)])
    try:
        got = _hold_and_read(listener, proc)  # grpc sends the HTTP/2 preface first
    finally:
        proc.kill()
        proc.wait(30)
    assert list(got) == WANT


# -- the preload library: EINTR, what is TCP, --force ----------------------------------------

_C_CASES = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void on_alarm(int sig) { (void)sig; }

static int get(int s, int level, int opt)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(s, level, opt, &v, &len) != 0)
        return -1;
    return v;
}

/* SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT */
static void print_options(int s)
{
    printf("%d %d %d %d %d\n", get(s, SOL_SOCKET, SO_KEEPALIVE), get(s, IPPROTO_TCP, TCP_KEEPIDLE),
           get(s, IPPROTO_TCP, TCP_KEEPINTVL), get(s, IPPROTO_TCP, TCP_KEEPCNT),
           get(s, IPPROTO_TCP, TCP_USER_TIMEOUT));
    fflush(stdout);
}

static int set(int s, int level, int opt, int v) { return setsockopt(s, level, opt, &v, sizeof v); }

int main(int argc, char **argv)
{
    struct sockaddr_in a;
    int s;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)(argc > 2 ? atoi(argv[2]) : 9));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (strcmp(argv[1], "eintr") == 0) {
        /* a blocking connect to a listener whose accept queue is full, interrupted by
         * SIGALRM (no SA_RESTART): EINTR; the kernel goes on with the handshake */
        struct sigaction sa;
        struct itimerval t;
        struct pollfd p;
        int rc, err;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sigaction(SIGALRM, &sa, NULL);
        memset(&t, 0, sizeof t);
        t.it_value.tv_usec = 300000;
        setitimer(ITIMER_REAL, &t, NULL);
        s = socket(AF_INET, SOCK_STREAM, 0);
        rc = connect(s, (struct sockaddr *)&a, sizeof a);
        err = errno;
        printf("%d %s\n", rc, rc == 0 ? "connected" : strerror(err));
        fflush(stdout);
        p.fd = s;
        p.events = POLLOUT;
        if (poll(&p, 1, 30000) != 1 || get(s, SOL_SOCKET, SO_ERROR) != 0)
            return 3;
        print_options(s);
        return 0;
    }
    if (strcmp(argv[1], "raw") == 0) {
        /* SOCK_RAW with IPPROTO_TCP: its protocol is TCP, it is no TCP connection */
        s = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
        if (s < 0) {
            printf("socket %s\n", strerror(errno));
            return 0;
        }
        int rc = connect(s, (struct sockaddr *)&a, sizeof a);
        printf("%d %d\n", rc, get(s, SOL_SOCKET, SO_KEEPALIVE));
        return 0;
    }
    if (strcmp(argv[1], "own") == 0) {
        /* the program sets its own keepalive after connecting, as hiredis does; then
         * TCP_NODELAY (no knob), then SO_KEEPALIVE on a UDP socket */
        int u = socket(AF_INET, SOCK_DGRAM, 0), rcs[6];
        s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
            return 3;
        rcs[0] = set(s, SOL_SOCKET, SO_KEEPALIVE, atoi(argv[3]));
        rcs[1] = set(s, IPPROTO_TCP, TCP_KEEPIDLE, 15);
        rcs[2] = set(s, IPPROTO_TCP, TCP_KEEPINTVL, 5);
        rcs[3] = set(s, IPPROTO_TCP, TCP_KEEPCNT, 3);
        rcs[4] = set(s, IPPROTO_TCP, TCP_USER_TIMEOUT, 5000);
        rcs[5] = set(s, IPPROTO_TCP, TCP_NODELAY, 1);
        printf("%d %d %d %d %d %d\n", rcs[0], rcs[1], rcs[2], rcs[3], rcs[4], rcs[5]);
        print_options(s);
        rcs[0] = set(u, SOL_SOCKET, SO_KEEPALIVE, 1);
        printf("%d %d %d\n", rcs[0], get(u, SOL_SOCKET, SO_KEEPALIVE), get(s, IPPROTO_TCP, TCP_NODELAY));
        fflush(stdout);
        return 0;
    }
    return 2;
}
"""


@pytest.fixture(scope="module")
def c_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        servers.missing("no C compiler (Debian package gcc)")
    d = tmp_path_factory.mktemp("ccases")
    (d / "cases.c").write_text(_C_CASES)
    subprocess.run([cc, "-Wall", "-o", str(d / "cases"), str(d / "cases.c")], check=True)
    return d / "cases"


def _preloaded(spec: str, *, force: bool = False) -> dict[str, str]:
    return run.environment(spec, force=force)


def _accept_from(listener: socket.socket, proc: subprocess.Popen[str], seconds: float = 30) -> socket.socket:
    """The connection ``proc`` makes to ``listener``.  It may reach the accept queue after the
    program has exited (a handshake segment retransmitted), so the wait is the same either
    way; a failure names the program's exit status, its output and what the kernel's TCP
    table holds for the port (``ss``)."""
    listener.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return listener.accept()[0]
        except TimeoutError:
            pass
    port = listener.getsockname()[1]
    ss = shutil.which("ss")  # iproute2
    query = [ss, "-tanoi", f"( sport = :{port} or dport = :{port} )"] if ss else ["true"]
    table = subprocess.run(query, capture_output=True, text=True, check=False).stdout
    status = proc.poll()
    out = proc.stdout.read() if proc.stdout and status is not None else ""
    if status is None:
        proc.kill()
    pytest.fail(f"no connection within {seconds} s; the program: exit {status}, output {out!r}; ss:\n{table}")


@need_proc
def test_preload_applies_the_policy_to_a_connect_that_returned_eintr(c_cases: Path) -> None:
    """connect(2): a blocking connect interrupted by a signal goes on in the kernel; when the
    handshake completes later, the socket has the policy."""
    need_preload()
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):  # fill the accept queue: further SYNs are dropped
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", port))
                fillers.append(f)
            time.sleep(0.2)
            proc = subprocess.Popen(
                [str(c_cases), "eintr", str(port)], stdout=subprocess.PIPE, text=True, env=_preloaded(SPEC)
            )
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()
            assert first == f"-1 {os.strerror(errno.EINTR)}", first  # the case under test
            lst.settimeout(0.2)
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                try:  # drain the queue: the client's next SYN gets through
                    lst.accept()[0].close()
                except TimeoutError:
                    pass
            out, _ = proc.communicate(timeout=30)
        finally:
            for f in fillers:
                f.close()
    assert proc.returncode == 0, out
    assert [int(v) for v in out.split()] == WANT


def test_preload_leaves_a_raw_tcp_socket_alone(c_cases: Path) -> None:
    need_preload()
    done = subprocess.run([str(c_cases), "raw"], capture_output=True, text=True, timeout=30, env=_preloaded(SPEC))
    if done.stdout.startswith("socket "):
        pytest.skip(f"no raw socket here (needs CAP_NET_RAW): {done.stdout.strip()}")
    assert done.stdout.split() == ["0", "0"]  # connected (a raw socket's peer address), SO_KEEPALIVE still off


@need_proc
@pytest.mark.parametrize(
    ("spec", "force", "keepalive", "want"),
    [
        # without --force the program's own values win (set after the policy)
        (SPEC, False, 1, [1, 15, 5, 3, 5000]),
        # with it the policy's, for every knob it sets
        (SPEC, True, 1, WANT),
        # a knob the policy does not set keeps the program's value (user timeout)
        ("7s:3s:4", True, 1, [1, 7, 3, 4, 5000]),
        # "off" wins over the program's SO_KEEPALIVE=1 on TCP; the knobs are the program's
        ("off", True, 1, [0, 15, 5, 3, 5000]),
    ],
)
def test_preload_force_replaces_the_programs_own_setsockopt(
    listener: socket.socket, c_cases: Path, spec: str, force: bool, keepalive: int, want: list[int]
) -> None:
    need_preload()
    proc = subprocess.Popen(
        [str(c_cases), "own", str(listener.getsockname()[1]), str(keepalive)],
        stdout=subprocess.PIPE,
        text=True,
        env=_preloaded(spec, force=force),
    )
    conn = _accept_from(listener, proc)
    with conn:
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    calls, options, others = out.splitlines()
    assert calls.split() == ["0"] * 6  # every setsockopt succeeded, replaced or not
    assert [int(v) for v in options.split()] == want
    assert others.split() == ["0", "1", "1"]  # UDP SO_KEEPALIVE and TCP_NODELAY: the program's


def test_force_without_cgroup_is_accepted_and_reaches_python(listener: socket.socket) -> None:
    code = (
        _READ
        + f"""
s = socket.create_connection({listener.getsockname()!r})
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)   # the program's own, after connecting
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
print(options(s))
"""
    )
    forced = kaext_run("--policy", SPEC, "--force", "--", *python(code))
    plain = kaext_run("--policy", SPEC, "--", *python(code))
    assert (forced.returncode, forced.stderr) == (0, "")
    assert forced.stdout.strip() == str(WANT)
    assert plain.stdout.strip() == str([1, 30, 3, 4, 19_000])  # without --force the program's idle wins
