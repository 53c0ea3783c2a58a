"""Helpers for tests that run against a real API server."""

import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kubernetes import client

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
        result = subprocess.run(
            [self.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


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


def namespace_name(test_name: str) -> str:
    """A fresh, valid namespace name derived from the test's name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


def cluster_required() -> bool:
    return os.environ.get("MLOPS_REQUIRE_CLUSTER") == "1"
