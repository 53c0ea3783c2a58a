"""The three custom resources, as pydantic models: the single source of the CRDs.

Pure: imports neither kopf nor a Kubernetes client (enforced by import-linter).
"""

from dataclasses import dataclass, field

from pydantic import BaseModel

from .driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .modelversion import ModelVersionSpec, ModelVersionStatus


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True)
class Resource:
    """A custom resource kind and everything its CRD needs."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...]
    selectable_fields: tuple[str, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")

MODEL_VERSION = Resource(
    kind="ModelVersion",
    plural="modelversions",
    short_names=("mv",),
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    columns=(
        PrinterColumn("Model", "string", ".spec.model", "Registered model name"),
        PrinterColumn("Version", "string", ".spec.version", "Version identifier"),
        PrinterColumn("Framework", "string", ".spec.framework", "ML framework"),
        PrinterColumn("Stage", "string", ".spec.stage", "Lifecycle stage"),
        PrinterColumn("Approved", "string", ".status.approval.state", "Approval state"),
        PrinterColumn("Phase", "string", ".status.phase", "Verification and readiness"),
        AGE,
    ),
    selectable_fields=(".spec.model", ".spec.stage"),
)

MODEL_DEPLOYMENT = Resource(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("mdep",),
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    columns=(
        PrinterColumn("Model", "string", ".spec.model", "Registered model name"),
        PrinterColumn("Stable", "string", ".status.tracks.stable.version", "Stable version"),
        PrinterColumn("Canary", "string", ".status.tracks.canary.version", "Canary version"),
        PrinterColumn("Weight", "integer", ".status.traffic.canaryWeight", "Canary traffic, %"),
        PrinterColumn("Ready", "string", ".status.ready", "Ready/desired replicas"),
        PrinterColumn("Phase", "string", ".status.phase", "Rollout phase"),
        AGE,
    ),
    selectable_fields=(".spec.model",),
)

DRIFT_MONITOR = Resource(
    kind="DriftMonitor",
    plural="driftmonitors",
    short_names=("dm",),
    spec=DriftMonitorSpec,
    status=DriftMonitorStatus,
    columns=(
        PrinterColumn("Deployment", "string", ".spec.deploymentRef.name", "Watched deployment"),
        PrinterColumn("Track", "string", ".spec.track", "Watched track"),
        PrinterColumn("Drift", "boolean", ".status.datasetDrift", "Dataset drift detected"),
        PrinterColumn("Share", "number", ".status.driftShare", "Share of drifted features"),
        PrinterColumn("Drifted", "integer", ".status.driftedFeatures", "Drifted features"),
        PrinterColumn("Samples", "integer", ".status.samples", "Rows in the last window"),
        PrinterColumn("Last Run", "date", ".status.lastRun", "Time since the last run"),
        AGE,
    ),
)

RESOURCES = (MODEL_VERSION, MODEL_DEPLOYMENT, DRIFT_MONITOR)
