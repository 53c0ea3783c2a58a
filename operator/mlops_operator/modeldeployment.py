"""ModelDeployment reconcile: resolve versions, apply the children, mirror readiness.

One idempotent function converges everything, whatever triggered it (a spec
change, a child's event, a ModelVersion's change, the periodic resync, a
restart): run twice, or after a crash half-way, it leaves the same objects.
"""

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from mlops_operator import kube
from mlops_operator.api.modeldeployment import ModelDeploymentSpec, ModelRef, Traffic
from mlops_operator.builders import Owner, RenderConfig, ResolvedVersion, render_track
from mlops_operator.conditions import Reporter, condition, merge
from mlops_operator.settings import OperatorSettings
from mlops_operator.tracks import TrackVersion, build_status

PLURAL = "modeldeployments"
Object = dict[str, Any]
STATUS: kube.StatusQueue[TrackVersion] = kube.StatusQueue()
"""Track Deployments' states waiting to be written into their owners' status."""


class RefusedError(Exception):
    """The spec cannot be served as it stands; `reason` and the message say why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _approved(mv: Object) -> bool:
    return bool(mv.get("status", {}).get("approval", {}).get("state") == "Approved")


def _artifact_failed(mv: Object) -> str | None:
    for item in mv.get("status", {}).get("conditions", []):
        if item.get("type") == "ArtifactVerified" and item.get("status") == "False":
            return str(item.get("message", "artifact verification failed"))
    return None


def resolve(
    ref: ModelRef, model: str, versions: list[Object], track: str, require_approval: bool
) -> ResolvedVersion:
    """The ModelVersion a track's ref names, or RefusedError with a reason a person can act on."""
    if ref.version is not None:
        matches = [mv for mv in versions if str(mv["spec"].get("version")) == ref.version]
        wanted = f"version {ref.version!r}"
    else:
        matches = [mv for mv in versions if ref.alias in mv["spec"].get("aliases", [])]
        wanted = f"alias {ref.alias!r}"
    if not matches:
        raise RefusedError(
            "ModelVersionNotFound", f"{track}: no ModelVersion of model {model!r} has {wanted}"
        )
    if len(matches) > 1:
        names = ", ".join(sorted(mv["metadata"]["name"] for mv in matches))
        raise RefusedError(
            "AmbiguousModelVersion", f"{track}: {wanted} of model {model!r} matches {names}"
        )
    mv = matches[0]
    name = mv["metadata"]["name"]
    version = str(mv["spec"]["version"])
    if require_approval and not _approved(mv):
        state = mv.get("status", {}).get("approval", {}).get("state", "Pending")
        raise RefusedError(
            "NotApproved",
            f"{track}: ModelVersion {name} (version {version}) is not approved "
            f"(approval state {state}); spec.requireApproval is set",
        )
    if failure := _artifact_failed(mv):
        raise RefusedError(
            "ArtifactNotVerified", f"{track}: ModelVersion {name} (version {version}): {failure}"
        )
    artifact = mv["spec"]["artifact"]
    if (form := artifact.get("format", "bundle")) != "bundle":
        raise RefusedError(
            "ArtifactNotServable",
            f"{track}: ModelVersion {name} (version {version}) is a bare {form} file; the "
            "serving image serves bundles (mlops-bundle build wraps a model file)",
        )
    secret = artifact.get("secretRef") or {}
    return ResolvedVersion(
        object_name=name,
        model=model,
        version=version,
        uri=artifact["uri"],
        digest=artifact.get("digest"),
        secret_name=secret.get("name"),
        secret_key=secret.get("key"),
    )


def ignored_fields(spec: ModelDeploymentSpec) -> list[str]:
    """Fields of the API that this operator does not act on yet: only the stable
    track is served, behind its own Service."""
    ignored = []
    if spec.canary is not None:
        ignored.append("spec.canary")
    if spec.mirror is not None:
        ignored.append("spec.mirror")
    if spec.traffic != Traffic():
        ignored.append("spec.traffic")
    return ignored


def _ignored_condition(spec: ModelDeploymentSpec, generation: int | None) -> Object:
    ignored = ignored_fields(spec)
    message = (
        f"{', '.join(ignored)}: not implemented yet, ignored; only the stable track is served"
        if ignored
        else ""
    )
    reason = "NotImplemented" if ignored else "AllFieldsServed"
    return condition("FieldsIgnored", bool(ignored), reason, message, generation)


def reconcile(mdep: Object, settings: OperatorSettings, report: Reporter) -> None:
    """Converge one ModelDeployment's children; a refusal is written to the status at
    once, the rest of the status through `refresh` (see the module docstring)."""
    meta = mdep["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with kube.object_lock(namespace, name):
        _reconcile(mdep, settings, report)


def _reconcile(mdep: Object, settings: OperatorSettings, report: Reporter) -> None:
    meta = mdep["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    config = _config(settings)
    owner = Owner(name, namespace, meta["uid"])
    try:
        spec = ModelDeploymentSpec.model_validate(mdep.get("spec", {}))
        stable = _resolve(spec, namespace)
    except ValidationError as error:
        _refuse(mdep, RefusedError("InvalidSpec", str(error)), generation, report)
        return
    except RefusedError as refusal:
        _refuse(mdep, refusal, generation, report)
        return
    desired = render_track(spec, owner, "stable", stable, config)
    try:
        applied = {obj["kind"]: kube.apply(obj) for obj in desired}
    except kube.RejectedError as error:
        # A child built from the spec was refused: the server's message names the field
        # (spec.scheduling.affinity is checked there, not in the CRD). The status says so
        # at once; the retries go on, as an admission policy may be lifted.
        _refuse(mdep, RefusedError("ChildRejected", str(error)), generation, report)
        raise
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for kind, child in kube.LEDGER.stale(namespace, name, wanted, fresh=not mdep.get("status")):
        kube.delete(kind, namespace, child)
        report.normal("ChildDeleted", f"deleted {kind} {child}: no longer part of the spec")
    previous = ((mdep.get("status") or {}).get("tracks") or {}).get("stable") or {}
    if previous and previous.get("modelVersion") != stable.object_name:
        report.normal(
            "RollingOut",
            f"stable track: ModelVersion {stable.object_name} (version {stable.version})",
        )
    # The status follows from the status writer, batched with the Deployment's own
    # status events: the worker is free for the next object at once. The writer reads
    # the owner from the watch's index, which may not have it yet when another
    # trigger (a ModelVersion's change, the resync) ran this reconcile first.
    kube.DEPLOYMENTS.offer(mdep)
    STATUS.submit(namespace, name, "stable", applied["Deployment"], TrackVersion.of(stable))


def _resolve(spec: ModelDeploymentSpec, namespace: str) -> ResolvedVersion:
    """Resolve from the watched index; ask the API server when the index has no answer."""
    try:
        return resolve(
            spec.stable,
            spec.model,
            kube.VERSIONS.get(namespace, spec.model),
            "stable",
            spec.require_approval,
        )
    except RefusedError as refusal:
        if refusal.reason not in ("ModelVersionNotFound", "NotApproved", "ArtifactNotVerified"):
            raise
    versions = kube.list_model_versions(namespace, spec.model)
    return resolve(spec.stable, spec.model, versions, "stable", spec.require_approval)


def _config(settings: OperatorSettings) -> RenderConfig:
    return RenderConfig(
        settings.serving_image,
        settings.default_replicas,
        settings.cluster_domain,
        settings.default_requests,
        settings.scratch_size_limit,
    )


def refresh(
    namespace: str,
    name: str,
    children: Mapping[str, tuple[Object, TrackVersion | None]],
    *,
    settings: OperatorSettings,
    reporter: Callable[[Object], Reporter],
) -> None:
    """Write the owner's status that its tracks' Deployments imply, without re-applying.

    Each track's version is the one a reconcile just resolved, else the one the
    owner's status records (read under the object's lock, so that a reconcile in
    progress finishes first). A track with neither has nothing to report yet: the
    owner's own reconcile (always run on its creation or change, refused or not)
    writes it.
    """
    if kube.DEPLOYMENTS.get(namespace, name) is None:
        return  # deleted: taking its lock would bring back the lock its deletion dropped
    with kube.object_lock(namespace, name):
        mdep = kube.DEPLOYMENTS.get(namespace, name)
        if mdep is None:
            return
        try:
            spec = ModelDeploymentSpec.model_validate(mdep.get("spec", {}))
        except ValidationError:
            return
        tracks = {}
        for track, (deployment, resolved) in children.items():
            version = resolved or TrackVersion.recorded(mdep.get("status"), track)
            if version is not None:
                tracks[track] = (version, deployment)
        if tracks:
            publish(mdep, spec=spec, tracks=tracks, config=_config(settings), report=reporter(mdep))


def publish(
    mdep: Object,
    *,
    spec: ModelDeploymentSpec,
    tracks: Mapping[str, tuple[TrackVersion, Object | None]],
    config: RenderConfig,
    report: Reporter,
) -> None:
    """Write the status that the tracks' Deployments imply (if it changed)."""
    meta = mdep["metadata"]
    old_status: Object = mdep.get("status") or {}
    ignored = _ignored_condition(spec, meta.get("generation"))
    status, ready, why = build_status(
        mdep, spec=spec, tracks=tracks, config=config, ignored=ignored
    )
    if ready and old_status.get("phase") != "Ready":
        report.normal("Ready", f"ready: {why}")
    if any(old_status.get(key) != value for key, value in status.items()):
        written = kube.patch_status(PLURAL, meta["namespace"], meta["name"], status)
        if written is not None:  # status refreshes read it before the watch echoes it
            kube.DEPLOYMENTS.update(written, deleted=False)


def _refuse(
    mdep: Object,
    refusal: RefusedError,
    generation: int | None,
    report: Reporter,
) -> None:
    """Report why nothing was changed; the running children stay as they are."""
    meta = mdep["metadata"]
    old_status: Object = mdep.get("status") or {}
    if not any(
        c.get("reason") == refusal.reason and c.get("message") == refusal.message
        for c in old_status.get("conditions", [])
    ):
        report.warning(refusal.reason, refusal.message)
    status: Object = {
        "phase": "Pending" if not old_status.get("tracks") else "Degraded",
        "observedGeneration": generation,
        "conditions": merge(
            old_status.get("conditions"),
            [
                condition("Ready", False, refusal.reason, refusal.message, generation),
                condition("Progressing", False, refusal.reason, refusal.message, generation),
                condition("Degraded", True, refusal.reason, refusal.message, generation),
            ],
        ),
    }
    kube.patch_status(PLURAL, meta["namespace"], meta["name"], status)


def following(model_version: Object, deployments: list[Object]) -> list[Object]:
    """ModelDeployments of the same model, which a change to this version may move."""
    model = model_version.get("spec", {}).get("model")
    return [d for d in deployments if d.get("spec", {}).get("model") == model]
