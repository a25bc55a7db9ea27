"""Set-level statistics of descriptor vectors: Frechet distance, diversity and nearest-neighbour distances.

Pure numpy (no scipy at runtime). Rows are items (hits), columns are descriptors.

* :class:`Standardiser`: z-scores every descriptor by the *reference* (real) set's mean and standard
  deviation (at least a per-descriptor floor), so no descriptor dominates a distance just because of its units.
* :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between the Gaussians fitted to two sets,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)``. The trace of the matrix square root is computed with
  symmetric eigendecompositions only: ``tr((S1 S2)^1/2) = tr((A S2 A)^1/2)`` with ``A = S1^1/2``, and
  ``A S2 A`` is symmetric positive semi-definite. Both covariances get a ridge ``eps * I`` so they stay
  positive definite when a set has fewer items than descriptors.
* :func:`real_vs_real`: the reference figure, the Frechet distance between two halves of the real set,
  averaged over several random splits. With kit labels (real kicks come in kits whose hits are near-copies of
  each other) the halves are kit-disjoint (:func:`kit_split`), so the figure measures how far apart two sets
  of *different kits* are, like generated hits and held-out kits; random halves are the fallback when there
  are fewer than :data:`MIN_KITS` kits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RIDGE = 1e-3  # added to covariance diagonals (descriptors are standardised, so variances are ~1)
MIN_KITS = 4  # fewer kits than this: real-vs-real falls back to random halves
KIT_HALVES = "kit-disjoint halves"
RANDOM_HALVES = "random halves"


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (items, descriptors), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


@dataclass(frozen=True)
class Standardiser:
    """Per-descriptor z-scoring by a reference set's statistics (a constant descriptor keeps scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, reference: np.ndarray, floor: np.ndarray | None = None) -> Standardiser:
        """Mean and standard deviation of ``reference``; the scale is at least ``floor`` (per descriptor).

        The floor is the smallest difference that matters for a descriptor: a descriptor (nearly) constant
        over the reference set (e.g. the stereo width of mono kicks) would otherwise turn any tiny
        difference into thousands of standard deviations. Without a floor, a constant descriptor gets scale 1.
        """
        ref = _as_matrix(reference, "reference descriptors")
        if ref.shape[0] < 2:
            raise ValueError(f"reference descriptors: need at least 2 items, got {ref.shape[0]}")
        std = ref.std(axis=0, ddof=1)
        if floor is None:
            scale = np.where(std > 1e-12, std, 1.0)
        else:
            f = np.asarray(floor, dtype=np.float64)
            if f.shape != std.shape or np.any(f <= 0):
                raise ValueError(f"standardiser floor: need {std.shape[0]} positive values, got shape {f.shape}")
            scale = np.maximum(std, f)
        return cls(mean=ref.mean(axis=0), scale=scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = _as_matrix(x, "descriptors")
        if a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"descriptors: {a.shape[1]} columns, the standardiser has {self.mean.shape[0]}")
        return (a - self.mean) / self.scale


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of the rows of ``x``; one item gives a zero covariance."""
    a = _as_matrix(x, "descriptors")
    if a.shape[0] < 1:
        raise ValueError("descriptors: empty set")
    mu = a.mean(axis=0)
    if a.shape[0] < 2:
        return mu, np.zeros((a.shape[1], a.shape[1]))
    c = a - mu
    return mu, (c.T @ c) / (a.shape[0] - 1)


def sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative
    eigenvalues from rounding are clipped to zero)."""
    s = np.asarray(s, dtype=np.float64)
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray,
                       ridge: float = DEFAULT_RIDGE) -> float:
    """Frechet distance between N(mu1, s1) and N(mu2, s2), both covariances regularised by ``ridge * I``."""
    d = mu1.shape[0]
    eye = np.eye(d)
    s1 = s1 + ridge * eye
    s2 = s2 + ridge * eye
    a = sqrtm_psd(s1)
    m = a @ s2 @ a
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(w, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance(x: np.ndarray, y: np.ndarray, ridge: float = DEFAULT_RIDGE) -> float:
    """Frechet distance between the Gaussians fitted to the rows of ``x`` and ``y`` (same columns)."""
    a = _as_matrix(x, "first set")
    b = _as_matrix(y, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet distance: {a.shape[1]} vs {b.shape[1]} descriptors")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b), ridge=ridge)


@dataclass(frozen=True)
class SplitFigure:
    """A statistic over several random half splits of one set.

    ``half_size``: the median size of the smaller half (kit-disjoint halves differ by up to a kit's size);
    ``method``: :data:`KIT_HALVES` or :data:`RANDOM_HALVES`; ``kits``: distinct kit labels (0 without labels).
    """

    mean: float
    std: float
    splits: int
    half_size: int
    method: str = RANDOM_HALVES
    kits: int = 0


def kit_split(kits: np.ndarray, rng: np.random.Generator, fraction: float = 0.5) -> np.ndarray:
    """A random kit-disjoint split: boolean mask of the hits on side A, about ``fraction`` of the hits.

    Kits are taken in a random order, each whole kit to the side that keeps A's hit count closest to
    ``fraction`` of the hits placed so far (ties go to A): with ``fraction`` 0.5 each kit goes to the side with
    fewer hits, so the halves are balanced in hit count to within one kit's size. Both sides get at least one
    kit.
    """
    labels = np.asarray(kits)
    if labels.ndim != 1:
        raise ValueError(f"kit labels: expected a 1-D array, got shape {labels.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"kit split: fraction must be in (0, 1), got {fraction}")
    names, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"kit split: need at least 2 kits, got {len(names)}")
    order = rng.permutation(len(names))
    side_a = np.zeros(len(names), dtype=bool)
    n_a = n_all = 0
    for k in order:
        size = int(sizes[k])
        n_all += size
        if abs(n_a + size - fraction * n_all) <= abs(n_a - fraction * n_all):
            side_a[k] = True
            n_a += size
    if side_a.all():  # e.g. kits of growing sizes with a large fraction: B gets the last kit placed
        side_a[order[-1]] = False
    elif not side_a.any():
        side_a[order[0]] = True
    return side_a[inverse]


def real_vs_real(x: np.ndarray, rng: np.random.Generator, splits: int = 20,
                 ridge: float = DEFAULT_RIDGE, kits: np.ndarray | None = None) -> SplitFigure:
    """Frechet distance between two halves of ``x``, averaged over ``splits`` random splits.

    With ``kits`` (a label per row) and at least :data:`MIN_KITS` distinct kits the halves are kit-disjoint
    (:func:`kit_split`, balanced in hit count); otherwise (no labels, or too few kits) random halves.
    """
    a = _as_matrix(x, "real descriptors")
    n = a.shape[0]
    if n < 4:
        raise ValueError(f"real-vs-real Frechet distance: need at least 4 real hits, got {n}")
    n_kits = 0
    if kits is not None:
        labels = np.asarray(kits)
        if labels.shape != (n,):
            raise ValueError(f"real-vs-real: {labels.shape} kit labels for {n} hits")
        n_kits = len(np.unique(labels))
    values, smaller = [], []
    for _ in range(max(1, splits)):
        if n_kits >= MIN_KITS:
            side = kit_split(labels, rng)
            first, second = a[side], a[~side]
        else:
            perm = rng.permutation(n)
            first, second = a[perm[: n // 2]], a[perm[n // 2: 2 * (n // 2)]]
        smaller.append(min(len(first), len(second)))
        values.append(frechet_distance(first, second, ridge=ridge))
    v = np.asarray(values)
    return SplitFigure(float(v.mean()), float(v.std()), len(values), int(np.median(smaller)),
                       KIT_HALVES if n_kits >= MIN_KITS else RANDOM_HALVES, n_kits)


def kit_holdout(x: np.ndarray, kits: np.ndarray, size: int, rng: np.random.Generator, splits: int = 20,
                ridge: float = DEFAULT_RIDGE) -> SplitFigure:
    """Frechet distance between a random kit-disjoint subset of about ``size`` rows of ``x`` and the other
    rows, averaged over ``splits`` draws: what a perfect model of the real hits scores against a held-out set
    of whole kits of that size (its small-sample bias included). ``half_size`` is the median subset size."""
    a = _as_matrix(x, "real descriptors")
    labels = np.asarray(kits)
    n = a.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"kit holdout: {labels.shape} kit labels for {n} hits")
    n_kits = len(np.unique(labels))
    if n_kits < MIN_KITS or not 2 <= size <= n - 2:
        raise ValueError(f"kit holdout: {n} hits in {n_kits} kits are too few to hold out {size}")
    values, sizes = [], []
    for _ in range(max(1, splits)):
        side = kit_split(labels, rng, size / n)
        sizes.append(int(side.sum()))
        values.append(frechet_distance(a[side], a[~side], ridge=ridge))
    v = np.asarray(values)
    return SplitFigure(float(v.mean()), float(v.std()), len(values), int(np.median(sizes)), KIT_HALVES, n_kits)


def matched_size(x: np.ndarray, real: np.ndarray, rng: np.random.Generator, splits: int = 20,
                 ridge: float = DEFAULT_RIDGE) -> SplitFigure:
    """Frechet distance between ``len(real) // 2`` random rows of ``x`` and a random half of ``real``,
    averaged over ``splits`` draws: the generated-vs-real figure with the sample sizes (and so the small-sample
    bias) of the real-vs-real figure."""
    a = _as_matrix(x, "generated descriptors")
    r = _as_matrix(real, "real descriptors")
    half = r.shape[0] // 2
    if half < 2 or a.shape[0] < half:
        raise ValueError(f"matched-size Frechet distance: {a.shape[0]} generated and {r.shape[0]} real hits "
                         "are too few")
    values = []
    for _ in range(max(1, splits)):
        values.append(frechet_distance(a[rng.choice(a.shape[0], half, replace=False)],
                                       r[rng.permutation(r.shape[0])[:half]], ridge=ridge))
    v = np.asarray(values)
    return SplitFigure(float(v.mean()), float(v.std()), len(values), half)


def pairwise_distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows of ``x`` and of ``y`` (``x`` itself when None), float64."""
    a = _as_matrix(x, "first set")
    b = a if y is None else _as_matrix(y, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"pairwise distances: {a.shape[1]} vs {b.shape[1]} columns")
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(sq, 0.0, None))


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of distinct rows (the diversity of a set)."""
    a = _as_matrix(x, "descriptors")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"diversity: need at least 2 items, got {n}")
    d = pairwise_distances(a)
    iu = np.triu_indices(n, k=1)
    return float(d[iu].mean())


def nearest_distances(x: np.ndarray, y: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``: distance to its nearest row of ``y`` and that row's index.

    Works through both sets in chunks of ``chunk`` rows (converted to float64 one chunk at a time), so large
    float32 feature matrices (e.g. log-spectrograms of thousands of training hits) never exist in float64.
    """
    a = np.asarray(x)
    b = np.asarray(y)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"nearest distances: shapes {a.shape} and {b.shape} do not match")
    if b.shape[0] == 0:
        raise ValueError("nearest distances: no candidates")
    best = np.full(a.shape[0], np.inf)
    idx = np.zeros(a.shape[0], dtype=np.int64)
    for j in range(0, b.shape[0], chunk):
        bj = _as_matrix(b[j: j + chunk], "candidates")
        for i in range(0, a.shape[0], chunk):
            d = pairwise_distances(_as_matrix(a[i: i + chunk], "queries"), bj)
            k = np.argmin(d, axis=1)
            dk = d[np.arange(d.shape[0]), k]
            better = dk < best[i: i + chunk]
            best[i: i + chunk][better] = dk[better]
            idx[i: i + chunk][better] = k[better] + j
    return best, idx
