# Shared paths for hack/ scripts. Sourced, not run.
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
. "$HACK_DIR/versions.env"
MLOPS_CACHE_DIR="${MLOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-operator}"
TOOLS_KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
TOOLS_BIN="$MLOPS_CACHE_DIR/tools/$TOOLS_KEY/bin"
