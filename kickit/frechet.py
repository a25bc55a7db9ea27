"""Set-level statistics of descriptor vectors: Frechet distance, diversity and nearest-neighbour distances.

Pure numpy (no scipy at runtime). Rows are items (hits), columns are descriptors.

* :class:`Standardiser`: z-scores every descriptor by the *reference* (real) set's mean and standard
  deviation, so no descriptor dominates a distance just because of its units.
* :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between the Gaussians fitted to two sets,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)``. The trace of the matrix square root is computed with
  symmetric eigendecompositions only: ``tr((S1 S2)^1/2) = tr((A S2 A)^1/2)`` with ``A = S1^1/2``, and
  ``A S2 A`` is symmetric positive semi-definite. Both covariances get a ridge ``eps * I`` so they stay
  positive definite when a set has fewer items than descriptors.
* :func:`real_vs_real`: the reference figure, the Frechet distance between two random halves of the real set,
  averaged over several random splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RIDGE = 1e-3  # added to covariance diagonals (descriptors are standardised, so variances are ~1)


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
    def fit(cls, reference: np.ndarray) -> Standardiser:
        ref = _as_matrix(reference, "reference descriptors")
        if ref.shape[0] < 2:
            raise ValueError(f"reference descriptors: need at least 2 items, got {ref.shape[0]}")
        std = ref.std(axis=0, ddof=1)
        scale = np.where(std > 1e-12, std, 1.0)
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
    """A statistic over several random half splits of one set."""

    mean: float
    std: float
    splits: int
    half_size: int


def real_vs_real(x: np.ndarray, rng: np.random.Generator, splits: int = 20,
                 ridge: float = DEFAULT_RIDGE) -> SplitFigure:
    """Frechet distance between two random halves of ``x``, averaged over ``splits`` random splits."""
    a = _as_matrix(x, "real descriptors")
    n = a.shape[0]
    if n < 4:
        raise ValueError(f"real-vs-real Frechet distance: need at least 4 real hits, got {n}")
    half = n // 2
    values = []
    for _ in range(max(1, splits)):
        perm = rng.permutation(n)
        values.append(frechet_distance(a[perm[:half]], a[perm[half: 2 * half]], ridge=ridge))
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
    """For each row of ``x``: distance to its nearest row of ``y`` and that row's index (chunked over x)."""
    a = _as_matrix(x, "queries")
    b = _as_matrix(y, "candidates")
    if b.shape[0] == 0:
        raise ValueError("nearest distances: no candidates")
    dist = np.empty(a.shape[0])
    idx = np.empty(a.shape[0], dtype=np.int64)
    for i in range(0, a.shape[0], chunk):
        d = pairwise_distances(a[i: i + chunk], b)
        idx[i: i + chunk] = np.argmin(d, axis=1)
        dist[i: i + chunk] = d[np.arange(d.shape[0]), idx[i: i + chunk]]
    return dist, idx
