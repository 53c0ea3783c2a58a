"""A ModelDeployment's status from its tracks' Deployments: pure, table-tested.

Everything here is keyed by track (stable, canary, mirror), so that a track added
to a rollout is a new key, not a new code path. The status is built through the
API model (ModelDeploymentStatus), so that it is checked against the same schema
as the CRD before it is written.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_operator.api.modeldeployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Tracks,
    TrackStatus,
    TrafficStatus,
)
from mlops_operator.builders import (
    Owner,
    RenderConfig,
    ResolvedVersion,
    replicas_of,
    service_url,
)
from mlops_operator.conditions import condition, merge

Object = dict[str, Any]


@dataclass(frozen=True)
class TrackVersion:
    """The ModelVersion a track runs, as its status records it."""

    model_version: str
    version: str
    digest: str | None

    @classmethod
    def of(cls, resolved: ResolvedVersion) -> "TrackVersion":
        return cls(resolved.object_name, resolved.version, resolved.digest)

    @classmethod
    def recorded(cls, status: Object | None, track: str) -> "TrackVersion | None":
        """The version that `status.tracks[track]` records, if it records one."""
        found = ((status or {}).get("tracks") or {}).get(track) or {}
        if not found.get("modelVersion") or not found.get("version"):
            return None
        return cls(found["modelVersion"], found["version"], found.get("digest"))


@dataclass(frozen=True)
class TrackState:
    status: TrackStatus
    ready: bool
    stalled: bool
    why: str


def track_state(deployment: Object | None, version: TrackVersion, desired: int) -> TrackState:
    """A track's status from its Deployment, and whether it is rolled out and ready."""
    observed = (deployment or {}).get("status") or {}
    generation = (deployment or {}).get("metadata", {}).get("generation", 0)
    ready = int(observed.get("readyReplicas", 0))
    updated = int(observed.get("updatedReplicas", 0))
    status = TrackStatus(
        version=version.version,
        model_version=version.model_version,
        digest=version.digest,
        replicas=desired,
        ready_replicas=ready,
    )
    if deployment is None:
        return TrackState(status, False, False, "Deployment not created yet")
    for item in observed.get("conditions", []):
        if item.get("type") == "Progressing" and item.get("reason") == "ProgressDeadlineExceeded":
            return TrackState(status, False, True, f"rollout stalled: {item.get('message', '')}")
    if int(observed.get("observedGeneration", 0)) < generation:
        return TrackState(status, False, False, "rollout not observed yet")
    if updated < desired or ready < desired or int(observed.get("replicas", 0)) > desired:
        return TrackState(
            status, False, False, f"{ready}/{desired} replicas ready, {updated} updated"
        )
    return TrackState(status, True, False, f"{ready}/{desired} replicas ready")


def desired_replicas(
    spec: ModelDeploymentSpec, deployment: Object | None, config: RenderConfig
) -> int:
    """Replicas a track should have; with autoscaling, what the HPA has set if more."""
    replicas = replicas_of(spec, config)
    if spec.autoscaling is not None and deployment is not None:
        replicas = max(int(deployment.get("spec", {}).get("replicas") or replicas), replicas)
    return replicas


def build_status(
    mdep: Object,
    *,
    spec: ModelDeploymentSpec,
    tracks: Mapping[str, tuple[TrackVersion, Object | None]],
    config: RenderConfig,
    ignored: Object,
) -> tuple[Object, bool, str]:
    """The status that the tracks' Deployments imply, whether every track is ready,
    and why (or why not). `ignored` is the FieldsIgnored condition."""
    meta = mdep["metadata"]
    generation = meta.get("generation")
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    states = {
        track: track_state(deployment, version, desired_replicas(spec, deployment, config))
        for track, (version, deployment) in tracks.items()
    }
    ready = all(s.ready for s in states.values())
    stalled = any(s.stalled for s in states.values())
    why = "; ".join(
        s.why if len(states) == 1 else f"{track}: {s.why}" for track, s in states.items()
    )
    wanted = sum(s.status.replicas for s in states.values())
    serving = sum(s.status.ready_replicas for s in states.values())
    status = ModelDeploymentStatus(
        phase="Ready" if ready else "Degraded" if stalled else "Progressing",
        observed_generation=generation,
        tracks=Tracks.model_validate({track: s.status for track, s in states.items()}),
        ready=f"{serving}/{wanted}",
        traffic=TrafficStatus(stable_weight=100, canary_weight=0, mirror_percent=0),
        url=service_url(owner, "stable", config),
        conditions=merge(
            (mdep.get("status") or {}).get("conditions"),
            [
                condition("Ready", ready, "Available" if ready else "RollingOut", why, generation),
                condition(
                    "Progressing",
                    not ready and not stalled,
                    "Complete" if ready else "RollingOut",
                    why,
                    generation,
                ),
                condition(
                    "Degraded",
                    stalled,
                    "RolloutStalled" if stalled else "AsExpected",
                    why if stalled else "",
                    generation,
                ),
                ignored,
            ],
        ),
    )
    return status.model_dump(by_alias=True, exclude_none=True, mode="json"), ready, why
