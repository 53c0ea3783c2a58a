"""DriftMonitor's pure parts: scheduling, status, conditions, signatures, the Job, the
timer loop and the gauges."""

import asyncio
import hashlib
import hmac
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, Retrain
from mlops_operator.drift import DriftReport, FeatureDrift
from mlops_operator.driftmonitor import (
    MAX_HISTORY,
    drift_conditions,
    due_in,
    job_outcome,
    parse_time,
    render_retrain_job,
    seconds,
    sign,
    status_of,
)
from mlops_operator.metrics import DriftGauges
from mlops_operator.timers import Timers

NOON = parse_time("2026-12-02T12:00:00Z")


@pytest.mark.parametrize(
    ("duration", "expected"),
    [("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5)],
)
def test_durations(duration: str, expected: float) -> None:
    assert seconds(duration) == expected


def dm(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "n", "uid": "u-1", "generation": 2},
        "spec": {"deploymentRef": {"name": "d"}, "interval": "10m"},
        "status": status,
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (dm(), 0.0),  # never ran
        (dm(lastRun="2026-12-02T11:55:00Z", observedGeneration=2), 300.0),
        (dm(lastRun="2026-12-02T11:40:00Z", observedGeneration=2), 0.0),  # overdue
        (dm(lastRun="2026-12-02T11:58:00Z", observedGeneration=1), 0.0),  # spec changed
        ({**dm(), "spec": {"suspend": True, "interval": "10m"}}, None),
    ],
)
def test_next_run_comes_from_status(body: dict[str, Any], expected: float | None) -> None:
    assert due_in(body, NOON) == expected


def report(drifted: list[bool], samples: int = 900, insufficient: bool = False) -> DriftReport:
    features = [
        FeatureDrift(f"x{i}", "ks", 0.1 * i, 0.01 if d else 0.5, 0.05, d)
        for i, d in enumerate(drifted)
    ]
    count = sum(drifted)
    return DriftReport(
        samples=samples,
        reference_samples=5000,
        features=[] if insufficient else features,
        prediction=None,
        drifted=0 if insufficient else count,
        drift_share=0.0 if insufficient else count / len(drifted),
        dataset_drift=None if insufficient else count / len(drifted) >= 0.5,
        threshold_share=0.5,
        correction="none",
        insufficient_data=insufficient,
    )


SPEC = DriftMonitorSpec.model_validate({"deploymentRef": {"name": "d"}})
EARLIER = {"time": "2026-12-02T00:00:00Z", "samples": 10, "driftShare": 0.0, "datasetDrift": False}


def test_status_lists_drifted_first_and_keeps_a_bounded_history() -> None:
    previous = {"history": [EARLIER] * MAX_HISTORY}
    status = status_of(previous, report([False, True, False, True]), SPEC, NOON, 2)
    DriftMonitorStatus.model_validate(status)  # what the CRD's schema takes
    assert [f["name"] for f in status["features"]] == ["x1", "x3", "x0", "x2"]
    assert (status["driftedFeatures"], status["datasetDrift"], status["driftShare"]) == (
        2,
        True,
        0.5,
    )
    assert len(status["history"]) == MAX_HISTORY
    assert status["history"][-1] == {
        "time": "2026-12-02T12:00:00Z",
        "samples": 900,
        "driftShare": 0.5,
        "datasetDrift": True,
    }
    assert status["message"] == "2 of 4 features drifted (x1, x3); share 0.50, threshold 0.50"


def test_too_few_rows_clear_the_verdict_and_add_no_history() -> None:
    previous = {"datasetDrift": True, "driftShare": 0.5, "history": [EARLIER]}
    status = status_of(previous, report([], samples=12, insufficient=True), SPEC, NOON, 2)
    assert (status["datasetDrift"], status["driftShare"], status["features"]) == (None, None, [])
    assert status["history"] == [EARLIER]
    assert status["message"] == "12 rows in the last 1h; 500 needed to judge drift"


@pytest.mark.parametrize(
    ("given", "error", "expected"),
    [
        (report([True, True]), None, {"Ready": "True", "DriftDetected": "True"}),
        (report([False, True, False]), None, {"Ready": "True", "DriftDetected": "False"}),
        (report([], insufficient=True), None, {"Ready": "True", "DriftDetected": "Unknown"}),
        (None, "GET http://x/v2/profile: refused", {"Ready": "False"}),
    ],
)
def test_conditions(given: DriftReport | None, error: str | None, expected: dict[str, str]) -> None:
    conditions = drift_conditions(given, error, 3)
    assert {c["type"]: c["status"] for c in conditions} == expected
    assert all(c["observedGeneration"] == 3 for c in conditions)


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    body = b'{"datasetDrift": true}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", 1700000000, body) == f"sha256={expected}"
    assert sign(b"k", 1700000001, body) != sign(b"k", 1700000000, body)


def test_retraining_job_carries_report_and_lineage_into_every_container() -> None:
    retrain = Retrain.model_validate(
        {
            "jobTemplate": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}]},
                                {"name": "b", "image": "i"},
                            ],
                            "volumes": [{"name": "data", "emptyDir": {}}],
                        }
                    },
                },
            }
        }
    )
    job, config_map = render_retrain_job(
        dm(), retrain, {"drifted": 1}, {"MLOPS_RUN_ID": "r1"}, NOON
    )
    assert job["metadata"]["name"] == config_map["metadata"]["name"] == f"m-retrain-{int(NOON)}"
    assert job["metadata"]["labels"] == {"team": "ml", "mlops.dev/drift-monitor": "m"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["spec"]["backoffLimit"] == 1
    pod = job["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["data", "drift-report"]
    for container in pod["containers"]:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MLOPS_RUN_ID"] == "r1"
        assert env["MLOPS_DRIFT_REPORT"] == "/etc/mlops/drift/report.json"
        assert container["volumeMounts"] == [
            {"name": "drift-report", "mountPath": "/etc/mlops/drift"}
        ]
    assert pod["containers"][0]["env"][0] == {"name": "X", "value": "1"}
    assert config_map["data"]["report.json"] == '{\n  "drifted": 1\n}'
    assert "containers" not in retrain.job_template["spec"]  # the spec is left as it was
    assert retrain.job_template["spec"]["template"]["spec"]["containers"][1] == {
        "name": "b",
        "image": "i",
    }


@pytest.mark.parametrize(
    ("conditions", "outcome"),
    [
        ([], "Running"),
        ([{"type": "Complete", "status": "True"}], "Succeeded"),
        ([{"type": "SuccessCriteriaMet", "status": "True"}], "Succeeded"),
        ([{"type": "Failed", "status": "True"}], "Failed"),
        ([{"type": "Failed", "status": "False"}], "Running"),
    ],
)
def test_job_outcome(conditions: list[dict[str, str]], outcome: str) -> None:
    assert job_outcome({"status": {"conditions": conditions}}) == outcome


async def test_timers_run_due_objects_in_order_and_replan() -> None:
    ran: list[str] = []

    def run(key: tuple[str, str, str]) -> float | None:
        ran.append(key[2])
        return 0.05 if key[2] == "again" else None

    timers = Timers(run, logging.getLogger("test"))
    loop = asyncio.get_running_loop().create_task(timers.loop())
    timers.plan(("dm", "n", "later"), 0.1)
    timers.plan(("dm", "n", "now"), 0.0)
    timers.plan(("dm", "n", "never"), 0.0)
    timers.plan(("dm", "n", "never"), None)
    timers.plan(("dm", "n", "again"), 0.02)
    await asyncio.sleep(0.3)
    loop.cancel()
    assert ran[:3] == ["now", "again", "again"]
    assert "later" in ran
    assert "never" not in ran
    assert ran.count("again") >= 3


def test_gauges_follow_the_features_a_monitor_reports() -> None:
    registry = CollectorRegistry()
    gauges = DriftGauges(registry)

    def drifted() -> dict[tuple[str, str], float]:
        return {
            (s.labels["monitor"], s.labels["feature"]): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples
            if s.name == "mlops_drift_feature_drifted"
        }

    gauges.publish("n", "m", report([True, False, False]))
    gauges.publish("n", "other", report([False]))
    assert drifted() == {("m", "x0"): 1.0, ("m", "x1"): 0.0, ("m", "x2"): 0.0, ("other", "x0"): 0.0}
    gauges.publish("n", "m", report([False]))  # fewer features now
    assert drifted() == {("m", "x0"): 0.0, ("other", "x0"): 0.0}
    gauges.publish("n", "m", report([], insufficient=True))
    assert drifted() == {("other", "x0"): 0.0}
    assert (
        registry.get_sample_value("mlops_drift_samples", {"namespace": "n", "monitor": "m"}) == 900
    )
    assert (
        registry.get_sample_value("mlops_drift_dataset_drift", {"namespace": "n", "monitor": "m"})
        is None
    )
    gauges.forget("n", "other")
    assert drifted() == {}
    assert (
        registry.get_sample_value("mlops_drift_share", {"namespace": "n", "monitor": "other"})
        is None
    )
