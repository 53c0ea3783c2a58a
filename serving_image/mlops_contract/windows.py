"""Capture windows as GET /v2/capture serves them, and their merge: counts add, and
reservoirs of raw rows merge into a uniform sample of all the rows the windows saw.
A pod merges its workers' windows; the operator merges its pods'."""

import random
from collections.abc import Iterable
from typing import Any


def merge_windows(
    windows: Iterable[dict[str, Any]], reservoir: int, rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """Add windows with the same start (from several workers or pods). The windows given
    are left as they were; a merged one may share their lists. Reservoirs merge into a
    uniform sample of all the rows the windows saw (`merge_reservoirs`)."""
    rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
    merged: dict[int, dict[str, Any]] = {}
    for window in windows:
        into = merged.get(window["start"])
        if into is None:  # counts are replaced below, never changed in place
            merged[window["start"]] = {**window, "features": dict(window["features"])}
            continue
        into["features"] = {
            name: [a + b for a, b in zip(counts, window["features"][name], strict=True)]
            for name, counts in into["features"].items()
        }
        if window["prediction"]:
            into["prediction"] = [
                a + b for a, b in zip(into["prediction"], window["prediction"], strict=True)
            ]
        into["reservoir"] = merge_reservoirs(
            into["reservoir"], into["seen"], window["reservoir"], window["seen"], reservoir, rng=rng
        )
        into["rows"] += window["rows"]
        into["seen"] += window["seen"]
    return [merged[start] for start in sorted(merged)]


def merge_reservoirs(
    first: list[Any],
    first_seen: int,
    second: list[Any],
    second_seen: int,
    size: int,
    *,
    rng: random.Random,
) -> list[Any]:
    """A uniform sample of `size` rows (or all of them) of two streams, from a uniform
    sample of each and the rows each saw. How many come from the first stream is
    hypergeometric, as if `size` rows were drawn without replacement from both
    streams; which of its sampled rows they are is then uniform too."""
    total = first_seen + second_seen
    take = min(size, total, len(first) + len(second))
    from_first = 0
    for drawn in range(take):  # one draw at a time: the hypergeometric distribution
        left_first = first_seen - from_first
        if rng.random() * (total - drawn) < left_first:
            from_first += 1
    from_first = min(from_first, len(first))
    from_second = min(take - from_first, len(second))
    return rng.sample(first, from_first) + rng.sample(second, from_second)
