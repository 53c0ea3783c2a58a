#!/usr/bin/env bash
# A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok managing fake nodes, and one real node (hack/node.sh) where
# pods really run the project's images.
#
#   hack/cluster.sh up          build the tools if needed, start everything, wait until ready;
#                               --no-real-node: the kwok nodes only (no kubelet, no bridge)
#   hack/cluster.sh down        stop what `up` started and remove what it made; --purge also
#                               deletes its state (certificates, etcd, containerd's images)
#   hack/cluster.sh status      which components run, the real node, the kubeconfig path
#   hack/cluster.sh kubeconfig  print the admin kubeconfig path
#   hack/cluster.sh env         print `export PATH=... KUBECONFIG=...` for eval
#   hack/cluster.sh bin         print the directory holding kubectl, helm and the rest
#
# Nothing listens beyond loopback and the plane's own bridge (mlops0, 10.245.0.1/24),
# where the API server, the real node's pods and kube-proxy's ClusterIPs live. The
# kwok nodes are tainted kwok.x-k8s.io/node=fake:NoSchedule; their pods get fake IPs
# in 10.244.0.0/16, where nothing serves: never dial them.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE="${MLOPS_CLUSTER_DIR:-$MLOPS_CACHE_DIR/cluster}"
PKI="$STATE/pki" PIDS="$STATE/pids" LOGS="$STATE/logs"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
ETCD_PORT="${MLOPS_ETCD_PORT:-12379}"
APISERVER_PORT="${MLOPS_APISERVER_PORT:-16443}"
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16
NODES=(kwok-node-0 kwok-node-1)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
MODE_FILE="$STATE/real-node"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() { local f="$PIDS/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what (logs: $LOGS)"
    sleep 0.2
  done
}

start_bin() {  # start_bin NAME PATH ARGS...: run a component detached, unless it already runs
  local name=$1 path=$2; shift 2
  if pid_of "$name" >/dev/null; then log "$name already running"; return; fi
  setsid "$path" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "$name started (pid $!)"
}

start() { start_bin "$1" "$TOOLS_BIN/$1" "${@:2}"; }

mode() { cat "$MODE_FILE" 2>/dev/null || echo 0; }  # 1: the last up started the real node

component_status() {  # component_status NAME: one line; fails if it does not run
  local pid
  if pid=$(pid_of "$1"); then echo "$1: running (pid $pid)"; else echo "$1: stopped"; return 1; fi
}

stop_component() {  # stop_component NAME: by its pid file; SIGKILL after 5 s
  local name=$1 pid
  if pid=$(pid_of "$name"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    # A restarted containerd must not meet its predecessor on the socket.
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    log "$name stopped"
  fi
  rm -f "$PIDS/$name.pid"
}

gen_cert() {  # gen_cert NAME CN [O] [SANS]: a key and a CA-signed cert, once
  local name=$1 cn=$2 o=${3:-} sans=${4:-}
  [ -f "$PKI/$name.crt" ] && return
  local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

write_kubeconfig() {  # write_kubeconfig FILE CERT_NAME
  write_if_changed "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mlops-local
  cluster:
    server: $SERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: mlops-local
  context: {cluster: mlops-local, user: $2}
current-context: mlops-local
KC
}

make_pki() {
  mkdir -p "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
      -days 3650 -subj "/CN=mlops-local-ca" 2>/dev/null
  fi
  [ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
                            openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  # Certificates from before the bridge address was a SAN are made again.
  if [ -f "$PKI/apiserver.crt" ] && ! openssl x509 -in "$PKI/apiserver.crt" -noout -text | grep -q "IP Address:$GATEWAY"; then
    rm -f "$PKI/apiserver.crt" "$PKI/apiserver.key"
  fi
  gen_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$GATEWAY,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert admin kubernetes-admin system:masters
  gen_cert controller-manager system:kube-controller-manager
  gen_cert scheduler system:kube-scheduler
  gen_cert kwok kwok-controller system:masters
  write_kubeconfig "$KUBECONFIG_PATH" admin
  for c in controller-manager scheduler kwok; do write_kubeconfig "$STATE/$c.kubeconfig" "$c"; done
}

# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"

kubectl_() { "$TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
apiserver_ready() { curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$SERVER/readyz"; }

create_nodes() {
  local n
  for n in "${NODES[@]}"; do kwok_node "$n" | kubectl_ apply -f - >/dev/null; done
}

nodes_ready() {
  [ "$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -ge "${#NODES[@]}" ]
}

up() {
  local start=$SECONDS real=1 bind=127.0.0.1 node_flags=()
  [ "${1:-}" = --no-real-node ] && real=0
  if pid_of kube-apiserver >/dev/null && [ "$(mode)" != "$real" ]; then
    die "the plane runs $( [ "$real" = 1 ] && echo without || echo with ) the real node: run down first"
  fi
  "$HACK_DIR/build-tools.sh" >/dev/null
  mkdir -p "$PIDS" "$LOGS" "$STATE/etcd"
  echo "$real" >"$MODE_FILE"
  if [ "$real" = 1 ]; then
    # The API server lives on the bridge, so that pods reach it through the
    # `kubernetes` Service; it answers there alone, not on 127.0.0.1.
    bridge_up
    bind=$GATEWAY
    node_flags=(--endpoint-reconciler-type=lease --kubelet-preferred-address-types=InternalIP
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key")
  else
    node_flags=(--endpoint-reconciler-type=none)
  fi
  SERVER="https://$bind:$APISERVER_PORT"
  make_pki
  [ "$real" = 1 ] && node_pki
  start etcd --name=mlops-local --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls=http://127.0.0.1:$((ETCD_PORT + 1)) \
    --initial-advertise-peer-urls=http://127.0.0.1:$((ETCD_PORT + 1)) \
    --initial-cluster="mlops-local=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls=http://127.0.0.1:$((ETCD_PORT + 2)) \
    --quota-backend-bytes=4294967296 --unsafe-no-fsync
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$bind" --advertise-address="$bind" --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
    "${node_flags[@]}" --profiling=false
  wait_for 90 kube-apiserver apiserver_ready
  start kube-controller-manager --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials --leader-elect=false --bind-address=127.0.0.1 \
    --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false \
    --node-monitor-grace-period=2m
  start kube-scheduler --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --profiling=false
  start kwok --kubeconfig="$STATE/kwok.kubeconfig" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="$POD_CIDR" --node-ip=127.0.0.1 --server-address=127.0.0.1:10247 \
    --node-lease-duration-seconds=40
  create_nodes
  wait_for 60 "kwok nodes Ready" nodes_ready
  wait_for 60 "default ServiceAccount" kubectl_ get serviceaccount default -n default
  [ "$real" = 1 ] && node_up
  log "ready in $((SECONDS - start)) s; KUBECONFIG=$KUBECONFIG_PATH"
}

down() {
  local i
  # The node goes first, while the API server can still see its pods go.
  if [ "$(mode)" = 1 ]; then node_down; fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_component "${COMPONENTS[i]}"; done
  if [ "${1:-}" = --purge ]; then rm -rf "$STATE"; log "state removed"; fi
}

status() {
  local name rc=0
  for name in "${COMPONENTS[@]}"; do
    component_status "$name" || rc=1
  done
  if [ "$(mode)" = 1 ]; then
    node_status || rc=1
  else
    echo "real node: none (up --no-real-node)"
  fi
  echo "kubeconfig: $KUBECONFIG_PATH"
  echo "tools: $TOOLS_BIN"
  return $rc
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  status) status ;;
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  bin) echo "$TOOLS_BIN" ;;
  env) echo "export PATH=\"$TOOLS_BIN:\$PATH\" KUBECONFIG=\"$KUBECONFIG_PATH\"" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
