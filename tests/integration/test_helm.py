"""The Helm chart on the local plane: its values are checked, it installs under
PodSecurity `restricted`, and its RBAC is enough and no more: the operator, run
with a token of the chart's ServiceAccount, deploys a model in the namespace it
watches, and that account can do nothing in the others.

Most tests run the operator as a process (or a container) here with the chart's
identity, while the session's operator is stopped; the last runs it in-cluster from
the chart, as a real pod on the real node.
"""

import base64
import ipaddress
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .kube import IMAGE, ON_KWOK, REAL_NODE, ROOT, Cluster, iris_bundle, wait_until
from .operator_fixture import condition, get, start_operator, stop_operator
from .test_image import built_image, engine
from .test_operator import create, deployment, model_deployment, model_version, patch, ready
from .test_serving_process import free_port

pytestmark = pytest.mark.cluster
CHART = ROOT / "helm" / "mlops-operator"


def rendered(cluster: Cluster, *values: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", "ops", str(CHART), "-n", "ops", *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_lints_renders_both_scopes_and_checks_its_values(cluster: Cluster) -> None:
    assert "0 chart(s) failed" in cluster.helm("lint", str(CHART)).stdout
    clusterwide = rendered(cluster)
    roles = {d["kind"] for d in clusterwide}
    assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= roles
    assert "Role" not in roles
    scoped = rendered(cluster, "--set", "watchNamespaces={team-a,team-b}")
    namespaced_roles = [d for d in scoped if d["kind"] == "Role"]
    assert sorted(d["metadata"]["namespace"] for d in namespaced_roles) == ["team-a", "team-b"]
    cluster_rules = [d for d in scoped if d["kind"] == "ClusterRole"]
    granted = {
        r
        for role in cluster_rules
        if role["metadata"]["name"] == "ops-mlops-operator-cluster"
        for rule in role["rules"]
        for r in rule["resources"]
    }
    assert "deployments" not in granted
    assert "secrets" not in granted
    for value, field in (
        ("metrics.port=abc", "/metrics/port"),
        ("extraEnv.FOO=1", "FOO"),
        ("watchNamespaces={Bad_Name}", "/watchNamespaces/0"),
        ("logFormat=xml", "/logFormat"),
        ("typo=1", "typo"),
    ):
        refused = cluster.helm("template", "ops", str(CHART), "--set", value, check=False)
        assert refused.returncode != 0, value
        assert field in refused.stderr, refused.stderr


@pytest.fixture(scope="module")
def operator_image() -> str:
    return built_image("operator")


def installed(cluster: Cluster, *values: str) -> Iterator[tuple[str, str]]:
    """The chart installed in a fresh system namespace (PodSecurity `restricted`),
    watching a fresh models namespace; uninstalled afterwards."""
    suffix = secrets.token_hex(3)
    system, models = f"mlops-system-{suffix}", f"models-{suffix}"
    for name in (system, models):
        cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", system, "pod-security.kubernetes.io/enforce=restricted")
    cluster.helm(
        "install", "mlops-operator", str(CHART), "-n", system,
        "--set", f"watchNamespaces={{{models}}}",
        "--set", "image.repository=localhost/mlops-operator", "--set", "image.tag=test",
        *values,
    )  # fmt: skip
    try:
        yield system, models
    finally:
        cluster.helm("uninstall", "mlops-operator", "-n", system, check=False)
        cluster.kubectl("delete", "namespace", system, models, "--wait=false", check=False)


@pytest.fixture
def release(cluster: Cluster, crds: None, sole_operator: None) -> Iterator[tuple[str, str]]:
    """The chart's operator parked on kwok: these tests run the operator as a process
    (or a container here) with the chart's identity."""
    yield from installed(
        cluster,
        "--set-json", f"nodeSelector={json.dumps(ON_KWOK['nodeSelector'])}",
        "--set-json", f"tolerations={json.dumps(ON_KWOK['tolerations'])}",
    )  # fmt: skip


@pytest.fixture
def release_in_cluster(
    cluster: Cluster, crds: None, sole_operator: None, bridge: ipaddress.IPv4Interface
) -> Iterator[tuple[str, str]]:
    """The chart's operator as a real pod on the real node, deploying the serving image."""
    yield from installed(cluster, "--set", f"servingImage={IMAGE}")


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """The admin kubeconfig's server and CA, with a token of `account` instead."""
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    entry = cluster_entry["cluster"]
    if "certificate-authority" in entry:  # embedded, for readers that cannot open the file
        authority = Path(entry.pop("certificate-authority")).read_bytes()
        entry["certificate-authority-data"] = base64.b64encode(authority).decode()
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster_entry],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": account,
                        "context": {"cluster": cluster_entry["name"], "user": account},
                    }
                ],
                "current-context": account,
            }
        )
    )
    return path


def deploy_until_ready(
    cluster: Cluster,
    namespace: str,
    built: tuple[Path, str],
    logs: Callable[[], str],
    timeout: float,
) -> None:
    """Apply ModelVersion iris-1 and ModelDeployment iris; wait for the operator to make
    it Ready (its logs, read after the wait, explain a timeout)."""
    create(cluster, namespace, "modelversions", model_version("1", built))
    create(cluster, namespace, "modeldeployments", model_deployment("iris"))
    try:
        wait_until(lambda: ready(cluster, namespace, "iris"), "iris Ready", timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}; operator log: {logs()}") from None


def test_chart_installs_and_its_rbac_runs_the_operator(
    cluster: Cluster, release: tuple[str, str], tmp_path: Path
) -> None:
    system, models = release
    cluster.kubectl(
        "wait", "deployment/mlops-operator", "-n", system,
        "--for=condition=Available", "--timeout=90s",
    )  # fmt: skip
    account = f"system:serviceaccount:{system}:mlops-operator"
    for verb, resource, namespace, allowed in (
        ("create", "deployments.apps", models, "yes"),
        ("patch", "modeldeployments.mlops.dev/status", models, "yes"),
        ("watch", "pods", models, "yes"),
        ("create", "deployments.apps", "default", "no"),
        ("get", "secrets", "default", "no"),
        ("approve", "modelversions.mlops.dev", models, "no"),
    ):
        answer = cluster.kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, "--as", account, check=False
        ).stdout.strip()
        assert answer == allowed, (verb, resource, namespace, answer)

    built = iris_bundle(tmp_path / "iris-1.tar.gz")
    operator = start_operator(
        cluster,
        tmp_path / "operator",
        KUBECONFIG=str(token_kubeconfig(cluster, system, "mlops-operator", tmp_path / "sa.json")),
        MLOPS_NAMESPACES=json.dumps([models]),
    )
    try:
        deploy_until_ready(cluster, models, built, lambda: operator.logs()[-1500:], 90)
        # A ModelDeployment waits only for a refusal, not for this condition (its pods
        # check the digest themselves), so the condition may land just after Ready.
        try:
            verified = wait_until(
                lambda: condition(
                    get(cluster, "modelversions", models, "iris-1"), "ArtifactVerified"
                ),
                "iris-1 ArtifactVerified",
                30,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; operator log: {operator.logs()[-3000:]}") from None
        assert verified["status"] == "True"
        assert "Forbidden" not in operator.logs()
    finally:
        stop_operator(operator)


def test_operator_image_runs_with_the_charts_identity(
    cluster: Cluster, release: tuple[str, str], operator_image: str, tmp_path: Path
) -> None:
    """operator/Dockerfile's image, run as the chart runs it (its user, read-only root,
    /tmp the only writable path), with the chart's ServiceAccount token."""
    system, models = release
    folder = tmp_path / "models"
    folder.mkdir()
    built = iris_bundle(folder / "iris-1.tar.gz")
    kubeconfig = token_kubeconfig(cluster, system, "mlops-operator", folder / "sa.json")
    for path in (folder, *folder.iterdir()):  # pytest's temporary folders are private
        path.chmod(0o755)
    liveness, metrics = free_port(), free_port()
    started = engine(
        "run", "--detach", "--network=host", "--read-only", "--tmpfs=/tmp",
        f"--volume={folder}:{folder}:ro",
        f"--env=KUBECONFIG={kubeconfig}",
        f"--env=MLOPS_NAMESPACES={json.dumps([models])}",
        f"--env=MLOPS_LIVENESS_PORT={liveness}",
        f"--env=MLOPS_METRICS_PORT={metrics}",
        f"--env=MLOPS_FILE_ARTIFACT_ROOT={folder}",
        operator_image, "--log-format=plain",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    try:
        deploy_until_ready(cluster, models, built, lambda: engine("logs", name).stderr[-1500:], 120)
        assert engine("exec", name, "id", "-u").stdout.strip() == "65532"
        logs = engine("logs", name)
        assert "Forbidden" not in logs.stdout + logs.stderr
    finally:
        engine("rm", "--force", name)


def operator_pod(cluster: Cluster, system: str) -> client.V1Pod | None:
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        system, label_selector="app.kubernetes.io/name=mlops-operator"
    )
    running = [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return running[0] if running else None


def test_operator_runs_in_cluster_from_the_chart_and_survives_its_pod(
    cluster: Cluster,
    release_in_cluster: tuple[str, str],
    artifact: tuple[str, str],
) -> None:
    """The chart's operator, a real pod with the chart's ServiceAccount and nothing
    else, reaches the API through the kubernetes Service and deploys a model whose
    pods really run; its pod killed, the Deployment replaces it and reconciling goes on."""
    system, models = release_in_cluster
    cluster.kubectl(
        "wait", "deployment/mlops-operator", "-n", system,
        "--for=condition=Available", "--timeout=120s",
    )  # fmt: skip
    first = wait_until(lambda: operator_pod(cluster, system), "the operator's pod Ready")
    assert first.spec.node_name == REAL_NODE
    assert first.spec.service_account_name == "mlops-operator"
    uri, digest = artifact
    version = model_version("1", (Path(), digest), uri=uri)
    create(cluster, models, "modelversions", version)
    create(cluster, models, "modeldeployments", model_deployment("iris", scheduling={}))

    def logs() -> str:
        return cluster.kubectl("logs", "-n", system, "deploy/mlops-operator").stdout[-2000:]

    try:
        wait_until(lambda: ready(cluster, models, "iris"), "iris Ready", timeout=120)
    except AssertionError as error:
        raise AssertionError(f"{error}; operator log: {logs()}") from None
    assert "Forbidden" not in logs()

    cluster.kubectl(
        "delete", "pod", "-n", system, str(first.metadata.name), "--grace-period=0", "--force"
    )
    second = wait_until(
        lambda: (p := operator_pod(cluster, system)) and p.metadata.uid != first.metadata.uid and p,
        "a new operator pod, Ready",
        timeout=120,
    )
    assert second.spec.node_name == REAL_NODE
    patch(cluster, models, "modeldeployments", "iris", {"spec": {"replicas": 2}})
    wait_until(
        lambda: (
            (d := deployment(cluster, models, "iris-stable")) is not None
            and d.status.ready_replicas == 2
        ),
        "the new operator pod to scale iris to 2 ready replicas",
        timeout=120,
    )
