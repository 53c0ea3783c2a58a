"""The few API calls the operator makes, on the synchronous Kubernetes client.

kopf runs synchronous handlers in worker threads, so blocking calls here do not
stall its event loop. Children are written with server-side apply: the same
call creates, updates and repairs them, and it is idempotent, so a reconcile
that is interrupted and run again leaves the same objects.
"""

import threading
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlops_operator.constants import (
    FIELD_MANAGER,
    GROUP,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    VERSION,
)

Object = dict[str, Any]

# Kinds the operator creates, and where they live in the API.
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}


@cache
def api_client() -> client.ApiClient:
    """One client for the process: in-cluster credentials, else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> Any:
    """One raw API request (for paths the typed client has no method for), JSON back."""
    api = api_client()
    serialized = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized)
    response.read()  # type: ignore[no-untyped-call]
    return api.response_deserialize(response, {"2XX": "object"}).data


def _collection(kind: str, namespace: str) -> str:
    prefix, plural = CHILD_KINDS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}"


def apply(obj: Object) -> Object:
    """Server-side apply one child; our field manager wins conflicts (hand edits revert)."""
    meta = obj["metadata"]
    path = f"{_collection(obj['kind'], meta['namespace'])}/{meta['name']}"
    applied: Object = _call(
        "PATCH",
        path,
        body=obj,
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )
    return applied


def children(namespace: str, owner: str) -> list[Object]:
    """Every child object of one ModelDeployment, of every kind we create."""
    selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_MANAGED_BY}={MANAGED_BY}"
    found: list[Object] = []
    for kind in CHILD_KINDS:
        listed = _call("GET", _collection(kind, namespace), query=[("labelSelector", selector)])
        for item in listed.get("items", []):
            item["kind"] = kind
            found.append(item)
    return found


def delete(kind: str, namespace: str, name: str) -> None:
    try:
        _call(
            "DELETE",
            f"{_collection(kind, namespace)}/{name}",
            body={"propagationPolicy": "Background"},
        )
    except ApiException as error:
        if error.status != 404:
            raise


def read_child(kind: str, namespace: str, name: str) -> Object | None:
    try:
        found: Object = _call("GET", f"{_collection(kind, namespace)}/{name}")
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def custom_objects() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def list_model_versions(namespace: str, model: str) -> list[Object]:
    """ModelVersions of one model, by the spec.model selectable field where the server has it."""
    api = custom_objects()
    try:
        listed: Any = api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelversions", field_selector=f"spec.model={model}"
        )
    except ApiException as error:
        if error.status != 400:  # servers before 1.31 have no selectable fields
            raise
        listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions")
    return [mv for mv in listed["items"] if mv.get("spec", {}).get("model") == model]


def list_model_deployments(namespace: str) -> list[Object]:
    listed: Any = custom_objects().list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments"
    )
    items: list[Object] = listed["items"]
    return items


def read_custom(plural: str, namespace: str, name: str) -> Object | None:
    try:
        found: Object = custom_objects().get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def patch_status(plural: str, namespace: str, name: str, status: Object) -> None:
    """Merge-patch the status subresource; a vanished object is not an error."""
    try:
        custom_objects().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}
        )
    except ApiException as error:
        if error.status != 404:
            raise


_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def object_lock(namespace: str, name: str) -> threading.Lock:
    """One lock per object, so that reconciles of it from several triggers take turns."""
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def may(
    *,
    user: str,
    groups: list[str],
    uid: str | None,
    extra: dict[str, list[str]] | None,
    verb: str,
    plural: str,
    namespace: str,
    name: str,
) -> bool:
    """Ask the API server's authorizers (RBAC) whether a user may act on a custom object."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
            uid=uid,
            extra=extra,
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=plural, verb=verb, namespace=namespace, name=name
            ),
        )
    )
    answer = client.AuthorizationV1Api(api_client()).create_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)
