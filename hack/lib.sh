# shellcheck shell=bash
# Shared paths for hack/ scripts. Sourced, not run.
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
. "$HACK_DIR/versions.env"
MLOPS_CACHE_DIR="${MLOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator}"
TOOLS_KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
# shellcheck disable=SC2034  # read by the scripts that source this file
TOOLS_BIN="$MLOPS_CACHE_DIR/tools/$TOOLS_KEY/bin"

# kwok_node NAME: the manifest of a fake node that kwok manages (its pods never run
# and get fake IPs), tainted so that only pods that ask for one land there.
kwok_node() {
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    topology.kubernetes.io/zone: zone-${1##*-}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "2000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "2000"}
NODE
}
