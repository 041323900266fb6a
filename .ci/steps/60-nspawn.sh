#!/usr/bin/env bash
# systemd for real: a minimal Debian (bookworm, debootstrap; .ci/lib/rootfs.sh, shared with
# 61-podman.sh) with the wheel built here, booted by systemd-nspawn --boot (its own PID and
# network namespaces, a throwaway overlay over the rootfs).  There deploy/kaext-exporter.service
# is started as the unit file says, scraped, and must read another user's sockets (a process
# of user nobody with keepalive on: verdict ok, not unreadable); `systemd-analyze security`
# must rate the unit's exposure at most 3.0.  nspawn's default seccomp filter refuses
# pidfd_getfd (every other process would be unreadable): --system-call-filter=pidfd_getfd,
# as docs/metrics.md says for containers.
# Budget: 4 minutes on 2 cores (the root file system 2.5-3.5 min, once per run; the boot and the
# checks 5 s).
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
stop() {
  [ -n "$nspawn" ] || return 0
  kill -TERM "$nspawn" 2>/dev/null || true   # the container powers off
  for _ in $(seq 40); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
  nspawn=
}
# shellcheck disable=SC2317  # called by the trap
cleanup() { stop; rm -rf "$KAEXT_CI_TMP/$machine.log"; }
trap 'cleanup; rm -rf "${CI_OWN_TMP:-/nonexistent}"' EXIT
in_ct() { nsenter -t "$leader" -a "$@"; }

say "boot $machine (systemd-nspawn --boot --volatile=overlay --private-network)"
systemd-nspawn -D "$rootfs" --register=no --keep-unit --boot --volatile=overlay --private-network \
  --machine="$machine" --console=passive --system-call-filter=pidfd_getfd \
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

stop
say "nspawn: the exporter unit booted, served and read another user's sockets"
