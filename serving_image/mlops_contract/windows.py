"""Capture windows as GET /v2/capture serves them, and their merge: counts add, and
reservoirs of raw rows merge into a uniform sample of all the rows the windows saw.
A pod merges its workers' windows; the operator merges its pods'.

The models validate what is read from elsewhere (a sibling worker's file, a pod's
answer) straight from its bytes: pydantic parses and checks a full hour of windows
in less time than json.loads alone. What a process builds from its own counts is
made with `model_construct`, which checks nothing and costs nothing.
"""

import random
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt


class CaptureWindow(BaseModel):
    """One window of captured traffic: counts on the reference profile's bins, and a
    uniform sample of the raw rows."""

    model_config = ConfigDict(extra="ignore")

    start: int
    """Unix time the window starts at, a multiple of the window width."""
    rows: NonNegativeInt
    """Rows binned."""
    seen: NonNegativeInt
    """Rows offered to the reservoir (the sampled rows)."""
    features: dict[str, list[NonNegativeInt]]
    """Each feature's counts per bin, in the profile's bin order."""
    prediction: list[NonNegativeInt] = []
    """The predictions' counts per bin; empty where the profile bins no predictions."""
    reservoir: list[list[Any]] = []
    """Up to the reservoir's size of raw rows, features in the view's order."""

    def merged(self, other: "CaptureWindow", size: int, rng: random.Random) -> "CaptureWindow":
        """This window and another of the same start (another worker's or pod's) as one.
        Neither changes; the result may share their lists."""
        if set(other.features) != set(self.features):
            raise ValueError(
                f"window {self.start}: features {sorted(other.features)} cannot merge "
                f"with {sorted(self.features)}"
            )
        prediction = self.prediction
        if other.prediction:
            prediction = add_counts(self.prediction, other.prediction, "prediction")
        return CaptureWindow.model_construct(
            start=self.start,
            rows=self.rows + other.rows,
            seen=self.seen + other.seen,
            features={
                name: add_counts(counts, other.features[name], name)
                for name, counts in self.features.items()
            },
            prediction=prediction,
            reservoir=merge_reservoirs(
                self.reservoir, self.seen, other.reservoir, other.seen, size, rng=rng
            ),
        )


class CaptureView(BaseModel):
    """The body of GET /v2/capture: what one pod (all its workers) captured."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str | None = None
    version: str | None = None
    track: str | None = None
    window_seconds: int = Field(alias="windowSeconds", gt=0)
    features: list[str]
    """The features' names, in the reservoir rows' order."""
    windows: list[CaptureWindow]
    """Oldest first, one per start."""

    def json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def add_counts(first: list[int], second: list[int], what: str) -> list[int]:
    """Two lists of counts on the same bins, added; ValueError names `what` when their
    bins differ."""
    if len(first) != len(second):
        raise ValueError(f"{what}: {len(second)} bins cannot merge with {len(first)}")
    return [a + b for a, b in zip(first, second, strict=True)]


def merge_windows(
    windows: Iterable[CaptureWindow], reservoir: int, rng: random.Random | None = None
) -> list[CaptureWindow]:
    """Add windows with the same start (from several workers or pods), oldest first.
    Reservoirs merge into a uniform sample of all the rows the windows saw
    (`merge_reservoirs`). ValueError names what differs in windows binned on other
    edges."""
    rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
    merged: dict[int, CaptureWindow] = {}
    for window in windows:
        into = merged.get(window.start)
        merged[window.start] = window if into is None else into.merged(window, reservoir, rng)
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
