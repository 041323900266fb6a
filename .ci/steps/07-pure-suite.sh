#!/usr/bin/env bash
# The public-API suite a second time, against the pure-Python backend
# (KAEXT_NO_EXTENSIONS=1 makes `import kaext` choose kaext._pure), as msgpack does.
# The main run already covers the extension and, through the backend fixture,
# both backends' contract tests.  Left out here because they do not depend on the
# backend and are slow: tests/package (artefacts, cibuildwheel) and tests/native (the C
# shim program, its Windows and BSD cross builds).  Budget: about 1 minute on 2 cores
# (most of it the dead-peer tests in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/../.."
KAEXT_NO_EXTENSIONS=1 python -c 'import kaext, sys; sys.exit(kaext.IMPLEMENTATION != "python")'
KAEXT_NO_EXTENSIONS=1 timeout 300 python -m pytest -q -p no:cacheprovider \
  tests/unit tests/integration tests/platforms tests/documentation
