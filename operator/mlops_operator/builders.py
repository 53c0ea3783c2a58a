"""Pure builders: a ModelDeployment's spec and its resolved ModelVersions in, the
Kubernetes objects of each track out. No client, no kopf, no I/O, so every
object the operator applies can be checked in unit tests (import-linter keeps
it that way).
"""

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from mlops_contract.routing import TABLE_KEY
from mlops_contract.settings import RouterSettings
from mlops_contract.settings import env as serving_env

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.constants import (
    ANNOTATION_MODEL_VERSION,
    API_VERSION,
    ARTIFACT_CACHE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_NAME,
    LABEL_TRACK,
    LABEL_VERIFIED_BY_POD,
    LABEL_VERSION,
    MANAGED_BY,
    PVC_ROOT,
    SERVING_PORT,
    TERMINATION_LOG,
    VERIFY_CONTAINER,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace: its name."""

Manifest = dict[str, Any]
SECRETS_ROOT = "/var/run/secrets/mlops"
ROUTER = "router"
ROUTER_TABLE_DIR = "/etc/mlops-router"
SECURITY_CONTEXT: Manifest = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
SCRAPED = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(SERVING_PORT),
    "prometheus.io/path": "/metrics",
}
"""Pod annotations for Prometheus' annotation-based discovery."""
POD_SECURITY_CONTEXT: Manifest = {
    "runAsNonRoot": True,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class ResolvedVersion:
    """The ModelVersion a track runs, as the builders need it."""

    object_name: str
    model: str
    version: str
    uri: str
    digest: str | None
    secret_name: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class RenderConfig:
    """Operator-wide defaults."""

    image: str
    default_replicas: int = 1
    cluster_domain: str = "cluster.local"
    default_requests: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "100m", "memory": "256Mi"}
    )
    """Requests of a serving container whose ModelDeployment sets no resources: without
    any, the scheduler packs pods on a node as if they cost nothing, and they are the
    first evicted (BestEffort)."""
    scratch_size_limit: str = "8Gi"
    """sizeLimit of the serving pods' /tmp emptyDir, which holds the verified copy of
    the artifact and its unpacked bundle."""
    operator_namespace: str | None = None
    """Where the operator runs, which a ModelDeployment's NetworkPolicy admits."""


def child_name(owner: str, track: str) -> str:
    """`<owner>-<track>`, shortened with a hash when it would pass 63 characters."""
    name = f"{owner}-{track}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{owner[: 63 - len(track) - 10]}-{digest}-{track}"


def selector_labels(owner: Owner, track: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: owner.name, LABEL_TRACK: track}


def labels(owner: Owner, track: str, version: ResolvedVersion) -> dict[str, str]:
    return {
        **selector_labels(owner, track),
        LABEL_NAME: "mlops-serving",
        LABEL_COMPONENT: f"track-{track}",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MODEL: version.model,
        LABEL_VERSION: version.version[:63],
    }


def owner_references(owner: Owner) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _metadata(owner: Owner, track: str, version: ResolvedVersion) -> dict[str, Any]:
    return {
        "name": child_name(owner.name, track),
        "namespace": owner.namespace,
        "labels": labels(owner, track, version),
        "ownerReferences": owner_references(owner),
    }


def replicas_of(spec: ModelDeploymentSpec, config: RenderConfig, share: int = 100) -> int:
    """A track's replicas: the spec's count (or the HPA's minimum), scaled to the
    track's share of traffic, and never below one."""
    if spec.autoscaling is not None:
        return scaled(spec.autoscaling.min_replicas, share)
    total = spec.replicas if spec.replicas is not None else config.default_replicas
    return 0 if total == 0 else scaled(total, share)


def scaled(count: int, share: int) -> int:
    """`share` percent of `count`, rounded up, at least one: a track that serves any
    traffic (or only header routes, at weight 0) needs a pod."""
    return max(1, math.ceil(count * share / 100))


def _artifact_mounts(
    version: ResolvedVersion, config: RenderConfig
) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """Volumes, mounts and env that give the pod its artifact and credentials."""
    volumes: list[Manifest] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": config.scratch_size_limit}}
    ]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - the emptyDir
    env: list[Manifest] = []
    parsed = urlparse(version.uri)
    if parsed.scheme == "pvc":
        volumes.append(
            {
                "name": "model-store",
                "persistentVolumeClaim": {"claimName": parsed.netloc, "readOnly": True},
            }
        )
        mounts.append(
            {"name": "model-store", "mountPath": f"{PVC_ROOT}/{parsed.netloc}", "readOnly": True}
        )
    if version.secret_name and version.secret_key:
        path = f"{SECRETS_ROOT}/artifact"
        volumes.append(
            {
                "name": "artifact-credentials",
                "secret": {
                    "secretName": version.secret_name,
                    "items": [{"key": version.secret_key, "path": "credentials"}],
                },
            }
        )
        mounts.append({"name": "artifact-credentials", "mountPath": path, "readOnly": True})
        env.append(
            {"name": serving_env("artifact_credentials_file"), "value": f"{path}/credentials"}
        )
    return volumes, mounts, env


def _serving_env(
    spec: ModelDeploymentSpec, owner: Owner, track: str, version: ResolvedVersion
) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": serving_env("model_uri"), "value": version.uri},
        {"name": serving_env("model_name"), "value": spec.model},
        {"name": serving_env("model_version"), "value": version.version},
        {"name": serving_env("track"), "value": track},
        {"name": serving_env("port"), "value": str(SERVING_PORT)},
        {"name": serving_env("cache_dir"), "value": ARTIFACT_CACHE},
        {
            "name": serving_env("capture_sample_rate"),
            "value": str(spec.serving.capture.sample_rate),
        },
    ]
    if spec.serving.capture.metrics:
        env.append({"name": serving_env("capture_metrics"), "value": "true"})
    if version.digest:
        env.insert(1, {"name": serving_env("model_digest"), "value": version.digest})
    if spec.serving.batching is not None:
        env.append(
            {
                "name": serving_env("max_batch_size"),
                "value": str(spec.serving.batching.max_batch_size),
            }
        )
        env.append(
            {
                "name": serving_env("max_latency_ms"),
                "value": str(spec.serving.batching.max_latency_ms),
            }
        )
    if spec.serving.auth_secret_ref is not None:
        env.append({"name": serving_env("auth_token_file"), "value": f"{SECRETS_ROOT}/auth/token"})
    if spec.resources and spec.resources.limits and "cpu" in spec.resources.limits:
        env.append(
            {
                "name": serving_env("workers"),
                "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}},
            }
        )
    return env


def render_deployment(
    spec: ModelDeploymentSpec,
    owner: Owner,
    track: str,
    version: ResolvedVersion,
    config: RenderConfig,
    *,
    share: int = 100,
) -> Manifest:
    """The track's Deployment: the serving image pinned to the artifact and its digest,
    probes on the health routes, restricted security context, spread across zones."""
    volumes, mounts, artifact_env = _artifact_mounts(version, config)
    if spec.serving.auth_secret_ref is not None:
        ref = spec.serving.auth_secret_ref
        volumes.append(
            {
                "name": "auth",
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "token"}]},
            }
        )
        mounts.append({"name": "auth", "mountPath": f"{SECRETS_ROOT}/auth", "readOnly": True})
    env = [*_serving_env(spec, owner, track, version), *artifact_env]
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]
    container: Manifest = {
        "name": "serving",
        "image": spec.image or config.image,
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": mounts,
        "startupProbe": _probe("/v2/health/ready", period=2, failures=150),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "securityContext": SECURITY_CONTEXT,
    }
    container["resources"] = (
        spec.resources.model_dump(by_alias=True, exclude_none=True)
        if spec.resources is not None
        else {"requests": dict(config.default_requests)}
    )
    pod_labels = labels(owner, track, version)
    init_containers: list[Manifest] = []
    if urlparse(version.uri).scheme == "pvc":
        # The operator cannot read a claim: the pod checks the digest before serving, and
        # its verdict (the termination message) reaches the ModelVersion's status.
        init_containers.append(
            {
                **{k: v for k, v in container.items() if not k.endswith(("Probe", "ports"))},
                "name": VERIFY_CONTAINER,
                "args": ["verify"],
                "env": [*env, {"name": serving_env("report_file"), "value": TERMINATION_LOG}],
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "File",
            }
        )
        pod_labels[LABEL_VERIFIED_BY_POD] = "true"
    deployment: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, track, version),
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(owner, track)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {**SCRAPED, ANNOTATION_MODEL_VERSION: version.object_name},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": [container],
                    "volumes": volumes,
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": [
                        _spread("topology.kubernetes.io/zone", owner, track),
                        _spread("kubernetes.io/hostname", owner, track),
                    ],
                },
            },
        },
    }
    deployment["spec"]["template"]["spec"].update(_scheduling(spec))
    if spec.autoscaling is None:
        # With an HPA the replica count is the HPA's to set; applying one would fight it.
        deployment["spec"]["replicas"] = replicas_of(spec, config, share)
    return deployment


def _scheduling(spec: ModelDeploymentSpec) -> Manifest:
    """The pod spec's fields from spec.scheduling; only those the user set."""
    scheduling = spec.scheduling
    fields: Manifest = {}
    if scheduling.node_selector:
        fields["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        fields["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in scheduling.tolerations
        ]
    if scheduling.affinity:
        fields["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        fields["priorityClassName"] = scheduling.priority_class_name
    return fields


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _spread(key: str, owner: Owner, track: str) -> Manifest:
    return {
        "maxSkew": 1,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector_labels(owner, track)},
    }


def render_service(owner: Owner, track: str, version: ResolvedVersion) -> Manifest:
    """A ClusterIP Service for the track's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, track, version),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner, track),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_hpa(
    spec: ModelDeploymentSpec, owner: Owner, track: str, version: ResolvedVersion, share: int = 100
) -> Manifest | None:
    """An autoscaling/v2 HPA on CPU, when spec.autoscaling is set; its bounds follow the
    track's share of traffic."""
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, track, version),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": child_name(owner.name, track),
            },
            "minReplicas": scaled(scaling.min_replicas, share),
            "maxReplicas": scaled(scaling.max_replicas, share),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def render_pdb(
    spec: ModelDeploymentSpec,
    owner: Owner,
    track: str,
    version: ResolvedVersion,
    config: RenderConfig,
    *,
    share: int = 100,
) -> Manifest | None:
    """Keep one pod during voluntary disruptions, when the track has more than one."""
    if replicas_of(spec, config, share) < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, track, version),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(owner, track)}},
    }


def render_track(
    spec: ModelDeploymentSpec,
    owner: Owner,
    track: str,
    version: ResolvedVersion,
    config: RenderConfig,
    *,
    share: int = 100,
) -> list[Manifest]:
    """Every child of one track, in apply order, sized for `share` percent of traffic."""
    children = [
        render_deployment(spec, owner, track, version, config, share=share),
        render_service(owner, track, version),
        render_hpa(spec, owner, track, version, share),
        render_pdb(spec, owner, track, version, config, share=share),
    ]
    return [child for child in children if child is not None]


def entry_name(owner: Owner) -> str:
    """The ModelDeployment's own Service: its name, where that is a valid Service name."""
    name = owner.name
    if len(name) <= 63 and name[0].isalpha() and "." not in name:
        return name
    return child_name(name, "entry")


def entry_url(owner: Owner, config: RenderConfig) -> str:
    return f"http://{entry_name(owner)}.{owner.namespace}.svc.{config.cluster_domain}"


def plain_metadata(owner: Owner, name: str, component: str) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {
            LABEL_DEPLOYMENT: owner.name,
            LABEL_NAME: f"mlops-{component}",
            LABEL_COMPONENT: component,
            LABEL_MANAGED_BY: MANAGED_BY,
        },
        "ownerReferences": owner_references(owner),
    }


def render_entry(owner: Owner, selector: Mapping[str, str]) -> Manifest:
    """The ModelDeployment's single entry point (status.url): a Service whose selector
    the operator moves between the router's pods and the tracks' pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": plain_metadata(owner, entry_name(owner), "entry"),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_network_policy(
    spec: ModelDeploymentSpec, owner: Owner, config: RenderConfig
) -> Manifest:
    """spec.networkPolicy: ingress to every pod of the deployment (tracks and router),
    on the serving port, from its router, the operator's namespace and the callers
    named. An operator outside the cluster has no namespace to admit: it reaches pods
    from a node, as the kubelet's probes do."""
    assert spec.network_policy is not None  # noqa: S101 - called only when it is set
    peers: list[Manifest] = [{"podSelector": {"matchLabels": selector_labels(owner, ROUTER)}}]
    if config.operator_namespace:
        name = {NAMESPACE_NAME_LABEL: config.operator_namespace}
        peers.append({"namespaceSelector": {"matchLabels": name}})
    peers += [
        peer.model_dump(by_alias=True, exclude_defaults=True, mode="json")
        for peer in spec.network_policy.from_
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": plain_metadata(owner, owner.name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_DEPLOYMENT: owner.name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": "http", "protocol": "TCP"}]}],
        },
    }


def serving_selector(owner: Owner) -> dict[str, str]:
    """Every serving track's pods (mode replicas): not the router's."""
    return {LABEL_DEPLOYMENT: owner.name, LABEL_NAME: "mlops-serving"}


def render_router(
    spec: ModelDeploymentSpec, owner: Owner, table: str, config: RenderConfig
) -> list[Manifest]:
    """The router (mode router) and what it needs, in apply order: its routing table,
    an identity that may read that table and the namespace's EndpointSlices and
    nothing else, and its Deployment."""
    name = child_name(owner.name, ROUTER)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": plain_metadata(owner, name, ROUTER),
        "data": {TABLE_KEY: table},
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": plain_metadata(owner, name, ROUTER),
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": plain_metadata(owner, name, ROUTER),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [name],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": plain_metadata(owner, name, ROUTER),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }
    metadata = plain_metadata(owner, name, ROUTER)
    pod_labels = {**metadata["labels"], LABEL_TRACK: ROUTER}
    container: Manifest = {
        "name": ROUTER,
        "image": spec.image or config.image,
        "args": [ROUTER],
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": [
            {"name": serving_env("namespace", RouterSettings), "value": owner.namespace},
            {"name": serving_env("configmap", RouterSettings), "value": name},
            {"name": serving_env("port", RouterSettings), "value": str(SERVING_PORT)},
            {
                "name": serving_env("table_file", RouterSettings),
                "value": f"{ROUTER_TABLE_DIR}/{TABLE_KEY}",
            },
        ],
        "volumeMounts": [{"name": "table", "mountPath": ROUTER_TABLE_DIR, "readOnly": True}],
        "readinessProbe": _probe("/router/ready", period=2, failures=3),
        "livenessProbe": _probe("/metrics", period=10, failures=3),
        # It holds no model: about 75 MB resident when idle, so a limit at three
        # times that stops a leak before it starves the node's serving pods.
        "resources": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": SECURITY_CONTEXT,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**metadata, "labels": pod_labels},
        "spec": {
            "replicas": min(2, max(1, replicas_of(spec, config))),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(owner, ROUTER)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": dict(SCRAPED),
                },
                "spec": {
                    "serviceAccountName": name,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    "containers": [container],
                    "volumes": [{"name": "table", "configMap": {"name": name}}],
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": [_spread("kubernetes.io/hostname", owner, ROUTER)],
                    **_scheduling(spec),
                },
            },
        },
    }
    return [config_map, account, role, binding, deployment]
