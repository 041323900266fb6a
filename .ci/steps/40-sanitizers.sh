#!/usr/bin/env bash
# Hardening: the test suite against an ASan + UBSan build of the extension, then the
# leak check (flat RSS and tracemalloc over 200,000 apply + read-back rounds, error
# paths included) and a short valgrind memcheck run.  Budget: about 5 minutes on 2
# cores.  Runs inside the CI venv, where kaext is installed (the leak check uses that
# installed build; the sanitizer build lives in its own temporary venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
start=$(date +%s)
say() { printf '\n-- [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

say "test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
bash tools/sanitizers.sh

say "leak check: C 200,000 rounds, pure Python 50,000, valgrind 3,000"
# Run from outside the tree so that the installed kaext is the one imported.
(cd / && python "$ROOT/tools/leakcheck.py" -n 200000 --python-rounds 50000 --valgrind 3000)

say "hardening done"
