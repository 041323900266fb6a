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
}


def _script(tool: str) -> str:
    found = shutil.which(f"kaext-{tool}", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip(f"kaext-{tool} is not installed next to this Python")
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
    proc = subprocess.run([sys.executable, "-m", f"kaext.{tool}", *TOOLS[tool]], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m kaext.{tool}: error: "), proc.stderr


# tool -> arguments it takes, before which an unknown option is reported
VALID = {"verify": [], "inspect": ["--all"], "run": ["--policy", "aws-nlb"], "enforce": ["--list"],
         "probe": ["127.0.0.1", "1"]}


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
