"""The progressive rollout of a canary, as a pure function of spec, status and what
was observed: no clock and no API, so that every path is a row of a table test.

    decide(spec.canary, status.canary, observation, now) -> Decision(weight, status, requeue)

Everything a rollout needs to resume is in its status: the step, when it began,
the weight reached, the measurements. A restarted operator computes the same
next move and the same wait (from stepStartedAt and lastMeasuredAt); nothing
sleeps in a thread.

The rollout is tied to the canary's digest. Promoted and RolledBack hold for that
digest until the canary names other bytes (a rollback also ends with a retry), so
a GitOps tool re-applying the same spec never launches a failed version again,
and the operator never edits spec.
"""

import math
from dataclasses import dataclass
from typing import Literal

from mlops_operator.api.modeldeployment import AnalysisResult, Canary, CanaryStatus
from mlops_operator.conditions import parse_time, seconds, stamp_of

Command = Literal["promote", "promote-full", "abort", "retry", "pause", "resume"]
"""What a person asked for (annotation mlops.dev/rollout, or kubectl mlops)."""
ANALYSIS_KEPT = 30
"""Measurements kept in status.canary.analysis (the CRD's bound)."""


@dataclass(frozen=True)
class Observation:
    digest: str
    """The digest the canary's ModelVersion pins now."""
    ready: bool
    """Whether the canary track has its replicas Ready."""
    measurement: tuple[AnalysisResult, ...] = ()
    """Results of a measurement taken now; taken only when measure_due() says so."""
    command: Command | None = None
    reason: str | None = None
    """Why the command was given, when its giver said (a DriftMonitor does)."""


@dataclass(frozen=True)
class Decision:
    weight: int
    """Percent of traffic for the canary; 100 once promoted."""
    status: CanaryStatus
    requeue_after: float | None
    """Seconds until a decision is due again without any event; None: wait for one."""


def decide(canary: Canary, status: CanaryStatus | None, seen: Observation, now: float) -> Decision:
    """The next move of the rollout."""
    status = _current(status, seen, now)
    if status.phase in ("RolledBack", "Promoted"):
        return Decision(status.weight, status, None)
    obeyed = _obey(canary, status, seen.command, seen.reason, now)
    if isinstance(obeyed, Decision):
        return obeyed
    status = obeyed
    if status.phase == "Paused":
        return Decision(status.weight, status, None)
    if seen.measurement:
        status = _record(status, seen.measurement, now)
        failed = [r for r in seen.measurement if r.phase == "Failed"]
        if failed and canary.analysis and status.failed_checks > canary.analysis.failure_limit:
            return _rolled_back(status, _failure(failed[0]))
    if not seen.ready:
        waiting = status.model_copy(update={"message": "waiting for the canary to be Ready"})
        return Decision(waiting.weight, waiting, None)
    return _walk(canary, status, now)


def _current(status: CanaryStatus | None, seen: Observation, now: float) -> CanaryStatus:
    """The rollout this observation belongs to: a new one for other bytes, or for a
    retry after a rollback."""
    if status is None or status.digest != seen.digest:
        return _fresh(seen.digest, now, "rollout started")
    if status.phase == "RolledBack" and seen.command == "retry":
        return _fresh(seen.digest, now, "retried by request")
    return status


def _obey(
    canary: Canary, status: CanaryStatus, command: Command | None, reason: str | None, now: float
) -> Decision | CanaryStatus:
    """A command: a decision of its own, or the status to go on from."""
    match command:
        case "abort":
            return _rolled_back(status, f"aborted: {reason}" if reason else "aborted by request")
        case "promote-full":
            return _promoted(status, "promoted fully by request")
        case "pause":
            said = f"paused: {reason}" if reason else "paused by request"
            paused = status.model_copy(update={"phase": "Paused", "message": said})
            return Decision(paused.weight, paused, None)
        case "resume" if status.phase == "Paused":
            return status.model_copy(
                update={"phase": "Progressing", "step_started_at": stamp_of(now)}
            )
        case "promote" if status.phase == "Progressing" and status.step < len(canary.steps):
            return _advance(status, now)
    return status


def measure_due(canary: Canary, status: CanaryStatus | None, now: float) -> bool:
    """Whether the canary should be measured now: every analysis interval while the
    rollout progresses, counted from the later of the step's start and the last
    measurement, so that each measurement sees fresh traffic."""
    due = _next_measurement(canary, status)
    return due is not None and now >= due


def _next_measurement(canary: Canary, status: CanaryStatus | None) -> float | None:
    if canary.analysis is None or status is None or status.phase != "Progressing":
        return None
    since = max(
        parse_time(stamp) for stamp in (status.step_started_at, status.last_measured_at) if stamp
    )
    return since + seconds(canary.analysis.interval)


def _walk(canary: Canary, status: CanaryStatus, now: float) -> Decision:
    """Take every step that is done; stop at the first that must wait."""
    while status.step < len(canary.steps):
        step = canary.steps[status.step]
        number = f"step {status.step + 1} of {len(canary.steps)}"
        if step.set_weight is not None:
            status = _advance(status.model_copy(update={"weight": step.set_weight}), now)
            continue
        if step.pause is not None:
            if step.pause.duration is None:
                held = status.model_copy(update={"message": f"{number}: paused until promoted"})
                return Decision(held.weight, held, _measurement_wait(canary, held, now))
            started = parse_time(status.step_started_at or stamp_of(now))
            left = started + seconds(step.pause.duration) - now
            if left > 0:
                held = status.model_copy(
                    update={"message": f"{number}: pause of {step.pause.duration}"}
                )
                return Decision(held.weight, held, _sooner(left, canary, held, now))
            status = _advance(status, now)
            continue
        assert step.analysis is not None  # noqa: S101 - the CRD: exactly one kind per step
        if status.measured < step.analysis.count:
            held = status.model_copy(
                update={
                    "message": f"{number}: analysis, {status.measured} of "
                    f"{step.analysis.count} measurements passed"
                }
            )
            return Decision(held.weight, held, _measurement_wait(canary, held, now))
        status = _advance(status, now)
    return _promoted(status, "every step passed")


def _measurement_wait(canary: Canary, status: CanaryStatus, now: float) -> float | None:
    due = _next_measurement(canary, status)
    return None if due is None else max(0.0, math.ceil(due - now))


def _sooner(left: float, canary: Canary, status: CanaryStatus, now: float) -> float:
    measuring = _measurement_wait(canary, status, now)
    return min(math.ceil(left), measuring) if measuring is not None else math.ceil(left)


def _fresh(digest: str, now: float, message: str) -> CanaryStatus:
    return CanaryStatus(
        phase="Progressing", digest=digest, step_started_at=stamp_of(now), message=message
    )


def _advance(status: CanaryStatus, now: float) -> CanaryStatus:
    return status.model_copy(
        update={"step": status.step + 1, "step_started_at": stamp_of(now), "measured": 0}
    )


def _record(status: CanaryStatus, results: tuple[AnalysisResult, ...], now: float) -> CanaryStatus:
    """A failed metric fails the measurement; an inconclusive one (too few requests)
    neither passes nor fails it."""
    phases = {r.phase for r in results}
    return status.model_copy(
        update={
            "analysis": [*status.analysis, *results][-ANALYSIS_KEPT:],
            "last_measured_at": stamp_of(now),
            "failed_checks": status.failed_checks + ("Failed" in phases),
            "measured": status.measured + (phases == {"Successful"}),
        }
    )


def _failure(result: AnalysisResult) -> str:
    value = "unknown" if result.value is None else f"{result.value:g}"
    return f"analysis failed: {result.metric} was {value}, over its threshold {result.threshold:g}"


def _promoted(status: CanaryStatus, message: str) -> Decision:
    done = status.model_copy(update={"phase": "Promoted", "weight": 100, "message": message})
    return Decision(100, done, None)


def _rolled_back(status: CanaryStatus, message: str) -> Decision:
    done = status.model_copy(update={"phase": "RolledBack", "weight": 0, "message": message})
    return Decision(0, done, None)
