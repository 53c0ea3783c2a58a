"""Canaries on the real node: the router and the serving pods run for real, traffic
flows through the entry Service's ClusterIP, and the operator walks the steps from
what the canary's pods report at their pod IPs.

- a healthy canary walks setWeight 20 -> analysis -> setWeight 50 -> pause 5s and is
  promoted, the router's table following each step;
- a canary whose model fails on a third of the rows is rolled back by its analysis,
  with the metric, its value and its threshold in status and in a Warning Event;
  the same spec applied again leaves it rolled back; a retry starts it again;
- a header route reaches the canary at weight 0, and a mirror gets its copies while
  callers see only stable's answers.

On kwok's nodes (no pod runs; the rollout's logic and objects are what is tested):
- mode replicas splits by pod counts and reports the share it achieves;
- an operator killed with SIGKILL in the middle of a pause resumes the rollout from
  its status, with no step repeated or skipped.
"""

import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_operator.conditions import parse_time
from mlops_serving import bundle
from mlops_serving.digest import file_digest
from tests.argocd import checked

from .kube import IMAGE, Cluster, iris_bundle, wait_until
from .operator_fixture import Operator, condition, get, start_operator, stop_operator
from .test_operator import (
    absent_as_none,
    bundles,  # noqa: F401 - a fixture
    create,
    deployment,
    kubectl_mlops,
    model_deployment,
    model_version,
    patch,
)

pytestmark = pytest.mark.cluster

SETOSA = [5.1, 3.5, 1.4, 0.2]
BROKEN = [-5.1, 3.5, 1.4, 0.2]  # the faulty model's square root makes it NaN: a 500


def faulty_bundle(out: Path) -> tuple[Path, str]:
    """An iris model that fails on rows with a negative feature (sqrt gives NaN, and
    the classifier refuses NaN): a model bug that only some traffic hits."""
    frame, target = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=500))
    model.fit(frame.to_numpy(), target)
    bundle.build(model, frame, out, name="iris", version="3")
    return out, file_digest(out)


@pytest.fixture
def versions(
    cluster: Cluster, namespace: str, store: tuple[Path, str], artifact: tuple[str, str]
) -> str:
    """iris-1 (stable), iris-2 (a good canary) and iris-3 (a faulty one), served to the
    pods from the store on the bridge."""
    folder, base = store
    builds = {
        "1": (Path(), artifact[1]),
        "2": iris_bundle(folder / "iris-2.tar.gz", version="2", c=0.5),
        "3": faulty_bundle(folder / "iris-3.tar.gz"),
    }
    for number, built in builds.items():
        uri = artifact[0] if number == "1" else f"{base}/iris-{number}.tar.gz"
        create(cluster, namespace, "modelversions", model_version(number, built, uri=uri))
    return namespace


def entry_ip(cluster: Cluster, namespace: str, name: str) -> str | None:
    read = client.CoreV1Api(cluster.api).read_namespaced_service
    service = absent_as_none(read, name, namespace)
    return str(service.spec.cluster_ip) if service else None


def post(
    url: str, row: list[float], headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """A prediction; its status and the track that served it (the router's header)."""
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps({"features": row}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return answer.status, answer.headers.get("x-mlops-track")
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, error.headers.get("x-mlops-track")
    except OSError:
        return 0, None


class Traffic:
    """Callers in the background, through the entry Service: every third row is one the
    faulty model fails on. Keeps what answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: Counter[tuple[int, str | None]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.answers[post(self.url, BROKEN if i % 3 == 0 else SETOSA)] += 1
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def canary_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return (get(cluster, "modeldeployments", namespace, name).get("status") or {}).get(
        "canary"
    ) or {}


def canary_reaches(cluster: Cluster, namespace: str, phase: str, what: str) -> dict[str, Any]:
    """status.canary of iris once its phase is `phase`."""

    def reached() -> dict[str, Any] | None:
        status = canary_status(cluster, namespace, "iris")
        return status if status.get("phase") == phase else None

    return wait_until(reached, what, timeout=240, interval=0.5)


def router_table(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The table one of the router's pods has in force ({} while none answers)."""
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        namespace, label_selector=f"mlops.dev/deployment={name},mlops.dev/track=router"
    )
    for pod in pods.items:
        if pod.status.pod_ip:
            try:
                with urllib.request.urlopen(
                    f"http://{pod.status.pod_ip}:8080/router/table", timeout=5
                ) as answer:
                    table: dict[str, Any] = json.load(answer)
                    return table
            except (OSError, ValueError):
                continue
    return {}


def router_weight(cluster: Cluster, namespace: str, name: str) -> int | None:
    """The canary weight the router has in force."""
    weight = router_table(cluster, namespace, name).get("canaryWeight")
    return None if weight is None else int(weight)


def on_real_node(name: str, **spec: Any) -> dict[str, Any]:
    return model_deployment(name, image=IMAGE, scheduling={}, **spec)


ANALYSIS = {
    "interval": "5s",
    "minRequests": 10,
    "thresholds": {"errorRate": 0.1, "latencyP99Ms": 2000, "predictionDrift": 5.0},
}


def test_a_healthy_canary_walks_its_steps_and_is_promoted(
    cluster: Cluster, versions: str, operator: Operator, bridge: Any
) -> None:
    namespace = versions
    steps = [
        {"setWeight": 20},
        {"analysis": {"count": 1}},
        {"setWeight": 50},
        {"pause": {"duration": "5s"}},
    ]
    body = on_real_node("iris", canary={"version": "2", "steps": steps, "analysis": ANALYSIS})
    create(cluster, namespace, "modeldeployments", body)
    url = "http://" + wait_until(lambda: entry_ip(cluster, namespace, "iris"), "the entry Service")
    seen: list[tuple[str, int, int | None]] = []
    midway: list[dict[str, Any]] = []

    def watch() -> bool:
        mdep = get(cluster, "modeldeployments", namespace, "iris")
        status = (mdep.get("status") or {}).get("canary") or {}
        phase, weight = status.get("phase", ""), int(status.get("weight", 0))
        if weight == 50 and not midway:
            midway.append(mdep)
        router = router_weight(cluster, namespace, "iris") if phase == "Progressing" else None
        if not seen or seen[-1][:2] != (phase, weight):
            seen.append((phase, weight, router))
        elif router is not None and seen[-1][2] is None:
            seen[-1] = (phase, weight, router)
        return bool(phase == "Promoted")

    with Traffic(url) as traffic:
        wait_until(watch, "the canary to be promoted", timeout=240, interval=0.5)
    phases = [(phase, weight) for phase, weight, _ in seen]
    assert ("Progressing", 20) in phases, seen
    assert ("Progressing", 50) in phases, seen
    assert phases.index(("Progressing", 20)) < phases.index(("Progressing", 50)), seen
    assert phases[-1] == ("Promoted", 100)
    # The router followed each weight the status announced.
    assert all(router == weight for phase, weight, router in seen if router is not None), seen
    said = midway[0]["status"]["canary"].get("message", "")
    checked(midway[0], "Progressing", f"Canary at 50%: {said}")
    # Both tracks answered while the canary ran, and the analysis passed.
    assert {track for (_, track) in traffic.answers} >= {"stable", "canary"}, traffic.answers
    status = canary_status(cluster, namespace, "iris")
    assert any(
        r["metric"] == "errorRate" and r["phase"] == "Successful" for r in status["analysis"]
    )

    # Promoted: the stable track serves version 2 until the spec says so; no canary runs.
    mdep = wait_until(
        lambda: (
            (m := get(cluster, "modeldeployments", namespace, "iris"))
            and m["status"].get("phase") == "Ready"
            and m["status"]["tracks"]["stable"]["version"] == "2"
            and m
        ),
        "stable to serve version 2",
        timeout=120,
    )
    assert "canary" not in mdep["status"]["tracks"]
    checked(mdep, "Healthy")
    assert mdep["status"]["traffic"] == {"stableWeight": 100, "canaryWeight": 0, "mirrorPercent": 0}
    wait_until(lambda: deployment(cluster, namespace, "iris-canary") is None, "the canary to go")
    header, row = cluster.kubectl("get", "mdep", "iris", "-n", namespace).stdout.splitlines()
    assert dict(zip(header.split(), row.split(), strict=False))["STABLE"] == "2"


def test_a_failing_canary_is_rolled_back_and_stays_rolled_back(
    cluster: Cluster, versions: str, operator: Operator, bridge: Any
) -> None:
    namespace = versions
    steps = [{"setWeight": 50}, {"analysis": {"count": 3}}]
    body = on_real_node("iris", canary={"version": "3", "steps": steps, "analysis": ANALYSIS})
    create(cluster, namespace, "modeldeployments", body)
    url = "http://" + wait_until(lambda: entry_ip(cluster, namespace, "iris"), "the entry Service")
    with Traffic(url):
        status = canary_reaches(
            cluster, namespace, "RolledBack", "the faulty canary to be rolled back"
        )
    assert status["weight"] == 0
    # About a third of the canary's requests failed (which third reached it is random).
    found = re.fullmatch(
        r"analysis failed: errorRate was ([\d.]+), over its threshold 0.1", status["message"]
    )
    assert found, status["message"]
    assert 0.15 < float(found[1]) < 0.5, status["message"]
    mdep = wait_until(
        lambda: (
            (m := get(cluster, "modeldeployments", namespace, "iris"))["status"]["phase"]
            == "RolledBack"
            and m
        ),
        "the phase RolledBack",
    )
    healthy = condition(mdep, "CanaryHealthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "RolledBack")
    assert healthy["message"] == status["message"]
    checked(mdep, "Degraded", f"Canary rolled back: {status['message']}")
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=RolledBack", "-o", "json"
    ).stdout
    (event,) = json.loads(events)["items"]
    assert event["type"] == "Warning"
    assert status["message"] in event["message"]
    wait_until(lambda: deployment(cluster, namespace, "iris-canary") is None, "the canary to go")
    assert {post(url, SETOSA)[1] for _ in range(20)} == {None}  # stable alone, no router

    # GitOps applies the spec again, with an unrelated change: still rolled back.
    patch(cluster, namespace, "modeldeployments", "iris", {"spec": {"replicas": 1}})
    generation = get(cluster, "modeldeployments", namespace, "iris")["metadata"]["generation"]
    wait_until(
        lambda: (
            get(cluster, "modeldeployments", namespace, "iris")["status"].get("observedGeneration")
            == generation
        ),
        "the new generation to be observed",
    )
    assert canary_status(cluster, namespace, "iris")["phase"] == "RolledBack"
    assert deployment(cluster, namespace, "iris-canary") is None

    # A person asks for a retry: the rollout starts again from its first step.
    kubectl_mlops(cluster, "retry", "mdep/iris", "-n", namespace)
    wait_until(
        lambda: canary_status(cluster, namespace, "iris").get("phase") == "Progressing",
        "the retried rollout",
    )


def test_header_routes_reach_the_canary_at_weight_zero_and_the_mirror_gets_copies(
    cluster: Cluster, versions: str, operator: Operator, bridge: Any
) -> None:
    namespace = versions
    body = on_real_node(
        "iris",
        canary={"version": "2", "steps": [{"pause": {}}]},
        mirror={"version": "3", "percent": 100},
        traffic={"headerRoutes": [{"header": "x-model-version", "value": "2", "track": "canary"}]},
    )
    create(cluster, namespace, "modeldeployments", body)
    url = "http://" + wait_until(lambda: entry_ip(cluster, namespace, "iris"), "the entry Service")
    wait_until(
        lambda: post(url, SETOSA, {"x-model-version": "2"}) == (200, "canary"),
        "the header route to reach the canary",
        timeout=240,
        interval=1,
    )
    assert canary_status(cluster, namespace, "iris")["weight"] == 0
    # A person pauses it (its step already holds it until promoted): Argo CD shows
    # it Suspended, and routing goes on as before.
    kubectl_mlops(cluster, "pause", "mdep/iris", "-n", namespace)
    paused = wait_until(
        lambda: (
            (m := get(cluster, "modeldeployments", namespace, "iris"))["status"].get("phase")
            == "Paused"
            and m
        ),
        "the canary to be paused",
    )
    checked(paused, "Suspended", "Canary paused: paused by request")
    wait_until(
        lambda: router_table(cluster, namespace, "iris").get("endpoints", {}).get("mirror"),
        "the router to know the mirror's pod",
        timeout=120,
    )
    # The mirror (the faulty model) fails on every copy of these rows; callers see
    # stable's answers only.
    answers = Counter(post(url, BROKEN) for _ in range(30))
    assert answers == {(200, "stable"): 30}, answers

    def mirrored() -> float | None:
        pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
            namespace, label_selector="mlops.dev/deployment=iris,mlops.dev/track=mirror"
        )
        total = 0.0
        for pod in pods.items:
            with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5) as m:
                for line in m.read().decode().splitlines():
                    if line.startswith("mlops_requests_total{") and 'code="500"' in line:
                        total += float(line.rsplit(" ", 1)[1])
        return total if total >= 30 else None

    wait_until(mirrored, "the mirror's 30 copies (each failing there)", timeout=30)


def test_mode_replicas_splits_by_pods_and_reports_the_share_it_achieves(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bundles: dict[str, tuple[Path, str]],  # noqa: F811
) -> None:
    for number in ("1", "2"):
        create(cluster, namespace, "modelversions", model_version(number, bundles[number]))
    steps = [{"setWeight": 30}, {"pause": {}}]
    body = model_deployment(
        "iris", replicas=4, canary={"version": "2", "steps": steps}, traffic={"mode": "replicas"}
    )
    create(cluster, namespace, "modeldeployments", body)

    def split() -> dict[str, Any] | None:
        status = get(cluster, "modeldeployments", namespace, "iris").get("status") or {}
        found = condition({"status": status}, "TrafficSplit")
        return status if found and (status.get("traffic") or {}).get("canaryWeight") else None

    status = wait_until(split, "the split achieved by the pods", timeout=90)
    # 30 % of 4 pods, rounded up, is 2 canary pods beside 3 stable ones: 40 %.
    stable, canary = (
        deployment(cluster, namespace, "iris-stable"),
        deployment(cluster, namespace, "iris-canary"),
    )
    assert (stable.spec.replicas, canary.spec.replicas) == (3, 2)
    assert status["canary"]["weight"] == 30
    assert status["traffic"] == {"stableWeight": 60, "canaryWeight": 40, "mirrorPercent": 0}
    found = condition({"status": status}, "TrafficSplit")
    assert (found["status"], found["reason"]) == ("False", "Approximated")
    entry = client.CoreV1Api(cluster.api).read_namespaced_service("iris", namespace)
    assert entry.spec.selector == {
        "mlops.dev/deployment": "iris",
        "app.kubernetes.io/name": "mlops-serving",
    }
    assert deployment(cluster, namespace, "iris-router") is None


def test_a_rollout_resumes_after_kill_9_without_repeating_or_skipping_a_step(
    cluster: Cluster,
    namespace: str,
    sole_operator: None,
    bundles: dict[str, tuple[Path, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    for number in ("1", "2"):
        create(cluster, namespace, "modelversions", model_version(number, bundles[number]))
    steps = []
    for weight in (10, 30, 60):
        steps += [{"setWeight": weight}, {"pause": {"duration": "4s"}}]
    body = model_deployment("iris", canary={"version": "2", "steps": steps})
    create(cluster, namespace, "modeldeployments", body)
    running = start_operator(cluster, tmp_path / "operator")
    seen: dict[int, set[str]] = {}
    weights: list[int] = []

    def look() -> str:
        status = canary_status(cluster, namespace, "iris")
        if status.get("phase") == "Progressing" and status.get("stepStartedAt"):
            seen.setdefault(int(status["step"]), set()).add(status["stepStartedAt"])
            if not weights or weights[-1] != status["weight"]:
                weights.append(int(status["weight"]))
        return str(status.get("phase", ""))

    try:
        # Killed in the middle of the second pause: its wait is a timer of the dead process.
        wait_until(lambda: look() and 3 in seen, "the second pause", timeout=120, interval=0.2)
        running.process.kill()
        running.process.wait(timeout=10)
        for _ in range(10):
            look()
            time.sleep(0.2)
        running = start_operator(cluster, tmp_path / "again")
        wait_until(lambda: look() == "Promoted", "the promotion", timeout=120, interval=0.2)
    finally:
        stop_operator(running)
    # Each weight in order, none skipped or repeated (0 while the canary was not yet
    # Ready, when a poll caught that: on kwok it can be shorter than a poll).
    assert weights in ([0, 10, 30, 60], [10, 30, 60]), weights
    assert sorted(seen) == [0, 1, 3, 5], seen  # 0: waiting for the canary to be Ready
    assert all(len(starts) == 1 for starts in seen.values()), seen  # no step began twice
    starts = [parse_time(next(iter(seen[step]))) for step in (1, 3, 5)]
    # Each 4 s pause was held in full (stamps are to the second), the killed one too.
    assert all(later - earlier >= 3 for earlier, later in itertools.pairwise(starts)), starts


GATEWAY_API = Path(__file__).parent / "crds" / "gateway-api-v1.6.1" / "httproutes.yaml"


def route_weights(cluster: Cluster, namespace: str) -> dict[str, int] | None:
    try:
        route = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "iris"
        )
    except client.ApiException:
        return None
    default = route["spec"]["rules"][-1]
    return {ref["name"]: ref["weight"] for ref in default["backendRefs"]}


def test_mode_gateway_api_writes_a_weighted_http_route_the_real_api_accepts(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bundles: dict[str, tuple[Path, str]],  # noqa: F811
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(GATEWAY_API))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/httproutes.gateway.networking.k8s.io",
    )  # fmt: skip
    for number in ("1", "2"):
        create(cluster, namespace, "modelversions", model_version(number, bundles[number]))
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    body = model_deployment(
        "iris",
        canary={"version": "2", "steps": steps},
        mirror={"version": "2", "percent": 10},
        traffic={
            "mode": "gatewayAPI",
            "gateway": {"name": "web", "namespace": "edge"},
            "headerRoutes": [{"header": "x-model-version", "value": "2", "track": "canary"}],
        },
    )
    create(cluster, namespace, "modeldeployments", body)
    twenty = {"iris-stable": 80, "iris-canary": 20}
    wait_until(lambda: route_weights(cluster, namespace) == twenty, "the route at 20 %")
    route = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "iris"
    )
    assert route["spec"]["parentRefs"][0]["name"] == "web"
    assert route["spec"]["parentRefs"][0]["namespace"] == "edge"
    header_rule, default = route["spec"]["rules"]
    assert header_rule["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-model-version", "value": "2"}
    ]
    assert header_rule["backendRefs"][0]["name"] == "iris-canary"
    (mirror,) = default["filters"]
    assert mirror["requestMirror"]["backendRef"]["name"] == "iris-mirror"
    assert mirror["requestMirror"]["percent"] == 10
    assert deployment(cluster, namespace, "iris-router") is None

    kubectl_mlops(cluster, "promote", "mdep/iris", "-n", namespace)
    sixty = {"iris-stable": 40, "iris-canary": 60}
    wait_until(lambda: route_weights(cluster, namespace) == sixty, "the route at 60 %")
    kubectl_mlops(cluster, "promote-full", "mdep/iris", "-n", namespace)
    wait_until(
        lambda: route_weights(cluster, namespace) == {"iris-stable": 100},
        "the route to stable alone, which serves version 2",
        timeout=90,
    )
    assert canary_status(cluster, namespace, "iris")["phase"] == "Promoted"
