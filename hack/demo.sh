#!/usr/bin/env bash
# The main job: the whole story, with the time each step took.
#  1. the local control plane comes up (with MLOPS_USE_CURRENT_CONTEXT=1, the current
#     kube context is used instead);
#  2. the chart is installed. On the local plane its operator runs in the cluster, a
#     pod on the real node; with the current context it runs on this machine (that
#     cluster may not have the images), and the demo says which;
#  3. three iris classifiers are trained and bundled with `mlops-bundle`, and served
#     over HTTP from an address the pods reach (the artifact store): version 1,
#     version 2 (another regularization), and version 3, which has lost a step of its
#     pipeline and fails on a third of real rows (the setosas, which the sample it was
#     checked on lacked);
#  4. ModelVersion iris-1 is applied. alice, who may edit it but not approve, is
#     refused by the API server; bob, bound to the chart's mlops-approver role,
#     approves it, and the approval records him;
#  5. a ModelDeployment that requires approval serves it on the real node: a
#     prediction, and the serving pods' Prometheus metrics. From here on, callers
#     send iris rows through the model's Service all along;
#  6. version 2 arrives as a canary and walks setWeight 30 -> analysis -> setWeight 60
#     -> pause 5s, and is promoted, while `kubectl get mdep -w` shows the weights;
#  7. version 3 arrives as the next canary; its analysis rolls it back;
#  8. a DriftMonitor watches the stable track: steady traffic is no drift; then the
#     callers' rows shift, it reports drift, and starts a retraining Job.
# It ends with `kubectl get mlops` and a summary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NS=mlops-demo
WORK="${MLOPS_CACHE_DIR:-$HOME/.cache/mlops-operator}/demo"
mkdir -p "$WORK"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

steps=()
took=()
begun=$SECONDS
chapter() {  # chapter TITLE: close the running step (its time kept), open the next
  [ ${#steps[@]} -gt 0 ] && close
  steps+=("$1")
  begun=$SECONDS
  printf '\n== %d. %s\n' "${#steps[@]}" "$1"
}
close() { took+=($((SECONDS - begun))); printf '   (step %d: %d s)\n' "${#steps[@]}" "${took[-1]}"; }
show() { printf '\n$ %s\n' "$*"; "$@"; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll, with a dot every 5 s; an empty
  # WHAT says nothing until it times out (while a watch is printing)
  local limit=$1 what=$2 start=$SECONDS
  shift 2
  [ -n "$what" ] && printf '   waiting for %s ' "$what"
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      printf 'timed out after %d s: %s\n' "$limit" "${what:-$*}"
      return 1
    fi
    [ -n "$what" ] && [ $(((SECONDS - start) % 5)) = 0 ] && printf '.'
    sleep 1
  done
  [ -z "$what" ] || printf ' %d s\n' $((SECONDS - start))
}

chapter "The control plane"
hack/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
in_cluster=0
if [ "${MLOPS_USE_CURRENT_CONTEXT:-0}" != 1 ]; then
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
  in_cluster=1
fi
show kubectl get nodes -L type
[ "$in_cluster" = 1 ] && echo "mlops-node-0 (type=real) runs pods for real; the kwok nodes only pretend to."
# A demo run before this one left its objects: start afresh.
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null

chapter "The chart"
values=(--set "watchNamespaces={$NS}" --set image.repository=localhost/mlops-operator
  --set image.tag=test --set servingImage=localhost/mlops-serving:test)
# A namespace being deleted (a test's, a demo's) takes nothing new: wait for it to go.
if [ "$(kubectl get namespace mlops-system -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ]; then
  wait_for 120 "namespace mlops-system to finish terminating" \
    bash -c '! kubectl get namespace mlops-system'
fi
# --take-ownership: CRDs applied before without Helm (by kubectl, or a test) are adopted.
show helm upgrade --install mlops-operator helm/mlops-operator -n mlops-system \
  --create-namespace --take-ownership "${values[@]}"
if [ "$in_cluster" = 1 ]; then
  echo "The operator runs in the cluster: a pod of the chart's Deployment, on the real node."
  wait_for 120 "the operator's pod" kubectl rollout status deployment/mlops-operator -n mlops-system --timeout=2s
else
  echo "The operator runs on this machine, with the chart's CRDs and roles in the cluster."
  kubectl scale deployment/mlops-operator -n mlops-system --replicas=0 >/dev/null
  MLOPS_SERVING_IMAGE=localhost/mlops-serving:test MLOPS_LIVENESS_PORT=18181 \
    MLOPS_METRICS_PORT=18182 mlops-operator --namespace "$NS" >"$WORK/operator.log" 2>&1 &
  pids+=($!)
  wait_for 60 "the operator" curl -sf http://127.0.0.1:18181/healthz
fi
show kubectl get deployments,services,networkpolicies -n mlops-system

chapter "Three models, trained and bundled"
python hack/iris_models.py "$WORK"
for version in 1 2 3; do
  reference="$WORK/reference.csv"
  [ "$version" = 3 ] && reference="$WORK/reference-3.csv"
  mlops-bundle build --model "$WORK/model-$version.joblib" --reference "$reference" \
    --name iris --version "$version" --out "$WORK/iris-$version.tar.gz" >/dev/null
done
show ls -l "$WORK"/iris-1.tar.gz "$WORK"/iris-2.tar.gz "$WORK"/iris-3.tar.gz
# The artifact store: HTTP on the real node's bridge address (with one's own cluster,
# MLOPS_ARTIFACT_HOST names an address its pods reach).
HOST="${MLOPS_ARTIFACT_HOST:-$(kubectl get node mlops-node-0 \
  -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')}"
python -m http.server 18183 --bind "$HOST" --directory "$WORK" >"$WORK/store.log" 2>&1 &
pids+=($!)
for version in 1 2 3; do
  extra=()
  [ "$version" = 1 ] && extra=(--alias champion --metric accuracy=0.97)
  mlops-bundle manifest "$WORK/iris-$version.tar.gz" --uri "http://$HOST:18183/iris-$version.tar.gz" \
    --stage Staging "${extra[@]}" >"$WORK/modelversion-$version.yaml"
done

chapter "Registered, and approved by someone allowed to"
show kubectl apply -n "$NS" -f "$WORK/modelversion-1.yaml"
kubectl create rolebinding alice-edits --clusterrole=edit --user=alice -n "$NS" >/dev/null
kubectl create rolebinding bob-approves --clusterrole=mlops-approver --user=bob -n "$NS" >/dev/null
echo "alice may edit ModelVersions in $NS; bob holds the chart's mlops-approver role."
printf '\n$ kubectl mlops approve mv/iris-1 -n %s --as alice\n' "$NS"
if kubectl mlops approve mv/iris-1 -n "$NS" --as alice 2>&1; then
  echo "alice's approval was admitted: the admission policy is missing" >&2
  exit 1
fi
echo "(refused, as it should be)"
show kubectl mlops approve mv/iris-1 -n "$NS" --as bob
wait_for 30 "the operator to record it" \
  kubectl wait -n "$NS" --for=jsonpath='{.status.approval.approvedBy}'=bob mv/iris-1 --timeout=2s
show kubectl get mv iris-1 -n "$NS" -o jsonpath='{.status.approval}{"\n"}'

chapter "Deployed, answering, measured"
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
wait_for 120 "iris Ready (two pods on the real node)" \
  kubectl wait -n "$NS" --for=condition=Ready mdep/iris --timeout=2s
show kubectl get deployments,pods -n "$NS" -o wide
# `kubectl port-forward` holds one pod: a new one follows the Service to the router.
forward() {  # forward [WHAT]: a new port-forward, waited for as WHAT ("": silently)
  if [ -n "${forwarding:-}" ]; then kill "$forwarding" 2>/dev/null || true; wait "$forwarding" 2>/dev/null || true; fi
  kubectl port-forward -n "$NS" svc/iris 18180:80 >"$WORK/port-forward.log" 2>&1 &
  forwarding=$!
  pids+=("$forwarding")
  wait_for 30 "${1-the port-forward}" curl -sf http://127.0.0.1:18180/v2/health/ready
}
forward
show curl -s -X POST http://127.0.0.1:18180/predict -H 'Content-Type: application/json' \
  -d '{"features": {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}}'
echo
printf '\n$ curl -s http://127.0.0.1:18180/metrics | grep ...\n'
curl -s http://127.0.0.1:18180/metrics | grep -E '^mlops_(requests_total|request_duration_seconds_count|predictions_total)' | head -8

# Callers, from now on: the rows of rows.txt in turn (shifted.txt once $WORK/shift
# exists), through the model's Service. Each answer names the track that served it.
callers() {
  local i=0 file row
  while true; do
    for _ in $(seq 20); do curl -sf http://127.0.0.1:18180/v2/health/ready >/dev/null && break; sleep 0.5; done
    while true; do
      file="$WORK/rows.txt"
      [ -e "$WORK/shift" ] && file="$WORK/shifted.txt"
      row=$(sed -n "$((i % 150 + 1))p" "$file")
      i=$((i + 1))
      curl -s -o /dev/null -w '%{http_code} %header{x-mlops-track}\n' -X POST http://127.0.0.1:18180/predict \
        -H 'Content-Type: application/json' -d "{\"features\": $row}" >>"$WORK/callers.log" || break
      sleep 0.02
    done
  done
}
rm -f "$WORK/shift"
: >"$WORK/callers.log"
callers &
pids+=($!)
# A canary of version $1 on top of the stable track the spec names ($2, JSON). After
# a promotion the user moves spec.stable to the promoted version (a commit to Git,
# under Argo CD): the operator never writes spec.
canary() {
  kubectl patch -n "$NS" mdep iris --type merge -p "$(cat <<JSON
{"spec": {"stable": $2, "canary": {"version": "$1",
  "steps": [{"setWeight": 30}, {"analysis": {"count": 1}}, {"setWeight": 60}, {"pause": {"duration": "5s"}}],
  "analysis": {"interval": "5s", "minRequests": 10,
               "thresholds": {"errorRate": 0.05, "latencyP99Ms": 500, "predictionDrift": 0.5}}}}}
JSON
)" >/dev/null
}
# Once the model's Service selects the router (the operator moves it when the router
# is Ready), a new port-forward lands on the router.
on_router() { [ "$(kubectl get svc iris -n "$NS" -o jsonpath='{.spec.selector.mlops\.dev/track}')" = router ]; }
phase() { [ "$(kubectl get mdep iris -n "$NS" -o jsonpath='{.status.canary.phase}')" = "$1" ]; }
# Answers by status and track; no track: the stable pods answered, with no router.
answers() {
  grep -v '^000' "$WORK/callers.log" | sort | uniq -c \
    | awk '{ printf "%7d  HTTP %s  %s\n", $1, $2, ($3 == "" ? "stable, no router yet" : $3) }'
}
rollout() {  # rollout VERSION STABLE_JSON PHASE: version as a canary, until PHASE
  show kubectl apply -n "$NS" -f "$WORK/modelversion-$1.yaml"
  show kubectl mlops approve "mv/iris-$1" -n "$NS" --as bob
  : >"$WORK/callers.log"
  printf '\n$ kubectl get mdep iris -n %s -w\n' "$NS"
  kubectl get mdep iris -n "$NS" -w --output-watch-events=false &
  local watching=$!
  canary "$1" "$2"
  wait_for 120 "" on_router
  forward ""
  wait_for 180 "" phase "$3"
  sleep 2
  kill "$watching" 2>/dev/null || true
  echo "the canary is $3"
  echo "answers by status and track while version $1 rolled out:"
  answers
  show kubectl get mdep iris -n "$NS" -o jsonpath='{.status.canary.message}{"\n"}'
}

chapter "Version 2 as a canary, promoted"
rollout 2 '{"alias": "champion"}' Promoted
# Promoted: the canary keeps all traffic until the stable track runs version 2, Ready.
wait_for 120 "stable to run version 2" \
  kubectl wait -n "$NS" --for=jsonpath='{.status.traffic.canaryWeight}'=0 mdep/iris --timeout=2s

chapter "Version 3 as the next canary, rolled back"
rollout 3 '{"alias": null, "version": "2"}' RolledBack
show kubectl get events -n "$NS" --field-selector reason=RolledBack

chapter "Drift, and a retraining Job"
forward
kubectl apply -n "$NS" -f - <<'YAML'
apiVersion: mlops.dev/v1alpha1
kind: DriftMonitor
metadata:
  name: iris
spec:
  deploymentRef: {name: iris}
  track: stable
  interval: 10s
  window: {duration: 30s, minSamples: 100}
  tests: {method: ks, threshold: 0.001}
  correction: bonferroni
  driftShare: 0.5
  actions:
    retrain:
      cooldown: 1h
      jobTemplate:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: retrain
                image: localhost/mlops-serving:test
                # A real one would train on the window; this one reads what it got.
                command:
                - python
                - -c
                - |
                  import json, os
                  report = json.load(open(os.environ["MLOPS_DRIFT_REPORT"]))
                  drifted = [f["name"] for f in report["features"] if f["drifted"]]
                  print("retraining from", os.environ["MLOPS_MODEL_VERSION"],
                        "on", report["samples"], "rows; drifted:", ", ".join(drifted))
YAML
judged() { [ -n "$(kubectl get dm iris -n "$NS" -o jsonpath='{.status.datasetDrift}')" ]; }
drifted() { [ "$(kubectl get dm iris -n "$NS" -o jsonpath='{.status.datasetDrift}')" = true ]; }
wait_for 60 "a verdict on steady traffic" judged
show kubectl get dm iris -n "$NS"
echo "The callers' petals grow 2 cm longer (and 1 cm wider)."
touch "$WORK/shift"
wait_for 120 "the DriftMonitor to report drift" drifted
show kubectl get dm iris -n "$NS"
show kubectl get dm iris -n "$NS" -o jsonpath='{range .status.features[*]}{.name}{"\t"}{.statistic}{"\t"}{.drifted}{"\n"}{end}'
job() { kubectl get jobs -n "$NS" -l mlops.dev/drift-monitor=iris -o name | grep .; }
wait_for 60 "the retraining Job" job
retraining="$(job)"
wait_for 60 "it to finish" kubectl wait -n "$NS" --for=condition=Complete "$retraining" --timeout=2s
show kubectl get jobs -n "$NS"
show kubectl logs -n "$NS" "$retraining"
close

printf '\n== The whole story\n'
show kubectl get mlops -n "$NS"
echo
total=0
for i in "${!steps[@]}"; do
  printf '  %d. %-48s %4d s\n' $((i + 1)) "${steps[$i]}" "${took[$i]}"
  total=$((total + took[i]))
done
printf '     %-48s %4d s\n' "in all" "$total"
printf '\nThe plane keeps running: eval "$(hack/cluster.sh env)" to use kubectl; hack/cluster.sh down to stop it.\n'
