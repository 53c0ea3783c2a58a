#!/usr/bin/env bash
# Prepares a fresh machine: system packages, the Python environment (.venv) and the
# control plane's binaries (cached). Safe to run again; each step skips done work.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
# wrk is for hack/bench_serving.py; containerd, runc, the CNI plugins, iptables and gcc
# (for the pod sandbox's program) are the local plane's real node (hack/node.sh);
# prometheus is the server the canary analysis' prometheus source is tested against,
# and a linter, shellcheck, reads the scripts (hack/kind-e2e.sh cannot run here).
for tool in openssl curl git wrk containerd runc iptables gcc prometheus shellcheck; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { log "Go >= 1.25 is needed to build the control plane"; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 25 ] || { log "Go $(go env GOVERSION) is too old: need >= 1.25"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing the project and its dev tools into .venv (a few minutes the first time)"
  started=$SECONDS
  # pip and setuptools talk a lot even when all is well: their output is shown on failure.
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev,torch,onnx,mlflow]'; } \
      >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    log "pip install failed (log: .venv/install.log)"
    exit 1
  fi
  log "installed in $((SECONDS - started)) s"
  rm -f .venv/.installed-*; touch "$stamp"
fi

# checkov pins its own dependencies, which clash with ours: it gets a venv of its
# own, linked into .venv/bin.
# shellcheck source=hack/lib.sh
. hack/lib.sh
checkov="$MLOPS_CACHE_DIR/checkov-$CHECKOV_VERSION"
if [ ! -x "$checkov/bin/checkov" ]; then
  log "installing checkov $CHECKOV_VERSION into $checkov"
  rm -rf "$checkov" && python3 -m venv "$checkov"
  if ! "$checkov/bin/pip" install -q "checkov==$CHECKOV_VERSION" >"$checkov.log" 2>&1; then
    cat "$checkov.log" >&2
    rm -rf "$checkov"
    log "pip install checkov failed"
    exit 1
  fi
fi
ln -sf "$checkov/bin/checkov" .venv/bin/checkov

hack/build-tools.sh >/dev/null
