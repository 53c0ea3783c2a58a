"""The operator's own Prometheus metrics."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from mlops_operator.api.modeldeployment import CanaryPhase

if TYPE_CHECKING:
    from mlops_operator.drift import DriftReport

RECONCILES = Counter(
    "mlops_operator_reconciles", "Reconciles by kind and result", ["kind", "result"]
)
ERRORS = Counter("mlops_operator_reconcile_errors", "Reconciles that raised, by kind", ["kind"])
DURATION = Histogram(
    "mlops_operator_reconcile_duration_seconds",
    "Reconcile duration by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

API_REQUESTS = Counter(
    "mlops_operator_api_requests", "Requests to the Kubernetes API by method", ["method"]
)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception:
        ERRORS.labels(kind).inc()
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


class DriftGauges:
    """Each DriftMonitor's last verdict, per feature and for the dataset. Label sets of
    features a monitor no longer reports, and of deleted monitors, are removed."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        monitor = ["namespace", "monitor"]
        feature = [*monitor, "feature", "method"]

        def gauge(name: str, text: str, labels: list[str]) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        self.statistic = gauge("mlops_drift_statistic", "Test statistic or distance", feature)
        self.p_value = gauge("mlops_drift_p_value", "p-value, after correction", feature)
        self.drifted = gauge("mlops_drift_feature_drifted", "1 if the feature drifted", feature)
        self.dataset = gauge("mlops_drift_dataset_drift", "1 if the dataset drifted", monitor)
        self.share = gauge("mlops_drift_share", "Share of drifted features", monitor)
        self.samples = gauge("mlops_drift_samples", "Rows in the last window", monitor)
        self.lock = threading.Lock()
        self.published: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def publish(self, namespace: str, monitor: str, report: "DriftReport") -> None:
        with self.lock:
            self._forget_features(namespace, monitor)
            self.samples.labels(namespace, monitor).set(report.samples)
            if report.insufficient_data:  # no verdict: none is exported
                for gauge in (self.dataset, self.share):
                    _remove(gauge, namespace, monitor)
                return
            self.dataset.labels(namespace, monitor).set(float(bool(report.dataset_drift)))
            self.share.labels(namespace, monitor).set(report.drift_share)
            rows = [*report.features, *([report.prediction] if report.prediction else [])]
            for row in rows:
                labels = (namespace, monitor, row.name, row.method)
                self.statistic.labels(*labels).set(row.statistic)
                self.drifted.labels(*labels).set(float(row.drifted))
                if row.p_value is not None:
                    self.p_value.labels(*labels).set(row.p_value)
            self.published[(namespace, monitor)] = {(r.name, r.method) for r in rows}

    def forget(self, namespace: str, monitor: str) -> None:
        with self.lock:
            self._forget_features(namespace, monitor)
            for gauge in (self.dataset, self.share, self.samples):
                _remove(gauge, namespace, monitor)

    def _forget_features(self, namespace: str, monitor: str) -> None:
        for name, method in self.published.pop((namespace, monitor), set()):
            for gauge in (self.statistic, self.p_value, self.drifted):
                _remove(gauge, namespace, monitor, name, method)


class CanaryGauge:
    """Each ModelDeployment's canary phase, one series per deployment at 1 (the
    phase in force), as kube-state-metrics shows a pod's phase. A deployment without
    a canary, or deleted, has none."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.phase = Gauge(
            "mlops_canary_phase",
            "1 for the phase of the ModelDeployment's canary",
            ["namespace", "modeldeployment", "phase"],
            registry=registry,
        )

    def set(self, namespace: str, deployment: str, phase: str | None) -> None:
        for each in get_args(CanaryPhase):
            if each != phase:
                _remove(self.phase, namespace, deployment, each)
        if phase is not None:
            self.phase.labels(namespace, deployment, phase).set(1)

    def forget(self, namespace: str, deployment: str) -> None:
        self.set(namespace, deployment, None)


def _remove(gauge: Gauge, *labels: str) -> None:
    """Drop one label set; one never set is no error."""
    try:
        gauge.remove(*labels)
    except KeyError:
        return


DRIFT = DriftGauges()
CANARY = CanaryGauge()
