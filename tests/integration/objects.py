"""The project's objects as the integration tests write them, and reads of what the
operator made of them."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlops_operator.constants import GROUP, VERSION

from .kube import ON_KWOK, Cluster
from .operator_fixture import condition, get

T = TypeVar("T")


def model_version(
    version: str,
    built: tuple[Path, str],
    *,
    uri: str | None = None,
    model: str = "iris",
    **spec: Any,
) -> dict[str, Any]:
    """ModelVersion <model>-<version> of the bundle `built`, at `uri` (by default its file)."""
    path, digest = built
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": f"{model}-{version}"},
        "spec": {
            "model": model,
            "version": version,
            "framework": "sklearn",
            "artifact": {"uri": uri or f"file://{path}", "digest": digest},
            **spec,
        },
    }


def model_deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": "iris", "stable": {"version": "1"}, "scheduling": ON_KWOK, **spec},
    }


def create(cluster: Cluster, namespace: str, plural: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )


def patch(cluster: Cluster, namespace: str, plural: str, name: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, body
    )


def absent_as_none(read: Callable[[str, str], T], name: str, namespace: str) -> T | None:
    try:
        return read(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def deployment(cluster: Cluster, namespace: str, name: str) -> client.V1Deployment | None:
    return absent_as_none(client.AppsV1Api(cluster.api).read_namespaced_deployment, name, namespace)


def env_of(found: client.V1Deployment) -> dict[str, str]:
    return {
        e.name: e.value for e in found.spec.template.spec.containers[0].env if e.value is not None
    }


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    mdep = get(cluster, "modeldeployments", namespace, name)
    ready_condition = condition(mdep, "Ready")
    if (
        ready_condition
        and ready_condition["status"] == "True"
        and mdep["status"].get("phase") == "Ready"
    ):
        return mdep
    return None


def kubectl_mlops(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl mlops ...` as a user runs it: kubectl finds the plugin on PATH."""
    kubectl = cluster.tool("kubectl")
    path = os.pathsep.join((str(Path(sys.executable).parent), str(Path(kubectl).parent),
                            os.environ.get("PATH", "")))  # fmt: skip
    return subprocess.run(
        [kubectl, "mlops", *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
