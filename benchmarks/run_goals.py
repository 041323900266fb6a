#!/usr/bin/env python3
"""Every speed and size goal in one report: runs each ``benchmarks/bench_*.py`` and collects its goals.

Each benchmark script prints its goals as lines ``GOAL <name>: <measured> (goal
<op> <target>) PASS|MISS``; this runner runs them one after the other with this
interpreter, collects those lines and prints them together, with a count of
PASS and MISS.  ``--wheel PATH`` adds the size goal of a built wheel with the
C extension (at most 120 kB; ``.ci/steps/20-wheels.sh`` enforces it on the
wheels it builds).  A MISS, or a benchmark that cannot run here, is reported, not
an error: the runner exits 0 unless it finds no benchmark at all.

    python benchmarks/run_goals.py [--json] [--wheel PATH] [--only NAME ...] [-v]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_WHEEL_BYTES = 120_000
TIMEOUT_S = 900  # per benchmark script

GOAL_LINE = re.compile(
    r"^GOAL (?P<name>[^:]+): (?P<measured>.*?) \(goal (?P<op>\S+) (?P<target>[^)]*)\) (?P<result>PASS|MISS)\b(?P<rest>.*)$"
)


def parse_goals(text: str) -> list[dict[str, str]]:
    """The GOAL lines in a benchmark's output, each as a dict of its parts."""
    goals: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        m = GOAL_LINE.match(line.strip())
        if m and m["name"] not in goals:  # a goal printed twice (stdout and stderr) counts once
            goals[m["name"]] = {**m.groupdict(), "line": line.strip()}
    return list(goals.values())


def run_script(script: Path, verbose: bool) -> tuple[list[dict[str, str]], str]:
    """Run one benchmark; its goals and a note when it did not run cleanly."""
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [], f"{script.name}: did not finish within {TIMEOUT_S} s"
    if verbose:
        print(f"--- {script.name} ({time.monotonic() - start:.0f} s)")
        print(proc.stdout, end="")
    goals = parse_goals(proc.stdout + "\n" + proc.stderr)
    note = ""
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        note = f"{script.name}: exit {proc.returncode}: {tail}"
    elif not goals:
        note = f"{script.name}: printed no GOAL line"
    for g in goals:
        g["script"] = script.name
    return goals, note


def wheel_goal(wheel: Path) -> dict[str, str]:
    size = wheel.stat().st_size
    result = "PASS" if size <= MAX_WHEEL_BYTES else "MISS"
    line = f"GOAL wheel_size: {size} bytes (goal <= {MAX_WHEEL_BYTES} bytes) {result}  [{wheel.name}]"
    return {**parse_goals(line)[0], "script": "run_goals.py"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the goals as JSON")
    p.add_argument("--wheel", type=Path, help="a built wheel with the C extension: check its size")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmark scripts (bench_apply.py ...)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show each benchmark's full output")
    args = p.parse_args(argv)

    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.name in args.only or s.stem in args.only]
    if not scripts:
        print("run_goals.py: no benchmark scripts found", file=sys.stderr)
        return 2
    goals: list[dict[str, str]] = []
    notes: list[str] = []
    for script in scripts:
        found, note = run_script(script, args.verbose)
        goals += found
        if note:
            notes.append(note)
    if args.wheel is not None:
        goals.append(wheel_goal(args.wheel))
    else:
        notes.append("wheel_size: not measured (no --wheel given; .ci/steps/20-wheels.sh checks the wheels it builds)")

    passed = sum(g["result"] == "PASS" for g in goals)
    if args.json:
        print(json.dumps({"goals": goals, "pass": passed, "miss": len(goals) - passed, "notes": notes}, indent=2))
        return 0
    width = max((len(g["script"]) for g in goals), default=0)
    print(f"goals from {', '.join(s.name for s in scripts)} (one run each):")
    for g in goals:
        print(f"  {g['script']:<{width}}  {g['line']}")
    for note in notes:
        print(f"  note: {note}")
    print(f"{passed} PASS, {len(goals) - passed} MISS (a MISS is reported, not a failure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
