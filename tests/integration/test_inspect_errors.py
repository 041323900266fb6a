"""kaext-inspect names the real cause: a seccomp filter that refuses pidfd_getfd (as
systemd-nspawn's default filter does) is not "no ptrace rights"; an unprivileged ``--all``
counts the processes it may not list in one line instead of naming each.

Real processes, a real seccomp filter (tests/support/seccomp.py: prctl(PR_SET_SECCOMP)),
real user switches (setpriv, util-linux).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import seccomp
from processes import OTHER_UID, cli_env

from kaext import _platform

pytestmark = pytest.mark.skipif(_platform.CONNECTIONS != "proc", reason="Linux /proc and pidfd_getfd")

HOLDER = (
    "import socket, sys\n"
    "l = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n"
    "print('ready', flush=True); sys.stdin.read()\n"
)


@contextlib.contextmanager
def holder() -> Iterator[int]:
    """Another process holding a listener and both ends of one connection; yields its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def test_a_seccomp_filter_refusing_pidfd_getfd_is_named_as_such(implementation: str) -> None:
    with holder() as pid:
        inspector = [sys.executable, "-m", "kaext.inspect", str(pid), "--json"]
        done = subprocess.run(
            seccomp.command(seccomp.PIDFD_GETFD, errno.EPERM, inspector),
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=60,
        )
        free = subprocess.run(inspector, env=cli_env(implementation), capture_output=True, text=True, timeout=60)
    # the same inspector without the filter reads every socket: the filter is the one cause
    assert [c["reason"] for c in json.loads(free.stdout)["connections"]] == [None] * 3, free.stdout
    connections = json.loads(done.stdout)["connections"]
    assert len(connections) == 3 and all(c["keepalive"] is None for c in connections), done.stdout
    (reason,) = {c["reason"] for c in connections}
    assert "seccomp filter refuses" in reason and "pidfd_getfd" in reason, reason
    assert "ptrace process" not in reason, reason
    (line,) = done.stderr.splitlines()  # one line for the three sockets
    assert line.endswith(f"pid {pid}: options of 3 sockets not read: {reason}"), line


def as_nobody(*caps: str) -> list[str]:
    spec = ",".join(["-all", *(f"+{c}" for c in caps)])
    return [
        "setpriv",
        f"--reuid={OTHER_UID}",
        f"--regid={OTHER_UID}",
        "--clear-groups",
        f"--inh-caps={spec}",
        f"--ambient-caps={spec}",
        f"--bounding-set={spec}",
        "--",
    ]


def _need_setpriv() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    probe = subprocess.run([*as_nobody(), sys.executable, "-c", "import kaext.inspect"], capture_output=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"uid {OTHER_UID} cannot run this interpreter")


@pytest.mark.root
def test_missing_ptrace_rights_are_not_blamed_on_seccomp(implementation: str) -> None:
    """uid 65534 with CAP_DAC_READ_SEARCH (lists the descriptors) but not CAP_SYS_PTRACE."""
    _need_setpriv()
    with holder() as pid:
        done = subprocess.run(
            [*as_nobody("dac_read_search"), sys.executable, "-m", "kaext.inspect", str(pid), "--json"],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    assert "seccomp" not in done.stdout + done.stderr
    assert "ptrace" in done.stdout + done.stderr or "no permission" in done.stderr, (done.stdout, done.stderr)


def _owner(pid: str) -> int | None:
    """The uid of /proc/PID (None: the process is gone meanwhile)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


@pytest.mark.root
@pytest.mark.parametrize("output", ["table", "--prometheus"])
def test_unprivileged_all_counts_unlistable_processes_in_one_line(implementation: str, output: str) -> None:
    """Before: one line per process of another user (124 on a small host)."""
    _need_setpriv()
    if output == "--prometheus":
        pytest.importorskip("prometheus_client")
    with holder() as pid:
        done = subprocess.run(
            [*as_nobody(), sys.executable, "-m", "kaext.inspect", "--all", *([output] if output != "table" else [])],
            env=cli_env(implementation),
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        others = sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(p) not in (OTHER_UID, None))
    # the table's exit status is its verdicts' (uid 65534 may run processes of its own here)
    assert done.returncode in ((0,) if output == "--prometheus" else (0, 1)), done.stderr
    # one line for every process it may not list (others may say why some options were not read)
    (line,) = [ln for ln in done.stderr.splitlines() if "sockets not listed" in ln]
    assert not [ln for ln in done.stderr.splitlines() if f"pid {pid}:" in ln], done.stderr
    count, _, rest = line.removeprefix("python -m kaext.inspect: ").partition(" ")
    assert rest.startswith("processes: sockets not listed: no permission (other users' processes;"), line
    # every process not ours at the time of the run, give or take those that came and went
    assert pid and abs(int(count) - others) <= max(5, others // 10), (count, others)
    if output == "--prometheus":
        (gauge,) = [ln for ln in done.stdout.splitlines() if ln.startswith("kaext_inspect_unlisted_processes ")]
        assert float(gauge.split()[1]) == int(count)
