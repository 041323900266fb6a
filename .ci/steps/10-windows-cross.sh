#!/usr/bin/env bash
# The Windows path without Windows: the C shim's test program (ext/test_shim.c)
# cross-compiled with warnings as errors by Debian's mingw-w64 (old headers: the
# shim's numeric fallbacks) and by zig (newer headers; x86_64 and aarch64), the
# x86_64 builds run under wine on loopback sockets, and the Linux side checks that
# WSAIoctl(SIO_KEEPALIVE_VALS) armed the host socket's keepalive timer.
# The shim against the real headers of macOS (x86_64, arm64), FreeBSD, NetBSD,
# OpenBSD, musl Linux and Windows (x86, x64, arm64) as zig ships them, compile
# only (tests/native/test_cross_targets.py: a few seconds, two compiles at a time).
# Also the per-OS tables of kaext._platform against the reference data.
# Budget: under 5 minutes on 2 cores (the first wineboot takes most of it).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt ziglang
export KAEXT_REQUIRE_CROSS=1      # a missing toolchain is a failure here, not a skip
timeout 300 python -m pytest -q -p no:cacheprovider tests/native/test_cross_targets.py tests/native/test_shim_c.py tests/platforms/test_platform.py
