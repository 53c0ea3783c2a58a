"""The CRDs on a real API server: samples accepted, bad input rejected field by
field at admission, printer columns and the `mlops` category in kubectl."""

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlops_operator.api import RESOURCES, Resource
from mlops_operator.constants import GROUP, VERSION

from .kube import ROOT, Cluster

pytestmark = pytest.mark.cluster

SAMPLES = ROOT / "crds" / "samples"
Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def sample(kind: str) -> Doc:
    doc: Doc = yaml.safe_load((SAMPLES / f"{kind.lower()}.yaml").read_text())
    return doc


def by_kind(kind: str) -> Resource:
    return next(r for r in RESOURCES if r.kind == kind)


def contains(stored: Any, given: Any) -> bool:
    """Whether everything given is stored unchanged (the server may add defaults)."""
    if isinstance(given, dict):
        return isinstance(stored, dict) and all(
            k in stored and contains(stored[k], v) for k, v in given.items()
        )
    if isinstance(given, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(given)
            and all(contains(s, g) for s, g in zip(stored, given, strict=True))
        )
    return bool(stored == given)


def create(cluster: Cluster, namespace: str, doc: Doc) -> Doc:
    created = client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, by_kind(doc["kind"]).plural, doc, field_validation="Strict"
    )
    assert isinstance(created, dict)
    return created


def test_the_argocd_example_is_what_the_api_server_accepts(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """helm/argocd/example/: the Application's path holds the manifests, and the API
    server accepts every one as Argo CD would send it, strictly (no unknown field)."""
    example = ROOT / "helm" / "argocd" / "example"
    application = yaml.safe_load((example / "application.yaml").read_text())
    assert application["kind"] == "Application"
    assert "ignoreDifferences" not in application["spec"]
    manifests = sorted((example / application["spec"]["source"]["path"]).glob("*.yaml"))
    kinds = {yaml.safe_load(path.read_text())["kind"] for path in manifests}
    assert kinds == {"ModelVersion", "ModelDeployment", "DriftMonitor"}
    applied = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", namespace,
        *(arg for path in manifests for arg in ("-f", str(path))),
    )  # fmt: skip
    assert applied.stdout.count("serverside-applied (server dry run)") == len(manifests)


def test_samples_are_accepted_and_shown_with_printer_columns(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES))
    api = client.CustomObjectsApi(cluster.api)
    for path in sorted(SAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        stored = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, by_kind(doc["kind"]).plural, doc["metadata"]["name"]
        )
        assert contains(stored["spec"], doc["spec"]), path.name
    # Defaults from the schema are applied by the API server.
    mdep = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "iris")
    assert mdep["spec"]["canary"]["steps"][2]["analysis"] == {"count": 3}
    assert mdep["spec"]["serving"]["capture"]["sampleRate"] == 0.25
    dm = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "driftmonitors", "iris-canary")
    assert dm["spec"]["window"]["minSamples"] == 500
    assert dm["spec"]["source"] == {"type": "pods"}

    table = cluster.kubectl("get", "mv,mdep,dm", "-n", namespace).stdout
    headers = [line.split() for line in table.splitlines() if line.startswith("NAME")]
    assert headers == [
        ["NAME", "MODEL", "VERSION", "FRAMEWORK", "STAGE", "APPROVED", "PHASE", "AGE"],
        ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "READY", "PHASE", "AGE"],
        [
            "NAME",
            "DEPLOYMENT",
            "TRACK",
            "DRIFT",
            "SHARE",
            "DRIFTED",
            "SAMPLES",
            "LAST",
            "RUN",
            "AGE",
        ],
    ]
    assert re.search(r"modelversion\.mlops\.dev/iris-3\s+iris\s+3\s+sklearn\s+Staging", table)
    assert re.search(r"driftmonitor\.mlops\.dev/iris-canary\s+iris\s", table)

    names = cluster.kubectl("get", "mlops", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == [
        "driftmonitor.mlops.dev/iris-canary",
        "modeldeployment.mlops.dev/iris",
        "modelversion.mlops.dev/iris-3",
    ]
    short = cluster.kubectl(
        "get", "mv", "-n", namespace, "--field-selector", "spec.model=iris", "-o", "name"
    )
    assert short.stdout.split() == ["modelversion.mlops.dev/iris-3"]


def setter(path: str, value: Any) -> Mutation:
    """Set a dotted path (list indexes as numbers) in the document."""

    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def deleter(path: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: Doc) -> None:
        for mutation in mutations:
            mutation(doc)

    return mutate


# (kind, what is wrong, mutation, text the API server's message must contain)
INVALID: list[tuple[str, str, Mutation, str]] = [
    ("ModelVersion", "empty model", setter("spec.model", ""), "spec.model"),
    ("ModelVersion", "model not a DNS label", setter("spec.model", "Iris_Model"), "spec.model"),
    (
        "ModelVersion",
        "short digest",
        setter("spec.artifact.digest", "sha256:abc"),
        "spec.artifact.digest",
    ),
    (
        "ModelVersion",
        "md5 digest",
        setter("spec.artifact.digest", "md5:" + "a" * 32),
        "spec.artifact.digest",
    ),
    (
        "ModelVersion",
        "unknown URI scheme",
        setter("spec.artifact.uri", "ftp://host/m.tgz"),
        "spec.artifact.uri",
    ),
    (
        "ModelVersion",
        "pickle without digest",
        both(setter("spec.artifact.format", "pickle"), deleter("spec.artifact.digest")),
        "spec.artifact.digest",
    ),
    (
        "ModelVersion",
        "skops without digest",
        both(setter("spec.artifact.format", "skops"), deleter("spec.artifact.digest")),
        "spec.artifact.digest",
    ),
    ("ModelVersion", "unknown framework", setter("spec.framework", "tensorflow"), "spec.framework"),
    (
        "ModelVersion",
        "format unfit for framework",
        setter("spec.artifact.format", "torchscript"),
        "spec.artifact.format",
    ),
    ("ModelVersion", "unknown stage", setter("spec.stage", "Prod"), "spec.stage"),
    (
        "ModelVersion",
        "a scheme nothing fetches",
        setter("spec.artifact.uri", "gs://models/iris.tar.gz"),
        "spec.artifact.uri",
    ),
    (
        "ModelVersion",
        "duplicate input name",
        setter("spec.signature.inputs.1.name", "sepal_length"),
        "spec.signature.inputs[1]",
    ),
    (
        "ModelVersion",
        "unknown datatype",
        setter("spec.signature.inputs.0.datatype", "FLOAT"),
        "spec.signature.inputs[0].datatype",
    ),
    (
        "ModelVersion",
        "shape below -1",
        setter("spec.signature.inputs.0.shape", [-2]),
        "spec.signature.inputs[0].shape[0]",
    ),
    (
        "ModelVersion",
        "git commit not hex",
        setter("spec.lineage.gitCommit", "HEAD~1"),
        "spec.lineage.gitCommit",
    ),
    (
        "ModelVersion",
        "alias not a DNS label",
        setter("spec.aliases", ["Champion!"]),
        "spec.aliases[0]",
    ),
    ("ModelVersion", "missing artifact", deleter("spec.artifact"), "spec.artifact"),
    ("ModelVersion", "unknown field", setter("spec.artifact.sha", "x"), "spec.artifact.sha"),
    (
        "ModelVersion",
        "metric not a number",
        setter("spec.metrics.accuracy", "high"),
        "spec.metrics.accuracy",
    ),
    (
        "ModelDeployment",
        "weight above 100",
        setter("spec.canary.steps.0.setWeight", 150),
        "spec.canary.steps[0].setWeight",
    ),
    (
        "ModelDeployment",
        "canary equal to stable",
        both(setter("spec.stable", {"version": "3"}), setter("spec.canary.version", "3")),
        "spec.canary.version",
    ),
    (
        "ModelDeployment",
        "both version and alias",
        setter("spec.stable.version", "2"),
        "spec.stable",
    ),
    ("ModelDeployment", "neither version nor alias", setter("spec.stable", {}), "spec.stable"),
    (
        "ModelDeployment",
        "steps out of order",
        setter("spec.canary.steps.3.setWeight", 5),
        "spec.canary.steps",
    ),
    (
        "ModelDeployment",
        "step with two actions",
        setter("spec.canary.steps.0.pause", {}),
        "spec.canary.steps[0]",
    ),
    (
        "ModelDeployment",
        "negative pause",
        setter("spec.canary.steps.1.pause.duration", "-2m"),
        "spec.canary.steps[1].pause.duration",
    ),
    (
        "ModelDeployment",
        "analysis step without analysis",
        deleter("spec.canary.analysis"),
        "spec.canary.analysis",
    ),
    (
        "ModelDeployment",
        "error rate above 1",
        setter("spec.canary.analysis.thresholds.errorRate", 1.5),
        "spec.canary.analysis.thresholds.errorRate",
    ),
    (
        "ModelDeployment",
        "no thresholds",
        setter("spec.canary.analysis.thresholds", {}),
        "spec.canary.analysis.thresholds",
    ),
    (
        "ModelDeployment",
        "negative interval",
        setter("spec.canary.analysis.interval", "-30s"),
        "spec.canary.analysis.interval",
    ),
    (
        "ModelDeployment",
        "queries on pods source",
        setter("spec.canary.analysis.source.queries", {"requests": "up"}),
        "spec.canary.analysis.source.queries",
    ),
    (
        "ModelDeployment",
        "negative latencyP99Ratio",
        setter("spec.canary.analysis.thresholds.latencyP99Ratio", -1),
        "spec.canary.analysis.thresholds.latencyP99Ratio",
    ),
    ("ModelDeployment", "replicas and autoscaling", setter("spec.replicas", 3), "spec.autoscaling"),
    (
        "ModelDeployment",
        "minReplicas above maxReplicas",
        setter("spec.autoscaling.minReplicas", 9),
        "spec.autoscaling.minReplicas",
    ),
    (
        "ModelDeployment",
        "env overriding the pinned digest",
        setter("spec.env", [{"name": "MLOPS_SERVING_MODEL_DIGEST", "value": "sha256:" + "0" * 64}]),
        "spec.env",
    ),
    (
        "ModelDeployment",
        "toleration Exists with a value",
        setter(
            "spec.scheduling", {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}
        ),
        "spec.scheduling.tolerations[0].value",
    ),
    (
        "ModelDeployment",
        "toleration without key or Exists",
        setter("spec.scheduling", {"tolerations": [{"value": "x"}]}),
        "spec.scheduling.tolerations[0].key",
    ),
    (
        "ModelDeployment",
        "unknown traffic mode",
        setter("spec.traffic.mode", "mesh"),
        "spec.traffic.mode",
    ),
    (
        "ModelDeployment",
        "gatewayAPI without gateway",
        setter("spec.traffic.mode", "gatewayAPI"),
        "spec.traffic.gateway",
    ),
    (
        "ModelDeployment",
        "header routes in replicas mode",
        setter("spec.traffic.mode", "replicas"),
        "spec.traffic.mode",
    ),
    (
        "ModelDeployment",
        "mirror of 0 percent",
        setter("spec.mirror", {"version": "4", "percent": 0}),
        "spec.mirror.percent",
    ),
    (
        "ModelDeployment",
        "sample rate above 1",
        setter("spec.serving.capture.sampleRate", 2),
        "spec.serving.capture.sampleRate",
    ),
    (
        "ModelDeployment",
        "batch size 0",
        setter("spec.serving.batching.maxBatchSize", 0),
        "spec.serving.batching.maxBatchSize",
    ),
    ("ModelDeployment", "empty model", setter("spec.model", ""), "spec.model"),
    (
        "ModelDeployment",
        "bad CPU quantity",
        setter("spec.resources.requests.cpu", "lots"),
        "spec.resources.requests.cpu",
    ),
    (
        "ModelDeployment",
        "header route to a missing canary",
        deleter("spec.canary"),
        "spec.traffic.headerRoutes",
    ),
    (
        "ModelDeployment",
        "network peer naming nothing",
        setter("spec.networkPolicy.from", [{}]),
        "spec.networkPolicy.from[0]",
    ),
    (
        "ModelDeployment",
        "ipBlock with a selector",
        setter("spec.networkPolicy.from", [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]),
        "spec.networkPolicy.from[0].ipBlock",
    ),
    (
        "ModelDeployment",
        "unknown selector operator",
        setter(
            "spec.networkPolicy.from",
            [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Like"}]}}],
        ),
        "spec.networkPolicy.from[0].podSelector.matchExpressions[0].operator",
    ),
    ("DriftMonitor", "driftShare above 1", setter("spec.driftShare", 1.5), "spec.driftShare"),
    ("DriftMonitor", "negative interval", setter("spec.interval", "-5m"), "spec.interval"),
    (
        "DriftMonitor",
        "zero minSamples",
        setter("spec.window.minSamples", 0),
        "spec.window.minSamples",
    ),
    (
        "DriftMonitor",
        "url source without url",
        setter("spec.source.type", "url"),
        "spec.source.url",
    ),
    (
        "DriftMonitor",
        "query on pods source",
        setter("spec.source.query", "up"),
        "spec.source.query",
    ),
    (
        "DriftMonitor",
        "file format on pods source",
        setter("spec.source.format", "csv"),
        "spec.source.format",
    ),
    ("DriftMonitor", "unknown correction", setter("spec.correction", "holm"), "spec.correction"),
    (
        "DriftMonitor",
        "unknown test method",
        setter("spec.tests.method", "ttest"),
        "spec.tests.method",
    ),
    (
        "DriftMonitor",
        "pause and rollback",
        setter("spec.actions.pauseCanary", True),
        "spec.actions.rollbackCanary",
    ),
    ("DriftMonitor", "rollback on stable track", setter("spec.track", "stable"), "spec.actions"),
    (
        "DriftMonitor",
        "webhook not http",
        setter("spec.actions.webhook.url", "ftp://hooks/x"),
        "spec.actions.webhook.url",
    ),
    ("DriftMonitor", "missing deploymentRef", deleter("spec.deploymentRef"), "spec.deploymentRef"),
    ("DriftMonitor", "unknown track", setter("spec.track", "shadow"), "spec.track"),
]


@pytest.mark.parametrize(
    ("kind", "mutation", "field"),
    [
        pytest.param(kind, mutation, field, id=f"{kind}-{what}")
        for kind, what, mutation, field in INVALID
    ],
)
def test_invalid_input_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, crds: None, kind: str, mutation: Mutation, field: str
) -> None:
    doc = copy.deepcopy(sample(kind))
    mutation(doc)
    with pytest.raises(ApiException) as rejected:
        create(cluster, namespace, doc)
    assert rejected.value.status in (400, 422), rejected.value.body
    message = json.loads(str(rejected.value.body))["message"]
    assert field in message, message
    listed = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, by_kind(kind).plural
    )
    assert listed["items"] == []


def test_a_model_versions_artifact_cannot_be_changed(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Once registered, a version keeps its bytes: no edit may point it elsewhere."""
    doc = copy.deepcopy(sample("ModelVersion"))
    name = doc["metadata"]["name"]
    create(cluster, namespace, doc)
    api = client.CustomObjectsApi(cluster.api)
    for change in (
        {"uri": "https://attacker.example/other.tar.gz"},
        {"digest": "sha256:" + "0" * 64},
        {"secretRef": {"name": "other", "key": "token"}},
    ):
        with pytest.raises(ApiException) as rejected:
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelversions", name, {"spec": {"artifact": change}}
            )
        assert rejected.value.status == 422, rejected.value.body
        assert "spec.artifact is immutable" in json.loads(str(rejected.value.body))["message"]
    stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", name)
    assert stored["spec"]["artifact"] == doc["spec"]["artifact"]
    # Everything else stays editable: the stage, for one.
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", name, {"spec": {"stage": "Archived"}}
    )
