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
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.conditions import parse_time
from tests.argocd import checked

from .kube import Cluster, wait_until
from .objects import (
    create,
    deployment,
    kubectl_mlops,
    model_deployment,
    model_version,
    patch,
)
from .operator_fixture import Operator, condition, get, start_operator, stop_operator
from .rollouts import (
    BROKEN,
    SETOSA,
    Traffic,
    canary_reaches,
    canary_status,
    entry_ip,
    on_real_node,
    post,
    router_table,
    router_weight,
)

pytestmark = pytest.mark.cluster


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
    bundles: dict[str, tuple[Path, str]],
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
    bundles: dict[str, tuple[Path, str]],
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
    # 0 (waiting for the canary to be Ready) only where a poll caught it, as above.
    assert sorted(seen) in ([0, 1, 3, 5], [1, 3, 5]), seen
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
    bundles: dict[str, tuple[Path, str]],
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
