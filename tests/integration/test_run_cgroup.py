"""``kaext-run --cgroup`` stopped the way systemd, Kubernetes and a terminal stop things:
the signal reaches COMMAND, kaext-run waits for it, then removes its cgroup and BPF programs.

Linux, root, cgroup v2, the C extension; skips otherwise (fails in CI: ``KAEXT_REQUIRE_BPF=1``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("kaext-run --cgroup is Linux-only", allow_module_level=True)

import kaext
from kaext import enforce

REQUIRED = os.environ.get("KAEXT_REQUIRE_BPF") == "1"

# Says where it runs, then waits; a forwarded signal is written to the file argv[1] and
# ends it with status 7 (a status of its own, so kaext-run's passing it on is seen).
COMMAND = r"""
import os, signal, sys, time
def got(signum, frame):
    with open(sys.argv[1], "w") as f:
        f.write(str(signum))
    os._exit(7)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, got)
cgroup = open("/proc/self/cgroup").read().strip().split("::", 1)[1]
print(os.getpid(), cgroup, flush=True)
time.sleep(60)
os._exit(0)
"""


def _skip_reason() -> str | None:
    if kaext.IMPLEMENTATION != "c":
        # the pure-Python rerun: --cgroup is the extension's (test_enforce checks ENOSYS there)
        pytest.skip("kaext-run --cgroup needs the C extension; this run uses the pure-Python backend")
    if os.geteuid() != 0:
        return "kaext-run --cgroup needs root"
    try:
        enforce.own_cgroup()
    except OSError as exc:
        return f"no cgroup v2 here: {exc}"
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_reaches_the_command_and_nothing_is_left(signum: signal.Signals, tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.fail(reason) if REQUIRED else pytest.skip(reason)
    mount = Path(enforce.own_cgroup())
    while not (mount / "cgroup.procs").exists() or mount.parent != mount and (mount.parent / "cgroup.procs").exists():
        mount = mount.parent
    marker = tmp_path / "signal"
    runner = subprocess.Popen(
        [sys.executable, "-m", "kaext.run", "--cgroup", "--policy", "on", "--", sys.executable, "-c", COMMAND,
         str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    child, path = 0, ""
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        if not line:
            assert runner.stderr is not None
            reason = f"kaext-run --cgroup did not start: {runner.stderr.read().strip()}"
            pytest.fail(reason) if REQUIRED else pytest.skip(reason)
        pid, cgroup = line.split()
        child = int(pid)
        path = str(mount) + cgroup
        assert Path(path).name.startswith("kaext-run-"), path
        assert path in [e.cgroup for e in enforce.enforcements()]  # attached while it runs
        runner.send_signal(signum)  # to kaext-run alone, as systemd and the kubelet send it
        status = runner.wait(30)
        assert marker.read_text() == str(int(signum)), "the command did not get the signal"
        assert status == 7, (status, runner.stderr.read() if runner.stderr else "")
        assert not Path(path).exists()
        assert path not in [e.cgroup for e in enforce.enforcements()]
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        for pid in (runner.pid, child):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        runner.wait(10)
        deadline = time.monotonic() + 10
        while child and Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if path and Path(path).exists():  # what a runner killed too early left behind
            enforce.detach(path)
            enforce._remove_cgroup(path)


def test_a_signal_before_the_command_starts_is_passed_on_once_it_has(tmp_path: Path) -> None:
    """SIGTERM while the cgroup is being set up: the command gets it as soon as it runs."""
    reason = _skip_reason()
    if reason is not None:
        pytest.fail(reason) if REQUIRED else pytest.skip(reason)
    before = set(os.listdir(enforce.own_cgroup()))
    marker = tmp_path / "signal"
    runner = subprocess.Popen(
        [sys.executable, "-m", "kaext.run", "--cgroup", "--policy", "on", "--", sys.executable, "-c",
         "import time; time.sleep(0.5)"],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not set(os.listdir(enforce.own_cgroup())) - before:  # its cgroup is made: setting up
            assert time.monotonic() < deadline and runner.poll() is None
            time.sleep(0.001)
        runner.send_signal(signal.SIGTERM)
        status = runner.wait(30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        for left in set(os.listdir(enforce.own_cgroup())) - before:  # what a runner killed too early left behind
            path = os.path.join(enforce.own_cgroup(), left)
            for pid in Path(path, "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
            enforce.detach(path)
            enforce._remove_cgroup(path)
    assert status in (128 + signal.SIGTERM, 0), status  # killed by it, or it had already ended
    assert set(os.listdir(enforce.own_cgroup())) == before
    assert not marker.exists()
