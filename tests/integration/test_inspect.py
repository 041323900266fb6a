"""``python -m kaext.inspect``: run for real against separate processes that set their own options."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from typing import Any

import netns
import pytest
from paths import ROOT
from processes import OTHER_UID, TARGET_UID, child, cli_env, python_for, run_cli, run_cli_as
from sockets import HAVE_IPV6

from kaext import _platform, inspect, presets

pytestmark = pytest.mark.skipif(_platform.CONNECTIONS != "proc", reason="Linux /proc and pidfd_getfd")

ROW_KEYS = {
    "pid",
    "fd",
    "family",
    "local",
    "remote",
    "state",
    "keepalive",
    "user_timeout",
    "timer",
    "timer_left",
    "probes",
    "reason",
    "verdict",
}
KEEPALIVE_KEYS = {"enabled", "idle", "interval", "count"}
AWS_NLB = presets.MIDDLEBOXES["aws-nlb"].idle_timeout
AZURE_LB = presets.MIDDLEBOXES["azure-lb"].idle_timeout


def no_such_pid() -> int:
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
        return int(f.read()) + 1


def rows_of(stdout: str, pid: int) -> dict[int, dict[str, Any]]:
    doc = json.loads(stdout)
    assert set(doc) == {"connections"}
    return {r["fd"]: r for r in doc["connections"] if r["pid"] == pid}


def as_json_state(values: list[int]) -> tuple[dict[str, Any], float]:
    """What --json must show for a raw reading [SO_KEEPALIVE, idle, interval, count, user_timeout ms]."""
    keepalive, idle, interval, count, user_timeout_ms = values
    return {"enabled": bool(keepalive), "idle": idle, "interval": interval, "count": count}, user_timeout_ms / 1000


def one_line_error(done: Any) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m kaext.inspect: error: ")
    return str(lines[0])


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family",
    ["ipv4", pytest.param("ipv6", marks=pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback"))],
)
def test_json_schema_and_values(implementation: str, family: str) -> None:
    # user timeout 70.345 s >= 31 + 7 * 5: no contradiction (USER TIMEOUT FIRST)
    with child(family, client=[1, 31, 7, 5, 70345], server=[1, 100, 10, 3, 0]) as c:
        done = run_cli(implementation, str(c.pid), "--json")
        own = c.read()
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout, c.pid)
    assert len(rows) == 3
    for name in ("listener", "client", "server"):
        sock = c.sock(name)
        row = rows[sock["fd"]]
        assert set(row) == ROW_KEYS
        assert set(row["keepalive"]) == KEEPALIVE_KEYS
        assert row["family"] == ("IPv4" if family == "ipv4" else "IPv6")
        assert row["local"] == sock["local"]
        keepalive, user_timeout = as_json_state(own[name])
        assert row["keepalive"] == keepalive
        assert row["user_timeout"] == user_timeout
        assert isinstance(row["timer"], str)
        if name == "listener":
            assert row["state"] == "LISTEN" and row["verdict"] is None
            assert row["remote"][1] == 0
        else:
            assert row["state"] == "ESTABLISHED" and row["verdict"] == "ok"
            assert row["remote"] == sock["remote"]
            assert row["timer"] == "keepalive"
            assert 0 < row["timer_left"] <= own[name][1]
            assert row["probes"] == 0


def test_table_is_readable(implementation: str) -> None:
    with child("ipv4", client=[1, 31, 7, 5, 70000]) as c:
        done = run_cli(implementation, str(c.pid))
    assert done.returncode == 1  # the server side has keepalive off
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "PID",
        "FD",
        "LOCAL",
        "REMOTE",
        "STATE",
        "KEEPALIVE",
        "IDLE",
        "INTVL",
        "CNT",
        "USER_TIMEOUT",
        "TIMER",
        "VERDICT",
    ]
    client = next(line for line in lines if line.split()[:2] == [str(c.pid), str(c.sock("client")["fd"])])
    host, port = c.sock("client")["local"]
    assert f"{host}:{port}" in client
    assert client.split()[4:10] == ["ESTABLISHED", "on", "31s", "7s", "5", "70s"]
    assert client.split()[10] == "keepalive" and client.split()[-1] == "ok"
    server = next(line for line in lines if line.split()[:2] == [str(c.pid), str(c.sock("server")["fd"])])
    assert server.endswith("KEEPALIVE OFF")
    listener = next(line for line in lines if line.split()[:2] == [str(c.pid), str(c.sock("listener")["fd"])])
    assert listener.split()[4] == "LISTEN" and listener.endswith("-")
    assert lines[-1].startswith("3 sockets, 2 judged, 1 failing")


# --------------------------------------------------------------------------------------
# Verdicts and exit status
# --------------------------------------------------------------------------------------


@pytest.mark.one_implementation
@pytest.mark.parametrize(
    ("args", "client_verdict", "code"),
    [
        ([], "ok", 0),
        (["--idle-timeout", "350"], "ok", 0),
        (["--idle-timeout", "300"], "FIRST PROBE TOO LATE", 1),  # first probe at 300 s: too late
        (["--idle-timeout", "300.5"], "ok", 0),
        (["--middlebox", "aws-nlb"], "ok" if AWS_NLB > 300 else "FIRST PROBE TOO LATE", None),
        (["--middlebox", "azure-lb"], "ok" if AZURE_LB > 300 else "FIRST PROBE TOO LATE", None),
    ],
)
def test_verdicts(implementation: str, args: list[str], client_verdict: str, code: int | None) -> None:
    with child("ipv4", client=[1, 300, 10, 5, 0], server=[1, 100, 10, 3, 0]) as c:
        done = run_cli(implementation, str(c.pid), "--json", *args)
    rows = rows_of(done.stdout, c.pid)
    assert rows[c.sock("client")["fd"]]["verdict"] == client_verdict
    assert rows[c.sock("server")["fd"]]["verdict"] == "ok"  # idle 100 s is under every timeout here
    assert rows[c.sock("listener")["fd"]]["verdict"] is None
    assert done.returncode == (code if code is not None else (0 if client_verdict == "ok" else 1))


@pytest.mark.one_implementation
def test_keepalive_off_fails(implementation: str) -> None:
    with child("ipv4", client=[0, 30, 10, 5, 0], server=[1, 30, 10, 5, 0]) as c:
        done = run_cli(implementation, str(c.pid), "--json")
    rows = rows_of(done.stdout, c.pid)
    assert rows[c.sock("client")["fd"]]["verdict"] == "KEEPALIVE OFF"
    assert done.returncode == 1


# --------------------------------------------------------------------------------------
# --apply
# --------------------------------------------------------------------------------------


def test_apply_spec_then_read_back(implementation: str) -> None:
    with child("ipv4") as c:
        before = c.read()
        done = run_cli(implementation, str(c.pid), "--apply", "7s:3s:4 user_timeout=19s", "--json")
        after = c.read()
    assert before["client"][0] == 0  # nothing set yet
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout, c.pid)
    for name in ("listener", "client", "server"):
        assert after[name] == [1, 7, 3, 4, 19000], name  # what the child itself now reads
        row = rows[c.sock(name)["fd"]]
        assert (row["keepalive"], row["user_timeout"]) == as_json_state(after[name])


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback")
def test_apply_middlebox_name_ipv6(implementation: str) -> None:
    timeout = presets.MIDDLEBOXES["aws-nlb"].idle_timeout
    # the documented rule: idle T // 2, interval T // 10, 5 probes
    want = [1, timeout // 2, timeout // 10, 5]
    with child("ipv6", client=[0, 9000, 90, 9, 600_000]) as c:  # 600 s: over the new probes' 350 s
        done = run_cli(implementation, str(c.pid), "--apply", "aws-nlb", "--middlebox", "aws-nlb", "--json")
        after = c.read()
    assert done.returncode == 0, done.stderr
    for name in ("listener", "client", "server"):
        assert after[name][:4] == want, name
    assert after["client"][4] == 600_000  # the user timeout is left as it was
    assert {r["verdict"] for r in rows_of(done.stdout, c.pid).values()} == {None, "ok"}


@pytest.mark.one_implementation
def test_bad_apply_changes_nothing(implementation: str) -> None:
    with child("ipv4", client=[1, 31, 7, 5, 0]) as c:
        before = c.read()
        done = run_cli(implementation, str(c.pid), "--apply", "40000s:3s:4")  # idle above 32767 s
        after = c.read()
    line = one_line_error(done)
    assert "40000" in line and "32767" in line
    assert before == after


# --------------------------------------------------------------------------------------
# Errors and permissions
# --------------------------------------------------------------------------------------


def test_no_such_pid_exit_2(implementation: str) -> None:
    done = run_cli(implementation, str(no_such_pid()))
    assert "no process with pid" in one_line_error(done)
    assert done.stdout == ""


@pytest.mark.one_implementation
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["abc"],
        ["0"],
        ["-5"],
        ["{pid}", "--idle-timeout", "x"],
        ["{pid}", "--idle-timeout", "-3"],
        ["{pid}", "--idle-timeout", "0"],
        ["{pid}", "--idle-timeout", "nan"],
        ["{pid}", "--idle-timeout", "inf"],
        ["{pid}", "--idle-timeout"],
        ["{pid}", "--middlebox", "nope"],
        ["{pid}", "--idle-timeout", "5", "--middlebox", "aws-nlb"],
        ["{pid}", "--apply", "1:2:3:4"],
        ["{pid}", "--apply", ""],
        ["{pid}", "--apply"],
        ["--all", "{pid}"],
        ["{pid}", "--bogus"],
    ],
)
def test_bad_arguments_one_line_exit_2(
    implementation: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(pid=os.getpid()) for a in args]
    assert inspect.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("python -m kaext.inspect: error: "), err


@pytest.mark.one_implementation
@pytest.mark.parametrize("text", ["1_000", " 1", "+1", "\u0661", "1.0"])
def test_only_decimal_digits_are_a_pid(implementation: str, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What int() also accepts ("1_000", " 5", "+5", other scripts' digits) is refused as a pid."""
    assert inspect.main([text]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    prefix = "python -m kaext.inspect: error: argument PID: "
    assert err == f"{prefix}not a process id (a positive whole number): {text!r}\n"


@pytest.mark.one_implementation
def test_bad_arguments_in_a_real_run(implementation: str) -> None:
    one_line_error(run_cli(implementation, "1", "--idle-timeout", "1e999"))


def needs_other_users() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the target and the inspector as other users")
    if python_for(TARGET_UID) is None:
        pytest.skip(f"no Python interpreter that uid {TARGET_UID} may run")


def test_unreadable_without_the_right_to_ptrace(implementation: str) -> None:
    """Effective uid the target's (so /proc/<pid>/fd can be read), real uid another (so
    pidfd_getfd's ptrace check fails): rows listed, UNREADABLE, exit 1; --apply exit 2."""
    needs_other_users()
    with child("ipv4", client=[1, 31, 7, 5, 0], user=TARGET_UID) as c:
        done = run_cli_as(implementation, OTHER_UID, TARGET_UID, str(c.pid), "--json")
        before = c.read()
        applied = run_cli_as(implementation, OTHER_UID, TARGET_UID, str(c.pid), "--apply", "on")
        after = c.read()
    assert done.returncode == 1, done.stderr
    rows = rows_of(done.stdout, c.pid)
    assert len(rows) == 3
    for name in ("client", "server"):
        row = rows[c.sock(name)["fd"]]
        assert (row["state"], row["keepalive"], row["user_timeout"], row["verdict"]) == (
            "ESTABLISHED",
            None,
            None,
            "UNREADABLE",
        )
        assert row["timer"] == ("keepalive" if name == "client" else "off")  # the kernel's table needs no right
    assert rows[c.sock("listener")["fd"]]["verdict"] is None
    assert "no permission" in one_line_error(applied)
    assert before == after


def test_another_users_process_exit_2(implementation: str) -> None:
    needs_other_users()
    with child("ipv4", user=TARGET_UID) as c:
        done = run_cli_as(implementation, OTHER_UID, OTHER_UID, str(c.pid))
    assert f"process {c.pid}" in one_line_error(done)


def test_all_includes_a_child(implementation: str) -> None:
    with child("ipv4", client=[1, 31, 7, 5, 0], server=[1, 60, 6, 6, 0]) as c:
        done = run_cli(implementation, "--all", "--json")
        own = c.read()
    assert done.returncode in (0, 1), done.stderr  # other processes here may fail
    rows = rows_of(done.stdout, c.pid)
    assert {r["fd"] for r in rows.values()} == {c.sock(n)["fd"] for n in ("listener", "client", "server")}
    for name in ("client", "server"):
        row = rows[c.sock(name)["fd"]]
        assert (row["keepalive"], row["user_timeout"]) == as_json_state(own[name])
        assert row["verdict"] == "ok"


def test_all_counts_the_processes_it_cannot_list(implementation: str) -> None:
    """Other users' processes under --all: counted in one line on stderr and in the summary,
    not silently empty, and not one line each."""
    needs_other_users()
    with child("ipv4", client=[1, 31, 7, 5, 0], server=[1, 60, 6, 6, 0], user=TARGET_UID) as c:
        done = run_cli_as(implementation, OTHER_UID, OTHER_UID, "--all")
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    assert not [line for line in done.stderr.splitlines() if f"pid {c.pid}:" in line], done.stderr
    (counted,) = [line for line in done.stderr.splitlines() if "sockets not listed: no permission" in line]
    summary = done.stdout.splitlines()[-1]
    assert " skipped (gone, or no permission)" in summary, summary
    skipped = int(summary.split("; ")[-1].split()[0])
    assert 1 <= int(counted.split(": ", 1)[1].split()[0]) <= skipped, (counted, summary)


def _namespace() -> netns.Namespace:
    reason = netns.namespace_unavailable()
    if reason:
        if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
            pytest.fail(f"{reason}, but KAEXT_REQUIRE_NETNS=1")
        pytest.skip(reason)
    return netns.Namespace()


@pytest.mark.parametrize("order", ["other-first", "host-first", "all"])
def test_processes_in_two_network_namespaces_any_order_then_apply(implementation: str, order: str) -> None:
    """Every socket of each process, whichever namespace comes first; --apply reaches them all.

    The processes and, with ``--all``, the inspector run as a user of their own: ``--all
    --apply`` as root would change every other process's sockets on this machine too."""
    needs_other_users()
    with (
        _namespace() as ns,
        child("ipv4", client=[1, 31, 7, 5, 0], server=[1, 33, 9, 3, 0], netns=ns, user=TARGET_UID) as away,
        child("ipv4", client=[1, 32, 8, 6, 0], server=[1, 34, 5, 2, 0], user=TARGET_UID) as here,
    ):
        pids = {"other-first": [str(away.pid), str(here.pid)], "host-first": [str(here.pid), str(away.pid)]}
        args = pids.get(order, ["--all"])

        def inspect(*more: str) -> subprocess.CompletedProcess[str]:
            if order == "all":
                return run_cli_as(implementation, TARGET_UID, TARGET_UID, *args, *more)
            return run_cli(implementation, *args, *more)

        listed = inspect("--json")
        before = {c.pid: c.read() for c in (away, here)}
        applied = inspect("--apply", "7s:3s:4 user_timeout=19s", "--json")
        after = {c.pid: c.read() for c in (away, here)}
    assert listed.returncode in ((0, 1) if order == "all" else (0,)), listed.stderr
    assert applied.returncode in ((0, 1) if order == "all" else (0,)), applied.stderr
    for c in (away, here):
        rows = rows_of(listed.stdout, c.pid)
        assert {r["fd"] for r in rows.values()} == {c.sock(n)["fd"] for n in ("listener", "client", "server")}, c.pid
        for name in ("listener", "client", "server"):
            row = rows[c.sock(name)["fd"]]
            assert tuple(row["local"]) == tuple(c.sock(name)["local"]), (c.pid, name)
            assert (row["keepalive"], row["user_timeout"]) == as_json_state(before[c.pid][name]), (c.pid, name)
            assert after[c.pid][name] == [1, 7, 3, 4, 19000], (c.pid, name)  # what the process itself reads
        read_back = rows_of(applied.stdout, c.pid)
        assert {r["fd"] for r in read_back.values()} == set(rows), c.pid


@pytest.mark.one_implementation
def test_verdict_function(implementation: str) -> None:
    from kaext import Connection, KeepaliveState

    def conn(state: str, keepalive: KeepaliveState | None) -> Connection:
        return Connection(1, 3, "IPv4", ("127.0.0.1", 1), ("127.0.0.1", 2), state, keepalive, 0.0, "off", None, None)

    on = KeepaliveState(True, 60.0, 10.0, 5)
    assert inspect.verdict(conn("LISTEN", None)) is None
    assert inspect.verdict(conn("CLOSE_WAIT", on)) is None
    assert inspect.verdict(conn("ESTABLISHED", None)) == "UNREADABLE"
    assert inspect.verdict(conn("ESTABLISHED", on._replace(enabled=False))) == "KEEPALIVE OFF"
    assert inspect.verdict(conn("ESTABLISHED", on), 60) == "FIRST PROBE TOO LATE"
    assert inspect.verdict(conn("ESTABLISHED", on), math.nextafter(60, 61)) == "ok"

    # TCP_USER_TIMEOUT against idle + interval * count (60 + 10 * 5 = 110 s)
    def timed(user_timeout: float, keepalive: KeepaliveState = on) -> Connection:
        return Connection(
            1,
            3,
            "IPv4",
            ("127.0.0.1", 1),
            ("127.0.0.1", 2),
            "ESTABLISHED",
            keepalive,
            user_timeout,
            "keepalive",
            1.0,
            0,
        )

    assert inspect.verdict(timed(math.nextafter(110, 0))) == "USER TIMEOUT FIRST"
    assert inspect.verdict(timed(110.0)) == "ok"  # Policy.from_timeout's choice: equal
    assert inspect.verdict(timed(0.0)) == "ok"  # not set: the system default
    assert inspect.verdict(timed(19.0, on._replace(enabled=False))) == "KEEPALIVE OFF"
    assert inspect.verdict(timed(19.0), 60) == "FIRST PROBE TOO LATE"  # the middlebox's verdict first


@pytest.mark.one_implementation
def test_user_timeout_shorter_than_the_probes_fails(implementation: str) -> None:
    """The mix issue 17 saw under kaext-run: redis-py's asyncio client's own 30 s:5 s:3 over a
    policy's 19 s user timeout; Linux drops the connection after 19 s, before the 3rd probe."""
    with child("ipv4", client=[1, 30, 5, 3, 19000], server=[1, 30, 5, 3, 45000]) as c:
        done = run_cli(implementation, str(c.pid), "--json")
        table = run_cli(implementation, str(c.pid))
    rows = rows_of(done.stdout, c.pid)
    assert rows[c.sock("client")["fd"]]["verdict"] == "USER TIMEOUT FIRST"
    assert rows[c.sock("server")["fd"]]["verdict"] == "ok"  # 45 s = 30 + 5 * 3
    assert done.returncode == 1
    assert "USER TIMEOUT FIRST" in table.stdout and table.returncode == 1


@pytest.mark.one_implementation
def test_console_script(implementation: str) -> None:
    script = shutil.which("kaext-inspect", path=os.path.dirname(sys.executable)) or shutil.which("kaext-inspect")
    if script is None:
        pytest.skip("the kaext-inspect console script is not installed here")
    with child("ipv4", client=[1, 31, 7, 5, 0], server=[1, 31, 7, 5, 0]) as c:
        done = subprocess.run([script, str(c.pid), "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert len(rows_of(done.stdout, c.pid)) == 3
    bad = subprocess.run([script, "--idle-timeout", "5"], capture_output=True, text=True, timeout=60, check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "kaext-inspect: error: give one or more PIDs, or --all\n"  # under the name it was run as


@pytest.mark.one_implementation
def test_benchmark_smoke_run(implementation: str) -> None:
    """The benchmark still runs (small sizes; no timings are asserted)."""
    script = ROOT / "benchmarks" / "bench_connections.py"
    if not script.exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    done = subprocess.run(
        [sys.executable, str(script), "--json", "--repeats", "1", "--sizes", "20,60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sizes"] == [20, 60] and report["goals"] == []
    assert set(report["seconds"][report["implementation"]]) == {"20", "60"}


@pytest.mark.one_implementation
def test_readme_run_matches_the_table_format(implementation: str) -> None:
    """The documented real run shows the columns, summary and verdicts the inspector prints today."""
    page = ROOT / "docs" / "inspect.md"
    if not page.exists():
        pytest.skip("not a source checkout")
    section = page.read_text(encoding="utf-8")
    shown = section.split("```\n$ python -m kaext.inspect", 1)[1].split("```", 1)[0].splitlines()[1:]  # the output
    with child("ipv4", client=[1, 600, 60, 5, 0], server=[0, 7200, 75, 9, 0]) as c:
        done = run_cli(implementation, str(c.pid), "--middlebox", "aws-nlb")
    real = done.stdout.splitlines()
    assert shown[0].split() == real[0].split()
    assert {line.split("  ")[-1].strip() for line in shown[1:4]} == {"-", "FIRST PROBE TOO LATE", "KEEPALIVE OFF"}
    assert {line.split("  ")[-1].strip() for line in real[1:4]} == {"-", "FIRST PROBE TOO LATE", "KEEPALIVE OFF"}
    assert shown[4] == real[4] == "3 sockets, 2 judged, 2 failing (idle timeout 350 s, middlebox aws-nlb)"


# --------------------------------------------------------------------------------------
# Warnings and a reader that goes away: never a traceback
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    getattr(__import__("kaext").capabilities().get("user_timeout"), "option", None) != "TCP_USER_TIMEOUT",
    reason="only TCP_USER_TIMEOUT cuts keepalive probing short (the warning)",
)
def test_apply_policy_warning_is_one_line_and_under_w_error_a_usage_error(implementation: str) -> None:
    spec = "1:2:3 user_timeout=1"
    with child("ipv4") as c:
        done = run_cli(implementation, str(c.pid), "--apply", spec, "--json")
        applied = c.read()
        strict = subprocess.run(
            [sys.executable, "-W", "error", "-m", "kaext.inspect", str(c.pid), "--apply", "5:1:1 user_timeout=2"],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        after = c.read()
    # applied, and judged for what it is: a user timeout under the probes' 1 + 2 * 3 s
    assert done.returncode == 1, done.stderr
    assert {r["verdict"] for r in rows_of(done.stdout, c.pid).values()} == {None, "USER TIMEOUT FIRST"}
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m kaext.inspect: warning: user_timeout=1 s"), done.stderr
    assert applied["client"][:5] == [1, 1, 2, 3, 1000]  # applied all the same (plain getsockopt in the child)
    assert "--apply: user_timeout=2 s is shorter" in one_line_error(strict)
    assert after == applied  # refused before anything was applied


@pytest.mark.one_implementation
def test_summary_counts_read_as_english(capsys: pytest.CaptureFixture[str]) -> None:
    with child("ipv4") as c:  # a listener and both ends of a connection: 3 sockets
        assert inspect.main([str(c.pid)]) in (0, 1)
        many = capsys.readouterr().out.splitlines()[-1]
    # one process holding exactly one TCP socket
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys; s = socket.create_server(('127.0.0.1', 0)); print(1, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.readline()
        try:
            assert inspect.main([str(proc.pid)]) == 0
        finally:
            proc.stdin.close()
        one = capsys.readouterr().out.splitlines()[-1]
    assert many.startswith("3 sockets, 2 judged, "), many
    assert one == "1 socket, 0 judged, 0 failing", one


def test_why_options_were_not_read_one_line_per_process() -> None:
    """The reason of a process's UNREADABLE rows, once per process and reason on stderr, with
    the number of sockets; with --all one line per kind of reason, the processes counted."""
    from kaext import Connection

    def row(pid: int, reason: str | None) -> Connection:
        return Connection(pid, 3, "IPv4", ("127.0.0.1", 1), ("127.0.0.1", 2), "ESTABLISHED", None, None, None, None,
                          None, reason, 1)  # fmt: skip

    rows = [row(11, "why"), row(12, "why"), row(12, "why"), row(13, None), row(14, "other")]
    assert inspect._unread(rows, counted=False) == [
        "pid 11: options of 1 socket not read: why",
        "pid 12: options of 2 sockets not read: why",
        "pid 14: options of 1 socket not read: other",
    ]
    assert inspect._unread(rows, counted=True) == [
        "3 sockets of 2 processes: options not read: why",
        "1 socket of 1 process: options not read: other",
    ]
