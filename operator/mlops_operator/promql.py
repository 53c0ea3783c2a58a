"""Instant queries to a Prometheus server's HTTP API, for canary analysis and drift
monitoring (source prometheus)."""

import json
import math
import urllib.error
import urllib.parse
import urllib.request

MAX_BODY = 16 * 1024 * 1024


class QueryError(Exception):
    """The query could not be answered; the message says where and why."""


def query(base: str, promql: str, timeout: float) -> list[tuple[dict[str, str], float]]:
    """The series an instant query answers, with their labels and values (a scalar
    answer is one series without labels)."""
    url = f"{base.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s) only, by the CRD
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as error:
        detail = _error_of(error.read(4096))
        raise QueryError(f"{base}: HTTP {error.code} to {promql}{detail}") from None
    except (OSError, ValueError) as error:
        raise QueryError(f"{base}: {error}") from None
    if len(body) > MAX_BODY:
        raise QueryError(f"{base}: answer larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]
    except (ValueError, KeyError, TypeError, IndexError):
        raise QueryError(f"{base}: not a Prometheus query answer to {promql}") from None


def _error_of(body: bytes) -> str:
    try:
        return f": {json.loads(body)['error']}"
    except (ValueError, KeyError, TypeError):
        return ""


def range_of(seconds: float) -> str:
    """A PromQL range covering `seconds` (whole seconds, at least one)."""
    return f"{max(math.ceil(seconds), 1)}s"


def value(base: str, promql: str, timeout: float) -> float | None:
    """The one value a query answers; None for an empty answer or NaN."""
    series = query(base, promql, timeout)
    if len(series) > 1:
        raise QueryError(f"{promql}: {len(series)} series; the query must give one")
    found = series[0][1] if series else None
    return None if found is None or math.isnan(found) else found
