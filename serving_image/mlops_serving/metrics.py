"""Prometheus metrics of one served model, labelled with model, version and track.

Children are bound once at start-up: a labels() lookup per request would cost
more than the rest of the bookkeeping together.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LABELS = ("model", "version", "track")


class Metrics:
    def __init__(
        self,
        model: str,
        version: str,
        track: str,
        classes: list[Any],
        edges: list[float],
        *,
        multiprocess: bool = False,
    ) -> None:
        # Several workers write their values to PROMETHEUS_MULTIPROC_DIR; /metrics sums them.
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        base = (model, version, track)
        self._base = base
        self._requests = Counter(
            "mlops_requests",
            "Inference requests by route and status code",
            [*LABELS, "route", "code"],
            registry=self.registry,
        )
        self._errors = Counter(
            "mlops_request_errors",
            "Failed inference requests: client (4xx) or model (5xx)",
            [*LABELS, "kind"],
            registry=self.registry,
        )
        latency = Histogram(
            "mlops_request_duration_seconds",
            "Inference request latency",
            [*LABELS, "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._latency = {r: latency.labels(*base, r) for r in ("predict", "predict-batch", "infer")}
        self.in_flight = Gauge(
            "mlops_requests_in_flight",
            "Inference requests being served",
            LABELS,
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(*base)
        self.batch_rows = Histogram(
            "mlops_batch_rows",
            "Rows per model call",
            LABELS,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(*base)
        self.classes = [str(c) for c in classes]
        if classes:
            predictions = Counter(
                "mlops_predictions",
                "Predictions by class",
                [*LABELS, "class"],
                registry=self.registry,
            )
            self._by_class = [predictions.labels(*base, c) for c in self.classes]
        else:
            buckets = sorted({*edges, float("inf")}) if edges else Histogram.DEFAULT_BUCKETS
            self._values = Histogram(
                "mlops_prediction_value",
                "Predicted values",
                LABELS,
                buckets=buckets,
                registry=self.registry,
            ).labels(*base)
        capture = Counter(
            "mlops_capture_rows",
            "Rows captured for drift monitoring",
            LABELS,
            registry=self.registry,
        )
        self.captured_rows = capture.labels(*base)
        self._request_children: dict[tuple[str, int], Any] = {}
        self._error_children = {k: self._errors.labels(*base, k) for k in ("client", "model")}

    def observe(self, route: str, code: int, seconds: float) -> None:
        child = self._request_children.get((route, code))
        if child is None:
            child = self._request_children[(route, code)] = self._requests.labels(
                *self._base, route, str(code)
            )
        child.inc()
        latency = self._latency.get(route)
        if latency is not None:
            latency.observe(seconds)
        if code >= 500:
            self._error_children["model"].inc()
        elif code >= 400:
            self._error_children["client"].inc()

    def predictions(
        self, class_indexes: npt.NDArray[np.intp] | None, values: npt.NDArray[Any]
    ) -> None:
        if class_indexes is not None:
            for index, count in enumerate(
                np.bincount(class_indexes, minlength=len(self._by_class))
            ):
                if count:
                    self._by_class[index].inc(int(count))
        elif values.dtype.kind in "iuf":
            for value in values.ravel():
                self._values.observe(float(value))

    def exposition(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class CaptureTotals(Collector):
    """Captured rows binned on the reference profile since the pod started, as counters
    (MLOPS_SERVING_CAPTURE_METRICS): what a DriftMonitor with source prometheus reads.
    A bin is its index in profile.json's bins of that feature; the edges stay behind
    the token, with the profile."""

    def __init__(self, base: tuple[str, str, str], totals: dict[str, Any]) -> None:
        self.base = list(base)
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "mlops_capture_binned_rows", "Captured rows binned since start", labels=LABELS
        )
        rows.add_metric(self.base, self.totals["rows"])
        bins = CounterMetricFamily(
            "mlops_capture_bins",
            "Captured rows per feature and reference-profile bin",
            labels=[*LABELS, "feature", "bin"],
        )
        for name, counts in self.totals["features"].items():
            for index, count in enumerate(counts):
                bins.add_metric([*self.base, name, str(index)], count)
        predicted = CounterMetricFamily(
            "mlops_capture_prediction_bins",
            "Captured predictions per reference-profile bin",
            labels=[*LABELS, "bin"],
        )
        for index, count in enumerate(self.totals["prediction"]):
            predicted.add_metric([*self.base, str(index)], count)
        yield from (rows, bins, predicted)


def capture_exposition(base: tuple[str, str, str], totals: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaptureTotals(base, totals))
    return generate_latest(registry)
