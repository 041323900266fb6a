#!/usr/bin/env bash
# A second kernel: the kernel-dependent suites under Debian's user-mode-linux (Linux 6.1,
# the user-mode-linux package), booted by tools/uml.sh with this machine's filesystem as its
# root, against the same venv and installed package: the API on real sockets (tests/unit),
# the inspection of other processes (connections, Connection.apply, kaext-inspect), enforce's
# BPF programs, the dead-peer proofs in network namespaces and the verifier.  The tests state
# which behaviour they expect from which kernel version (e.g. pidfd_open PIDFD_THREAD, Linux 6.9);
# nothing may skip for want of a part here either (the KAEXT_REQUIRE_* variables of .ci/run
# reach the guest).  The rest of the suite does not depend on the kernel's version (frameworks,
# servers, packaging, documentation) and runs on the host only.
# Budget: 5 minutes on 2 cores (7 min measured beside other work; the guest has 1 CPU; its
# boot takes 3 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/uml.sh --timeout 900 -- python -m pytest -q -p no:cacheprovider -rfE \
  tests/unit \
  tests/integration/test_connections.py tests/integration/test_connection_apply.py \
  tests/integration/test_inspect.py tests/integration/test_enforce.py \
  tests/integration/test_dead_peer.py tests/integration/test_verify.py
