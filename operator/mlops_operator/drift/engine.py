"""The drift engine: per-feature tests, their correction, and the dataset verdict.

Two entry points feed one judge:
- `detect_drift(reference, current)` compares raw columns (DataFrames or mappings
  of name to array), for notebooks, CI jobs and `mlops-drift`;
- `detect_capture_drift(profile, capture)` compares a bundle's profile.json with
  the windows that serving pods capture (GET /v2/capture), for the DriftMonitor.

A prepared `Reference` keeps each numeric reference column sorted, so that repeated
runs against it pay only for sorting the window.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from mlops_contract.profile import (
    FeatureProfile,
    Profile,
    categories_of,
    category_codes,
    numeric_edges,
)
from mlops_contract.windows import CaptureView

from . import stats
from .stats import Counts, Floats

Method = Literal["auto", "ks", "chi2", "psi", "wasserstein", "jensenshannon"]
Correction = Literal["none", "bonferroni", "fdr"]
Kind = Literal["numeric", "categorical"]

PVALUE_METHODS = frozenset({"ks", "chi2"})
"""Tests whose verdict is a p-value below the threshold; the others are distances above it."""
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,
    "chi2": 0.05,
    "psi": 0.1,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
}
SMALL_REFERENCE = 1000
"""`auto` uses p-value tests up to this many reference rows, distances above it."""
FEW_VALUES = 5
"""`auto` treats a numeric feature with at most this many distinct values as categorical."""
DEFAULT_BINS = 10


class DriftConfigError(ValueError):
    """A test that cannot run on the data given; the message names the feature."""


@dataclass(frozen=True)
class FeatureTest:
    """How to judge one feature."""

    method: Method = "auto"
    threshold: float | None = None
    """p-value below which (ks, chi2), or distance at or above which (psi,
    wasserstein, jensenshannon), the feature counts as drifted."""


@dataclass(frozen=True)
class Tests:
    """The default test, and per-feature overrides by name."""

    method: Method = "auto"
    threshold: float | None = None
    features: Mapping[str, FeatureTest] = field(default_factory=dict)

    def for_feature(self, name: str) -> FeatureTest:
        """The feature's own test; an override that keeps `auto` takes the default
        method, and a threshold set for the default method only with it."""
        own = self.features.get(name)
        if own is None:
            return FeatureTest(self.method, self.threshold)
        if own.method == "auto":
            threshold = own.threshold if own.threshold is not None else self.threshold
            return FeatureTest(self.method, threshold)
        return own


@dataclass(frozen=True)
class FeatureReference:
    """One reference column, prepared for the tests."""

    name: str
    kind: Kind
    count: int
    """Non-missing reference values."""
    distinct: int
    counts: Counts
    """Reference count per bin (numeric) or per category, the other categories last."""
    edges: Floats = field(default_factory=lambda: np.empty(0))
    categories: tuple[str, ...] = ()
    sample: Floats | None = None
    """Numeric: the sorted values (all of them, or the profile's sample)."""
    std: float = 0.0

    @classmethod
    def of_column(cls, name: str, values: npt.ArrayLike, bins: int) -> "FeatureReference":
        array = np.asarray(values)
        if array.dtype.kind in "iuf":
            ordered = stats.sorted_values(array)
            if ordered.size == 0:
                raise DriftConfigError(f"reference feature {name!r} has no non-missing values")
            edges = numeric_edges(ordered, bins)
            distinct = int(np.count_nonzero(ordered[1:] != ordered[:-1]) + 1)
            return cls(
                name=name,
                kind="numeric",
                count=int(ordered.size),
                distinct=distinct,
                counts=stats.bin_counts(edges, ordered),
                edges=edges,
                sample=ordered,
                std=float(ordered.std()),
            )
        categories, counts = categories_of(array)
        return cls(
            name=name,
            kind="categorical",
            count=int(array.size),
            distinct=len(categories) + (1 if counts[-1] else 0),
            counts=np.asarray(counts, np.int64),
            categories=tuple(categories),
        )

    @classmethod
    def of_profile(cls, feature: FeatureProfile) -> "FeatureReference":
        counts = np.asarray(feature.counts, np.int64)
        if feature.kind == "categorical":
            return cls(
                name=feature.name,
                kind="categorical",
                count=feature.count,
                distinct=int(np.count_nonzero(counts)),
                counts=counts,
                categories=tuple(feature.categories),
            )
        sample = np.asarray(feature.sample, np.float64) if feature.sample else None
        distinct = feature.distinct
        if distinct is None:  # bundles from before `distinct`: the sample's, at most
            distinct = int(np.unique(feature.sample).size) if feature.sample else feature.bins
        return cls(
            name=feature.name,
            kind="numeric",
            count=feature.count,
            distinct=distinct,
            counts=counts,
            edges=np.asarray(feature.edges, np.float64),
            sample=sample,
            std=feature.std or 0.0,
        )

    def bin(self, values: npt.ArrayLike) -> Counts:
        """Counts of raw values in this feature's bins."""
        if self.kind == "numeric":
            return stats.bin_counts(self.edges, stats.sorted_values(values))
        codes = category_codes(self.categories, values)
        return np.bincount(codes, minlength=len(self.categories) + 1).astype(np.int64)


@dataclass(frozen=True)
class Reference:
    """Every feature's reference, and the predictions', prepared once for many runs."""

    features: Mapping[str, FeatureReference]
    prediction: FeatureReference | None = None

    @classmethod
    def from_frame(
        cls, frame: Any, *, prediction: str | None = None, bins: int = DEFAULT_BINS
    ) -> "Reference":
        """From raw columns: a pandas DataFrame or a mapping of name to array.
        `prediction` names the column of the model's outputs, judged on its own."""
        columns = _columns(frame)
        return cls(
            features={
                name: FeatureReference.of_column(name, values, bins)
                for name, values in columns.items()
                if name != prediction
            },
            prediction=None
            if prediction is None
            else FeatureReference.of_column(prediction, _column(columns, prediction), bins),
        )

    @classmethod
    def from_profile(cls, profile: Profile) -> "Reference":
        return cls(
            features={f.name: FeatureReference.of_profile(f) for f in profile.features},
            prediction=None
            if profile.prediction is None
            else FeatureReference.of_profile(profile.prediction),
        )


@dataclass(frozen=True)
class Observed:
    """What a window holds of one feature: bin counts, and raw values where kept."""

    counts: Counts
    values: Floats | None = None
    """Sorted non-missing raw values (numeric features)."""


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict for one feature."""

    name: str
    method: str
    statistic: float
    p_value: float | None
    """After correction, for p-value tests."""
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Every feature's verdict and the dataset's. With fewer rows than asked for,
    `insufficient_data` is set and nothing is judged: no feature, no verdict."""

    samples: int
    reference_samples: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drifted: int
    drift_share: float
    dataset_drift: bool | None
    threshold_share: float
    correction: Correction
    insufficient_data: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_drift(
    reference: Any,
    current: Any,
    *,
    tests: Tests = Tests(),
    correction: Correction = "none",
    drift_share: float = 0.5,
    min_samples: int = 1,
    prediction: str | None = None,
    prediction_test: FeatureTest = FeatureTest(),
    bins: int = DEFAULT_BINS,
) -> DriftReport:
    """Compare raw current columns with a reference: raw columns too, or a `Reference`
    prepared from them. Every reference feature must be in `current`; other columns
    are ignored. `prediction` names the model's outputs in both."""
    if not isinstance(reference, Reference):
        reference = Reference.from_frame(reference, prediction=prediction, bins=bins)
    columns = _columns(current)
    rows = len(next(iter(columns.values()))) if columns else 0
    numeric = [f for f in reference.features.values() if f.kind == "numeric"]
    observed: dict[str, Observed] = {}
    if rows and numeric:
        matrix = stats.as_float_matrix([_column(columns, f.name) for f in numeric])
        matrix.sort(axis=1)  # one call sorts every column, NaNs last
        present = rows - np.count_nonzero(np.isnan(matrix), axis=1)
        for feature, ordered, size in zip(numeric, matrix, present, strict=True):
            observed[feature.name] = _observe_sorted(feature, ordered[:size])
    for feature in reference.features.values():
        if feature.kind == "categorical":
            observed[feature.name] = Observed(feature.bin(_column(columns, feature.name)))
    predicted = None
    if reference.prediction is not None and prediction is not None:
        values = np.asarray(_column(columns, prediction))
        if reference.prediction.kind == "numeric":
            predicted = _observe_sorted(reference.prediction, stats.sorted_values(values))
        else:
            predicted = Observed(reference.prediction.bin(values))
    verdict = Verdict(tests, correction, drift_share, min_samples, prediction_test)
    return judge(reference, observed, predicted, rows=rows, verdict=verdict)


def detect_capture_drift(
    profile: Profile | Reference,
    capture: CaptureView,
    *,
    tests: Tests = Tests(),
    correction: Correction = "none",
    drift_share: float = 0.5,
    min_samples: int = 1,
    prediction_test: FeatureTest = FeatureTest(),
    seed: int | None = None,
) -> DriftReport:
    """Compare captured windows (the body of GET /v2/capture, already merged across
    pods) with a bundle's profile. Bin counts are exact; KS and Wasserstein use the
    windows' reservoirs, pooled in proportion to each window's traffic, against the
    profile's sorted sample. Predictions are captured as bin counts only, so their
    tests are the binned ones."""
    reference = profile if isinstance(profile, Reference) else Reference.from_profile(profile)
    names = capture.features or list(reference.features)
    windows = capture.windows
    rows = sum(w.rows for w in windows)
    pooled = pool_reservoirs(
        [(np.asarray(w.reservoir, dtype=object), w.seen) for w in windows],
        np.random.default_rng(seed),
    )
    observed: dict[str, Observed] = {}
    for name, feature in reference.features.items():
        counts = np.zeros(feature.counts.size, np.int64)
        for window in windows:
            counts += np.asarray(window.features[name], np.int64)
        values = None
        if feature.kind == "numeric" and pooled.size and name in names:
            values = stats.sorted_values(pooled[:, names.index(name)].astype(np.float64))
        observed[name] = Observed(counts, values if values is not None and values.size else None)
    predicted = None
    if reference.prediction is not None and windows and all(w.prediction for w in windows):
        predicted = Observed(np.sum([np.asarray(w.prediction, np.int64) for w in windows], 0))
    verdict = Verdict(tests, correction, drift_share, min_samples, prediction_test)
    return judge(reference, observed, predicted, rows=rows, verdict=verdict)


def pool_reservoirs(
    parts: Sequence[tuple[npt.NDArray[Any], int]], rng: np.random.Generator
) -> npt.NDArray[Any]:
    """One sample of the union of several streams, each given as a uniform sample of
    it and the number of rows it saw: a proportional stratified sample, as large as
    the most thinly sampled stream allows."""
    parts = [(rows, seen) for rows, seen in parts if len(rows) and seen]
    if not parts:
        return np.empty((0, 0), dtype=object)
    total = sum(seen for _, seen in parts)
    size = min(len(rows) * total // seen for rows, seen in parts)
    taken = [
        rows[rng.choice(len(rows), size * seen // total, replace=False)] for rows, seen in parts
    ]
    return np.concatenate(taken)


@dataclass(frozen=True)
class Verdict:
    """How features are judged, and how their verdicts make the dataset's."""

    tests: Tests
    correction: Correction
    drift_share: float
    min_samples: int
    prediction_test: FeatureTest


def judge(
    reference: Reference,
    observed: Mapping[str, Observed],
    predicted: Observed | None,
    *,
    rows: int,
    verdict: Verdict,
) -> DriftReport:
    """Run each feature's test, correct the p-values together, and give the verdict."""
    tests, correction, drift_share = verdict.tests, verdict.correction, verdict.drift_share
    reference_rows = max((f.count for f in reference.features.values()), default=0)
    if rows < verdict.min_samples:
        return DriftReport(
            samples=rows,
            reference_samples=reference_rows,
            features=[],
            prediction=None,
            drifted=0,
            drift_share=0.0,
            dataset_drift=None,
            threshold_share=drift_share,
            correction=correction,
            insufficient_data=True,
        )
    measured = []
    for name, feature in reference.features.items():
        if name not in observed:
            raise DriftConfigError(f"feature {name!r} is missing from the current data")
        measured.append(_measure(feature, observed[name], tests.for_feature(name)))
    corrected = _correct([m for m in measured if m.p_value is not None], correction)
    results = [_decide(m, corrected.get(id(m))) for m in measured]
    prediction = None
    if reference.prediction is not None and predicted is not None:
        test = verdict.prediction_test
        prediction = _decide(_measure(reference.prediction, predicted, test), None)
    drifted = sum(r.drifted for r in results)
    share = drifted / len(results) if results else 0.0
    return DriftReport(
        samples=rows,
        reference_samples=reference_rows,
        features=results,
        prediction=prediction,
        drifted=drifted,
        drift_share=share,
        dataset_drift=bool(results) and share >= drift_share,
        threshold_share=drift_share,
        correction=correction,
    )


def choose(feature: FeatureReference, test: FeatureTest, has_values: bool) -> str:
    """The method `auto` stands for, by Evidently's documented rule: p-value tests for
    at most SMALL_REFERENCE reference rows, distances above; KS and Wasserstein for
    numeric features with more than FEW_VALUES distinct values, chi-square and
    Jensen-Shannon for the others. Where no raw values were kept (captured
    predictions), numeric features fall back to the binned tests."""
    if test.method != "auto":
        needs_values = test.method in ("ks", "wasserstein")
        if needs_values and feature.kind != "numeric":
            raise DriftConfigError(
                f"feature {feature.name!r} is categorical: method {test.method} needs numbers"
            )
        if needs_values and not (has_values and feature.sample is not None):
            raise DriftConfigError(
                f"feature {feature.name!r}: method {test.method} needs raw values on both "
                "sides, and only bin counts are there"
            )
        return test.method
    few = feature.kind == "categorical" or feature.distinct <= FEW_VALUES
    raw = has_values and feature.sample is not None
    if feature.count <= SMALL_REFERENCE:
        return "chi2" if few or not raw else "ks"
    return "jensenshannon" if few or not raw else "wasserstein"


@dataclass(frozen=True, eq=False)
class _Measured:
    name: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float


def _measure(feature: FeatureReference, seen: Observed, test: FeatureTest) -> _Measured:
    method = choose(feature, test, seen.values is not None)
    threshold = test.threshold if test.threshold is not None else DEFAULT_THRESHOLDS[method]
    p_value = None
    if method in ("ks", "wasserstein"):
        assert feature.sample is not None  # noqa: S101 - choose() checked both
        assert seen.values is not None  # noqa: S101
        if method == "ks":
            statistic = stats.ks_statistic(feature.sample, seen.values)
            p_value = stats.ks_pvalue(statistic, feature.sample.size, seen.values.size)
        else:  # normed by the reference's spread, as Evidently's wasserstein
            distance = stats.wasserstein(feature.sample, seen.values)
            statistic = distance / feature.std if feature.std > 0 else distance
    elif method == "chi2":
        statistic, p_value = stats.chi_square(feature.counts, seen.counts)
    elif method == "psi":
        statistic = stats.psi(feature.counts, seen.counts)
    else:
        statistic = stats.jensen_shannon(feature.counts, seen.counts)
    return _Measured(feature.name, method, statistic, p_value, threshold)


def _correct(measured: list[_Measured], correction: Correction) -> dict[int, float]:
    if not measured:
        return {}
    raw = np.array([m.p_value for m in measured], dtype=np.float64)
    if correction == "bonferroni":
        adjusted = stats.bonferroni(raw)
    elif correction == "fdr":
        adjusted = stats.benjamini_hochberg(raw)
    else:
        adjusted = raw
    return {id(m): float(p) for m, p in zip(measured, adjusted, strict=True)}


def _decide(measured: _Measured, corrected: float | None) -> FeatureDrift:
    p_value = corrected if corrected is not None else measured.p_value
    if p_value is not None:
        drifted = p_value < measured.threshold
    else:
        drifted = math.isfinite(measured.statistic) and measured.statistic >= measured.threshold
    return FeatureDrift(
        measured.name, measured.method, measured.statistic, p_value, measured.threshold, drifted
    )


def _observe_sorted(feature: FeatureReference, ordered: Floats) -> Observed:
    return Observed(stats.bin_counts(feature.edges, ordered), ordered if ordered.size else None)


def _columns(frame: Any) -> dict[str, Any]:
    """A DataFrame's or mapping's columns by name, without copying them."""
    names: Iterable[Any] = frame.columns if hasattr(frame, "columns") else frame.keys()
    return {str(name): frame[name] for name in names}


def _column(columns: Mapping[str, Any], name: str) -> Any:
    try:
        return columns[name]
    except KeyError:
        raise DriftConfigError(f"feature {name!r} is missing from the current data") from None
