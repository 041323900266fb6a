#!/usr/bin/env bash
# The verifier through its installed console script (proves the entry point), with the
# live kernel-timer check, then every benchmark's goals (benchmarks/run_goals.py runs
# each benchmarks/bench_*.py): a MISS is reported, not a failure.
set -euo pipefail
kaext-verify --quiet --live
kaext-verify --json --live > /dev/null
python benchmarks/run_goals.py
