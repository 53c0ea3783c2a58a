# shellcheck shell=bash
# The local plane's real node: containerd, runc and the CNI plugins from Debian, and
# a kubelet and kube-proxy built from the control plane's own module. Sourced by
# hack/cluster.sh, which defines STATE, PKI, PIDS, LOGS, TOOLS_BIN, log, die, start,
# wait_for, gen_cert, write_kubeconfig, component_status and kubectl_.
#
# Everything it makes is its own and is removed by node_down: the bridge, the
# processes (by pid), the pods' processes (by their cgroups), mounts under $NODE,
# network namespaces under containerd's state, iptables chains, the kubepods cgroups.
# Facts behind each setting: ../shared/REAL_NODE.md in the project's design notes.

NODE_NAME=mlops-node-0
BRIDGE="${MLOPS_BRIDGE:-mlops0}"
NODE_CIDR=10.245.0.0/24
GATEWAY=10.245.0.1
KWOK_CIDR=10.244.0.0/16
NODE="$STATE/node"
CONTAINERD_SOCK="$NODE/containerd/containerd.sock"
# containerd's content and snapshots: a cache like the tools, kept by `down --purge`,
# so that a fresh plane imports no image it already has.
CONTAINERD_ROOT="$MLOPS_CACHE_DIR/containerd"
SANDBOX_IMAGE=localhost/mlops-pause:1
NODE_IMAGES=(serving operator)
GUARD=MLOPS-GUARD

ctr_() { ctr --address "$CONTAINERD_SOCK" --connect-timeout 5s -n k8s.io "$@"; }

# The pod sandbox: a static C program packed as a one-layer docker-archive, rebuilt
# only when its source changes.
sandbox_archive() {
  local src="$HACK_DIR/node/pause.c" dir key
  key=$(sha256sum "$src" | cut -c1-16)
  dir="$MLOPS_CACHE_DIR/node/sandbox-$key"
  if [ ! -f "$dir/pause.tar" ]; then
    rm -rf "$dir" && mkdir -p "$dir/layer" "$dir/archive"
    gcc -static -Os -s -o "$dir/layer/pause" "$src"
    tar -C "$dir/layer" --owner=0 --group=0 --mtime=@0 -cf "$dir/layer.tar" pause
    local layer config
    layer=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
    mkdir -p "$dir/archive/$layer" && mv "$dir/layer.tar" "$dir/archive/$layer/layer.tar"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
      "$layer" >"$dir/archive/config.json"
    config=$(sha256sum "$dir/archive/config.json" | cut -d' ' -f1)
    mv "$dir/archive/config.json" "$dir/archive/$config.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
      "$config" "$SANDBOX_IMAGE" "$layer" >"$dir/archive/manifest.json"
    tar -C "$dir/archive" --owner=0 --group=0 --mtime=@0 -cf "$dir/pause.tar.partial" . \
      && mv "$dir/pause.tar.partial" "$dir/pause.tar"
  fi
  echo "$dir/pause.tar"
}

node_pki() {
  mkdir -p "$NODE"
  gen_cert "node-$NODE_NAME" "system:node:$NODE_NAME" system:nodes
  gen_cert kube-proxy system:kube-proxy
  # The API server's identity towards the kubelet (logs, exec, port-forward).
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  write_kubeconfig "$NODE/kubelet.kubeconfig" "node-$NODE_NAME"
  write_kubeconfig "$NODE/kube-proxy.kubeconfig" kube-proxy
}

bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/${NODE_CIDR#*/}" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  # The host reaches ClusterIPs through the bridge, from the gateway address, even
  # before kube-proxy has written its rules: nothing for them ever heads for eth0.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$GATEWAY"
  guard_up
}

# Linux accepts packets for the gateway address on any interface: only loopback and
# the bridge may reach the pod and service ranges. And nothing is ever sent to a kwok
# pod IP, where nothing listens: kube-proxy programs their Services too.
guard_up() {
  local chain
  iptables -t raw -N "$GUARD" 2>/dev/null || iptables -t raw -F "$GUARD"
  iptables -t raw -A "$GUARD" -i lo -j RETURN
  iptables -t raw -A "$GUARD" -i "$BRIDGE" -j RETURN
  iptables -t raw -A "$GUARD" -d "$NODE_CIDR" -j DROP
  iptables -t raw -A "$GUARD" -d "$SERVICE_CIDR" -j DROP
  iptables -t raw -C PREROUTING -j "$GUARD" 2>/dev/null || iptables -t raw -I PREROUTING -j "$GUARD"
  iptables -t filter -N "$GUARD" 2>/dev/null || iptables -t filter -F "$GUARD"
  iptables -t filter -A "$GUARD" -d "$KWOK_CIDR" -j REJECT
  for chain in OUTPUT FORWARD; do
    iptables -t filter -C "$chain" -j "$GUARD" 2>/dev/null || iptables -t filter -I "$chain" -j "$GUARD"
  done
}

# kube-proxy exits when its configuration file is rewritten, even with the same
# content: an `up` on a running plane (after a component died) must leave it be.
write_if_changed() {  # write_if_changed FILE < CONTENT
  local new
  new=$(cat)
  [ -f "$1" ] && [ "$(cat "$1")" = "$new" ] && return
  printf '%s\n' "$new" >"$1.partial" && mv "$1.partial" "$1"
}

node_configs() {
  mkdir -p "$NODE/containerd" "$NODE/cni" "$NODE/kubelet" "$NODE/pod-logs"
  write_if_changed "$NODE/containerd/config.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$NODE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni"
EOF
  write_if_changed "$NODE/cni/10-mlops.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mlops",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$NODE/cni-ipam",
      "ranges": [[{"subnet": "$NODE_CIDR", "gateway": "$GATEWAY"}]],
      "routes": [{"dst": "$SERVICE_CIDR"}]
    }
  }]
}
EOF
  # Pods resolve nothing: no resolver of the host's reaches them.
  echo "options ndots:1" | write_if_changed "$NODE/resolv.conf"
  write_if_changed "$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: $NODE/resolv.conf
podLogsDir: $NODE/pod-logs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
# Images cannot be pulled again here: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%", memory.available: "100Mi"}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
registerNode: true
serializeImagePulls: false
rotateCertificates: false
nodeStatusReportFrequency: 10s
EOF
  write_if_changed "$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host alone: no NodePorts on its interfaces, route_localnet and the
# conntrack sysctls as they are.
nodePortAddresses: [$NODE_CIDR]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

containerd_up() {
  start_bin containerd "$(command -v containerd)" --config "$NODE/containerd/config.toml"
  wait_for 30 containerd ctr_ version
  ctr_ images import --no-unpack=false "$(sandbox_archive)" >/dev/null
}

# The project's images, built by hack/image.sh (cached by a hash of their inputs) and
# imported when containerd lacks that build.
node_images() {
  local name image id stamp
  for name in "${NODE_IMAGES[@]}"; do
    image="localhost/mlops-$name:test"
    IMAGE=$image "$HACK_DIR/image.sh" build "$name"
    id=$("$HACK_DIR/image.sh" engine image inspect --format '{{.Id}}' "$image")
    stamp="$CONTAINERD_ROOT/imported-$name"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$id" ] || ! ctr_ images check "name==$image" | grep -q complete; then
      local started=$SECONDS
      "$HACK_DIR/image.sh" engine save --format docker-archive "$image" | ctr_ images import - >/dev/null
      echo "$id" >"$stamp"
      log "imported $image into containerd in $((SECONDS - started)) s"
    fi
  done
}

kubelet_up() {
  # A Node object left from an earlier run would read Ready before this kubelet says so.
  pid_of kubelet >/dev/null || kubectl_ delete node "$NODE_NAME" --ignore-not-found >/dev/null
  start kubelet --config="$NODE/kubelet.yaml" --kubeconfig="$NODE/kubelet.kubeconfig" \
    --root-dir="$NODE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$GATEWAY" \
    --node-labels="type=real"
  start kube-proxy --config="$NODE/kube-proxy.yaml"
}

node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

node_up() {
  node_configs
  node_pki
  containerd_up
  node_images
  kubelet_up
  wait_for 90 "the real node $NODE_NAME Ready" node_ready
}

# Every process of the node's pods, found through the kubepods cgroups.
kill_pods() {
  local procs pid
  procs=$(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null || true)
  for pid in $procs; do kill -9 "$pid" 2>/dev/null || true; done
  # The shims of this containerd (named by its socket) outlive it otherwise.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
}

drop_chain() {  # drop_chain TABLE CHAIN: the rules that jump to it, then the chain
  local rule
  while read -r rule; do
    eval "iptables -t $1 ${rule/#-A/-D}" 2>/dev/null || true
  done < <(iptables-save -t "$1" | grep -E -- "-j $2( |\$)" || true)
  iptables -t "$1" -F "$2" 2>/dev/null && iptables -t "$1" -X "$2" 2>/dev/null || true
}

node_down() {
  stop_component kube-proxy
  stop_component kubelet
  kill_pods
  stop_component containerd
  [ -x "$TOOLS_BIN/kube-proxy" ] && "$TOOLS_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local mount chain table
  # Deepest first: pod volumes, overlay rootfs, network namespaces, shm.
  while read -r mount; do umount -l "$mount" 2>/dev/null || true; done \
    < <(awk -v p="$NODE/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r)
  for table in raw filter; do drop_chain "$table" "$GUARD"; done
  # The kubelet's own chains (kube-proxy --cleanup removed kube-proxy's).
  for table in mangle nat filter; do
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do drop_chain "$table" "$chain"; done
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  local dir
  for dir in /sys/fs/cgroup/*/kubepods; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$NODE/containerd/state" "$NODE/kubelet" "$NODE/cni-ipam" "$NODE/pod-logs"
}

node_status() {
  local name rc=0
  for name in containerd kubelet kube-proxy; do
    component_status "$name" || rc=1
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    echo "bridge: $BRIDGE $GATEWAY (pods $NODE_CIDR)"
  else
    echo "bridge: none"; rc=1
  fi
  if [ $rc = 0 ]; then
    echo "node: $NODE_NAME $(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null || echo unknown)"
  fi
  return $rc
}
