#!/usr/bin/env bash
# The Kubernetes manifests (deploy/*.yaml, the DaemonSets) validated by kubernetes-validate
# --strict (its offline OpenAPI schemas; unknown fields are errors) against every Kubernetes
# minor from 1.30, the oldest supported, to the newest the pinned release knows.  No cluster
# runs here; the DaemonSets' command lines are run in the podman step (61-podman.sh).
# Budget: about 10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -c .ci/constraints.txt kubernetes-validate
OLDEST=1.30
mapfile -t minors < <(python - "$OLDEST" <<'PY'
import sys
from kubernetes_validate import utils
oldest = tuple(map(int, sys.argv[1].split(".")))
minors = sorted({tuple(map(int, v.split(".")[:2])) for v in utils.all_versions()})
for minor in minors:
    if minor >= oldest:
        print("%d.%d" % minor)
if oldest not in minors:
    sys.exit(f"kubernetes-validate has no schema for Kubernetes {sys.argv[1]}")
PY
)
[ "${#minors[@]}" -gt 0 ] || { echo "no Kubernetes versions to validate against" >&2; exit 1; }
manifests=(deploy/*.yaml)
for minor in "${minors[@]}"; do
  kubernetes-validate --strict --quiet -k "$minor" "${manifests[@]}"
done
echo "manifests: ${#manifests[@]} files valid (--strict) for Kubernetes ${minors[0]} to ${minors[-1]} (${#minors[@]} minors)"
