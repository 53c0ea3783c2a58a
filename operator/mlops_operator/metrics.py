"""The operator's own Prometheus metrics."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

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
