"""Smoke tests that prove the control plane is real: scheduling, controllers,
garbage collection, RBAC, PodSecurity admission and pinned versions."""

import json
import subprocess

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kube import ON_KWOK, ROOT, Cluster, wait_until

pytestmark = pytest.mark.cluster

KWOK_NODES = {"kwok-node-0", "kwok-node-1"}


def pinned(name: str) -> str:
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise KeyError(name)


def restricted_container(name: str = "app") -> client.V1Container:
    return client.V1Container(
        name=name,
        image="registry.example/app:1",
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=65532,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )


def kwok_pod_spec(*containers: client.V1Container) -> client.V1PodSpec:
    """A pod spec for the kwok nodes: these tests are about the API, not running pods."""
    return client.V1PodSpec(
        containers=list(containers),
        node_selector=ON_KWOK["nodeSelector"],
        tolerations=[client.V1Toleration(**t) for t in ON_KWOK["tolerations"]],
    )


def test_deployment_becomes_ready_on_kwok_nodes_and_is_garbage_collected(
    cluster: Cluster, namespace: str
) -> None:
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=kwok_pod_spec(restricted_container()),
                ),
            ),
        ),
    )
    wait_until(
        lambda: (
            apps.read_namespaced_deployment_status("smoke", namespace).status.ready_replicas == 2
        ),
        "deployment smoke to report readyReplicas 2",
    )
    pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert len(pods) == 2
    if cluster.local:
        assert {pod.spec.node_name for pod in pods} <= KWOK_NODES
    assert all(pod.status.phase == "Running" for pod in pods)
    assert len(apps.list_namespaced_replica_set(namespace).items) == 1

    apps.delete_namespaced_deployment("smoke", namespace)
    wait_until(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        "garbage collection of the ReplicaSet and its pods",
    )


def test_service_account_without_binding_is_denied(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    base = cluster.api.configuration
    configuration = client.Configuration(
        host=base.host, api_key={"authorization": f"Bearer {token}"}
    )
    configuration.ssl_ca_cert = base.ssl_ca_cert
    with client.ApiClient(configuration) as as_nobody:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_nobody).list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in str(denied.value.body)
        # The same token is authenticated, so the 403 is RBAC's verdict, not a login failure.
        review = client.AuthenticationV1Api(as_nobody).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"


def test_podsecurity_restricted_rejects_privileged_pod(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="app",
                    image="registry.example/app:1",
                    security_context=client.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    message = json.loads(str(rejected.value.body))["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message
    assert not core.list_namespaced_pod(namespace).items

    compliant = client.V1Pod(
        metadata=client.V1ObjectMeta(name="compliant"),
        spec=kwok_pod_spec(restricted_container()),
    )
    core.create_namespaced_pod(namespace, compliant)
    wait_until(
        lambda: core.read_namespaced_pod("compliant", namespace).status.phase == "Running",
        "the compliant pod to run",
    )


def test_kubectl_reports_pinned_server_version(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("the pinned version applies to the local plane only")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")
    assert version["clientVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")


def test_helm_runs(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("the pinned version applies to the local plane only")
    out = subprocess.run(
        [cluster.tool("helm"), "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(pinned("HELM_VERSION"))
