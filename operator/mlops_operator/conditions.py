"""Status conventions: metav1.Condition bookkeeping (a transition time changes only when
the status does) and the Event-posting callback reconciles report transitions through."""

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Condition = dict[str, Any]
Post = Callable[[str, str, str], None]
"""Posts a Kubernetes Event about the object being reconciled: (type, reason, message)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(duration: str) -> float:
    """A Go-style duration such as "1h30m" or "500ms" (the CRD's pattern) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|s|m|h)", duration))


def parse_time(stamp: str) -> float:
    """A status timestamp (RFC 3339, UTC, whole seconds) as Unix time."""
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def stamp_of(moment: float) -> str:
    """Unix time as a status timestamp."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool | None, reason: str, message: str, generation: int | None
) -> Condition:
    """A metav1.Condition; `ok` None is status Unknown."""
    return {
        "type": type_,
        "status": "Unknown" if ok is None else "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge(old: list[Condition] | None, new: list[Condition]) -> list[Condition]:
    """New conditions, each keeping its old lastTransitionTime unless its status changed."""
    previous = {c["type"]: c for c in old or []}
    merged = []
    stamp = now()
    for item in new:
        before = previous.get(item["type"])
        unchanged = before is not None and before.get("status") == item["status"]
        merged.append(
            {
                **item,
                "lastTransitionTime": before["lastTransitionTime"]
                if unchanged and before
                else stamp,
            }
        )
    kept = [c for t, c in previous.items() if t not in {n["type"] for n in new}]
    return merged + kept


@dataclass(frozen=True)
class Reporter:
    """Logs a transition and posts it as an Event on the object."""

    logger: logging.Logger | logging.LoggerAdapter[Any]
    post: Post

    def normal(self, reason: str, message: str) -> None:
        self.logger.info("%s: %s", reason, message)
        self.post("Normal", reason, message)

    def warning(self, reason: str, message: str) -> None:
        self.logger.warning("%s: %s", reason, message)
        self.post("Warning", reason, message)
