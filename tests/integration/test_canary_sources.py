"""Canary analysis from the sources other than the pods, on the real node, each
judging the canary against the stable track over the same span:

- prometheus: a real Prometheus server (Debian's) scrapes the tracks' pods at their
  pod IPs, found from the namespace's EndpointSlices and labelled as a
  prometheus-operator ServiceMonitor labels them (namespace, service); the operator
  runs the default PromQL, and a faulty canary's excess of errors over stable rolls
  it back;
- url: the router's own /metrics, behind the entry Service's ClusterIP, gives each
  track's counters; a healthy canary is promoted on them.
"""

import re
from typing import Any

import pytest

from .kube import Cluster, wait_until
from .objects import create, patch
from .operator_fixture import Operator, get
from .prometheus import Prometheus
from .rollouts import Traffic, canary_reaches, entry_ip, on_real_node

pytestmark = pytest.mark.cluster


def test_prometheus_rolls_back_a_canary_that_fails_more_than_stable(
    cluster: Cluster,
    versions: str,
    operator: Operator,
    bridge: Any,
    prometheus: Prometheus,
) -> None:
    namespace = versions
    analysis = {
        "interval": "5s",
        "minRequests": 10,
        "thresholds": {"errorRateIncrease": 0.05},
        "source": {"type": "prometheus", "url": prometheus.url},
    }
    steps = [{"setWeight": 50}, {"analysis": {"count": 3}}]
    body = on_real_node("iris", canary={"version": "3", "steps": steps, "analysis": analysis})
    create(cluster, namespace, "modeldeployments", body)
    url = "http://" + wait_until(lambda: entry_ip(cluster, namespace, "iris"), "the entry Service")
    with Traffic(url):
        status = canary_reaches(
            cluster, namespace, "RolledBack", "the faulty canary to be rolled back"
        )
    # The faulty model fails on the third of the rows it gets; stable on none of them.
    found = re.fullmatch(
        r"analysis failed: errorRateIncrease was ([\d.]+), over its threshold 0.05",
        status["message"],
    )
    assert found, status["message"]
    assert 0.15 < float(found[1]) < 0.5, status["message"]
    (failed,) = [r for r in status["analysis"] if r["phase"] == "Failed"]
    assert failed["stable"] == 0.0  # stable's own error rate, over the same span
    # What the operator judged is what Prometheus scraped from each track's Service (the
    # canary's series went stale with its pods, rolled back: looked up over the past).
    for service in ("iris-canary", "iris-stable"):
        series = prometheus.query(
            f'max_over_time(mlops_requests_total{{namespace="{namespace}",service="{service}"}}[10m])'
        )
        assert series, service


def test_the_routers_metrics_promote_a_healthy_canary(
    cluster: Cluster,
    versions: str,
    operator: Operator,
    bridge: Any,
) -> None:
    namespace = versions
    create(cluster, namespace, "modeldeployments", on_real_node("iris"))
    address = wait_until(lambda: entry_ip(cluster, namespace, "iris"), "the entry Service")
    analysis = {
        "interval": "5s",
        "minRequests": 10,
        "thresholds": {"errorRate": 0.1, "latencyP99Ratio": 50},
        "source": {"type": "url", "url": f"http://{address}/metrics"},
    }
    steps = [{"setWeight": 50}, {"analysis": {"count": 2}}]
    canary = {"version": "2", "steps": steps, "analysis": analysis}
    patch(cluster, namespace, "modeldeployments", "iris", {"spec": {"canary": canary}})
    with Traffic(f"http://{address}"):
        status = canary_reaches(cluster, namespace, "Promoted", "the canary to be promoted")
    results = status["analysis"]
    # The router's counters are read once for a baseline, then judged by difference.
    assert results[0]["phase"] == "Inconclusive"
    assert results[0]["message"].startswith(f"first reading of http://{address}/metrics")
    passed = [r for r in results if r["phase"] == "Successful"]
    assert {r["metric"] for r in passed} == {"errorRate", "latencyP99Ratio"}
    assert all(r["stable"] is not None for r in passed)  # stable, measured alongside
    assert get(cluster, "modeldeployments", namespace, "iris")["status"]["canary"]["weight"] == 100
