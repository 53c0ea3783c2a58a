"""ModelVersion reconcile: verify the artifact, record approval, guard aliases.

Approval is an act checked by the API server's authorization: the admission
webhook (approval.py) lets a request set the `mlops.dev/approval` annotation
only for users allowed the custom verb `approve` on modelversions.mlops.dev,
and signs who did it and when. This module trusts only signed approvals, and
copies them into status, where users without status rights cannot write.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlops_operator import approval, kube
from mlops_operator.conditions import Reporter, condition, merge, now
from mlops_operator.constants import (
    ANNOTATION_MODEL_VERSION,
    LABEL_ARTIFACT_CREDENTIALS,
    VERIFY_CONTAINER,
)
from mlops_operator.settings import OperatorSettings
from mlops_serving.digest import file_digest
from mlops_serving.fetch import FetchError, fetch_failure, remote_digest

PLURAL = "modelversions"
HISTORY_LIMIT = 50
Object = dict[str, Any]


def verify_artifact(mv: Object, settings: OperatorSettings) -> tuple[bool | None, str, Object]:
    """(verified, message, artifact status); verified None when only the pod can check."""
    namespace = mv["metadata"]["namespace"]
    artifact = mv["spec"]["artifact"]
    uri, pinned = artifact["uri"], artifact["digest"]
    scheme = urlparse(uri).scheme
    local = _local_artifact(uri, settings.file_artifact_root) if scheme == "file" else None
    if not settings.verify_artifacts or scheme == "pvc" or (scheme == "file" and local is None):
        return None, f"{scheme}:// artifacts are verified by the serving pod before loading", {}
    try:
        credentials = None
        if artifact.get("secretRef"):
            ref = artifact["secretRef"]
            credentials = kube.secret_value(
                namespace, ref["name"], ref["key"], label=LABEL_ARTIFACT_CREDENTIALS
            )
        if local is not None:
            digest, size = _hash_local(local, settings.artifact_max_bytes)
        else:
            digest, size = remote_digest(
                uri,
                credentials,
                timeout=settings.artifact_timeout_seconds,
                max_bytes=settings.artifact_max_bytes,
            )
    except (kube.CredentialsError, FetchError) as error:
        return False, f"spec.artifact: {error}", {}
    except Exception as error:  # noqa: BLE001 - reported in safe words, then retried
        return False, f"spec.artifact.uri: {fetch_failure(uri, error)}", {}
    status = {
        "verifiedDigest": digest,
        "sizeBytes": size,
        "verifiedAt": now(),
        "verifiedBy": "operator",
    }
    if digest != pinned:
        return (
            False,
            f"spec.artifact.digest: {uri} hashes to {digest}, not the pinned {pinned}",
            status,
        )
    return True, f"{uri} matches {pinned} ({size} bytes)", status


def _local_artifact(uri: str, root: Path | None) -> Path | None:
    """A file:// artifact's path if it lies under the configured root (links resolved)."""
    if root is None:
        return None
    path = Path(urlparse(uri).path).resolve()
    return path if path.is_relative_to(root.resolve()) else None


def _hash_local(path: Path, max_bytes: int) -> tuple[str, int]:
    target = path / "bundle.json" if path.is_dir() else path
    if not target.is_file():
        raise FetchError(f"{target.name} is not a regular file")
    size = target.stat().st_size
    if size > max_bytes:
        raise FetchError(f"larger than {max_bytes} bytes")
    return file_digest(target), size


@dataclass
class Progress:
    """What one reconcile has found so far."""

    old: Object
    generation: int | None
    history: list[Object]
    conditions: list[Object] = field(default_factory=list)

    def record(self, entry: Object) -> None:
        self.history = [*self.history, entry][-HISTORY_LIMIT:]


def reconcile(mv: Object, settings: OperatorSettings, report: Reporter) -> Object:
    """Converge one ModelVersion's status; returns it (also written to the API)."""
    meta = mv["metadata"]
    old: Object = mv.get("status") or {}
    progress = Progress(old, meta.get("generation"), list(old.get("history", [])))
    verified, message, artifact_status = _artifact(mv, settings, report, progress)
    approval_status = _approval(mv, report, progress)
    _stage(mv, report, progress)
    conflict = _aliases(mv, report, progress)
    ready = verified is not False and not conflict
    if ready:
        reason, why = "Ready", "usable by ModelDeployments"
    elif conflict:
        reason, why = "AliasConflict", conflict
    else:
        reason, why = "ArtifactRejected", message
    progress.conditions.insert(0, condition("Ready", ready, reason, why, progress.generation))
    status: Object = {
        "phase": "Ready" if ready else "Failed",
        "observedGeneration": progress.generation,
        "approval": approval_status,
        "history": progress.history,
        "deployedBy": _deployed_by(mv),
        "conditions": merge(old.get("conditions"), progress.conditions),
    }
    if artifact_status:
        status["artifact"] = artifact_status
    kube.patch_status(PLURAL, meta["namespace"], meta["name"], status)
    return status


def _artifact(
    mv: Object, settings: OperatorSettings, report: Reporter, progress: Progress
) -> tuple[bool | None, str, Object]:
    """Verify the artifact once per pinned digest; a failure is retried on the next resync."""
    artifact = mv["spec"]["artifact"]
    known: Object = progress.old.get("artifact") or {}
    verified: bool | None
    if known and known.get("verifiedDigest") == artifact.get("digest"):
        verified, message, status = (
            True,
            known.get("message") or f"{artifact['uri']} matches {known['verifiedDigest']}",
            known,
        )
    elif (
        known.get("verifiedBy") == "pod"
        and not known.get("verifiedDigest")
        and progress.old.get("observedGeneration") == progress.generation
    ):
        # A pod's verify step refused this spec's artifact (recorded by record_pod_verdict).
        verified, message, status = False, str(known.get("message")), known
    else:
        verified, message, status = verify_artifact(mv, settings)
        if verified is not None:
            progress.record(
                {
                    "time": now(),
                    "type": "Artifact",
                    "to": "Verified" if verified else "Failed",
                    "message": message,
                }
            )
            if verified:
                report.normal("ArtifactVerified", message)
            elif (_condition(progress.old, "ArtifactVerified") or {}).get("message") != message:
                report.warning("ArtifactRejected", message)
    reason = {True: "DigestMatches", False: "VerificationFailed", None: "VerifiedByPod"}[verified]
    item = condition("ArtifactVerified", bool(verified), reason, message, progress.generation)
    if verified is None:
        item["status"] = "Unknown"
    progress.conditions.append(item)
    return verified, message, status


@dataclass(frozen=True)
class PodVerdict:
    """What a serving pod's `verify` init container found (its termination message)."""

    model_version: str
    pod: str
    pinned: str | None
    ok: bool
    message: str
    size: int | None


def pod_verdict(pod: Object) -> PodVerdict | None:
    """The verify step's verdict from a pod's status; None until there is one. A
    container that ended without a JSON verdict (a fake node's, say) tells nothing."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    name = (meta.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)
    container = next(
        (c for c in spec.get("initContainers") or [] if c.get("name") == VERIFY_CONTAINER), None
    )
    if not name or container is None:
        return None
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    pinned = env.get("MLOPS_SERVING_MODEL_DIGEST")
    for state in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if state.get("name") != VERIFY_CONTAINER:
            continue
        ended = (state.get("state") or {}).get("terminated") or (state.get("lastState") or {}).get(
            "terminated"
        )
        try:
            found = json.loads((ended or {}).get("message") or "")
        except ValueError:
            return None
        if not isinstance(found, dict) or not isinstance(found.get("ok"), bool):
            return None
        size = found.get("sizeBytes")
        return PodVerdict(
            model_version=name,
            pod=meta["name"],
            pinned=pinned,
            ok=found["ok"],
            message=str(found.get("message", ""))[:4096],
            size=size if isinstance(size, int) else None,
        )
    return None


def record_pod_verdict(
    mv: Object, verdict: PodVerdict, settings: OperatorSettings, report: Reporter
) -> None:
    """Copy a pod's verdict on the pinned artifact into the ModelVersion's status, once."""
    if verdict.pinned != mv["spec"]["artifact"].get("digest"):
        return  # a pod of an earlier pin
    old: Object = mv.get("status") or {}
    known: Object = old.get("artifact") or {}
    digest = verdict.pinned if verdict.ok else None
    # Recorded messages name the pod ("verified by pod X: ..."): compare what follows.
    same = digest or str(known.get("message", "")).endswith(f": {verdict.message}")
    if known.get("verifiedBy") == "pod" and known.get("verifiedDigest") == digest and same:
        return  # already recorded (every replica reports, on every pod event)
    artifact: Object = {
        "verifiedDigest": digest,
        "sizeBytes": verdict.size,
        "verifiedAt": now(),
        "verifiedBy": "pod",
        "pod": verdict.pod,
        "message": f"verified by pod {verdict.pod}: {verdict.message}",
    }
    history = [
        *old.get("history", []),
        {
            "time": artifact["verifiedAt"],
            "type": "Artifact",
            "to": "Verified" if verdict.ok else "Failed",
            "message": artifact["message"],
        },
    ][-HISTORY_LIMIT:]
    if verdict.ok:
        report.normal("ArtifactVerified", artifact["message"])
    else:
        report.warning("ArtifactRejected", artifact["message"])
    meta = mv["metadata"]
    written = kube.patch_status(
        PLURAL, meta["namespace"], meta["name"], {"artifact": artifact, "history": history}
    )
    if written is not None:
        kube.VERSIONS.update(written, deleted=False)
        reconcile(written, settings, report)


def _approval(mv: Object, report: Reporter, progress: Progress) -> Object:
    """Copy a signed approval into status; unsigned claims change nothing."""
    before: Object = progress.old.get("approval") or {"state": "Pending"}
    current = dict(before)
    recorded = approval.read(mv)
    if recorded is not None and (recorded.state, recorded.by) != (
        before.get("state"),
        before.get("approvedBy"),
    ):
        current = {
            "state": recorded.state,
            "approvedBy": recorded.by,
            "approvedAt": recorded.at,
            "approvedDigest": recorded.digest or None,
        }
        progress.record(
            {
                "time": recorded.at,
                "type": "Approval",
                "from": before.get("state", "Pending"),
                "to": recorded.state,
                "by": recorded.by,
            }
        )
        report.normal(recorded.state, f"{recorded.state.lower()} by {recorded.by}")
    approved = current.get("state") == "Approved"
    message = (
        f"approved by {current.get('approvedBy')}"
        if approved
        else f"approval state {current['state']}"
    )
    progress.conditions.append(
        condition("Approved", approved, current["state"], message, progress.generation)
    )
    return current


def _stage(mv: Object, report: Reporter, progress: Progress) -> None:
    stage = mv["spec"].get("stage", "None")
    before = next(
        (h.get("to") for h in reversed(progress.history) if h.get("type") == "Stage"), "None"
    )
    if stage != before:
        progress.record({"time": now(), "type": "Stage", "from": before, "to": stage})
        report.normal("StageChanged", f"stage {before} -> {stage}")


def _aliases(mv: Object, report: Reporter, progress: Progress) -> str | None:
    conflict = _alias_conflict(mv)
    if conflict:
        if (_condition(progress.old, "AliasConflict") or {}).get("status") != "True":
            report.warning("AliasConflict", conflict)
        progress.conditions.append(
            condition("AliasConflict", True, "AliasInUse", conflict, progress.generation)
        )
    else:
        progress.conditions.append(
            condition("AliasConflict", False, "Unique", "aliases are unique", progress.generation)
        )
    return conflict


def change_key(mv: Object) -> tuple[Any, ...]:
    """What a reconcile depends on: the spec's generation and the approval annotations."""
    notes = mv["metadata"].get("annotations") or {}
    return (
        mv["metadata"].get("generation"),
        *(notes.get(k) for k in (approval.ANNOTATION, *approval.STAMPS)),
    )


def _condition(status: Object, kind: str) -> Object | None:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), None)


def _alias_conflict(mv: Object) -> str | None:
    """An alias is unique per model in a namespace; the oldest holder keeps it."""
    meta, spec = mv["metadata"], mv["spec"]
    aliases = set(spec.get("aliases", []))
    if not aliases:
        return None
    mine = (meta.get("creationTimestamp", ""), meta["name"])
    for other in kube.list_model_versions(meta["namespace"], spec["model"]):
        if other["metadata"]["name"] == meta["name"]:
            continue
        shared = aliases & set(other["spec"].get("aliases", []))
        theirs = (other["metadata"].get("creationTimestamp", ""), other["metadata"]["name"])
        if shared and theirs < mine:
            alias = sorted(shared)[0]
            holder = other["metadata"]["name"]
            return f"spec.aliases: alias {alias!r} is already held by ModelVersion {holder}"
    return None


DEPLOYED_BY_LIMIT = 64  # the CRD's bound on status.deployedBy


def _deployed_by(mv: Object) -> list[Object]:
    name = mv["metadata"]["name"]
    found = []
    for mdep in kube.list_custom("modeldeployments", mv["metadata"]["namespace"]):
        for track, info in ((mdep.get("status") or {}).get("tracks") or {}).items():
            if info and info.get("modelVersion") == name:
                found.append({"name": mdep["metadata"]["name"], "track": track})
    return sorted(found, key=lambda ref: (ref["name"], ref["track"]))[:DEPLOYED_BY_LIMIT]
