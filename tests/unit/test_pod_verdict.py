"""The pvc verify step end to end without a cluster: `mlops-serve verify` writes a
verdict, and the operator reads it back from a pod status shaped as the kubelet's."""

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlops_operator import kube, modelversion
from mlops_operator.conditions import Reporter
from mlops_operator.modelversion import PodVerdict, pod_verdict, record_pod_verdict
from mlops_operator.settings import OperatorSettings
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


def test_a_verdict_is_recorded_once_whichever_pod_repeats_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every replica reports, on every pod event: only a new verdict is written."""
    writes: list[dict[str, Any]] = []
    mv: dict[str, Any] = {
        "metadata": {"name": "iris-3", "namespace": "models"},
        "spec": {"artifact": {"uri": "pvc://models/iris.tar.gz", "digest": PINNED}},
    }

    def patch_status(plural: str, namespace: str, name: str, status: Any) -> Any:
        writes.append(status)
        mv["status"] = {**mv.get("status", {}), **status}
        return mv

    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(kube.VERSIONS, "update", lambda *_, **__: None)
    monkeypatch.setattr(modelversion, "reconcile", lambda *_: None)
    report = Reporter(logging.getLogger("test"), lambda *_: None)
    settings = OperatorSettings()

    def verdict(pod: str, ok: bool, message: str) -> PodVerdict:
        return PodVerdict("iris-3", pod, PINNED, ok, message, None)

    for pod in ("iris-a", "iris-b", "iris-a"):
        record_pod_verdict(mv, verdict(pod, False, "digest differs"), settings, report)
    assert len(writes) == 1
    record_pod_verdict(mv, verdict("iris-b", False, "file missing"), settings, report)
    assert len(writes) == 2
    for pod in ("iris-a", "iris-b"):
        record_pod_verdict(mv, verdict(pod, True, "matches"), settings, report)
    assert len(writes) == 3
    assert mv["status"]["artifact"]["verifiedDigest"] == PINNED
    assert [h["to"] for h in mv["status"]["history"]] == ["Failed", "Failed", "Verified"]
