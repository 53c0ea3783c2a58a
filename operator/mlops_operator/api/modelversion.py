"""ModelVersion: one trained model version in the registry."""

from typing import Annotated, Literal

from pydantic import Field

from .common import (
    ApiModel,
    Conditions,
    Digest,
    DnsLabel,
    LongText,
    ObjectName,
    SecretKeyRef,
    ShortText,
    Timestamp,
    TrackName,
    Version,
    cel,
    rules,
)

Framework = Literal["sklearn", "pytorch", "onnx"]
ArtifactFormat = Literal[
    "bundle", "joblib", "pickle", "skops", "torchscript", "torch-export", "onnx"
]
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
Stage = Literal["None", "Staging", "Production", "Archived"]

FRAMEWORK_FORMATS: dict[str, tuple[str, ...]] = {
    "sklearn": ("bundle", "joblib", "pickle", "skops", "onnx"),
    "pytorch": ("bundle", "torchscript", "torch-export", "onnx"),
    "onnx": ("bundle", "onnx"),
}


class Artifact(ApiModel):
    """Where the model lives and what it must hash to."""

    model_config = rules(
        cel(
            "self == oldSelf",
            "spec.artifact is immutable: a registered version keeps its bytes (and its "
            "approval stays bound to them); register a new ModelVersion instead",
        ),
    )

    uri: Annotated[str, Field(max_length=2048, pattern=r"^(s3|https?|pvc|file)://[^\s]+$")]
    """Artifact location. Schemes: s3://bucket/key, http(s)://..., pvc://claim/path,
    file:///path."""
    digest: Digest
    """sha256:<64 hex> of the artifact (the bundle tarball, or the model file); checked
    before anything is loaded. Required for every format: pickle-based ones run code, and
    skops trusts the types its file names."""
    format: ArtifactFormat = "bundle"
    """How the artifact is serialized: an mlops bundle (default) or a bare model file. The
    serving image serves bundles only (mlops-bundle build wraps a model file): a
    ModelDeployment refuses another format, with reason ArtifactNotServable."""
    secret_ref: SecretKeyRef | None = None
    """Credentials for the artifact store: an AWS credentials file (s3), or a bearer token
    (sent over https only). The Secret must carry the label
    mlops.dev/artifact-credentials=true: the operator reads no other."""


class TensorSpec(ApiModel):
    """One named tensor of the model's signature (Open Inference Protocol v2 terms)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """Tensor or column name."""
    datatype: Datatype
    """OIP v2 datatype."""
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(max_length=8)] = []
    """Shape; -1 marks a variable dimension (usually the batch)."""


TensorList = Annotated[
    list[TensorSpec],
    Field(
        max_length=1024,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]


class Signature(ApiModel):
    """The model's inputs and outputs; requests are validated against it."""

    inputs: TensorList
    """Input tensors or columns."""
    outputs: TensorList = []
    """Output tensors."""


class Lineage(ApiModel):
    """Where the model came from, for audits and reproducibility."""

    run_id: ShortText | None = None
    """Tracking run id (e.g. an MLflow run)."""
    experiment: ShortText | None = None
    """Experiment name in the tracking server."""
    tracking_uri: Annotated[str, Field(max_length=2048)] | None = None
    """Tracking server URI."""
    git_commit: Annotated[str, Field(pattern=r"^[0-9a-f]{7,64}$")] | None = None
    """Commit of the training code (7 to 64 lowercase hex digits)."""
    dataset_uri: Annotated[str, Field(max_length=2048)] | None = None
    """Training dataset location."""
    dataset_digest: Digest | None = None
    """sha256:<64 hex> of the training dataset."""


class ModelVersionSpec(ApiModel):
    """A model version: its artifact, interface, quality and provenance."""

    model_config = rules(
        cel(
            " || ".join(
                f"(self.framework == '{fw}' && self.artifact.format in {list(fmts)})"
                for fw, fmts in FRAMEWORK_FORMATS.items()
            ),
            "spec.artifact.format does not fit spec.framework (sklearn: bundle, joblib, pickle, "
            "skops, onnx; pytorch: bundle, torchscript, torch-export, onnx; onnx: bundle, onnx)",
            ".artifact.format",
        ),
    )

    model: DnsLabel
    """Registered model name (a DNS label); versions of one model share it."""
    version: Version
    """Version identifier, e.g. "3" or "2024.06.1"."""
    framework: Framework
    """ML framework the model was trained with."""
    artifact: Artifact
    """The model artifact and its pinned digest."""
    description: LongText | None = None
    """Free text for people."""
    signature: Signature | None = None
    """Input and output schema; bundles carry one, and `mlops-bundle manifest` copies it here."""
    metrics: Annotated[dict[str, float], Field(max_length=64)] = {}
    """Evaluation metrics, e.g. {"auc": 0.91}."""
    params: Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=128)] = {}
    """Training parameters, as strings."""
    lineage: Lineage | None = None
    """Provenance of the model."""
    stage: Stage = "None"
    """Lifecycle stage."""
    aliases: Annotated[
        list[DnsLabel], Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []
    """Names like "champion" that ModelDeployments may follow; unique per model in a namespace."""


class ArtifactStatus(ApiModel):
    """What verification found."""

    verified_digest: Digest | None = None
    """Digest computed from the fetched artifact."""
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    """Artifact size."""
    verified_at: Timestamp | None = None
    """When it was verified."""
    verified_by: Literal["operator", "pod"] | None = None
    """Who verified it: the operator, or the serving pod's verify step (pvc)."""
    pod: ShortText | None = None
    """The pod whose verify step reported (when verifiedBy is pod)."""
    message: LongText | None = None
    """What the verifier reported; on failure, why (verifiedDigest is then unset)."""


class ApprovalStatus(ApiModel):
    """Approval, as recorded from the API server's view of who acted."""

    state: Literal["Pending", "Approved", "Rejected"] = "Pending"
    """Approval state."""
    approved_by: ShortText | None = None
    """User name of the approver, as authenticated by the API server."""
    approved_at: Timestamp | None = None
    """When the API server admitted the approval (its managedFields time)."""
    approved_digest: Digest | None = None
    """spec.artifact.digest when approval was given: the bytes that were approved."""


class HistoryEntry(ApiModel):
    """One audited transition."""

    time: Timestamp
    """When it happened."""
    type: Literal["Stage", "Approval", "Alias", "Artifact"]
    """What changed."""
    from_: Annotated[ShortText | None, Field(alias="from")] = None
    """Previous value."""
    to: ShortText | None = None
    """New value."""
    by: ShortText | None = None
    """Who made the change, when the API server says."""
    message: LongText | None = None
    """Details."""


class DeploymentReference(ApiModel):
    """A ModelDeployment track that serves this version."""

    name: ObjectName
    """ModelDeployment name."""
    track: TrackName
    """Track that runs this version."""


class ModelVersionStatus(ApiModel):
    """Observed state of a ModelVersion."""

    phase: Literal["Pending", "Verifying", "Ready", "Failed"] | None = None
    """Summary for people; conditions are the interface for programs."""
    artifact: ArtifactStatus | None = None
    """Artifact verification result."""
    approval: ApprovalStatus | None = None
    """Approval state and approver."""
    history: Annotated[list[HistoryEntry], Field(max_length=50)] = []
    """Bounded audit trail of stage, alias and approval transitions (newest last)."""
    deployed_by: Annotated[list[DeploymentReference], Field(max_length=64)] = []
    """ModelDeployments currently serving this version."""
    conditions: Conditions = []
    """ArtifactVerified, Approved, Ready."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation last acted on."""
