"""The serving image's settings, from MLOPS_SERVING_* (the model server) and MLOPS_ROUTER_*
(the router) environment variables: the interface the operator writes into pods."""

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .routing import TABLE_KEY


class ServingSettings(BaseSettings):
    """Everything the serving process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_SERVING_", use_attribute_docstrings=True)

    model_uri: str
    """Artifact URI: file://, pvc://claim/path, http(s)://, s3://."""
    model_digest: str | None = None
    """Pinned sha256:<hex> digest of the artifact; loading refuses without one."""
    model_name: str | None = None
    """Name served under /v2/models/{name}; defaults to the bundle's."""
    model_version: str | None = None
    """Version served; defaults to the bundle's."""
    track: str = "stable"
    """Track label on metrics (stable, canary, mirror)."""
    host: str = "0.0.0.0"  # noqa: S104 - a container serves on all its interfaces
    """Listen address."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Listen port."""
    workers: int | None = Field(default=None, ge=1)
    """uvicorn worker processes; default one per CPU available to the container."""
    cache_dir: Path = Path("/tmp/mlops-serving")  # noqa: S108 - writable emptyDir in the pod
    """Where artifacts are downloaded and unpacked."""
    pvc_root: Path = Path("/mnt/models")
    """Where pvc://claim/... volumes are mounted (one directory per claim)."""
    report_file: Path | None = None
    """Where `mlops-serve verify` writes its verdict as JSON (in a pod: the termination
    message, which the operator copies into the ModelVersion's status)."""
    artifact_credentials_file: Path | None = None
    """Credentials for the artifact store: a bearer token (https only) or an AWS
    credentials file (s3), as the ModelVersion's Secret holds them."""
    artifact_timeout_seconds: float = Field(default=300, gt=0)
    """Longest the artifact download may take."""
    artifact_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    """Largest artifact downloaded."""
    auth_token_file: Path | None = None
    """If set, inference routes require `Authorization: Bearer <token in this file>`."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest accepted request body; larger ones get 413."""
    max_rows: int = Field(default=10_000, ge=1)
    """Most rows in one request; more get 413, before they are parsed into a matrix."""
    max_batch_size: int = Field(default=0, ge=0, le=4096)
    """Dynamic batching: most rows per model call (0 disables batching)."""
    max_latency_ms: float = Field(default=2.0, ge=0, le=1000)
    """Dynamic batching: longest a request waits for others."""
    inline_threshold_ms: float = Field(default=1.0, ge=0)
    """Predict on the event loop when a call takes less than this; else in a thread."""
    capture_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of requests whose inputs and outputs are captured for drift monitoring."""
    capture_window_seconds: int = Field(default=60, ge=1)
    """Width of one capture window."""
    capture_windows: int = Field(default=60, ge=1)
    """Capture windows kept (the look-back is windows x window seconds)."""
    capture_reservoir: int = Field(default=1000, ge=0)
    """Raw rows kept per window in a uniform reservoir sample."""
    capture_metrics: bool = False
    """Export the captured bin counts on /metrics (mlops_capture_bins_total), for a
    DriftMonitor that reads them from Prometheus: a series per feature and bin."""
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )
    """Where prometheus_client's workers keep their values (its own variable);
    `mlops-serve` sets it for its workers when it runs more than one."""
    capture_dir: Path | None = None
    """Folder through which one pod's workers share their capture; `mlops-serve` sets
    it for its workers when it runs more than one."""
    log_level: str = "info"
    """uvicorn log level."""

    @field_validator("auth_token_file")
    @classmethod
    def _holds_a_token(cls, path: Path | None) -> Path | None:
        """An empty file would make `Bearer ` with nothing after it the token: refuse to
        start rather than serve behind a token anyone can send."""
        if path is None:
            return None
        try:
            token = path.read_text().strip()
        except OSError as error:
            raise ValueError(f"cannot read the token file: {error.strerror}") from None
        if not token:
            raise ValueError("the token file is empty")
        return path


class RouterSettings(BaseSettings):
    """Everything the router reads from its environment (MLOPS_ROUTER_*)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_ROUTER_", use_attribute_docstrings=True)

    host: str = "0.0.0.0"  # noqa: S104 - a container serves on all its interfaces
    """Listen address."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Listen port."""
    table_file: Path = Path("/etc/mlops-router") / TABLE_KEY
    """The routing table as mounted from the ConfigMap (the fallback to the watch)."""
    namespace: str | None = None
    """Namespace of the ConfigMap and the tracks' EndpointSlices; no watch without it."""
    configmap: str | None = None
    """Name of the ConfigMap that holds the table; no watch without it."""
    api_url: str | None = None
    """The API server; in a pod, the kubernetes Service (from KUBERNETES_SERVICE_*)."""
    kubernetes_service_host: str | None = Field(
        default=None, validation_alias="KUBERNETES_SERVICE_HOST"
    )
    """The kubernetes Service's address, which the kubelet gives every container."""
    kubernetes_service_port: str | None = Field(
        default=None, validation_alias="KUBERNETES_SERVICE_PORT"
    )
    """Its port."""
    timeout_seconds: float = Field(default=60, gt=0)
    """Longest a track may take to answer."""
    mirror_timeout_seconds: float = Field(default=10, gt=0)
    """Longest a mirror copy is waited for, in the background."""
    mirror_in_flight: int = Field(default=64, ge=1)
    """Mirror copies in flight at most; more are dropped (and counted), never queued."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body passed on; larger ones get 413."""
    file_poll_seconds: float = Field(default=2, gt=0)
    """How often the mounted table is read while the watch has not delivered one."""
    log_level: str = "info"
    """uvicorn log level."""


def env(field: str, settings: type[BaseSettings] = ServingSettings) -> str:
    """The variable that sets `settings.<field>` (ServingSettings by default, or
    RouterSettings): the name the operator writes into a pod, refused if the pod
    reads no such setting."""
    if field not in settings.model_fields:
        raise KeyError(f"{settings.__name__} has no setting {field!r}")
    return f"{settings.model_config.get('env_prefix', '')}{field.upper()}"
