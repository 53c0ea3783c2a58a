"""ModelDeployment reconcile: resolve versions, apply the children, mirror readiness.

One idempotent function converges everything, whatever triggered it (a spec
change, a child's event, a ModelVersion's change, the periodic resync, a
restart): run twice, or after a crash half-way, it leaves the same objects.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from mlops_contract import routing
from pydantic import ValidationError

from mlops_operator import analysis, caches, kube, rollout, statusqueue, traffic
from mlops_operator.api.modeldeployment import (
    AnalysisResult,
    CanaryStatus,
    ModelDeploymentSpec,
    ModelRef,
    TrafficStatus,
)
from mlops_operator.builders import (
    ROUTER,
    Owner,
    RenderConfig,
    ResolvedVersion,
    child_name,
    render_entry,
    render_network_policy,
    render_router,
    render_track,
    replicas_of,
    selector_labels,
    serving_selector,
)
from mlops_operator.conditions import Reporter, condition, merge, parse_time
from mlops_operator.constants import ANNOTATION_MODEL_VERSION, ANNOTATION_ROLLOUT
from mlops_operator.metrics import CANARY, reconciling
from mlops_operator.settings import OperatorSettings
from mlops_operator.tracks import TrackVersion, build_status, stable_only, track_state

PLURAL = "modeldeployments"
COMMANDS: dict[str, rollout.Command] = {word: word for word in get_args(rollout.Command)}
COMMAND_KEPT = 253
"""The length of status.canary.command."""
Object = dict[str, Any]
LEDGER = caches.ChildLedger(kube.children)
STATUS: statusqueue.StatusQueue[TrackVersion] = statusqueue.StatusQueue()
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


def reconcile(mdep: Object, settings: OperatorSettings, report: Reporter) -> float | None:
    """Converge one ModelDeployment's children; a refusal is written to the status at
    once, the rest of the status through `refresh` (see the module docstring). Returns
    the seconds after which the rollout needs another look without any event."""
    meta = mdep["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with caches.LOCKS.of(namespace, name):
        if (mdep.get("spec") or {}).get("canary"):
            # A rollout goes on from its recorded status, which an event's body (read
            # before the lock was ours) may predate: read the object as it is now.
            fresh = kube.read_custom(PLURAL, namespace, name)
            if fresh is None:
                return None
            mdep = fresh
        return _reconcile(mdep, settings, report)


@dataclass(frozen=True)
class Resolved:
    stable: ResolvedVersion
    canary: ResolvedVersion | None
    mirror: ResolvedVersion | None


def _reconcile(mdep: Object, settings: OperatorSettings, report: Reporter) -> float | None:
    meta = mdep["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    config = _config(settings)
    try:
        spec = ModelDeploymentSpec.model_validate(mdep.get("spec", {}))
        resolved = Resolved(
            _resolve(spec.stable, spec, namespace, "stable"),
            _resolve(spec.canary, spec, namespace, "canary") if spec.canary else None,
            _resolve(spec.mirror, spec, namespace, "mirror") if spec.mirror else None,
        )
    except ValidationError as error:
        _refuse(mdep, RefusedError("InvalidSpec", str(error)), generation, report)
        return None
    except RefusedError as refusal:
        _refuse(mdep, refusal, generation, report)
        return None
    now = time.time()
    running = {track: _running(mdep, track) for track in ("stable", "canary", "mirror")}
    decision = _rollout(mdep, spec, resolved.canary, config, settings, now=now)
    rollout_status = decision.status if decision else None
    planned = traffic.plan(
        spec,
        resolved.stable,
        resolved.canary,
        resolved.mirror,
        rollout_status,
        handed_over=resolved.canary is None or _serves(mdep, "stable", resolved.canary),
    )
    try:
        applied = _apply(mdep, spec, planned, config, report)
    except kube.RejectedError as error:
        # A child built from the spec was refused: the server's message names the field
        # (spec.scheduling.affinity is checked there, not in the CRD). The status says so
        # at once; the retries go on, as an admission policy may be lifted.
        _refuse(mdep, RefusedError("ChildRejected", str(error)), generation, report)
        raise
    _report_moves(mdep, planned, running, decision, report)
    _record_rollout(mdep, spec, planned, rollout_status, applied.router_ready)
    # The tracks' status follows from the status writer, batched with the Deployments'
    # own status events: the worker is free for the next object at once. The writer
    # reads the owner from the watch's index, which may not have it yet when another
    # trigger (a ModelVersion's change, the resync) ran this reconcile first.
    caches.DEPLOYMENTS.offer(mdep)
    for track, (version, _) in planned.tracks.items():
        STATUS.submit(namespace, name, track, applied.deployments[track], TrackVersion.of(version))
    return decision.requeue_after if decision else None


@dataclass(frozen=True)
class Applied:
    deployments: dict[str, Object]
    router_ready: bool


def _apply(
    mdep: Object,
    spec: ModelDeploymentSpec,
    planned: traffic.Plan,
    config: RenderConfig,
    report: Reporter,
) -> Applied:
    """Apply every child the plan asks for, delete those it no longer does."""
    meta = mdep["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    desired: list[Object] = []
    deployments: dict[str, Object] = {}
    addresses: dict[str, str] = {}
    for track, (version, share) in planned.tracks.items():
        for child in render_track(spec, owner, track, version, config, share=share):
            desired.append(child)
            done = kube.apply(child)
            if child["kind"] == "Deployment":
                deployments[track] = done
                caches.CHILD_DEPLOYMENTS.update(done, deleted=False)
            elif child["kind"] == "Service":
                addresses[track] = done.get("spec", {}).get("clusterIP", "")
    router_ready = False
    if planned.router:
        table = routing.render(traffic.routing_table(owner.name, spec, planned, addresses))
        router_ready = _apply_router(render_router(spec, owner, table, config), desired)
    for child in _shared_children(spec, owner, planned, config, router_ready=router_ready):
        desired.append(child)
        kube.apply(child)
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for kind, stale in LEDGER.stale(
        meta["namespace"], meta["name"], wanted, fresh=not mdep.get("status")
    ):
        kube.delete(kind, meta["namespace"], stale)
        if kind == "Deployment":
            caches.CHILD_DEPLOYMENTS.update(
                {"metadata": {"namespace": meta["namespace"], "name": stale}}, deleted=True
            )
        report.normal("ChildDeleted", f"deleted {kind} {stale}: no longer part of the spec")
    return Applied(deployments, router_ready)


def _shared_children(
    spec: ModelDeploymentSpec,
    owner: Owner,
    planned: traffic.Plan,
    config: RenderConfig,
    *,
    router_ready: bool,
) -> list[Object]:
    """The children of no one track: the entry Service (over the router once it is
    Ready, both tracks in mode replicas, else stable), the HTTPRoute, the NetworkPolicy."""
    if router_ready:
        selector = selector_labels(owner, ROUTER)
    elif spec.traffic.mode == "replicas":
        selector = serving_selector(owner)
    else:
        selector = selector_labels(owner, "stable")
    shared = [render_entry(owner, selector)]
    if spec.traffic.mode == "gatewayAPI":
        shared.append(traffic.http_route(owner, spec, planned))
    if spec.network_policy is not None:
        shared.append(render_network_policy(spec, owner, config))
    return shared


def _apply_router(children: list[Object], desired: list[Object]) -> bool:
    """Apply the router and its table (adding them to `desired`); whether it is Ready."""
    ready = False
    for child in children:
        desired.append(child)
        done = kube.apply(child)
        if child["kind"] == "Deployment":
            caches.CHILD_DEPLOYMENTS.update(done, deleted=False)
            ready = int((done.get("status") or {}).get("readyReplicas") or 0) > 0
    return ready


def _rollout(
    mdep: Object,
    spec: ModelDeploymentSpec,
    canary: ResolvedVersion | None,
    config: RenderConfig,
    settings: OperatorSettings,
    *,
    now: float,
) -> rollout.Decision | None:
    """The canary's next move, from its recorded status, what its pods show now, and
    a person's command; None without a canary."""
    if spec.canary is None or canary is None:
        return None
    meta = mdep["metadata"]
    recorded = (mdep.get("status") or {}).get("canary")
    previous = CanaryStatus.model_validate(recorded) if recorded else None
    # status.canary.command keeps what fits of the annotation: enough to tell one
    # request from the next, as the time comes second.
    annotation = ((meta.get("annotations") or {}).get(ANNOTATION_ROLLOUT) or "")[:COMMAND_KEPT]
    command = reason = None
    if annotation and annotation != (previous.command if previous else None):
        # "<command> <time>[ <reason>]": the time makes each request a new value.
        word, _, rest = annotation.partition(" ")
        command = COMMANDS.get(word)
        reason = rest.partition(" ")[2] or None
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    name = child_name(owner.name, "canary")
    deployment = caches.CHILD_DEPLOYMENTS.get(meta["namespace"], name)
    share = previous.weight if previous else 0
    ready = track_state(deployment, TrackVersion.of(canary), replicas_of(spec, config, share)).ready
    if spec.traffic.mode == "router":
        router = caches.CHILD_DEPLOYMENTS.get(meta["namespace"], child_name(owner.name, ROUTER))
        ready = ready and int(((router or {}).get("status") or {}).get("readyReplicas") or 0) > 0
    digest = canary.digest or canary.object_name
    measurement: tuple[AnalysisResult, ...] = ()
    current = previous if previous and previous.digest == digest else None
    if (
        spec.canary.analysis is not None
        and ready
        and rollout.measure_due(spec.canary, current, now)
    ):
        assert current is not None  # noqa: S101 - measure_due needs a rollout in progress
        measurement = analysis.measure(
            meta["namespace"],
            meta["name"],
            spec.canary.analysis,
            now,
            since=parse_time(current.last_measured_at or current.step_started_at or ""),
            token=_auth_token(spec, meta["namespace"]),
            may_dial=settings.may_dial,
        )
    decision = rollout.decide(
        spec.canary,
        previous,
        rollout.Observation(digest, ready, measurement, command, reason),
        now,
    )
    status = decision.status.model_copy(update={"command": annotation or None})
    return rollout.Decision(decision.weight, status, decision.requeue_after)


def _auth_token(spec: ModelDeploymentSpec, namespace: str) -> str | None:
    """The serving pods' bearer token, for their capture routes."""
    ref = spec.serving.auth_secret_ref
    return None if ref is None else kube.secret_value(namespace, ref.name, ref.key).strip()


def _running(mdep: Object, track: str) -> str | None:
    """The ModelVersion the track's Deployment runs, as last applied or watched."""
    meta = mdep["metadata"]
    found = caches.CHILD_DEPLOYMENTS.get(meta["namespace"], child_name(meta["name"], track))
    template = ((found or {}).get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    running: str | None = annotations.get(ANNOTATION_MODEL_VERSION)
    return running


def _serves(mdep: Object, track: str, version: ResolvedVersion) -> bool:
    """Whether the track's Deployment runs `version`, rolled out and Ready."""
    if _running(mdep, track) != version.object_name:
        return False
    meta = mdep["metadata"]
    found = caches.CHILD_DEPLOYMENTS.get(meta["namespace"], child_name(meta["name"], track)) or {}
    desired = int(found["spec"].get("replicas") or 1)
    return track_state(found, TrackVersion.of(version), desired).ready


def _report_moves(
    mdep: Object,
    planned: traffic.Plan,
    running: Mapping[str, str | None],
    decision: rollout.Decision | None,
    report: Reporter,
) -> None:
    """Events for what a person watching should know: a track that moves to another
    version (one that neither its Deployment ran nor the status recorded), a rollout's
    step, its end."""
    status = mdep.get("status") or {}
    for track, (version, _) in planned.tracks.items():
        recorded = ((status.get("tracks") or {}).get(track) or {}).get("modelVersion")
        before = recorded or running[track]
        # A first rollout says nothing: its object was just created, and an Event per
        # new ModelDeployment is an API request on the reconcile's critical path.
        if before is not None and version.object_name not in (recorded, running[track]):
            report.normal(
                "RollingOut",
                f"{track} track: ModelVersion {version.object_name} (version {version.version})",
            )
    if decision is None:
        return
    before = status.get("canary") or {}
    now = decision.status
    if (before.get("phase"), before.get("step"), before.get("weight")) == (
        now.phase,
        now.step,
        now.weight,
    ):
        return
    said = {"Progressing": "progressing", "Paused": "paused", "Promoted": "promoted"}
    done = said.get(now.phase, "rolled back")
    message = f"canary {done}, weight {now.weight}%: {now.message or ''}".rstrip(": ")
    if now.phase == "RolledBack":
        report.warning("RolledBack", message)
    else:
        report.normal(f"Canary{now.phase}", message)


def _record_rollout(
    mdep: Object,
    spec: ModelDeploymentSpec,
    planned: traffic.Plan,
    canary: CanaryStatus | None,
    router_ready: bool,
) -> None:
    """Write the rollout's status and the split in force, if they changed; tracks that
    no longer run leave status.tracks. Through the router, the split is the table's
    once the router is Ready; in mode replicas, the share of Ready pods the canary
    has, which is what a Service over both tracks achieves."""
    meta = mdep["metadata"]
    old: Object = mdep.get("status") or {}
    in_force = not planned.router or router_ready
    weight = planned.canary_weight if in_force else 0
    if spec.traffic.mode == "replicas" and "canary" in planned.tracks:
        ready = {
            track: int(((found or {}).get("status") or {}).get("readyReplicas") or 0)
            for track in ("stable", "canary")
            for found in [
                caches.CHILD_DEPLOYMENTS.get(meta["namespace"], child_name(meta["name"], track))
            ]
        }
        total = ready["stable"] + ready["canary"]
        weight = round(100 * ready["canary"] / total) if total else 0
    split = TrafficStatus(
        stable_weight=100 - weight,
        canary_weight=weight,
        mirror_percent=planned.mirror_percent if in_force else 0,
    ).model_dump(by_alias=True, mode="json")
    written = (
        None if canary is None else canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    )
    gone = {t: None for t in (old.get("tracks") or {}) if t not in planned.tracks}
    CANARY.set(meta["namespace"], meta["name"], None if canary is None else canary.phase)
    changes: Object = {}
    # The first split of stable alone goes with the status writer's first write.
    if old.get("traffic") != split and (old.get("traffic") or not stable_only(spec)):
        changes["traffic"] = split
    if old.get("canary") != written:
        changes["canary"] = written
    if gone:
        changes["tracks"] = gone
    if changes:
        done = kube.patch_status(PLURAL, meta["namespace"], meta["name"], changes)
        if done is not None:
            caches.DEPLOYMENTS.update(done, deleted=False)


def _resolve(
    ref: ModelRef, spec: ModelDeploymentSpec, namespace: str, track: str
) -> ResolvedVersion:
    """Resolve from the watched index; ask the API server when the index has no answer."""
    try:
        return resolve(
            ref,
            spec.model,
            caches.VERSIONS.get(namespace, spec.model),
            track,
            spec.require_approval,
        )
    except RefusedError as refusal:
        if refusal.reason not in ("ModelVersionNotFound", "NotApproved", "ArtifactNotVerified"):
            raise
    versions = kube.list_model_versions(namespace, spec.model)
    return resolve(ref, spec.model, versions, track, spec.require_approval)


def _config(settings: OperatorSettings) -> RenderConfig:
    return RenderConfig(
        settings.serving_image,
        settings.default_replicas,
        settings.cluster_domain,
        settings.default_requests,
        settings.scratch_size_limit,
        settings.operator_namespace,
    )


async def write_statuses(
    settings: OperatorSettings,
    reporter: Callable[[Object], Reporter],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """The status writer: forever, take what STATUS gathered and write each owner's
    status, owners side by side on the worker threads."""

    def write(
        namespace: str, owner: str, children: Mapping[str, tuple[Object, TrackVersion | None]]
    ) -> None:
        try:
            with reconciling("ModelDeploymentStatus"):
                refresh(namespace, owner, children, settings=settings, reporter=reporter)
        except Exception:
            logger.exception("status of %s/%s not written; the resync will retry", namespace, owner)

    while True:
        batch = await asyncio.to_thread(STATUS.take, 1.0, settings.status_linger_seconds)
        await asyncio.gather(
            *(
                asyncio.to_thread(write, namespace, owner, children)
                for (namespace, owner), children in batch.items()
            )
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

    Only the tracks that run now are reported (a late event of a canary that was
    just rolled back is not). Each track's version is the one a reconcile just
    resolved, else the one the owner's status records (read under the object's lock,
    so that a reconcile in progress finishes first). A track with neither has nothing
    to report yet: the owner's own reconcile (always run on its creation or change,
    refused or not) writes it.
    """
    if caches.DEPLOYMENTS.get(namespace, name) is None:
        return  # deleted: taking its lock would bring back the lock its deletion dropped
    with caches.LOCKS.of(namespace, name):
        mdep = caches.DEPLOYMENTS.get(namespace, name)
        if mdep is None:
            return
        try:
            spec = ModelDeploymentSpec.model_validate(mdep.get("spec", {}))
        except ValidationError:
            return
        recorded = (mdep.get("status") or {}).get("canary")
        running = traffic.running_tracks(
            spec, CanaryStatus.model_validate(recorded) if recorded else None
        )
        tracks = {}
        for track in running:
            current = caches.CHILD_DEPLOYMENTS.get(namespace, child_name(name, track))
            deployment, resolved = children.get(track, (current, None))
            version = resolved or TrackVersion.recorded(mdep.get("status"), track)
            if version is not None and current is not None:
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
    status, ready, why = build_status(mdep, spec=spec, tracks=tracks, config=config)
    was_ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in old_status.get("conditions") or []
    )
    if ready and not was_ready:
        report.normal("Ready", f"ready: {why}")
    if any(old_status.get(key) != value for key, value in status.items()):
        written = kube.patch_status(PLURAL, meta["namespace"], meta["name"], status)
        if written is not None:  # status refreshes read it before the watch echoes it
            caches.DEPLOYMENTS.update(written, deleted=False)


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


def change_key(mdep: Object) -> tuple[Any, ...]:
    """What a reconcile acts on that our own status writes never change: the spec's
    generation, and a person's rollout command."""
    meta = mdep["metadata"]
    return (meta.get("generation"), (meta.get("annotations") or {}).get(ANNOTATION_ROLLOUT))


def following(model_version: Object, deployments: list[Object]) -> list[Object]:
    """ModelDeployments of the same model, which a change to this version may move."""
    model = model_version.get("spec", {}).get("model")
    return [d for d in deployments if d.get("spec", {}).get("model") == model]
