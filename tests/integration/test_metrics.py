"""``kaext-inspect --prometheus`` / ``--listen``: real processes, promtool, a real Prometheus server.

The expected counts come from what the inspected process reads back itself
(getsockopt), the kernel counters from ``/proc/net/netstat`` read by the test, the
format from Prometheus' own parsers (``promtool check metrics``, the Prometheus server's
scrape, and ``prometheus_client``'s parser).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import netns
import pytest
import servers
from paths import ROOT
from processes import OTHER_UID, cli_env, run_cli
from sockets import HAVE_IPV6

from kaext import _platform, inspect, presets

pytestmark = pytest.mark.skipif(_platform.CONNECTIONS != "proc", reason="Linux /proc and pidfd_getfd")

try:
    from prometheus_client import parser
except ImportError:  # the 'test' extra installs it; CI must not skip
    if servers.REQUIRED:
        raise
    pytest.skip("prometheus_client is not installed: pip install '.[test]'", allow_module_level=True)

AWS_NLB = presets.MIDDLEBOXES["aws-nlb"].idle_timeout

# Connects ``spec`` connections to 127.0.0.1:PORT (the accepting ends are in the test
# process), each set with plain setsockopt to [SO_KEEPALIVE, TCP_KEEPIDLE]; prints its pid
# and its own reading of every socket; "on" turns keepalive on for all; exits at end of input.
HOLDER = r"""
import json, os, socket, sys
port, spec = int(sys.argv[1]), json.loads(sys.argv[2])
held = []
for keepalive, idle, n in spec:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        held.append(s)
def report():
    own = [[s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)]
           for s in held]
    print(json.dumps({"pid": os.getpid(), "own": own}), flush=True)
report()
for line in sys.stdin:
    if line.strip() == "on":
        for s in held:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    report()
"""

#: keepalive off; on with a first probe before aws-nlb's 350 s; on, at or after it
SPEC = [[0, 7200, 3], [1, 60, 5], [1, int(AWS_NLB), 2], [1, 900, 4]]


class Holder:
    def __init__(self, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.proc, self.pid, self.own = proc, int(info["pid"]), info["own"]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.own = json.loads(self.proc.stdout.readline())["own"]


@contextlib.contextmanager
def holder(spec: list[list[int]] = SPEC, prefix: tuple[str, ...] = ()) -> Iterator[Holder]:
    """A process holding the connections of ``spec``; their accepting ends held here."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", HOLDER, str(listener.getsockname()[1]), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        accepted: list[socket.socket] = []
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"the holder exited with {proc.wait()}"
            listener.settimeout(10)
            accepted.extend(listener.accept()[0] for _ in range(sum(n for _, _, n in spec)))
            yield Holder(proc, json.loads(line))
        finally:
            for s in accepted:
                s.close()
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def expected_verdicts(own: list[list[int]], idle_timeout: float) -> Counter[str]:
    """What each connection's own reading means against a middlebox's idle timeout."""
    return Counter(
        "keepalive_off" if not keepalive else "first_probe_too_late" if idle >= idle_timeout else "ok"
        for keepalive, idle in own
    )


def samples(text: str, name: str) -> list[Any]:
    """The samples of metric family ``name``, parsed by prometheus_client's parser."""
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    return list(families[name].samples) if name in families else []


def connections_of(text: str, pid: int) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for s in samples(text, "kaext_tcp_connections"):
        if s.labels["pid"] == str(pid):
            assert s.value == int(s.value) > 0
            found[s.labels["state"], s.labels["verdict"]] += int(s.value)
    return found


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        servers.missing("promtool is not installed (Debian package prometheus)")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("python -m kaext.inspect: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------
# --prometheus
# --------------------------------------------------------------------------------------


def test_counts_by_verdict_and_promtool_accepts_them(implementation: str) -> None:
    with holder() as h:
        done = run_cli(implementation, str(h.pid), "--middlebox", "aws-nlb", "--prometheus")
        own = h.own
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    want = expected_verdicts(own, AWS_NLB)
    assert want == {"keepalive_off": 3, "ok": 5, "first_probe_too_late": 6}  # the spec, as the process reads it
    assert connections_of(done.stdout, h.pid) == {("ESTABLISHED", v): n for v, n in want.items()}
    for s in samples(done.stdout, "kaext_tcp_connections"):
        assert s.labels["process"].startswith("python"), s.labels  # /proc/PID/comm of the interpreter
    check = promtool_check(done.stdout)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""  # not even a lint warning


USER_TIMEOUT_FIRST_HOLDER = r"""
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)  # ms: before 60 + 10 * 5 s
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def test_a_user_timeout_shorter_than_probing_is_its_own_verdict_and_help_names_it(implementation: str) -> None:
    """``USER TIMEOUT FIRST`` (Linux's tcp_keepalive_timer gives up once the user timeout has
    passed) is exported as ``user_timeout_first``, and the family's HELP names it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", USER_TIMEOUT_FIRST_HOLDER, str(listener.getsockname()[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            pid = int(proc.stdout.readline())
            with listener.accept()[0]:
                done = run_cli(implementation, str(pid), "--prometheus")
        finally:
            proc.kill()
            proc.wait()
    assert done.returncode == 0, done.stderr
    assert connections_of(done.stdout, pid) == {("ESTABLISHED", "user_timeout_first"): 1}
    families = {f.name: f for f in parser.text_string_to_metric_families(done.stdout)}
    assert "user_timeout_first" in families["kaext_tcp_connections"].documentation


def test_not_judged_sockets_have_an_empty_verdict_and_idle_timeout_decides(implementation: str) -> None:
    """Without --idle-timeout nothing is too late; the test process's listener is listed, not judged."""
    with holder() as h:
        plain = run_cli(implementation, str(h.pid), "--prometheus")
        strict = run_cli(implementation, str(h.pid), "--idle-timeout", "61", "--prometheus")
        mine = run_cli(implementation, str(os.getpid()), "--prometheus")
        own = h.own
    assert (plain.returncode, strict.returncode, mine.returncode) == (0, 0, 0), plain.stderr + strict.stderr
    assert connections_of(plain.stdout, h.pid) == {("ESTABLISHED", "keepalive_off"): 3, ("ESTABLISHED", "ok"): 11}
    assert connections_of(strict.stdout, h.pid) == {
        ("ESTABLISHED", v): n for v, n in expected_verdicts(own, 61).items()
    }
    listeners = connections_of(mine.stdout, os.getpid())
    assert listeners[("LISTEN", "")] >= 1, mine.stdout


def test_collector_on_both_backends(backend: ModuleType) -> None:
    """The collector in this process, through each backend explicitly."""
    from kaext import _metrics

    with holder() as h:
        collector = _metrics.InspectCollector(
            lambda: [h.pid], lambda conn: inspect.verdict(conn, AWS_NLB), strict=True, backend=backend
        )
        text = _metrics.exposition(collector).decode()
        own = h.own
    assert connections_of(text, h.pid) == {("ESTABLISHED", v): n for v, n in expected_verdicts(own, AWS_NLB).items()}


@pytest.mark.root
def test_kernel_counters_are_the_namespaces_own(implementation: str) -> None:
    """In a fresh network namespace: one connection with keepalive 1 s / 1 probe, whose peer then
    goes silent (loopback down): the kernel sends exactly 1 probe and drops it once (tcp_keepalive_timer)."""
    reason = netns.namespace_unavailable()
    if reason:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"{reason}, but KAEXT_REQUIRE_NETNS=1")
        pytest.skip(reason)
    program = (
        "import socket, sys\n"
        "l = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n"
        "for opt, v in ((socket.TCP_KEEPIDLE, 1), (socket.TCP_KEEPINTVL, 1), (socket.TCP_KEEPCNT, 1)):\n"
        "    c.setsockopt(socket.IPPROTO_TCP, opt, v)\n"
        "c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n"
        "print('up', flush=True); sys.stdin.readline()\n"
        "c.settimeout(30)\n"
        "try:\n    c.recv(1)\nexcept OSError as e:\n    print(e.errno, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with netns.Namespace() as ns:
        in_ns = ["ip", "netns", "exec", ns]
        fresh = read_netstat(in_ns)
        assert (fresh["TCPKeepAlive"], fresh["TCPAbortOnTimeout"]) == (0, 0)
        proc = subprocess.Popen(
            [*in_ns, sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline() == "up\n"
            netns.ip("-n", ns, "link", "set", "lo", "down")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            err = proc.stdout.readline().strip()
            kernel = read_netstat(in_ns)
            done = subprocess.run(
                [*in_ns, sys.executable, "-m", "kaext.inspect", str(proc.pid), "--prometheus"],
                env=cli_env(implementation),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            proc.kill()
            proc.wait()
    assert err == "110"  # ETIMEDOUT: the connection was dropped by the keepalive timer
    assert (kernel["TCPKeepAlive"], kernel["TCPAbortOnTimeout"]) == (1, 1)
    assert done.returncode == 0, done.stderr
    assert [s.value for s in samples(done.stdout, "kaext_tcp_keepalive_probes")] == [kernel["TCPKeepAlive"]]
    assert [s.value for s in samples(done.stdout, "kaext_tcp_aborts_on_timeout")] == [kernel["TCPAbortOnTimeout"]]
    assert [s.name for s in samples(done.stdout, "kaext_tcp_keepalive_probes")] == ["kaext_tcp_keepalive_probes_total"]


def read_netstat(prefix: list[str]) -> dict[str, int]:
    """TcpExt of /proc/net/netstat, read by ``cat`` in the namespace (the test's own parser)."""
    text = subprocess.run([*prefix, "cat", "/proc/net/netstat"], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:], strict=True)}


# --------------------------------------------------------------------------------------
# Errors: one line, exit 2
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--prometheus", "--apply", "on"], "--prometheus reads only: it cannot be combined with --apply"),
        (["--prometheus", "--json"], "--prometheus reads only: it cannot be combined with --json"),
        (["--listen", "127.0.0.1:9400", "--apply", "on"], "--listen reads only"),
        (["--listen", "127.0.0.1"], "--listen takes HOST:PORT with a port from 1 to 65535, got '127.0.0.1'"),
        (["--listen", "127.0.0.1:0"], "a port from 1 to 65535"),
        (["--listen", "127.0.0.1:65536"], "a port from 1 to 65535"),
        (["--listen", "::1:9400"], "in brackets"),
        (["--listen", "127.0.0.1:9400", "--prometheus"], "not allowed with argument"),
    ],
)
def test_bad_arguments(implementation: str, args: list[str], said: str) -> None:
    assert said in one_line_error(run_cli(implementation, str(os.getpid()), *args))


def test_no_such_pid_and_port_in_use(implementation: str) -> None:
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
        gone = str(int(f.read()) + 1)
    assert f"no process with pid {gone}" in one_line_error(run_cli(implementation, gone, "--prometheus"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        said = one_line_error(run_cli(implementation, str(os.getpid()), "--listen", address))
    assert said.endswith(f"--listen {address}: {os.strerror(98)}"), said  # EADDRINUSE


def test_without_prometheus_client_one_line_naming_the_extra(implementation: str) -> None:
    program = (
        "import sys; sys.modules['prometheus_client'] = None  # import fails as when it is not installed\n"
        "import kaext.inspect; sys.argv[0] = 'kaext-inspect'; sys.exit(kaext.inspect.main(sys.argv[1:]))\n"
    )
    for flag in (["--prometheus"], ["--listen", "127.0.0.1:9400"]):
        done = subprocess.run(
            [sys.executable, "-c", program, str(os.getpid()), *flag],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (
            f"kaext-inspect: error: {flag[0]} needs the prometheus_client library: pip install 'kaext[metrics]'\n"
        )


@pytest.mark.one_implementation
def test_prometheus_client_is_imported_only_for_the_flags(implementation: str) -> None:
    program = (
        "import sys, io, contextlib, kaext, kaext.inspect\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    kaext.inspect.main([str(__import__('os').getpid()), '--json'])\n"
        "before = 'prometheus_client' in sys.modules\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    kaext.inspect.main([str(__import__('os').getpid()), '--prometheus'])\n"
        "print(before, 'prometheus_client' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "False True\n"


# --------------------------------------------------------------------------------------
# --listen, and a real Prometheus server scraping it
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def exporter(implementation: str, *args: str) -> Iterator[str]:
    """``kaext-inspect ARGS --listen 127.0.0.1:PORT`` running; yields its /metrics URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaext.inspect", *args, "--listen", f"127.0.0.1:{servers.free_port()}"],
        env=cli_env(implementation),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        prefix = "python -m kaext.inspect: serving "
        assert line.startswith(prefix), line + proc.stderr.read()
        yield line[len(prefix) :].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(r.read().decode())


def test_listen_inspects_again_on_every_scrape(implementation: str) -> None:
    with holder() as h, exporter(implementation, str(h.pid), "--middlebox", "aws-nlb") as url:
        first = scrape(url)
        h.send("on")
        second = scrape(url)
        own = h.own
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=30)
    assert url.endswith("/metrics")
    assert connections_of(first, h.pid)[("ESTABLISHED", "keepalive_off")] == 3
    assert connections_of(second, h.pid) == {("ESTABLISHED", v): n for v, n in expected_verdicts(own, AWS_NLB).items()}
    assert ("ESTABLISHED", "keepalive_off") not in connections_of(second, h.pid)
    assert elsewhere.value.code == 404


def test_listen_with_a_pid_that_exits_counts_it(implementation: str) -> None:
    with holder() as h, exporter(implementation, str(h.pid)) as url:
        before = scrape(url)
        h.proc.kill()
        h.proc.wait()
        after = scrape(url)
    assert [s.value for s in samples(before, "kaext_inspect_unlisted_processes")] == [0]
    assert [s.value for s in samples(after, "kaext_inspect_unlisted_processes")] == [1]
    assert connections_of(after, h.pid) == {}


def test_a_real_prometheus_server_scrapes_listen(implementation: str) -> None:
    """Debian's prometheus scrapes ``--listen`` every second; its query API returns the count."""
    with holder() as h, exporter(implementation, str(h.pid), "--middlebox", "aws-nlb") as url:
        target = url.removeprefix("http://").removesuffix("/metrics")
        own = h.own
        with servers.prometheus_server(target) as prom:
            # over the last minute: a scrape that ran past the 1 s timeout on a busy machine marks the
            # series stale until the next one (the instant value would be missing, not wrong)
            query = f'last_over_time(kaext_tcp_connections{{verdict="keepalive_off",pid="{h.pid}"}}[1m])'
            deadline = time.monotonic() + 60
            while not (result := prom.query(query)) and time.monotonic() < deadline:
                time.sleep(0.5)
            up = prom.query('max_over_time(up{job="kaext"}[1m])')
            too_late = prom.query(
                f'sum(last_over_time(kaext_tcp_connections{{verdict="first_probe_too_late",pid="{h.pid}"}}[1m]))'
            )
            probes = prom.query("last_over_time(kaext_tcp_keepalive_probes_total[1m])")
    assert len(result) == 1, result
    assert result[0]["metric"]["state"] == "ESTABLISHED"  # type: ignore[index]
    assert result[0]["metric"]["process"].startswith("python")  # type: ignore[index]
    want = expected_verdicts(own, AWS_NLB)
    assert float(result[0]["value"][1]) == want["keepalive_off"] == 3  # type: ignore[index]
    assert float(too_late[0]["value"][1]) == want["first_probe_too_late"]  # type: ignore[index]
    assert [float(s["value"][1]) for s in up] == [1.0]  # type: ignore[index]
    assert len(probes) == 1


# --------------------------------------------------------------------------------------
# The privileges deploy/ gives the exporter
# --------------------------------------------------------------------------------------


def deploy_capabilities() -> dict[str, set[str]]:
    """The capabilities each file under deploy/ grants, as setpriv names them."""
    import yaml

    unit = (ROOT / "deploy" / "kaext-exporter.service").read_text(encoding="utf-8")
    (ambient,) = [
        line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith("AmbientCapabilities=")
    ]
    docs = yaml.safe_load_all((ROOT / "deploy" / "kaext-exporter-daemonset.yaml").read_text(encoding="utf-8"))
    (doc,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    added = container["securityContext"]["capabilities"]["add"]
    return {
        "systemd": {c.removeprefix("CAP_").lower() for c in ambient},
        "kubernetes": {c.lower() for c in added},
    }


@pytest.mark.root
@pytest.mark.parametrize("where", ["systemd", "kubernetes", "without dac_read_search"])
def test_the_capabilities_deploy_grants_are_enough(implementation: str, where: str) -> None:
    """The exporter as an unprivileged user (uid 65534) with exactly the capabilities of the
    unit / the DaemonSet reads a root process's sockets; without CAP_DAC_READ_SEARCH it cannot."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    granted = deploy_capabilities()
    assert granted["systemd"] == granted["kubernetes"] == {"sys_ptrace", "dac_read_search"}
    caps = granted["kubernetes"] - ({"dac_read_search"} if where.startswith("without") else set())
    spec = ",".join(["-all", *(f"+{c}" for c in sorted(caps))])
    as_user = [
        "setpriv",
        f"--reuid={OTHER_UID}",
        f"--regid={OTHER_UID}",
        "--clear-groups",
        f"--inh-caps={spec}",
        f"--ambient-caps={spec}",
        f"--bounding-set={spec}",
        "--",
    ]
    probe = subprocess.run([*as_user, sys.executable, "-c", "import kaext.inspect"], capture_output=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"uid {OTHER_UID} cannot run this interpreter: {probe.stderr.decode().strip()[-200:]}")
    with holder() as h:
        done = subprocess.run(
            [*as_user, sys.executable, "-m", "kaext.inspect", str(h.pid), "--middlebox", "aws-nlb", "--prometheus"],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        own = h.own
    if where.startswith("without"):
        assert f"no permission to list the descriptors of process {h.pid}" in one_line_error(done)
        return
    assert done.returncode == 0, done.stderr
    assert connections_of(done.stdout, h.pid) == {
        ("ESTABLISHED", v): n for v, n in expected_verdicts(own, AWS_NLB).items()
    }


# --------------------------------------------------------------------------------------
# docs/metrics.md
# --------------------------------------------------------------------------------------


def page_blocks(language: str) -> list[str]:
    page = ROOT / "docs" / "metrics.md"
    if not page.exists():
        pytest.skip("not a source checkout")
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)


@pytest.mark.one_implementation
def test_the_documented_run_is_what_the_inspector_prints(implementation: str) -> None:
    """The page's sample output: the same families, HELP and TYPE lines and label names as a real run."""
    (shown,) = [b for b in page_blocks("text") if b.startswith("$ kaext-inspect")]
    with holder() as h:
        done = run_cli(implementation, str(h.pid), "--middlebox", "aws-nlb", "--prometheus")
    assert done.returncode == 0, done.stderr
    shown_text = shown.split("\n", 1)[1]

    def shape(text: str) -> tuple[list[str], dict[str, set[str]]]:
        comments = [line for line in text.splitlines() if line.startswith("#")]
        labels = {f.name: {k for s in f.samples for k in s.labels} for f in parser.text_string_to_metric_families(text)}
        return comments, labels

    assert shape(shown_text) == shape(done.stdout)
    assert {s.labels["verdict"] for s in samples(shown_text, "kaext_tcp_connections")} == {
        "first_probe_too_late",
        "keepalive_off",
        "",
    }


@pytest.mark.one_implementation
def test_the_documented_promql_and_scrape_configs_pass_promtool(tmp_path: Any, implementation: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        servers.missing("promtool is not installed (Debian package prometheus)")
    (queries,) = [b for b in page_blocks("text") if b.startswith("# processes holding")]
    expressions = [line for line in queries.splitlines() if line and not line.startswith("#")]
    assert len(expressions) == 3
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n  - name: kaext\n    rules:\n"
        + "".join(f"      - alert: Docs{i}\n        expr: {json.dumps(e)}\n" for i, e in enumerate(expressions)),
        encoding="utf-8",
    )
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    configs = page_blocks("yaml")
    assert len(configs) == 2
    for i, config in enumerate(configs):
        path = tmp_path / f"prometheus{i}.yml"
        path.write_text(config, encoding="utf-8")
        checked = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
        if "field kubernetes_sd_configs not found" in checked.stdout + checked.stderr:
            # Debian builds Prometheus without Kubernetes discovery: the rest is still checked
            path.write_text(
                config.replace("kubernetes_sd_configs: [{role: pod}]", "static_configs: [{targets: [':1']}]")
            )
            checked = subprocess.run(
                [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
            )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_exporter_ends_on_ctrl_c_with_130_and_no_traceback(implementation: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaext.inspect", str(os.getpid()), "--listen", f"127.0.0.1:{servers.free_port()}"],
        env=cli_env(implementation),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("python -m kaext.inspect: serving http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (130, "", "")


@pytest.mark.one_implementation
def test_benchmark_smoke_run(implementation: str) -> None:
    """The scale benchmark still runs and counts (small sizes: no goals, no timings asserted)."""
    script = ROOT / "benchmarks" / "bench_metrics.py"
    if not script.exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    done = subprocess.run(
        [sys.executable, str(script), "--json", "--repeats", "1", "--per-process", "40"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["connections"], report["goals"], len(report["seconds"]), len(report["listen_seconds"])) == (
        400,
        [],
        1,
        1,
    )


@pytest.mark.root
def test_all_as_an_unprivileged_user_names_and_counts_what_it_cannot_list(implementation: str) -> None:
    """--all as uid 65534 without capabilities: a root process's sockets cannot be listed; such
    processes are counted in one line on stderr and in kaext_inspect_unlisted_processes, and the
    exit status stays 0."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    as_user = [
        "setpriv",
        f"--reuid={OTHER_UID}",
        f"--regid={OTHER_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]
    probe = subprocess.run([*as_user, sys.executable, "-c", "import kaext.inspect"], capture_output=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"uid {OTHER_UID} cannot run this interpreter")
    with holder() as h:
        done = subprocess.run(
            [*as_user, sys.executable, "-m", "kaext.inspect", "--all", "--prometheus"],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()  # one counted line, not one per process; nothing else on stderr
    count = int(line.removeprefix("python -m kaext.inspect: ").split()[0])
    assert ": sockets not listed: no permission (other users' processes;" in line, line
    (unlisted,) = samples(done.stdout, "kaext_inspect_unlisted_processes")
    assert unlisted.value == count >= 1
    assert connections_of(done.stdout, h.pid) == {}


# A real server and client in one process: a collection that fails answers 500 and the server
# goes on; a KeyboardInterrupt that arrives during a scrape is raised from serve() (wsgiref
# alone would print its traceback and serve on).
SERVE_FAILING = r"""
import errno, sys, threading, urllib.error, urllib.request
from kaext import _metrics

class Collector:
    def __init__(self):
        self.raises = [OSError(errno.EACCES, "Permission denied"), KeyboardInterrupt()]
    def collect(self):
        raise self.raises.pop(0)

urls, codes, lines = [], [], []
bound = threading.Event()
def ready(url):
    urls.append(url)
    bound.set()
def client():
    bound.wait(10)
    for _ in range(2):
        try:
            urllib.request.urlopen(urls[0], timeout=10)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
threading.Thread(target=client, daemon=True).start()
try:
    _metrics.serve(Collector(), "127.0.0.1", 0, ready=ready, failed=lines.append)
except KeyboardInterrupt:
    print("interrupted", codes[:1], lines, flush=True)
"""


def test_serve_answers_a_failed_scrape_with_500_and_lets_an_interrupt_through(implementation: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_FAILING], env=cli_env(implementation), capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "interrupted [500] ['scrape failed: Permission denied']\n"


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback")
def test_listen_on_ipv6_loopback(implementation: str) -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaext.inspect", str(os.getpid()), "--listen", f"[::1]:{port}"],
        env=cli_env(implementation),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == f"python -m kaext.inspect: serving http://[::1]:{port}/metrics\n"
        text = scrape(f"http://[::1]:{port}/metrics")
    finally:
        proc.terminate()
        proc.wait(10)
    assert [s.name for s in samples(text, "kaext_inspect_unlisted_processes")] == ["kaext_inspect_unlisted_processes"]
