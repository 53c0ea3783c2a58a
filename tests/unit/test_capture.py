"""Capture windows: binning, rotation, reservoir bounds, sampling and merging."""

import copy
from pathlib import Path

import numpy as np
import pytest
from mlops_contract.profile import build_profile
from mlops_contract.windows import CaptureWindow, merge_windows

from mlops_serving.capture import Capture, SharedCapture


def make_capture(clock: list[float], **options: float) -> Capture:
    rng = np.random.default_rng(0)
    profile = build_profile(
        {"x": rng.normal(0, 1, 2000), "colour": rng.choice(["a", "b"], 2000)},
        rng.normal(0, 1, 2000),
    )
    settings: dict[str, float] = {
        "sample_rate": 1.0,
        "window_seconds": 60,
        "windows": 3,
        "reservoir": 5,
    }
    settings.update(options)
    return Capture(
        profile,
        sample_rate=settings["sample_rate"],
        window_seconds=int(settings["window_seconds"]),
        windows=int(settings["windows"]),
        reservoir=int(settings["reservoir"]),
        clock=lambda: clock[0],
        seed=1,
    )


def rows(n: int) -> np.ndarray:
    return np.array([[float(i % 7) - 3, "a" if i % 3 else "z"] for i in range(n)], dtype=object)


def test_windows_align_rotate_and_stay_bounded() -> None:
    clock = [120.5]
    capture = make_capture(clock)
    capture.record(rows(10), np.zeros(10))
    clock[0] = 179.9
    capture.record(rows(5), np.zeros(5))
    assert [w.start for w in capture.snapshot()] == [120]
    for t in (180, 240, 300, 360):
        clock[0] = t
        capture.record(rows(1), np.zeros(1))
    assert [w.start for w in capture.snapshot()] == [240, 300, 360]
    assert [w.start for w in capture.snapshot(since=300)] == [300, 360]
    clock[0] = 300.5  # the clock stepped back: rows go to the window they belong to
    capture.record(rows(2), np.zeros(2))
    assert [w.rows for w in capture.snapshot()] == [1, 3, 1]


def test_counts_reservoir_and_unknown_categories() -> None:
    capture = make_capture([0.0])
    capture.record(rows(30), np.linspace(-2, 2, 30))
    (window,) = capture.snapshot()
    assert window.rows == 30
    assert sum(window.features["x"]) == 30
    colour = window.features["colour"]
    assert colour[-1] == 10  # "z" is not a reference category: counted as other
    assert sum(colour) == 30
    assert sum(window.prediction) == 30
    assert len(window.reservoir) == 5
    assert window.seen == 30


def test_sample_rate_is_respected() -> None:
    capture = make_capture([0.0], sample_rate=0.25)
    sampled = sum(capture.sampled() for _ in range(4000))
    assert 850 < sampled < 1150


def test_windows_from_several_workers_merge_by_adding() -> None:
    clock = [60.0]
    first, second = make_capture(clock), make_capture(clock)
    first.record(rows(4), np.zeros(4))
    second.record(rows(6), np.zeros(6))
    windows = [*first.snapshot(), *second.snapshot()]
    given = copy.deepcopy(windows)
    (merged,) = merge_windows(windows, reservoir=5)
    assert windows == given  # the inputs are left as they were
    assert merged.rows == 10
    assert sum(merged.features["x"]) == 10
    assert len(merged.reservoir) == 5


def test_shared_capture_reads_sibling_workers(tmp_path: Path) -> None:
    clock = [60.0]
    first, second = make_capture(clock), make_capture(clock)
    worker = SharedCapture(first, tmp_path, worker="1")
    sibling = SharedCapture(second, tmp_path, worker="2")
    second.record(rows(6), np.zeros(6))
    sibling.write(*second.changes())
    first.record(rows(4), np.zeros(4))
    view = worker.read()
    assert view.features == ["x", "colour"]
    assert [w.rows for w in view.windows] == [10]


def test_shared_capture_rewrites_only_changed_windows(tmp_path: Path) -> None:
    """A flush writes the windows binned into since the last one, and drops the files of
    windows that rotated out; a reader still counts what a worker wrote."""
    clock = [60.0]
    capture = make_capture(clock)  # keeps 3 windows
    worker = SharedCapture(capture, tmp_path, worker="7")
    reader = SharedCapture(make_capture(clock), tmp_path, worker="8")
    capture.record(rows(3), np.zeros(3))
    changed, kept = capture.changes()
    assert [w.start for w in changed] == [60]
    worker.write(changed, kept)
    assert capture.changes() == ([], {60})  # nothing new: nothing to write
    clock[0] = 120.0
    capture.record(rows(2), np.zeros(2))
    changed, kept = capture.changes()
    assert [w.start for w in changed] == [120]
    worker.write(changed, kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7-120.json", "7-60.json"]
    assert [(w.start, w.rows) for w in reader.read().windows] == [(60, 3), (120, 2)]
    for start in (180, 240):
        clock[0] = start
        capture.record(rows(1), np.zeros(1))
    worker.write(*capture.changes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7-120.json", "7-180.json", "7-240.json"]
    clock[0] = 600.0  # long after: what worker 7 left has aged out
    assert reader.read().windows == []


def test_totals_count_every_row_ever_binned_across_windows_and_workers(tmp_path: Path) -> None:
    """The counters /metrics exports: monotonic while windows rotate out, and added up
    over the workers that published them."""
    clock = [60.0]
    capture = make_capture(clock)  # keeps 3 windows
    expected = {"x": [0] * capture.features[0].bins, "colour": [0] * capture.features[1].bins}
    for start in (60, 120, 180, 240, 300):
        clock[0] = start
        capture.record(rows(7), np.linspace(-2, 2, 7))
        (window,) = capture.snapshot(since=start)
        for name, counts in expected.items():
            expected[name] = [a + b for a, b in zip(counts, window.features[name], strict=True)]
    totals = capture.cumulative()
    assert len(capture.snapshot()) == 3  # two windows rotated out; the totals kept them
    assert totals["rows"] == 35
    assert totals["features"] == expected
    assert sum(totals["prediction"]) == 35
    sibling = make_capture(clock)
    sibling.record(rows(5), np.zeros(5))
    SharedCapture(sibling, tmp_path, worker="2").write(*sibling.changes(), sibling.cumulative())
    summed = SharedCapture(capture, tmp_path, worker="1").totals(capture.cumulative())
    assert summed["rows"] == 40
    assert summed["features"]["x"] == [
        a + b for a, b in zip(expected["x"], sibling.cumulative()["features"]["x"], strict=True)
    ]


@pytest.mark.parametrize(
    ("width", "dtype"),
    [(12, "float64"), (1, "float64"), (33, "int64"), (300, "float64"), (5, "object")],
)
def test_numeric_counts_match_the_profile_bins_exactly(width: int, dtype: str) -> None:
    """Every value lands in FeatureProfile.bin_index's bin, values on an edge included,
    across batches that are queued and binned together, batches larger than the queue,
    a full queue of values above every edge, and rows that are not float64 (an object
    row also carries a categorical column)."""
    rng = np.random.default_rng(3)
    reference = {f"f{i}": rng.gamma(2.0, 1.0 + i, 3000).round(1) for i in range(width - 1)}
    reference["few"] = rng.integers(0, 4, 3000).astype(float)  # fewer edges than the others
    if dtype == "object":
        reference["colour"] = rng.choice(np.array(["a", "b"]), 3000)
    profile = build_profile(reference, rng.normal(0, 1, 3000))
    numeric = [f for f in profile.features if f.kind == "numeric"]
    assert len(numeric) == width
    if width > 1:
        assert len(numeric[-1].edges) < len(numeric[0].edges)
    capture = Capture(
        profile, sample_rate=1.0, window_seconds=60, windows=1, reservoir=0, clock=lambda: 0.0
    )
    batches = []
    full = capture.buffer_rows
    for size in (1, 7, 100, 1500, 3, 2500, *[90] * 12, full):
        batch = rng.gamma(2.0, 1.5, (size, width)).round(1).astype(dtype)
        if size == full:  # above every edge: every byte lane counts as far as it can
            batch[:] = 1e6
        batch[0] = [f.edges[size % len(f.edges)] for f in numeric]
        if dtype == "object":
            batch = np.column_stack([batch, rng.choice(np.array(["a", "b", "c"]), size)])
        batches.append(batch)
        capture.record(batch, rng.normal(0, 1, size))
    (window,) = capture.snapshot()
    everything = np.concatenate(batches)
    assert window.rows == len(everything)
    for j, feature in enumerate(profile.features):
        expected = np.bincount(feature.bin_index(everything[:, j]), minlength=feature.bins)
        assert window.features[feature.name] == expected.tolist()


@pytest.mark.parametrize(
    "values",
    [
        np.array([2, 0, 1, 1, 7, 0]),
        np.array(["a", "b", "zz", "a"]),
        np.array([1, "a", 1.5, None, "0"], dtype=object),  # values that do not sort together
        np.array([0.0, 1.5, np.nan, 1.5]),
    ],
)
def test_categorical_bins_name_each_value_as_its_string(values: np.ndarray) -> None:
    feature = build_profile({"c": np.array(["0", "1", "a", "1.5", "2"] * 3)}, None).features[0]
    assert feature.kind == "categorical"
    expected = [
        feature.categories.index(str(v))
        if str(v) in feature.categories
        else len(feature.categories)
        for v in values
    ]
    assert feature.bin_index(values).tolist() == expected


def test_reservoir_keeps_every_row_with_equal_chance() -> None:
    """Algorithm L over batches of uneven sizes: each tenth of the stream is kept as often."""
    profile = build_profile({"i": np.arange(1000.0)}, None)
    kept_by_tenth = np.zeros(10, np.int64)
    for seed in range(400):
        capture = Capture(
            profile,
            sample_rate=1.0,
            window_seconds=60,
            windows=1,
            reservoir=10,
            clock=lambda: 0.0,
            seed=seed,
        )
        sizes = np.random.default_rng(seed).integers(1, 97, 40)
        start = 0
        for size in sizes:
            stop = min(start + int(size), 1000)
            capture.record(np.arange(start, stop, dtype=float)[:, None], None)
            start = stop
        capture.record(np.arange(start, 1000, dtype=float)[:, None], None)
        (window,) = capture.snapshot()
        assert window.seen == 1000
        kept = [int(row[0]) for row in window.reservoir]
        assert len(set(kept)) == 10
        kept_by_tenth += np.bincount(np.array(kept) // 100, minlength=10)
    assert kept_by_tenth.sum() == 4000
    assert kept_by_tenth.min() > 320, kept_by_tenth
    assert kept_by_tenth.max() < 480, kept_by_tenth


def test_windows_binned_on_other_edges_do_not_merge() -> None:
    window = CaptureWindow(start=60, rows=2, seen=2, features={"x": [1, 1]}, prediction=[2])
    wider = window.model_copy(update={"features": {"x": [1, 1, 0]}})
    with pytest.raises(ValueError, match=r"^x: 3 bins cannot merge with 2$"):
        merge_windows([window, wider], reservoir=5)
    other = window.model_copy(update={"features": {"y": [1, 1]}})
    with pytest.raises(ValueError, match=r"features \['y'\] cannot merge with \['x'\]"):
        merge_windows([window, other], reservoir=5)


def test_a_sibling_file_that_is_not_a_window_is_left_out(tmp_path: Path) -> None:
    clock = [60.0]
    capture = make_capture(clock)
    worker = SharedCapture(capture, tmp_path, worker="1")
    capture.record(rows(4), np.zeros(4))
    (tmp_path / "2-60.json").write_text('{"start": 60, "rows": -1, "seen": 0, "features": {}}')
    (tmp_path / "3-60.json").write_bytes(b'{"start": 60, "ro')
    assert [(w.start, w.rows) for w in worker.read().windows] == [(60, 4)]
