"""The statistics of the drift engine, on sorted samples and on bin counts.

Numeric samples come sorted: the reference once, when it is prepared, and the
current window once per run. One linear walk over the two sorted samples then
gives both the KS statistic and the Wasserstein distance, exactly as scipy
computes them from the unsorted data. Pure numpy, scipy and numba.
"""

import math

import numba
import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import jensenshannon as _jensenshannon
from scipy.special import gammaln
from scipy.stats import chi2 as _chi2

# scipy's own distributions of the two-sample statistic, so that p-values equal
# ks_2samp's: it has no public entry point that takes the statistic instead of the
# data, and kstwo.sf costs 0.5 ms a call in argument checks alone.
from scipy.stats._ksstats import kolmogn
from scipy.stats._stats_py import _attempt_exact_2kssamp

Floats = npt.NDArray[np.float64]
Counts = npt.NDArray[np.int64]

KS_EXACT_MAX_N = 10_000
"""Largest sample for which the KS p-value is exact, as in scipy's `auto` mode."""
PI_SQUARED, PI_FOUR, PI_SIX = math.pi**2, math.pi**4, math.pi**6
SQRT_2PI = math.sqrt(2 * math.pi)
MIN_LOG = -708
PROPORTION_FLOOR = 1e-4
"""Empty bins count as this share in PSI and chi-square, so that neither is infinite
(PSI as Evidently computes it)."""


def sorted_values(values: npt.ArrayLike) -> Floats:
    """The non-missing values as a sorted float64 array."""
    array = np.asarray(values, dtype=np.float64)
    return np.sort(array[~np.isnan(array)])


@numba.njit(nogil=True, cache=False)
def _walk(reference: Floats, current: Floats, with_area: bool) -> tuple[float, float]:
    """(KS statistic, Wasserstein distance) of two sorted samples; the distance only
    `with_area`, which costs its arithmetic at every reference value."""
    n, m = reference.size, current.size
    share_n, share_m = 1.0 / n, 1.0 / m
    i = j = 0
    ks = area = 0.0
    x = min(reference[0], current[0])
    while j < m:
        u = current[j]
        level = j * share_m
        # F_cur is `level` up to u; F_ref rises at each reference value on the way.
        if with_area:
            while i < n and reference[i] < u:
                area += abs(i * share_n - level) * (reference[i] - x)
                x = reference[i]
                i += 1
        else:
            while i < n and reference[i] < u:
                i += 1
        below = i * share_n - level
        ks = max(ks, below)
        if with_area:
            area += abs(below) * (u - x)
            x = u
        while i < n and reference[i] == u:
            i += 1
        while j < m and current[j] == u:
            j += 1
        ks = max(ks, abs(j * share_m - i * share_n))
    while with_area and i < n:  # F_cur is 1 past the last current value
        area += (1.0 - i * share_n) * (reference[i] - x)
        x = reference[i]
        i += 1
    return ks, area


def ks_statistic(reference: Floats, current: Floats) -> float:
    """The two-sample KS statistic, sup |F_ref - F_cur|, of two sorted non-empty
    samples: scipy.stats.ks_2samp's, from one pass over both samples in order. That
    pass costs a fraction of scipy's binary searches, whose cache misses in a
    reference larger than the cache dominate."""
    return float(_walk(reference, current, False)[0])


def wasserstein(reference: Floats, current: Floats) -> float:
    """The integral of |F_ref - F_cur| of two sorted non-empty samples, in the same
    pass: scipy.stats.wasserstein_distance's, but for the order its pieces are added."""
    return float(_walk(reference, current, True)[1])


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """The two-sided p-value that scipy.stats.ks_2samp gives in its `auto` mode."""
    if max(n, m) <= KS_EXACT_MAX_N:
        done, _, p = _attempt_exact_2kssamp(n, m, math.gcd(n, m), statistic, "two-sided")
        if done:
            return float(np.clip(p, 0.0, 1.0))
    big, small = max(n, m), min(n, m)
    size = int(np.round(big * small / (big + small)))
    return float(np.clip(kolmogorov_sf(size, statistic), 0.0, 1.0))


def kolmogorov_sf(n: int, x: float) -> float:
    """P(D_n >= x), as scipy's kstwo.sf computes it (Simard and L'Ecuyer's choice of
    method), with the two methods that most drift windows need written without
    scipy's per-call overhead: the Smirnov tail (25 ms a call in scipy.special at
    n = 9091) and the Pelz-Good series (70 us a call in scipy, on small arrays)."""
    t, squared = n * x, n * x * x
    if n > 140 and 1.0 < t < n - 1 and x < 0.5 and squared < 370.0:
        if squared >= 2.2:
            return 2 * smirnov(n, x)
        if not (n <= 100_000 and n * x**1.5 <= 1.4):
            return 1.0 - pelz_good_cdf(n, x)
    return float(kolmogn(n, x, cdf=False))


def pelz_good_cdf(n: int, x: float) -> float:
    """The Pelz-Good approximation of P(D_n <= x), term for term as scipy's
    _kolmogn_PelzGood, in plain floats."""
    z = math.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    if -PI_SQUARED / 8 / z2 < MIN_LOG:
        return 0.0
    q = math.exp(-PI_SQUARED / 8 / z2)
    k1a, k1b = -z2, PI_SQUARED / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * PI_SQUARED / 4
    k2c = PI_FOUR * (1 - 2 * z2) / 16
    k3d = PI_SIX * (5 - 30 * z2) / 64
    k3c = PI_FOUR * (-60 * z2 + 212 * z4) / 16
    k3b = PI_SQUARED * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    terms = [0.0, 0.0, 0.0, 0.0]
    top = math.ceil(16 * z / math.pi)
    for k in range(top, 0, -1):  # Horner's scheme over the odd integers
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        power = q ** (8 * k)
        coefficients = (
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        )
        terms = [t * power + c for t, c in zip(terms, coefficients, strict=True)]
    scale = (z, 6 * z4, 72 * z**7, 6480 * z**10)
    terms = [t * q * SQRT_2PI / s for t, s in zip(terms, scale, strict=True)]
    q = math.exp(-PI_SQUARED / 2 / z2)
    root3z = math.sqrt(3) * z
    extra2 = extra3 = 0.0
    for k in range(top, 0, -1):
        weight = k**2 * q ** (k**2)
        extra2 += weight
        extra3 += (root3z + math.pi * k) * (root3z - math.pi * k) * weight
    terms[2] += extra2 * PI_SQUARED * SQRT_2PI / (-36 * z3)
    terms[3] += extra3 * PI_SQUARED * SQRT_2PI / (216 * z6)
    return float(sum(t / n ** (i / 2.0) for i, t in enumerate(terms)))


def smirnov(n: int, x: float) -> float:
    """P(D+_n >= x), by the Smirnov-Birnbaum-Tingey sum, all its terms at once in
    logarithms: x sum_j C(n, j) (1 - x - j/n)^(n - j) (x + j/n)^(j - 1)."""
    j = np.arange(math.floor(n * (1 - x)) + 1, dtype=np.float64)
    rest = 1 - x - j / n
    j, rest = j[rest > 0], rest[rest > 0]
    logs = (
        gammaln(n + 1)
        - gammaln(j + 1)
        - gammaln(n - j + 1)
        + (n - j) * np.log(rest)
        + (j - 1) * np.log(x + j / n)
    )
    top = logs.max()
    return float(x * math.exp(top) * np.sum(np.exp(logs - top)))


def bin_counts(edges: Floats, ordered: Floats) -> Counts:
    """Counts of a sorted sample in the bins edges[i-1] < x <= edges[i] (open ends)."""
    at_most = np.searchsorted(ordered, edges, side="right")
    return np.diff(at_most, prepend=0, append=ordered.size).astype(np.int64)


def psi(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Population stability index of two sets of bin counts."""
    ref = _shares(reference)
    cur = _shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _shares(counts: npt.ArrayLike) -> Floats:
    array = np.asarray(counts, dtype=np.float64)
    shares: Floats = np.maximum(array / array.sum(), PROPORTION_FLOOR)
    return shares


def jensen_shannon(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (natural logarithm, as Evidently) of two sets of bin counts."""
    return float(_jensenshannon(np.asarray(reference, np.float64), np.asarray(current, np.float64)))


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float]:
    """Pearson's goodness-of-fit of the current counts to the reference's shares: the
    statistic and p-value of scipy.stats.chisquare. Bins empty on both sides are left
    out; a bin only the current window fills is expected at PROPORTION_FLOOR."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    used = (ref > 0) | (cur > 0)
    ref, cur = ref[used], cur[used]
    if ref.size < 2:
        return 0.0, 1.0
    shares = ref / ref.sum()
    if np.any(ref == 0):
        shares = np.where(ref == 0, PROPORTION_FLOOR, shares)
        shares /= shares.sum()
    expected = shares * cur.sum()
    statistic = float(np.sum((cur - expected) ** 2 / expected))
    return statistic, float(_chi2.sf(statistic, ref.size - 1))


def bonferroni(pvalues: Floats) -> Floats:
    return np.minimum(pvalues * pvalues.size, 1.0)


def benjamini_hochberg(pvalues: Floats) -> Floats:
    """Adjusted p-values of the Benjamini-Hochberg step-up procedure."""
    k = pvalues.size
    order = np.argsort(pvalues)
    scaled = pvalues[order] * k / np.arange(1, k + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def as_float_matrix(columns: list[npt.ArrayLike]) -> Floats:
    """Columns as rows of one C-contiguous float64 matrix, so that one sort serves all."""
    matrix = np.empty((len(columns), len(np.asarray(columns[0])) if columns else 0))
    for row, column in enumerate(columns):
        matrix[row] = np.asarray(column, dtype=np.float64)
    return matrix
