#!/usr/bin/env bash
# The public-API suite against every OS's kernel model (tests/support/kernel_model): each in a
# fresh interpreter with that OS's sys.platform and header numbers, on the pure-Python
# implementation, whose socket calls the model answers (Linux, Android, macOS, iOS,
# visionOS, FreeBSD at hz 1000 and 4000, NetBSD, DragonFly, OpenBSD, illumos, Windows (1709+,
# 1703 through SIO_KEEPALIVE_VALS, a fresh TCP_MAXRT of 0),
# Cygwin, an unknown OS, WASI without a socket module, Emscripten whose sockets cannot be
# made).  Budget: a few seconds on 2 cores (2 s measured).
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout 300 python tests/support/kernel_model/run_all.py
