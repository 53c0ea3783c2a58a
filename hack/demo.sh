#!/usr/bin/env bash
# The main job: bring up the local control plane (or use the current kube context
# with MLOPS_USE_CURRENT_CONTEXT=1), install the CRDs, apply the samples and show them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
hack/setup.sh
if [ "${MLOPS_USE_CURRENT_CONTEXT:-0}" != 1 ]; then
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
fi
NS=mlops-demo
step() { printf '\n$ %s\n' "$*"; "$@"; }
step kubectl get nodes -o wide
step kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s \
  crd/modelversions.mlops.dev crd/modeldeployments.mlops.dev crd/driftmonitors.mlops.dev
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
step kubectl apply -n "$NS" -f crds/samples/
step kubectl get mlops -n "$NS"
step kubectl get mv,mdep,dm -n "$NS"
printf '\nThe plane keeps running: eval "$(hack/cluster.sh env)" to use kubectl; hack/cluster.sh down to stop it.\n'
