"""DriftMonitor's pure parts: scheduling, status, conditions, signatures, the Job, the
timer loop and the gauges."""

import asyncio
import hashlib
import hmac
import http.server
import json
import logging
import threading
from typing import Any

import numpy as np
import pytest
from mlops_contract.profile import build_profile
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator import kube
from mlops_operator.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, Retrain
from mlops_operator.conditions import parse_time, seconds
from mlops_operator.drift import DriftReport, FeatureDrift, detect_capture_drift
from mlops_operator.drift import Tests as DriftTests
from mlops_operator.driftmonitor import (
    MAX_HISTORY,
    SourceError,
    canary_command,
    drift_conditions,
    due_in,
    job_outcome,
    read_capture,
    read_pods,
    read_rows,
    render_retrain_job,
    sign,
    status_of,
)
from mlops_operator.metrics import DriftGauges
from mlops_operator.settings import OperatorSettings
from mlops_operator.timers import Timers
from mlops_serving.capture import Capture

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
        (  # intervals under MIN_INTERVAL count as MIN_INTERVAL
            {
                **dm(lastRun="2026-12-02T11:59:55Z", observedGeneration=2),
                "spec": {"interval": "1s"},
            },
            5.0,
        ),
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


def actions(**chosen: bool) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(
        {"deploymentRef": {"name": "d"}, "track": "canary", "actions": chosen}
    )


CANARY = {"phase": "Progressing", "digest": "sha256:" + "c" * 64}
STEERED = {"action": "rollback", "digest": CANARY["digest"], "time": "2026-12-02T11:00:00Z"}


@pytest.mark.parametrize(
    ("spec", "canary", "done", "command"),
    [
        (actions(rollbackCanary=True), CANARY, {}, "abort"),
        (actions(pauseCanary=True), CANARY, {}, "pause"),
        (actions(), CANARY, {}, None),
        # A paused canary can still be rolled back; pausing it again says nothing new.
        (actions(rollbackCanary=True), {**CANARY, "phase": "Paused"}, {}, "abort"),
        (actions(pauseCanary=True), {**CANARY, "phase": "Paused"}, {}, None),
        # Over already, or never begun.
        (actions(rollbackCanary=True), {**CANARY, "phase": "Promoted"}, {}, None),
        (actions(rollbackCanary=True), {**CANARY, "phase": "RolledBack"}, {}, None),
        (actions(rollbackCanary=True), {}, {}, None),
        # Steered once: a person's resume or retry is not fought; another canary is new.
        (actions(rollbackCanary=True), CANARY, STEERED, None),
        (
            actions(rollbackCanary=True),
            {**CANARY, "digest": "sha256:" + "d" * 64},
            STEERED,
            "abort",
        ),
    ],
)
def test_canary_command(
    spec: DriftMonitorSpec, canary: dict[str, Any], done: dict[str, Any], command: str | None
) -> None:
    assert canary_command(spec, canary, done) == command


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


def test_pods_source_merges_every_ready_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three pods, as servers on three loopback addresses at one port: the windows of
    the two that share a profile add up, the third (another model version, mid-rollout)
    is left out, its profile is read once, from a pod of the version merged, and the
    token goes with every request."""
    rng = np.random.default_rng(0)
    profile = build_profile({"a": rng.normal(size=3000), "b": rng.normal(size=3000)})
    other = build_profile({"a": rng.normal(5, 1, 3000), "b": rng.normal(size=3000)})
    captures = []
    for seed, shift in ((1, 0.0), (2, 1.0), (3, 0.0)):
        capture = Capture(
            other if seed == 3 else profile,
            sample_rate=1,
            window_seconds=60,
            windows=5,
            reservoir=200,
            seed=seed,
            clock=lambda: 600.0,  # one window, whenever the test runs
        )
        capture.record(rng.normal(shift, 1, (400, 2)), None)
        captures.append(capture)
    asked: list[tuple[str, str, str | None]] = []  # (pod, path, Authorization)

    def handler(capture: Capture) -> type[http.server.BaseHTTPRequestHandler]:
        class Pod(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                asked.append(
                    (self.server.server_address[0], path, self.headers.get("Authorization"))
                )
                body = (
                    capture.profile.model_dump()
                    if self.path == "/v2/profile"
                    else {
                        "model": "m",
                        "version": "2" if capture.profile is other else "1",
                        "windowSeconds": 60,
                        "features": ["a", "b"],
                        "windows": [w.model_dump() for w in capture.snapshot()],
                    }
                )
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                return

        return Pod

    first = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(captures[0]))
    port = first.server_address[1]
    second = http.server.ThreadingHTTPServer(("127.0.0.2", port), handler(captures[1]))
    third = http.server.ThreadingHTTPServer(("127.0.0.3", port), handler(captures[2]))
    servers = (first, second, third)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    addresses = ["127.0.0.3", "127.0.0.1", "127.0.0.2"]
    monkeypatch.setattr(kube, "ready_pod_ips", lambda namespace, selector: addresses)
    try:
        window = read_pods(
            "n", "d", "stable", since=0, token="t0k", timeout=5, may_dial=lambda _: True, port=port
        )
        with pytest.raises(SourceError, match=r"no Ready pod of d .* allowed pod networks"):
            read_pods("n", "d", "stable", since=0, token=None, timeout=5, may_dial=lambda _: False)
    finally:
        for server in servers:
            server.shutdown()
    ((merged),) = window.capture.windows
    assert merged.rows == 800
    assert len(merged.reservoir) == 200
    assert sorted(asked) == [
        ("127.0.0.1", "/v2/capture", "Bearer t0k"),
        ("127.0.0.1", "/v2/profile", "Bearer t0k"),
        ("127.0.0.2", "/v2/capture", "Bearer t0k"),
        ("127.0.0.3", "/v2/capture", "Bearer t0k"),
    ]
    assert window.profile == profile
    drift = detect_capture_drift(window.profile, window.capture, tests=DriftTests("ks"), seed=0)
    assert [f.drifted for f in drift.features] == [True, True]  # half the traffic is shifted


@pytest.mark.parametrize(
    ("networks", "address", "allowed"),
    [
        ("[]", "10.244.0.7", True),
        ('["10.88.0.0/16"]', "10.244.0.7", False),
        ('["10.88.0.0/16"]', "10.88.3.4", True),
        ('["10.88.0.0/16", "fd00::/8"]', "fd00::1", True),
    ],
)
def test_pod_networks_bound_what_the_operator_dials(
    monkeypatch: pytest.MonkeyPatch, networks: str, address: str, allowed: bool
) -> None:
    monkeypatch.setenv("MLOPS_POD_NETWORKS", networks)
    assert OperatorSettings().may_dial(address) is allowed


@pytest.fixture
def files(tmp_path: Any) -> Any:
    """A loopback file server over tmp_path; its base URL."""
    import functools  # noqa: PLC0415

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            return

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_file_source_reads_csv_and_parquet_and_names_the_field_when_it_cannot(
    files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd  # noqa: PLC0415

    folder, base = files
    frame = pd.DataFrame({"x1": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    frame.to_csv(folder / "rows.csv", index=False)
    frame.to_parquet(folder / "rows.parquet")
    (folder / "garbage.parquet").write_bytes(b"\x00not parquet")
    for form in ("csv", "parquet"):
        read = read_rows(f"{base}/rows.{form}", form, 5)
        assert read.to_dict("list") == frame.to_dict("list")
    with pytest.raises(SourceError, match=r"^spec.source.url: .*garbage.parquet is not a parquet"):
        read_rows(f"{base}/garbage.parquet", "parquet", 5)
    with pytest.raises(SourceError, match=r"^spec.source.url: GET .*absent.csv: HTTP 404"):
        read_rows(f"{base}/absent.csv", "csv", 5)
    monkeypatch.setattr("mlops_operator.driftmonitor.MAX_FILE", 16)
    with pytest.raises(
        SourceError, match=r"^spec.source.url: GET .*rows.csv: answer larger than 16 bytes"
    ):
        read_rows(f"{base}/rows.csv", "csv", 5)


def test_a_capture_that_is_not_one_names_the_field_and_never_its_value(files: Any) -> None:
    """A pod's answer is checked before it is merged: the error says where it is wrong,
    and leaves out what is there (a capture's rows are users' data)."""
    folder, base = files
    (folder / "v2").mkdir()
    answer = folder / "v2" / "capture"
    window = {"start": 0, "rows": "alice@example.com", "seen": 1, "features": {}}
    answer.write_text(json.dumps({"windowSeconds": 60, "features": [], "windows": [window]}))
    with pytest.raises(
        SourceError, match=r"not a capture view: windows\.0\.rows: Input should"
    ) as raised:
        read_capture(base, 0, None, 5)
    assert "alice" not in str(raised.value)
    answer.write_text("[]")
    with pytest.raises(SourceError, match=r"not a capture view: the body: Input should"):
        read_capture(base, 0, None, 5)
