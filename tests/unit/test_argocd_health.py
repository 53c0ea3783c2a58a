"""Argo CD health of the three kinds, every branch, on Lua (lupa): statuses as the
operator writes them. The integration tests run the same checks on the objects the
real operator wrote (tests/argocd.py)."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd import health

ROOT = Path(__file__).resolve().parents[2]


def obj(kind: str, status: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    meta = {"name": "iris", "generation": 2, **extra.pop("metadata", {})}
    return {"kind": kind, "metadata": meta, "status": status, **extra}


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


SEEN = {"observedGeneration": 2}
RULES = [
    # kind, status, extra, Argo CD status, message starts with
    ("ModelDeployment", None, {}, "Progressing", "Waiting for the operator"),
    ("ModelDeployment", {"observedGeneration": 1, "phase": "Ready"}, {}, "Progressing",
     "Waiting for the operator to act on generation 2"),
    ("ModelDeployment", {**SEEN, "phase": "Ready", "conditions": [
        cond("Ready", "True", "Available", "1/1 replicas ready")]}, {}, "Healthy",
     "1/1 replicas ready"),
    ("ModelDeployment", {**SEEN, "phase": "RolledBack", "canary": {"message": "errorRate"}}, {},
     "Degraded", "Canary rolled back: errorRate"),
    ("ModelDeployment", {**SEEN, "phase": "Paused", "canary": {"message": "paused by request"}},
     {}, "Suspended", "Canary paused: paused by request"),
    ("ModelDeployment", {**SEEN, "phase": "Pending", "conditions": [
        cond("Degraded", "True", "NotApproved", "stable: not approved")]}, {}, "Degraded",
     "stable: not approved"),
    ("ModelDeployment", {**SEEN, "phase": "Progressing", "canary": {"weight": 20,
     "message": "step 2 of 4"}}, {}, "Progressing", "Canary at 20%: step 2 of 4"),
    ("ModelVersion", None, {}, "Progressing", "Waiting for the operator"),
    ("ModelVersion", {**SEEN, "phase": "Ready", "approval": {"state": "Approved"}}, {},
     "Healthy", "Artifact verified; approval Approved"),
    ("ModelVersion", {**SEEN, "phase": "Failed", "conditions": [
        cond("ArtifactVerified", "False", "DigestMismatch", "digest does not match")]}, {},
     "Degraded", "digest does not match"),
    ("ModelVersion", {**SEEN, "phase": "Verifying", "conditions": [
        cond("ArtifactVerified", "False", "Verifying")]}, {}, "Progressing", "Artifact verifying"),
    ("DriftMonitor", None, {}, "Progressing", "Waiting for the first run"),
    ("DriftMonitor", {**SEEN, "conditions": [cond("Ready", "True"), cond(
        "DriftDetected", "False", "NoDrift", "0 of 6 features drifted")]}, {}, "Healthy",
     "0 of 6 features drifted"),
    ("DriftMonitor", {**SEEN, "conditions": [cond("Ready", "True"), cond(
        "DriftDetected", "True", "Drift", "2 of 6 features drifted")]}, {}, "Healthy",
     "Drift detected: 2 of 6 features drifted"),
    ("DriftMonitor", {**SEEN, "conditions": [cond("Ready", "True"), cond(
        "DriftDetected", "True", "Drift", "2 of 6")]},
     {"metadata": {"annotations": {"mlops.dev/argocd-degraded-on-drift": "true"}}},
     "Degraded", "Drift detected: 2 of 6"),
    ("DriftMonitor", {**SEEN, "conditions": [cond(
        "Ready", "False", "SourceUnreachable", "GET http://x: refused")]}, {}, "Degraded",
     "GET http://x: refused"),
    ("DriftMonitor", {**SEEN}, {"spec": {"suspend": True}}, "Suspended", "Suspended"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "status", "extra", "expected", "message"), RULES)
def test_health(
    kind: str, status: dict[str, Any] | None, extra: dict[str, Any], expected: str, message: str
) -> None:
    found, said = health(obj(kind, status, **extra))
    assert found == expected
    assert said.startswith(message), said


def test_the_argocd_cm_snippet_holds_these_checks() -> None:
    """helm/argocd/argocd-cm.yaml is what users paste: it must carry the same Lua."""
    checked = subprocess.run(
        [sys.executable, str(ROOT / "hack/gen_argocd.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    data = yaml.safe_load((ROOT / "helm/argocd/argocd-cm.yaml").read_text())["data"]
    assert sorted(data) == [
        f"resource.customizations.health.mlops.dev_{kind}"
        for kind in ("DriftMonitor", "ModelDeployment", "ModelVersion")
    ]


def fixtures() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    found = []
    for listed in sorted(
        (ROOT / "helm/argocd/resource_customizations").glob("*/*/health_test.yaml")
    ):
        for test in yaml.safe_load(listed.read_text())["tests"]:
            obj = yaml.safe_load((listed.parent / test["inputPath"]).read_text())
            found.append((f"{listed.parent.name}/{test['inputPath']}", obj, test["healthStatus"]))
    return found


@pytest.mark.parametrize(
    ("path", "obj", "expected"), fixtures(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_fixtures_the_real_operator_wrote(
    path: str, obj: dict[str, Any], expected: dict[str, str]
) -> None:
    """health_test.yaml and testdata/ in Argo CD's format, recorded from the integration
    tests (MLOPS_ARGOCD_TESTDATA=1): the checks still give what was seen then."""
    assert health(obj) == (expected["status"], expected["message"]), path
