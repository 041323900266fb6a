#!/usr/bin/env bash
# System packages the tests need (Debian).  Idempotent; quick when already there.
set -euo pipefail
need=()
for pkg in "$@" iproute2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ -f .ci/apt-packages.txt ]; then
  while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done < .ci/apt-packages.txt
fi
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
