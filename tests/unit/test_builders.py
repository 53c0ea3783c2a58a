"""The pure builders: what each track's children look like.

Snapshots in tests/unit/snapshots/ are reviewed like code: after an intended
change, regenerate them with MLOPS_UPDATE_SNAPSHOTS=1 and read the diff.
"""

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlops_contract.routing import TABLE_KEY, Backend, RoutingTable, parse, render
from mlops_contract.settings import RouterSettings, ServingSettings
from mlops_contract.settings import env as serving_env

from mlops_operator.api.common import DNS_LABEL
from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.builders import (
    Owner,
    RenderConfig,
    ResolvedVersion,
    child_name,
    entry_url,
    render_entry,
    render_network_policy,
    render_router,
    render_track,
    selector_labels,
    serving_selector,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
OWNER = Owner("iris", "models", "0b1f9d1e-4c0a-4f7e-9a57-2d5c3b8e6f10")
CONFIG = RenderConfig(image="registry.example/mlops-serving:1.0", default_replicas=1)
VERSION = ResolvedVersion(
    object_name="iris-3",
    model="iris",
    version="3",
    uri="s3://models/iris/3/bundle.tar.gz",
    digest="sha256:" + "ab" * 32,
    secret_name="model-store",
    secret_key="credentials",
)


def snapshot(name: str, rendered: list[dict[str, Any]]) -> None:
    path = SNAPSHOTS / f"{name}.yaml"
    text = yaml.safe_dump_all(rendered, sort_keys=False)
    if os.environ.get("MLOPS_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert path.read_text() == text, f"{path.name} differs; review, then MLOPS_UPDATE_SNAPSHOTS=1"


def test_fixed_replicas_track_snapshot() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "replicas": 3}
    )
    snapshot("stable-fixed-replicas", render_track(spec, OWNER, "stable", VERSION, CONFIG))


def test_autoscaled_track_with_batching_auth_and_resources_snapshot() -> None:
    spec = ModelDeploymentSpec.model_validate({
        "model": "iris",
        "stable": {"alias": "champion"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetCPUUtilization": 60},
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        "serving": {
            "batching": {"maxBatchSize": 64, "maxLatencyMs": 2},
            "capture": {"sampleRate": 0.5},
            "authSecretRef": {"name": "iris-token", "key": "token"},
        },
        "image": "registry.example/custom:2",
    })  # fmt: skip
    snapshot("stable-autoscaled", render_track(spec, OWNER, "stable", VERSION, CONFIG))


GPU_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}
            ]
        }
    }
}


@pytest.mark.parametrize(
    ("scheduling", "expected"),
    [
        ({}, {}),
        ({"nodeSelector": {"pool": "gpu"}}, {"nodeSelector": {"pool": "gpu"}}),
        (
            {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]},
            {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]},
        ),
        (
            {
                "tolerations": [
                    {"key": "gpu", "value": "a100", "effect": "NoExecute", "tolerationSeconds": 30}
                ],
                "affinity": GPU_AFFINITY,
                "priorityClassName": "serving-high",
            },
            {
                "tolerations": [
                    {"key": "gpu", "value": "a100", "effect": "NoExecute", "tolerationSeconds": 30}
                ],
                "affinity": GPU_AFFINITY,
                "priorityClassName": "serving-high",
            },
        ),
    ],
)
def test_scheduling_reaches_the_pod_spec_and_nothing_else_does(
    scheduling: dict[str, Any], expected: dict[str, Any]
) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "scheduling": scheduling}
    )
    pod = render_track(spec, OWNER, "stable", VERSION, CONFIG)[0]["spec"]["template"]["spec"]
    fields = ("nodeSelector", "tolerations", "affinity", "priorityClassName")
    assert {k: pod[k] for k in fields if k in pod} == expected


def test_a_toleration_with_an_unknown_effect_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scheduling\.tolerations\.0\.effect"):
        ModelDeploymentSpec.model_validate({
            "model": "iris",
            "stable": {"version": "3"},
            "scheduling": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]},
        })  # fmt: skip


def test_pvc_artifact_is_mounted_read_only() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    pvc = ResolvedVersion(
        "iris-3", "iris", "3", "pvc://model-store/iris/3.tar.gz", "sha256:" + "cd" * 32
    )
    (deployment, service) = render_track(spec, OWNER, "stable", pvc, CONFIG)
    pod = deployment["spec"]["template"]["spec"]
    assert {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    } in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": "model-store",
        "mountPath": "/mnt/models/model-store",
        "readOnly": True,
    } in mounts
    assert service["kind"] == "Service"


def test_pvc_artifact_is_verified_by_an_init_container_that_reports() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    pvc = ResolvedVersion(
        "iris-3", "iris", "3", "pvc://model-store/iris/3.tar.gz", "sha256:" + "cd" * 32
    )
    deployment = render_track(spec, OWNER, "stable", pvc, CONFIG)[0]
    template = deployment["spec"]["template"]
    (verify,) = template["spec"]["initContainers"]
    serving = template["spec"]["containers"][0]
    assert verify["name"] == "verify"
    assert verify["args"] == ["verify"]
    assert verify["image"] == serving["image"]
    assert verify["volumeMounts"] == serving["volumeMounts"]
    assert verify["securityContext"] == serving["securityContext"]
    assert "readinessProbe" not in verify
    assert "ports" not in verify
    env = {e["name"]: e.get("value") for e in verify["env"]}
    assert env["MLOPS_SERVING_MODEL_DIGEST"] == "sha256:" + "cd" * 32
    assert env["MLOPS_SERVING_REPORT_FILE"] == verify["terminationMessagePath"]
    assert template["metadata"]["labels"]["mlops.dev/verified-by-pod"] == "true"
    assert template["metadata"]["annotations"]["mlops.dev/model-version"] == "iris-3"


def test_reachable_artifact_gets_no_init_container() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    template = render_track(spec, OWNER, "stable", VERSION, CONFIG)[0]["spec"]["template"]
    assert "initContainers" not in template["spec"]
    assert "mlops.dev/verified-by-pod" not in template["metadata"]["labels"]


def test_one_replica_gets_no_disruption_budget_or_autoscaler() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    kinds = [child["kind"] for child in render_track(spec, OWNER, "stable", VERSION, CONFIG)]
    assert kinds == ["Deployment", "Service"]


def test_security_context_meets_restricted_pod_security() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    pod = render_track(spec, OWNER, "stable", VERSION, CONFIG)[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["runAsNonRoot"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPath" not in volume for volume in pod["volumes"])


@pytest.mark.parametrize(
    ("owner", "track", "hashed"),
    [
        ("iris", "stable", False),
        ("a" * 56, "canary", False),  # 63 characters exactly
        ("a" * 57, "canary", True),
        ("b" * 63, "mirror", True),
        ("fraud-" * 10 + "x", "stable", True),
    ],
)
def test_child_names_are_dns_labels(owner: str, track: str, hashed: bool) -> None:
    name = child_name(owner, track)
    assert re.fullmatch(DNS_LABEL, name)
    assert len(name) <= 63
    assert name.endswith(f"-{track}")
    assert (name != f"{owner}-{track}") is hashed


def test_long_names_that_share_a_prefix_stay_distinct() -> None:
    prefix = "fraud-detection-for-the-payments-team-in-europe-west-"
    first, second = child_name(prefix + "one", "canary"), child_name(prefix + "two", "canary")
    assert first != second
    assert first[:40] == second[:40]  # the cut keeps the readable prefix


def test_entry_url_is_the_owner_name_where_that_is_a_service_name() -> None:
    assert entry_url(OWNER, CONFIG) == "http://iris.models.svc.cluster.local"
    dotted = Owner("iris.v2", "models", "uid")
    assert entry_url(dotted, CONFIG) == "http://iris.v2-entry.models.svc.cluster.local"


def test_a_serving_container_without_resources_gets_the_default_requests() -> None:
    bare = ModelDeploymentSpec.model_validate({"model": "iris", "stable": {"version": "3"}})
    sized = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "resources": {"limits": {"cpu": "2"}}}
    )
    config = RenderConfig(image="i", default_requests={"cpu": "250m", "memory": "1Gi"})

    def resources(spec: ModelDeploymentSpec) -> Any:
        deployment = render_track(spec, OWNER, "stable", VERSION, config)[0]
        return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources(bare) == {"requests": {"cpu": "250m", "memory": "1Gi"}}  # not BestEffort
    assert resources(sized) == {"limits": {"cpu": "2"}}  # the user's, untouched


def test_router_snapshot_and_its_least_privilege() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "canary": {"version": "4"}, "replicas": 3}
    )
    table = render(
        RoutingTable(
            canary_weight=20, backends={"stable": Backend("iris-stable", "http://10.96.0.9:80")}
        )
    )
    children = render_router(spec, OWNER, table, CONFIG)
    snapshot("router", children)
    config_map, account, role, binding, deployment = children
    assert parse(config_map["data"][TABLE_KEY]).canary_weight == 20
    # It may read its own table by name, and EndpointSlices; nothing else.
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["iris-router"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "models"}
    ]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "iris-router"
    assert pod["containers"][0]["args"] == ["router"]


@pytest.mark.parametrize(
    ("share", "replicas", "hpa"),
    [(100, 3, (2, 8)), (20, 1, (1, 2)), (50, 2, (1, 4)), (0, 1, (1, 1))],
)
def test_a_track_is_sized_to_its_share_of_traffic(
    share: int, replicas: int, hpa: tuple[int, int]
) -> None:
    fixed = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "replicas": 3}
    )
    deployment = render_track(fixed, OWNER, "canary", VERSION, CONFIG, share=share)[0]
    assert deployment["spec"]["replicas"] == replicas
    scaled = ModelDeploymentSpec.model_validate(
        {
            "model": "iris",
            "stable": {"version": "3"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 8},
        }
    )
    autoscaler = next(
        c
        for c in render_track(scaled, OWNER, "canary", VERSION, CONFIG, share=share)
        if c["kind"] == "HorizontalPodAutoscaler"
    )
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == hpa


def test_the_entry_service_selects_what_it_is_told() -> None:
    entry = render_entry(OWNER, selector_labels(OWNER, "router"))
    assert entry["metadata"]["name"] == "iris"
    assert entry["spec"]["selector"] == {
        "mlops.dev/deployment": "iris",
        "mlops.dev/track": "router",
    }
    both = render_entry(OWNER, serving_selector(OWNER))
    assert both["spec"]["selector"] == {
        "mlops.dev/deployment": "iris",
        "app.kubernetes.io/name": "mlops-serving",
    }


def test_network_policy_snapshot_admits_the_router_the_operator_and_the_callers_named() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": "iris",
            "stable": {"version": "3"},
            "networkPolicy": {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"team": "web"}}},
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "In", "values": ["gateway"]}
                            ]
                        }
                    },
                    {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.7/32"]}},
                ]
            },
        }
    )
    config = RenderConfig(image=CONFIG.image, operator_namespace="mlops-system")
    policy = render_network_policy(spec, OWNER, config)
    snapshot("network-policy", [policy])
    pods = policy["spec"]["podSelector"]["matchLabels"]
    router = render_router(spec, OWNER, "{}", config)
    serving = render_track(spec, OWNER, "stable", VERSION, config)
    for child in (*router, *serving):
        if child["kind"] == "Deployment":
            labels = child["spec"]["template"]["metadata"]["labels"]
            assert pods.items() <= labels.items(), child["metadata"]["name"]
    admitted = policy["spec"]["ingress"][0]["from"]
    router_pods = next(c for c in router if c["kind"] == "Deployment")
    router_labels = router_pods["spec"]["template"]["metadata"]["labels"]
    assert admitted[0]["podSelector"]["matchLabels"].items() <= router_labels.items()


def test_without_its_namespace_the_operator_is_not_admitted_by_name() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "networkPolicy": {}}
    )
    policy = render_network_policy(spec, OWNER, CONFIG)
    router = {"mlops.dev/deployment": "iris", "mlops.dev/track": "router"}
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": router}}]


def test_the_serving_pods_environment_is_what_their_settings_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator names the pod's variables through the contract, and the serving
    image reads them back as the values the operator meant."""
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "serving": {"batching": {"maxBatchSize": 8}}}
    )
    (deployment,) = [
        c for c in render_track(spec, OWNER, "canary", VERSION, CONFIG) if c["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        assert variable["name"].startswith("MLOPS_SERVING_"), variable
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = ServingSettings()
    assert (settings.model_uri, settings.model_digest) == (VERSION.uri, VERSION.digest)
    assert (settings.model_name, settings.model_version, settings.track) == ("iris", "3", "canary")
    assert settings.max_batch_size == 8
    with pytest.raises(KeyError, match="no setting 'modle_uri'"):
        serving_env("modle_uri")


def test_the_routers_environment_is_what_its_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": "iris", "stable": {"version": "3"}, "canary": {"version": "4"}}
    )
    (deployment,) = [
        c for c in render_router(spec, OWNER, "{}", CONFIG) if c["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        assert variable["name"].startswith("MLOPS_ROUTER_"), variable
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = RouterSettings()
    assert (settings.namespace, settings.port) == ("models", 8080)
    assert settings.configmap == deployment["metadata"]["name"]
