#!/usr/bin/env bash
# Containers for real, with podman and runc and no registry: the Debian root file system of
# 60-nspawn.sh (.ci/lib/rootfs.sh, made once per run; kaext installed from the wheel built
# here) runs as a container (--rootfs, a throwaway overlay) in its own network namespace and
# cgroup, holding loopback connections.  From the host, `kaext inspect --all` must list and read
# them, and `kaext enforce` on the container's cgroup must give its next connection the policy
# (and --remove take it away).  Then the image the DaemonSets name: built by podman build from
# deploy/Containerfile with the imported root file system as its base (podman import, given by
# its digest as the Containerfile's BASE_IMAGE; nothing is pulled, the build has no network),
# and each DaemonSet container's command run in it with the manifest's privileges (.ci/lib/daemonset_podman.py: hostPID, user,
# capabilities, seccomp and AppArmor profiles, environment, hostPath volumes), the exporter
# scraped, the enforcer's policy checked on the workload container's cgroup, its liveness
# probe run, the policy kept when the pod stops, and removed by the manifest's removal path
# (the same pod with KAEXT_ACTION=remove).
# Budget: 1 minute on 2 cores (21 s measured beside other work, the root file system made by
# 60-nspawn.sh; the import and the image build 12 s of it).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
say() { printf -- '-- [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
python -m pip install -q -c .ci/constraints.txt kubernetes-validate   # PyYAML, for the manifests

# shellcheck source=.ci/lib/rootfs.sh
. .ci/lib/rootfs.sh
rootfs=$(kaext_rootfs)
say "rootfs ready: $rootfs"

id="$$-$RANDOM"
workload="kaext-ci-workload-$id"
base="localhost/kaext-ci-base:$id"
image="localhost/kaext-ci-image:$id"
containers=("$workload")
images=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  local c
  for c in "${containers[@]}"; do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
  for c in "${images[@]}"; do podman rmi -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "${CI_OWN_TMP:-/nonexistent}"
}
trap cleanup EXIT
# runc cannot raise a limit without CAP_SYS_RESOURCE, and podman's defaults are above many a
# CI runner's hard limits: the container gets this shell's.
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
cgroup2=$(findmnt -n -t cgroup2 -o TARGET | head -1)
[ -n "$cgroup2" ] || die "no cgroup2 mount"

# A process holding a loopback connection, its client end with keepalive on (idle 77 s).
HOLDER='
import socket, time
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
open("/tmp/ready", "w").close()
time.sleep(900)'
# A new connection in the container; prints its SO_KEEPALIVE, idle, interval and count.
CONNECT='
import socket
listener = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(listener.getsockname())
print(c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
      *(c.getsockopt(socket.IPPROTO_TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)))'

say "workload container $workload (runc, --rootfs, --network none)"
podman run -d --name "$workload" --runtime runc "${limits[@]}" --network none --rootfs "$rootfs:O" \
  /usr/bin/python3 -c "$HOLDER" >/dev/null
for _ in $(seq 60); do podman exec "$workload" test -e /tmp/ready 2>/dev/null && break; sleep 0.5; done
pid=$(podman inspect -f '{{.State.Pid}}' "$workload")
[ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] || die "the container shares the host's network namespace"
cgroup="$cgroup2$(sed -n 's/^0:://p' "/proc/$pid/cgroup")"
if [ "$cgroup" = "$cgroup2/" ] || [ ! -d "$cgroup" ]; then die "no cgroup2 cgroup of its own: $cgroup"; fi
say "pid $pid (host), cgroup $cgroup"

say "host: kaext inspect --all sees the container's connections"
python -m kaext inspect --all --json >"$KAEXT_CI_TMP/inspect-$id.json" || true   # exit 1: failing verdicts
python - "$KAEXT_CI_TMP/inspect-$id.json" "$pid" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["connections"] if r["pid"] == int(sys.argv[2])]
established = [r for r in rows if r["state"] == "ESTABLISHED"]
assert len(established) == 2, rows
verdicts = sorted(r["verdict"] for r in established)
assert verdicts == ["KEEPALIVE OFF", "ok"], verdicts
client = [r for r in established if r["verdict"] == "ok"][0]
assert client["keepalive"]["idle"] == 77.0, client
print(f"  pid {sys.argv[2]}: {len(rows)} sockets, the client's idle {client['keepalive']['idle']:g} s read")
PY

say "host: kaext enforce on the container's cgroup"
before=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
python -m kaext enforce "$cgroup" --policy 175s:35s:5
during=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
python -m kaext enforce "$cgroup" --remove
after=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
echo "  a new connection in the container: before $before; enforced $during; removed $after"
[ "$during" = "1 175 35 5" ] || die "enforce: the container's new connection holds '$during', not '1 175 35 5'"
[ "$after" = "$before" ] || die "enforce --remove: '$after', not as before ('$before')"

say "the DaemonSets' image: podman import of the root file system as the base"
# The base stands in for python:3.12-slim: a `python` with pip first on PATH (a venv; Debian's
# own python3 refuses pip installs, PEP 668), without the rootfs's own kaext.  pip finds the
# packages in the build context only (PIP_NO_INDEX): the build reaches no registry.
chroot "$rootfs" python3 -m venv /opt/python   # ensurepip, from the rootfs's python3-pip-whl
tar -C "$rootfs" --exclude=./wheels --exclude=./opt/kaext --exclude='./usr/local/bin/kaext*' -c . \
  | podman import -q --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV PIP_NO_INDEX=1' --change 'ENV PIP_FIND_LINKS=/tmp/kaext-dist' - "$base" >/dev/null
rm -rf "$rootfs/opt/python"
images+=("$base")
# The Containerfile takes its base by digest only (ARG BASE_IMAGE, NAME@sha256:...): the
# imported image's own.
digest=$(podman image inspect --format '{{.Digest}}' "$base")
case "$digest" in sha256:*) ;; *) die "podman import gave no digest: '$digest'" ;; esac
[ -f deploy/Containerfile ] || die "deploy/Containerfile is missing: the image the DaemonSets name cannot be built"
context="$KAEXT_CI_TMP/image-$id"
mkdir -p "$context" && git archive --format=tar HEAD | tar -x -C "$context"
mkdir -p "$context/dist" && cp "$ROOTFS_WHEELS"/kaext-*.whl "$context/dist/"
# prometheus_client as deploy/image-requirements.txt pins it (version and hash)
python -m pip download -q --no-deps --only-binary :all: --require-hashes -d "$context/dist" \
  -r deploy/image-requirements.txt
podman build -q --pull=never --network none --build-arg "BASE_IMAGE=${base%%:*}@$digest" \
  -f deploy/Containerfile -t "$image" "$context" >"$KAEXT_CI_TMP/build-$id.log" 2>&1 \
  || { tail -30 "$KAEXT_CI_TMP/build-$id.log"; die "podman build -f deploy/Containerfile"; }
images+=("$image")
rm -rf "$context"
say "built $image from deploy/Containerfile (base ${base%%:*}@$digest)"

# DaemonSet MANIFEST [NAME=VALUE ...]: each container of the manifest's pod, detached, as
# the manifest runs it; the podman names in $started.
daemonset() {
  local manifest=$1 name container dir
  dir="$KAEXT_CI_TMP/daemonset-$id-$(basename "$1" .yaml)"
  shift
  started=()
  for name in $(python .ci/lib/daemonset_podman.py "$manifest" "$cgroup2" "$dir" "$@"); do
    container="kaext-ci-$name-$id"
    mapfile -d '' -t args <"$dir/$name.args"
    mapfile -d '' -t command <"$dir/$name.command"
    podman run -d --name "$container" --runtime runc "${limits[@]}" --network none "${args[@]}" \
      "$image" "${command[@]}" >/dev/null
    containers+=("$container")
    started+=("$dir/$name:$container")
  done
  [ "${#started[@]}" -gt 0 ] || die "$manifest: no DaemonSet containers"
}

say "deploy/kaext-exporter-daemonset.yaml under podman"
daemonset deploy/kaext-exporter-daemonset.yaml
for entry in "${started[@]}"; do
  base=${entry%%:*} container=${entry#*:}
  port=$(tr -d '\0' <"$base.port" 2>/dev/null || echo 9469)
  exporter=$(podman inspect -f '{{.State.Pid}}' "$container")
  scrape="$KAEXT_CI_TMP/$container.metrics"
  for _ in $(seq 120); do
    if nsenter -t "$exporter" -n curl -fsS "http://127.0.0.1:$port/metrics" >"$scrape" 2>/dev/null \
      && grep -q "pid=\"$pid\".*state=\"ESTABLISHED\"" "$scrape"; then break; fi
    [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] || { podman logs "$container" | tail -20; die "$container exited"; }
    sleep 0.5
  done
  grep "^kaext_tcp_connections{pid=\"$pid\"" "$scrape" || { podman logs "$container" | tail -20; die "$container: no rows of the workload (pid $pid)"; }
  grep -q "^kaext_tcp_connections{pid=\"$pid\",process=\"python3\",state=\"ESTABLISHED\",verdict=\"ok\"} 1.0$" "$scrape" \
    || die "$container did not read the workload container's sockets (pid $pid)"
  say "$container: scraped, the workload container's connections read"
  podman rm -f -t 5 "$container" >/dev/null
done

say "deploy/kaext-enforce-daemonset.yaml under podman, on the workload container's cgroup"
before=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
daemonset deploy/kaext-enforce-daemonset.yaml "KUBEPODS=${cgroup#"$cgroup2"/}" "KAEXT_POLICY=175s:35s:5"
for entry in "${started[@]}"; do
  base=${entry%%:*} container=${entry#*:}
  now=
  for _ in $(seq 120); do
    now=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
    [ "$now" != "1 175 35 5" ] || break
    [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] || { podman logs "$container" | tail -20; die "$container exited"; }
    sleep 0.5
  done
  [ "$now" = "1 175 35 5" ] || { podman logs "$container" | tail -20; die "$container: the workload's new connection holds '$now'"; }
  say "$container: the policy is on the workload container's new connections"
  if [ -f "$base.liveness" ]; then
    mapfile -d '' -t liveness <"$base.liveness"
    podman exec "$container" "${liveness[@]}" || { podman logs "$container" | tail -20; die "$container: its livenessProbe command failed"; }
    say "$container: its livenessProbe command passes"
  fi
  # a pod restart or rolling update: the policy stays attached (detached only on removal)
  podman rm -f -t 10 "$container" >/dev/null
  now=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
  [ "$now" = "1 175 35 5" ] || die "$container: after the pod stopped a new connection holds '$now', not the policy"
  say "$container: stopped; the policy stays attached"
done
# The removal path of the manifest: the same pods with KAEXT_ACTION=remove.
daemonset deploy/kaext-enforce-daemonset.yaml "KUBEPODS=${cgroup#"$cgroup2"/}" "KAEXT_POLICY=175s:35s:5" KAEXT_ACTION=remove
for entry in "${started[@]}"; do
  base=${entry%%:*} container=${entry#*:}
  now=
  for _ in $(seq 120); do
    now=$(podman exec "$workload" /usr/bin/python3 -c "$CONNECT")
    [ "$now" != "$before" ] || break
    [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] || { podman logs "$container" | tail -20; die "$container exited"; }
    sleep 0.5
  done
  [ "$now" = "$before" ] || { podman logs "$container" | tail -20; die "$container (KAEXT_ACTION=remove): a new connection holds '$now', not '$before'"; }
  if [ -f "$base.liveness" ]; then
    mapfile -d '' -t liveness <"$base.liveness"
    podman exec "$container" "${liveness[@]}" || die "$container (KAEXT_ACTION=remove): its livenessProbe command failed"
  fi
  say "$container with KAEXT_ACTION=remove: the policy is removed"
  podman rm -f -t 10 "$container" >/dev/null
done
[ -z "$(python -m kaext enforce --list | grep -F "$cgroup" || true)" ] || die "the host's enforce --list still shows $cgroup"

say "podman: inspect and enforce from the host, the DaemonSets' commands in their image"
