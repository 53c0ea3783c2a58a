#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy into a cache
# keyed by the pinned versions in hack/versions.env. Each tool gets its own wrapper
# module so that minimal version selection never mixes their dependencies.
# Prints the bin directory on stdout when done; progress goes to stderr.
# `hack/build-tools.sh kind` builds kind alone (for hack/kind-e2e.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export GOMODCACHE="$MLOPS_CACHE_DIR/go/mod" GOCACHE="$MLOPS_CACHE_DIR/go/build"
work="$MLOPS_CACHE_DIR/go/modules"
mkdir -p "$TOOLS_BIN" "$work"

log() { printf '[build-tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go not found: install Go >= 1.25 to build the control plane"; exit 1; }

# build NAME BINARIES... : runs the function build_NAME unless every binary exists.
build() {
  local name=$1; shift
  local missing=0 b
  for b in "$@"; do [ -x "$TOOLS_BIN/$b" ] || missing=1; done
  if [ "$missing" = 0 ]; then log "$name: cached"; return; fi
  local start=$SECONDS logfile="$work/$name.log"
  log "$name: building $* (log: $logfile)"
  if ! "build_$name" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    log "$name: build failed"
    exit 1
  fi
  log "$name: built in $((SECONDS - start)) s"
}

new_module() {  # new_module DIR MODULE_NAME GO_VERSION
  rm -rf "$1"; mkdir -p "$1"
  printf 'module %s\n\ngo %s\n' "$2" "$3" >"$1/go.mod"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor staging d=$work/kubernetes
  minor=$(echo "$v" | cut -d. -f2)
  new_module "$d" localk8s 1.25.0
  # The kubernetes go.mod requires its staging modules at v0.0.0 and replaces them
  # with ./staging paths, which a dependent module ignores: pin the published ones.
  staging=$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c \
    'import json,sys,re; p=json.load(sys.stdin)["GoMod"]; print(" ".join(sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0$", open(p).read(), re.M)))))')
  {
    echo "godebug default=go1.25"
    echo "require k8s.io/kubernetes $v"
    echo "replace ("
    for m in $staging; do echo "  $m => $m v0.$minor.${v##*.}"; done
    echo ")"
  } >>"$d/go.mod"
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$d" && go build -ldflags "$ld" -o "$TOOLS_BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_etcd() {
  local d=$work/etcd
  new_module "$d" localetcd 1.24
  (cd "$d" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
    && go build -ldflags "-s -w" -o "$TOOLS_BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  local d=$work/kwok
  new_module "$d" localkwok 1.24
  (cd "$d" && go get "sigs.k8s.io/kwok@$KWOK_VERSION" \
    && go build -ldflags "-s -w" -o "$TOOLS_BIN/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

build_helm() {
  local d=$work/helm minor
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  new_module "$d" localhelm 1.24
  (cd "$d" && go get "helm.sh/helm/v3@$HELM_VERSION" \
    && go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
      -o "$TOOLS_BIN/helm" helm.sh/helm/v3/cmd/helm)
}

build_kind() {
  local d=$work/kind
  new_module "$d" localkind 1.24
  (cd "$d" && go get "sigs.k8s.io/kind@$KIND_VERSION" \
    && go build -ldflags "-s -w" -o "$TOOLS_BIN/kind" sigs.k8s.io/kind)
}

total=$SECONDS
if [ "${1:-}" = kind ]; then  # hack/kind-e2e.sh's kind, in a folder of its own
  TOOLS_BIN="$MLOPS_CACHE_DIR/tools/kind-$KIND_VERSION/bin"
  mkdir -p "$TOOLS_BIN"
  build kind kind
  echo "$TOOLS_BIN"
  exit 0
fi
build etcd etcd
build kwok kwok
build helm helm
build kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
log "all tools ready in $((SECONDS - total)) s: $TOOLS_BIN"
echo "$TOOLS_BIN"
