"""Numerics of kickit.frechet: Frechet distance, standardisation, diversity, nearest neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from kickit import frechet


def test_identical_sets_give_zero() -> None:
    x = np.random.default_rng(0).normal(size=(200, 12))
    assert frechet.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_shifted_gaussian_gives_squared_shift() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))  # correlated descriptors
    delta = rng.normal(size=8)
    # same samples shifted: covariances are identical, so the distance is exactly |delta|^2
    assert frechet.frechet_distance(x, x + delta) == pytest.approx(float(delta @ delta), rel=1e-9)


def test_diagonal_gaussians_known_value() -> None:
    a = np.array([1.0, 2.0, 0.5])
    b = np.array([2.0, 1.0, 0.5])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -2.0])
    got = frechet.frechet_from_stats(mu1, np.diag(a**2), mu2, np.diag(b**2), ridge=0.0)
    assert got == pytest.approx(5.0 + float(np.sum((a - b) ** 2)), rel=1e-12)


def test_general_covariances_match_scipy_sqrtm() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")  # reference only; kickit never imports scipy
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet.frechet_from_stats(mu1, s1, mu2, s2, ridge=0.0) == pytest.approx(want, rel=1e-8)


def test_sample_estimate_converges_to_population_value() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) * 2.0 + 1.0
    # N(0, I) vs N(1, 4I): |mu|^2 = 4, trace term = 4 * (1 - 2)^2 = 4
    assert frechet.frechet_distance(x, y) == pytest.approx(8.0, rel=0.03)


def test_small_sets_stay_finite_and_nonnegative() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(3, 20)), rng.normal(size=(5, 20))  # fewer items than descriptors
    value = frechet.frechet_distance(x, y)
    assert np.isfinite(value) and value > 0.0


def test_sqrtm_psd_squares_back() -> None:
    m = np.random.default_rng(5).normal(size=(7, 7))
    s = m @ m.T
    r = frechet.sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-9)
    np.testing.assert_allclose(r, r.T, atol=1e-12)


def test_standardiser_uses_reference_statistics() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(loc=[100.0, 0.0, 5.0], scale=[1000.0, 0.01, 1.0], size=(500, 3))
    ref[:, 2] = 5.0  # a constant descriptor keeps scale 1 (no division by zero)
    st = frechet.Standardiser.fit(ref)
    z = st(ref)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z[:, :2].std(axis=0, ddof=1), 1.0, rtol=1e-9)
    assert np.all(z[:, 2] == 0.0)
    with pytest.raises(ValueError, match="columns"):
        st(np.zeros((2, 4)))


def test_nan_descriptors_are_refused() -> None:
    x = np.zeros((4, 2))
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet.frechet_distance(x, np.zeros((4, 2)))


def test_real_vs_real_averages_splits() -> None:
    x = np.random.default_rng(7).normal(size=(40, 5))
    fig = frechet.real_vs_real(x, np.random.default_rng(0), splits=10)
    assert fig.splits == 10 and fig.half_size == 20
    assert fig.mean > 0.0 and fig.std > 0.0
    again = frechet.real_vs_real(x, np.random.default_rng(0), splits=10)
    assert again == fig  # deterministic for a seed
    with pytest.raises(ValueError, match="at least 4"):
        frechet.real_vs_real(x[:3], np.random.default_rng(0))


def test_mean_pairwise_distance_known_value() -> None:
    # corners of a unit square: 4 sides of 1 and 2 diagonals of sqrt(2)
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert frechet.mean_pairwise_distance(sq) == pytest.approx((4 + 2 * np.sqrt(2)) / 6)
    assert frechet.mean_pairwise_distance(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)


def test_nearest_distances_match_brute_force() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(37, 6)), rng.normal(size=(11, 6))
    dist, idx = frechet.nearest_distances(x, y, chunk=5)
    brute = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1)
    np.testing.assert_array_equal(idx, brute.argmin(axis=1))
    np.testing.assert_allclose(dist, brute.min(axis=1), atol=1e-9)
    d0, _ = frechet.nearest_distances(y[:4], y)
    np.testing.assert_allclose(d0, 0.0, atol=1e-6)
