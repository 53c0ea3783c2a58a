"""Helpers for tests that run against a real API server."""

import ipaddress
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from mlops_contract.digest import file_digest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import packing

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Cluster:
    """A reachable cluster: the local plane from hack/cluster.sh, or one named by KUBECONFIG."""

    kubeconfig: Path
    bin_dir: Path | None
    local: bool
    api: client.ApiClient

    def tool(self, name: str) -> str:
        if self.bin_dir and (self.bin_dir / name).exists():
            return str(self.bin_dir / name)
        return name

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with stderr when `check` and it fails."""
        return self._run("kubectl", args, stdin, check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster, as kubectl."""
        return self._run("helm", args, None, check)

    def _run(
        self, tool: str, args: tuple[str, ...], stdin: str | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.tool(tool), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed: {result.stderr}")
        return result


def iris_bundle(out: Path, version: str = "1", c: float = 1.0) -> tuple[Path, str]:
    """A real bundle of an iris classifier at `out`, and its digest."""
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(C=c, max_iter=500).fit(frame.to_numpy(), target)
    packing.build(model, frame, out, name="iris", version=version)
    return out, file_digest(out)


def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.25
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


REAL_NODE = os.environ.get("MLOPS_TEST_REAL_NODE", "mlops-node-0")
"""The node whose pods really run: the local plane's, or kind's (hack/kind-e2e.sh)."""
IMAGE = "localhost/mlops-serving:test"
"""The serving image as hack/cluster.sh imports it into the real node's containerd."""
ON_KWOK: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}
"""spec.scheduling (and the pod spec fields) that put pods on the local plane's kwok
nodes: for tests of API behaviour, whose pods need not run. Pods without it land on
the real node, which runs them."""


@dataclass(frozen=True)
class Bridge:
    """Where pods really run: their network, and this machine's address that they
    reach (the artifact store listens there)."""

    pods: ipaddress.IPv4Network
    host: ipaddress.IPv4Address


def namespace_name(test_name: str) -> str:
    """A fresh, valid namespace name derived from the test's name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


def cluster_required() -> bool:
    return os.environ.get("MLOPS_REQUIRE_CLUSTER") == "1"
