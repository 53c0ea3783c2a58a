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
    entry_url,
    replicas_of,
)
from mlops_operator.conditions import condition, merge

Object = dict[str, Any]
RETIRED = {"FieldsIgnored"}
"""Conditions that older releases set and this one does not: dropped from status."""


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
    """Replicas a track should have: what its Deployment asks for (sized by the
    operator to the track's share, or set by the HPA)."""
    asked = (deployment or {}).get("spec", {}).get("replicas")
    return int(asked) if asked is not None else replicas_of(spec, config)


def build_status(
    mdep: Object,
    *,
    spec: ModelDeploymentSpec,
    tracks: Mapping[str, tuple[TrackVersion, Object | None]],
    config: RenderConfig,
) -> tuple[Object, bool, str]:
    """The status that the tracks' Deployments imply, whether every track is ready,
    and why (or why not). A canary's rollout (recorded in status.canary by the
    reconcile) sets the phase while it runs or after it was rolled back. The reconcile
    writes status.traffic, except the first of a deployment with no other track than
    stable (all to stable), written here with the rest: one status write per new
    ModelDeployment, not two."""
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
    phase = "Ready" if ready else "Degraded" if stalled else "Progressing"
    canary = (mdep.get("status") or {}).get("canary") or {}
    if spec.canary is not None and canary.get("phase") in ("Progressing", "Paused", "RolledBack"):
        phase = "Degraded" if stalled else canary["phase"]
    old = mdep.get("status") or {}
    status = ModelDeploymentStatus(
        phase=phase,
        observed_generation=generation,
        traffic=TrafficStatus() if stable_only(spec) and not old.get("traffic") else None,
        tracks=Tracks.model_validate({track: s.status for track, s in states.items()}),
        ready=f"{serving}/{wanted}",
        url=entry_url(owner, config),
        conditions=merge(
            [
                c
                for c in (mdep.get("status") or {}).get("conditions") or []
                if c.get("type") not in RETIRED
            ],
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
                *split_condition(spec, mdep.get("status") or {}, generation),
                *rollout_condition(spec, mdep.get("status") or {}, generation),
            ],
        ),
    )
    return status.model_dump(by_alias=True, exclude_none=True, mode="json"), ready, why


def stable_only(spec: ModelDeploymentSpec) -> bool:
    """Whether all traffic goes to stable whatever happens: no canary, no mirror."""
    return spec.canary is None and spec.mirror is None


def rollout_condition(
    spec: ModelDeploymentSpec, status: Object, generation: int | None
) -> list[Object]:
    """While a canary is set, where its rollout stands: False once rolled back, with
    the reason (a failed metric names its value and threshold)."""
    canary = status.get("canary") or {}
    if spec.canary is None or not canary.get("phase"):
        return []
    phase, message = canary["phase"], canary.get("message") or ""
    return [condition("CanaryHealthy", phase != "RolledBack", phase, message, generation)]


def split_condition(
    spec: ModelDeploymentSpec, status: Object, generation: int | None
) -> list[Object]:
    """In mode replicas, whether the split the pods achieve (status.traffic, written by
    the reconcile) is the weight the rollout asked for (status.canary.weight)."""
    canary = status.get("canary") or {}
    if spec.traffic.mode != "replicas" or canary.get("phase") not in ("Progressing", "Paused"):
        return []
    asked = int(canary.get("weight") or 0)
    achieved = int((status.get("traffic") or {}).get("canaryWeight") or 0)
    if asked == achieved:
        return [condition("TrafficSplit", True, "AsAsked", f"canary {asked}%", generation)]
    message = (
        f"asked {asked}% for the canary, its share of Ready pods is {achieved}%: "
        "mode replicas splits by pods"
    )
    return [condition("TrafficSplit", False, "Approximated", message, generation)]
