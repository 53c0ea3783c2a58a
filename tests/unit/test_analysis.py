"""Canary analysis from the pods' /metrics: what a window of traffic says, judged
against the thresholds, with counters that reset and windows too thin to judge."""

import pytest

from mlops_operator.analysis import Baselines, Totals, judge, parse, prediction_psi, quantile
from mlops_operator.api.modeldeployment import Analysis
from mlops_operator.drift.stats import psi
from mlops_operator.driftmonitor import Window
from mlops_serving.profile import FeatureProfile, Profile

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


ANALYSIS = Analysis.model_validate(
    {"minRequests": 50, "thresholds": {"errorRate": 0.05, "latencyP99Ms": 20}}
)


@pytest.mark.parametrize(
    ("window", "phases", "values"),
    [
        (
            Totals(100, 1, ((0.01, 100.0), (float("inf"), 100.0))),
            ["Successful", "Successful"],
            [0.01, 9.9],
        ),
        (
            Totals(100, 33, ((0.01, 100.0), (float("inf"), 100.0))),
            ["Failed", "Successful"],
            [0.33, 9.9],
        ),
        (
            Totals(100, 0, ((0.01, 10.0), (0.05, 100.0), (float("inf"), 100.0))),
            ["Successful", "Failed"],
            [0.0, 49.555556],
        ),
        # Too few requests to say: inconclusive, never a pass.
        (
            Totals(49, 40, ((0.01, 49.0), (float("inf"), 49.0))),
            ["Inconclusive", "Inconclusive"],
            [None, None],
        ),
        (Totals(), ["Inconclusive", "Inconclusive"], [None, None]),
    ],
)
def test_judge(window: Totals, phases: list[str], values: list[float | None]) -> None:
    results = judge(ANALYSIS, window, 1_700_000_000)
    assert [r.metric for r in results] == ["errorRate", "latencyP99Ms"]
    assert [r.phase for r in results] == phases
    assert [r.value for r in results] == [
        pytest.approx(v) if v is not None else None for v in values
    ]
    assert [r.threshold for r in results] == [0.05, 20]


def test_each_measurement_judges_the_traffic_since_the_last_and_survives_restarts() -> None:
    baselines = Baselines()
    first = baselines.window("ns", "iris", {"10.245.0.5": Totals(100, 10)})
    assert (first.requests, first.errors) == (100, 10)  # a new pod counts from its start
    second = baselines.window(
        "ns", "iris", {"10.245.0.5": Totals(160, 10), "10.245.0.6": Totals(30, 3)}
    )
    assert (second.requests, second.errors) == (90, 3)
    restarted = baselines.window("ns", "iris", {"10.245.0.5": Totals(20, 1)})
    assert (restarted.requests, restarted.errors) == (20, 1)  # counters went back


def window(prediction: list[int], categories: list[str], *windows: list[int]) -> Window:
    profile = Profile(
        rows=3,
        features=[],
        prediction=FeatureProfile(
            name="prediction", kind="categorical", count=3, categories=categories, counts=prediction
        ),
    )
    return Window(profile, {"windows": [{"prediction": counts} for counts in windows]})


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
    busy = Totals(100, 0)
    assert [r.phase for r in judge(limits, busy, 0, 0.5)] == ["Failed"]
    assert [r.phase for r in judge(limits, busy, 0, 0.05)] == ["Successful"]
    assert [r.phase for r in judge(limits, busy, 0, None)] == ["Inconclusive"]
