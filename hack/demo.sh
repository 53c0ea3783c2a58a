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
#     serving pod's log.
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
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

python - "$WORK" <<'PY'
import sys
from pathlib import Path
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
work = Path(sys.argv[1])
frame, target = load_iris(return_X_y=True, as_frame=True)
frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
joblib.dump(LogisticRegression(max_iter=500).fit(frame.to_numpy(), target), work / "model.joblib")
frame.to_csv(work / "reference.csv", index=False)
PY
step mlops-bundle build --model "$WORK/model.joblib" --reference "$WORK/reference.csv" \
  --name iris --version 1 --out "$WORK/iris-1.tar.gz"
# The artifact store: an HTTP server on the real node's bridge address (with one's own
# cluster, MLOPS_ARTIFACT_HOST names an address its pods reach).
HOST="${MLOPS_ARTIFACT_HOST:-$(kubectl get node mlops-node-0 \
  -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')}"
python -m http.server 18183 --bind "$HOST" --directory "$WORK" >"$WORK/store.log" 2>&1 &
pids+=($!)
mlops-bundle manifest "$WORK/iris-1.tar.gz" --uri "http://$HOST:18183/iris-1.tar.gz" \
  --stage Staging --alias champion --metric accuracy=0.97 >"$WORK/modelversion.yaml"

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

kubectl port-forward -n "$NS" svc/iris 18180:80 >"$WORK/port-forward.log" 2>&1 &
pids+=($!)
for _ in $(seq 60); do curl -sf http://127.0.0.1:18180/v2/health/ready >/dev/null && break; sleep 0.5; done
step curl -s -X POST http://127.0.0.1:18180/predict -H 'Content-Type: application/json' \
  -d '{"features": {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}}'
echo
step kubectl logs -n "$NS" deploy/iris-stable --tail=3
printf '\n\nThe plane keeps running: eval "$(hack/cluster.sh env)" to use kubectl; hack/cluster.sh down to stop it.\n'
