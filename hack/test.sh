#!/usr/bin/env bash
# Runs every check and test: lint, types, layering, unit tests, and integration
# tests against the local control plane (started here, empty, if it is not running,
# and stopped again afterwards). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
hack/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"

ruff check .
ruff format --check .
mypy
lint-imports

if [ -z "${MLOPS_TEST_KUBECONFIG:-}" ] && ! hack/cluster.sh status >/dev/null; then
  # A plane started for the tests starts empty: objects left by earlier runs
  # (a demo, a benchmark) would otherwise be reconciled alongside the tests.
  hack/cluster.sh down --purge >/dev/null
  hack/cluster.sh up
  trap 'hack/cluster.sh down' EXIT
fi

status=0
pytest "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
exit "$status"
