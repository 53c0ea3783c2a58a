"""Feature capture: live inputs and predictions binned on the reference profile.

Counts are kept per time window (aligned to multiples of the window width, so
windows from several workers or pods line up and merge by adding), plus a
bounded uniform reservoir of raw rows per window. DriftMonitor reads them from
GET /v2/capture (see app.py); the counts are on the same bins as profile.json,
so a drift test needs nothing else.
"""

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .profile import Profile

DRAIN_ROWS = 1024


@dataclass
class Window:
    start: int
    counts: npt.NDArray[np.int64]
    """Every feature's bin counts, concatenated in profile order (see Capture.slices)."""
    prediction: npt.NDArray[np.int64]
    rows: int = 0
    reservoir: list[list[Any]] = field(default_factory=list)
    seen: int = 0


def merge_windows(windows: Iterable[dict[str, Any]], reservoir: int) -> list[dict[str, Any]]:
    """Add windows with the same start (from several workers or pods)."""
    merged: dict[int, dict[str, Any]] = {}
    for window in windows:
        into = merged.get(window["start"])
        if into is None:
            merged[window["start"]] = json.loads(json.dumps(window))
            continue
        into["rows"] += window["rows"]
        into["seen"] += window["seen"]
        for name, counts in window["features"].items():
            into["features"][name] = [
                a + b for a, b in zip(into["features"][name], counts, strict=True)
            ]
        if window["prediction"]:
            into["prediction"] = [
                a + b for a, b in zip(into["prediction"], window["prediction"], strict=True)
            ]
        into["reservoir"] = (into["reservoir"] + window["reservoir"])[:reservoir]
    return [merged[start] for start in sorted(merged)]


class Capture:
    """Time-windowed bin counts and reservoirs for one serving process.

    Binning is vectorised across features: numeric values are compared with each
    rank of a features x edges matrix (padded with +inf), the comparisons summed
    in a small integer type (one byte per value: these loops are memory-bound),
    and all bins land in one concatenated count vector through a single bincount,
    so the cost per request hardly grows with the number of features.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        sample_rate: float,
        window_seconds: int,
        windows: int,
        reservoir: int,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.profile = profile
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.max_windows = windows
        self.reservoir_size = reservoir
        self.clock = clock
        self.random = random.Random(seed)  # noqa: S311 - sampling, not secrets
        self.rng = np.random.default_rng(seed)
        self.windows: dict[int, Window] = {}
        self.features = profile.features
        offsets = np.cumsum([0, *(f.bins for f in profile.features)])
        self.total_bins = int(offsets[-1])
        self.slices = {
            f.name: slice(int(offsets[i]), int(offsets[i + 1]))
            for i, f in enumerate(profile.features)
        }
        numeric = [i for i, f in enumerate(profile.features) if f.kind == "numeric"]
        self.numeric_columns = np.array(numeric, dtype=np.intp)
        self.numeric_offsets = offsets[numeric].astype(np.intp)
        self.all_numeric = len(numeric) == len(profile.features)
        width = max((len(profile.features[i].edges) for i in numeric), default=0)
        edges = np.full((len(numeric), width), np.inf)
        for row, i in enumerate(numeric):
            feature_edges = profile.features[i].edges
            edges[row, : len(feature_edges)] = feature_edges
        # Row k holds every numeric feature's k-th edge: bin = how many edges lie below x.
        self.edges_by_rank = edges.T.copy()
        self.rank_type = np.uint8 if width < np.iinfo(np.uint8).max else np.uint16
        self._pending: list[tuple[int, npt.NDArray[Any], npt.NDArray[Any] | None]] = []
        self._pending_rows = 0
        self.categorical = [
            (i, int(offsets[i]), f)
            for i, f in enumerate(profile.features)
            if f.kind == "categorical"
        ]
        prediction = profile.prediction
        self.prediction_bins = prediction.bins if prediction else 0

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self.random.random() < self.sample_rate

    def _window(self, start: int) -> Window:
        window = self.windows.get(start)
        if window is None:
            window = Window(
                start=start,
                counts=np.zeros(self.total_bins, np.int64),
                prediction=np.zeros(self.prediction_bins, np.int64),
            )
            self.windows[start] = window
            while len(self.windows) > self.max_windows:
                del self.windows[min(self.windows)]
        return window

    def record(self, rows: npt.NDArray[Any], predictions: npt.NDArray[Any] | None) -> None:
        """Queue a batch of input rows (rows x features) and its primary predictions.

        Binning runs once DRAIN_ROWS rows are queued (or when read): numpy's cost per
        value falls several times between a 1-row and a 1000-row array.
        """
        start = int(self.clock() // self.window_seconds) * self.window_seconds
        self._pending.append((start, rows, predictions))
        self._pending_rows += len(rows)
        if self._pending_rows >= DRAIN_ROWS:
            self.drain()

    def drain(self) -> None:
        """Bin every queued batch into its window."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        groups: dict[int, list[tuple[npt.NDArray[Any], npt.NDArray[Any] | None]]] = {}
        for start, rows, predictions in pending:
            groups.setdefault(start, []).append((rows, predictions))
        for start, batches in groups.items():
            window = self._window(start)
            rows = batches[0][0] if len(batches) == 1 else np.concatenate([b[0] for b in batches])
            predicted = [p for r, p in batches if p is not None and len(p) == len(r)]
            self._bin(window, rows, np.concatenate(predicted) if predicted else None)
            self._reserve(window, rows)

    def _bin(
        self, window: Window, rows: npt.NDArray[Any], predictions: npt.NDArray[Any] | None
    ) -> None:
        window.rows += len(rows)
        if self.numeric_columns.size:
            values = rows if self.all_numeric else rows[:, self.numeric_columns]
            values = values.astype(np.float64, copy=False)
            ranks = np.zeros(values.shape, self.rank_type)
            above = np.empty(values.shape, np.bool_)
            above_as_rank = above.view(np.uint8)  # True is 1
            for edge in self.edges_by_rank:
                np.greater(values, edge, out=above)
                ranks += above_as_rank
            bins = ranks + self.numeric_offsets
            window.counts += np.bincount(bins.ravel(), minlength=self.total_bins)
        for column, offset, feature in self.categorical:
            window.counts += np.bincount(
                offset + feature.bin_index(rows[:, column]), minlength=self.total_bins
            )
        prediction = self.profile.prediction
        if prediction is not None and predictions is not None:
            window.prediction += np.bincount(
                prediction.bin_index(predictions), minlength=self.prediction_bins
            )

    def _reserve(self, window: Window, rows: npt.NDArray[Any]) -> None:
        """Uniform reservoir sampling (algorithm R), vectorised over the batch."""
        size, n = self.reservoir_size, len(rows)
        space = min(max(size - len(window.reservoir), 0), n)
        if space:
            window.reservoir.extend(rows[:space].tolist())
        if space < n and size:
            positions = window.seen + np.arange(space + 1, n + 1)
            slots = (self.rng.random(n - space) * positions).astype(np.int64)
            for offset in np.flatnonzero(slots < size):
                window.reservoir[slots[offset]] = rows[space + offset].tolist()
        window.seen += n

    def to_json(self, window: Window) -> dict[str, Any]:
        return {
            "start": window.start,
            "rows": window.rows,
            "features": {name: window.counts[part].tolist() for name, part in self.slices.items()},
            "prediction": window.prediction.tolist(),
            "reservoir": window.reservoir,
            "seen": window.seen,
        }

    def snapshot(self, since: float | None = None) -> list[dict[str, Any]]:
        self.drain()
        return [
            self.to_json(w)
            for s, w in sorted(self.windows.items())
            if since is None or s + self.window_seconds > since
        ]


class SharedCapture:
    """Capture across uvicorn workers: each flushes its windows to a shared folder."""

    def __init__(self, capture: Capture, directory: Path | None) -> None:
        self.capture = capture
        self.directory = directory
        self.own = directory / f"{os.getpid()}.json" if directory else None

    def flush(self) -> None:
        if self.directory is None or self.own is None:
            return
        partial = self.own.with_suffix(".tmp")
        partial.write_text(json.dumps(self.capture.snapshot()))
        partial.replace(self.own)

    def read(self, since: float | None = None) -> dict[str, Any]:
        windows = self.capture.snapshot(since)
        if self.directory is not None:
            for path in self.directory.glob("*.json"):
                if path == self.own:
                    continue
                try:
                    others = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                width = self.capture.window_seconds
                windows += [w for w in others if since is None or w["start"] + width > since]
        return {
            "windowSeconds": self.capture.window_seconds,
            "features": [f.name for f in self.capture.features],
            "windows": merge_windows(windows, self.capture.reservoir_size),
        }
