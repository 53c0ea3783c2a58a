#!/usr/bin/env bash
# Build the images (serving_image/Dockerfile, operator/Dockerfile) and run containers.
#
#   hack/image.sh build [serving|operator]
#                                build localhost/mlops-<name>:test (or $IMAGE)
#   hack/image.sh engine ARGS..  run the container engine with ARGS (run, logs, rm, ...)
#   hack/image.sh which          print the engine in use
#
# With a running Docker engine this is plain `docker build` on python:3.11-slim.
# Without one (as on the development machines, which reach package registries but no
# container registry) it uses podman as root, installed from Debian when missing,
# and builds the same Dockerfile FROM a Debian bookworm root made with debootstrap
# (Python 3.11 from Debian, cached), with buildah's chroot isolation; containers run
# with runc and the machine's own process limits (see containers_conf).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
BASE=localhost/mlops-python-base:bookworm
IMAGE_CACHE="$MLOPS_CACHE_DIR/image"
log() { printf '[image] %s\n' "$*" >&2; }

engine() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  else
    echo podman
  fi
}

containers_conf() {
  # crun cannot run under this kernel's hybrid cgroup layout, and podman's default
  # limits (1048576 open files) exceed what an unprivileged-resource root may set.
  mkdir -p "$IMAGE_CACHE"
  cat >"$IMAGE_CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$IMAGE_CACHE/containers.conf"
}

install_podman() {
  local missing=()
  for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "needs root to install ${missing[*]} (or a Docker engine)"; exit 1; }
    log "installing ${missing[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

podman_base() {
  podman image exists "$BASE" && return
  local tarball="$IMAGE_CACHE/bookworm-python3.tar" root
  if [ ! -f "$tarball" ]; then
    root=$(mktemp -d)
    log "debootstrap: Debian bookworm with python3 (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian >"$IMAGE_CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$IMAGE_CACHE/debootstrap.log" >&2; exit 1; }
    tar -C "$root" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
    rm -rf "$root"
  fi
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$BASE" >/dev/null
}

# A hash of everything a build reads: the Dockerfile, the files it copies, the base
# and the build arguments. An image labelled with the same hash is not built again.
inputs() {
  local dockerfile=$1 base=$2
  {
    echo "base=$base extras=${EXTRAS:-}"
    cd "$ROOT" && find "$dockerfile" pyproject.toml README.md serving_image/mlops_contract \
      serving_image/mlops_serving operator/mlops_operator -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-32
}

build() {
  local name="${1:-serving}" start=$SECONDS dockerfile
  case "$name" in
    serving) dockerfile=serving_image/Dockerfile ;;
    operator) dockerfile=operator/Dockerfile ;;
    *) echo "unknown image $name: serving or operator" >&2; exit 2 ;;
  esac
  local image="${IMAGE:-localhost/mlops-$name:test}" eng key before
  eng=$(engine)
  if [ "$eng" = podman ]; then
    install_podman
    containers_conf
    mkdir -p "$IMAGE_CACHE"
    podman_base
    key=$(inputs "$dockerfile" "$(podman image inspect --format '{{.Id}}' "$BASE")")
  else
    key=$(inputs "$dockerfile" python:3.11-slim)
  fi
  before=$("$eng" image inspect --format '{{.Id}} {{index .Config.Labels "dev.mlops.inputs"}}' "$image" 2>/dev/null || true)
  if [ "${before#* }" = "$key" ]; then
    log "$image is up to date (inputs $key)"
    return
  fi
  case "$eng" in
    docker)
      docker build --label "dev.mlops.inputs=$key" --build-arg EXTRAS="${EXTRAS:-}" \
        -f "$ROOT/$dockerfile" -t "$image" "$ROOT" >&2
      ;;
    podman)
      # The host's CA bundle is lent to the build for pip's downloads; it is not copied in.
      podman build --isolation chroot --network host --layers=false \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --label "dev.mlops.inputs=$key" --build-arg EXTRAS="${EXTRAS:-}" \
        --build-arg PYTHON_IMAGE="$BASE" -f "$ROOT/$dockerfile" -t "$image" \
        "$ROOT" >"$IMAGE_CACHE/build-$name.log" 2>&1 || { tail -30 "$IMAGE_CACHE/build-$name.log" >&2; exit 1; }
      ;;
  esac
  # The build it replaces, now untagged, would only fill the disk.
  [ -n "$before" ] && "$eng" rmi "${before%% *}" >/dev/null 2>&1 || true
  log "built $image with $eng in $((SECONDS - start)) s (inputs $key)"
}

case "${1:-}" in
  build) build "${2:-serving}" ;;
  which) engine ;;
  engine)
    shift
    [ "$(engine)" = podman ] && containers_conf
    exec "$(engine)" "$@"
    ;;
  *)
    echo "usage: $0 build [serving|operator] | which | engine ARGS..." >&2
    exit 2
    ;;
esac
