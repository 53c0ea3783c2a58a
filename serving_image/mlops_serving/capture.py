"""Feature capture: live inputs and predictions binned on the reference profile.

Counts are kept per time window (aligned to multiples of the window width, so
windows from several workers or pods line up and merge by adding), plus a
bounded uniform reservoir of raw rows per window. DriftMonitor reads them from
GET /v2/capture (see app.py); the counts are on the same bins as profile.json,
so a drift test needs nothing else.
"""

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from mlops_contract.profile import Profile
from mlops_contract.windows import CaptureView, CaptureWindow, add_counts, merge_windows

TILE_VALUES = 4096
LANES = 8
"""Bytes per uint64 word: comparison results are summed eight at a time."""
GROUP_ROWS = 255 * LANES
"""Rows whose comparisons are summed in one set of byte lanes: each lane counts one row
in LANES, and holds up to 255."""
BUFFER_VALUES = 1 << 16
"""Values queued before they are binned (512 KiB of float64, 2160 rows of 30 features):
enough rows that a drain's fixed cost is spread thin. A bound on values, not rows,
keeps the buffer small for wide inputs."""


@dataclass
class Window:
    start: int
    counts: npt.NDArray[np.int64]
    """Every feature's bin counts, concatenated in profile order (see Capture.slices)."""
    prediction: npt.NDArray[np.int64]
    rows: int = 0
    reservoir: npt.NDArray[Any] | None = None
    """Up to `reservoir` raw rows, the first `kept` of them filled."""
    kept: int = 0
    seen: int = 0
    weight: float = 0.0
    """Algorithm L's running weight; set once the reservoir is full."""
    next_pick: int = 0
    """Index (in `seen` order) of the next row that replaces a reservoir entry."""


class Capture:
    """Time-windowed bin counts and reservoirs for one serving process.

    Rows are queued in one buffer and binned a buffer at a time, vectorised across
    features. Only counts are kept, so no value's bin is ever built: for each rank
    k of a features x edges matrix (padded with +inf), the buffer is compared with
    every feature's k-th edge, and the True results are counted per feature. A
    feature's bins are then the differences of its counts above consecutive edges.

    Two layouts keep these passes at numpy's full speed:
    - Comparing a rows x features matrix with one edge per feature would run numpy's
      inner loop over only `features` values at a time, too short for SIMD (about 2.5
      times slower). So the edges are tiled over `tile_rows` rows, and the buffer is
      compared a whole tile at a time, as long flat runs.
    - The comparisons are counted as bytes, 8 at a time in uint64 words. A boolean
      row-major block of 8 rows is exactly `features` words, and each byte of a
      block always belongs to the same feature. So the tiles' words are added, then
      the blocks' words, and then each feature's bytes. Tiles are added in groups of
      at most GROUP_ROWS rows, each group into words of its own, so no byte passes 255.
      This replaces a bincount of every value's bin, which cost more than all the
      comparisons together.
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
        self.windows: dict[int, Window] = {}
        self.changed: set[int] = set()
        """Starts of the windows binned into since changes() last ran."""
        self.features = profile.features
        offsets = np.cumsum([0, *(f.bins for f in profile.features)])
        self.total_bins = int(offsets[-1])
        self.slices = {
            f.name: slice(int(offsets[i]), int(offsets[i + 1]))
            for i, f in enumerate(profile.features)
        }
        numeric = [i for i, f in enumerate(profile.features) if f.kind == "numeric"]
        self.numeric_columns = np.array(numeric, dtype=np.intp)
        self.all_numeric = len(numeric) == len(profile.features)
        width = max((len(profile.features[i].edges) for i in numeric), default=0)
        edges = np.full((len(numeric), width), np.inf)
        for row, i in enumerate(numeric):
            feature_edges = profile.features[i].edges
            edges[row, : len(feature_edges)] = feature_edges
        # Tile rows come in blocks of LANES, and tiles fill the buffer: see the class doc.
        per_tile = -(-TILE_VALUES // max(len(numeric), 1))
        self.tile_rows = min(-(-per_tile // LANES) * LANES, GROUP_ROWS)
        tiles = max(BUFFER_VALUES // max(len(profile.features), 1) // self.tile_rows, 1)
        self.buffer_rows = tiles * self.tile_rows
        self.group_tiles = GROUP_ROWS // self.tile_rows
        """Tiles whose comparisons are summed in the same byte lanes."""
        # Row k holds every numeric feature's k-th edge, repeated for each row of a tile.
        self.edges_tiled = np.tile(edges.T, (1, self.tile_rows))
        # Bin b of numeric feature i is entry (b, i) of the differences of its counts
        # above each edge (with all rows above "edge -1" and none above "edge `width`").
        bins = [
            (row, i, b) for row, i in enumerate(numeric) for b in range(profile.features[i].bins)
        ]
        self.numeric_targets = np.array([offsets[i] + b for _, i, b in bins], np.intp)
        self.numeric_sources = np.array([b * len(numeric) + row for row, _, b in bins], np.intp)
        self._pending: npt.NDArray[Any] = np.empty((0, 0))
        """The buffer the queued rows are copied into to be binned. Allocated by the
        first record(), for the dtype and width of its rows."""
        self._queued: list[npt.NDArray[Any]] = []
        """The batches queued, `_pending_rows` rows in all, as record() was given them."""
        self._pending_rows = 0
        self._pending_start = 0
        self._pending_until = 0
        self._pending_predictions: list[npt.NDArray[Any]] = []
        self.categorical = [
            (i, int(offsets[i]), f)
            for i, f in enumerate(profile.features)
            if f.kind == "categorical"
        ]
        prediction = profile.prediction
        self.prediction_bins = prediction.bins if prediction else 0
        self.totals = Window(
            start=0,
            counts=np.zeros(self.total_bins, np.int64),
            prediction=np.zeros(self.prediction_bins, np.int64),
        )
        """Every row binned since start, in no window: the counters /metrics exports."""

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

        The arrays are kept as they are, not copied, until they are binned: the caller
        must not change them afterwards (the server makes new arrays per request).
        They are binned a buffer of BUFFER_VALUES values at a time, when it is full (or
        read), since numpy's cost per value falls steeply with the array's size. This
        runs in every request, so the usual case is kept short, and rows are copied
        once, when the buffer drains, rather than here.
        """
        end = self._pending_rows + len(rows)
        if (
            end > self.buffer_rows
            or not self._pending_start <= self.clock() < self._pending_until
            or rows.shape[1:] != self._pending.shape[1:]
            or rows.dtype != self._pending.dtype
        ):
            self._record_slowly(rows, predictions)
            return
        self._queued.append(rows)
        self._pending_rows = end
        if predictions is not None and len(predictions) == len(rows):
            self._pending_predictions.append(predictions)

    def _record_slowly(self, rows: npt.NDArray[Any], predictions: npt.NDArray[Any] | None) -> None:
        """record() when the window or the rows' layout changed, or the buffer is full."""
        start = int(self.clock() // self.window_seconds) * self.window_seconds
        layout = (rows.dtype, rows.shape[1:])
        if start != self._pending_start or (self._pending.dtype, self._pending.shape[1:]) != layout:
            self.drain()
            self._pending_start, self._pending_until = start, start + self.window_seconds
            if (self._pending.dtype, self._pending.shape[1:]) != layout:
                self._pending = np.empty((self.buffer_rows, *rows.shape[1:]), rows.dtype)
        if predictions is not None and len(predictions) != len(rows):
            predictions = None
        done = 0
        while done < len(rows):
            if self._pending_rows == self.buffer_rows:
                self.drain()
            take = min(len(rows) - done, self.buffer_rows - self._pending_rows)
            self._queued.append(rows[done:][:take])
            self._pending_rows += take
            if predictions is not None:
                self._pending_predictions.append(predictions[done:][:take])
            done += take

    def drain(self) -> None:
        """Bin the queued rows into their window."""
        if not self._pending_rows:
            return
        window = self._window(self._pending_start)
        rows = self._pending[: self._pending_rows]
        np.concatenate(self._queued, out=rows)
        self._queued = []
        predictions = self._pending_predictions
        counts, predicted = window.counts.copy(), window.prediction.copy()
        self._bin(window, rows, np.concatenate(predictions) if predictions else None)
        self.totals.rows += len(rows)
        self.totals.counts += window.counts - counts
        self.totals.prediction += window.prediction - predicted
        self._reserve(window, rows)
        self.changed.add(window.start)
        self._pending_rows = 0
        self._pending_predictions = []

    def _bin(
        self, window: Window, rows: npt.NDArray[Any], predictions: npt.NDArray[Any] | None
    ) -> None:
        window.rows += len(rows)
        if self.numeric_columns.size:
            counts = self._numeric_counts()
            window.counts[self.numeric_targets] += counts[self.numeric_sources]
        for column, offset, feature in self.categorical:
            window.counts += np.bincount(
                offset + feature.bin_index(rows[:, column]), minlength=self.total_bins
            )
        prediction = self.profile.prediction
        if prediction is not None and predictions is not None:
            window.prediction += np.bincount(
                prediction.bin_index(predictions), minlength=self.prediction_bins
            )

    def _numeric_counts(self) -> npt.NDArray[np.int64]:
        """The queued rows' bin counts of every numeric feature, as a flat
        (edges + 1) x features matrix."""
        n = self._pending_rows
        used = -(-n // self.tile_rows) * self.tile_rows
        if self.all_numeric and self._pending.dtype == np.float64:
            values = self._pending[:used]  # padded in place: rows past n are free
        else:
            rows = self._pending[:n]
            values = np.empty((used, len(self.numeric_columns)))
            values[:n] = rows if self.all_numeric else rows[:, self.numeric_columns]
        values[n:] = -np.inf  # above no edge
        tiles = values.reshape(-1, self.edges_tiled.shape[1])
        above = np.greater(tiles, self.edges_tiled[:, None, :])  # ranks x tiles x values
        words = above.view(np.uint64)
        ranks, width = len(self.edges_tiled), values.shape[1]
        groups = range(0, len(tiles), self.group_tiles)
        by_group = np.empty((ranks, len(groups), words.shape[2]), np.uint64)
        for k, first in enumerate(groups):  # np.add.reduceat took 2.5 times as long
            np.add.reduce(words[:, first : first + self.group_tiles], axis=1, out=by_group[:, k])
        by_block = np.add.reduce(by_group.reshape(ranks, len(groups), -1, width), axis=2)
        counts = np.empty((ranks + 2, width), np.int64)
        counts[0] = n
        counts[1:-1] = by_block.view(np.uint8).reshape(ranks, -1, width).sum(axis=1)
        counts[-1] = 0
        return -np.diff(counts, axis=0).reshape(-1)

    def _reserve(self, window: Window, rows: npt.NDArray[Any]) -> None:
        """Uniform reservoir sampling, by Li's algorithm L: once the reservoir is full,
        the gap to the next row kept is drawn directly, so a batch without one costs
        nothing, and a window of N rows draws O(k log(N / k)) random numbers. Rows are
        kept in one array per window, so they hold no Python objects of their own."""
        size, n = self.reservoir_size, len(rows)
        if not size:
            window.seen += n
            return
        if window.reservoir is None:
            window.reservoir = np.empty((size, *rows.shape[1:]), rows.dtype)
        space = min(size - window.kept, n)
        if space:
            window.reservoir[window.kept : window.kept + space] = rows[:space]
            window.kept += space
            if window.kept == size:
                window.weight = self._shrink(1.0)
                window.next_pick = window.seen + space + self._gap(window.weight)
        end = window.seen + n
        replaced: dict[int, int] = {}  # slot -> row; a later pick of a slot wins, as in order
        while window.kept == size and window.next_pick < end:
            replaced[self.random.randrange(size)] = window.next_pick - window.seen
            window.weight = self._shrink(window.weight)
            window.next_pick += 1 + self._gap(window.weight)
        if replaced:
            window.reservoir[list(replaced)] = rows[list(replaced.values())]
        window.seen = end

    def _shrink(self, weight: float) -> float:
        return weight * math.exp(math.log(1.0 - self.random.random()) / self.reservoir_size)

    def _gap(self, weight: float) -> int:
        """Rows skipped before the next one kept: geometric with success chance `weight`."""
        if weight >= 1.0:
            return 0
        return math.floor(math.log(1.0 - self.random.random()) / math.log1p(-weight))

    def to_window(self, window: Window) -> CaptureWindow:
        """A window in the contract's form: lists, not arrays (unchecked: it is our own)."""
        return CaptureWindow.model_construct(
            start=window.start,
            rows=window.rows,
            seen=window.seen,
            features=self.counts_of(window.counts),
            prediction=window.prediction.tolist(),
            reservoir=[] if window.reservoir is None else window.reservoir[: window.kept].tolist(),
        )

    def counts_of(self, counts: npt.NDArray[np.int64]) -> dict[str, list[int]]:
        """Each feature's bin counts, from their concatenation in profile order."""
        return {name: counts[part].tolist() for name, part in self.slices.items()}

    def snapshot(self, since: float | None = None) -> list[CaptureWindow]:
        return [self.to_window(w) for w in self.copies(since)]

    def copies(self, since: float | None = None) -> list[Window]:
        """Copies of the windows that end after `since`, in order: another thread may
        read them (numpy copies them at memory speed; building JSON takes far longer)."""
        self.drain()
        return [
            replace(
                w,
                counts=w.counts.copy(),
                prediction=w.prediction.copy(),
                reservoir=None if w.reservoir is None else w.reservoir[: w.kept].copy(),
            )
            for s, w in sorted(self.windows.items())
            if since is None or s + self.window_seconds > since
        ]

    def cumulative(self) -> dict[str, Any]:
        """Every row binned since start, as counters: rows, per feature, predictions."""
        self.drain()
        return {
            "rows": self.totals.rows,
            "features": self.counts_of(self.totals.counts),
            "prediction": self.totals.prediction.tolist(),
        }

    def changes(self) -> tuple[list[CaptureWindow], set[int]]:
        """The windows changed since the last call, and the starts of all windows kept."""
        self.drain()
        changed = [
            self.to_window(self.windows[s]) for s in sorted(self.changed & self.windows.keys())
        ]
        self.changed.clear()
        return changed, set(self.windows)


class SharedCapture:
    """Capture across uvicorn workers, through a shared folder: one file per worker and
    window, rewritten only when that window changed. Rewriting every window at each
    flush cost 1.7 s of CPU per flush once an hour of windows with full reservoirs
    had built up (37 MB of JSON per worker, every 2 s)."""

    def __init__(self, capture: Capture, directory: Path | None, worker: str | None = None) -> None:
        self.capture = capture
        self.directory = directory
        self.worker = worker or str(os.getpid())

    def write(
        self, changed: list[CaptureWindow], kept: set[int], totals: dict[str, Any] | None = None
    ) -> None:
        """Publish this worker's changed windows (and its totals, when given); drop the
        files of windows it let go."""
        if self.directory is None:
            return
        if totals is not None:
            path = self.directory / f"{self.worker}.totals"
            partial = path.with_suffix(".partial")
            partial.write_bytes(orjson.dumps(totals))
            partial.replace(path)
        for window in changed:
            path = self.directory / f"{self.worker}-{window.start}.json"
            partial = path.with_suffix(".tmp")
            partial.write_text(window.model_dump_json())
            partial.replace(path)
        for path in self.directory.glob(f"{self.worker}-*.json"):
            if int(path.stem.rsplit("-", 1)[1]) not in kept:
                path.unlink(missing_ok=True)

    def totals(self, own: dict[str, Any]) -> dict[str, Any]:
        """Every worker's totals added up: this one's (`own`, taken on the event loop)
        and its siblings' as they last published them. A worker that exited keeps its
        file, so that the counters never go back while the pod lives."""
        summed = {**own, "features": dict(own["features"])}
        if self.directory is None:
            return summed
        for path in self.directory.glob("*.totals"):
            if path.stem == self.worker:
                continue
            try:
                theirs = orjson.loads(path.read_bytes())
                features = {
                    name: add_counts(counts, theirs["features"][name], name)
                    for name, counts in summed["features"].items()
                }
                prediction = add_counts(summed["prediction"], theirs["prediction"], "prediction")
            except (OSError, ValueError, KeyError):
                continue
            rows = summed["rows"] + theirs["rows"]
            summed = {"rows": rows, "features": features, "prediction": prediction}
        return summed

    def after(self, since: float | None) -> float:
        """`since`, or the start of the retention (windows x windowSeconds) if later: the
        files of a worker that exited count until they age out, as its windows would."""
        capture = self.capture
        oldest = capture.clock() - capture.max_windows * capture.window_seconds
        return oldest if since is None else max(since, oldest)

    def read(self, since: float | None = None) -> CaptureView:
        return self.reader(since)()

    def reader(self, since: float | None) -> Callable[[], CaptureView]:
        """Takes this worker's windows now, on the event loop that alone records; the
        call returned builds the view (tens of MB of JSON for a full retention), and may
        run in a thread."""
        after = self.after(since)
        own = self.capture.copies(after)
        return lambda: self.view(own, after)

    def view(self, own: list[Window], after: float) -> CaptureView:
        """This worker's windows (copies) and its siblings' that end after `after`, merged.
        Touches no live state: it may run in a thread. Siblings serve the same bundle, so
        their windows bin alike; a file that cannot be read or is not a window is left out."""
        capture = self.capture
        width = capture.window_seconds
        windows = [capture.to_window(w) for w in own]
        if self.directory is not None:
            for path in self.directory.glob("*.json"):
                if path.name.startswith(f"{self.worker}-"):
                    continue
                try:
                    window = CaptureWindow.model_validate_json(path.read_bytes())
                except (OSError, ValueError):
                    continue
                if window.start + width > after:
                    windows.append(window)
        return CaptureView.model_construct(
            window_seconds=capture.window_seconds,
            features=[f.name for f in capture.features],
            windows=merge_windows(windows, capture.reservoir_size),
        )
