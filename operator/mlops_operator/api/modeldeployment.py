"""ModelDeployment: serve a model's versions on stable, canary and mirror tracks."""

import string
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from .common import (
    URL_UNLESS_PODS,
    ApiModel,
    Conditions,
    Digest,
    DnsLabel,
    Duration,
    EnvVar,
    HttpUrl,
    LongText,
    ObjectName,
    ResourceRequirements,
    SecretKeyRef,
    ShortText,
    SourceType,
    Timestamp,
    Version,
    cel,
    rules,
)

HeaderName = Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9-]+$")]
"""An HTTP header's name, as the router matches it."""

ONE_OF_VERSION_ALIAS = "has(self.version) != has(self.alias)"


class ModelRef(ApiModel):
    """Which ModelVersion of spec.model a track runs: a fixed version, or an alias to follow."""

    model_config = rules(cel(ONE_OF_VERSION_ALIAS, "exactly one of version or alias must be set"))

    version: Version | None = None
    """A ModelVersion's spec.version."""
    alias: DnsLabel | None = None
    """An alias (ModelVersion spec.aliases); the track rolls out when the alias moves."""


class PauseStep(ApiModel):
    """Hold the current weight."""

    duration: Duration | None = None
    """How long to hold; without it, hold until promoted."""


class AnalysisStep(ApiModel):
    """Run spec.canary.analysis now and go on only if it passes."""

    count: Annotated[int, Field(ge=1, le=100)] = 1
    """Measurements to take, spec.canary.analysis.interval apart."""


class CanaryStep(ApiModel):
    """One step of a progressive rollout: exactly one of setWeight, pause, analysis."""

    model_config = rules(
        cel(
            "[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            "each step sets exactly one of setWeight, pause, analysis",
        )
    )

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percent of traffic to send to the canary."""
    pause: PauseStep | None = None
    """Wait, for a duration or until promoted."""
    analysis: AnalysisStep | None = None
    """Check the canary's metrics against spec.canary.analysis."""


class Thresholds(ApiModel):
    """Limits the canary must stay within; a measurement over any of them fails. The
    first three hold the canary alone; errorRateIncrease and latencyP99Ratio hold it
    against the stable track over the same span, for limits that must not depend on
    load or time of day."""

    model_config = rules(
        cel(
            "has(self.errorRate) || has(self.latencyP99Ms) || has(self.predictionDrift)"
            " || has(self.errorRateIncrease) || has(self.latencyP99Ratio)",
            "set at least one of errorRate, latencyP99Ms, predictionDrift, "
            "errorRateIncrease, latencyP99Ratio",
        )
    )

    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Highest tolerated share of failed requests (0 to 1)."""
    latency_p99_ms: Annotated[float, Field(gt=0)] | None = None
    """Highest tolerated p99 latency, in milliseconds."""
    prediction_drift: Annotated[float, Field(ge=0)] | None = None
    """Highest tolerated PSI between the canary's and the stable track's predictions,
    as both captured them since the last measurement. Versions must bin predictions
    alike (classifiers with the same classes); otherwise the measurement is
    Inconclusive. Read from the pods whatever the source."""
    error_rate_increase: Annotated[float, Field(ge=0, le=1)] | None = None
    """Highest tolerated excess of the canary's error rate over stable's (0.02: two
    points more). Inconclusive while either track served fewer than minRequests."""
    latency_p99_ratio: Annotated[float, Field(gt=0)] | None = None
    """Highest tolerated ratio of the canary's p99 latency to stable's (1.5: half as
    slow again). Inconclusive while either track served fewer than minRequests."""


class PromQueries(ApiModel):
    """PromQL for source prometheus. In each, ${namespace} is the ModelDeployment's
    namespace, ${name} its name, ${track} canary or stable, ${service} the track's
    Service (${name}-${track}, shortened with a hash past 63 characters, as the
    operator names it), and ${range} the span since the last measurement (a
    range such as 30s). A query whose answer is empty reads as zero requests."""

    requests: Annotated[str, Field(min_length=1, max_length=2048)] = (
        'sum(increase(mlops_requests_total{namespace="${namespace}",service="${service}"}'
        "[${range}]))"
    )
    """Requests the track served over the span."""
    errors: Annotated[str, Field(min_length=1, max_length=2048)] = (
        'sum(increase(mlops_requests_total{namespace="${namespace}",service="${service}",'
        'code=~"5.."}[${range}]))'
    )
    """Of those, the failed ones (server errors)."""
    latency_p99: Annotated[str, Field(min_length=1, max_length=2048)] = (
        "histogram_quantile(0.99, sum by (le) (rate(mlops_request_duration_seconds_bucket"
        '{namespace="${namespace}",service="${service}"}[${range}])))'
    )
    """The p99 latency over the span, in seconds."""

    @field_validator("requests", "errors", "latency_p99")
    @classmethod
    def _placeholders(cls, query: str) -> str:
        try:
            string.Template(query).substitute(dict.fromkeys(PLACEHOLDERS, "x"))
        except KeyError as error:
            raise ValueError(f"unknown placeholder ${{{error.args[0]}}}") from None
        except ValueError:
            raise ValueError("a $ that is no placeholder; write $$ for a literal $") from None
        return query


PLACEHOLDERS = ("namespace", "name", "track", "service", "range")


class MetricsSource(ApiModel):
    """Where a measurement's error rate and latency come from."""

    model_config = rules(
        URL_UNLESS_PODS,
        cel(
            "self.type == 'prometheus' || !has(self.queries)",
            "queries are for source type prometheus",
            ".queries",
        ),
    )

    type: SourceType = "pods"
    """pods: each track's Ready pods' /metrics, at their pod IPs; prometheus: the
    queries, run on the Prometheus server at url; url: one metrics endpoint in the
    Prometheus text format whose mlops_requests_total and
    mlops_request_duration_seconds (or the router's mlops_router_*) carry a track
    label, as the router's /metrics does."""
    url: HttpUrl | None = None
    """Prometheus base URL, or the metrics endpoint."""
    queries: PromQueries | None = None
    """PromQL for source prometheus; the defaults suit the labels a prometheus-operator
    ServiceMonitor gives (namespace, service)."""


class Analysis(ApiModel):
    """How canary steps are judged."""

    interval: Duration = "30s"
    """Time between measurements."""
    failure_limit: Annotated[int, Field(ge=0, le=100)] = 0
    """Failed measurements tolerated before the canary is rolled back."""
    min_requests: Annotated[int, Field(ge=0)] = 50
    """Requests a measurement needs; with fewer it is inconclusive, not failed."""
    thresholds: Thresholds
    """Limits on error rate, latency and prediction drift."""
    source: MetricsSource = MetricsSource()
    """Where the metrics come from."""


class Canary(ModelRef):
    """A candidate version, brought in by steps and judged by analysis."""

    model_config = rules(
        cel(
            "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            "setWeight must not decrease from one step to the next",
            ".steps",
        ),
        cel(
            "!self.steps.exists(s, has(s.analysis)) || has(self.analysis)",
            "steps contain an analysis step but spec.canary.analysis is not set",
            ".analysis",
        ),
    )

    steps: Annotated[list[CanaryStep], Field(max_length=32)] = []
    """Ordered steps; with none, the canary is promoted at once once Ready."""
    analysis: Analysis | None = None
    """Metric analysis for analysis steps (and, when set, continuously during the rollout)."""


class Mirror(ModelRef):
    """A version that receives a copy of live traffic; its answers are discarded."""

    percent: Annotated[int, Field(ge=1, le=100)] = 100
    """Percent of requests to copy."""


class HeaderRoute(ApiModel):
    """Send requests whose header has a value to one track, whatever the weights."""

    header: HeaderName = "x-model-version"
    """Request header to match."""
    value: Annotated[str, Field(min_length=1, max_length=256)]
    """Exact value to match."""
    track: Literal["stable", "canary"]
    """Track that gets the request."""


class GatewayRef(ApiModel):
    """The Gateway an HTTPRoute attaches to (traffic.mode gatewayAPI)."""

    name: ObjectName
    """Gateway name."""
    namespace: DnsLabel | None = None
    """Gateway namespace; defaults to the ModelDeployment's."""


class Traffic(ApiModel):
    """How requests are split between tracks."""

    model_config = rules(
        cel(
            "self.mode != 'gatewayAPI' || has(self.gateway)",
            "gateway is required when mode is gatewayAPI",
            ".gateway",
        ),
        cel(
            "self.mode != 'replicas' || (size(self.headerRoutes) == 0 && !has(self.stickyKey))",
            "mode replicas splits by replica count and cannot honour headerRoutes or stickyKey",
            ".mode",
        ),
    )

    mode: Literal["router", "replicas", "gatewayAPI"] = "router"
    """router: exact weights through a router Deployment (default, no mesh); replicas: one Service
    over both tracks, weight approximated by replica counts; gatewayAPI: a weighted HTTPRoute."""
    header_routes: Annotated[list[HeaderRoute], Field(max_length=16)] = []
    """Header matches that pin a request to a track."""
    sticky_key: HeaderName | None = None
    """Request header whose value keeps a caller on one track (hashed)."""
    gateway: GatewayRef | None = None
    """Gateway for mode gatewayAPI."""


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler per track."""

    model_config = rules(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            ".minReplicas",
        )
    )

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Fewest replicas."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most replicas."""
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100, alias="targetCPUUtilization")] = 70
    """Average CPU utilization to aim for, in percent of requests."""


class Batching(ApiModel):
    """Server-side dynamic batching."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    """Largest number of rows in one model call."""
    max_latency_ms: Annotated[float, Field(ge=0, le=1000)] = 2
    """Longest a request waits for others to join its batch."""


class Capture(ApiModel):
    """Feature capture for drift monitoring."""

    sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of requests whose inputs and outputs are binned (0 disables)."""
    metrics: bool = False
    """Export the captured bin counts on /metrics (mlops_capture_bins_total, a series
    per feature and bin), for a DriftMonitor with source prometheus."""


class Serving(ApiModel):
    """Serving-process options."""

    batching: Batching | None = None
    """Enable dynamic batching."""
    capture: Capture = Capture()
    """Feature capture."""
    auth_secret_ref: SecretKeyRef | None = None
    """A bearer token required on every route but health, readiness and /metrics
    (inference, capture, profile, model metadata). A DriftMonitor reads capture with it."""


class Toleration(ApiModel):
    """A core/v1 Toleration: lets the pods run on nodes with a matching taint."""

    model_config = rules(
        cel(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            "a toleration with operator Exists takes no value",
            ".value",
        ),
        cel(
            "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            "a toleration without a key needs operator Exists",
            ".key",
        ),
    )

    key: Annotated[str, Field(min_length=1, max_length=317)] | None = None
    """The taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Equal (the default) matches the value; Exists any value."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """The taint value, for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to tolerate; every effect when unset."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class Scheduling(ApiModel):
    """Where the serving pods may run: GPU nodes, dedicated pools, their priority."""

    node_selector: Annotated[dict[str, ShortText], Field(max_length=32)] | None = None
    """Node labels a pod's node must have."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the pods tolerate."""
    affinity: (
        Annotated[
            dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
        ]
        | None
    ) = None
    """A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity). The API server
    checks it when the operator writes the Deployment; a rejection is the condition
    Ready=False, reason ChildRejected, with the server's message (retried with backoff)."""
    priority_class_name: ObjectName | None = None
    """A PriorityClass for the serving pods."""


class LabelRequirement(ApiModel):
    """One matchExpressions entry of a label selector."""

    key: ShortText
    """The label's key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value is compared with `values`."""
    values: Annotated[list[ShortText], Field(max_length=64)] = []
    """For In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A core label selector: every label and expression must match."""

    match_labels: Annotated[dict[str, ShortText], Field(max_length=32)] | None = None
    """Labels that must have these values."""
    match_expressions: Annotated[list[LabelRequirement], Field(max_length=16)] = []
    """Further requirements on labels."""


class IPBlock(ApiModel):
    """Addresses outside the cluster (a load balancer's, an office's)."""

    cidr: Annotated[str, Field(min_length=1, max_length=64)]
    """The addresses admitted, e.g. 192.0.2.0/24."""
    except_: Annotated[list[Annotated[str, Field(max_length=64)]], Field(alias="except")] = []
    """CIDRs inside `cidr` that are not admitted."""


class NetworkPeer(ApiModel):
    """Callers, as a NetworkPolicyPeer names them: pods (in this namespace, or in the
    namespaces selected), or an IP block."""

    model_config = rules(
        cel(
            "has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
            "name podSelector, namespaceSelector or ipBlock",
        ),
        cel(
            "!has(self.ipBlock) || !(has(self.podSelector) || has(self.namespaceSelector))",
            "ipBlock stands alone, without podSelector or namespaceSelector",
            ".ipBlock",
        ),
    )

    pod_selector: LabelSelector | None = None
    """Pods admitted: in this namespace, or with namespaceSelector, in those namespaces."""
    namespace_selector: LabelSelector | None = None
    """Namespaces whose pods (those of podSelector, if set) are admitted."""
    ip_block: IPBlock | None = None
    """Addresses admitted, for callers outside the cluster."""


class NetworkPolicy(ApiModel):
    """An ingress NetworkPolicy (named as the ModelDeployment) over all its pods, every
    track and the router. It admits, on the serving port only: the router, the
    operator's namespace (analysis and drift read the pods), and the callers in
    `from`. Everything else is refused where the cluster enforces NetworkPolicy."""

    from_: Annotated[list[NetworkPeer], Field(max_length=32, alias="from")] = []
    """Who may call the model: its clients, an ingress controller, your Prometheus."""


class ModelDeploymentSpec(ApiModel):
    """Serve spec.model: a stable track, and optionally a canary and a mirror."""

    model_config = rules(
        cel(
            "!(has(self.replicas) && has(self.autoscaling))",
            "set replicas or autoscaling, not both",
            ".autoscaling",
        ),
        cel(
            "!has(self.canary) || !has(self.canary.version) || !has(self.stable.version)"
            " || self.canary.version != self.stable.version",
            "spec.canary.version must differ from spec.stable.version",
            ".canary.version",
        ),
        cel(
            "!has(self.canary) || !has(self.canary.alias) || !has(self.stable.alias)"
            " || self.canary.alias != self.stable.alias",
            "spec.canary.alias must differ from spec.stable.alias",
            ".canary.alias",
        ),
        cel(
            "!has(self.mirror) || !has(self.mirror.version) || !has(self.stable.version)"
            " || self.mirror.version != self.stable.version",
            "spec.mirror.version must differ from spec.stable.version",
            ".mirror.version",
        ),
        cel(
            "!has(self.mirror) || self.traffic.mode != 'replicas'",
            "spec.mirror needs traffic.mode router or gatewayAPI",
            ".mirror",
        ),
        cel(
            "self.env.all(e, !e.name.startsWith('MLOPS_SERVING_'))",
            "spec.env must not set MLOPS_SERVING_* variables: the operator sets them from the "
            "ModelVersion (its artifact and digest), and spec.serving configures the rest",
            ".env",
        ),
        cel(
            "!self.traffic.headerRoutes.exists(r, r.track == 'canary') || has(self.canary)",
            "a header route targets the canary track but spec.canary is not set",
            ".traffic.headerRoutes",
        ),
    )

    model: DnsLabel
    """Registered model name (ModelVersion spec.model) that all tracks serve."""
    stable: ModelRef
    """The version serving most traffic."""
    canary: Canary | None = None
    """A version being rolled out by steps, judged by analysis, promoted or rolled back
    (status.canary)."""
    mirror: Mirror | None = None
    """A version receiving a copy of traffic; its answers are discarded."""
    traffic: Traffic = Traffic()
    """How requests reach the tracks: the router, replica counts, or an HTTPRoute."""
    replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    """Fixed replicas per track (default 1); exclusive with autoscaling."""
    autoscaling: Autoscaling | None = None
    """Autoscale each track with an HPA."""
    resources: ResourceRequirements | None = None
    """Serving container resources."""
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Serving image; defaults to the operator's configured image."""
    env: Annotated[list[EnvVar], Field(max_length=64)] = []
    """Extra environment for the serving container."""
    serving: Serving = Serving()
    """Batching, capture and auth of the serving process."""
    scheduling: Scheduling = Scheduling()
    """Node selection, tolerations, affinity and priority of every track's pods."""
    network_policy: NetworkPolicy | None = None
    """Admit only the router, the operator and the callers named; unset, no policy."""
    require_approval: bool = False
    """Refuse ModelVersions whose approval state is not Approved."""


class TrackStatus(ApiModel):
    """What one track runs and how much of it is ready."""

    version: ShortText | None = None
    """spec.version of the ModelVersion running."""
    model_version: ObjectName | None = None
    """Name of that ModelVersion object."""
    digest: Digest | None = None
    """Artifact digest served."""
    replicas: Annotated[int, Field(ge=0)] = 0
    """Desired replicas."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Ready replicas."""


class Tracks(ApiModel):
    """Per-track status."""

    stable: TrackStatus | None = None
    """Stable track."""
    canary: TrackStatus | None = None
    """Canary track."""
    mirror: TrackStatus | None = None
    """Mirror track."""


class TrafficStatus(ApiModel):
    """The split in force."""

    stable_weight: Annotated[int, Field(ge=0, le=100)] = 100
    """Percent to stable."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent to canary."""
    mirror_percent: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent copied to mirror."""


class AnalysisResult(ApiModel):
    """One measurement of one metric."""

    time: Timestamp
    """When measured."""
    metric: Literal[
        "errorRate", "latencyP99Ms", "predictionDrift", "errorRateIncrease", "latencyP99Ratio"
    ]
    """Which metric."""
    value: float | None = None
    """Measured value; absent when inconclusive."""
    stable: float | None = None
    """The stable track's own errorRate or latencyP99Ms over the same span, for
    comparison; absent when it served fewer than minRequests."""
    threshold: float
    """Limit it was held to."""
    phase: Literal["Successful", "Failed", "Inconclusive"]
    """Verdict."""
    message: ShortText | None = None
    """Why a measurement is inconclusive."""


CanaryPhase = Literal["Progressing", "Paused", "Promoted", "RolledBack"]


class CanaryStatus(ApiModel):
    """Rollout progress: everything the rollout needs to resume after a restart."""

    phase: CanaryPhase = "Progressing"
    """Where the rollout of this canary stands; Promoted and RolledBack hold until the
    canary's artifact changes (or, after a rollback, a retry)."""
    digest: Digest | None = None
    """The canary's spec.artifact.digest this rollout is for."""
    step: Annotated[int, Field(ge=0)] = 0
    """Index of the current step in spec.canary.steps."""
    step_started_at: Timestamp | None = None
    """When the current step began."""
    weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent of traffic the rollout gives the canary."""
    measured: Annotated[int, Field(ge=0)] = 0
    """Successful measurements in the current analysis step."""
    last_measured_at: Timestamp | None = None
    """When the canary was last measured."""
    analysis: Annotated[list[AnalysisResult], Field(max_length=30)] = []
    """Latest measurements (bounded)."""
    failed_checks: Annotated[int, Field(ge=0)] = 0
    """Failed measurements so far in this rollout."""
    message: LongText | None = None
    """Why the rollout is where it is."""
    command: ShortText | None = None
    """The value of the mlops.dev/rollout annotation last acted on: a command is acted
    on once, when the annotation changes."""


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment."""

    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Paused", "RolledBack"] | None = (
        None
    )
    """Summary for people; conditions are the interface for programs."""
    tracks: Tracks | None = None
    """Per-track versions and readiness."""
    ready: Annotated[str, Field(max_length=32)] | None = None
    """Ready over desired replicas across tracks, e.g. "3/3"."""
    traffic: TrafficStatus | None = None
    """Traffic split in force."""
    canary: CanaryStatus | None = None
    """Progress of the current rollout."""
    url: Annotated[str, Field(max_length=2048)] | None = None
    """In-cluster URL of the inference endpoint."""
    conditions: Conditions = []
    """Ready, Progressing, Degraded."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation last acted on."""
