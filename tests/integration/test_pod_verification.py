"""Artifacts the operator cannot reach (pvc://) are verified by the serving pod's
`verify` init container, and its verdict reaches the ModelVersion's status.

Everything happens for real on the local plane's real node: the claim is bound to a
hostPath PersistentVolume made by the test, the kubelet runs the init container, and
its exit code and termination message are the kubelet's report.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from mlops_contract.digest import file_digest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import packing
from tests.argocd import checked

from .kube import IMAGE, Bridge, Cluster, wait_until
from .objects import create, model_deployment, model_version, ready
from .operator_fixture import Operator, condition, get
from .processes import call

pytestmark = pytest.mark.cluster

CLAIM = "models"


@pytest.fixture
def claim_root(tmp_path: Path) -> Path:
    """The claim's files: a real bundle, and a tampered copy of it."""
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(frame.to_numpy(), target)
    root = tmp_path / "mnt-models"
    (root / CLAIM).mkdir(parents=True)
    good = packing.build(model, frame, root / CLAIM / "iris-1.tar.gz", name="iris", version="1")
    tampered = root / CLAIM / "iris-2.tar.gz"
    shutil.copyfile(good, tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    for path in (root / CLAIM, *(root / CLAIM).iterdir()):  # the pods' user reads them
        path.chmod(0o755)
    return root


@pytest.fixture
def bound_claim(cluster: Cluster, namespace: str, claim_root: Path) -> Iterator[Path]:
    """A hostPath volume bound to the claim, so that pods schedule as with real storage."""
    root = claim_root
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-models"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "hostPath": {"path": str(root / CLAIM)},
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeName": f"{namespace}-models",
        },
    }
    for manifest in (volume, claim):
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest))
    yield root
    cluster.kubectl("delete", "pv", f"{namespace}-models", "--wait=false")


def serving_pods(cluster: Cluster, namespace: str, owner: str) -> list[client.V1Pod]:
    return list(
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector=f"mlops.dev/deployment={owner}")
        .items
    )


def deploy(cluster: Cluster, namespace: str, version: str, digest: str) -> None:
    """A ModelVersion of the claim's file `iris-<version>.tar.gz`, and a deployment of it."""
    mv = model_version(version, (Path(), digest), uri=f"pvc://{CLAIM}/iris-{version}.tar.gz")
    create(cluster, namespace, "modelversions", mv)
    # On the real node, whose kubelet runs the verify init container for real.
    mdep = model_deployment(
        f"iris-v{version}", stable={"version": version}, image=IMAGE, scheduling={}
    )
    create(cluster, namespace, "modeldeployments", mdep)


def artifact_verified(cluster: Cluster, namespace: str, name: str, status: str) -> Any:
    mv = get(cluster, "modelversions", namespace, name)
    found = condition(mv, "ArtifactVerified")
    return mv if found and found["status"] == status else None


def test_pod_verdicts_reach_the_model_version(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bridge: Bridge,
    bound_claim: Path,
) -> None:
    claim_root = bound_claim
    pinned = file_digest(claim_root / CLAIM / "iris-1.tar.gz")
    deploy(cluster, namespace, "1", pinned)
    deploy(cluster, namespace, "2", pinned)  # the claim's copy was tampered with after pinning

    pending = wait_until(
        lambda: artifact_verified(cluster, namespace, "iris-1", "Unknown"),
        "iris-1 waiting for its pod's verdict",
    )
    assert condition(pending, "ArtifactVerified")["reason"] == "VerifiedByPod"

    good = wait_until(
        lambda: artifact_verified(cluster, namespace, "iris-1", "True"),
        "iris-1 verified by its pod",
    )
    artifact = good["status"]["artifact"]
    assert artifact["verifiedBy"] == "pod"
    assert artifact["verifiedDigest"] == pinned
    assert artifact["sizeBytes"] == (claim_root / CLAIM / "iris-1.tar.gz").stat().st_size
    assert artifact["pod"].startswith("iris-v1-stable-")
    assert good["status"]["history"][-1]["to"] == "Verified"
    # The verified artifact, read from the real PersistentVolume, is served.
    wait_until(lambda: ready(cluster, namespace, "iris-v1"), "iris-v1 Ready", timeout=120)
    (running,) = serving_pods(cluster, namespace, "iris-v1")
    predicted = call(
        f"http://{running.status.pod_ip}:8080/predict", {"features": [5.1, 3.5, 1.4, 0.2]}
    )
    assert predicted == (200, {**predicted[1], "prediction": 0})

    bad = wait_until(
        lambda: artifact_verified(cluster, namespace, "iris-2", "False"),
        "iris-2 refused by its pod",
    )
    refused = condition(bad, "ArtifactVerified")
    assert "does not match the pinned" in refused["message"]
    checked(bad, "Degraded", refused["message"])  # as Argo CD shows it
    assert pinned in refused["message"]
    assert "verifiedDigest" not in bad["status"]["artifact"]
    assert condition(bad, "Ready")["status"] == "False"

    mdep = wait_until(
        lambda: (
            (m := get(cluster, "modeldeployments", namespace, "iris-v2"))
            and (c := condition(m, "Ready"))
            and c["reason"] == "ArtifactNotVerified"
            and m
        ),
        "iris-v2 to refuse the rejected artifact",
    )
    assert "iris-2" in condition(mdep, "Ready")["message"]
    # The tampered pod's init container failed for real, and the pod never served.
    (pod,) = serving_pods(cluster, namespace, "iris-v2")
    (verify,) = pod.status.init_container_statuses or []
    ended = verify.state.terminated or verify.last_state.terminated
    assert ended is not None
    assert ended.exit_code == 1
    assert "does not match the pinned" in str(ended.message)
    assert not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    (serving,) = pod.status.container_statuses or []
    assert serving.state.running is None
    reasons = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "ArtifactRejected" in reasons
    assert "ArtifactVerified" in reasons
