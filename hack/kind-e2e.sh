#!/usr/bin/env bash
# The integration suite on kind, for machines with a Docker engine. (The local plane,
# hack/cluster.sh, needs none: it is what hack/test.sh uses.)
#
#   hack/kind-e2e.sh [pytest args]   create the cluster, run the suite, delete it
#   hack/kind-e2e.sh manifests       print what it applies to the cluster, and stop
#
#  1. builds kind (hack/versions.env) and creates a one-node cluster, its node
#     labelled type=real: the node whose pods run, as the local plane's mlops-node-0;
#  2. builds both images (hack/image.sh: docker build) and `kind load`s them;
#  3. installs the chart, its operator in-cluster, watching mlops-e2e-chart only, and
#     deploys a model there until its pods answer a prediction;
#  4. runs kwok on this machine against the cluster with the two fake nodes the tests
#     of API behaviour put their pods on, as the local plane does;
#  5. routes the node's pod network and the ClusterIPs through the node (sudo ip
#     route), since the tests dial pods and Services as they do on the local plane;
#  6. runs hack/test.sh against the cluster (MLOPS_TEST_KUBECONFIG and the
#     MLOPS_TEST_* variables of tests/integration), with real pods required.
#
# MLOPS_KIND_KEEP=1 keeps the cluster (and the routes) afterwards. Linux only: the
# routes need the kind network to be this machine's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. hack/lib.sh
log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

NAME="${MLOPS_KIND_CLUSTER:-mlops-e2e}"
NODE="$NAME-control-plane"
WORK="$MLOPS_CACHE_DIR/kind/$NAME"
SERVICE_NETWORK=10.96.0.0/16
CHART_NS=mlops-e2e-chart
STORE_PORT=18283
IMAGES=(localhost/mlops-serving:test localhost/mlops-operator:test)
mkdir -p "$WORK"

bundle() {  # bundle URI_BASE: an iris bundle in $WORK and its ModelVersion on stdout
  python hack/iris_models.py "$WORK"
  mlops-bundle build --model "$WORK/model-1.joblib" --reference "$WORK/reference.csv" \
    --name iris --version 1 --out "$WORK/iris-1.tar.gz" >/dev/null
  mlops-bundle manifest "$WORK/iris-1.tar.gz" --uri "$1/iris-1.tar.gz"
}

model_deployment() {
  cat <<'YAML'
apiVersion: mlops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
spec:
  model: iris
  stable: {version: "1"}
YAML
}

chart_values=(
  --set image.repository=localhost/mlops-operator --set image.tag=test
  --set image.pullPolicy=Never --set servingImage=localhost/mlops-serving:test
  --set "watchNamespaces={$CHART_NS}"
)

manifests() {  # what steps 3 and 4 apply, for a server-side dry run elsewhere
  local n
  for n in kwok-node-0 kwok-node-1; do kwok_node "$n"; echo ---; done
  helm template mlops-operator helm/mlops-operator -n mlops-system "${chart_values[@]}"
  echo ---
  bundle "http://172.18.0.1:$STORE_PORT" | sed "s/^metadata:/metadata:\n  namespace: $CHART_NS/"
  echo ---
  model_deployment | sed "s/^metadata:/metadata:\n  namespace: $CHART_NS/"
}

hack/setup.sh
kind_bin="$(hack/build-tools.sh kind)"
export PATH="$ROOT/.venv/bin:$TOOLS_BIN:$kind_bin:$PATH"
if [ "${1:-}" = manifests ]; then
  manifests
  exit 0
fi
docker info >/dev/null 2>&1 || die "kind needs a running Docker engine (without one, hack/test.sh runs the suite on the local plane)"
[ "$(uname -s)" = Linux ] || die "Linux only: the tests dial the pods through routes to the kind network"

export KUBECONFIG="$WORK/kubeconfig"
pids=()
routes=()
cleanup() {
  local pid route
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ "${MLOPS_KIND_KEEP:-0}" = 1 ] && { log "kept: KUBECONFIG=$KUBECONFIG"; return; }
  for route in "${routes[@]}"; do sudo ip route del "$route" 2>/dev/null || true; done
  kind delete cluster --name "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 1. The cluster. The pods' network is not kwok's (10.244.0.0/16, fake addresses).
log "creating kind cluster $NAME"
kind delete cluster --name "$NAME" >/dev/null 2>&1 || true
kind create cluster --name "$NAME" --kubeconfig "$KUBECONFIG" --wait 180s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: 10.245.0.0/16
  serviceSubnet: $SERVICE_NETWORK
YAML
kubectl label node "$NODE" type=real --overwrite >/dev/null
POD_NETWORK="$(kubectl get node "$NODE" -o jsonpath='{.spec.podCIDR}')"
NODE_IP="$(kubectl get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
HOST_IP="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' \
  | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$')"
log "node $NODE at $NODE_IP, its pods in $POD_NETWORK; this machine is $HOST_IP to them"

# 2. The images.
for image in serving operator; do hack/image.sh build "$image"; done
kind load docker-image --name "$NAME" "${IMAGES[@]}"

# 5 (before 3, whose check dials the Service). Routes to the pods and the ClusterIPs.
for route in "$POD_NETWORK" "$SERVICE_NETWORK"; do
  sudo ip route replace "$route" via "$NODE_IP"
  routes+=("$route")
done

# 3. The chart, its operator in the cluster, and a model it serves.
log "installing the chart"
helm install mlops-operator helm/mlops-operator -n mlops-system --create-namespace \
  --wait --timeout 180s "${chart_values[@]}"
kubectl create namespace "$CHART_NS" >/dev/null
python -m http.server "$STORE_PORT" --bind "$HOST_IP" --directory "$WORK" >"$WORK/store.log" 2>&1 &
pids+=($!)
bundle "http://$HOST_IP:$STORE_PORT" | kubectl apply -n "$CHART_NS" -f -
model_deployment | kubectl apply -n "$CHART_NS" -f -
kubectl wait -n "$CHART_NS" --for=condition=Ready mdep/iris --timeout=180s
address="$(kubectl get service iris -n "$CHART_NS" -o jsonpath='{.spec.clusterIP}')"
curl -sf -X POST "http://$address/predict" -H 'Content-Type: application/json' \
  -d '{"features": [6.7, 3.0, 5.2, 2.3]}' || die "the chart's model did not answer at $address"
echo
kubectl get mlops -n "$CHART_NS"

# 4. kwok, for the fake nodes.
"$TOOLS_BIN/kwok" --kubeconfig="$KUBECONFIG" --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.0/16 --node-ip=127.0.0.1 --server-address=127.0.0.1:10347 \
  --node-lease-duration-seconds=40 >"$WORK/kwok.log" 2>&1 &
pids+=($!)
for n in kwok-node-0 kwok-node-1; do kwok_node "$n" | kubectl apply -f - >/dev/null; done
kubectl wait --for=condition=Ready node/kwok-node-0 node/kwok-node-1 --timeout=60s >/dev/null

# 6. The suite.
log "running the suite against $NAME"
MLOPS_TEST_KUBECONFIG="$KUBECONFIG" MLOPS_TEST_REAL_NODE="$NODE" \
  MLOPS_TEST_POD_NETWORK="$POD_NETWORK" MLOPS_TEST_HOST_IP="$HOST_IP" \
  MLOPS_REQUIRE_CLUSTER=1 MLOPS_REQUIRE_REAL_NODE=1 MLOPS_REQUIRE_IMAGE=1 hack/test.sh "$@"
