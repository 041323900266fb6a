#!/usr/bin/env bash
# A second kernel: the kernel-dependent suites under Debian's user-mode-linux (Linux 6.1,
# the user-mode-linux package), booted by tools/uml.sh with this machine's filesystem as its
# root, against the same venv and installed package: the API on real sockets (tests/unit),
# the inspection of other processes (connections, Connection.apply, kaext-inspect), enforce's
# BPF programs, kaext.watch's refusal without BTF and the verifier.  The tests state
# which behaviour they expect from which kernel version (e.g. pidfd_open PIDFD_THREAD, Linux 6.9);
# nothing may skip for want of a part here either (the KAEXT_REQUIRE_* variables of .ci/run
# reach the guest).  The rest of the suite does not depend on the kernel's version (frameworks,
# servers, packaging, documentation) and runs on the host only.  What this kernel lacks, by its
# configuration (/usr/share/doc/user-mode-linux/config.gz), and what that decides here:
# - no BTF (CONFIG_DEBUG_INFO_BTF off): kaext.watch refuses in one line; tests/integration/
#   test_watch.py runs here to check that refusal (its watching tests say so and stand down).
# - no nftables for IP traffic (CONFIG_NF_TABLES_INET, _IPV4, _IPV6 off, no CONFIG_NFT_NAT):
#   kaext.testing makes its paths of iptables-legacy chains here (CONFIG_IP_NF_* are modules),
#   so the dead-peer proof (tests/integration/test_dead_peer.py) and the kit's own tests
#   (tests/integration/test_testing_kit.py: forget_idle says EOPNOTSUPP on such a path) run here too.
# Budget: 5 minutes on 2 cores (2.8-3.8 min measured beside another run of the suite; the
# guest has 1 CPU; its boot takes 3 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/uml.sh --timeout 900 -- python -m pytest -q -p no:cacheprovider -rfEs \
  tests/unit \
  tests/integration/test_connections.py tests/integration/test_connection_apply.py \
  tests/integration/test_inspect.py tests/integration/test_enforce.py \
  tests/integration/test_watch.py tests/integration/test_verify.py \
  tests/integration/test_dead_peer.py tests/integration/test_testing_kit.py
