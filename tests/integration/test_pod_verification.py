"""Artifacts the operator cannot reach (pvc://) are verified by the serving pod's
`verify` init container, and its verdict reaches the ModelVersion's status.

kwok's nodes run no containers, so this test does the node's part: it runs the
init container's own command (`mlops-serve verify`, with the pod's environment)
as a real process on this machine, with a directory standing in for the claim's
mount, and reports its exit code and termination message in the pod's status as
a kubelet would. Everything after that is the operator's work.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_serving import bundle
from mlops_serving.digest import file_digest

from .kube import Cluster, wait_until
from .operator_fixture import Operator, condition, get
from .test_operator import create, model_deployment, model_version

pytestmark = pytest.mark.cluster

CLAIM = "models"


@pytest.fixture
def claim_root(tmp_path: Path) -> Path:
    """The claim's files: a real bundle, and a tampered copy of it."""
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(frame.to_numpy(), target)
    root = tmp_path / "mnt-models"
    (root / CLAIM).mkdir(parents=True)
    good = bundle.build(model, frame, root / CLAIM / "iris-1.tar.gz", name="iris", version="1")
    tampered = root / CLAIM / "iris-2.tar.gz"
    shutil.copyfile(good, tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
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


Pod = dict[str, Any]


def run_verify_step(pod: Pod, root: Path, work: Path) -> tuple[int, str]:
    """The pod's init container, run as a process here; (exit code, termination message)."""
    (container,) = pod["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    work.mkdir(parents=True, exist_ok=True)
    report = work / "termination-log"
    env.update(
        MLOPS_SERVING_PVC_ROOT=str(root),  # where the kubelet would mount the claim
        MLOPS_SERVING_CACHE_DIR=str(work / "cache"),
        MLOPS_SERVING_REPORT_FILE=str(report),
    )
    assert container["args"] == ["verify"]
    done = subprocess.run(
        [sys.executable, "-m", "mlops_serving.serve", *container["args"]],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, report.read_text()


def report_termination(cluster: Cluster, namespace: str, pod: Pod, code: int, message: str) -> None:
    """Write the init container's end into the pod's status, as the kubelet does."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    (container,) = pod["spec"]["initContainers"]
    client.CoreV1Api(cluster.api).patch_namespaced_pod_status(
        pod["metadata"]["name"],
        namespace,
        {
            "status": {
                "initContainerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": code == 0,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "message": message,
                                "startedAt": stamp,
                                "finishedAt": stamp,
                            }
                        },
                    }
                ]
            }
        },
    )


def serving_pod(cluster: Cluster, namespace: str, owner: str) -> Pod | None:
    """The track's pod once it is scheduled, as JSON."""
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        namespace, label_selector=f"mlops.dev/deployment={owner}"
    )
    scheduled = [p for p in pods.items if p.spec.node_name]
    found: Pod | None = cluster.api.sanitize_for_serialization(scheduled[0]) if scheduled else None
    return found


def deploy(cluster: Cluster, namespace: str, version: str, digest: str) -> None:
    """A ModelVersion of the claim's file `iris-<version>.tar.gz`, and a deployment of it."""
    uri = f"pvc://{CLAIM}/iris-{version}.tar.gz"
    mv = model_version(version, (Path("unused"), digest))
    mv["spec"]["artifact"]["uri"] = uri
    create(cluster, namespace, "modelversions", mv)
    mdep = model_deployment(f"iris-v{version}", stable={"version": version})
    create(cluster, namespace, "modeldeployments", mdep)


def artifact_verified(cluster: Cluster, namespace: str, name: str, status: str) -> Any:
    mv = get(cluster, "modelversions", namespace, name)
    found = condition(mv, "ArtifactVerified")
    return mv if found and found["status"] == status else None


def test_pod_verdicts_reach_the_model_version(
    cluster: Cluster, namespace: str, operator: Operator, bound_claim: Path, tmp_path: Path
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

    verdicts = {}
    for version in ("1", "2"):
        pod = wait_until(
            lambda v=version: serving_pod(cluster, namespace, f"iris-v{v}"),  # type: ignore[misc]
            f"a pod of iris-v{version}",
        )
        code, message = run_verify_step(pod, claim_root, tmp_path / version)
        verdicts[version] = (code, json.loads(message))
        report_termination(cluster, namespace, pod, code, message)
    assert verdicts["1"][0] == 0
    assert verdicts["1"][1]["digest"] == pinned
    assert verdicts["2"][0] == 1

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

    bad = wait_until(
        lambda: artifact_verified(cluster, namespace, "iris-2", "False"),
        "iris-2 refused by its pod",
    )
    refused = condition(bad, "ArtifactVerified")
    assert "does not match the pinned" in refused["message"]
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
    reasons = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "ArtifactRejected" in reasons
    assert "ArtifactVerified" in reasons
