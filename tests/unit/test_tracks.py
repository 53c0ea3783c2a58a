"""A ModelDeployment's status from its tracks' Deployments, as tables: no cluster."""

from typing import Any

import pytest

from mlops_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.builders import RenderConfig
from mlops_operator.tracks import (
    TrackVersion,
    build_status,
    rollout_condition,
    split_condition,
    track_state,
)

V1 = TrackVersion("iris-1", "1", "sha256:" + "a" * 64)
V2 = TrackVersion("iris-2", "2", None)
CONFIG = RenderConfig("registry.example/mlops-serving:test")


def deployment(
    ready: int = 2,
    updated: int = 2,
    replicas: int = 2,
    generation: int = 1,
    observed: int = 1,
    stalled: bool = False,
) -> dict[str, Any]:
    conditions = (
        [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "no image"}]
        if stalled
        else []
    )
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "replicas": replicas,
            "observedGeneration": observed,
            "conditions": conditions,
        },
    }


@pytest.mark.parametrize(
    ("child", "ready", "stalled", "why"),
    [
        (deployment(), True, False, "2/2 replicas ready"),
        (None, False, False, "Deployment not created yet"),
        (deployment(ready=1), False, False, "1/2 replicas ready, 2 updated"),
        (deployment(updated=1), False, False, "2/2 replicas ready, 1 updated"),
        (deployment(replicas=3), False, False, "2/2 replicas ready, 2 updated"),  # old pod left
        (deployment(generation=2), False, False, "rollout not observed yet"),
        (deployment(stalled=True), False, True, "rollout stalled: no image"),
    ],
)
def test_track_state(child: dict[str, Any] | None, ready: bool, stalled: bool, why: str) -> None:
    state = track_state(child, V1, 2)
    assert (state.ready, state.stalled, state.why) == (ready, stalled, why)
    assert (state.status.replicas, state.status.model_version) == (2, "iris-1")


def owner(status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"name": "iris", "namespace": "models", "uid": "u-1", "generation": 3}
    return {"metadata": meta, "status": status or {}}


SPEC = ModelDeploymentSpec.model_validate(
    {"model": "iris", "stable": {"version": "1"}, "replicas": 2}
)


@pytest.mark.parametrize(
    ("tracks", "phase", "ready", "why", "count"),
    [
        ({"stable": (V1, deployment())}, "Ready", True, "2/2 replicas ready", "2/2"),
        (
            {"stable": (V1, deployment(ready=1))},
            "Progressing",
            False,
            "1/2 replicas ready, 2 updated",
            "1/2",
        ),
        (
            {"stable": (V1, deployment(stalled=True))},
            "Degraded",
            False,
            "rollout stalled: no image",
            "2/2",
        ),
        (
            {"stable": (V1, deployment()), "canary": (V2, deployment(ready=0))},
            "Progressing",
            False,
            "stable: 2/2 replicas ready; canary: 0/2 replicas ready, 2 updated",
            "2/4",
        ),
        (
            {"stable": (V1, deployment()), "canary": (V2, deployment())},
            "Ready",
            True,
            "stable: 2/2 replicas ready; canary: 2/2 replicas ready",
            "4/4",
        ),
    ],
)
def test_build_status(
    tracks: dict[str, Any], phase: str, ready: bool, why: str, count: str
) -> None:
    status, all_ready, message = build_status(owner(), spec=SPEC, tracks=tracks, config=CONFIG)
    assert (status["phase"], all_ready, message, status["ready"]) == (phase, ready, why, count)
    assert set(status["tracks"]) == set(tracks)
    assert status["tracks"]["stable"]["digest"] == V1.digest
    assert "digest" not in status["tracks"].get("canary", {})  # unknown, so absent
    assert status["url"] == "http://iris.models.svc.cluster.local"  # the entry Service
    assert status["observedGeneration"] == 3
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"]["status"] == ("True" if ready else "False")
    assert by_type["Degraded"]["status"] == ("True" if phase == "Degraded" else "False")
    ModelDeploymentStatus.model_validate(status)  # what the CRD's schema will take


CANARY_SPEC = ModelDeploymentSpec.model_validate(
    {"model": "iris", "stable": {"version": "1"}, "canary": {"version": "2"}, "replicas": 2}
)


@pytest.mark.parametrize(
    ("spec", "rollout", "stalled", "phase"),
    [
        (CANARY_SPEC, "Progressing", False, "Progressing"),  # ready pods, rollout not done
        (CANARY_SPEC, "Paused", False, "Paused"),
        (CANARY_SPEC, "RolledBack", False, "RolledBack"),
        (CANARY_SPEC, "Promoted", False, "Ready"),
        (CANARY_SPEC, "Paused", True, "Degraded"),  # a stalled track outranks the rollout
        (SPEC, "RolledBack", False, "Ready"),  # the canary left the spec
    ],
)
def test_a_rollout_sets_the_phase_while_it_runs_or_after_a_rollback(
    spec: ModelDeploymentSpec, rollout: str, stalled: bool, phase: str
) -> None:
    status, _, _ = build_status(
        owner({"canary": {"phase": rollout}}),
        spec=spec,
        tracks={"stable": (V1, deployment(stalled=stalled))},
        config=CONFIG,
    )
    assert status["phase"] == phase


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first, _, _ = build_status(
        owner(), spec=SPEC, tracks={"stable": (V1, deployment())}, config=CONFIG
    )
    earlier = {**first, "conditions": [
        {**c, "lastTransitionTime": "2026-01-01T00:00:00Z"} for c in first["conditions"]
    ]}  # fmt: skip
    again, _, _ = build_status(
        owner(earlier),
        spec=SPEC,
        tracks={"stable": (V1, deployment())},
        config=CONFIG,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert set(times.values()) == {"2026-01-01T00:00:00Z"}
    changed, _, _ = build_status(
        owner(earlier),
        spec=SPEC,
        tracks={"stable": (V1, deployment(ready=0))},
        config=CONFIG,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times["Ready"] != "2026-01-01T00:00:00Z"
    assert times["Degraded"] == "2026-01-01T00:00:00Z"  # still False


def test_a_condition_this_release_no_longer_sets_leaves_the_status() -> None:
    retired = {"type": "FieldsIgnored", "status": "False", "reason": "AllFieldsServed"}
    status, _, _ = build_status(
        owner({"conditions": [retired]}),
        spec=SPEC,
        tracks={"stable": (V1, deployment())},
        config=CONFIG,
    )
    assert "FieldsIgnored" not in {c["type"] for c in status["conditions"]}


@pytest.mark.parametrize(
    ("status", "track", "recorded"),
    [
        ({"tracks": {"stable": {"modelVersion": "iris-1", "version": "1", "digest": V1.digest}}},
         "stable", V1),
        ({"tracks": {"stable": {"modelVersion": "iris-1", "version": "1"}}}, "canary", None),
        ({}, "stable", None),
        (None, "stable", None),
    ],
)  # fmt: skip
def test_recorded_version(
    status: dict[str, Any] | None, track: str, recorded: TrackVersion | None
) -> None:
    assert TrackVersion.recorded(status, track) == recorded


REPLICAS_SPEC = ModelDeploymentSpec.model_validate(
    {
        "model": "iris",
        "stable": {"version": "1"},
        "canary": {"version": "2"},
        "traffic": {"mode": "replicas"},
    }
)


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        (
            REPLICAS_SPEC,
            {"canary": {"phase": "Progressing", "weight": 25}, "traffic": {"canaryWeight": 25}},
            ("True", "AsAsked"),
        ),
        (
            REPLICAS_SPEC,
            {"canary": {"phase": "Progressing", "weight": 30}, "traffic": {"canaryWeight": 40}},
            ("False", "Approximated"),
        ),
        (
            REPLICAS_SPEC,
            {"canary": {"phase": "RolledBack", "weight": 0}, "traffic": {"canaryWeight": 0}},
            None,
        ),
        (
            CANARY_SPEC,
            {"canary": {"phase": "Progressing", "weight": 30}, "traffic": {"canaryWeight": 30}},
            None,
        ),
    ],
)
def test_mode_replicas_says_when_the_pods_cannot_give_the_weight_asked(
    spec: ModelDeploymentSpec, status: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    found = split_condition(spec, status, 1)
    assert [(c["status"], c["reason"]) for c in found] == ([expected] if expected else [])
    if expected == ("False", "Approximated"):
        assert found[0]["message"].startswith(
            "asked 30% for the canary, its share of Ready pods is 40%"
        )


@pytest.mark.parametrize(
    ("spec", "canary", "expected"),
    [
        (CANARY_SPEC, {"phase": "Progressing", "message": "step 1 of 2"}, ("True", "Progressing")),
        (CANARY_SPEC, {"phase": "Promoted", "message": "every step passed"}, ("True", "Promoted")),
        (
            CANARY_SPEC,
            {
                "phase": "RolledBack",
                "message": "analysis failed: errorRate was 0.3, over its threshold 0.1",
            },
            ("False", "RolledBack"),
        ),
        (SPEC, {"phase": "RolledBack", "message": "old"}, None),  # no canary in the spec
        (CANARY_SPEC, {}, None),  # not started
    ],
)
def test_the_canary_condition_names_why_it_was_rolled_back(
    spec: ModelDeploymentSpec, canary: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    found = rollout_condition(spec, {"canary": canary}, 1)
    assert [(c["status"], c["reason"]) for c in found] == ([expected] if expected else [])
    if found:
        assert found[0]["message"] == canary["message"]


@pytest.mark.parametrize(
    ("extra", "before", "written"),
    [
        # A new deployment of stable alone: its first split goes with the rest.
        ({}, {}, {"stableWeight": 100, "canaryWeight": 0, "mirrorPercent": 0}),
        ({}, {"traffic": {"stableWeight": 100}}, None),  # written once
        # A canary's or a mirror's split is the reconcile's to write.
        ({"canary": {"version": "2"}}, {}, None),
        ({"mirror": {"version": "2", "percent": 10}}, {}, None),
    ],
)
def test_the_status_writer_writes_only_the_first_split_of_stable_alone(
    extra: dict[str, Any], before: dict[str, Any], written: dict[str, int] | None
) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "1"}, **extra}
    )
    status, _, _ = build_status(
        owner(before), spec=spec, tracks={"stable": (V1, deployment())}, config=CONFIG
    )
    assert status.get("traffic") == written
