"""ModelDeployments whose pods really run: the local plane's real node (kubelet,
containerd, runc) runs the serving image, its readiness is the image's own probe,
and predictions travel through kube-proxy's ClusterIPs.

The artifacts are served over HTTP from the node's address on the plane's bridge,
where the pods (and the operator, which verifies them) fetch them. Tests dial only
that bridge: the node's pod IPs and ClusterIPs. Without a real node (`hack/cluster.sh
up --no-real-node`, or a cluster of one's own) they skip, unless
MLOPS_REQUIRE_REAL_NODE=1 (CI).
"""

import ipaddress
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.constants import LABEL_DEPLOYMENT

from .kube import IMAGE, REAL_NODE, Bridge, Cluster, wait_until
from .objects import create, model_deployment, model_version, ready
from .operator_fixture import Operator

pytestmark = pytest.mark.cluster

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    """The test's namespace, under PodSecurity `restricted`, enforced."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    return namespace


def http_json(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def in_pod(cluster: Cluster, namespace: str, pod: str, script: str) -> str:
    """Run Python in the serving container (kubectl exec, through the kubelet)."""
    return cluster.kubectl(
        "exec", "-n", namespace, pod, "-c", "serving", "--", "python3", "-c", script
    ).stdout.strip()


def serving_pods(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    selector = f"{LABEL_DEPLOYMENT}={name}"
    return list(
        client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector=selector).items
    )


def deploy(
    cluster: Cluster, namespace: str, artifact: tuple[str, str], name: str, **spec: Any
) -> float:
    """Register iris-1 from the HTTP artifact, deploy it on the real node, and wait for
    Ready; the seconds from the ModelDeployment's creation to Ready."""
    uri, digest = artifact
    version = model_version("1", (Path(), digest), uri=uri)
    create(cluster, namespace, "modelversions", version)
    # No kwok toleration: the pods go to the real node.
    body = model_deployment(name, image=IMAGE, scheduling={}, **spec)
    started = time.monotonic()
    create(cluster, namespace, "modeldeployments", body)

    try:
        wait_until(
            lambda: ready(cluster, namespace, name),
            f"ModelDeployment {name} Ready on the real node",
            timeout=120,
        )
    except AssertionError:
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
        events = cluster.kubectl("get", "events", "-n", namespace).stdout
        raise AssertionError(f"not Ready:\n{pods}\n{events}") from None
    return time.monotonic() - started


def service_ip(cluster: Cluster, namespace: str, name: str) -> str:
    service = client.CoreV1Api(cluster.api).read_namespaced_service(f"{name}-stable", namespace)
    return str(service.spec.cluster_ip)


def predict_via(url: str, row: list[float]) -> Any:
    """A prediction through a ClusterIP; kube-proxy may take a moment to program a
    Service whose pods just turned Ready."""

    def answer() -> Any:
        try:
            status, body = http_json(f"{url}/predict", {"features": row})
        except OSError:
            return None
        assert status == 200, body
        return body

    return wait_until(answer, f"a prediction from {url}", timeout=30)["prediction"]


def test_pods_run_the_serving_image_and_answer_through_the_service(
    cluster: Cluster, restricted: str, operator: Operator, artifact: tuple[str, str],
    bridge: Bridge,
) -> None:  # fmt: skip
    namespace = restricted
    seconds = deploy(cluster, namespace, artifact, "iris", replicas=2)
    print(f"ModelDeployment applied -> Ready on the real node: {seconds:.1f} s")
    pods = serving_pods(cluster, namespace, "iris")
    assert len(pods) == 2
    addresses = [str(each.status.pod_ip) for each in pods]
    for each, address in zip(pods, addresses, strict=True):
        assert each.spec.node_name == REAL_NODE
        assert ipaddress.IPv4Address(address) in bridge.pods
        (serving,) = each.status.container_statuses or []
        assert (serving.ready, serving.started, serving.restart_count) == (True, True, 0)
        # The readiness the kubelet saw is the image's own route, answering for real.
        assert http_json(f"http://{address}:8080/v2/health/ready")[0] == 200

    cluster_ip = service_ip(cluster, namespace, "iris")
    assert ipaddress.IPv4Address(cluster_ip) not in bridge.pods
    assert predict_via(f"http://{cluster_ip}", SETOSA) == 0
    assert predict_via(f"http://{cluster_ip}", VIRGINICA) == 2

    # From inside a pod: the Service's ClusterIP, through kube-proxy's rules.
    pod = str(pods[0].metadata.name)
    script = (
        "import json, urllib.request as u; r = u.Request("
        f"'http://{cluster_ip}/predict', data=json.dumps({{'features': {VIRGINICA}}}).encode(),"
        " headers={'Content-Type': 'application/json'});"
        " print(json.load(u.urlopen(r, timeout=10))['prediction'])"
    )
    assert in_pod(cluster, namespace, pod, script) == "2"

    # Restricted, for real: the image's user, a read-only root, /tmp writable.
    assert in_pod(cluster, namespace, pod, "import os; print(os.getuid())") == "65532"
    written = in_pod(
        cluster, namespace, pod,
        "import os\ntry:\n open('/opt/x', 'w')\nexcept OSError as e:\n print(e.strerror)\n"
        "open('/tmp/x', 'w').write('ok'); print(open('/tmp/x').read())",
    )  # fmt: skip
    assert written.splitlines() == ["Read-only file system", "ok"]

    logs = cluster.kubectl("logs", "-n", namespace, pod, "-c", "serving").stdout
    assert "verified iris 1: sklearn" in logs, logs

    # Capture: the three predictions, binned on the pods that served them (their
    # workers publish to each other every 2 s).
    def captured() -> int | None:
        rows = 0
        for address in addresses:
            status, view = http_json(f"http://{address}:8080/v2/capture")
            assert status == 200, view
            rows += sum(int(w["rows"]) for w in view["windows"])
        return rows if rows == 3 else None

    wait_until(captured, "the 3 predictions in the pods' capture windows", timeout=30)


def test_bearer_auth_is_enforced_inside_the_cluster(
    cluster: Cluster, namespace: str, operator: Operator, artifact: tuple[str, str]
) -> None:
    token = "s3cret-token-for-iris"
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="iris-token"), string_data={"token": token}
        ),
    )
    auth = {"authSecretRef": {"name": "iris-token", "key": "token"}}
    deploy(cluster, namespace, artifact, "guarded", serving=auth)
    (pod,) = serving_pods(cluster, namespace, "guarded")
    cluster_ip = service_ip(cluster, namespace, "guarded")
    script = (
        "import json, sys, urllib.request as u, urllib.error as e\n"
        "for h in ({}, {'Authorization': 'Bearer " + token + "'}):\n"
        f" r = u.Request('http://{cluster_ip}/predict', data=json.dumps({{'features': {SETOSA}}})"
        ".encode(), headers={'Content-Type': 'application/json', **h})\n"
        " try:\n  print(u.urlopen(r, timeout=10).status)\n"
        " except e.HTTPError as x:\n  print(x.code)\n"
    )
    answers = wait_until(
        lambda: in_pod(cluster, namespace, str(pod.metadata.name), script).split() or None,
        "answers through the guarded Service",
        timeout=30,
    )
    assert answers == ["401", "200"]
