"""The few API calls the operator makes, on the synchronous Kubernetes client: the
operator's I/O layer. It renders nothing (builders) and remembers nothing between
calls (caches, statusqueue), beyond the client and the approval policy's last answer.

kopf runs synchronous handlers in worker threads, so blocking calls here do not
stall its event loop. Children are written with server-side apply: the same
call creates, updates and repairs them, and it is idempotent, so a reconcile
that is interrupted and run again leaves the same objects.
"""

import base64
import datetime
import functools
import json
import time
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlops_operator import approval
from mlops_operator.constants import (
    FIELD_MANAGER,
    GROUP,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    VERSION,
)
from mlops_operator.metrics import API_REQUESTS

Object = dict[str, Any]
T = TypeVar("T")

# Threads for blocking handler work; the connection pool also serves the status writer's.
WORKERS = 16
POOL_SIZE = 2 * WORKERS

# Kinds the operator creates, and where they live in the API.
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}


@cache
def api_client() -> client.ApiClient:
    """One client for the process: in-cluster credentials, else the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    # One pooled connection per worker thread: a full pool drops connections, and
    # every new one costs both sides a TLS handshake.
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


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
    API_REQUESTS.labels(method).inc()
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


class RejectedError(Exception):
    """The API server refused an object as invalid (400 or 422): sending it again cannot
    help. The message is the server's, which names the field."""


def apply(obj: Object) -> Object:
    """Server-side apply one child; our field manager wins conflicts (hand edits revert)."""
    meta = obj["metadata"]
    path = f"{_collection(obj['kind'], meta['namespace'])}/{meta['name']}"
    try:
        applied: Object = _call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
    except ApiException as error:
        if error.status not in (400, 422):
            raise
        raise RejectedError(_message(error)) from None
    return applied


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


CONTROLLERS = {"kube-controller-manager"}


def changed_by_others(child: Object) -> bool:
    """Whether someone other than us (and the built-in controllers) wrote the child's
    main resource since our last apply: a hand edit to repair. Status and scale
    subresource writes do not count; managedFields carry the times."""
    entries = child.get("metadata", {}).get("managedFields") or []
    ours = [e.get("time", "") for e in entries if e.get("manager") == FIELD_MANAGER]
    if not ours:
        return True
    last_apply = max(ours)
    return any(
        e.get("manager") not in CONTROLLERS | {FIELD_MANAGER}
        and not e.get("subresource")
        and e.get("time", "") >= last_apply
        for e in entries
    )


def children(namespace: str, owner: str) -> list[Object]:
    """Every child object of one ModelDeployment, of every kind we create."""
    selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_MANAGED_BY}={MANAGED_BY}"
    found: list[Object] = []
    for kind in CHILD_KINDS:
        path = _collection(kind, namespace)
        # Where the Gateway API is not installed, no HTTPRoute can be left over.
        listed = _unless_absent(
            functools.partial(_call, "GET", path, query=[("labelSelector", selector)])
        )
        for item in (listed or {}).get("items", []):
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


class CredentialsError(ValueError):
    """A Secret that cannot be used; the message names it, never its contents."""


def secret_value(namespace: str, name: str, key: str, *, label: str | None = None) -> str:
    """One key of a Secret, decoded; a clear error names a missing Secret or key. With
    `label`, only a Secret that carries it set to "true" is read."""
    try:
        secret = client.CoreV1Api(api_client()).read_namespaced_secret(name, namespace)
    except ApiException as error:
        raise CredentialsError(f"Secret {name}: {error.reason}") from None
    labels = (secret.metadata.labels if secret.metadata else None) or {}
    if label is not None and labels.get(label) != "true":
        raise CredentialsError(
            f"Secret {name} is not labelled {label}=true; the operator reads only Secrets "
            "that opt in"
        )
    data = (secret.data or {}).get(key)
    if data is None:
        raise CredentialsError(f"Secret {name} has no key {key!r}")
    try:
        return base64.b64decode(data).decode()
    except ValueError:
        raise CredentialsError(f"Secret {name}: key {key!r} is not UTF-8 text") from None


def _unless_absent(read: Callable[[], T]) -> T | None:
    """What `read` returns, or None when the object does not exist (404)."""
    try:
        return read()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def service_ip(namespace: str, name: str) -> str | None:
    """A Service's ClusterIP, or None if there is no such Service."""
    core = client.CoreV1Api(api_client())
    service = _unless_absent(lambda: core.read_namespaced_service(name, namespace))
    return service.spec.cluster_ip if service and service.spec else None


def ready_pod_ips(namespace: str, selector: str) -> list[str]:
    """The pod IPs of the Ready pods that match a label selector."""
    pods = client.CoreV1Api(api_client()).list_namespaced_pod(namespace, label_selector=selector)
    return [
        pod.status.pod_ip
        for pod in pods.items
        if pod.status
        and pod.status.pod_ip
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def list_jobs(namespace: str, selector: str) -> list[Object]:
    listed = _call(
        "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", query=[("labelSelector", selector)]
    )
    return list(listed.get("items", []))


CREATED_KINDS = {"Job": "/apis/batch/v1", "ConfigMap": "/api/v1"}


def create(kind: str, obj: Object) -> Object:
    """Create an object the operator makes once and never updates (a retraining Job)."""
    plural = f"{kind.lower()}s"
    path = f"{CREATED_KINDS[kind]}/namespaces/{obj['metadata']['namespace']}/{plural}"
    created: Object = _call("POST", path, body=obj, query=[("fieldManager", FIELD_MANAGER)])
    return created


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


def read_custom(plural: str, namespace: str, name: str) -> Object | None:
    def read() -> Object:
        found: Object = custom_objects().get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, plural, name
        )
        return found

    return _unless_absent(read)


def patch_status(plural: str, namespace: str, name: str, status: Object) -> Object | None:
    """Merge-patch the status subresource: the object as written, or None if it vanished."""
    try:
        written: Object = _call(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return None
    return written


def annotate(plural: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
    """Merge-patch annotations onto a custom object (never its spec)."""
    _call(
        "PATCH",
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}",
        body={"metadata": {"annotations": annotations}},
        content_type="application/merge-patch+json",
    )


_POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
_BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
POLICY_CHECK_SECONDS = 30.0
_policy_checked: tuple[float, str | None] = (-POLICY_CHECK_SECONDS, None)


def approval_unenforced() -> str | None:
    """None while the API server enforces approvals (approval.py), else why not.
    Asked at most every POLICY_CHECK_SECONDS."""
    global _policy_checked  # noqa: PLW0603 - one answer for the process, refreshed
    checked_at, reason = _policy_checked
    if time.monotonic() - checked_at < POLICY_CHECK_SECONDS:
        return reason
    what = f"the ValidatingAdmissionPolicy {approval.POLICY}"
    try:
        found = [_read_path(f"{path}/{approval.POLICY}") for path in (_POLICIES, _BINDINGS)]
    except ApiException as error:
        reason = f"{what} cannot be read ({error.status} {error.reason})"
    else:
        reason = (
            None
            if approval.in_force(*found)
            else f"{what} is not installed, or not bound with validationActions [Deny] to "
            "every namespace (kubectl apply -f crds/)"
        )
    _policy_checked = (time.monotonic(), reason)
    return reason


def _read_path(path: str) -> Object | None:
    found: Object | None = _unless_absent(lambda: _call("GET", path))
    return found


def list_custom(plural: str, namespace: str | None) -> list[Object]:
    api = custom_objects()
    listed: Any = (
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        if namespace
        else api.list_cluster_custom_object(GROUP, VERSION, plural)
    )
    items: list[Object] = listed["items"]
    return items


def post_event(obj: Object, kind: str, reason: str, message: str) -> None:
    """A core/v1 Event on `obj`; losing one is logged by the caller, never fatal."""
    meta = obj["metadata"]
    stamp = datetime.datetime.now(datetime.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(
            api_version=obj.get("apiVersion"),
            kind=obj.get("kind"),
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid"),
        ),
        type=kind,
        reason=reason,
        message=message[:1024],
        source=client.V1EventSource(component=FIELD_MANAGER),
        reporting_component=FIELD_MANAGER,
        reporting_instance=FIELD_MANAGER,
        first_timestamp=stamp,
        last_timestamp=stamp,
        count=1,
    )
    client.CoreV1Api(api_client()).create_namespaced_event(meta["namespace"], event)
