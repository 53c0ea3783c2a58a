#!/usr/bin/env bash
# The main job: a model trained, bundled, registered, deployed and Ready.
#  1. the local control plane comes up (or, with MLOPS_USE_CURRENT_CONTEXT=1, the
#     current kube context is used) and the CRDs are installed;
#  2. an iris classifier is trained and bundled with `mlops-bundle`, which also
#     prints its ModelVersion;
#  3. the bundle is served over HTTP from the real node's address on the plane's
#     bridge (the artifact store: the operator and the pods fetch it from there);
#  4. the operator runs on this machine, the ModelVersion and a ModelDeployment that
#     requires approval are applied; `kubectl mlops approve` approves the version as
#     the kubeconfig's user (the API server checks who may), and `kubectl wait`
#     returns once the deployment is Ready: its two pods run the serving image on
#     the real node;
#  5. a prediction through `kubectl port-forward` to the model's Service, and the
#     serving pod's log;
#  6. version 2 arrives as a canary (approved first): with callers sending requests
#     all along, it walks setWeight 30 -> analysis -> setWeight 60 -> pause and is
#     promoted, while `kubectl get mdep -w` shows the weights;
#  7. version 3, whose model fails on rows with a negative feature (a third of the
#     callers' rows), arrives as the next canary and its analysis rolls it back.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
hack/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
if [ "${MLOPS_USE_CURRENT_CONTEXT:-0}" != 1 ]; then
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
fi
NS=mlops-demo
WORK="${MLOPS_CACHE_DIR:-$HOME/.cache/mlops-operator}/demo"
mkdir -p "$WORK"
step() { printf '\n$ %s\n' "$*"; "$@"; }
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

step kubectl get nodes -L type
echo "mlops-node-0 (type=real) runs pods for real; the kwok nodes (type=kwok, tainted) only"
echo "pretend to, for tests of scale. The demo's pods run on the real node."
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/modelversions.mlops.dev crd/modeldeployments.mlops.dev crd/driftmonitors.mlops.dev >/dev/null
# A demo run before this one left its objects (a canary patched in): start afresh.
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null

# Three models: version 1, version 2 (another regularization), and version 3, whose
# square root turns a negative feature into NaN, which the classifier refuses: a bug
# that only some traffic hits.
python - "$WORK" <<'PY'
import sys
from pathlib import Path
import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
work = Path(sys.argv[1])
frame, target = load_iris(return_X_y=True, as_frame=True)
frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
rows = frame.to_numpy()
joblib.dump(LogisticRegression(max_iter=500).fit(rows, target), work / "model-1.joblib")
joblib.dump(LogisticRegression(C=0.5, max_iter=500).fit(rows, target), work / "model-2.joblib")
faulty = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=500))
joblib.dump(faulty.fit(rows, target), work / "model-3.joblib")
frame.to_csv(work / "reference.csv", index=False)
PY
for version in 1 2 3; do
  mlops-bundle build --model "$WORK/model-$version.joblib" --reference "$WORK/reference.csv" \
    --name iris --version "$version" --out "$WORK/iris-$version.tar.gz" >/dev/null
done
step ls -l "$WORK"/iris-*.tar.gz
# The artifact store: an HTTP server on the real node's bridge address (with one's own
# cluster, MLOPS_ARTIFACT_HOST names an address its pods reach).
HOST="${MLOPS_ARTIFACT_HOST:-$(kubectl get node mlops-node-0 \
  -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')}"
python -m http.server 18183 --bind "$HOST" --directory "$WORK" >"$WORK/store.log" 2>&1 &
pids+=($!)
mlops-bundle manifest "$WORK/iris-1.tar.gz" --uri "http://$HOST:18183/iris-1.tar.gz" \
  --stage Staging --alias champion --metric accuracy=0.97 >"$WORK/modelversion.yaml"
for version in 2 3; do
  mlops-bundle manifest "$WORK/iris-$version.tar.gz" --uri "http://$HOST:18183/iris-$version.tar.gz" \
    --stage Staging >"$WORK/modelversion-$version.yaml"
done

MLOPS_SERVING_IMAGE="${MLOPS_SERVING_IMAGE:-localhost/mlops-serving:test}" MLOPS_LIVENESS_PORT=18181 \
  MLOPS_METRICS_PORT=18182 mlops-operator --namespace "$NS" >"$WORK/operator.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do curl -sf http://127.0.0.1:18181/healthz >/dev/null && break; sleep 0.5; done
echo "operator running (log: $WORK/operator.log)"

step kubectl apply -n "$NS" -f "$WORK/modelversion.yaml"
kubectl apply -n "$NS" -f - <<'YAML'
apiVersion: mlops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
spec:
  model: iris
  stable: {alias: champion}
  replicas: 2
  requireApproval: true
YAML
step kubectl mlops approve mv/iris-1 -n "$NS"
step kubectl wait -n "$NS" --for=condition=Ready mdep/iris --timeout=180s
step kubectl get mv,mdep -n "$NS"
step kubectl get deployments,services,pods -n "$NS" -o wide

# `kubectl port-forward` holds one pod: a new one follows the Service to the router.
forward() {
  if [ -n "${forwarding:-}" ]; then kill "$forwarding" 2>/dev/null || true; wait "$forwarding" 2>/dev/null || true; fi
  kubectl port-forward -n "$NS" svc/iris 18180:80 >"$WORK/port-forward.log" 2>&1 &
  forwarding=$!
  pids+=($forwarding)
}
forward
for _ in $(seq 60); do curl -sf http://127.0.0.1:18180/v2/health/ready >/dev/null && break; sleep 0.5; done
step curl -s -X POST http://127.0.0.1:18180/predict -H 'Content-Type: application/json' \
  -d '{"features": {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}}'
echo
step kubectl logs -n "$NS" deploy/iris-stable --tail=3

# Callers, from now on: through the model's Service, every third row with a negative
# feature. Each answer says which track served it (x-mlops-track).
callers() {
  local i=0 row
  while true; do
    for _ in $(seq 20); do curl -sf http://127.0.0.1:18180/v2/health/ready >/dev/null && break; sleep 0.5; done
    while true; do
      row='[5.1, 3.5, 1.4, 0.2]'
      [ $((i % 3)) = 0 ] && row='[-5.1, 3.5, 1.4, 0.2]'
      i=$((i + 1))
      curl -s -o /dev/null -w '%{http_code} %header{x-mlops-track}\n' -X POST http://127.0.0.1:18180/predict \
        -H 'Content-Type: application/json' -d "{\"features\": $row}" >>"$WORK/callers.log" || break
      sleep 0.05
    done
  done
}
: >"$WORK/callers.log"
callers &
pids+=($!)
# A canary of version $1, on top of a stable track that the spec names ($2: the
# stable ref, JSON). After a promotion the user moves spec.stable to the promoted
# version (a commit to Git, under Argo CD): the operator never writes spec.
canary() {
  kubectl patch -n "$NS" mdep iris --type merge -p "$(cat <<JSON
{"spec": {"stable": $2, "canary": {"version": "$1",
  "steps": [{"setWeight": 30}, {"analysis": {"count": 2}}, {"setWeight": 60}, {"pause": {"duration": "10s"}}],
  "analysis": {"interval": "5s", "minRequests": 10,
               "thresholds": {"errorRate": 0.05, "latencyP99Ms": 500, "predictionDrift": 0.5}}}}}
JSON
)"
}
# Once the model's Service selects the router (the operator moves it when the router
# is Ready), a new port-forward lands on the router.
until_router() {
  for _ in $(seq 180); do
    [ "$(kubectl get svc iris -n "$NS" -o jsonpath='{.spec.selector.mlops\.dev/track}')" = router ] && break
    sleep 1
  done
  forward
}
# Answers by status and track; no track: the stable pods answered, with no router.
answers() {
  grep -v '^000' "$WORK/callers.log" | sort | uniq -c \
    | awk '{ printf "%7d  HTTP %s  %s\n", $1, $2, ($3 == "" ? "stable, no router yet" : $3) }'
}
phase() { kubectl get mdep iris -n "$NS" -o jsonpath='{.status.canary.phase}'; }

printf '\n# Version 2 as a canary, with callers sending requests all along\n'
step kubectl apply -n "$NS" -f "$WORK/modelversion-2.yaml"
step kubectl mlops approve mv/iris-2 -n "$NS"
kubectl get mdep iris -n "$NS" -w &
pids+=($!)
watching=$!
canary 2 '{"alias": "champion"}'
until_router
for _ in $(seq 300); do [ "$(phase)" = Promoted ] && break; sleep 1; done
echo "answers by status and track while version 2 rolled out:"
answers
# Promoted: the canary keeps all traffic until the stable track runs version 2, Ready.
step kubectl wait -n "$NS" --for=jsonpath='{.status.traffic.canaryWeight}'=0 mdep/iris --timeout=180s
sleep 3
kill "$watching" 2>/dev/null || true
step kubectl get mdep iris -n "$NS" -o jsonpath='{.status.canary.message}{"\n"}'

printf '\n# Version 3 as the next canary: its model fails on a third of the rows\n'
: >"$WORK/callers.log"
forward
step kubectl apply -n "$NS" -f "$WORK/modelversion-3.yaml"
step kubectl mlops approve mv/iris-3 -n "$NS"
kubectl get mdep iris -n "$NS" -w &
pids+=($!)
watching=$!
canary 3 '{"alias": null, "version": "2"}'
until_router
for _ in $(seq 300); do [ "$(phase)" = RolledBack ] && break; sleep 1; done
echo "answers by status and track while version 3 was tried:"
answers
sleep 5
kill "$watching" 2>/dev/null || true
step kubectl get mdep iris -n "$NS" -o jsonpath='{.status.canary.message}{"\n"}'
step kubectl get events -n "$NS" --field-selector reason=RolledBack
printf '\n\nThe plane keeps running: eval "$(hack/cluster.sh env)" to use kubectl; hack/cluster.sh down to stop it.\n'
