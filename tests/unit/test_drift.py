"""The drift engine against scipy, its choices, corrections and verdicts, and mlops-drift."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from mlops_contract.profile import build_profile
from mlops_contract.windows import CaptureView, merge_reservoirs

from mlops_operator.drift import (
    DriftConfigError,
    FeatureTest,
    Reference,
    choose,
    detect_capture_drift,
    detect_drift,
)
from mlops_operator.drift import (
    Tests as DriftTests,
)
from mlops_operator.drift import stats as drift_stats
from mlops_operator.drift.cli import main as drift_cli
from mlops_operator.drift.engine import FeatureReference
from mlops_serving.capture import Capture

# (reference size, current size, kind of data): small and large, exact and asymptotic
# p-values, continuous data and data full of ties.
SAMPLES = [
    (1, 1, "normal"),
    (7, 3, "normal"),
    (300, 200, "integers"),
    (2000, 2000, "normal"),
    (5000, 800, "integers"),
    (12_000, 3000, "normal"),
    (40_000, 2500, "integers"),
    (100_000, 10_000, "normal"),
]


def draw(rng: np.random.Generator, size: int, kind: str, shift: float) -> np.ndarray:
    if kind == "integers":
        return rng.integers(0, 20, size).astype(np.float64) + round(shift * 5)
    return rng.normal(shift, 1.0, size)


@pytest.mark.parametrize(("n", "m", "kind"), SAMPLES)
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_ks_and_wasserstein_equal_scipy(n: int, m: int, kind: str, shift: float) -> None:
    rng = np.random.default_rng(n + m)
    reference, current = draw(rng, n, kind, 0.0), draw(rng, m, kind, shift)
    ordered_ref, ordered_cur = np.sort(reference), np.sort(current)
    expected = scipy.stats.ks_2samp(reference, current)
    statistic = drift_stats.ks_statistic(ordered_ref, ordered_cur)
    assert statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert drift_stats.ks_pvalue(statistic, n, m) == pytest.approx(expected.pvalue, abs=1e-9)
    distance = scipy.stats.wasserstein_distance(reference, current)
    assert drift_stats.wasserstein(ordered_ref, ordered_cur) == pytest.approx(distance, rel=1e-9)


def test_kolmogorov_tail_equals_scipy_in_every_regime() -> None:
    """Sizes and statistics that reach each of scipy's methods: the Smirnov tail, the
    Pelz-Good series, the Durbin matrix and the closed forms at both ends."""
    rng = np.random.default_rng(3)
    for _ in range(150):
        n = int(rng.choice([150, 2000, 9091, 150_000]))
        x = math.sqrt(rng.uniform(0.001, 400) / n)
        expected = float(scipy.stats.kstwo.sf(x, n))
        assert drift_stats.kolmogorov_sf(n, x) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("reference", "current"),
    [([50, 30, 20], [40, 40, 20]), ([5, 5, 5, 5], [1, 9, 2, 8]), ([10, 0, 7], [9, 0, 8])],
)
def test_chi_square_equals_scipy(reference: list[int], current: list[int]) -> None:
    ref, cur = np.array(reference, float), np.array(current, float)
    used = (ref > 0) | (cur > 0)
    expected = scipy.stats.chisquare(cur[used], ref[used] / ref[used].sum() * cur.sum())
    statistic, p_value = drift_stats.chi_square(ref, cur)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p_value == pytest.approx(expected.pvalue, abs=1e-12)


def test_chi_square_of_a_category_the_reference_never_saw_is_finite_and_significant() -> None:
    statistic, p_value = drift_stats.chi_square([100, 100, 0], [100, 100, 5])
    assert math.isfinite(statistic)
    assert p_value < 1e-6


@pytest.mark.parametrize(
    ("raw", "bonferroni", "fdr"),
    [
        ([0.01, 0.04, 0.03, 0.2], [0.04, 0.16, 0.12, 0.8], [0.04, 0.16 / 3, 0.16 / 3, 0.2]),
        ([0.5], [0.5], [0.5]),
        ([0.001, 0.9], [0.002, 1.0], [0.002, 0.9]),
    ],
)
def test_corrections(raw: list[float], bonferroni: list[float], fdr: list[float]) -> None:
    pvalues = np.array(raw)
    assert drift_stats.bonferroni(pvalues) == pytest.approx(bonferroni)
    assert drift_stats.benjamini_hochberg(pvalues) == pytest.approx(fdr)
    assert drift_stats.benjamini_hochberg(pvalues) == pytest.approx(
        scipy.stats.false_discovery_control(pvalues, method="bh")
    )


def feature(kind: str, count: int, distinct: int, sample: bool = True) -> FeatureReference:
    return FeatureReference(
        name="f",
        kind=kind,  # type: ignore[arg-type]
        count=count,
        distinct=distinct,
        counts=np.ones(3, np.int64),
        sample=np.arange(3.0) if sample and kind == "numeric" else None,
    )


@pytest.mark.parametrize(
    ("kind", "count", "distinct", "has_values", "chosen"),
    [
        ("numeric", 1000, 500, True, "ks"),
        ("numeric", 1001, 500, True, "wasserstein"),
        ("numeric", 1000, 5, True, "chi2"),
        ("numeric", 50_000, 5, True, "jensenshannon"),
        ("numeric", 50_000, 6, True, "wasserstein"),
        ("categorical", 200, 30, False, "chi2"),
        ("categorical", 50_000, 30, False, "jensenshannon"),
        ("numeric", 500, 400, False, "chi2"),
        ("numeric", 50_000, 400, False, "jensenshannon"),
    ],
)
def test_auto_chooses_like_evidently(
    kind: str, count: int, distinct: int, has_values: bool, chosen: str
) -> None:
    assert choose(feature(kind, count, distinct), FeatureTest(), has_values) == chosen


def test_methods_that_need_numbers_name_the_feature() -> None:
    with pytest.raises(DriftConfigError, match="'f' is categorical: method ks"):
        choose(feature("categorical", 10, 3), FeatureTest("ks"), True)
    with pytest.raises(DriftConfigError, match="'f': method wasserstein needs raw values"):
        choose(feature("numeric", 10, 3), FeatureTest("wasserstein"), False)


def frames(rng: np.random.Generator, rows: int, shifted: dict[str, float]) -> pd.DataFrame:
    columns = {f"x{i}": rng.normal(shifted.get(f"x{i}", 0.0), 1.0, rows) for i in range(8)}
    colours = rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2])
    if "colour" in shifted:
        colours = rng.choice(["red", "green", "blue"], rows, p=[0.2, 0.3, 0.5])
    return pd.DataFrame({**columns, "colour": colours})


@pytest.mark.parametrize("method", ["auto", "ks", "wasserstein", "psi", "jensenshannon"])
def test_two_shifted_features_are_exactly_the_ones_flagged(method: str) -> None:
    rng = np.random.default_rng(11)
    reference = frames(rng, 20_000, {})
    current = frames(rng, 5000, {"x2": 0.5, "colour": 1})
    tests = DriftTests(
        method,  # type: ignore[arg-type]
        features={"colour": FeatureTest("chi2")},
    )
    report = detect_drift(reference, current, tests=tests, correction="bonferroni")
    assert sorted(f.name for f in report.features if f.drifted) == ["colour", "x2"]
    assert report.drifted == 2
    assert report.drift_share == pytest.approx(2 / 9)
    assert report.dataset_drift is False
    assert detect_drift(reference, current, tests=tests, drift_share=0.2).dataset_drift is True


def test_per_feature_thresholds_override_the_default() -> None:
    rng = np.random.default_rng(5)
    reference, current = frames(rng, 5000, {}), frames(rng, 2000, {"x1": 0.2})
    tests = DriftTests("wasserstein", features={"x1": FeatureTest(threshold=0.5)})
    report = detect_drift(reference[["x1"]], current, tests=tests)
    (x1,) = report.features
    assert (x1.method, x1.threshold, x1.drifted) == ("wasserstein", 0.5, False)
    assert 0.1 < x1.statistic < 0.5


def test_too_few_rows_judge_nothing() -> None:
    rng = np.random.default_rng(2)
    report = detect_drift(frames(rng, 1000, {}), frames(rng, 99, {"x0": 3}), min_samples=100)
    assert report.insufficient_data
    assert report.dataset_drift is None
    assert report.features == []


def test_a_missing_column_is_named() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(DriftConfigError, match="'colour' is missing"):
        detect_drift(frames(rng, 100, {}), frames(rng, 100, {}).drop(columns="colour"))


def false_drift_rate(correction: str, windows: int = 200) -> float:
    """Share of unshifted windows judged drifted when one drifted feature of ten is
    enough: the family-wise error rate of the per-feature KS tests."""
    rng = np.random.default_rng(2024)
    reference = Reference.from_frame({f"x{i}": rng.normal(size=5000) for i in range(10)})
    alarms = 0
    for _ in range(windows):
        current = {f"x{i}": rng.normal(size=500) for i in range(10)}
        report = detect_drift(
            reference,
            current,
            tests=DriftTests("ks"),
            correction=correction,  # type: ignore[arg-type]
            drift_share=0.1,
        )
        alarms += bool(report.dataset_drift)
    return alarms / windows


def test_corrected_false_drift_rate_stays_at_the_nominal_level() -> None:
    """200 windows measure a rate to about 1.5 points, so the rates are judged by a
    one-sided binomial test against the nominal 5%, not read as exact figures."""
    rates = {c: false_drift_rate(c) for c in ("none", "bonferroni", "fdr")}
    print(f"false dataset-drift rate over 200 unshifted windows, 10 KS tests at 0.05: {rates}")

    def above_nominal(rate: float) -> float:
        alarms = round(rate * 200)
        return float(scipy.stats.binomtest(alarms, 200, 0.05, alternative="greater").pvalue)

    assert above_nominal(rates["bonferroni"]) > 0.01
    assert above_nominal(rates["fdr"]) > 0.01
    assert above_nominal(rates["none"]) < 1e-6  # ten uncorrected tests alarm far more often


def test_capture_windows_against_the_profile_flag_the_shifted_features() -> None:
    rng = np.random.default_rng(8)
    reference = np.column_stack([rng.normal(size=20_000) for _ in range(4)])
    profile = build_profile({f"x{i}": reference[:, i] for i in range(4)}, reference[:, 0] > 0)
    clock = [0.0]
    captures = [
        Capture(
            profile,
            sample_rate=1,
            window_seconds=60,
            windows=5,
            reservoir=800,
            seed=s,
            clock=lambda: clock[0],
        )
        for s in (1, 2)
    ]
    for minute in range(3):
        clock[0] = 60.0 * minute + 1
        for capture in captures:
            rows = np.column_stack([rng.normal(size=1500) for _ in range(4)])
            rows[:, 3] += 0.4
            capture.record(rows, rows[:, 0] > 0)
    windows = [window for capture in captures for window in capture.snapshot()]
    view = CaptureView(window_seconds=60, features=[f"x{i}" for i in range(4)], windows=windows)
    report = detect_capture_drift(
        profile, view, tests=DriftTests("ks"), correction="bonferroni", min_samples=1000, seed=0
    )
    assert report.samples == 9000
    assert [f.name for f in report.features if f.drifted] == ["x3"]
    assert report.prediction is not None
    assert report.prediction.method == "jensenshannon"
    assert not report.prediction.drifted
    binned = detect_capture_drift(profile, view, tests=DriftTests("psi"))
    assert [f.name for f in binned.features if f.drifted] == ["x3"]


def test_merged_reservoirs_are_uniform_over_both_streams() -> None:
    rng = random.Random(7)
    first_stream, second_stream = list(range(1000)), list(range(1000, 4000))
    picked = np.zeros(4000)
    trials = 2000
    for _ in range(trials):
        first = rng.sample(first_stream, 100)
        second = rng.sample(second_stream, 100)
        merged = merge_reservoirs(first, 1000, second, 3000, 100, rng=rng)
        assert len(merged) == len(set(merged)) == 100
        picked[merged] += 1
    share_first = picked[:1000].sum() / picked.sum()
    assert share_first == pytest.approx(0.25, abs=0.01)
    by_quarter = picked.reshape(4, 1000).sum(axis=1)
    assert scipy.stats.chisquare(by_quarter).pvalue > 0.001


def test_mlops_drift_prints_a_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    frames(rng, 3000, {}).to_csv(tmp_path / "reference.csv", index=False)
    frames(rng, 1000, {"x5": 1.0}).to_parquet(tmp_path / "current.parquet")
    args = [str(tmp_path / "reference.csv"), str(tmp_path / "current.parquet")]
    assert drift_cli([*args, "--drift-share", "0.1"]) == 1
    table = capsys.readouterr().out
    assert "x5" in table
    assert "DRIFT: 1 of 9 features drifted" in table
    assert drift_cli([*args, "--json", "--feature", "x5=psi:5"]) == 0
    report = json.loads(capsys.readouterr().out)
    (x5,) = [f for f in report["features"] if f["name"] == "x5"]
    assert (x5["method"], x5["threshold"], x5["drifted"]) == ("psi", 5.0, False)
    assert drift_cli([*args, "--method", "ks", "--feature", "colour=ks"]) == 2
    assert "'colour' is categorical" in capsys.readouterr().err
