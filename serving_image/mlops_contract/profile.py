"""Reference profiles: the distribution of every input feature and of the predictions.

A profile is computed once, when a bundle is built, and shipped in profile.json.
Live traffic is binned on the same edges (capture) so that drift tests compare
like with like. Numeric features get quantile bin edges, counts, summary
statistics and a sorted sample for an exact two-sample KS test; categorical
features get their categories and counts. Pure numpy: no I/O.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

NUMERIC_BINS = 10
"""Quantile bins per numeric feature: what PSI, Jensen-Shannon and chi-square see,
and what capture compares every served value with (its cost grows with them)."""
SAMPLE_SIZE = 5000
"""Sorted reference values kept per numeric feature, for KS and Wasserstein. With a
window of 10,000 rows, the smallest KS statistic significant at 5% is about 0.045
with 1,000 reference values, 0.024 with 5,000 and 0.019 with 10,000 (1.358 times
sqrt((n+m)/(n m))): 5,000 buys most of what the window allows, at about 100 KB of
profile.json per feature. `mlops-bundle build --profile-sample` changes it."""
MAX_CATEGORIES = 50
OTHER = "__other__"


class FeatureProfile(BaseModel):
    """One feature's reference distribution."""

    name: str
    kind: Literal["numeric", "categorical"]
    count: int
    missing: int = 0
    edges: list[float] = Field(default_factory=list)
    """Numeric: inner cut points; bin i holds edges[i-1] < x <= edges[i] (open ends)."""
    categories: list[str] = Field(default_factory=list)
    """Categorical: known categories; anything else is counted in OTHER."""
    counts: list[int]
    """Reference count per bin (numeric) or per category, OTHER last (categorical)."""
    sample: list[float] = Field(default_factory=list)
    """Numeric: a sorted sample of the reference values (all of them, up to the bundle's
    sample size), for KS and Wasserstein."""
    distinct: int | None = None
    """Numeric: distinct reference values (absent in bundles made before it was kept)."""
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None

    def bin_index(self, values: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
        """The bin of each value, on this profile's edges or categories."""
        if self.kind == "numeric":
            numeric = np.asarray(values, dtype=np.float64)
            return np.searchsorted(np.asarray(self.edges), numeric, side="left")
        return category_codes(self.categories, values)

    @property
    def bins(self) -> int:
        return len(self.counts)


class Profile(BaseModel):
    """Reference distributions of a model's inputs and predictions."""

    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile | None = None

    def feature(self, name: str) -> FeatureProfile:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def category_codes(categories: Sequence[str], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Each value's index in `categories` (compared as text), len(categories) for any other."""
    lookup = {c: i for i, c in enumerate(categories)}
    other = len(categories)
    array = np.asarray(values)
    try:  # few distinct values (class labels, say): name each once
        distinct, inverse = np.unique(array, return_inverse=True)
    except TypeError:  # values that do not sort together (mixed objects)
        return np.fromiter((lookup.get(str(v), other) for v in array), np.intp, len(array))
    codes = np.fromiter((lookup.get(str(v), other) for v in distinct), np.intp, len(distinct))
    return codes[inverse.reshape(-1)]


def is_numeric(values: npt.NDArray[Any]) -> bool:
    return values.dtype.kind in "iuf"


def numeric_edges(values: npt.NDArray[np.float64], bins: int) -> npt.NDArray[np.float64]:
    """Inner cut points of `bins` quantile bins of non-missing values (fewer where
    quantiles coincide)."""
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def categories_of(values: npt.NDArray[Any]) -> tuple[list[str], list[int]]:
    """The MAX_CATEGORIES most frequent values as text, and their counts with the
    count of all the others last."""
    labels = np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)
    uniques, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    kept = [int(counts[i]) for i in order]
    return [str(uniques[i]) for i in order], [*kept, int(labels.size - sum(kept))]


def profile_feature(
    name: str,
    values: npt.NDArray[Any],
    seed: int = 0,
    *,
    bins: int = NUMERIC_BINS,
    sample_size: int = SAMPLE_SIZE,
) -> FeatureProfile:
    """Profile one column; numeric columns by quantiles, everything else by category."""
    values = np.asarray(values)
    if is_numeric(values):
        numeric = values.astype(np.float64)
        present = numeric[~np.isnan(numeric)]
        if present.size == 0:
            raise ValueError(f"feature {name!r} has no non-missing values")
        edges = numeric_edges(present, bins)
        counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
        rng = np.random.default_rng(seed)
        sample = (
            present
            if present.size <= sample_size
            else rng.choice(present, sample_size, replace=False)
        )
        return FeatureProfile(
            name=name,
            kind="numeric",
            count=int(present.size),
            missing=int(numeric.size - present.size),
            edges=edges.tolist(),
            counts=counts.tolist(),
            sample=np.sort(sample).tolist(),
            distinct=int(np.unique(present).size),
            mean=float(present.mean()),
            std=float(present.std()),
            min=float(present.min()),
            max=float(present.max()),
        )
    categories, category_counts = categories_of(values)
    return FeatureProfile(
        name=name,
        kind="categorical",
        count=int(values.size),
        categories=categories,
        counts=category_counts,
    )


def build_profile(
    columns: dict[str, npt.NDArray[Any]],
    predictions: npt.NDArray[Any] | None = None,
    *,
    bins: int = NUMERIC_BINS,
    sample_size: int = SAMPLE_SIZE,
) -> Profile:
    """Profile every input column and, when given, the model's predictions on them."""
    rows = {len(v) for v in columns.values()}
    if len(rows) != 1:
        raise ValueError("reference columns differ in length")
    options = {"bins": bins, "sample_size": sample_size}
    return Profile(
        rows=rows.pop(),
        features=[profile_feature(name, values, **options) for name, values in columns.items()],
        prediction=None
        if predictions is None
        else profile_feature("prediction", predictions, **options),
    )
