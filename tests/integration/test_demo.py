"""The README's main command, hack/demo.sh, run as a user runs it, on the plane the
suite uses: it exits 0 and its output tells each part of the story."""

import subprocess
from collections.abc import Iterator

import pytest

from .kube import ROOT, Bridge, Cluster

pytestmark = pytest.mark.cluster

STORY = [
    "The operator runs in the cluster",
    "(refused, as it should be)",
    '"approvedBy":"bob"',
    "waiting for iris Ready (two pods on the real node)",
    "mlops_requests_total",
    "the canary is Promoted",
    "the canary is RolledBack",
    "canary rolled back, weight 0%: analysis failed",
    "retraining from iris-2",
    "modeldeployment.mlops.dev/iris",
    "driftmonitor.mlops.dev/iris",
    "in all",
]
"""Lines (or parts of them) each step prints once it did its part."""


@pytest.fixture
def demo_release(cluster: Cluster) -> Iterator[None]:
    """The demo leaves its release and namespace for the user to explore; the suite's
    own releases need the cluster-wide names back."""
    yield
    cluster.helm("uninstall", "mlops-operator", "-n", "mlops-system", check=False)
    cluster.kubectl(
        "delete", "namespace", "mlops-demo", "mlops-system", "--wait=false", check=False
    )


def test_the_demo_tells_the_whole_story(
    cluster: Cluster, bridge: Bridge, sole_operator: None, demo_release: None
) -> None:
    if not cluster.local:
        pytest.skip("hack/demo.sh starts (or reuses) the local plane")
    run = subprocess.run(
        ["bash", str(ROOT / "hack" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    missing = [line for line in STORY if line not in output]
    assert not missing, (missing, output[-8000:])
    assert "timed out" not in output
    print(output[output.index("== The whole story") :])
