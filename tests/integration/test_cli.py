"""What every command-line tool shares: the name it speaks under, one-line usage errors, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.one_implementation

# tool -> arguments that are a usage error for it
TOOLS = {
    "verify": ["--bogus"],
    "inspect": ["--bogus"],
    "run": ["--policy", "aws-nlb"],  # no COMMAND
    "enforce": [],  # no CGROUP
    "probe": [],  # no HOST PORT
    "watch": [],  # no --cgroup PATH or --all
    "testing": [],  # no COMMAND
}


def _script(tool: str | None) -> str:
    """The console script ``kaext-TOOL`` (the umbrella ``kaext`` for None) next to this Python."""
    name = "kaext" if tool is None else f"kaext-{tool}"
    found = shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip(f"{name} is not installed next to this Python")
    return found


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_console_script_speaks_under_its_own_name(tool: str) -> None:
    proc = subprocess.run([_script(tool), *TOOLS[tool]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kaext-{tool}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_module_speaks_as_python_m(tool: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"kaext.{tool}", *TOOLS[tool]], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m kaext.{tool}: error: "), proc.stderr


# tool -> arguments it takes, before which an unknown option is reported
VALID = {
    "verify": [],
    "inspect": ["--all"],
    "run": ["--policy", "aws-nlb"],
    "enforce": ["--list"],
    "probe": ["127.0.0.1", "1"],
    "watch": ["--all"],
    "testing": [],
}


def test_these_tables_name_every_tool() -> None:
    """A tool added to ``kaext.__main__.TOOLS`` is in every parametrized test of this module."""
    from kaext.__main__ import TOOLS as ALL_TOOLS

    assert set(TOOLS) == set(VALID) == set(ALL_TOOLS)


@pytest.mark.parametrize("tool", sorted(VALID))
def test_control_characters_in_an_argument_are_shown_escaped(tool: str) -> None:
    argv = [sys.executable, "-m", f"kaext.{tool}", *VALID[tool], "--bad\x1b[2Jarg"]
    if tool == "run":
        argv += ["--", "true"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert "\x1b" not in proc.stderr and "\\x1b" in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def _over_the_top_idle() -> str:
    import kaext

    knob = kaext.capabilities()["idle"]
    return str(knob.max // (knob.per_second or 1) + 1)


# tool -> arguments with a --policy / --apply spec (SPEC filled in)
WITH_SPEC = {
    "verify": ["--idle-timeout", "350", "--policy", "SPEC"],
    "inspect": [str(os.getpid()), "--apply", "SPEC"],
    "run": ["--policy", "SPEC", "--", "true"],
}


@pytest.mark.parametrize("tool", sorted(WITH_SPEC))
def test_a_range_error_is_about_the_range(tool: str) -> None:
    """--policy 32768 (idle just above Linux's range) says the range, not 'or a middlebox name'."""
    spec = _over_the_top_idle()
    argv = [sys.executable, "-m", f"kaext.{tool}", *(spec if a == "SPEC" else a for a in WITH_SPEC[tool])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert len(proc.stderr.splitlines()) == 1 and "out of range" in proc.stderr, proc.stderr
    assert "middlebox" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("tool", sorted(WITH_SPEC))
def test_a_middlebox_name_in_capitals_is_a_policy(tool: str) -> None:
    argv = [sys.executable, "-m", f"kaext.{tool}", *("AWS-NLB" if a == "SPEC" else a for a in WITH_SPEC[tool])]
    if tool == "inspect":
        argv[4:6] = ["--middlebox", "Aws-Nlb"]  # the process's own sockets: judged, not changed
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc  # 1: a check or verdict failed, not a usage error
    assert "error" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------
# The umbrella command: kaext TOOL ... and python -m kaext TOOL ...
# --------------------------------------------------------------------------------------


def _ways(tool: str) -> dict[str, list[str]]:
    """Every way to start ``tool``, by the name it should speak under."""
    return {
        f"kaext-{tool}": [_script(tool)],
        f"python -m kaext.{tool}": [sys.executable, "-m", f"kaext.{tool}"],
        f"kaext {tool}": [_script(None), tool],
        f"python -m kaext {tool}": [sys.executable, "-m", "kaext", tool],
    }


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_way_to_start_a_tool_speaks_under_that_name(tool: str) -> None:
    for name, argv in _ways(tool).items():
        proc = subprocess.run([*argv, *TOOLS[tool]], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (name, proc)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), (name, proc.stderr)
        usage = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
        assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {name} "), (name, usage.stdout[:200])


@pytest.mark.parametrize("tool", [*sorted(TOOLS), None])
def test_version_everywhere(tool: str | None) -> None:
    import kaext

    ways = _ways(tool) if tool else {"kaext": [_script(None)], "python -m kaext": [sys.executable, "-m", "kaext"]}
    for name, argv in ways.items():
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"kaext {kaext.__version__}\n", ""), name


def test_the_umbrella_runs_the_tool_with_the_rest_of_the_arguments() -> None:
    import json

    for argv in ([_script(None)], [sys.executable, "-m", "kaext"]):
        proc = subprocess.run(
            [*argv, "inspect", str(os.getpid()), "--json"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode in (0, 1), proc
        fds = {c["fd"] for c in json.loads(proc.stdout)["connections"]}
        assert all(isinstance(fd, int) for fd in fds)
        show = "import kaext; print(repr(kaext.injected()))"
        run = subprocess.run(
            [*argv, "run", "--policy", "aws-nlb", "--", sys.executable, "-c", show],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run
        import kaext

        assert run.stdout.strip() == repr(kaext.Policy.for_middlebox("aws-nlb"))


@pytest.mark.parametrize("args", [[], ["bogus"], ["--bogus"], ["Inspect"]])
def test_the_umbrella_without_a_tool_is_a_usage_error(args: list[str]) -> None:
    for name, argv in {"kaext": [_script(None)], "python -m kaext": [sys.executable, "-m", "kaext"]}.items():
        proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), proc.stderr
        assert all(tool in lines[0] for tool in TOOLS), proc.stderr


def test_the_umbrella_help_lists_the_tools() -> None:
    proc = subprocess.run([sys.executable, "-m", "kaext", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m kaext "), proc
    assert all(f"  {tool} " in proc.stdout for tool in TOOLS), proc.stdout


# --------------------------------------------------------------------------------------
# Warnings: one line, once per process tree
# --------------------------------------------------------------------------------------

SHORT_USER_TIMEOUT = "7s:3s:4 user_timeout=5s"  # warns: the user timeout cuts the 19 s of probing short
CHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import socket'], check=True)"


@pytest.mark.parametrize("how", ["script", "module", "umbrella"])
def test_kaext_run_warns_once_in_one_line(how: str) -> None:
    name, argv = {
        "script": ("kaext-run", [_script("run")]),
        "module": ("python -m kaext.run", [sys.executable, "-m", "kaext.run"]),
        "umbrella": ("python -m kaext run", [sys.executable, "-m", "kaext", "run"]),
    }[how]
    proc = subprocess.run(
        [*argv, "--policy", SHORT_USER_TIMEOUT, "--", sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{name}: warning: user_timeout=5 s is shorter than"), proc.stderr


@pytest.mark.parametrize("tool", ["verify", "enforce"])
def test_every_tool_warns_in_one_line(tool: str) -> None:
    args = {
        "verify": ["--idle-timeout", "350", "--policy", SHORT_USER_TIMEOUT],
        "enforce": [f"/nonexistent-cgroup-{os.getpid()}", "--policy", SHORT_USER_TIMEOUT],
    }[tool]
    proc = subprocess.run([sys.executable, "-m", f"kaext.{tool}", *args], capture_output=True, text=True, timeout=120)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert warnings == [line for line in warnings if line.startswith(f"python -m kaext.{tool}: warning: ")], proc
    assert len(warnings) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_kaext_run_under_w_error_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "kaext.run", "--policy", SHORT_USER_TIMEOUT, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m kaext.run: error: --policy: user_timeout=5 s"), proc


# -- the one tool runner (kaext._cli.run_tool): the same ways out for every tool that uses it ----

#: tool -> the function its main runs inside kaext._cli.run_tool (replaced below by one that
#: raises, warns or returns).
RUNNER_BODY = {
    "verify": "_main",
    "inspect": "_run",
    "run": "_main",
    "enforce": "_main",
    "probe": "_main",
    "watch": "_main",
    "testing": "_main",
}
#: The tools not on the runner yet, and why (each is named here, so a new tool cannot be left out silently).
NOT_ON_THE_RUNNER: dict[str, str] = {}
#: tool -> the one line it says on Ctrl-C (after its name); the others say nothing.
INTERRUPTED = {"probe": ": interrupted; every connection is closed\n"}


def test_the_runner_table_names_every_tool() -> None:
    """Every tool in ``kaext.__main__.TOOLS`` is tested through the runner, or named as not on it."""
    from kaext.__main__ import TOOLS as ALL_TOOLS

    assert set(RUNNER_BODY) | set(NOT_ON_THE_RUNNER) == set(ALL_TOOLS)
    assert not set(RUNNER_BODY) & set(NOT_ON_THE_RUNNER)


_BODY = {"verify": "_main", "inspect": "_run", "run": "_main"}

_BODY = """
import errno, sys, warnings
import kaext.{tool} as tool
from kaext._cli import UsageError
def body(*args, **kwargs):
    {action}
setattr(tool, {name!r}, body)
sys.exit(tool.main([]))
"""

#: what the tool's work does -> (exit status, stderr after the tool's name)
WAYS_OUT = {
    "raise KeyboardInterrupt": (130, ""),
    "raise BrokenPipeError(errno.EPIPE, 'Broken pipe')": (2, ""),
    "raise PermissionError(errno.EACCES, 'Permission denied')": (2, ": error: Permission denied\n"),
    "raise UsageError('give PIDs or --all, not both')": (2, ": error: give PIDs or --all, not both\n"),
    "warnings.warn('a user timeout cuts probing short', RuntimeWarning); "
    "warnings.warn('a user timeout cuts probing short', RuntimeWarning); return 0": (
        0,
        ": warning: a user timeout cuts probing short\n",
    ),
}


@pytest.mark.parametrize("action", sorted(WAYS_OUT))
@pytest.mark.parametrize("tool", sorted(RUNNER_BODY))
def test_every_way_out_of_a_tool_is_one_exit_status_and_at_most_one_line(tool: str, action: str) -> None:
    """Ctrl-C 130 (with at most one line), a reader gone 2 and quiet, a system error or a usage
    error one line and 2 (no traceback), a warning one line once: the same for every tool,
    through the one runner."""
    code = _BODY.format(tool=tool, action=action, name=RUNNER_BODY[tool])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    status, said = WAYS_OUT[action]
    if action == "raise KeyboardInterrupt":
        said = INTERRUPTED.get(tool, "")
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == (f"python -m kaext.{tool}{said}" if said else ""), proc.stderr


def test_the_runner_is_what_those_tools_run() -> None:
    """Each tool in RUNNER_BODY imports the runner (so the test above is about them)."""
    import importlib

    from kaext import _cli

    for tool in RUNNER_BODY:
        assert importlib.import_module(f"kaext.{tool}").run_tool is _cli.run_tool, tool
