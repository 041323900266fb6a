#!/usr/bin/env bash
# tools/uml.sh [--mem SIZE] [--timeout SECONDS] -- COMMAND [ARG...]
#
# Runs COMMAND under a second Linux kernel: Debian's user-mode-linux (package
# user-mode-linux, the `linux.uml` binary, Linux 6.1), booted with this machine's
# filesystem as its root (hostfs, read-write: the same venv, the same installed kaext, the
# same working directory).  Inside, /proc, /sys, /dev, cgroup2 and the BPF filesystem are
# the guest kernel's own; /tmp, /run and /dev/shm are fresh tmpfs; networking is loopback
# (plus the network namespaces tests make); the environment is this shell's.  COMMAND's
# output is shown as it runs; its exit status, written to a file on the host filesystem,
# is this script's (124 when the guest did not finish within --timeout, 125 when it
# never ran COMMAND).  Needs root (the guest's root is root on the host's files).
#
#   tools/uml.sh -- uname -r                         # 6.1.x
#   tools/uml.sh -- python -m pytest tests/unit -q   # the suite against the 6.1 kernel
#
# Hosts whose XSAVE area is larger than UML 6.1 knows (AVX-512, AMX) need the ptrace
# shim tools/uml_xstate.c, compiled here and preloaded into linux.uml (its comment says why).
set -euo pipefail

mem=1536M
limit=1800
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: tools/uml.sh [--mem SIZE] [--timeout SECONDS] -- COMMAND..." >&2; exit 2; }
command -v linux.uml >/dev/null || { echo "tools/uml.sh: linux.uml not found (apt-get install user-mode-linux)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "tools/uml.sh: needs root" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
# Outside /tmp and /run: the guest mounts its own tmpfs there and would not see this.
run=$(mktemp -d /var/tmp/kaext-uml.XXXXXX)
guest=
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  [ -z "$guest" ] || kill "$guest" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

cc -O2 -shared -fPIC -o "$run/uml_xstate.so" "$here/uml_xstate.c" -ldl

# Directories the job needs that lie where the guest mounts fresh file systems (/tmp, /run,
# /dev/shm): this directory (a CI clone under /tmp) and the venv; the guest binds them back.
for dir in "$PWD" "${VIRTUAL_ENV:-}"; do
  case "$dir" in /tmp/*|/run/*|/dev/shm/*) printf '%s\n' "$dir" ;; esac
done >"$run/keep"

# The command, from this directory with this environment (the guest's init starts empty).
{
  export -p | grep -vE '^declare -x (BASH_|SHLVL=|OLDPWD=|TERM=|PWD=)'
  printf 'cd %q\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$run/job.sh"

# PID 1 of the guest.
cat >"$run/init.sh" <<'EOF'
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
run=${kaext_uml_run:?}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# what the host keeps under /tmp, /run or /dev/shm for the job: bound aside before those
# get fresh file systems, and back at the same paths after (the venv's scripts name them)
n=0
while read -r dir; do
  mkdir -p "$run/kept$n" && mount --bind "$dir" "$run/kept$n"
  n=$((n + 1))
done <"$run/keep"
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
n=0
while read -r dir; do
  mkdir -p "$dir" && mount --bind "$run/kept$n" "$dir"
  n=$((n + 1))
done <"$run/keep"
# The guest kernel's modules (veth for the network-namespace labs, IPv6, nftables, ...),
# loaded on demand as on a booted system, from Debian's /usr/lib/uml/modules (the host's
# /lib/modules is the host kernel's): tools/uml_modprobe.py is the kernel's modprobe.
echo "${kaext_uml_tools:?}/uml_modprobe.py" >/proc/sys/kernel/modprobe
"$kaext_uml_tools/uml_modprobe.py" -q ipv6 || true
ip link set lo up
hostname "kaext-uml"
echo "guest: Linux $(uname -r), $(nproc) CPU, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB" >"$run/output"
status=0
bash "$run/job.sh" </dev/null >>"$run/output" 2>&1 || status=$?
echo "$status" >"$run/status"
sync
echo o >/proc/sysrq-trigger
sleep 30
EOF
chmod +x "$run/init.sh"
: >"$run/output"

tail -n +1 -f "$run/output" &
tailer=$!
# The guest's memory is a file in TMPDIR (deleted once mapped).
LD_PRELOAD="$run/uml_xstate.so" TMPDIR=/dev/shm timeout -k 10 "$limit" linux.uml \
  mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet \
  con=null con0=null,fd:2 ssl=null init="$run/init.sh" kaext_uml_run="$run" kaext_uml_tools="$here" \
  >"$run/console" 2>&1 </dev/null &
guest=$!
status=0
wait "$guest" || status=$?
guest=
sleep 1
kill "$tailer" 2>/dev/null || true
wait "$tailer" 2>/dev/null || true
if [ -s "$run/status" ]; then
  exit "$(cat "$run/status")"
fi
echo "tools/uml.sh: the guest did not report (linux.uml exit $status); its console:" >&2
tail -40 "$run/console" >&2
[ "$status" -eq 124 ] && exit 124
exit 125
