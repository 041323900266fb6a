"""The README's two set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.one_implementation


def _readme_commands() -> list[str]:
    if not (ROOT / "README.md").exists():
        pytest.skip("not a source checkout (tests run from an installed wheel)")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S)
    assert block, "the Quick start section has no ```sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_a_verifier_and_a_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m kaext.verify")
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    if not (ROOT / ".ci" / "run").exists():
        pytest.skip("not a source checkout")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci
