"""DriftMonitor reconcile: on its interval, read the track's captured traffic and its
reference profile, run the drift engine, write the verdict, and act on changes.

When the next run is due is computed from `status.lastRun` alone, so a restarted
operator neither repeats a run nor waits a whole interval; no finalizer is needed.
Actions read their memory from the cluster too: the retraining cooldown from the
Jobs this monitor owns, so a crash between creating a Job and recording it cannot
start a second one.
"""

import hashlib
import hmac
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from mlops_contract.profile import Profile
from mlops_contract.windows import CaptureView, CaptureWindow, merge_windows
from pydantic import BaseModel, ValidationError

from mlops_operator import kube, promql
from mlops_operator.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, Retrain
from mlops_operator.builders import child_name
from mlops_operator.conditions import (
    Reporter,
    condition,
    merge,
    parse_time,
    seconds,
    stamp_of,
)
from mlops_operator.constants import (
    ANNOTATION_ROLLOUT,
    API_VERSION,
    GROUP,
    LABEL_DEPLOYMENT,
    LABEL_TRACK,
    LABEL_VERSION,
    SERVING_PORT,
)
from mlops_operator.drift import (
    DriftReport,
    FeatureDrift,
    FeatureTest,
    Reference,
    Tests,
    detect_capture_drift,
    detect_drift,
)
from mlops_operator.metrics import DRIFT
from mlops_operator.settings import OperatorSettings

M = TypeVar("M", bound=BaseModel)

PLURAL = "driftmonitors"
LABEL_MONITOR = f"{GROUP}/drift-monitor"
REPORT_FILE = "/etc/mlops/drift/report.json"
MAX_FEATURES = 256
MAX_HISTORY = 48
MAX_BODY = 256 << 20
"""Largest capture or profile answer read (a full hour of reservoirs is tens of MB)."""
MAX_FILE = 64 << 20
"""The largest CSV or Parquet file a monitor reads (source url)."""
WEBHOOK_DELAYS = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
MIN_INTERVAL = 10.0
"""Shortest time between two runs of one monitor, whatever spec.interval says."""
Object = dict[str, Any]


def due_in(dm: Object, now: float) -> float | None:
    """Seconds until the monitor's next run: 0 when due, None while suspended. A run
    is due at once when there was none, or when the spec changed since the last one."""
    spec = dm.get("spec") or {}
    if spec.get("suspend"):
        return None
    status = dm.get("status") or {}
    last = status.get("lastRun")
    if not last or status.get("observedGeneration") != dm["metadata"].get("generation"):
        return 0.0
    return max(0.0, parse_time(last) + interval_of(spec) - now)


def interval_of(spec: Object) -> float:
    return max(seconds(spec.get("interval", "5m")), MIN_INTERVAL)


class SourceError(Exception):
    """The window could not be read; the message says from where and why."""


@dataclass(frozen=True)
class Window:
    profile: Profile
    capture: CaptureView


def fetch(
    url: str,
    timeout: float,
    *,
    limit: int = MAX_BODY,
    token: str | None = None,
    accept: str | None = None,
) -> bytes:
    """The body of GET `url`, at most `limit` bytes; SourceError says why not."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310 - http(s) only, by the CRD
    if token:  # never forwarded on a redirect
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            body: bytes = answer.read(limit + 1)
    except urllib.error.HTTPError as error:
        raise SourceError(f"GET {url}: HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise SourceError(f"GET {url}: {error}") from None
    if len(body) > limit:
        raise SourceError(f"GET {url}: answer larger than {limit} bytes")
    return body


def _get(url: str, model: type[M], what: str, token: str | None, timeout: float) -> M:
    """GET `url` as a `model`; SourceError names the first field that is wrong, never
    the value there (a capture's rows are users' data)."""
    body = fetch(url, timeout, token=token, accept="application/json")
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise SourceError(f"GET {url}: not {what}: {where}: {first['msg']}") from None


def _root(base: str) -> str:
    return base.removesuffix("/").removesuffix("/v2/capture")


def read_profile(base: str, token: str | None, timeout: float) -> Profile:
    return _get(f"{_root(base)}/v2/profile", Profile, "a profile", token, timeout)


def read_capture(base: str, since: float, token: str | None, timeout: float) -> CaptureView:
    query = urllib.parse.urlencode({"since": f"{since:.3f}"})
    url = f"{_root(base)}/v2/capture?{query}"
    return _get(url, CaptureView, "a capture view", token, timeout)


def read_endpoint(base: str, since: float, token: str | None, timeout: float) -> Window:
    """Profile and capture of one serving endpoint (base URL, or its /v2/capture URL)."""
    return Window(read_profile(base, token, timeout), read_capture(base, since, token, timeout))


def read_rows(url: str, form: str, timeout: float) -> Any:
    """A CSV or Parquet file of rows, as a DataFrame; SourceError names the field."""
    import pandas as pd  # noqa: PLC0415 - only file sources need it

    try:
        body = fetch(url, timeout, limit=MAX_FILE)
    except SourceError as error:
        raise SourceError(f"spec.source.url: {error}") from None
    try:
        if form == "parquet":
            return pd.read_parquet(io.BytesIO(body))
        return pd.read_csv(io.BytesIO(body))
    except Exception as error:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise SourceError(f"spec.source.url: {url} is not a {form} file: {error}") from None


def _track_addresses(
    namespace: str,
    deployment: str,
    track: str,
    may_dial: Callable[[str], bool],
    version: str | None = None,
) -> list[str]:
    selector = f"{LABEL_DEPLOYMENT}={deployment},{LABEL_TRACK}={track}"
    if version is not None:
        selector += f",{LABEL_VERSION}={version}"
    addresses = [a for a in kube.ready_pod_ips(namespace, selector) if may_dial(a)]
    if not addresses:
        raise SourceError(
            f"no Ready pod of {deployment} (track {track}) in the allowed pod networks "
            "to read capture from"
        )
    return addresses


def read_track_profile(
    namespace: str,
    deployment: str,
    track: str,
    *,
    token: str | None,
    timeout: float,
    may_dial: Callable[[str], bool],
    version: str | None = None,
    port: int = SERVING_PORT,
) -> Profile:
    """The reference profile one Ready pod of the track serves (of `version`, if given)."""
    address = _track_addresses(namespace, deployment, track, may_dial, version)[0]
    return read_profile(f"http://{address}:{port}", token, timeout)


def read_prometheus(
    base: str, selector: str, profile: Profile, *, duration: float, timeout: float
) -> CaptureView:
    """The captured bin counts of the series `selector` picks, over the last `duration`
    seconds, as one capture window: what the pods export on /metrics with
    MLOPS_SERVING_CAPTURE_METRICS, scraped by Prometheus. Bin counts only: no raw rows
    reach Prometheus, so numeric features take the binned tests."""
    span = promql.range_of(duration)

    def increase(metric: str, by: str) -> list[tuple[dict[str, str], float]]:
        promql_text = f"sum by ({by}) (increase({metric}{{{selector}}}[{span}]))"
        try:
            return promql.query(base, promql_text, timeout)
        except promql.QueryError as error:
            raise SourceError(f"spec.source: {error}") from None

    counts = {f.name: [0] * f.bins for f in profile.features}
    found = increase("mlops_capture_bins_total", "feature, bin")
    if not found:
        raise SourceError(
            f"spec.source: no mlops_capture_bins_total{{{selector}}} in {base}: the "
            "ModelDeployment needs spec.serving.capture.metrics, and Prometheus must scrape "
            "its pods"
        )
    for labels, value in found:
        name, index = labels.get("feature", ""), int(labels.get("bin", "-1"))
        if name not in counts or not 0 <= index < len(counts[name]):
            raise SourceError(
                f"spec.source: bin {index} of feature {name!r} is not in the profile: the "
                f"series {{{selector}}} serve another model or version"
            )
        counts[name][index] = round(value)
    prediction = [0] * (profile.prediction.bins if profile.prediction else 0)
    for labels, value in increase("mlops_capture_prediction_bins_total", "bin"):
        index = int(labels.get("bin", "-1"))
        if 0 <= index < len(prediction):
            prediction[index] = round(value)
    rows = max((sum(c) for c in counts.values()), default=0)
    window = CaptureWindow(start=0, rows=rows, seen=rows, features=counts, prediction=prediction)
    return CaptureView(
        window_seconds=max(round(duration), 1), features=list(counts), windows=[window]
    )


def read_pods(
    namespace: str,
    deployment: str,
    track: str,
    *,
    since: float,
    token: str | None,
    timeout: float,
    may_dial: Callable[[str], bool],
    port: int = SERVING_PORT,
) -> Window:
    """Every Ready pod of the track, at its pod IP, merged into one view; only pods
    whose IP `may_dial` (the setting pod_networks) are read. Mid-rollout, pods of two
    model versions bin on different edges: only the pods that serve the most common
    version are merged, and the profile is read from one of them."""
    addresses = _track_addresses(namespace, deployment, track, may_dial)
    bases = [f"http://{address}:{port}" for address in addresses]
    captures = [read_capture(base, since, token, timeout) for base in bases]
    served = [(c.model, c.version) for c in captures]
    common = max(served, key=served.count)
    alike = [i for i, version in enumerate(served) if version == common]
    windows = [w for i in alike for w in captures[i].windows]
    reservoir = max((len(w.reservoir) for w in windows), default=0)
    try:
        merged = captures[alike[0]].model_copy(
            update={"windows": merge_windows(windows, reservoir)}
        )
    except ValueError as error:
        raise SourceError(
            f"pods of {deployment} (track {track}) serving one version bin differently: {error}"
        ) from None
    return Window(read_profile(bases[alike[0]], token, timeout), merged)


def engine_tests(spec: DriftMonitorSpec) -> Tests:
    return Tests(
        spec.tests.method,
        spec.tests.threshold,
        {f.name: FeatureTest(f.method, f.threshold) for f in spec.tests.features},
    )


def status_of(
    previous: Object, report: DriftReport, spec: DriftMonitorSpec, now: float, generation: int
) -> Object:
    """The status of a run that judged (or found too few rows); conditions and the
    retraining record are merged in by the caller."""
    history = list(previous.get("history") or [])
    features = sorted(report.features, key=lambda f: not f.drifted)[:MAX_FEATURES]
    stamp = stamp_of(now)
    if not report.insufficient_data:
        history.append(
            {
                "time": stamp,
                "samples": report.samples,
                "driftShare": round(report.drift_share, 4),
                "datasetDrift": bool(report.dataset_drift),
            }
        )
    if report.insufficient_data:
        message = (
            f"{report.samples} rows in the last {spec.window.duration}; "
            f"{spec.window.min_samples} needed to judge drift"
        )
    else:
        drifted = [f.name for f in report.features if f.drifted]
        message = (
            f"{len(drifted)} of {len(report.features)} features drifted"
            + (
                f" ({', '.join(drifted[:10])}{', ...' if len(drifted) > 10 else ''})"
                if drifted
                else ""
            )
            + f"; share {report.drift_share:.2f}, threshold {spec.drift_share:.2f}"
        )
    status = DriftMonitorStatus.model_validate(
        {
            "lastRun": stamp,
            "samples": report.samples,
            "datasetDrift": report.dataset_drift,
            "driftShare": None if report.insufficient_data else round(report.drift_share, 4),
            "driftedFeatures": None if report.insufficient_data else report.drifted,
            "features": [_result(f) for f in features],
            "prediction": _result(report.prediction) if report.prediction else None,
            "history": history[-MAX_HISTORY:],
            "message": message,
            "observedGeneration": generation,
        }
    )
    written: Object = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    # Cleared fields are written as null, so that a merge patch removes them.
    for key in ("datasetDrift", "driftShare", "driftedFeatures", "prediction"):
        written.setdefault(key, None)
    return written


def _result(feature: FeatureDrift) -> Object:
    return {
        "name": feature.name,
        "method": feature.method,
        "statistic": feature.statistic,
        "pValue": feature.p_value,
        "threshold": feature.threshold,
        "drifted": feature.drifted,
    }


def drift_conditions(
    report: DriftReport | None, error: str | None, generation: int
) -> list[Object]:
    """Ready says whether the monitor can measure; DriftDetected what it measured."""
    if error is not None:
        return [condition("Ready", False, "SourceUnreachable", error, generation)]
    assert report is not None  # noqa: S101 - either a report or an error
    ready = condition("Ready", True, "Measured", "the last run read its window", generation)
    if report.insufficient_data:
        return [
            ready,
            condition(
                "DriftDetected",
                None,
                "InsufficientData",
                f"{report.samples} rows in the window: too few to judge",
                generation,
            ),
        ]
    drifted = report.dataset_drift
    reason = "DatasetDrift" if drifted else "NoDatasetDrift"
    message = (
        f"{report.drifted} of {len(report.features)} features drifted "
        f"(share {report.drift_share:.2f}, threshold {report.threshold_share:.2f})"
    )
    return [
        ready,
        condition("DriftDetected", drifted, reason, message, generation),
    ]


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The X-Mlops-Signature-256 header of a webhook body, as GitHub signs its own."""
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def render_retrain_job(
    dm: Object, retrain: Retrain, report: Object, lineage: Mapping[str, str], now: float
) -> tuple[Object, Object]:
    """The Job (from the user's template) and the ConfigMap holding the report. Every
    container gets the report as a file and the lineage as environment variables."""
    meta = dm["metadata"]
    name = f"{meta['name'][:40]}-retrain-{int(now)}"
    template = json.loads(json.dumps(retrain.job_template))  # a deep copy of plain data
    job_meta = template.get("metadata") or {}
    labels = {**(job_meta.get("labels") or {}), LABEL_MONITOR: meta["name"]}
    spec = template.get("spec") or {}
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    env = [{"name": k, "value": v} for k, v in sorted(lineage.items())]
    env.append({"name": "MLOPS_DRIFT_REPORT", "value": REPORT_FILE})
    for container in pod.get("containers") or []:
        container["env"] = [*(container.get("env") or []), *env]
        mounts = container.get("volumeMounts") or []
        mounts.append({"name": "drift-report", "mountPath": REPORT_FILE.rsplit("/", 1)[0]})
        container["volumeMounts"] = mounts
    pod["volumes"] = [
        *(pod.get("volumes") or []),
        {"name": "drift-report", "configMap": {"name": name}},
    ]
    owner = {
        "apiVersion": API_VERSION,
        "kind": "DriftMonitor",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **job_meta,
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner],
        },
        "data": {"report.json": json.dumps(report, indent=2)},
    }
    return job, config_map


def canary_command(spec: DriftMonitorSpec, canary: Object, done: Object) -> str | None:
    """The rollout command that dataset drift of the canary calls for (abort for
    rollbackCanary, pause for pauseCanary): None unless that rollout still runs and
    this monitor has not steered it yet. `canary` is the ModelDeployment's
    status.canary, `done` this monitor's status.canaryAction."""
    running: tuple[str, ...]
    if spec.actions.rollback_canary:
        command, running = "abort", ("Progressing", "Paused")
    elif spec.actions.pause_canary:
        command, running = "pause", ("Progressing",)
    else:
        return None
    digest = canary.get("digest")
    if canary.get("phase") not in running or not digest or done.get("digest") == digest:
        return None
    return command


def job_outcome(job: Object) -> str:
    status = job.get("status") or {}
    for item in status.get("conditions") or []:
        if item.get("status") == "True" and item.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if item.get("status") == "True" and item.get("type") == "Failed":
            return "Failed"
    return "Running"


class Monitor:
    """One run of one DriftMonitor, with what it needs from the cluster."""

    def __init__(
        self,
        dm: Object,
        settings: OperatorSettings,
        report: Reporter,
        post_webhook: Callable[[str, bytes, dict[str, str]], None],
    ) -> None:
        self.dm = dm
        self.settings = settings
        self.reporter = report
        self.post_webhook = post_webhook
        meta = dm["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.generation = int(meta.get("generation") or 0)

    def run(self, now: float) -> None:
        previous = self.dm.get("status") or {}
        try:
            spec = DriftMonitorSpec.model_validate(self.dm.get("spec") or {})
        except ValidationError as error:
            self._fail(previous, f"invalid spec: {error}")
            return
        mdep = kube.read_custom("modeldeployments", self.namespace, spec.deployment_ref.name)
        if mdep is None:
            self._fail(previous, f"ModelDeployment {spec.deployment_ref.name} not found")
            return
        try:
            report = self._judge(spec, mdep, now)
        except (SourceError, ValueError) as error:
            self._fail(previous, str(error))
            return
        if not spec.prediction_drift.enabled:
            report = replace(report, prediction=None)
        status = status_of(previous, report, spec, now, self.generation)
        status["conditions"] = merge(
            previous.get("conditions"), drift_conditions(report, None, self.generation)
        )
        if previous.get("retrain"):
            status["retrain"] = previous["retrain"]
        steered = self._steer_canary(spec, mdep, previous, report, now)
        if steered or previous.get("canaryAction"):
            status["canaryAction"] = steered or previous["canaryAction"]
        was = _drift_state(previous)
        if report.dataset_drift and spec.actions.retrain is not None:
            started = self._retrain(spec, status, mdep, report, now)
            status["retrain"] = started or status.get("retrain")
        elif status.get("retrain"):
            status["retrain"] = self._refresh_retrain(status["retrain"])
        kube.patch_status(PLURAL, self.namespace, self.name, status)
        DRIFT.publish(self.namespace, self.name, report)
        # Drift appearing, or clearing after it was seen: a first verdict of no drift
        # is news to nobody.
        if report.dataset_drift is not None and report.dataset_drift != bool(was):
            self._announce(spec, report, status, drifted=report.dataset_drift)

    def _judge(self, spec: DriftMonitorSpec, mdep: Object, now: float) -> DriftReport:
        prediction_test = FeatureTest(spec.prediction_drift.method, spec.prediction_drift.threshold)
        if spec.source.type == "url" and spec.source.format is not None:
            assert spec.source.url is not None  # noqa: S101 - the CRD requires it
            profile = read_track_profile(
                self.namespace,
                spec.deployment_ref.name,
                spec.track,
                token=self._token(mdep),
                timeout=self.settings.request_timeout,
                may_dial=self.settings.may_dial,
            )
            rows = read_rows(spec.source.url, spec.source.format, self.settings.request_timeout)
            predicted = profile.prediction.name if profile.prediction else None
            return detect_drift(
                Reference.from_profile(profile),
                rows,
                tests=engine_tests(spec),
                correction=spec.correction,
                drift_share=spec.drift_share,
                min_samples=spec.window.min_samples,
                prediction=predicted if predicted in rows.columns else None,
                prediction_test=prediction_test,
            )
        window = self._read(spec, mdep, now - seconds(spec.window.duration))
        return detect_capture_drift(
            window.profile,
            window.capture,
            tests=engine_tests(spec),
            correction=spec.correction,
            drift_share=spec.drift_share,
            min_samples=spec.window.min_samples,
            prediction_test=prediction_test,
        )

    def _read(self, spec: DriftMonitorSpec, mdep: Object, since: float) -> Window:
        token = self._token(mdep)
        timeout = self.settings.request_timeout
        if spec.source.type == "url":
            assert spec.source.url is not None  # noqa: S101 - the CRD requires it
            if token is not None:
                self._check_token_goes_home(str(spec.source.url), mdep, spec.track)
            return read_endpoint(spec.source.url, since, token, timeout)
        if spec.source.type == "pods":
            return read_pods(
                self.namespace,
                spec.deployment_ref.name,
                spec.track,
                since=since,
                token=token,
                timeout=timeout,
                may_dial=self.settings.may_dial,
            )
        assert spec.source.url is not None  # noqa: S101 - the CRD requires it
        # Mid-rollout, the version the track moves to: its pods' profile, its series.
        version = (((mdep.get("status") or {}).get("tracks") or {}).get(spec.track) or {}).get(
            "version"
        )
        profile = read_track_profile(
            self.namespace,
            spec.deployment_ref.name,
            spec.track,
            token=token,
            timeout=timeout,
            may_dial=self.settings.may_dial,
            version=version[:63] if version else None,  # a label value's length
        )
        service = child_name(spec.deployment_ref.name, spec.track)
        selector = spec.source.query or f'namespace="{self.namespace}",service="{service}"'
        if version:
            selector += f',version="{version}"'
        capture = read_prometheus(
            spec.source.url,
            selector,
            profile,
            duration=seconds(spec.window.duration),
            timeout=timeout,
        )
        return Window(profile, capture)

    def _steer_canary(
        self,
        spec: DriftMonitorSpec,
        mdep: Object,
        previous: Object,
        report: DriftReport,
        now: float,
    ) -> Object | None:
        """Pause or roll back the canary on dataset drift, through the rollout's own
        command annotation: the ModelDeployment's spec is never touched."""
        if not report.dataset_drift:
            return None
        canary = (mdep.get("status") or {}).get("canary") or {}
        command = canary_command(spec, canary, previous.get("canaryAction") or {})
        if command is None:
            return None
        drifted = f"{report.drifted} of {len(report.features)} features drifted"
        reason = f"DriftMonitor {self.name} found dataset drift ({drifted})"
        value = f"{command} {stamp_of(now)} {reason}"
        name = spec.deployment_ref.name
        kube.annotate("modeldeployments", self.namespace, name, {ANNOTATION_ROLLOUT: value})
        self.reporter.warning(
            "CanaryPaused" if command == "pause" else "CanaryRolledBack",
            f"asked ModelDeployment {name} to {command} its canary: {reason}",
        )
        return {
            "action": "pause" if command == "pause" else "rollback",
            "digest": canary["digest"],
            "time": stamp_of(now),
        }

    def _check_token_goes_home(self, url: str, mdep: Object, track: str) -> None:
        """The serving token is the ModelDeployment's, not the monitor author's: it
        goes only to the track's own Service, by name or ClusterIP."""
        service = child_name(mdep["metadata"]["name"], track)
        host = urllib.parse.urlparse(url).hostname or ""
        names = {service, f"{service}.{self.namespace}", f"{service}.{self.namespace}.svc"}
        names.add(f"{service}.{self.namespace}.svc.{self.settings.cluster_domain}")
        if host in names or host == kube.service_ip(self.namespace, service):
            return
        raise SourceError(
            f"spec.source.url: {host} is not the Service {service} of track {track}; the "
            "ModelDeployment's serving token is sent only there (or use source pods)"
        )

    def _token(self, mdep: Object) -> str | None:
        ref = ((mdep.get("spec") or {}).get("serving") or {}).get("authSecretRef")
        if not ref:
            return None
        return kube.secret_value(self.namespace, ref["name"], ref["key"]).strip()

    def _fail(self, previous: Object, message: str) -> None:
        status: Object = {
            "message": message,
            "conditions": merge(
                previous.get("conditions"), drift_conditions(None, message, self.generation)
            ),
            "observedGeneration": self.generation,
            # A failed run counts as a run: the next try waits an interval too.
            "lastRun": stamp_of(time.time()),
        }
        if previous.get("conditions") != status["conditions"]:
            self.reporter.warning("SourceUnreachable", message)
        kube.patch_status(PLURAL, self.namespace, self.name, status)

    def _announce(
        self, spec: DriftMonitorSpec, report: DriftReport, status: Object, drifted: bool
    ) -> None:
        message = str(status["message"])
        if drifted:
            self.reporter.warning("DriftDetected", message)
        else:
            self.reporter.normal("DriftResolved", message)
        webhook = spec.actions.webhook
        if webhook is None:
            return
        body = json.dumps(
            {
                "monitor": {"namespace": self.namespace, "name": self.name},
                "deployment": spec.deployment_ref.name,
                "track": spec.track,
                "datasetDrift": drifted,
                "report": report.to_dict(),
            }
        ).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-Mlops-Timestamp": str(timestamp)}
        if webhook.secret_ref is not None:
            ref = webhook.secret_ref
            try:
                key = kube.secret_value(self.namespace, ref.name, ref.key)
            except ValueError as error:
                self.reporter.warning("WebhookNotSent", f"no signing key: {error}")
                return
            headers["X-Mlops-Signature-256"] = sign(key.strip().encode(), timestamp, body)
        self.post_webhook(webhook.url, body, headers)

    def _owned_jobs(self) -> list[Object]:
        return kube.list_jobs(self.namespace, f"{LABEL_MONITOR}={self.name}")

    def _retrain(
        self, spec: DriftMonitorSpec, status: Object, mdep: Object, report: DriftReport, now: float
    ) -> Object | None:
        """Start a Job unless one started within the cooldown; its record, or None."""
        retrain = spec.actions.retrain
        assert retrain is not None  # noqa: S101 - called only with a retrain action
        jobs = self._owned_jobs()
        started = [parse_time(j["metadata"]["creationTimestamp"]) for j in jobs]
        recorded = (status.get("retrain") or {}).get("started")
        if recorded:
            started.append(parse_time(recorded))
        if started and now - max(started) < seconds(retrain.cooldown):
            return self._refresh_retrain(status["retrain"]) if status.get("retrain") else None
        job, config_map = render_retrain_job(
            self.dm, retrain, report.to_dict(), self._lineage(mdep, spec.track), now
        )
        kube.create("Job", job)
        kube.create("ConfigMap", config_map)
        self.reporter.normal("RetrainStarted", f"Job {job['metadata']['name']} started")
        return {"job": job["metadata"]["name"], "started": stamp_of(now), "outcome": "Running"}

    def _refresh_retrain(self, record: Object) -> Object:
        for job in self._owned_jobs():
            if job["metadata"]["name"] == record.get("job"):
                return {**record, "outcome": job_outcome(job)}
        return record

    def _lineage(self, mdep: Object, track_name: str) -> dict[str, str]:
        track = ((mdep.get("status") or {}).get("tracks") or {}).get(track_name) or {}
        values = {"MLOPS_DRIFT_MONITOR": self.name, "MLOPS_DEPLOYMENT": mdep["metadata"]["name"]}
        name = track.get("modelVersion")
        mv = kube.read_custom("modelversions", self.namespace, name) if name else None
        if mv is not None:
            spec = mv.get("spec") or {}
            lineage = spec.get("lineage") or {}
            artifact = spec.get("artifact") or {}
            values |= {
                "MLOPS_MODEL": str(spec.get("model", "")),
                "MLOPS_MODEL_VERSION": name or "",
                "MLOPS_ARTIFACT_URI": str(artifact.get("uri", "")),
                "MLOPS_ARTIFACT_DIGEST": str(artifact.get("digest", "")),
                "MLOPS_RUN_ID": str(lineage.get("runId", "")),
                "MLOPS_DATASET_URI": str(lineage.get("datasetUri", "")),
            }
        return {k: v for k, v in values.items() if v}


def _drift_state(status: Object) -> bool | None:
    for item in status.get("conditions") or []:
        if item.get("type") == "DriftDetected":
            return {"True": True, "False": False}.get(item.get("status", ""))
    return None


def post_with_retries(
    url: str, body: bytes, headers: dict[str, str], log: Callable[[str], None]
) -> None:
    """POST in a thread of its own, retried with backoff: never blocks a reconcile."""

    def attempt() -> None:
        for delay in WEBHOOK_DELAYS:
            time.sleep(delay)
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    if answer.status < 300:
                        return
            except (OSError, ValueError) as error:
                log(f"webhook {url}: {error}")
        log(f"webhook {url}: gave up after {len(WEBHOOK_DELAYS)} attempts")

    threading.Thread(target=attempt, name="mlops-webhook", daemon=True).start()
