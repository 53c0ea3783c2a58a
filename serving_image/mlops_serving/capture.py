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


@dataclass
class Window:
    start: int
    rows: int = 0
    features: dict[str, list[int]] = field(default_factory=dict)
    prediction: list[int] = field(default_factory=list)
    reservoir: list[list[Any]] = field(default_factory=list)
    seen: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "rows": self.rows,
            "features": self.features,
            "prediction": self.prediction,
            "reservoir": self.reservoir,
            "seen": self.seen,
        }


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
    """Time-windowed bin counts and reservoirs for one serving process."""

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
        self.windows: dict[int, Window] = {}
        self.features = profile.features
        self.numeric = [
            (i, f.name, np.asarray(f.edges), f.bins)
            for i, f in enumerate(profile.features)
            if f.kind == "numeric"
        ]
        self.categorical = [
            (i, f) for i, f in enumerate(profile.features) if f.kind == "categorical"
        ]

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self.random.random() < self.sample_rate

    def _window(self) -> Window:
        start = int(self.clock() // self.window_seconds) * self.window_seconds
        window = self.windows.get(start)
        if window is None:
            window = Window(
                start=start,
                features={f.name: [0] * f.bins for f in self.features},
                prediction=[0] * self.profile.prediction.bins if self.profile.prediction else [],
            )
            self.windows[start] = window
            while len(self.windows) > self.max_windows:
                del self.windows[min(self.windows)]
        return window

    def record(self, rows: npt.NDArray[Any], predictions: npt.NDArray[Any] | None) -> None:
        """Bin a batch of input rows (rows x features) and its primary predictions."""
        window = self._window()
        n = len(rows)
        window.rows += n
        for column, name, edges, bins in self.numeric:
            values = rows[:, column].astype(np.float64, copy=False)
            counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=bins)
            target = window.features[name]
            for b in np.flatnonzero(counts):
                target[b] += int(counts[b])
        for column, feature in self.categorical:
            target = window.features[feature.name]
            for b in feature.bin_index(rows[:, column]):
                target[b] += 1
        prediction = self.profile.prediction
        if prediction is not None and predictions is not None and len(predictions) == n:
            for b in prediction.bin_index(predictions):
                window.prediction[b] += 1
        self._reserve(window, rows)

    def _reserve(self, window: Window, rows: npt.NDArray[Any]) -> None:
        size = self.reservoir_size
        for row in rows:
            window.seen += 1
            if len(window.reservoir) < size:
                window.reservoir.append(row.tolist())
            elif size:
                slot = self.random.randrange(window.seen)
                if slot < size:
                    window.reservoir[slot] = row.tolist()

    def snapshot(self, since: float | None = None) -> list[dict[str, Any]]:
        return [
            w.to_json()
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
