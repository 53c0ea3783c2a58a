"""Canary analysis: the canary's error rate and p99 latency over the span since the
last measurement, with the stable track's over the same span for comparison, and
prediction drift: the PSI of the canary's predictions against the stable track's,
both captured (/v2/capture) over that span.

Error rate and latency come from spec.canary.analysis.source:
- pods: each Ready pod of the track, read at its pod IP (/metrics);
- url: one Prometheus text endpoint whose counters carry a track label (the
  router's /metrics);
- prometheus: three PromQL queries per track, over the span.
Counters read directly (pods, url) are kept until the next measurement, which judges
the difference: the traffic of the last interval, not of a process's life. A pod
seen for the first time (or whose counters went back, after a restart) counts from
its start; an endpoint seen for the first time gives only the baseline. The
judgement itself is pure (`judge`), and table-tested.

Prediction drift compares bin counts, so it needs both versions to bin their
predictions alike: classifiers with the same classes do; regressors, whose bins are
their own reference predictions' quantiles, do not, and their measurement is
Inconclusive.
"""

import math
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mlops_contract.windows import add_counts
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator import kube, promql
from mlops_operator.api.modeldeployment import Analysis, AnalysisResult, PromQueries
from mlops_operator.builders import child_name
from mlops_operator.conditions import stamp_of
from mlops_operator.constants import LABEL_DEPLOYMENT, LABEL_TRACK, SERVING_PORT
from mlops_operator.drift.stats import psi
from mlops_operator.driftmonitor import SourceError, Window, fetch, read_pods

MAX_BODY = 4 * 1024 * 1024
REQUESTS = ("mlops_requests_total", "mlops_router_requests_total")
LATENCY = ("mlops_request_duration_seconds_bucket", "mlops_router_request_duration_seconds_bucket")
TRACKS = ("canary", "stable")
MESSAGE_LENGTH = 253


@dataclass(frozen=True)
class Totals:
    """What one process (or several, added up) served: requests, server errors (5xx)
    and the latency histogram's cumulative buckets (upper bound in seconds, count)."""

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


def parse_tracks(text: str) -> dict[str, Totals]:
    """A metrics page's request counters and latency buckets, by their track label
    ("" where there is none): the serving pods' names and the router's alike."""
    requests: dict[str, tuple[float, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            track = sample.labels.get("track", "")
            if sample.name in REQUESTS:
                failed = sample.labels.get("code", "").startswith("5")
                served, errors = requests.get(track, (0.0, 0.0))
                requests[track] = (served + sample.value, errors + failed * sample.value)
            elif sample.name in LATENCY:
                bound = float(sample.labels["le"])
                by_bound = buckets.setdefault(track, {})
                by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
    return {
        track: Totals(
            *requests.get(track, (0.0, 0.0)), tuple(sorted(buckets.get(track, {}).items()))
        )
        for track in {*requests, *buckets}
    }


def parse(text: str) -> Totals:
    """A serving pod's /metrics, as the totals analysis needs."""
    total = Totals()
    for totals in parse_tracks(text).values():
        total = total + totals
    return total


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


@dataclass(frozen=True)
class Reading:
    """What one track served over a measurement's span, or why that is unknown."""

    requests: float = 0.0
    errors: float = 0.0
    p99: float | None = None
    """Seconds."""
    problem: str | None = None
    """Why nothing could be read."""

    @staticmethod
    def of(totals: Totals) -> "Reading":
        return Reading(totals.requests, totals.errors, quantile(totals.buckets, 0.99))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p99_ms(self) -> float | None:
        return None if self.p99 is None else self.p99 * 1000


def _thin(track: str, reading: Reading, least: int) -> str | None:
    """Why a track's reading cannot be judged, if it cannot."""
    if reading.problem is not None:
        return reading.problem
    if reading.requests < least:
        return f"{track} served {reading.requests:g} requests, {least} needed"
    return None


def _ratio(canary: float | None, stable: float | None) -> float | None:
    return None if canary is None or not stable else canary / stable


def _less(canary: float | None, stable: float | None) -> float | None:
    return None if canary is None or stable is None else canary - stable


def judge(
    analysis: Analysis,
    canary: Reading,
    now: float,
    *,
    stable: Reading | None = None,
    drift: float | None = None,
) -> tuple[AnalysisResult, ...]:
    """One result per threshold: Inconclusive when a track it needs served fewer than
    minRequests (or gave no value), Failed over the threshold, else Successful.
    `drift` is the predictions' PSI."""
    thresholds = analysis.thresholds
    least = max(analysis.min_requests, 1)
    stable = stable if stable is not None else Reading(problem="stable was not measured")
    alone = _thin("canary", canary, least)
    thin_stable = _thin("stable", stable, least)
    both = alone or thin_stable
    compared = thin_stable is None
    rows: list[tuple[str, float | None, float | None, float, str | None]] = []
    if thresholds.error_rate is not None:
        rows.append(
            ("errorRate", canary.error_rate, stable.error_rate, thresholds.error_rate, alone)
        )
    if thresholds.latency_p99_ms is not None:
        rows.append(
            ("latencyP99Ms", canary.p99_ms, stable.p99_ms, thresholds.latency_p99_ms, alone)
        )
    if thresholds.error_rate_increase is not None:
        rows.append(
            (
                "errorRateIncrease",
                _less(canary.error_rate, stable.error_rate),
                stable.error_rate,
                thresholds.error_rate_increase,
                both,
            )
        )
    if thresholds.latency_p99_ratio is not None:
        rows.append(
            (
                "latencyP99Ratio",
                _ratio(canary.p99, stable.p99),
                stable.p99_ms,
                thresholds.latency_p99_ratio,
                both or (None if stable.p99 else "stable's p99 latency is unknown"),
            )
        )
    if thresholds.prediction_drift is not None:
        rows.append(("predictionDrift", drift, None, thresholds.prediction_drift, alone))
    return tuple(
        _result(
            now,
            metric,
            value=value,
            stable=theirs if compared else None,
            threshold=threshold,
            why=why,
        )
        for metric, value, theirs, threshold, why in rows
    )


def _result(
    now: float,
    metric: str,
    *,
    value: float | None,
    stable: float | None,
    threshold: float,
    why: str | None,
) -> AnalysisResult:
    if why is None and value is None:
        why = f"no value of {metric} in this span"
    known = why is None and value is not None
    return AnalysisResult.model_validate(
        {
            "time": stamp_of(now),
            "metric": metric,
            "value": round(value, 6) if known and value is not None else None,
            "stable": None if stable is None else round(stable, 6),
            "threshold": threshold,
            "phase": "Inconclusive"
            if not known
            else "Failed"
            if value is not None and value > threshold
            else "Successful",
            "message": None if why is None else why[:MESSAGE_LENGTH],
        }
    )


class Baselines:
    """Counters at their last measurement: per (namespace, owner, track), per address
    read (a pod IP, or the url source's endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], dict[str, Totals]] = {}

    def window(
        self, namespace: str, owner: str, track: str, read: dict[str, Totals]
    ) -> tuple[Totals, set[str]]:
        """What the addresses in `read` served since their last measurement, and the
        addresses seen for the first time; `read` becomes the baseline of the next
        (addresses gone are forgotten)."""
        with self._lock:
            before = self._totals.get((namespace, owner, track), {})
            self._totals[(namespace, owner, track)] = dict(read)
        total = Totals()
        for address, totals in read.items():
            total = total + totals.since(before.get(address))
        return total, set(read) - set(before)

    def forget(self, namespace: str, owner: str) -> None:
        with self._lock:
            for key in [k for k in self._totals if k[:2] == (namespace, owner)]:
                del self._totals[key]


BASELINES = Baselines()


def _get(url: str, timeout: float) -> str:
    try:
        return fetch(url, timeout, limit=MAX_BODY).decode()
    except UnicodeDecodeError:
        raise SourceError(f"GET {url}: not UTF-8 text") from None


def _from_pods(
    namespace: str, owner: str, track: str, may_dial: Callable[[str], bool], timeout: float
) -> Reading:
    selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_TRACK}={track}"
    read: dict[str, Totals] = {}
    for address in filter(may_dial, kube.ready_pod_ips(namespace, selector)):
        try:
            read[address] = parse(_get(f"http://{address}:{SERVING_PORT}/metrics", timeout))
        except (SourceError, ValueError):
            continue
    total, _ = BASELINES.window(namespace, owner, track, read)
    return Reading.of(total)


def _from_url(url: str, namespace: str, owner: str, timeout: float) -> dict[str, Reading]:
    try:
        by_track = parse_tracks(_get(url, timeout))
    except ValueError as error:
        raise SourceError(f"GET {url}: not Prometheus metrics: {error}") from None
    readings = {}
    for track in TRACKS:
        total, new = BASELINES.window(namespace, owner, track, {url: by_track.get(track, Totals())})
        readings[track] = (
            Reading(problem=f"first reading of {url}: the baseline of the next measurement")
            if new
            else Reading.of(total)
        )
    return readings


def render_query(template: str, namespace: str, owner: str, track: str, span: float) -> str:
    """A PromQL template of spec.canary.analysis.source.queries, filled in."""
    return string.Template(template).substitute(
        namespace=namespace,
        name=owner,
        track=track,
        service=child_name(owner, track),
        range=promql.range_of(span),
    )


def _from_prometheus(
    base: str, queries: PromQueries, namespace: str, owner: str, *, span: float, timeout: float
) -> dict[str, Reading]:
    readings = {}
    for track in TRACKS:
        try:
            values = [
                promql.value(base, render_query(q, namespace, owner, track, span), timeout)
                for q in (queries.requests, queries.errors, queries.latency_p99)
            ]
        except promql.QueryError as error:
            raise SourceError(str(error)) from None
        requests, errors, p99 = values
        readings[track] = Reading(requests or 0.0, errors or 0.0, p99)
    return readings


def predictions(window: Window) -> list[int]:
    """A track's captured predictions per bin, over all its windows."""
    total: list[int] = []
    for each in window.capture.windows:
        total = add_counts(total, each.prediction, "prediction") if total else list(each.prediction)
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


def read_tracks(
    namespace: str,
    owner: str,
    analysis: Analysis,
    *,
    span: float,
    may_dial: Callable[[str], bool],
    timeout: float,
) -> dict[str, Reading]:
    """Each track's requests, errors and p99 over the span, from the analysis' source."""
    source = analysis.source
    try:
        if source.type == "url" and source.url is not None:
            return _from_url(source.url, namespace, owner, timeout)
        if source.type == "prometheus" and source.url is not None:
            queries = source.queries or PromQueries()
            return _from_prometheus(
                source.url, queries, namespace, owner, span=span, timeout=timeout
            )
    except SourceError as error:
        return dict.fromkeys(TRACKS, Reading(problem=str(error)))
    return {track: _from_pods(namespace, owner, track, may_dial, timeout) for track in TRACKS}


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
    """Measure both tracks now over the span since `since`; prediction drift from what
    both tracks' pods captured after `since`."""
    readings = read_tracks(
        namespace, owner, analysis, span=now - since, may_dial=may_dial, timeout=timeout
    )
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
                for track in TRACKS
            )
            drift = prediction_psi(canary, stable, analysis.min_requests)
        except SourceError:
            drift = None
    return judge(analysis, readings["canary"], now, stable=readings["stable"], drift=drift)
