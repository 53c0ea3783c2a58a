"""The operator converges through crashes: SIGKILL at random points, and an API server
restart underneath it."""

import http.server
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlops_operator.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION

from .kube import ROOT, Cluster, wait_until
from .objects import create, deployment, model_deployment, model_version, ready
from .operator_fixture import Operator, condition, get, start_operator, stop_operator

pytestmark = pytest.mark.cluster
COUNT = 20


def managed(cluster: Cluster, namespace: str) -> dict[str, list[Any]]:
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    return {
        "Deployment": apps.list_namespaced_deployment(namespace, label_selector=selector).items,
        "Service": core.list_namespaced_service(namespace, label_selector=selector).items,
    }


def test_kill_9_at_random_points_always_converges(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bundles: dict[str, tuple[Path, str]],
) -> None:
    rng = random.Random(20261129)
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    create(cluster, namespace, "modelversions", model_version("2", bundles["2"]))
    kills = 0
    for index in range(COUNT):
        create(
            cluster,
            namespace,
            "modeldeployments",
            model_deployment(f"m{index}", replicas=1 + index % 2),
        )
        if index % 3 == 0:
            client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "modeldeployments",
                f"m{index}",
                {"spec": {"stable": {"version": "2"}}},
            )
        if rng.random() < 0.4:
            time.sleep(rng.uniform(0.0, 1.5))
            operator.kill()
            kills += 1
            operator.spawn()
            wait_until(operator.alive, "the operator to come back", timeout=60)
    assert kills >= 5

    wait_until(
        lambda: all(ready(cluster, namespace, f"m{i}") for i in range(COUNT)),
        f"all {COUNT} ModelDeployments to be Ready",
        timeout=180,
    )
    objects = managed(cluster, namespace)
    owners = {
        m["metadata"]["uid"]: m["metadata"]["name"]
        for m in client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments"
        )["items"]
    }
    expected = {
        "Deployment": [f"m{i}-stable" for i in range(COUNT)],
        "Service": [f"m{i}{suffix}" for i in range(COUNT) for suffix in ("", "-stable")],
    }
    for kind, items in objects.items():
        names = sorted(item.metadata.name for item in items)
        assert names == sorted(expected[kind]), kind  # none missing, none twice
        for item in items:
            (reference,) = item.metadata.owner_references
            assert owners[reference.uid] == item.metadata.name.removesuffix("-stable")  # no orphans
    versions = {
        d.metadata.name: d.spec.template.metadata.labels["mlops.dev/version"]
        for d in objects["Deployment"]
    }
    assert versions == {f"m{i}-stable": "2" if i % 3 == 0 else "1" for i in range(COUNT)}
    replicas = {d.metadata.name: d.spec.replicas for d in objects["Deployment"]}
    assert replicas == {f"m{i}-stable": 1 + i % 2 for i in range(COUNT)}


def test_api_server_restart_under_the_operator(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bundles: dict[str, tuple[Path, str]],
) -> None:
    if not cluster.local:
        pytest.skip("restarts a component of the local plane")
    create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
    create(cluster, namespace, "modeldeployments", model_deployment("before"))
    wait_until(lambda: ready(cluster, namespace, "before"), "the first deployment", timeout=90)
    cluster_sh = ["bash", str(ROOT / "hack/cluster.sh")]
    kubeconfig = subprocess.run(
        [*cluster_sh, "kubeconfig"], capture_output=True, text=True, check=True
    )
    pid_file = Path(kubeconfig.stdout.strip()).parent / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), "the API server to exit", timeout=90)
    subprocess.run([*cluster_sh, "up"], check=True, capture_output=True, timeout=300)
    create(cluster, namespace, "modeldeployments", model_deployment("after", replicas=2))
    wait_until(
        lambda: ready(cluster, namespace, "after"),
        "a deployment made after the restart",
        timeout=120,
    )
    assert operator.process.poll() is None
    client.AppsV1Api(cluster.api).patch_namespaced_deployment(
        "before-stable", namespace, {"spec": {"replicas": 4}}
    )
    wait_until(
        lambda: (
            client.AppsV1Api(cluster.api)
            .read_namespaced_deployment("before-stable", namespace)
            .spec.replicas
            == 1
        ),
        "a hand edit after the restart to be reverted",
        timeout=60,
    )


def test_a_refused_reconcile_is_retried_long_before_the_resync(
    cluster: Cluster,
    namespace: str,
    sole_operator: None,
    bundles: dict[str, tuple[Path, str]],
    tmp_path: Path,
) -> None:
    """An admission policy refuses every Deployment in the namespace for a while, so the
    ModelDeployment's reconcile raises. kopf does not retry event handlers and the resync
    is an hour away here: the operator's own retries must bring the Deployment once the
    policy is lifted."""
    admission = client.AdmissionregistrationV1Api(cluster.api)
    name = f"refuse-deployments-{namespace}"
    deployments = {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["deployments"],
    }
    # The client's stubs want its model classes; the API takes these dicts as they are.
    policy: Any = {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [deployments]},
            "validations": [{"expression": "false", "message": "refused for a while"}],
        },
    }
    only_here = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    binding: Any = {
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": only_here},
        },
    }
    probe: Any = {
        "metadata": {"name": "probe"},
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "c", "image": "registry.example/c"}]},
            },
        },
    }
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)

    def refused() -> bool:
        try:
            client.AppsV1Api(cluster.api).create_namespaced_deployment(
                namespace, probe, dry_run="All"
            )
        except ApiException as error:
            return error.status in {400, 403, 422}
        return False

    running = None
    try:
        wait_until(refused, "the admission policy to be enforced", timeout=60)
        running = start_operator(cluster, tmp_path / "operator", MLOPS_RESYNC_SECONDS="3600")
        create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
        create(cluster, namespace, "modeldeployments", model_deployment("held"))
        failures = f"reconcile of modeldeployments {namespace}/held failed; it will be retried"
        log = running.log
        wait_until(
            lambda: log.read_text().count(failures) >= 3,
            "the refused reconcile to fail, and be retried twice",
            timeout=60,
        )
        assert deployment(cluster, namespace, "held-stable") is None
        ready = condition(get(cluster, "modeldeployments", namespace, "held"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ChildRejected")
        assert "refused for a while" in ready["message"]
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)
        wait_until(
            lambda: deployment(cluster, namespace, "held-stable") is not None,
            "the Deployment, once the policy is lifted",
            timeout=120,
        )
    finally:
        if running is not None:
            stop_operator(running)
        for delete in (
            admission.delete_validating_admission_policy_binding,
            admission.delete_validating_admission_policy,
        ):
            try:
                delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise


def test_a_dripping_artifact_server_and_20_edits_stall_nothing_else(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    bundles: dict[str, tuple[Path, str]],
) -> None:
    """ModelVersion authors point 20 versions at a server that never finishes (more
    than there are reconcile workers), and edit one of them 20 times. Fetches run
    outside the reconcile workers, one per ModelVersion at a time: another model
    deploys at once, and /healthz stays green."""
    requested: list[str] = []
    drip = dripping_server(requested)
    base = f"http://127.0.0.1:{drip.server_address[1]}"
    try:
        for version in range(100, 120):
            create(
                cluster,
                namespace,
                "modelversions",
                model_version(str(version), bundles["1"], uri=f"{base}/{version}", model="stuck"),
            )
        wait_until(lambda: requested, "the operator to start fetching", timeout=30)
        custom = client.CustomObjectsApi(cluster.api)
        for edit in range(20):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelversions", "stuck-100",
                {"spec": {"metrics": {"edit": float(edit)}}},
            )  # fmt: skip
        create(cluster, namespace, "modelversions", model_version("1", bundles["1"]))
        create(cluster, namespace, "modeldeployments", model_deployment("iris"))
        # The fetches' deadline is 60 s: on a stalled operator, nothing moves before.
        wait_until(lambda: ready(cluster, namespace, "iris"), "another model to deploy", timeout=30)
        assert operator.alive()
        # Each edit is observed in its turn (they queue behind one another, not behind
        # the fetch), while the fetch still runs.
        stuck = wait_until(
            lambda: (
                (m := get(cluster, "modelversions", namespace, "stuck-100"))["status"].get(
                    "observedGeneration"
                )
                == m["metadata"]["generation"]
                and m
            ),
            "every edit of the stuck version to be observed",
            timeout=30,
        )
        assert stuck["status"]["phase"] == "Verifying"
        assert condition(stuck, "ArtifactVerified")["reason"] == "Verifying"
        assert requested.count("/100") == 1, "one fetch per ModelVersion at a time"
        assert len(requested) == len(set(requested))
    finally:
        drip.shutdown()
        drip.server_close()


def dripping_server(requested: list[str]) -> http.server.ThreadingHTTPServer:
    """A server on loopback that sends a byte of its answer every half second, forever
    (until shut down); it records the path of each request."""
    stop = threading.Event()

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            self.send_response(200)
            self.end_headers()
            try:
                while not stop.wait(0.5):
                    self.wfile.write(b"x")
                    self.wfile.flush()
            except OSError:
                return

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    original = server.shutdown

    def shutdown() -> None:
        stop.set()
        original()

    server.shutdown = shutdown  # type: ignore[method-assign]
    return server


def test_healthz_fails_once_no_worker_was_free_for_stuck_seconds(
    cluster: Cluster, tmp_path: Path
) -> None:
    """kopf answers /healthz while its event loop runs, stuck workers or not; the
    operator's probe makes it fail. Here every moment counts as stuck (the heartbeat
    itself is tested in tests/unit/test_health.py)."""
    stuck = start_operator(
        cluster,
        tmp_path / "operator",
        wait=False,
        MLOPS_STUCK_SECONDS="0.000001",
        MLOPS_NAMESPACES='["nothing-here"]',
    )
    try:
        assert wait_until(stuck.health, "/healthz to answer", timeout=60) == 500
        wait_until(
            lambda: "no reconcile worker has been free for" in stuck.logs(),
            "the reason in the operator's log",
            timeout=10,
        )
    finally:
        stop_operator(stuck)
