"""The Helm chart on the local plane: it lints strictly, its values are checked and
its renderings are snapshots; it installs under PodSecurity `restricted`; its RBAC is
enough and no more (the operator, run with a token of the chart's ServiceAccount,
runs the whole flow, and that account's permissions are a committed expectation);
its CRDs upgrade from chart 0.1.0; its monitoring objects pass prometheus-operator's
CRDs; checkov finds nothing but the waived; and what hack/kind-e2e.sh applies
passes a server-side dry run.

Most tests run the operator as a process (or a container) here with the chart's
identity, while the session's operator is stopped; one runs it in-cluster from the
chart, as a real pod on the real node.
"""

import base64
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.builders import (
    ROUTER,
    Owner,
    RenderConfig,
    ResolvedVersion,
    render_entry,
    render_network_policy,
    render_router,
    render_track,
    selector_labels,
)
from mlops_operator.constants import GROUP, VERSION

from .images import built_image, engine
from .kube import (
    IMAGE,
    ON_KWOK,
    REAL_NODE,
    ROOT,
    Bridge,
    Cluster,
    cluster_required,
    iris_bundle,
    wait_until,
)
from .objects import create, deployment, model_deployment, model_version, patch, ready
from .operator_fixture import condition, get, start_operator, stop_operator
from .processes import free_port

pytestmark = pytest.mark.cluster
CHART = ROOT / "helm" / "mlops-operator"
SNAPSHOTS = Path(__file__).parent / "snapshots"


def rendered(cluster: Cluster, *values: str) -> list[dict[str, Any]]:
    out = cluster.helm("template", "ops", str(CHART), "-n", "ops", *values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_lints_strictly_renders_both_scopes_and_checks_its_values(cluster: Cluster) -> None:
    linted = cluster.helm("lint", "--strict", str(CHART), check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
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
        ("image.digest=sha256:abc", "/image/digest"),
        ("servingImage=registry.example/serving@sha256:abc", "/servingImage"),
        ("metrics.serviceMonitor.enabled=maybe", "/metrics/serviceMonitor/enabled"),
    ):
        refused = cluster.helm("template", "ops", str(CHART), "--set", value, check=False)
        assert refused.returncode != 0, value
        assert field in refused.stderr, refused.stderr


MONITORING = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")  # fmt: skip
DIGEST = "sha256:" + "0d" * 32
SNAPSHOT_CASES = {
    "cluster-scope": (),
    "namespaces-scope": ("--set", "watchNamespaces={team-a,team-b}"),
    # Where the cluster serves monitoring.coreos.com/v1, auto renders both objects.
    "monitoring-auto": MONITORING,
    "monitoring-forced": (
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=prometheus",
    ),
    "monitoring-off": (*MONITORING,
        "--set", "metrics.serviceMonitor.enabled=false",
        "--set", "metrics.prometheusRule.enabled=false"),
    "pinned-no-crds-no-policy": (
        "--set", f"image.digest={DIGEST}",
        "--set", f"servingImage=registry.example/mlops-serving@{DIGEST}",
        "--set", "crds.install=false",
        "--set", "networkPolicy.enabled=false",
        "--set", "userRoles=false",
    ),
    "metrics-callers": (
        "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":'
        ' {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]',
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", SNAPSHOT_CASES)
def test_helm_template_snapshots(cluster: Cluster, case: str) -> None:
    """What each scope and optional feature renders, reviewed like code. The CRDs are
    listed by name only: hack/gen_crds.py --check holds their content."""
    documents = rendered(cluster, *SNAPSHOT_CASES[case])
    shown = [
        {"kind": d["kind"], "name": d["metadata"]["name"]}
        if d["kind"] in ("CustomResourceDefinition", "ValidatingAdmissionPolicy",
                         "ValidatingAdmissionPolicyBinding")
        else d
        for d in documents
    ]  # fmt: skip
    matches(SNAPSHOTS / f"helm-{case}.yaml", yaml.safe_dump_all(shown, sort_keys=False))


def matches(path: Path, text: str) -> None:
    """`text` equals the committed file; MLOPS_UPDATE_SNAPSHOTS=1 rewrites it."""
    if os.environ.get("MLOPS_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with MLOPS_UPDATE_SNAPSHOTS=1, then review"
    assert path.read_text() == text, f"{path.name} differs; review, then MLOPS_UPDATE_SNAPSHOTS=1"


def test_every_template_is_covered_by_a_snapshot(cluster: Cluster) -> None:
    rendered_sources = {
        line.removeprefix("# Source: mlops-operator/").strip()
        for case in SNAPSHOT_CASES.values()
        for line in cluster.helm(
            "template", "ops", str(CHART), "-n", "ops", *case
        ).stdout.splitlines()
        if line.startswith("# Source: ")
    }
    templates = {f"templates/{p.name}" for p in (CHART / "templates").glob("*.yaml")}
    assert templates <= rendered_sources, templates - rendered_sources


@pytest.fixture(scope="module")
def operator_image() -> str:
    return built_image("operator")


def scanned_children() -> list[dict[str, Any]]:
    """What the operator writes for a ModelDeployment with every child kind: two
    autoscaled tracks, the router, the entry Service and a NetworkPolicy."""
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": "iris",
            "stable": {"version": "1"},
            "canary": {"version": "2", "steps": [{"setWeight": 10}]},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
            "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]},
        }
    )
    owner = Owner("iris", "models", "0b1f9d1e-4c0a-4f7e-9a57-2d5c3b8e6f10")
    config = RenderConfig(image=PINNED_SERVING, operator_namespace="mlops-system")

    def version(number: str) -> ResolvedVersion:
        return ResolvedVersion(
            object_name=f"iris-{number}",
            model="iris",
            version=number,
            uri=f"https://models.example/iris/{number}.tar.gz",
            digest="sha256:" + "ab" * 32,
            secret_name=None,
            secret_key=None,
        )

    return [
        *render_track(spec, owner, "stable", version("1"), config),
        *render_track(spec, owner, "canary", version("2"), config, share=10),
        *render_router(spec, owner, "{}", config),
        render_entry(owner, selector_labels(owner, ROUTER)),
        render_network_policy(spec, owner, config),
    ]


PINNED_SERVING = f"registry.example/mlops-serving@{DIGEST}"
WAIVERS = ROOT / "tests" / "checkov_waivers.txt"


def test_checkov_finds_nothing_but_the_waived(cluster: Cluster, tmp_path: Path) -> None:
    """checkov (an outside policy scanner) over the chart and a ModelDeployment's
    children: its findings are exactly the committed waivers, each with its reason."""
    checkov = shutil.which("checkov") or str(ROOT / ".venv" / "bin" / "checkov")
    if not Path(checkov).exists():
        if os.environ.get("MLOPS_REQUIRE_EXTRAS") == "1":
            pytest.fail("checkov is not installed; hack/setup.sh installs it")
        pytest.skip("checkov is not installed (hack/setup.sh installs it)")
    pinned = ("--set", f"image.digest={DIGEST}", "--set", f"servingImage={PINNED_SERVING}")
    chart = cluster.helm("template", "ops", str(CHART), "-n", "ops", *pinned).stdout
    (tmp_path / "chart.yaml").write_text(chart)
    (tmp_path / "children.yaml").write_text(yaml.safe_dump_all(scanned_children()))
    scan = subprocess.run(
        [checkov, "--directory", str(tmp_path), "--framework", "kubernetes", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(scan.stdout)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    assert report["summary"]["resource_count"] >= 20, report["summary"]
    found = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
    lines = [line for line in WAIVERS.read_text().splitlines() if line and line[0] != "#"]
    waived = {tuple(line.split()[:2]) for line in lines}
    assert all(len(line.split(maxsplit=2)) == 3 for line in lines), "each waiver says why"
    assert found - waived == set(), "new findings: fix them, or waive them with a reason"
    assert waived - found == set(), "waivers that no longer match a finding: remove them"


PARKED = (
    "--set-json", f"nodeSelector={json.dumps(ON_KWOK['nodeSelector'])}",
    "--set-json", f"tolerations={json.dumps(ON_KWOK['tolerations'])}",
)  # fmt: skip
"""Values that park the chart's operator on kwok, for tests that run it elsewhere."""


@contextmanager
def installed(cluster: Cluster, *values: str, chart: Path = CHART) -> Iterator[tuple[str, str]]:
    """The chart installed in a fresh system namespace (PodSecurity `restricted`),
    watching a fresh models namespace; uninstalled afterwards. The CRDs are the
    session's (the `crds` fixture)."""
    suffix = secrets.token_hex(3)
    system, models = f"mlops-system-{suffix}", f"models-{suffix}"
    for name in (system, models):
        cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", system, "pod-security.kubernetes.io/enforce=restricted")
    try:
        session_crds = ("--set", "crds.install=false") if chart == CHART else ()
        cluster.helm(
            "install", "mlops-operator", str(chart), "-n", system,
            *release_values(models, *session_crds, *values),
        )  # fmt: skip
        yield system, models
    finally:
        cluster.helm("uninstall", "mlops-operator", "-n", system, check=False)
        cluster.kubectl("delete", "namespace", system, models, "--wait=false", check=False)


def release_values(models: str, *values: str) -> tuple[str, ...]:
    return (
        "--set", f"watchNamespaces={{{models}}}",
        "--set", "image.repository=localhost/mlops-operator", "--set", "image.tag=test",
        *values,
    )  # fmt: skip


@pytest.fixture
def release(cluster: Cluster, crds: None, sole_operator: None) -> Iterator[tuple[str, str]]:
    """The chart's operator parked on kwok: these tests run the operator as a process
    (or a container here) with the chart's identity."""
    with installed(cluster, *PARKED) as namespaces:
        yield namespaces


@pytest.fixture
def release_in_cluster(
    cluster: Cluster, crds: None, sole_operator: None, bridge: Bridge
) -> Iterator[tuple[str, str]]:
    """The chart's operator as a real pod on the real node, deploying the serving image."""
    with installed(cluster, "--set", f"servingImage={IMAGE}") as namespaces:
        yield namespaces


PREVIOUS = "91ab88e"
"""The last commit of chart 0.1.0, whose CRDs were in its crds/: installed once by
Helm, never upgraded."""


def previous_chart(folder: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "helm/mlops-operator"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        reason = f"chart 0.1.0 ({PREVIOUS}) is not in this clone's history: {archive.stderr!r}"
        if cluster_required():
            pytest.fail(reason)
        pytest.skip(reason)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "helm" / "mlops-operator"


def create_strictly(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a ModelDeployment, refused if the CRD does not know one of its fields."""
    api = client.CustomObjectsApi(cluster.api)
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", body, field_validation="Strict"
    )
    assert isinstance(created, dict)
    return created


def test_an_upgrade_from_chart_0_1_0_upgrades_the_crds_and_uninstall_keeps_them(
    cluster: Cluster, crds: None, sole_operator: None, tmp_path: Path
) -> None:
    """Chart 0.1.0 shipped its CRDs in crds/, which Helm never upgrades; this chart
    renders them as templates, kept on uninstall. `helm upgrade --take-ownership`
    adopts the CRDs 0.1.0 left, and a field this version added is then served."""
    old = previous_chart(tmp_path)
    assert yaml.safe_load((old / "Chart.yaml").read_text())["version"] == "0.1.0"
    assert "networkPolicy" not in (old / "crds" / "modeldeployments.mlops.dev.yaml").read_text()
    body = model_deployment("iris", networkPolicy={"from": [{"podSelector": {}}]})
    try:
        # The cluster as 0.1.0's `helm install` left it: its CRDs.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(old / "crds"))
        with installed(cluster, *PARKED, chart=old) as (system, models):
            with pytest.raises(ApiException) as refused:
                create_strictly(cluster, models, body)
            message = json.loads(str(refused.value.body))["message"]
            assert 'unknown field "spec.networkPolicy"' in message, message

            cluster.helm(
                "upgrade", "mlops-operator", str(CHART), "-n", system, "--take-ownership",
                *release_values(models, *PARKED, "--set", "crds.install=true"),
            )  # fmt: skip
            created = wait_until(
                lambda: accepted(lambda: create_strictly(cluster, models, body)),
                "the upgraded CRD to serve spec.networkPolicy",
                timeout=30,
            )
            # As served: with the CRD's default for matchExpressions.
            served: dict[str, Any] = {"from": [{"podSelector": {"matchExpressions": []}}]}
            assert created["spec"]["networkPolicy"] == served
            crd = client.ApiextensionsV1Api(cluster.api).read_custom_resource_definition(
                "modeldeployments.mlops.dev"
            )
            assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
            assert crd.metadata.annotations["meta.helm.sh/release-namespace"] == system
            cluster.helm("uninstall", "mlops-operator", "-n", system)
            kept = get(cluster, "modeldeployments", models, "iris")
            assert kept["spec"]["networkPolicy"] == served
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))


def accepted(create: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """What `create` made, or None while the API server still refuses it."""
    try:
        return create()
    except ApiException as error:
        if error.status in (400, 422):
            return None
        raise


def test_monitoring_objects_are_accepted_by_prometheus_operators_crds(
    cluster: Cluster, crds: None, sole_operator: None
) -> None:
    """With prometheus-operator's CRDs served (the upstream v0.93.0 copies), the
    default values (auto) render the ServiceMonitor and PrometheusRule, and the API
    server accepts them with nothing pruned."""
    upstream = ROOT / "tests" / "integration" / "crds" / "prometheus-operator-v0.93.0"
    files = [str(upstream / f"{plural}.yaml") for plural in ("servicemonitors", "prometheusrules")]
    cluster.kubectl("apply", "--server-side", *(a for f in files for a in ("-f", f)))
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        )  # fmt: skip
        with installed(cluster, *PARKED) as (system, _):
            monitoring = client.CustomObjectsApi(cluster.api)
            monitor = monitoring.get_namespaced_custom_object(
                "monitoring.coreos.com", "v1", system, "servicemonitors", "mlops-operator"
            )
            rule = monitoring.get_namespaced_custom_object(
                "monitoring.coreos.com", "v1", system, "prometheusrules", "mlops-operator"
            )
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
        assert monitor["spec"]["endpoints"] == [
            {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
        ]
        alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
        assert rule["spec"] == alerts
    finally:
        cluster.kubectl("delete", "--ignore-not-found", *(a for f in files for a in ("-f", f)))


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
    **spec: Any,
) -> None:
    """Apply ModelVersion iris-1 and ModelDeployment iris; wait for the operator to make
    it Ready (its logs, read after the wait, explain a timeout)."""
    create(cluster, namespace, "modelversions", model_version("1", built))
    create(cluster, namespace, "modeldeployments", model_deployment("iris", **spec))
    try:
        wait_until(lambda: ready(cluster, namespace, "iris"), "iris Ready", timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}; operator log: {logs()}") from None


def test_the_operators_permissions_are_exactly_the_reviewed_ones(
    cluster: Cluster, release: tuple[str, str]
) -> None:
    """`kubectl auth can-i --list` for the chart's ServiceAccount, in the namespace it
    watches and in another, equals the committed expectation: a new permission shows
    up in review. No list or watch of Secrets anywhere."""
    system, models = release
    account = f"system:serviceaccount:{system}:mlops-operator"
    for where, namespace in (("watched", models), ("elsewhere", "default")):
        listed = cluster.kubectl("auth", "can-i", "--list", "--as", account, "-n", namespace)
        rows = [" ".join(line.split()) for line in listed.stdout.splitlines()]
        for row in rows:
            if row.startswith("secrets "):
                assert row.split()[-1] == "[get]", row
        matches(SNAPSHOTS / f"operator-can-i-{where}.txt", "\n".join(rows) + "\n")


def test_chart_installs_and_its_rbac_runs_the_operator(
    cluster: Cluster, release: tuple[str, str], tmp_path: Path
) -> None:
    """The operator with the chart's ServiceAccount token and nothing else runs the
    whole flow: a ModelVersion verified, a ModelDeployment with a NetworkPolicy made
    Ready, a canary with its router (whose Role the operator may only grant because
    it holds those rights), and a DriftMonitor judged."""
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
        deploy_until_ready(
            cluster, models, built, lambda: operator.logs()[-1500:], 90, networkPolicy={}
        )
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

        create(
            cluster,
            models,
            "modelversions",
            model_version("2", iris_bundle(tmp_path / "iris-2.tar.gz", "2", 0.5)),
        )
        canary = {"version": "2", "steps": [{"setWeight": 50}, {"pause": {}}]}
        patch(cluster, models, "modeldeployments", "iris", {"spec": {"canary": canary}})
        rbac = client.RbacAuthorizationV1Api(cluster.api)
        wait_until(
            lambda: (
                rbac.list_namespaced_role_binding(
                    models, label_selector="mlops.dev/deployment=iris"
                ).items
            ),
            "the router's RoleBinding, granted by the operator",
            timeout=60,
        )
        policies = client.NetworkingV1Api(cluster.api).list_namespaced_network_policy(models)
        assert [p.metadata.name for p in policies.items] == ["iris"]
        drift = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DriftMonitor",
            "metadata": {"name": "iris"},
            "spec": {"deploymentRef": {"name": "iris"}, "interval": "1m"},
        }
        create(cluster, models, "driftmonitors", drift)
        judged = wait_until(
            lambda: condition(get(cluster, "driftmonitors", models, "iris"), "Ready"),
            "the DriftMonitor's first run",
            timeout=60,
        )
        assert judged["observedGeneration"] == 1
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


def test_what_the_kind_script_applies_is_accepted_by_the_api_server(cluster: Cluster) -> None:
    """hack/kind-e2e.sh cannot run here (it needs Docker): what it applies to its
    cluster (the kwok nodes, the chart, the model it deploys) goes through a
    server-side dry run on the local plane instead. Printing them builds kind."""
    printed = subprocess.run(
        ["bash", str(ROOT / "hack" / "kind-e2e.sh"), "manifests"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr[-3000:]
    documents = [d for d in yaml.safe_load_all(printed.stdout) if d]
    kinds = {d["kind"] for d in documents}
    assert {"Node", "Deployment", "CustomResourceDefinition", "ModelVersion"} <= kinds, kinds
    created = []
    for name in ("mlops-system", "mlops-e2e-chart"):
        if cluster.kubectl("get", "namespace", name, check=False).returncode != 0:
            cluster.kubectl("create", "namespace", name)
            created.append(name)
    try:
        applied = cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "--dry-run=server",
            "--validate=strict", "-f", "-",
            stdin=printed.stdout,
        )  # fmt: skip
    finally:
        for name in created:
            cluster.kubectl("delete", "namespace", name, "--wait=false")
    assert applied.stdout.count("(server dry run)") == len(documents)
