"""ModelVersion reconcile: verify the artifact, record approval, guard aliases.

Approval is an act the API server checks: its ValidatingAdmissionPolicy
(approval.py) admits approval annotations only from users allowed the custom
verb `approve` on modelversions.mlops.dev, naming themselves and the pinned
digest. This module copies what was admitted into status, where users without
status rights cannot write.
"""

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlops_contract.digest import file_digest
from mlops_contract.fetch import FetchError, fetch_failure, remote_digest

from mlops_operator import approval, caches, kube
from mlops_operator.conditions import Reporter, condition, merge, now
from mlops_operator.constants import (
    ANNOTATION_MODEL_VERSION,
    LABEL_ARTIFACT_CREDENTIALS,
    VERIFY_CONTAINER,
)
from mlops_operator.settings import OperatorSettings

PLURAL = "modelversions"
HISTORY_LIMIT = 50
LOG = logging.getLogger(__name__)
Object = dict[str, Any]


Verification = tuple[bool | None, str, Object]
"""(verified, message, artifact status); verified None when only the pod can check."""


def pod_verifies(mv: Object, settings: OperatorSettings) -> str | None:
    """Why the operator leaves the artifact to the serving pod, if it does."""
    uri = mv["spec"]["artifact"]["uri"]
    scheme = urlparse(uri).scheme
    if (
        not settings.verify_artifacts
        or scheme == "pvc"
        or (scheme == "file" and _local_artifact(uri, settings.file_artifact_root) is None)
    ):
        return f"{scheme}:// artifacts are verified by the serving pod before loading"
    return None


def verify_artifact(mv: Object, settings: OperatorSettings) -> Verification:
    """Fetch (or read) and hash the artifact; for those pod_verifies() does not leave
    to the pod. Bounded by the artifact deadline and byte cap."""
    namespace = mv["metadata"]["namespace"]
    artifact = mv["spec"]["artifact"]
    uri, pinned = artifact["uri"], artifact["digest"]
    scheme = urlparse(uri).scheme
    local = _local_artifact(uri, settings.file_artifact_root) if scheme == "file" else None
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
        "phase": "Failed" if not ready else "Verifying" if _fetching(progress) else "Ready",
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
    elif why := pod_verifies(mv, settings):
        verified, message, status = None, why, {}
    elif (done := FETCHES.take(mv, settings)) is None:
        return _verifying(mv, progress)
    else:
        verified, message, status = done
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


def _fetching(progress: Progress) -> bool:
    found = next((c for c in progress.conditions if c["type"] == "ArtifactVerified"), {})
    return bool(found.get("reason") == "Verifying")


def _verifying(mv: Object, progress: Progress) -> Verification:
    """While a fetch runs: a failure found before stands (the fetch retries it), else
    the artifact is being verified."""
    before = _condition(progress.old, "ArtifactVerified") or {}
    if before.get("reason") == "VerificationFailed":
        message = str(before.get("message"))
        progress.conditions.append(
            condition("ArtifactVerified", False, "VerificationFailed", message, progress.generation)
        )
        return False, message, {}
    uri = urlparse(mv["spec"]["artifact"]["uri"])
    message = f"fetching {uri.scheme}://{uri.hostname or ''} to check the pinned digest"
    item = condition("ArtifactVerified", False, "Verifying", message, progress.generation)
    item["status"] = "Unknown"
    progress.conditions.append(item)
    return None, message, {}


Key = tuple[str, str]
"""(namespace, name) of a ModelVersion."""
FETCH_WORKERS = 4


class Fetches:
    """Artifact fetches, off the reconcile path.

    A fetch may take up to the artifact deadline (a slow or hostile server). Run in
    the reconcile, under the ModelVersion's lock, it held a reconcile worker that
    long, and a few ModelVersions on slow servers held them all: nothing else was
    reconciled. Here fetches run on their own few threads, at most one per
    ModelVersion; a reconcile that finds one running reports Verifying and returns
    at once, and the fetch's end asks for a reconcile (`finished`), which takes the
    result.
    """

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mlops-fetch")
        self._guard = threading.Lock()
        self._running: set[Key] = set()
        self._done: dict[Key, tuple[tuple[str, str, str], Verification]] = {}
        self.finished: Callable[[Key], None] = lambda key: None
        """Called (on the fetch's thread) when a fetch ends."""

    def take(self, mv: Object, settings: OperatorSettings) -> Verification | None:
        """The finished verification of the artifact `mv` pins now, handed out once;
        None while there is none, with a fetch started unless one runs already."""
        key, artifact = _key(mv), _identity(mv)
        with self._guard:
            done = self._done.pop(key, None)
            if done is not None and done[0] == artifact:
                return done[1]
            if key not in self._running:
                self._running.add(key)
                self._pool.submit(self._fetch, key, artifact, mv, settings)
        return None

    def _fetch(
        self, key: Key, artifact: tuple[str, str, str], mv: Object, settings: OperatorSettings
    ) -> None:
        try:
            result = verify_artifact(mv, settings)
        except Exception:  # verify_artifact maps what it expects; this is a bug, logged
            LOG.exception("verification of %s/%s failed", *key)
            result = (False, "spec.artifact: verification failed; it is retried", {})
        with self._guard:
            self._running.discard(key)
            self._done[key] = (artifact, result)
        self.finished(key)

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._done.pop((namespace, name), None)


def _key(mv: Object) -> Key:
    return mv["metadata"]["namespace"], mv["metadata"]["name"]


def _identity(mv: Object) -> tuple[str, str, str]:
    """What a result is for: this object (a deleted and recreated one is another) and
    the artifact it pins."""
    artifact = mv["spec"]["artifact"]
    return mv["metadata"].get("uid", ""), artifact["uri"], artifact["digest"]


FETCHES = Fetches(FETCH_WORKERS)


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


def verdict_patch(mv: Object, verdict: PodVerdict) -> Object | None:
    """The status patch that records a pod's verdict on the pinned artifact; None when
    it is recorded already (every replica reports, on every pod event) or is about an
    earlier pin."""
    if verdict.pinned != mv["spec"]["artifact"].get("digest"):
        return None
    old: Object = mv.get("status") or {}
    known: Object = old.get("artifact") or {}
    digest = verdict.pinned if verdict.ok else None
    # Recorded messages name the pod ("verified by pod X: ..."): compare what follows.
    same = digest or str(known.get("message", "")).endswith(f": {verdict.message}")
    if known.get("verifiedBy") == "pod" and known.get("verifiedDigest") == digest and same:
        return None
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
    return {"artifact": artifact, "history": history}


def record_pod_verdict(
    mv: Object, verdict: PodVerdict, settings: OperatorSettings, report: Reporter
) -> None:
    """Copy a pod's verdict on the pinned artifact into the ModelVersion's status, once,
    then reconcile it with the verdict in place."""
    patch = verdict_patch(mv, verdict)
    if patch is None:
        return
    message = patch["artifact"]["message"]
    if verdict.ok:
        report.normal("ArtifactVerified", message)
    else:
        report.warning("ArtifactRejected", message)
    meta = mv["metadata"]
    written = kube.patch_status(PLURAL, meta["namespace"], meta["name"], patch)
    if written is not None:
        caches.VERSIONS.update(written, deleted=False)
        reconcile(written, settings, report)


def _approval(mv: Object, report: Reporter, progress: Progress) -> Object:
    """Copy the approval the API server admitted into status. While the policy that
    enforces approvals is not in force, annotations are not read and status keeps
    what it recorded."""
    before: Object = progress.old.get("approval") or {"state": "Pending"}
    unenforced = kube.approval_unenforced()
    recorded = None if unenforced else approval.read(mv)
    if unenforced or (
        recorded is not None
        and (recorded.state, recorded.by, recorded.digest)
        == (before.get("state"), before.get("approvedBy"), before.get("approvedDigest"))
    ):
        current = dict(before)
    elif recorded is None:
        # Nulls, so that the status merge-patch removes the revoked approver.
        current = {
            "state": "Pending",
            "approvedBy": None,
            "approvedAt": None,
            "approvedDigest": None,
        }
    else:
        current = {
            "state": recorded.state,
            "approvedBy": recorded.by,
            "approvedAt": recorded.at or now(),
            "approvedDigest": recorded.digest,
        }
    if _given(current) != _given(before):
        by = current.get("approvedBy")
        progress.record(
            {
                "time": current.get("approvedAt") or now(),
                "type": "Approval",
                "from": before.get("state", "Pending"),
                "to": current["state"],
                **({"by": by} if by else {}),
            }
        )
        if recorded is None:
            report.normal("ApprovalRevoked", f"approval revoked (was {before.get('state')})")
        else:
            report.normal(recorded.state, f"{recorded.state.lower()} by {recorded.by}")
    approved = current["state"] == "Approved"
    message = f"approved by {current.get('approvedBy')}" if approved else current["state"]
    if unenforced:
        message += f"; approvals are not read: {unenforced}"
    reason = "ApprovalNotEnforced" if unenforced and not approved else current["state"]
    progress.conditions.append(
        condition("Approved", approved, reason, message, progress.generation)
    )
    return current


def _given(fields: Object) -> Object:
    return {k: v for k, v in fields.items() if v is not None}


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
        *(notes.get(k) for k in approval.KEYS),
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
