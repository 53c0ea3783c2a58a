"""DriftMonitor against the real control plane, reading real serving processes.

Most monitors read `mlops-serve` processes on 127.0.0.1 through source `url` (the
same routes, /v2/profile and /v2/capture, that source `pods` reads at pod IPs); the
last test reads the pods of a ModelDeployment on the local plane's real node."""

import functools
import hashlib
import hmac
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from kubernetes import client
from mlops_contract.digest import file_digest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from mlops_operator.constants import GROUP, VERSION
from mlops_serving import packing
from tests.argocd import checked

from .kube import IMAGE, ON_KWOK, Cluster, wait_until
from .objects import model_version, ready
from .operator_fixture import Operator, condition, custom, get, start_operator, stop_operator
from .processes import SERVE, call, environment, free_port
from .prometheus import Prometheus

pytestmark = pytest.mark.cluster

FEATURES = [f"f{i}" for i in range(6)]
SHIFTED = ("f1", "f4")


def rows(rng: np.random.Generator, count: int, shifted: bool) -> np.ndarray:
    values = rng.normal(0.0, 1.0, (count, len(FEATURES)))
    if shifted:
        for name in SHIFTED:
            values[:, FEATURES.index(name)] += 0.8
    return values


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rows(rng, 5000, shifted=False), columns=FEATURES)
    target = (reference["f0"] + reference["f1"] > 0).astype(int)
    model = LogisticRegression().fit(reference.to_numpy(), target)
    out = tmp_path_factory.mktemp("drift") / "shift-1.tar.gz"
    packing.build(model, reference, out, name="shift", version="1")
    return out, file_digest(out)


def serve(built: tuple[Path, str], directory: Path, shifted: bool) -> tuple[str, Any]:
    """A real mlops-serve on loopback, fed 3000 rows of traffic."""
    port = free_port()
    process = subprocess.Popen(
        SERVE,
        env=environment(built, directory, port, MLOPS_SERVING_WORKERS="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(base), f"mlops-serve on {base}", timeout=60)
    rng = np.random.default_rng(1 if shifted else 2)
    for _ in range(6):
        status, _answer = call(
            f"{base}/predict-batch", {"instances": rows(rng, 500, shifted).tolist()}
        )
        assert status == 200
    settled(base, 3000)
    return base, process


def settled(base: str, rows: int) -> None:
    """Wait until every worker of the server at `base` answers with all `rows`. Workers
    publish their windows to each other every 2 s, so a read answered by one may lack
    its sibling's newest rows until then: once one read shows them all, the
    publishing interval is waited out before all are asked again."""
    wait_until(lambda: _captured(base) == rows, f"{rows} rows captured on {base}", timeout=30)
    time.sleep(2.5)
    for _ in range(4):  # whichever worker answers
        assert _captured(base) == rows


def _captured(base: str) -> int:
    status, view = call(f"{base}/v2/capture")
    assert status == 200, view
    return sum(int(w["rows"]) for w in view["windows"])


def _ready(base: str) -> bool:
    try:
        return call(f"{base}/v2/health/ready")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def servers(
    built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    started = {
        name: serve(built, tmp_path_factory.mktemp(name), shifted=name == "shifted")
        for name in ("steady", "shifted")
    }
    yield {name: base for name, (base, _) in started.items()}
    for _, process in started.values():
        process.terminate()
        process.wait(timeout=30)


class Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/drift", Receiver.received
    server.shutdown()


TRAIN_JOB = {
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "train", "image": "registry.example/train:1"}],
            }
        }
    }
}


def create(cluster: Cluster, namespace: str, plural: str, body: dict[str, Any]) -> None:
    custom(cluster).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def registered(
    cluster: Cluster,
    namespace: str,
    built: tuple[Path, str],
    uri: str | None = None,
    **deployment: Any,
) -> None:
    """The model registered (from `uri`, or the file) and deployed: on kwok, where its
    pods only look Running, unless `deployment` says otherwise."""
    lineage = {"runId": "run-42", "datasetUri": "s3://data/shift.parquet"}
    body = model_version("1", built, uri=uri, model="shift", lineage=lineage)
    create(cluster, namespace, "modelversions", body)
    create(
        cluster,
        namespace,
        "modeldeployments",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "shift"},
            "spec": {
                "model": "shift",
                "stable": {"version": "1"},
                "scheduling": ON_KWOK,
                **deployment,
            },
        },
    )
    wait_until(
        lambda: (
            (get(cluster, "modeldeployments", namespace, "shift").get("status") or {})
            .get("tracks", {})
            .get("stable", {})
            .get("modelVersion")
        ),
        "ModelDeployment shift to resolve its stable track",
        timeout=60,
    )


def on_real_node(
    cluster: Cluster,
    namespace: str,
    built: tuple[Path, str],
    store: tuple[Path, str],
    **deployment: Any,
) -> None:
    """The model registered from the store on the bridge and deployed, Ready, on the
    real node."""
    path, _ = built
    folder, base = store
    shutil.copyfile(path, folder / path.name)
    uri = f"{base}/{path.name}"
    registered(cluster, namespace, built, uri, image=IMAGE, scheduling={}, **deployment)
    wait_until(
        lambda: ready(cluster, namespace, "shift"),
        "ModelDeployment shift Ready on the real node",
        timeout=120,
    )


def monitor(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DriftMonitor",
        "metadata": {"name": name},
        "spec": {
            "deploymentRef": {"name": "shift"},
            "interval": "1h",
            "source": {"type": "url", "url": url},
            "window": {"duration": "1h", "minSamples": 1000},
            # The reservoirs are random samples: at 0.05, one steady run in twenty
            # would alarm. A shift of 0.8 sd over 1000 rows gives p < 1e-50.
            "tests": {"method": "ks", "threshold": 0.001},
            "correction": "bonferroni",
            "driftShare": 0.3,
            **spec,
        },
    }


def judged(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    dm = get(cluster, "driftmonitors", namespace, name)
    found = condition(dm, "DriftDetected")
    return dm if found and found["status"] in ("True", "False", "Unknown") else None


def jobs(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items)


def test_steady_traffic_is_no_drift_and_shifted_features_are_flagged(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    built: tuple[Path, str],
    servers: dict[str, str],
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    registered(cluster, namespace, built)
    key = "webhook-key-9f2"
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="hooks"), string_data={"key": key}),
    )
    url, received = receiver
    create(cluster, namespace, "driftmonitors", monitor("steady", servers["steady"]))
    actions = {
        "webhook": {"url": url, "secretRef": {"name": "hooks", "key": "key"}},
        "retrain": {"cooldown": "1h", "jobTemplate": TRAIN_JOB},
    }
    create(
        cluster, namespace, "driftmonitors", monitor("shifted", servers["shifted"], actions=actions)
    )

    steady = wait_until(lambda: judged(cluster, namespace, "steady"), "steady judged", timeout=60)
    status = steady["status"]
    assert condition(steady, "DriftDetected")["status"] == "False"
    assert condition(steady, "Ready")["status"] == "True"
    assert (status["samples"], status["datasetDrift"], status["driftedFeatures"]) == (
        3000,
        False,
        0,
    )
    assert {f["name"] for f in status["features"]} == set(FEATURES)
    assert all(f["method"] == "ks" and 0 <= f["pValue"] <= 1 for f in status["features"])
    assert all(f["threshold"] == 0.001 for f in status["features"])
    checked(steady, "Healthy", condition(steady, "DriftDetected")["message"])
    custom(cluster).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "driftmonitors", "steady", {"spec": {"suspend": True}}
    )
    checked(get(cluster, "driftmonitors", namespace, "steady"), "Suspended")

    shifted = wait_until(
        lambda: judged(cluster, namespace, "shifted"), "shifted judged", timeout=60
    )
    status = shifted["status"]
    assert condition(shifted, "DriftDetected")["status"] == "True"
    assert sorted(f["name"] for f in status["features"] if f["drifted"]) == list(SHIFTED)
    assert [f["drifted"] for f in status["features"]][:2] == [True, True]  # drifted first
    assert status["datasetDrift"] is True
    assert status["driftShare"] == 0.3333
    assert (status["prediction"]["method"], status["prediction"]["drifted"]) == (
        "jensenshannon",
        True,
    )
    assert len(status["history"]) == 1
    # Argo CD: drift is news, not a fault, unless the monitor asks to be Degraded by it.
    said = f"Drift detected: {condition(shifted, 'DriftDetected')['message']}"
    checked(shifted, "Healthy", said)
    opted_in = {"metadata": {"annotations": {"mlops.dev/argocd-degraded-on-drift": "true"}}}
    custom(cluster).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "driftmonitors", "shifted", opted_in
    )
    checked(get(cluster, "driftmonitors", namespace, "shifted"), "Degraded", said)

    table = cluster.kubectl("get", "dm", "-n", namespace).stdout
    print(table)
    columns = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert columns["shifted"][:3] == ["shift", "stable", "true"]
    assert float(columns["shifted"][3]) == 0.3333
    assert columns["shifted"][4] == "2"
    assert columns["steady"][:3] == ["shift", "stable", "false"]
    assert (float(columns["steady"][3]), columns["steady"][4]) == (0.0, "0")

    check_webhook(received, key, namespace)
    check_retraining_job(cluster, namespace)
    events = client.CoreV1Api(cluster.api).list_namespaced_event(namespace).items
    reasons = sorted((e.involved_object.name, e.reason, e.type) for e in events)
    # A first verdict of no drift is no news: the steady monitor posts nothing.
    assert [r for r in reasons if r[0] in ("shifted", "steady")] == [
        ("shifted", "DriftDetected", "Warning"),
        ("shifted", "RetrainStarted", "Normal"),
    ]
    gauges = drifted_gauges(operator, namespace, "shifted")
    # f1 feeds the model, so its predictions drift too.
    assert gauges == {name: float(name in SHIFTED) for name in FEATURES} | {"prediction": 1.0}


def check_webhook(received: list[tuple[dict[str, str], bytes]], key: str, namespace: str) -> None:
    """The webhook got the report once, signed with the key from the Secret."""
    wait_until(lambda: received, "the webhook receiver to get the report", timeout=30)
    ((headers, body),) = received
    stamp = headers["X-Mlops-Timestamp"]
    expected = hmac.new(key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Mlops-Signature-256"], f"sha256={expected}")
    payload = json.loads(body)
    assert payload["datasetDrift"] is True
    assert payload["monitor"] == {"namespace": namespace, "name": "shifted"}


def check_retraining_job(cluster: Cluster, namespace: str) -> None:
    """One retraining Job, with the report mounted and the lineage in its environment."""
    (job,) = wait_until(lambda: jobs(cluster, namespace), "the retraining Job", timeout=30)
    name = str(job.metadata.name)
    assert job.metadata.owner_references[0].name == "shifted"
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["MLOPS_MODEL_VERSION"] == "shift-1"
    assert env["MLOPS_RUN_ID"] == "run-42"
    assert env["MLOPS_DATASET_URI"] == "s3://data/shift.parquet"
    assert env["MLOPS_DRIFT_REPORT"] == "/etc/mlops/drift/report.json"
    report = client.CoreV1Api(cluster.api).read_namespaced_config_map(name, namespace)
    assert json.loads(report.data["report.json"])["drifted"] == 2
    status = get(cluster, "driftmonitors", namespace, "shifted")["status"]
    assert status["retrain"]["job"] == name


def drifted_gauges(operator: Operator, namespace: str, monitor_name: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        exposition = answer.read().decode()
    return {
        s.labels["feature"]: s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "mlops_drift_feature_drifted"
        and (s.labels["namespace"], s.labels["monitor"]) == (namespace, monitor_name)
    }


def test_too_few_rows_and_an_unreachable_source_say_so(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    built: tuple[Path, str],
    servers: dict[str, str],
) -> None:
    registered(cluster, namespace, built)
    thin = monitor("thin", servers["steady"], window={"duration": "1h", "minSamples": 100000})
    closed = monitor("closed", f"http://127.0.0.1:{free_port()}")
    for body in (thin, closed):
        create(cluster, namespace, "driftmonitors", body)
    thin_status = wait_until(lambda: judged(cluster, namespace, "thin"), "thin judged", timeout=60)
    drift = condition(thin_status, "DriftDetected")
    assert (drift["status"], drift["reason"]) == ("Unknown", "InsufficientData")
    assert "datasetDrift" not in thin_status["status"]
    assert thin_status["status"]["features"] == []

    def refused() -> dict[str, Any] | None:
        ready = condition(get(cluster, "driftmonitors", namespace, "closed"), "Ready")
        return ready if ready and ready["status"] == "False" else None

    ready = wait_until(refused, "the unreachable source to be reported", timeout=60)
    assert ready["reason"] == "SourceUnreachable"
    assert "/v2/profile" in ready["message"]
    checked(get(cluster, "driftmonitors", namespace, "closed"), "Degraded", ready["message"])


def test_retraining_starts_once_per_cooldown_across_restarts(
    cluster: Cluster,
    namespace: str,
    sole_operator: None,
    built: tuple[Path, str],
    servers: dict[str, str],
    tmp_path: Path,
) -> None:
    registered_operator = start_operator(cluster, tmp_path / "operator")
    try:
        registered(cluster, namespace, built)
        actions = {"retrain": {"cooldown": "1h", "jobTemplate": TRAIN_JOB}}
        create(
            cluster,
            namespace,
            "driftmonitors",
            monitor("retrain", servers["shifted"], actions=actions),
        )
        wait_until(lambda: jobs(cluster, namespace), "the first retraining Job", timeout=60)
        # The Job comes before the run's status: killed in between, the first run would
        # leave no history (the 45m round below makes that case on purpose).
        wait_until(
            lambda: (get(cluster, "driftmonitors", namespace, "retrain").get("status") or {}).get(
                "history"
            ),
            "the first run recorded",
            timeout=60,
        )
        for interval in ("30m", "45m"):
            # A new spec is due at once; so is every monitor after a crash.
            registered_operator.kill()
            if interval == "45m":
                # As if the operator had died between creating the Job and recording
                # it: the Job it owns still holds the cooldown.
                custom(cluster).patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    "driftmonitors",
                    "retrain",
                    {"status": {"retrain": None}},
                )
            custom(cluster).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "driftmonitors",
                "retrain",
                {"spec": {"interval": interval}},
            )
            registered_operator.spawn()

            def ran_again() -> bool:
                dm = get(cluster, "driftmonitors", namespace, "retrain")
                status = dm.get("status") or {}
                return bool(status.get("observedGeneration") == dm["metadata"]["generation"])

            wait_until(ran_again, f"a run with interval {interval}", timeout=60)
        assert len(jobs(cluster, namespace)) == 1
        status = get(cluster, "driftmonitors", namespace, "retrain")["status"]
        assert len(status["history"]) == 3
    finally:
        stop_operator(registered_operator)


def test_pods_source_reads_every_real_pod_of_the_track(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    built: tuple[Path, str],
    store: tuple[Path, str],
) -> None:
    """Source `pods` (the default): two real serving pods on the real node, each fed half
    of the shifted traffic; the monitor reads both at their pod IPs and merges them."""
    folder, base = store
    on_real_node(cluster, namespace, built, store, replicas=2)
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        namespace, label_selector="mlops.dev/deployment=shift"
    )
    bases = [f"http://{p.status.pod_ip}:8080" for p in pods.items]
    assert len(bases) == 2
    rng = np.random.default_rng(3)
    for pod_base in bases:  # half the traffic each, so the verdict needs both
        for _ in range(3):
            batch = {"instances": rows(rng, 500, shifted=True).tolist()}
            status, answer = call(f"{pod_base}/predict-batch", batch)
            assert status == 200, answer
    for pod_base in bases:
        settled(pod_base, 1500)

    body = monitor("live", "unused")
    body["spec"]["source"] = {"type": "pods"}
    create(cluster, namespace, "driftmonitors", body)
    live = wait_until(lambda: judged(cluster, namespace, "live"), "live judged", timeout=60)
    assert condition(live, "Ready")["status"] == "True", live["status"]
    assert condition(live, "DriftDetected")["status"] == "True", live["status"]
    assert live["status"]["samples"] == 3000
    assert sorted(f["name"] for f in live["status"]["features"] if f["drifted"]) == list(SHIFTED)

    # Batch monitoring: files of rows, judged against the profile the pods serve.
    rng = np.random.default_rng(4)
    for name, shifted in (("steady.csv", False), ("shifted.parquet", True)):
        frame = pd.DataFrame(rows(rng, 2000, shifted), columns=FEATURES)
        if name.endswith(".csv"):
            frame.to_csv(folder / name, index=False)
        else:
            frame.to_parquet(folder / name)
        body = monitor(name.split(".")[0], f"{base}/{name}")
        body["spec"]["source"]["format"] = name.split(".")[1]
        create(cluster, namespace, "driftmonitors", body)
    for name, drifted in (("steady", []), ("shifted", list(SHIFTED))):
        found = wait_until(
            functools.partial(judged, cluster, namespace, name), f"{name} judged", timeout=60
        )
        assert condition(found, "Ready")["status"] == "True", found["status"]
        assert found["status"]["samples"] == 2000
        assert sorted(f["name"] for f in found["status"]["features"] if f["drifted"]) == drifted


def test_a_monitor_url_elsewhere_never_gets_the_serving_token(
    cluster: Cluster, namespace: str, operator: Operator, built: tuple[Path, str]
) -> None:
    """The serving token is the ModelDeployment's: a DriftMonitor whose author points
    `source.url` at a server of theirs gets a refusal, and the server gets nothing."""
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="serving"), string_data={"token": "s3cret-t0ken"}
        ),
    )
    registered(
        cluster, namespace, built, serving={"authSecretRef": {"name": "serving", "key": "token"}}
    )
    asked: list[dict[str, str]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(dict(self.headers))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        create(cluster, namespace, "driftmonitors", monitor("collector", url))
        refused = wait_until(
            lambda: (
                (dm := get(cluster, "driftmonitors", namespace, "collector"))
                .get("status", {})
                .get("message")
                and dm
            ),
            "the monitor to report why it did not read",
            timeout=60,
        )
        assert (
            "spec.source.url: 127.0.0.1 is not the Service shift-stable"
            in (refused["status"]["message"])
        )
        assert condition(refused, "Ready")["status"] == "False"
        assert asked == []
    finally:
        server.shutdown()
        server.server_close()


def test_rollback_canary_rolls_back_a_drifting_canary_through_its_rollout(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    built: tuple[Path, str],
    servers: dict[str, str],
) -> None:
    create(cluster, namespace, "modelversions", model_version("2", built, model="shift"))
    canary = {"version": "2", "steps": [{"setWeight": 50}, {"pause": {}}]}
    registered(cluster, namespace, built, canary=canary)

    def rollout() -> dict[str, Any]:
        status = get(cluster, "modeldeployments", namespace, "shift").get("status") or {}
        return status.get("canary") or {}

    wait_until(lambda: rollout().get("phase") == "Progressing", "the canary's rollout", timeout=90)
    spec_before = get(cluster, "modeldeployments", namespace, "shift")["spec"]
    # The canary's traffic (here: a server fed shifted rows) drifts from its profile.
    body = monitor("canary", servers["shifted"], track="canary", actions={"rollbackCanary": True})
    create(cluster, namespace, "driftmonitors", body)
    rolled_back = wait_until(
        lambda: (s := rollout()).get("phase") == "RolledBack" and s,
        "the drifting canary to be rolled back",
        timeout=90,
    )
    assert rolled_back["weight"] == 0
    assert rolled_back["message"] == (
        "aborted: DriftMonitor canary found dataset drift (2 of 6 features drifted)"
    )
    mdep = get(cluster, "modeldeployments", namespace, "shift")
    assert mdep["spec"] == spec_before  # steered through the rollout, never the spec
    dm = get(cluster, "driftmonitors", namespace, "canary")
    assert dm["status"]["canaryAction"]["action"] == "rollback"
    assert dm["status"]["canaryAction"]["digest"] == rolled_back["digest"]
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=CanaryRolledBack",
        "-o",
        "json",
    ).stdout
    (event,) = json.loads(events)["items"]
    assert event["involvedObject"]["name"] == "canary"
    assert "asked ModelDeployment shift to abort its canary" in event["message"]


def test_prometheus_source_reads_the_bins_the_pods_export(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    built: tuple[Path, str],
    store: tuple[Path, str],
    prometheus: Prometheus,
) -> None:
    """Source `prometheus`: a real serving pod exports its captured bin counts, a real
    Prometheus scrapes them, and the monitor judges the increase over its window."""
    on_real_node(cluster, namespace, built, store, serving={"capture": {"metrics": True}})
    selector = f'namespace="{namespace}",service="shift-stable"'

    def scraped_rows() -> float | None:
        found = prometheus.query(f"sum(mlops_capture_binned_rows_total{{{selector}}})")
        return float(found[0]["value"][1]) if found else None

    # The counters are scraped at zero before any traffic, so increase() counts it all.
    wait_until(lambda: scraped_rows() == 0, "Prometheus to scrape the zero counters", timeout=60)
    (pod,) = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector="mlops.dev/deployment=shift")
        .items
    )
    rng = np.random.default_rng(5)
    for _ in range(6):
        batch = {"instances": rows(rng, 500, shifted=True).tolist()}
        status, answer = call(f"http://{pod.status.pod_ip}:8080/predict-batch", batch)
        assert status == 200, answer
    wait_until(lambda: scraped_rows() == 3000, "Prometheus to scrape 3000 rows", timeout=60)

    body = monitor("scraped", "unused")
    body["spec"]["source"] = {"type": "prometheus", "url": prometheus.url}
    # Bin counts only reach Prometheus: chi-square on the profile's bins, not KS.
    body["spec"]["tests"] = {"method": "chi2", "threshold": 0.001}
    create(cluster, namespace, "driftmonitors", body)
    scraped = wait_until(lambda: judged(cluster, namespace, "scraped"), "judged", timeout=60)
    assert condition(scraped, "Ready")["status"] == "True", scraped["status"]
    assert condition(scraped, "DriftDetected")["status"] == "True", scraped["status"]
    assert sorted(f["name"] for f in scraped["status"]["features"] if f["drifted"]) == list(SHIFTED)
    assert {f["method"] for f in scraped["status"]["features"]} == {"chi2"}
    # increase() extrapolates to the end of the window: over a series seconds old, by up
    # to a scrape interval's share of its life (over an hour's window, a fraction of 1%).
    assert scraped["status"]["samples"] >= 3000, scraped["status"]["samples"]
