#!/usr/bin/env bash
# The package type-checks under mypy --strict (it ships py.typed and a stub for the
# extension), and so does a sample of user code against the installed package.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt mypy
mypy --strict src/kaext
mypy --strict tests/typing/usage.py
