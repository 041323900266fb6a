"""The verifier, ``python -m kaext.verify``: run for real, as a subprocess and in-process."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from paths import DATA, ROOT

import kaext
from kaext import verify

REFERENCE = json.loads((DATA / "reference.json").read_text())
TOP_LEVEL = {"platform", "kernel", "python", "kaext", "implementation", "results", "ok"}
ROW_KEYS = {
    "socket",
    "family",
    "state",
    "check",
    "knob",
    "option",
    "constant",
    "unit",
    "set_seconds",
    "set_native",
    "kaext",
    "socket_getsockopt",
    "verdict",
    "ok",
    "detail",
}
HAS_PROC_TCP = os.path.exists("/proc/net/tcp")
UNITS_PER_SECOND = {"s": 1, "ms": 1000, "probes": 1}


def run_cli(implementation: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m kaext.verify ARGS`` in a fresh interpreter using the implementation under test."""
    env = dict(os.environ)
    env.pop("KAEXT_NO_EXTENSIONS", None)
    if implementation == "python":
        env["KAEXT_NO_EXTENSIONS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "kaext.verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = verify.main(["--json", *args])
    return code, json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------


def test_subprocess_exit_0_and_json_schema(implementation: str) -> None:
    proc = run_cli(implementation, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) >= TOP_LEVEL
    assert "live" not in report
    assert report["implementation"] == implementation
    assert report["kaext"] == kaext.__version__
    assert report["kernel"] == platform.release()
    assert report["ok"] is True
    assert report["results"], "no checks were made"
    for row in report["results"]:
        assert set(row) == ROW_KEYS
        assert row["ok"] is True, row


def _verified() -> dict[str, kaext.Knob]:
    """The knobs the verifier's round trips cover: all but connect_timeout (proven by
    tests/integration/test_connect_unanswered.py with connects to a host that drops SYNs)."""
    return {name: knob for name, knob in kaext.capabilities().items() if name != "connect_timeout"}


def test_subprocess_table_is_readable(implementation: str) -> None:
    proc = run_cli(implementation)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    assert f"({implementation} implementation)" in out
    assert platform.release() in out
    for header in ("socket", "option=value", "set", "kaext read", "socket.getsockopt", "verdict"):
        assert header in out
    for name, knob in _verified().items():
        assert f"{knob.option}={knob.optname}" in out, name
    assert "FAILED" not in out
    assert out.rstrip().endswith("OK: every value round-trips")


def test_help_lists_every_option() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kaext.verify", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    for option in ("--json", "--live", "--idle-timeout", "--policy", "--quiet"):
        assert option in proc.stdout


def test_in_process_reports_the_implementation_in_use(capsys: pytest.CaptureFixture[str], implementation: str) -> None:
    code, report = run_json(capsys)
    assert code == 0
    assert report["implementation"] == implementation
    assert report["ok"] is True


def test_every_knob_at_both_range_ends_on_every_socket(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys)
    assert code == 0
    rows = report["results"]
    sockets = {row["socket"] for row in rows}
    assert {"IPv4 unconnected", "IPv4 listening", "IPv4 connected", "IPv4 accepted"} <= sockets
    caps = _verified()
    assert caps, "no knob supported"
    for sock in sockets:
        for name, knob in caps.items():
            tried = {
                row["set_native"]
                for row in rows
                if row["socket"] == sock and row["knob"] == name and row["check"] == "roundtrip" and row["ok"]
            }
            assert {knob.min, knob.max} <= tried, (sock, name, tried)
            assert len(tried) >= 3, (sock, name, tried)
        states = [row["set_native"] for row in rows if row["socket"] == sock and row["check"] == "keepalive"]
        assert sorted(states) == [0, 1]


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux ranges from the kernel sources")
def test_linux_range_ends_are_the_kernel_limits(capsys: pytest.CaptureFixture[str]) -> None:
    """The ends tried are the kernel's (include/net/tcp.h), not just whatever kaext claims."""
    ranges = REFERENCE["ranges"]["linux"]
    expected = {
        "idle": ranges["idle"],
        "interval": ranges["interval"],
        "count": ranges["count"],
        "user_timeout": ranges["user_timeout_ms"],
    }
    code, report = run_json(capsys)
    assert code == 0
    for knob, (lo, hi) in expected.items():
        ok = {r["set_native"] for r in report["results"] if r["knob"] == knob and r["check"] == "roundtrip" and r["ok"]}
        assert {lo, hi} <= ok, knob
        rejected = {r["set_native"] for r in report["results"] if r["knob"] == knob and r["check"] == "out_of_range"}
        assert {lo - 1, hi + 1} <= rejected, knob


def test_out_of_range_values_are_rejected_before_the_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys)
    assert code == 0
    rows = [r for r in report["results"] if r["check"] == "out_of_range"]
    assert not [r for r in report["results"] if r["knob"] == "connect_timeout"]
    for name, knob in _verified().items():
        mine = {r["set_native"]: r for r in rows if r["knob"] == name and r["socket"] == "IPv4 connected"}
        assert set(mine) == {knob.min - 1, knob.max + 1}, name
        for row in mine.values():
            assert row["verdict"] == "rejected", row
            assert row["detail"].startswith("ValueError"), row
            assert name in row["detail"]


def test_expected_values_round_up_to_the_os_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys)
    assert code == 0
    fractional = 0
    for row in report["results"]:
        if row["check"] != "roundtrip":
            continue
        exact = Fraction(str(row["set_seconds"])) * UNITS_PER_SECOND[row["unit"]]
        assert row["set_native"] == math.ceil(exact), row
        fractional += exact.denominator != 1
    assert fractional, "no fractional value was tried"


def test_quiet_prints_only_the_summary_when_all_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert verify.main(["--quiet"]) == 0
    out = capsys.readouterr().out
    assert "option=value" not in out
    assert " 0 failed" in out


# ---------------------------------------------------------------------------------------
# Failing cases: the verifier can say no
# ---------------------------------------------------------------------------------------


def test_judge() -> None:
    assert verify.judge(7, 7, 7) == "ok"
    assert verify.judge(7, 7, None) == "ok"  # Python lacks the constant
    assert verify.judge(7, 7, 8) == "MISMATCH"  # kaext reads something else than the kernel says
    assert verify.judge(32768, 32767, 32767) == "CLAMPED"
    assert verify.judge(7, None, 7) == "MISMATCH"  # kaext claims it cannot read a readable knob
    assert verify.judge(7, None, None, readable=False) == "write-only"
    assert verify.passed("ok") and verify.passed("rejected") and verify.passed("write-only")
    assert not any(verify.passed(v) for v in ("CLAMPED", "REFUSED", "MISMATCH", "NOT REJECTED", "TOO LATE"))


@pytest.mark.skipif("user_timeout" not in kaext.capabilities(), reason="no user timeout on this platform")
def test_a_lying_reader_gives_mismatch_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kaext.get_user_timeout
    monkeypatch.setattr(kaext, "get_user_timeout", lambda sock: (real(sock) or 0) + 0.001)
    code, report = run_json(capsys)
    assert code == 1
    assert report["ok"] is False
    bad = [r for r in report["results"] if not r["ok"]]
    assert bad and {r["verdict"] for r in bad} == {"MISMATCH"}
    assert {r["knob"] for r in bad} == {"user_timeout"}
    verify.main(["--quiet"])
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "FAILED" in out


def test_a_range_check_that_lets_values_through_gives_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If kaext passed an out-of-range value on, the verifier would say so."""
    monkeypatch.setattr(kaext, "set_keepalive", lambda sock, **knobs: None)
    code, report = run_json(capsys)
    assert code == 1
    verdicts = {r["verdict"] for r in report["results"] if r["check"] == "out_of_range" and r["knob"] == "idle"}
    assert verdicts == {"NOT REJECTED"}


def test_idle_timeout_too_short_for_the_policy_exits_1(capsys: pytest.CaptureFixture[str], implementation: str) -> None:
    code, report = run_json(capsys, "--idle-timeout", "5", "--policy", "7s:3s:4")
    assert code == 1
    check = report["idle_timeout"]
    assert check["ok"] is False and check["verdict"] == "TOO LATE"
    assert check["idle"] == 7.0
    proc = run_cli(implementation, "--idle-timeout", "5", "--policy", "7s:3s:4")
    assert proc.returncode == 1
    assert "TOO LATE" in proc.stdout


def test_idle_timeout_met(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--idle-timeout", "350", "--policy", "5m:30s:4")
    assert code == 0
    check = report["idle_timeout"]
    assert check["ok"] is True
    assert check["idle"] == 300.0 and check["margin"] == 50.0


def test_idle_timeout_equal_to_idle_is_too_late(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--idle-timeout", "300", "--policy", "5m:30s:4")
    assert code == 1


def test_idle_timeout_with_keepalive_off_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--idle-timeout", "350", "--policy", "off")
    assert code == 1
    assert report["idle_timeout"]["keepalive"] is False


def test_idle_timeout_without_policy_uses_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(kaext.Policy, "for_idle_timeout"):
        with pytest.raises(SystemExit) as exc:
            verify.main(["--idle-timeout", "350"])
        assert exc.value.code == 2
        return
    code, report = run_json(capsys, "--idle-timeout", "350")
    assert code == 0
    assert report["idle_timeout"]["source"] == "Policy.for_idle_timeout"
    assert report["idle_timeout"]["idle"] < 350


def test_policy_may_be_a_middlebox_name_as_for_the_inspector(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--idle-timeout", "350", "--policy", "aws-nlb")
    assert code == 0
    assert report["idle_timeout"]["source"] == "--policy"
    # what the kernel held on the loopback connection: the preset's idle, before the 350 s
    assert report["idle_timeout"]["idle"] == kaext.Policy.for_middlebox("aws-nlb").idle < 350


@pytest.mark.parametrize(
    "args", [["--policy", "nonsense"], ["--idle-timeout", "0", "--policy", "on"], ["--idle-timeout", "nan"]]
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        verify.main(args)
    assert exc.value.code == 2


# ---------------------------------------------------------------------------------------
# --live: the kernel's own keepalive timer
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PROC_TCP, reason="no /proc/net/tcp on this system")
@pytest.mark.parametrize(("spec", "idle"), [(None, 7.0), ("11s:2s:3", 11.0)])
def test_live_timer_is_armed_with_the_configured_idle(
    capsys: pytest.CaptureFixture[str], spec: str | None, idle: float
) -> None:
    args = ["--live"] + (["--policy", spec] if spec else [])
    code, report = run_json(capsys, *args)
    assert code == 0
    live = report["live"]
    assert live["available"] is True and live["ok"] is True
    assert live["connections"], "no connection was checked"
    for conn in live["connections"]:
        assert conn["timer"] == "keepalive", conn
        assert idle - 2 < conn["remaining"] <= idle, conn
        assert conn["peer_timer"] != "keepalive"  # the peer has no policy: the reading is per socket
        assert conn["idle"] == idle
        if conn["tcp_info"] is not None:
            assert conn["tcp_info"]["state"] == 1  # TCP_ESTABLISHED


def _inspected_timers() -> tuple[str | None, str | None]:
    """What ``kaext.connections()`` (kaext-inspect) calls the kernel's timer of a loopback
    connection with keepalive on, and of its peer without."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            kaext.Policy.parse(verify.LIVE_POLICY).apply(client)
            by_fd = {c.fd: c for c in kaext.connections()}
            return by_fd[client.fileno()].timer, by_fd[accepted.fileno()].timer


@pytest.mark.skipif(not HAS_PROC_TCP, reason="no /proc/net/tcp on this system")
def test_live_calls_the_timers_as_inspect_does(capsys: pytest.CaptureFixture[str]) -> None:
    """One kernel timer, one name: verify --live and kaext-inspect (Connection.timer) agree."""
    with_keepalive, without = _inspected_timers()
    assert (with_keepalive, without) == ("keepalive", "off")
    code, report = run_json(capsys, "--live")
    assert code == 0
    for conn in report["live"]["connections"]:
        assert (conn["timer"], conn["peer_timer"]) == (with_keepalive, without), conn
        assert conn["in_force"] is True, conn  # Policy.applied_to
    code, report = run_json(capsys, "--live", "--policy", "off")
    assert code == 0
    assert [c["timer"] for c in report["live"]["connections"]] == [without] * len(report["live"]["connections"])


@pytest.mark.skipif(not HAS_PROC_TCP, reason="no /proc/net/tcp on this system")
def test_live_subprocess(implementation: str) -> None:
    proc = run_cli(implementation, "--live", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    live = json.loads(proc.stdout)["live"]
    assert live["policy"] == str(kaext.Policy.parse(verify.LIVE_POLICY))
    assert all(6 - 1e-9 < c["remaining"] <= 7 for c in live["connections"])


@pytest.mark.skipif(not HAS_PROC_TCP, reason="no /proc/net/tcp on this system")
def test_live_policy_off_checks_that_no_keepalive_timer_runs(implementation: str) -> None:
    """--policy off is a policy like any other: the kernel must show no keepalive timer
    (on a socket whose keepalive was on before), and the run passes."""
    proc = run_cli(implementation, "--live", "--policy", "off", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    live = json.loads(proc.stdout)["live"]
    assert live["available"] is True and live["ok"] is True, live
    assert live["connections"], "no connection was checked"
    for conn in live["connections"]:
        assert conn["keepalive"] is False, conn
        assert conn["timer"] != "keepalive" and conn["verdict"] == "ok", conn
    text = run_cli(implementation, "--live", "--policy", "off")
    assert text.returncode == 0, text.stdout[-3000:] + text.stderr
    assert "FAILED" not in text.stdout and text.stdout.rstrip().endswith("OK: every value round-trips")


def test_live_without_a_timer_view_is_not_available_and_passes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(verify, "_PROC", {"IPv4": str(tmp_path / "tcp"), "IPv6": str(tmp_path / "tcp6")})
    code, report = run_json(capsys, "--live")
    assert code == 0
    assert report["live"]["available"] is False
    assert "not available" in report["live"]["detail"]


# ---------------------------------------------------------------------------------------
# The benchmark script still runs (a smoke run: no timings are asserted)
# ---------------------------------------------------------------------------------------


@pytest.mark.one_implementation
def test_benchmark_ratio_of_a_baseline_measured_as_zero_is_not_a_division_by_zero() -> None:
    """A baseline below the clock's resolution measures 0 us: no ratio (the goal reads n/a), no crash."""
    path = ROOT / "benchmarks" / "bench_apply.py"
    if not path.exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    spec = importlib.util.spec_from_file_location(f"bench_apply_{os.getpid()}", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    us = {"apply/kaext": 0.4, "apply/floor": 0.0}
    assert bench._ratio(us, "apply/kaext", "apply/floor") is None
    assert bench._ratio({"apply/kaext": 0.4, "apply/floor": 0.2}, "apply/kaext", "apply/floor") == 2.0
    goal = bench._goal("apply_vs_floor", bench._ratio(us, "apply/kaext", "apply/floor"), "x")
    assert bench.goal_line(goal) == "GOAL apply_vs_floor: n/a (goal <= 1.1x) MISS"


@pytest.mark.one_implementation
def test_benchmark_smoke_run() -> None:
    bench = ROOT / "benchmarks"
    if not (bench / "bench_apply.py").exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    proc = subprocess.run(
        [
            sys.executable,
            str(bench / "bench_apply.py"),
            "--json",
            "--repeats",
            "1",
            "--number",
            "50",
            "--import-runs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    cases = {"apply/kaext", "apply/plain", "read5/kaext", "read5/plain", "read4/kaext", "read4/plain"}
    assert cases <= set(report["us_per_op"]) and cases <= set(report["us_per_op_pure"])
    names = [
        "apply_vs_floor",
        "from_socket_vs_floor",
        "get_keepalive_vs_floor",
        "pure_apply_vs_plain",
        "pure_read_vs_plain",
        "import_ms",
    ]
    assert [g["name"] for g in report["goals"]] == names
    assert report["import"]["ms"] > 0
    # every goal also as a GOAL line, in the form benchmarks/run_goals.py collects
    spec = importlib.util.spec_from_file_location("run_goals", bench / "run_goals.py")
    assert spec is not None and spec.loader is not None
    run_goals = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_goals)
    lines = run_goals.parse_goals(proc.stderr)
    assert [g["name"] for g in lines] == names, proc.stderr
    assert {g["result"] for g in lines} <= {"PASS", "MISS"}


def test_the_verifier_names_the_mechanism_of_each_knob() -> None:
    import contextlib
    import io
    import json as _json

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert verify.main(["--json"]) == 0
    mechanisms = _json.loads(buf.getvalue())["mechanisms"]
    assert mechanisms["idle"] == "setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)"
    assert mechanisms["user_timeout"] == "setsockopt(IPPROTO_TCP, TCP_USER_TIMEOUT)"


# ---------------------------------------------------------------------------------------
# Arguments: never a traceback, one line and exit 2 for anything wrong or without effect
# ---------------------------------------------------------------------------------------


def _run_main(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = verify.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _assert_usage_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("python -m kaext.verify: error: "), err


@pytest.mark.one_implementation
@pytest.mark.parametrize("seconds", ["1", "1.5", "2", "2.5", "1e-300", "0.5"])
def test_idle_timeout_too_short_for_any_preset_is_a_usage_error(seconds: str) -> None:
    code, out, err = _run_main(["--idle-timeout", seconds])
    _assert_usage_error(code, out, err)
    assert "too short" in err


@pytest.mark.one_implementation
@pytest.mark.parametrize(
    "args",
    [["--policy", "5m:30s:4"], ["--json", "--policy", "on"], ["--json", "--quiet"], ["-q", "--json", "--live"]],
)
def test_a_flag_without_effect_is_a_usage_error(args: list[str]) -> None:
    code, out, err = _run_main(args)
    _assert_usage_error(code, out, err)
    assert "no effect" in err


@pytest.mark.one_implementation
def test_the_console_script_names_itself(tmp_path: Path) -> None:
    import shutil

    script = shutil.which("kaext-verify", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the kaext-verify console script is not installed next to this Python")
    proc = subprocess.run([script, "--policy", "on"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kaext-verify: error: --policy has no effect"), proc.stderr


@pytest.mark.one_implementation
def test_arbitrary_arguments_never_give_a_traceback() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    flags = st.sampled_from(
        [
            "--json",
            "-q",
            "--quiet",
            "--live",
            "--idle-timeout",
            "--policy",
            "--help",
            "-h",
            "--idle-timeout=",
            "--policy=",
            "--",
            "-",
            "--bogus",
            "-x",
        ]
    )
    numbers = st.sampled_from(
        [
            "1",
            "1.5",
            "2",
            "2.5",
            "3",
            "0",
            "-1",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "1e-300",
            "0x10",
            "350",
            "432000",
            "1e300",
            "",
            " ",
            "1_0",
        ]
    )
    specs = st.sampled_from(
        [
            "on",
            "off",
            "5m:30s:4",
            "::",
            "1:1:1",
            "32768",
            "0",
            "7s:3s:4 user_timeout=19s",
            "1:2:3:4",
            "user_timeout=5",
            "5m user_timeout=-1",
            "\x00",
            "é",
            "on off",
        ]
    )
    argv = st.lists(st.one_of(flags, numbers, specs, st.text(max_size=12)), max_size=6)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(argv)
    def check(args: list[str]) -> None:
        code, out, err = _run_main(args)
        assert "Traceback" not in err and "Traceback" not in out
        if code == 2:
            assert out == "" and len(err.splitlines()) == 1, (args, err)
        else:
            assert code in (0, 1) or (code == 0 and "usage" in out), (args, code)

    check()


# ---------------------------------------------------------------------------------------
# Output to a reader that goes away, and warnings: never a traceback
# ---------------------------------------------------------------------------------------


def test_output_into_a_closed_pipe_is_no_traceback(implementation: str) -> None:
    """``kaext-verify | head -1``: the reader has gone away (here: before the first write)."""
    env = dict(os.environ)
    env.pop("KAEXT_NO_EXTENSIONS", None)
    if implementation == "python":
        env["KAEXT_NO_EXTENSIONS"] = "1"
    reader_fd, writer_fd = os.pipe()
    os.close(reader_fd)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kaext.verify"],
            stdout=writer_fd,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(writer_fd)
    assert done.stderr == "", done.stderr
    assert done.returncode == 2


@pytest.mark.skipif(
    getattr(kaext.capabilities().get("user_timeout"), "option", None) != "TCP_USER_TIMEOUT",
    reason="only TCP_USER_TIMEOUT cuts keepalive probing short (the warning)",
)
def test_a_policy_warning_is_one_line_and_under_w_error_a_usage_error(implementation: str) -> None:
    spec = "1:1:1 user_timeout=1"  # the kernel drops a probed connection after 1 s: before its probe
    done = run_cli(implementation, "--live", "--idle-timeout", "350", "--policy", spec)
    warned = [line for line in done.stderr.splitlines() if line]
    assert len(warned) == 1, done.stderr  # once, although the policy is made three times
    assert warned[0].startswith("python -m kaext.verify: warning: user_timeout=1 s is shorter than")
    env = dict(os.environ, KAEXT_NO_EXTENSIONS="1") if implementation == "python" else dict(os.environ)
    strict = subprocess.run(
        [sys.executable, "-W", "error", "-m", "kaext.verify", "--live", "--policy", spec],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert strict.returncode == 2 and "Traceback" not in strict.stderr, strict.stderr
    assert strict.stderr.count("\n") == 1 and "error: --policy: user_timeout=1 s" in strict.stderr
