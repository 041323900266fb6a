#!/usr/bin/env bash
# The verifier through its installed console script (proves the entry point), with the
# live kernel-timer check, then the benchmark (reports ratios; not a pass/fail gate).
set -euo pipefail
kaext-verify --quiet --live
kaext-verify --json --live > /dev/null
python benchmarks/bench_apply.py
