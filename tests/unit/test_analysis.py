"""Canary analysis: what a span of traffic says, from the pods' /metrics, the router's
or a PromQL answer, judged against the thresholds (alone and against stable), with
counters that reset and spans too thin to judge."""

import pytest
from mlops_contract.profile import FeatureProfile, Profile
from mlops_contract.windows import CaptureView, CaptureWindow

from mlops_operator.analysis import (
    Baselines,
    Reading,
    Totals,
    judge,
    parse,
    parse_tracks,
    prediction_psi,
    quantile,
    render_query,
)
from mlops_operator.api.modeldeployment import Analysis, PromQueries
from mlops_operator.builders import child_name
from mlops_operator.drift.stats import psi
from mlops_operator.driftmonitor import Window

ROUTE = 'model="iris",version="2",track="canary",route="predict"'
METRICS = f"""\
# TYPE mlops_requests_total counter
mlops_requests_total{{{ROUTE},code="200"}} 90.0
mlops_requests_total{{{ROUTE},code="422"}} 4.0
mlops_requests_total{{{ROUTE},code="500"}} 6.0
# TYPE mlops_request_duration_seconds histogram
mlops_request_duration_seconds_bucket{{{ROUTE},le="0.001"}} 50.0
mlops_request_duration_seconds_bucket{{{ROUTE},le="0.01"}} 90.0
mlops_request_duration_seconds_bucket{{{ROUTE},le="+Inf"}} 100.0
mlops_request_duration_seconds_count{{{ROUTE}}} 100.0
mlops_request_duration_seconds_sum{{{ROUTE}}} 0.5
"""


def test_a_pods_metrics_give_requests_server_errors_and_latency_buckets() -> None:
    totals = parse(METRICS)
    assert (totals.requests, totals.errors) == (100, 6)  # a 422 is the caller's error
    assert totals.buckets == ((0.001, 50.0), (0.01, 90.0), (float("inf"), 100.0))


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        (((0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)), 0.5, 0.001),
        (((0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)), 0.75, 0.0055),  # interpolated
        (((0.001, 50.0), (0.01, 90.0), (float("inf"), 100.0)), 0.99, 0.01),  # beyond: last bound
        ((), 0.99, None),
        (((0.001, 0.0), (float("inf"), 0.0)), 0.99, None),
    ],
)
def test_quantile(
    buckets: tuple[tuple[float, float], ...], q: float, expected: float | None
) -> None:
    found = quantile(buckets, q)
    assert found == pytest.approx(expected) if expected is not None else found is None


ROUTER = """\
# TYPE mlops_router_requests_total counter
mlops_router_requests_total{track="stable",code="200"} 70.0
mlops_router_requests_total{track="canary",code="200"} 25.0
mlops_router_requests_total{track="canary",code="502"} 5.0
# TYPE mlops_router_request_duration_seconds histogram
mlops_router_request_duration_seconds_bucket{track="canary",le="0.01"} 30.0
mlops_router_request_duration_seconds_bucket{track="canary",le="+Inf"} 30.0
mlops_router_request_duration_seconds_count{track="canary"} 30.0
mlops_router_request_duration_seconds_sum{track="canary"} 0.1
"""


def test_the_routers_metrics_give_each_tracks_totals() -> None:
    tracks = parse_tracks(ROUTER)
    assert tracks["stable"] == Totals(70, 0, ())
    assert tracks["canary"] == Totals(30, 5, ((0.01, 30.0), (float("inf"), 30.0)))
    assert parse_tracks(METRICS)["canary"] == parse(METRICS)  # the pods' own track label


ANALYSIS = Analysis.model_validate(
    {"minRequests": 50, "thresholds": {"errorRate": 0.05, "latencyP99Ms": 20}}
)


@pytest.mark.parametrize(
    ("reading", "phases", "values", "why"),
    [
        (Reading(100, 1, 0.0099), ["Successful", "Successful"], [0.01, 9.9], None),
        (Reading(100, 33, 0.0099), ["Failed", "Successful"], [0.33, 9.9], None),
        (Reading(100, 0, 0.0496), ["Successful", "Failed"], [0.0, 49.6], None),
        # Too few requests to say: inconclusive, never a pass.
        (
            Reading(49, 40, 0.001),
            ["Inconclusive", "Inconclusive"],
            [None, None],
            "canary served 49 requests, 50 needed",
        ),
        (
            Reading(problem="GET http://prom:9090: refused"),
            ["Inconclusive", "Inconclusive"],
            [None, None],
            "GET http://prom:9090: refused",
        ),
    ],
)
def test_judge(
    reading: Reading, phases: list[str], values: list[float | None], why: str | None
) -> None:
    results = judge(ANALYSIS, reading, 1_700_000_000, stable=Reading(200, 2, 0.005))
    assert [r.metric for r in results] == ["errorRate", "latencyP99Ms"]
    assert [r.phase for r in results] == phases
    assert [r.value for r in results] == [
        pytest.approx(v) if v is not None else None for v in values
    ]
    assert [r.threshold for r in results] == [0.05, 20]
    assert [r.stable for r in results] == [0.01, 5.0]  # stable's own, for comparison
    assert {r.message for r in results} == {why}


COMPARED = Analysis.model_validate(
    {"minRequests": 50, "thresholds": {"errorRateIncrease": 0.02, "latencyP99Ratio": 1.5}}
)


@pytest.mark.parametrize(
    ("canary", "stable", "phases", "values", "why"),
    [
        # Both tracks equally bad: the canary is no worse than stable.
        (Reading(100, 10, 0.2), Reading(400, 40, 0.2), ["Successful"] * 2, [0.0, 1.0], None),
        (Reading(100, 13, 0.2), Reading(400, 40, 0.1), ["Failed"] * 2, [0.03, 2.0], None),
        (Reading(100, 11, 0.1), Reading(400, 40, 0.1), ["Successful"] * 2, [0.01, 1.0], None),
        # Stable too thin to compare with.
        (
            Reading(100, 0, 0.1),
            Reading(10, 0, 0.1),
            ["Inconclusive"] * 2,
            [None, None],
            "stable served 10 requests, 50 needed",
        ),
        (
            Reading(100, 0, 0.1),
            Reading(100, 0, None),
            ["Successful", "Inconclusive"],
            [0.0, None],
            "stable's p99 latency is unknown",
        ),
    ],
)
def test_judge_against_stable(
    canary: Reading,
    stable: Reading,
    phases: list[str],
    values: list[float | None],
    why: str | None,
) -> None:
    results = judge(COMPARED, canary, 0, stable=stable)
    assert [r.metric for r in results] == ["errorRateIncrease", "latencyP99Ratio"]
    assert [r.phase for r in results] == phases
    assert [r.value for r in results] == [
        pytest.approx(v) if v is not None else None for v in values
    ]
    assert results[-1].message == why


def test_each_measurement_judges_the_traffic_since_the_last_and_survives_restarts() -> None:
    baselines = Baselines()
    first, new = baselines.window("ns", "iris", "canary", {"10.245.0.5": Totals(100, 10)})
    assert ((first.requests, first.errors), new) == ((100, 10), {"10.245.0.5"})
    second, new = baselines.window(
        "ns", "iris", "canary", {"10.245.0.5": Totals(160, 10), "10.245.0.6": Totals(30, 3)}
    )
    assert ((second.requests, second.errors), new) == ((90, 3), {"10.245.0.6"})
    restarted, _ = baselines.window("ns", "iris", "canary", {"10.245.0.5": Totals(20, 1)})
    assert (restarted.requests, restarted.errors) == (20, 1)  # counters went back
    other, _ = baselines.window("ns", "iris", "stable", {"10.245.0.5": Totals(500, 0)})
    assert other.requests == 500  # each track has its own baselines
    baselines.forget("ns", "iris")
    _, new = baselines.window("ns", "iris", "stable", {"10.245.0.5": Totals(600, 0)})
    assert new == {"10.245.0.5"}


def test_the_default_queries_select_the_tracks_service_over_the_span() -> None:
    queries = PromQueries()
    assert render_query(queries.errors, "models", "iris", "canary", 29.2) == (
        'sum(increase(mlops_requests_total{namespace="models",service="iris-canary",'
        'code=~"5.."}[30s]))'
    )
    assert "[1s]" in render_query(queries.requests, "models", "iris", "stable", 0.0)
    # A long name's Service is shortened as the operator names it.
    long = "m" * 60
    assert f'service="{child_name(long, "canary")}"' in render_query(
        queries.requests, "models", long, "canary", 30
    )


def window(prediction: list[int], categories: list[str], *windows: list[int]) -> Window:
    profile = Profile(
        rows=3,
        features=[],
        prediction=FeatureProfile(
            name="prediction", kind="categorical", count=3, categories=categories, counts=prediction
        ),
    )
    captured = [
        CaptureWindow(start=60 * i, rows=sum(c), seen=sum(c), features={}, prediction=c)
        for i, c in enumerate(windows)
    ]
    return Window(profile, CaptureView(window_seconds=60, features=[], windows=captured))


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [
        # The same classes: the PSI of the captured counts, over every window.
        (
            window([1, 1, 1, 0], ["0", "1", "2"], [30, 30, 0, 0], [0, 0, 40, 0]),
            window([1, 1, 1, 0], ["0", "1", "2"], [35, 35, 30, 0]),
            psi([35, 35, 30, 0], [30, 30, 40, 0]),
        ),
        # Classes binned differently cannot be compared.
        (
            window([1, 1, 0], ["0", "1"], [50, 50, 0]),
            window([1, 1, 1, 0], ["0", "1", "2"], [35, 35, 30, 0]),
            None,
        ),
        # Too few predictions to say.
        (
            window([1, 1, 1, 0], ["0", "1", "2"], [3, 3, 3, 0]),
            window([1, 1, 1, 0], ["0", "1", "2"], [35, 35, 30, 0]),
            None,
        ),
    ],
)
def test_prediction_drift_is_the_psi_of_what_both_tracks_captured(
    canary: Window, stable: Window, expected: float | None
) -> None:
    found = prediction_psi(canary, stable, least=50)
    assert found == (pytest.approx(expected, abs=1e-6) if expected is not None else None)


def test_a_drift_over_its_threshold_fails_and_none_is_inconclusive() -> None:
    limits = Analysis.model_validate({"minRequests": 10, "thresholds": {"predictionDrift": 0.2}})
    busy = Reading(100, 0)
    assert [r.phase for r in judge(limits, busy, 0, drift=0.5)] == ["Failed"]
    assert [r.phase for r in judge(limits, busy, 0, drift=0.05)] == ["Successful"]
    assert [r.phase for r in judge(limits, busy, 0, drift=None)] == ["Inconclusive"]
