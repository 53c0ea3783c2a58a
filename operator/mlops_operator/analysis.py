"""Canary analysis from the serving pods themselves (spec.canary.analysis.source type
pods): error rate and p99 latency of the requests served since the last measurement,
from the canary's /metrics, and prediction drift: the PSI of the canary's predictions
against the stable track's, both captured (/v2/capture) since the last measurement.

Each Ready pod of the track is read at its pod IP. Its counters are kept, per pod,
until the next measurement, which judges the difference: the traffic of the last
interval, not of the pod's life. A pod seen for the first time (or whose counters
went back, after a restart) counts from its start. The judgement itself is pure
(`judge`), and table-tested.

Prediction drift compares bin counts, so it needs both versions to bin their
predictions alike: classifiers with the same classes do; regressors, whose bins are
their own reference predictions' quantiles, do not, and their measurement is
Inconclusive.
"""

import math
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from mlops_operator import kube
from mlops_operator.api.modeldeployment import Analysis, AnalysisResult
from mlops_operator.conditions import stamp_of
from mlops_operator.constants import LABEL_DEPLOYMENT, LABEL_TRACK, SERVING_PORT
from mlops_operator.drift.stats import psi
from mlops_operator.driftmonitor import SourceError, Window, read_pods

MAX_BODY = 4 * 1024 * 1024
REQUESTS = "mlops_requests_total"
LATENCY = "mlops_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Totals:
    """What one pod (or several, added up) served: requests, server errors (5xx) and the
    latency histogram's cumulative buckets (upper bound in seconds, count)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(
            self.requests + other.requests,
            self.errors + other.errors,
            _merge(self.buckets, other.buckets, 1.0),
        )

    def since(self, before: "Totals | None") -> "Totals":
        """What was served after `before`; everything, if the counters went back."""
        if before is None or self.requests < before.requests:
            return self
        return Totals(
            self.requests - before.requests,
            self.errors - before.errors,
            _merge(self.buckets, before.buckets, -1.0),
        )


def _merge(
    a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...], sign: float
) -> tuple[tuple[float, float], ...]:
    counts = dict(a)
    for bound, count in b:
        counts[bound] = counts.get(bound, 0.0) + sign * count
    return tuple(sorted(counts.items()))


def parse(text: str) -> Totals:
    """A serving pod's /metrics, as the totals analysis needs."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS:
                requests += sample.value
                if sample.labels.get("code", "").startswith("5"):
                    errors += sample.value
            elif sample.name == LATENCY:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Totals(requests, errors, tuple(sorted(buckets.items())))


def quantile(buckets: tuple[tuple[float, float], ...], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated within its bucket as
    Prometheus' histogram_quantile does; the largest finite bound if it lies beyond."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def judge(
    analysis: Analysis, window: Totals, now: float, drift: float | None = None
) -> tuple[AnalysisResult, ...]:
    """One result per threshold: Inconclusive under minRequests (or without a value),
    Failed over the threshold, else Successful. `drift` is the predictions' PSI."""
    thresholds = analysis.thresholds
    measured: list[tuple[str, float | None, float]] = []
    if thresholds.error_rate is not None:
        rate = window.errors / window.requests if window.requests else None
        measured.append(("errorRate", rate, thresholds.error_rate))
    if thresholds.latency_p99_ms is not None:
        p99 = quantile(window.buckets, 0.99)
        measured.append(
            ("latencyP99Ms", None if p99 is None else p99 * 1000, thresholds.latency_p99_ms)
        )
    if thresholds.prediction_drift is not None:
        measured.append(("predictionDrift", drift, thresholds.prediction_drift))
    enough = window.requests >= max(analysis.min_requests, 1)
    return tuple(
        AnalysisResult(
            time=stamp_of(now),
            metric=metric,
            value=round(value, 6) if enough and value is not None else None,
            threshold=threshold,
            phase="Inconclusive"
            if not enough or value is None
            else "Failed"
            if value > threshold
            else "Successful",
        )
        for metric, value, threshold in measured
    )


class Baselines:
    """Each pod's counters at its last measurement, by (namespace, owner, pod IP)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], dict[str, Totals]] = {}

    def window(self, namespace: str, owner: str, read: dict[str, Totals]) -> Totals:
        """What the pods in `read` served since their last measurement; `read` becomes
        the baseline of the next (pods gone are forgotten)."""
        with self._lock:
            before = self._totals.get((namespace, owner), {})
            self._totals[(namespace, owner)] = dict(read)
        total = Totals()
        for address, totals in read.items():
            total = total + totals.since(before.get(address))
        return total

    def forget(self, namespace: str, owner: str) -> None:
        with self._lock:
            self._totals.pop((namespace, owner), None)


BASELINES = Baselines()


def _read(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - a pod IP
            return str(answer.read(MAX_BODY).decode())
    except (OSError, urllib.error.URLError, UnicodeDecodeError):
        return None


def predictions(window: Window) -> list[int]:
    """A track's captured predictions per bin, over all its windows."""
    total: list[int] = []
    for each in window.capture.get("windows") or []:
        counts = each.get("prediction") or []
        total = [a + b for a, b in zip(total, counts, strict=True)] if total else list(counts)
    return total


def prediction_psi(canary: Window, stable: Window, least: int) -> float | None:
    """The PSI of the canary's predictions against stable's; None when either track has
    fewer than `least` of them, or the two bin them differently."""
    mine, theirs = canary.profile.prediction, stable.profile.prediction
    if mine is None or theirs is None:
        return None
    if (mine.kind, mine.edges, mine.categories) != (theirs.kind, theirs.edges, theirs.categories):
        return None
    counted, reference = predictions(canary), predictions(stable)
    if min(sum(counted), sum(reference)) < max(least, 1):
        return None
    return round(psi(reference, counted), 6)


def measure(
    namespace: str,
    owner: str,
    analysis: Analysis,
    now: float,
    *,
    since: float,
    token: str | None,
    may_dial: Callable[[str], bool],
    timeout: float = 5.0,
) -> tuple[AnalysisResult, ...]:
    """Measure the canary track's Ready pods now (source pods); prediction drift over
    what both tracks captured after `since`."""
    selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_TRACK}=canary"
    read: dict[str, Totals] = {}
    for address in filter(may_dial, kube.ready_pod_ips(namespace, selector)):
        text = _read(f"http://{address}:{SERVING_PORT}/metrics", timeout)
        if text is not None:
            read[address] = parse(text)
    drift = None
    if analysis.thresholds.prediction_drift is not None:
        try:
            canary, stable = (
                read_pods(
                    namespace,
                    owner,
                    track,
                    since=since,
                    token=token,
                    timeout=timeout,
                    may_dial=may_dial,
                )
                for track in ("canary", "stable")
            )
            drift = prediction_psi(canary, stable, analysis.min_requests)
        except SourceError:
            drift = None
    return judge(analysis, BASELINES.window(namespace, owner, read), now, drift)
