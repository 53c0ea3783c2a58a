"""Operator configuration, from MLOPS_* environment variables."""

from fnmatch import fnmatch
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything the operator reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", use_attribute_docstrings=True)

    namespaces: list[str] = []
    """Namespaces to watch, as a JSON list; names or patterns such as "team-*" (kopf's
    syntax). Empty watches the whole cluster."""
    serving_image: str = "ghcr.io/mlops-dev/mlops-serving:0.1.0"
    """Image for ModelDeployments that do not name one."""
    default_replicas: int = Field(default=1, ge=0)
    """Replicas per track when a ModelDeployment sets neither replicas nor autoscaling."""
    default_requests: dict[str, str] = {"cpu": "100m", "memory": "256Mi"}
    """Resource requests of serving containers whose ModelDeployment sets no resources
    (JSON), so that they are scheduled by what they use and are not BestEffort."""
    scratch_size_limit: str = Field(default="8Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")
    """sizeLimit of the serving pods' /tmp emptyDir: it holds the verified copy of the
    artifact and the unpacked bundle, so give it twice the largest bundle."""
    verify_artifacts: bool = True
    """Fetch and hash artifacts the operator can reach (http, https, s3, and file under
    file_artifact_root)."""
    file_artifact_root: Path | None = None
    """The one folder under which the operator hashes file:// artifacts itself. Unset,
    it hashes none: a file:// path names a file of the pod's, and the operator's own
    files (or /dev/zero) are no business of a ModelVersion's author."""
    artifact_timeout_seconds: float = Field(default=60, gt=0)
    """Longest an artifact download for verification may take, in all."""
    artifact_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    """Most bytes read of an artifact for verification."""
    cluster_domain: str = "cluster.local"
    """DNS suffix for the in-cluster URLs in status."""
    operator_namespace: str | None = None
    """The operator's own namespace (the chart sets it from the pod's): a
    ModelDeployment's spec.networkPolicy admits it, so that analysis and drift can
    read the pods."""
    liveness_port: int = Field(default=8081, ge=0, le=65535)
    """Port of kopf's liveness endpoint /healthz (0 disables it)."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the operator's Prometheus metrics (0 disables them)."""
    watch_server_timeout: int = Field(default=300, gt=0)
    """Seconds the API server keeps a watch open before the operator renews it."""
    watch_client_timeout: int = Field(default=330, gt=0)
    """Seconds the operator waits on a silent watch before reconnecting."""
    request_timeout: float = Field(default=30, gt=0)
    """Timeout of one API request."""
    stuck_seconds: float = Field(default=120, gt=0)
    """How long every reconcile worker may stay busy before /healthz fails, so that
    Kubernetes restarts an operator that no longer reconciles anything."""
    resync_seconds: float = Field(default=600, gt=0)
    """Period of the safety-net reconcile of every ModelVersion and ModelDeployment
    (events drive the work; this only catches what a lost watch event missed)."""
    pod_networks: list[IPv4Network | IPv6Network] = []
    """Networks, as a JSON list of CIDRs, whose pod IPs the operator may dial to read
    capture (DriftMonitor source pods); pods outside them are skipped. Empty allows any."""
    status_linger_seconds: float = Field(default=0.5, ge=0)
    """How long a status refresh waits for more child changes to write them together."""

    def list_scopes(self) -> list[str | None]:
        """Namespaces to list objects in; None is the whole cluster, which patterns
        ("team-*", as kopf takes them) need: their matches are filtered by `watches`."""
        patterns = self.namespaces
        if not patterns or any(set(p) & set("*?[") for p in patterns):
            return [None]
        return list(patterns)

    def may_dial(self, address: str) -> bool:
        return not self.pod_networks or any(ip_address(address) in n for n in self.pod_networks)

    def watches(self, namespace: str) -> bool:
        return not self.namespaces or any(fnmatch(namespace, p) for p in self.namespaces)
