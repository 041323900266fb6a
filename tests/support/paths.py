"""Where things are, for every test module whatever its folder."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent  # the checkout: ext/, docs/, benchmarks/, pyproject.toml
DATA = TESTS / "data"  # reference data from the OS sources (never from the implementation)
