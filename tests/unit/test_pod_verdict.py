"""The pvc verify step end to end without a cluster: `mlops-serve verify` writes a
verdict, and the operator reads it back from a pod status shaped as the kubelet's."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.modelversion import PodVerdict, pod_verdict, verdict_patch
from mlops_serving import serve

from .conftest import BuiltBundle

PINNED = "sha256:" + "ab" * 32


def pod(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "iris-stable-7d9f-x2x",
            "annotations": {"mlops.dev/model-version": "iris-3"},
        },
        "spec": {
            "initContainers": [
                {"name": "verify", "env": [{"name": "MLOPS_SERVING_MODEL_DIGEST", "value": PINNED}]}
            ]
        },
        "status": {"initContainerStatuses": statuses},
    }


def ended(message: str, code: int = 0) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": message}}


def test_verdict_is_read_from_the_termination_message() -> None:
    message = json.dumps({"ok": True, "message": "matches", "digest": PINNED, "sizeBytes": 10})
    assert pod_verdict(pod([{"name": "verify", "state": ended(message)}])) == PodVerdict(
        model_version="iris-3",
        pod="iris-stable-7d9f-x2x",
        pinned=PINNED,
        ok=True,
        message="matches",
        size=10,
    )


def test_verdict_of_a_crash_looping_step_comes_from_its_last_state() -> None:
    message = json.dumps({"ok": False, "message": "digest differs"})
    status = {"name": "verify", "state": {"waiting": {}}, "lastState": ended(message, 1)}
    verdict = pod_verdict(pod([status]))
    assert verdict is not None
    assert (verdict.ok, verdict.message, verdict.size) == (False, "digest differs", None)


@pytest.mark.parametrize(
    "statuses",
    [
        [],  # not started
        [{"name": "verify", "state": {"running": {}}}],
        [{"name": "verify", "state": ended("")}],  # a fake node's "Completed", no verdict
        [{"name": "verify", "state": ended("plain text, not a verdict")}],
        [{"name": "verify", "state": ended('{"message": "no ok field"}')}],
        [{"name": "other", "state": ended('{"ok": true}')}],
    ],
)
def test_no_verdict_is_made_up(statuses: list[dict[str, Any]]) -> None:
    assert pod_verdict(pod(statuses)) is None


def test_verify_writes_its_verdict(
    iris_bundle: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = tmp_path / "mnt" / "models"
    claim.mkdir(parents=True)
    shutil.copyfile(iris_bundle.path, claim / "iris.tar.gz")
    report = tmp_path / "termination-log"
    monkeypatch.setenv("MLOPS_SERVING_MODEL_URI", "pvc://models/iris.tar.gz")
    monkeypatch.setenv("MLOPS_SERVING_MODEL_DIGEST", iris_bundle.digest)
    monkeypatch.setenv("MLOPS_SERVING_PVC_ROOT", str(tmp_path / "mnt"))
    monkeypatch.setenv("MLOPS_SERVING_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLOPS_SERVING_REPORT_FILE", str(report))
    assert serve.main(["verify"]) == 0
    verdict = json.loads(report.read_text())
    assert verdict["ok"] is True
    assert verdict["digest"] == iris_bundle.digest
    assert verdict["sizeBytes"] == iris_bundle.path.stat().st_size

    monkeypatch.setenv("MLOPS_SERVING_MODEL_DIGEST", PINNED)
    assert serve.main(["verify"]) == 1
    verdict = json.loads(report.read_text())
    assert verdict["ok"] is False
    assert f"does not match the pinned {PINNED}" in verdict["message"]
    assert verdict["digest"] == iris_bundle.digest  # what the file really hashes to

    (claim / "iris.tar.gz").unlink()
    assert serve.main(["verify"]) == 1
    verdict = json.loads(report.read_text())
    assert verdict["ok"] is False
    assert "does not exist" in verdict["message"]
    assert "digest" not in verdict


def test_a_verdict_is_recorded_once_whichever_pod_repeats_it() -> None:
    """Every replica reports, on every pod event: only a new verdict makes a patch."""
    mv: dict[str, Any] = {
        "metadata": {"name": "iris-3", "namespace": "models"},
        "spec": {"artifact": {"uri": "pvc://models/iris.tar.gz", "digest": PINNED}},
    }
    patches: list[dict[str, Any]] = []

    def report(pod: str, ok: bool, message: str, pinned: str = PINNED) -> None:
        patch = verdict_patch(mv, PodVerdict("iris-3", pod, pinned, ok, message, None))
        if patch is not None:
            patches.append(patch)
            mv["status"] = {**mv.get("status", {}), **patch}  # as the merge-patch does

    for pod in ("iris-a", "iris-b", "iris-a"):
        report(pod, False, "digest differs")
    assert len(patches) == 1
    report("iris-b", False, "file missing")
    assert len(patches) == 2
    report("iris-a", True, "matches", pinned="sha256:" + "0" * 64)  # a pod of an earlier pin
    assert len(patches) == 2
    for pod in ("iris-a", "iris-b"):
        report(pod, True, "matches")
    assert len(patches) == 3
    assert mv["status"]["artifact"]["verifiedDigest"] == PINNED
    assert mv["status"]["artifact"]["message"] == "verified by pod iris-a: matches"
    assert [h["to"] for h in mv["status"]["history"]] == ["Failed", "Failed", "Verified"]
