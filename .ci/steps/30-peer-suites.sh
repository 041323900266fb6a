#!/usr/bin/env bash
# Another project's own test suite, plainly and under `kaext.run --accepted`: no test may
# fail only under kaext (tools/peer_suites.py compares the failing test ids).  trio ships
# its suite in its wheel (trio/_tests); its TLS tests need trustme and pyOpenSSL, and
# modules whose other optional imports are missing skip themselves (its own
# --skip-optional-imports).  The other projects' suites come from their sdists and are a
# maintainer's run (python tools/peer_suites.py).  Budget: about 30 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt trustme pyopenssl
timeout 600 python tools/peer_suites.py --installed trio -- -p trio._tests.pytest_plugin --skip-optional-imports
