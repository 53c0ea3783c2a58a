"""The rollout state machine, as tables: spec, status and observation in; weight,
status and requeue out. No clock, no API."""

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.api.modeldeployment import AnalysisResult, Canary, CanaryStatus
from mlops_operator.conditions import parse_time, stamp_of
from mlops_operator.metrics import CanaryGauge
from mlops_operator.rollout import Command, Decision, Observation, decide, measure_due

T0 = parse_time("2026-12-02T12:00:00Z")
DIGEST = "sha256:" + "c" * 64
OTHER = "sha256:" + "d" * 64
SPEC = Canary.model_validate(
    {
        "version": "2",
        "steps": [
            {"setWeight": 20},
            {"analysis": {"count": 2}},
            {"setWeight": 50},
            {"pause": {"duration": "5s"}},
        ],
        "analysis": {"interval": "10s", "failureLimit": 1, "thresholds": {"errorRate": 0.05}},
    }
)


def at(step: int, started: float = 0, **fields: Any) -> CanaryStatus:
    """A rollout of DIGEST at `step`, begun `started` seconds after T0."""
    values: dict[str, Any] = {
        "phase": "Progressing",
        "digest": DIGEST,
        "step": step,
        "step_started_at": stamp_of(T0 + started),
        "weight": {0: 0, 1: 20, 2: 20, 3: 50}.get(step, 50),
    }
    return CanaryStatus(**(values | fields))


def result(phase: str, value: float | None = 0.01) -> AnalysisResult:
    return AnalysisResult(
        time=stamp_of(T0), metric="errorRate", value=value, threshold=0.05, phase=phase
    )


def seen(
    *measured: AnalysisResult,
    ready: bool = True,
    command: Command | None = None,
    digest: str = DIGEST,
    reason: str | None = None,
) -> Observation:
    return Observation(
        digest=digest, ready=ready, measurement=measured, command=command, reason=reason
    )


ROWS = [
    # what, status before, observation, seconds after T0, weight, phase, step, requeue
    ("a new canary walks to its first wait", None, seen(), 0, 20, "Progressing", 1, 10),
    ("a new canary waits to be Ready", None, seen(ready=False), 0, 0, "Progressing", 0, None),
    ("analysis waits for its interval", at(1), seen(), 4, 20, "Progressing", 1, 6),
    (
        "the second passing measurement ends the analysis",
        at(1, measured=1, last_measured_at=stamp_of(T0 + 10)),
        seen(result("Successful")),
        20,
        50,
        "Progressing",
        3,
        5,
    ),
    (
        "one failure within failureLimit is counted, not fatal",
        at(1),
        seen(result("Failed", 0.2)),
        10,
        20,
        "Progressing",
        1,
        10,
    ),
    (
        "an inconclusive measurement neither passes nor fails",
        at(1, measured=1),
        seen(result("Inconclusive", None)),
        10,
        20,
        "Progressing",
        1,
        10,
    ),
    (
        "a failure past failureLimit rolls back",
        at(1, failed_checks=1),
        seen(result("Failed", 0.2)),
        10,
        0,
        "RolledBack",
        1,
        None,
    ),
    ("a pause holds its weight", at(3), seen(), 3, 50, "Progressing", 3, 2),
    ("a pause ends and the last step promotes", at(3), seen(), 5, 100, "Promoted", 4, None),
    (
        "a rollback holds for the same digest (GitOps re-apply)",
        at(1, phase="RolledBack", weight=0),
        seen(),
        99,
        0,
        "RolledBack",
        1,
        None,
    ),
    (
        "a rollback ends when the canary names other bytes",
        at(1, phase="RolledBack", weight=0),
        seen(digest=OTHER),
        99,
        20,
        "Progressing",
        1,
        10,
    ),
    (
        "a rollback ends with a retry",
        at(1, phase="RolledBack", weight=0),
        seen(command="retry"),
        99,
        20,
        "Progressing",
        1,
        10,
    ),
    (
        "a retry does nothing to a progressing rollout",
        at(1),
        seen(command="retry"),
        4,
        20,
        "Progressing",
        1,
        6,
    ),
    (
        "a promotion holds",
        at(4, phase="Promoted", weight=100),
        seen(),
        99,
        100,
        "Promoted",
        4,
        None,
    ),
    ("abort rolls back", at(3), seen(command="abort"), 1, 0, "RolledBack", 3, None),
    ("promote-full promotes", at(1), seen(command="promote-full"), 1, 100, "Promoted", 1, None),
    (
        "promote takes one step: past the analysis",
        at(1),
        seen(command="promote"),
        1,
        50,
        "Progressing",
        3,
        5,
    ),
    ("pause holds the weight", at(3), seen(command="pause"), 9, 50, "Paused", 3, None),
    ("a paused rollout stays paused", at(3, phase="Paused"), seen(), 99, 50, "Paused", 3, None),
    (
        "resume restarts the step's clock",
        at(3, phase="Paused"),
        seen(command="resume"),
        99,
        50,
        "Progressing",
        3,
        5,
    ),
]


@pytest.mark.parametrize(
    ("before", "observed", "after", "weight", "phase", "step", "requeue"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(
    before: CanaryStatus | None,
    observed: Observation,
    after: float,
    weight: int,
    phase: str,
    step: int,
    requeue: float | None,
) -> None:
    decision = decide(SPEC, before, observed, T0 + after)
    assert (decision.weight, decision.status.phase, decision.status.step) == (weight, phase, step)
    assert decision.requeue_after == requeue
    assert decision.status.weight == weight
    assert decision.status.digest == observed.digest


def test_a_rollback_names_the_failed_metric() -> None:
    decision = decide(SPEC, at(1, failed_checks=1), seen(result("Failed", 0.2)), T0 + 10)
    assert decision.status.message == "analysis failed: errorRate was 0.2, over its threshold 0.05"
    assert decision.status.failed_checks == 2
    assert [r.phase for r in decision.status.analysis] == ["Failed"]


NO_STEPS = Canary.model_validate({"version": "2"})
HOLD = Canary.model_validate({"version": "2", "steps": [{"setWeight": 10}, {"pause": {}}]})


@pytest.mark.parametrize(
    ("canary", "ready", "weight", "phase", "message"),
    [
        (NO_STEPS, True, 100, "Promoted", "every step passed"),
        (NO_STEPS, False, 0, "Progressing", "waiting for the canary to be Ready"),
        (HOLD, True, 10, "Progressing", "step 2 of 2: paused until promoted"),
    ],
)
def test_steps_of_other_shapes(
    canary: Canary, ready: bool, weight: int, phase: str, message: str
) -> None:
    decision = decide(canary, None, seen(ready=ready), T0)
    assert (decision.weight, decision.status.phase, decision.status.message) == (
        weight,
        phase,
        message,
    )
    assert decision.requeue_after is None  # no timer: an event or a person moves it on


def test_a_pause_until_promoted_ends_by_request() -> None:
    held = decide(HOLD, None, seen(), T0).status
    assert decide(HOLD, held, seen(), T0 + 3600).status.phase == "Progressing"
    assert decide(HOLD, held, seen(command="promote"), T0 + 3600).status.phase == "Promoted"


@pytest.mark.parametrize(
    ("status", "after", "due"),
    [
        (at(1), 9, False),
        (at(1), 10, True),
        (at(1, last_measured_at=stamp_of(T0 + 15)), 24, False),
        (at(1, last_measured_at=stamp_of(T0 + 15)), 25, True),
        (at(1, phase="Paused"), 99, False),
        (at(1, phase="RolledBack"), 99, False),
        (None, 99, False),
    ],
)
def test_measure_due(status: CanaryStatus | None, after: float, due: bool) -> None:
    assert measure_due(SPEC, status, T0 + after) is due
    assert measure_due(NO_STEPS, status, T0 + after) is False  # no analysis, no measuring


def run(observe: Any, stop_after: float = 600) -> list[tuple[float, int]]:
    """Drive a rollout the way the operator does: decide, wait the requeue (or a
    second, standing in for the next event), measure when due. The status goes
    through JSON between decisions, as it does through the API server."""
    now, status = T0, None
    weights: list[tuple[float, int]] = []
    while now - T0 < stop_after:
        measured = observe(now) if measure_due(SPEC, status, now) else ()
        decision: Decision = decide(SPEC, status, seen(*measured), now)
        status = CanaryStatus.model_validate_json(decision.status.model_dump_json(by_alias=True))
        if not weights or weights[-1][1] != decision.weight:
            weights.append((now - T0, decision.weight))
        if status.phase in ("Promoted", "RolledBack"):
            break
        now += decision.requeue_after if decision.requeue_after is not None else 1
    return weights


def test_a_healthy_canary_walks_every_step_to_promotion() -> None:
    # 20% at once; two passing measurements 10 s apart; 50%; 5 s pause; promoted.
    assert run(lambda now: (result("Successful"),)) == [(0, 20), (20, 50), (25, 100)]


def test_a_failing_canary_is_rolled_back_after_its_failure_limit() -> None:
    assert run(lambda now: (result("Failed", 0.3),)) == [(0, 20), (20, 0)]


@pytest.mark.parametrize(
    ("command", "reason", "message"),
    [
        ("abort", None, "aborted by request"),
        (
            "abort",
            "DriftMonitor d found dataset drift",
            "aborted: DriftMonitor d found dataset drift",
        ),
        ("pause", None, "paused by request"),
        (
            "pause",
            "DriftMonitor d found dataset drift",
            "paused: DriftMonitor d found dataset drift",
        ),
    ],
)
def test_a_commands_reason_is_the_rollouts_message(
    command: Command, reason: str | None, message: str
) -> None:
    decision = decide(SPEC, at(3), seen(command=command, reason=reason), T0 + 1)
    assert decision.status.message == message


def test_the_canary_gauge_holds_one_series_at_the_phase_in_force() -> None:
    registry = CollectorRegistry()
    gauge = CanaryGauge(registry)

    def series() -> dict[tuple[str, str], float]:
        return {
            (s.labels["modeldeployment"], s.labels["phase"]): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples
            if s.name == "mlops_canary_phase"
        }

    gauge.set("n", "iris", "Progressing")
    gauge.set("n", "wine", "Paused")
    assert series() == {("iris", "Progressing"): 1.0, ("wine", "Paused"): 1.0}
    gauge.set("n", "iris", "RolledBack")
    assert series() == {("iris", "RolledBack"): 1.0, ("wine", "Paused"): 1.0}
    gauge.set("n", "wine", None)  # the canary left the spec
    gauge.forget("n", "iris")  # the ModelDeployment was deleted
    assert series() == {}
