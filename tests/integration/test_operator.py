"""The operator against the real control plane: ModelVersions verified and approved,
ModelDeployments rendered, applied, repaired, collected, and honest in status."""

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlops_operator.constants import GROUP, VERSION
from tests.argocd import checked

from .kube import Cluster, wait_until
from .objects import (
    absent_as_none,
    create,
    deployment,
    env_of,
    kubectl_mlops,
    model_deployment,
    model_version,
    patch,
    ready,
)
from .operator_fixture import Operator, condition, get, start_operator, stop_operator

pytestmark = pytest.mark.cluster


PINNED = "registry.example/serving@sha256:" + "5e" * 32


def test_model_deployed_and_ready(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    create(
        cluster, namespace, "modelversions", model_version("1", bundles["1"], aliases=["champion"])
    )
    create(cluster, namespace, "modeldeployments", model_deployment("iris", replicas=2))
    found = wait_until(
        lambda: deployment(cluster, namespace, "iris-stable"), "the stable Deployment", timeout=60
    )
    mdep = get(cluster, "modeldeployments", namespace, "iris")
    owner = found.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "ModelDeployment",
        "iris",
        mdep["metadata"]["uid"],
        True,
    )
    assert found.spec.replicas == 2
    pod = found.spec.template
    container = pod.spec.containers[0]
    assert container.image == "registry.example/mlops-serving:test"
    env = env_of(found)
    assert env["MLOPS_SERVING_MODEL_URI"] == f"file://{bundles['1'][0]}"
    assert env["MLOPS_SERVING_MODEL_DIGEST"] == bundles["1"][1]
    assert env["MLOPS_SERVING_TRACK"] == "stable"
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.metadata.annotations["prometheus.io/scrape"] == "true"
    assert {c.topology_key for c in pod.spec.topology_spread_constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    # The children are applied one after another: the Deployment can come first alone.
    service = wait_until(
        lambda: absent_as_none(
            client.CoreV1Api(cluster.api).read_namespaced_service, "iris-stable", namespace
        ),
        "the stable Service",
    )
    assert service.spec.selector == {"mlops.dev/deployment": "iris", "mlops.dev/track": "stable"}
    pdb = wait_until(
        lambda: absent_as_none(
            client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget,
            "iris-stable",
            namespace,
        ),
        "the stable PodDisruptionBudget",
    )
    assert pdb.spec.max_unavailable == 1

    mdep = wait_until(
        lambda: ready(cluster, namespace, "iris"), "ModelDeployment iris to be Ready", timeout=90
    )
    status = mdep["status"]
    assert status["tracks"]["stable"] == {
        "version": "1",
        "modelVersion": "iris-1",
        "digest": bundles["1"][1],
        "replicas": 2,
        "readyReplicas": 2,
    }
    assert status["ready"] == "2/2"
    assert status["observedGeneration"] == mdep["metadata"]["generation"]
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local"
    waited = cluster.kubectl(
        "wait", "--for=condition=Ready", "mdep/iris", "-n", namespace, "--timeout=30s"
    )
    assert "condition met" in waited.stdout
    header, row = cluster.kubectl("get", "mdep", "iris", "-n", namespace).stdout.splitlines()
    assert header.split() == [
        "NAME",
        "MODEL",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "READY",
        "PHASE",
        "AGE",
    ]
    # Columns are cut where the header's are: an empty one (no canary) is blank.
    starts = [header.index(f"{name} ") for name in header.split()[:-1]] + [header.index("AGE")]
    cells = [row[a:b].strip() for a, b in itertools.pairwise(starts)]
    assert cells == ["iris", "iris", "1", "", "0", "2/2", "Ready"]

    mv = wait_until(
        lambda: (
            (m := get(cluster, "modelversions", namespace, "iris-1"))["status"].get("deployedBy")
            and m
        ),
        "ModelVersion iris-1 to list its deployment",
        timeout=60,
    )
    verified = condition(mv, "ArtifactVerified")
    assert verified is not None
    assert verified["status"] == "True"
    assert mv["status"]["artifact"]["verifiedDigest"] == bundles["1"][1]
    assert mv["status"]["artifact"]["sizeBytes"] == bundles["1"][0].stat().st_size
    assert mv["status"]["deployedBy"] == [{"name": "iris", "track": "stable"}]
    # As Argo CD's health checks read them.
    checked(mv, "Healthy")
    served = get(cluster, "modeldeployments", namespace, "iris")
    checked(served, "Healthy", condition(served, "Ready")["message"])
    # Deletion never waits for the operator, and kopf keeps no state on the objects.
    for obj in (mv, get(cluster, "modeldeployments", namespace, "iris")):
        assert not obj["metadata"].get("finalizers")
        assert not [k for k in obj["metadata"].get("annotations", {}) if "kopf" in k]
        assert "mlops.dev/last-handled-configuration" not in obj["metadata"].get("annotations", {})


def test_version_and_image_changes_roll_out_and_delete_collects(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    for version in ("1", "2"):
        create(cluster, namespace, "modelversions", model_version(version, bundles[version]))
    create(cluster, namespace, "modeldeployments", model_deployment("iris"))
    wait_until(lambda: ready(cluster, namespace, "iris"), "first rollout", timeout=90)
    patch(
        cluster,
        namespace,
        "modeldeployments",
        "iris",
        {"spec": {"stable": {"version": "2"}, "image": PINNED}},
    )
    rolled = wait_until(
        lambda: (
            (d := deployment(cluster, namespace, "iris-stable"))
            and env_of(d)["MLOPS_SERVING_MODEL_DIGEST"] == bundles["2"][1]
            and d
        ),
        "the Deployment to move to version 2",
        timeout=60,
    )
    assert isinstance(rolled, client.V1Deployment)
    assert rolled.spec.template.spec.containers[0].image == PINNED
    mdep = wait_until(
        lambda: (
            (m := ready(cluster, namespace, "iris"))
            and m["status"]["tracks"]["stable"]["version"] == "2"
            and m
        ),
        "the rollout of version 2 to be Ready",
        timeout=90,
    )
    assert mdep["status"]["tracks"]["stable"]["modelVersion"] == "iris-2"

    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "iris"
    )
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    wait_until(
        lambda: (
            not apps.list_namespaced_deployment(namespace).items
            and not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
            and not core.list_namespaced_service(namespace).items
        ),
        "garbage collection of every child",
        timeout=60,
    )


def test_a_network_policy_admits_the_callers_named_and_leaves_with_the_field(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    """The local plane enforces no NetworkPolicy (no CNI here does): this checks the
    object the operator writes and removes, not packets refused."""
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    callers = {"namespaceSelector": {"matchLabels": {"team": "web"}}}
    create(
        cluster,
        namespace,
        "modeldeployments",
        model_deployment("iris", networkPolicy={"from": [callers]}),
    )
    networking = client.NetworkingV1Api(cluster.api)

    def policy() -> client.V1NetworkPolicy | None:
        return absent_as_none(networking.read_namespaced_network_policy, "iris", namespace)

    written = wait_until(policy, "the ModelDeployment's NetworkPolicy", timeout=60)
    assert written.spec.pod_selector.match_labels == {"mlops.dev/deployment": "iris"}
    (rule,) = written.spec.ingress or []
    assert [p.to_dict() for p in rule.ports] == [
        {"port": "http", "protocol": "TCP", "end_port": None}
    ]
    admitted = [
        (
            p.pod_selector and p.pod_selector.match_labels,
            p.namespace_selector and p.namespace_selector.match_labels,
        )
        for p in rule._from
    ]
    assert admitted == [
        ({"mlops.dev/deployment": "iris", "mlops.dev/track": "router"}, None),
        (None, {"team": "web"}),
    ]
    patch(cluster, namespace, "modeldeployments", "iris", {"spec": {"networkPolicy": None}})
    wait_until(lambda: policy() is None, "the NetworkPolicy deleted with its field", timeout=60)


def test_edited_and_deleted_children_are_restored(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    create(cluster, namespace, "modeldeployments", model_deployment("iris", replicas=2))
    wait_until(lambda: ready(cluster, namespace, "iris"), "first rollout", timeout=90)
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    apps.patch_namespaced_deployment(
        "iris-stable",
        namespace,
        {
            "spec": {
                "replicas": 5,
                "template": {"spec": {"containers": [{"name": "serving", "image": "evil:1"}]}},
            }
        },
    )
    wait_until(
        lambda: (
            (d := deployment(cluster, namespace, "iris-stable"))
            and d.spec.replicas == 2
            and d.spec.template.spec.containers[0].image == "registry.example/mlops-serving:test"
        ),
        "the hand edit to be reverted",
        timeout=60,
    )
    uid = core.read_namespaced_service("iris-stable", namespace).metadata.uid
    core.delete_namespaced_service("iris-stable", namespace)
    wait_until(
        lambda: any(
            s.metadata.name == "iris-stable" and s.metadata.uid != uid
            for s in core.list_namespaced_service(namespace).items
        ),
        "the deleted Service to be recreated",
        timeout=60,
    )
    names = sorted(str(s.metadata.name) for s in core.list_namespaced_service(namespace).items)
    assert names == ["iris", "iris-stable"]  # the entry Service and the track's
    assert len(apps.list_namespaced_deployment(namespace).items) == 1


def test_unapproved_version_is_refused_until_approved_by_an_allowed_user(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    create(cluster, namespace, "modeldeployments", model_deployment("iris", requireApproval=True))

    def refused() -> dict[str, Any] | None:
        found = condition(get(cluster, "modeldeployments", namespace, "iris"), "Ready")
        return found if found and found["reason"] == "NotApproved" else None

    reason = wait_until(refused, "the NotApproved condition", timeout=60)
    assert reason["status"] == "False"
    assert "ModelVersion iris-1 (version 1) is not approved" in reason["message"]
    assert deployment(cluster, namespace, "iris-stable") is None

    for user, verbs in (
        ("alice", ["get", "list", "patch", "update"]),
        ("bob", ["get", "list", "patch", "update", "approve"]),
        ("carol", ["get", "list", "patch", "update", "approve"]),
    ):
        grant(cluster, namespace, user, verbs)
    digest = get(cluster, "modelversions", namespace, "iris-1")["spec"]["artifact"]["digest"]

    def annotate(user: str, *pairs: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            "annotate", "--overwrite", "mv", "iris-1", "-n", namespace, f"--as={user}", *pairs,
            check=False,
        )  # fmt: skip

    alice = kubectl_mlops(cluster, "approve", "mv/iris-1", "-n", namespace, "--as=alice")
    assert alice.returncode == 1
    assert "user alice may not approve, reject or revoke ModelVersions" in alice.stderr
    for user, pairs, why in (
        # alice, without the verb, signs as bob
        ("alice", ("approved-by=bob", f"approved-digest={digest}"), "user alice may not approve"),
        # carol may approve, but not in bob's name
        ("carol", ("approved-by=bob", f"approved-digest={digest}"), "your own user name, carol"),
        # bob approves other bytes than the ones pinned
        ("bob", ("approved-by=bob", "approved-digest=sha256:" + "0" * 64), "spec.artifact.digest"),
        # bob approves without saying what
        ("bob", (), "must be your own user name, bob"),
    ):
        denied = annotate(user, "mlops.dev/approval=approved", *(f"mlops.dev/{p}" for p in pairs))
        assert denied.returncode != 0, (user, pairs)
        assert why in denied.stderr, denied.stderr
    notes = get(cluster, "modelversions", namespace, "iris-1")["metadata"].get("annotations", {})
    assert not [k for k in notes if k.startswith("mlops.dev/appro")]

    allowed = kubectl_mlops(cluster, "approve", "mv/iris-1", "-n", namespace, "--as=bob")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == f"modelversion iris-1 approved by bob ({digest})"
    mv = approval_state(cluster, namespace, "Approved")
    assert mv["status"]["approval"]["approvedBy"] == "bob"
    # What bob approved: these bytes, which spec.artifact can no longer be moved off.
    assert mv["status"]["approval"]["approvedDigest"] == digest
    entry = [h for h in mv["status"]["history"] if h["type"] == "Approval"][-1]
    assert (entry["to"], entry["by"]) == ("Approved", "bob")

    def approval_event() -> bool:
        events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
        return any("approved by bob" in e.get("message", "") for e in events)

    wait_until(approval_event, "an Event recording the approval", timeout=30)
    wait_until(
        lambda: ready(cluster, namespace, "iris"), "the approved version to be deployed", timeout=90
    )
    # Revoking is approving's business too.
    for attempt in (
        kubectl_mlops(cluster, "revoke", "mv/iris-1", "-n", namespace, "--as=alice"),
        annotate(
            "alice", "mlops.dev/approval-", "mlops.dev/approved-by-", "mlops.dev/approved-digest-"
        ),
    ):
        assert attempt.returncode != 0
        assert "user alice may not approve" in attempt.stderr
    mv = get(cluster, "modelversions", namespace, "iris-1")
    assert mv["metadata"]["annotations"]["mlops.dev/approved-by"] == "bob"


def test_approval_needs_no_operator_and_revoking_returns_to_pending(
    cluster: Cluster, namespace: str, sole_operator: None, bundles: dict[str, tuple[Path, str]],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The API server enforces approval: it works while no operator runs, and the
    operator records it, with the time the API server admitted it, when it starts."""
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    grant(cluster, namespace, "bob", ["get", "list", "patch", "update", "approve"])
    approved = kubectl_mlops(cluster, "approve", "mv/iris-1", "-n", namespace, "--as=bob")
    assert approved.returncode == 0, approved.stderr
    admitted = next(
        e["time"]
        for e in get(cluster, "modelversions", namespace, "iris-1")["metadata"]["managedFields"]
        if "f:mlops.dev/approval" in e["fieldsV1"].get("f:metadata", {}).get("f:annotations", {})
    )
    # Argo CD, meanwhile, shows a version no operator has looked at as Progressing.
    checked(get(cluster, "modelversions", namespace, "iris-1"), "Progressing")
    started = start_operator(cluster, tmp_path / "operator")
    try:
        mv = approval_state(cluster, namespace, "Approved")
        assert mv["status"]["approval"]["approvedBy"] == "bob"
        assert mv["status"]["approval"]["approvedAt"] == admitted

        revoked = kubectl_mlops(cluster, "revoke", "mv/iris-1", "-n", namespace, "--as=bob")
        assert revoked.returncode == 0, revoked.stderr
        mv = approval_state(cluster, namespace, "Pending")
        assert mv["status"]["approval"] == {"state": "Pending"}
        entry = [h for h in mv["status"]["history"] if h["type"] == "Approval"][-1]
        assert (entry["from"], entry["to"]) == ("Approved", "Pending")
        assert condition(mv, "Approved")["status"] == "False"
    finally:
        stop_operator(started)


def approval_state(cluster: Cluster, namespace: str, state: str) -> dict[str, Any]:
    """ModelVersion iris-1, once its status records the approval state `state`."""

    def recorded() -> dict[str, Any] | None:
        mv = get(cluster, "modelversions", namespace, "iris-1")
        return mv if (mv.get("status") or {}).get("approval", {}).get("state") == state else None

    return wait_until(recorded, f"approval state {state} in iris-1's status", timeout=60)


def grant(cluster: Cluster, namespace: str, user: str, verbs: list[str]) -> None:
    """A Role with `verbs` on ModelVersions, bound to `user`."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=user),
            rules=[
                client.V1PolicyRule(api_groups=[GROUP], resources=["modelversions"], verbs=verbs)
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=user),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name=user
            ),
            subjects=[
                client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=user)
            ],
        ),
    )


def test_alias_move_rolls_out_and_conflicts_are_reported(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    create(
        cluster, namespace, "modelversions", model_version("1", bundles["1"], aliases=["champion"])
    )
    create(cluster, namespace, "modelversions", model_version("2", bundles["2"]))
    create(
        cluster,
        namespace,
        "modeldeployments",
        model_deployment("iris", stable={"alias": "champion"}),
    )
    wait_until(lambda: ready(cluster, namespace, "iris"), "first rollout", timeout=90)
    patch(cluster, namespace, "modelversions", "iris-1", {"spec": {"aliases": []}})
    patch(cluster, namespace, "modelversions", "iris-2", {"spec": {"aliases": ["champion"]}})
    wait_until(
        lambda: (
            (d := deployment(cluster, namespace, "iris-stable"))
            and env_of(d)["MLOPS_SERVING_MODEL_DIGEST"] == bundles["2"][1]
        ),
        "the alias move to roll the deployment to version 2",
        timeout=60,
    )
    create(
        cluster,
        namespace,
        "modelversions",
        {
            **model_version("3", bundles["1"], aliases=["champion"]),
            "metadata": {"name": "iris-3"},
        },
    )
    conflict = wait_until(
        lambda: (
            (c := condition(get(cluster, "modelversions", namespace, "iris-3"), "AliasConflict"))
            and c["status"] == "True"
            and c
        ),
        "the alias conflict to be reported",
        timeout=60,
    )
    assert "alias 'champion' is already held by ModelVersion iris-2" in conflict["message"]


def test_pods_run_in_a_namespace_enforcing_restricted(
    cluster: Cluster, namespace: str, operator: Operator, bundles: dict[str, tuple[Path, str]]
) -> None:
    client.CoreV1Api(cluster.api).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    create(cluster, namespace, "modeldeployments", model_deployment("iris"))
    wait_until(
        lambda: ready(cluster, namespace, "iris"), "Ready under PodSecurity restricted", timeout=90
    )
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace).items
    assert [p.status.phase for p in pods] == ["Running"]
