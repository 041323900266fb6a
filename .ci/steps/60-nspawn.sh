#!/usr/bin/env bash
# systemd for real: a minimal Debian (bookworm, debootstrap; .ci/lib/rootfs.sh, shared with
# 61-podman.sh) with the wheel built here, booted by systemd-nspawn --boot (its own PID and
# network namespaces, a throwaway overlay over the rootfs).  There deploy/kaext-exporter.service
# is started as the unit file says, scraped, and must read another user's sockets (a process
# of user nobody with keepalive on: verdict ok, not unreadable); `systemd-analyze security`
# must rate the unit's exposure at most 3.0.  nspawn's default seccomp filter refuses
# pidfd_getfd (every other process would be unreadable): --system-call-filter=pidfd_getfd,
# as docs/metrics.md says for containers.  Then the enforce drop-in, booted the same way:
# deploy/kaext-bpf-policy.service pins the programs, a unit with deploy/kaext-bpf-policy.conf
# (BPFProgram=) must hold the policy on its first connection, a unit without it must not.
# What that needs of the container (not of the exporter): the bpf system call
# (--system-call-filter), CAP_BPF (nspawn's default set lacks it), a BPF file system of its
# own at /sys/fs/bpf (nspawn's /sys is read-only) and the unified cgroup hierarchy (systemd's
# BPF features; SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 on a host with the hybrid layout).
# Budget: 4 minutes on 2 cores (the root file system 1.5-3.5 min, once per run; the boot and
# the checks 3 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
MAX_EXPOSURE=3.0
start=$(date +%s)
say() { printf -- '-- [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# shellcheck source=.ci/lib/rootfs.sh
. .ci/lib/rootfs.sh
rootfs=$(kaext_rootfs)
say "rootfs ready: $rootfs"

machine="kaext-ci-$$-$RANDOM"
log="$KAEXT_CI_TMP/$machine.log"
nspawn=
leader=
bpffs=
stop() {
  [ -n "$nspawn" ] || return 0
  kill -TERM "$nspawn" 2>/dev/null || true   # the container powers off
  for _ in $(seq 40); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
  nspawn=
}
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  stop
  [ -z "$bpffs" ] || umount "$bpffs" 2>/dev/null || true
  rm -rf "$KAEXT_CI_TMP/$machine.log" "$bpffs"
}
trap 'cleanup; rm -rf "${CI_OWN_TMP:-/nonexistent}"' EXIT
in_ct() { nsenter -t "$leader" -a "$@"; }

# The container's own BPF file system (a new instance, not the host's pins): nspawn mounts
# /sys read-only, and the drop-in's programs are pinned there.
bpffs="$KAEXT_CI_TMP/$machine.bpf"
mkdir -p "$bpffs" && mount -t bpf bpf "$bpffs"
say "boot $machine (systemd-nspawn --boot --volatile=overlay --private-network)"
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D "$rootfs" --register=no --keep-unit --boot --volatile=overlay --private-network \
  --machine="$machine" --console=passive --system-call-filter="pidfd_getfd bpf" --capability=CAP_BPF \
  --bind="$bpffs:/sys/fs/bpf" \
  --bind-ro="$ROOT/deploy/kaext-exporter.service:/etc/systemd/system/kaext-exporter.service" \
  >"$log" 2>&1 </dev/null &
nspawn=$!
for _ in $(seq 120); do
  leader=$(pgrep -P "$nspawn" | head -1 || true)
  if [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ]; then break; fi
  kill -0 "$nspawn" 2>/dev/null || { cat "$log"; die "systemd-nspawn exited"; }
  sleep 0.5
done
[ -n "$leader" ] || die "no init in the container"
state=$(in_ct timeout 90 systemctl is-system-running --wait || true)
say "booted: systemd $state"
case "$state" in running|degraded) ;; *) die "the container did not boot: $state" ;; esac

say "start kaext-exporter.service"
in_ct systemctl start kaext-exporter.service || { in_ct journalctl -u kaext-exporter --no-pager | tail -20; die "start"; }
port=$(sed -n 's/.*--listen [^ ]*:\([0-9][0-9]*\).*/\1/p' deploy/kaext-exporter.service | head -1)
[ -n "$port" ] || die "no --listen HOST:PORT in deploy/kaext-exporter.service"

# another user's process holding a connection with keepalive on (idle 61 s, under aws-nlb's 350 s)
in_ct systemd-run --quiet --uid=nobody --unit=kaext-ci-holder /usr/bin/python3 -c '
import socket, time
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
for s in (client, server):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 61)
time.sleep(600)'
holder=
for _ in $(seq 40); do
  holder=$(in_ct systemctl show -P MainPID kaext-ci-holder.service)
  [ "$holder" != 0 ] && grep -q "^Uid:.*65534" "/proc/$leader/root/proc/$holder/status" 2>/dev/null && break
  sleep 0.25
done
metrics="$KAEXT_CI_TMP/$machine.metrics"
for _ in $(seq 60); do
  if in_ct curl -fsS "http://127.0.0.1:$port/metrics" >"$metrics" 2>/dev/null \
    && grep -q "pid=\"$holder\".*state=\"ESTABLISHED\"" "$metrics"; then break; fi
  sleep 0.5
done
grep "^kaext_tcp_connections{pid=\"$holder\"" "$metrics" || { in_ct journalctl -u kaext-exporter --no-pager | tail; die "no rows of pid $holder in the scrape"; }
grep -q "^kaext_tcp_connections{pid=\"$holder\",process=\"python3\",state=\"ESTABLISHED\",verdict=\"ok\"} 2.0$" "$metrics" \
  || die "the exporter did not read user nobody's sockets (pid $holder): expected 2 ESTABLISHED rows with verdict ok"
say "scraped :$port: user nobody's two connections read (verdict ok)"

exposure=$(in_ct systemd-analyze security --no-pager kaext-exporter.service | sed -n 's/.*Overall exposure level for kaext-exporter.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || die "systemd-analyze security gave no exposure level"
say "systemd-analyze security: exposure $exposure (at most $MAX_EXPOSURE)"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' \
  || { in_ct systemd-analyze security --no-pager kaext-exporter.service | grep -v '^✓' | head -40; die "exposure $exposure > $MAX_EXPOSURE"; }

say "the BPFProgram= drop-in: deploy/kaext-bpf-policy.service and deploy/kaext-bpf-policy.conf"
# Written into the container's overlay: the policy unit as deploy/ has it, but for its
# policy a spec whose values this script knows (175 s idle, 35 s interval, 5 probes); a unit
# with the drop-in and one without, each printing what its first connection holds.
ct_root="/proc/$leader/root"
sed 's|--policy aws-nlb|--policy 175s:35s:5|' deploy/kaext-bpf-policy.service >"$ct_root/etc/systemd/system/kaext-bpf-policy.service"
grep -q -- '--policy 175s:35s:5' "$ct_root/etc/systemd/system/kaext-bpf-policy.service" || die "no --policy aws-nlb in deploy/kaext-bpf-policy.service"
cat >"$ct_root/usr/local/bin/kaext-ci-first-connection" <<'PY'
import socket
listener = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(listener.getsockname())
print(c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
      *(c.getsockopt(socket.IPPROTO_TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)))
PY
for app in kaext-ci-app kaext-ci-plain; do
  printf '[Service]\nType=oneshot\nExecStart=/usr/bin/python3 /usr/local/bin/kaext-ci-first-connection\nStandardOutput=truncate:/run/%s.out\n' "$app" \
    >"$ct_root/etc/systemd/system/$app.service"
done
mkdir -p "$ct_root/etc/systemd/system/kaext-ci-app.service.d"
cp deploy/kaext-bpf-policy.conf "$ct_root/etc/systemd/system/kaext-ci-app.service.d/kaext.conf"
in_ct systemctl daemon-reload
# kaext-ci-app.service Requires= the policy unit: starting it starts kaext-bpf-policy.service first
in_ct systemctl start kaext-ci-app.service kaext-ci-plain.service \
  || { in_ct journalctl -u kaext-bpf-policy -u kaext-ci-app --no-pager | tail -20; die "start kaext-ci-app.service"; }
app=$(cat "$ct_root/run/kaext-ci-app.out") plain=$(cat "$ct_root/run/kaext-ci-plain.out")
echo "  first connection: with the drop-in '$app'; without '$plain'"
[ "$app" = "1 175 35 5" ] || die "the first connection of a unit with the drop-in holds '$app', not '1 175 35 5'"
[ "$plain" != "$app" ] || die "a unit without the drop-in has the policy too"
in_ct systemctl stop kaext-bpf-policy.service
[ ! -e "$ct_root/sys/fs/cgroup/kaext-policy" ] || die "kaext-bpf-policy.service left /sys/fs/cgroup/kaext-policy behind"
say "a unit with the BPFProgram= drop-in: its first connection has the policy"

stop
say "nspawn: the exporter unit booted, served and read another user's sockets"
