#!/usr/bin/env bash
# Lint: ruff (Python: the rules and the format), cython-lint (the extension), and the package's layers
# (import-linter: a module imports only from the layers below it; the contract is
# in pyproject.toml).  The Cython module is not seen by import-linter, so its
# imports of the package are checked here: the backends import only _platform and
# _errors.  mypy --strict runs in 05-typing.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt ruff cython-lint import-linter
ruff check .
ruff format --check .
cython-lint ext/_kaext.pyx ext/*.pxi
lint-imports
bad=$(grep -nE '^\s*(from|import)\s+kaext' ext/_kaext.pyx ext/*.pxi | grep -vE 'kaext\.(_platform|_errors)\b' || true)
if [ -n "$bad" ]; then
  echo "ext/_kaext.pyx and its ext/*.pxi parts may import only kaext._platform and kaext._errors:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "lint: ruff (check and format), cython-lint and the import layers are clean"
