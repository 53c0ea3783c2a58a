"""DriftMonitor: data and prediction drift of a deployment's live traffic."""

from typing import Annotated, Any, Literal

from pydantic import Field

from .common import (
    URL_UNLESS_PODS,
    ApiModel,
    Conditions,
    Duration,
    HttpUrl,
    LongText,
    ObjectName,
    SecretKeyRef,
    ShortText,
    SourceType,
    Timestamp,
    TrackName,
    cel,
    rules,
)

Method = Literal["auto", "ks", "chi2", "psi", "wasserstein", "jensenshannon"]
FeatureName = Annotated[str, Field(min_length=1, max_length=128)]


class DeploymentRef(ApiModel):
    """The ModelDeployment to watch, in the same namespace."""

    name: ObjectName
    """ModelDeployment name."""


class Window(ApiModel):
    """How much recent traffic each run compares with the reference."""

    duration: Duration = "1h"
    """Look-back window: the captured windows that end within it."""
    min_samples: Annotated[int, Field(ge=1, le=10_000_000)] = 500
    """Rows needed before drift is judged; with fewer the run judges nothing and says so
    (condition DriftDetected Unknown, reason InsufficientData)."""


class Source(ApiModel):
    """Where the window's captured features come from."""

    model_config = rules(
        URL_UNLESS_PODS,
        cel(
            "self.type == 'prometheus' || !has(self.query)",
            "query applies only to type prometheus",
            ".query",
        ),
        cel(
            "self.type == 'url' || !has(self.format)", "format applies only to type url", ".format"
        ),
    )

    type: SourceType = "pods"
    """pods: GET /v2/capture and /v2/profile of every Ready pod of the track, at its pod
    IP, merged; url: one serving endpoint's routes at an explicit address, or a file
    of rows (see format); prometheus: the captured bin counts the pods export
    (ModelDeployment spec.serving.capture.metrics), from the Prometheus server at url,
    over window.duration (Prometheus' increase(), which extrapolates to the window's
    end: samples is its estimate), against the profile one of the track's pods serves.
    Bin counts only: numeric features take the binned tests (auto picks them; ks and
    wasserstein need raw rows and are refused)."""
    url: HttpUrl | None = None
    """Serving endpoint base URL (e.g. http://iris.models:8080), or its /v2/capture URL;
    with format csv or parquet, the file's URL."""
    format: Literal["csv", "parquet"] | None = None
    """For type url: absent, a serving endpoint; csv or parquet, a file of rows (at most
    64 MiB, a header row naming the features; a column named as the profile's
    prediction is judged as predictions), judged whole against the reference profile
    that the track's pods serve. For batch monitoring: window.duration does not apply,
    window.minSamples does."""
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Type prometheus: the label matchers that pick the track's series, as inside a
    PromQL selector's braces; default namespace="<namespace>",service="<deployment>-<track>",
    the labels a prometheus-operator ServiceMonitor gives. The track's version is
    always added."""


class FeatureTest(ApiModel):
    """The test for one feature, overriding the default."""

    name: FeatureName
    """Feature name, as in the reference profile."""
    method: Method = "auto"
    """Statistical test or distance."""
    threshold: Annotated[float, Field(ge=0)] | None = None
    """p-value below which (ks, chi2), or distance above which (psi, wasserstein, jensenshannon),
    the feature counts as drifted."""


class Tests(ApiModel):
    """Which tests judge drift."""

    method: Method = "auto"
    """Default method. auto follows Evidently's documented rule: with at most 1000
    reference rows, KS for numeric features with more than 5 distinct values and
    chi-square for the others (categorical, or numeric with few values); above 1000
    rows, the normed Wasserstein distance and the Jensen-Shannon distance instead.
    Predictions are captured as bin counts only, so their tests are the binned ones."""
    threshold: Annotated[float, Field(ge=0)] | None = None
    """Default threshold; unset, each method's own: 0.05 for the p-values of ks and
    chi2, 0.1 for the psi, wasserstein (normed by the reference's standard deviation)
    and jensenshannon (natural logarithm) distances."""
    features: Annotated[
        list[FeatureTest],
        Field(
            max_length=512,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = []
    """Per-feature overrides."""


class PredictionDrift(ApiModel):
    """Drift of the model's outputs."""

    enabled: bool = True
    """Test predictions as well as inputs."""
    method: Method = "auto"
    """Test or distance for predictions."""
    threshold: Annotated[float, Field(ge=0)] | None = None
    """Threshold for predictions."""


class Webhook(ApiModel):
    """POST a JSON drift report."""

    url: HttpUrl
    """Receiver, sent the report when dataset drift appears and when it clears."""
    secret_ref: SecretKeyRef | None = None
    """HMAC-SHA256 key: the body is signed as "<timestamp>.<body>", the hex digest sent
    in X-Mlops-Signature-256 ("sha256=...") and the Unix time in X-Mlops-Timestamp."""


class Retrain(ApiModel):
    """Start a Job when drift is detected."""

    job_template: Annotated[
        dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    ]
    """A batch/v1 JobTemplateSpec (metadata and spec)."""
    cooldown: Duration = "24h"
    """Least time between two retraining Jobs."""


class Actions(ApiModel):
    """What to do when drift is detected."""

    model_config = rules(
        cel(
            "!(self.pauseCanary && self.rollbackCanary)",
            "choose pauseCanary or rollbackCanary, not both",
            ".rollbackCanary",
        )
    )

    webhook: Webhook | None = None
    """Notify a receiver."""
    pause_canary: bool = False
    """Pause the watched deployment's canary rollout (track canary), once per canary:
    through the rollout's own command annotation (mlops.dev/rollout), never its spec.
    A person resumes it with kubectl mlops resume."""
    rollback_canary: bool = False
    """Roll the watched deployment's canary back (track canary), through the same
    annotation; it stays rolled back until its artifact changes or a retry."""
    retrain: Retrain | None = None
    """Start a retraining Job."""


class DriftMonitorSpec(ApiModel):
    """Compare a deployment's live inputs and predictions with its model's reference profile."""

    model_config = rules(
        cel(
            "!(self.actions.pauseCanary || self.actions.rollbackCanary) || self.track == 'canary'",
            "pauseCanary and rollbackCanary need track canary",
            ".actions",
        )
    )

    deployment_ref: DeploymentRef
    """The ModelDeployment to watch."""
    track: TrackName = "stable"
    """Which track's traffic to test."""
    interval: Duration = "5m"
    """Time between runs (at least 10s); a changed spec runs at once."""
    window: Window = Window()
    """Traffic window per run."""
    source: Source = Source()
    """Where captured traffic comes from."""
    tests: Tests = Tests()
    """Drift tests."""
    correction: Literal["none", "bonferroni", "fdr"] = "none"
    """Multiple-testing correction across features for p-value tests."""
    drift_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of drifted features at which the dataset counts as drifted."""
    prediction_drift: PredictionDrift = PredictionDrift()
    """Prediction drift."""
    actions: Actions = Actions()
    """Reactions to dataset drift."""
    suspend: bool = False
    """Stop running until set back to false."""


class FeatureResult(ApiModel):
    """The verdict for one feature."""

    name: FeatureName
    """Feature name (or "prediction")."""
    method: Method
    """Test or distance used."""
    statistic: float
    """Test statistic or distance."""
    p_value: Annotated[float, Field(ge=0, le=1)] | None = None
    """p-value, for tests that have one (after correction)."""
    threshold: float
    """Threshold applied."""
    drifted: bool
    """Whether the feature drifted."""


class RetrainStatus(ApiModel):
    """The last retraining Job this monitor started."""

    job: ObjectName
    """Job name."""
    started: Timestamp
    """When it was created."""
    outcome: Literal["Running", "Succeeded", "Failed"] = "Running"
    """Its state when the monitor last looked."""


class CanaryActionStatus(ApiModel):
    """The last time this monitor paused or rolled back a canary."""

    action: Literal["pause", "rollback"]
    """What it asked the rollout for."""
    digest: ShortText
    """The rollout's status.canary.digest: a canary is steered once; another canary is
    steered again if it drifts too."""
    time: Timestamp
    """When."""


class RunSummary(ApiModel):
    """One past run."""

    time: Timestamp
    """When it ran."""
    samples: Annotated[int, Field(ge=0)]
    """Rows in the window."""
    drift_share: Annotated[float, Field(ge=0, le=1)]
    """Share of drifted features."""
    dataset_drift: bool
    """Verdict."""


class DriftMonitorStatus(ApiModel):
    """Latest drift verdict."""

    last_run: Timestamp | None = None
    """When the last run finished."""
    samples: Annotated[int, Field(ge=0)] | None = None
    """Rows in the last window."""
    dataset_drift: bool | None = None
    """Whether the share of drifted features reached spec.driftShare."""
    drift_share: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of drifted features."""
    drifted_features: Annotated[int, Field(ge=0)] | None = None
    """How many features drifted."""
    features: Annotated[list[FeatureResult], Field(max_length=256)] = []
    """Per-feature verdicts, drifted first (bounded)."""
    prediction: FeatureResult | None = None
    """Prediction drift verdict."""
    history: Annotated[list[RunSummary], Field(max_length=48)] = []
    """Recent runs (bounded, newest last)."""
    message: LongText | None = None
    """Why the last run ended as it did."""
    retrain: RetrainStatus | None = None
    """The last retraining Job."""
    canary_action: CanaryActionStatus | None = None
    """The last canary this monitor paused or rolled back."""
    conditions: Conditions = []
    """Ready, DriftDetected."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation last acted on."""
