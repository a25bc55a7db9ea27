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


def test_standardiser_floor() -> None:
    ref = np.column_stack([np.linspace(0, 10, 50), np.full(50, 3.0) + np.linspace(0, 1e-9, 50)])
    st = frechet.Standardiser.fit(ref, floor=np.array([0.5, 0.01]))
    assert st.scale[0] == pytest.approx(ref[:, 0].std(ddof=1))
    assert st.scale[1] == 0.01
    with pytest.raises(ValueError, match="floor"):
        frechet.Standardiser.fit(ref, floor=np.array([0.5]))


def test_matched_size_has_the_small_sample_bias_of_real_vs_real() -> None:
    rng = np.random.default_rng(9)
    real = rng.normal(size=(24, 6))
    same = rng.normal(size=(500, 6))
    far = rng.normal(size=(500, 6)) + 2.0
    rvr = frechet.real_vs_real(real, np.random.default_rng(0), splits=50)
    m_same = frechet.matched_size(same, real, np.random.default_rng(0), splits=50)
    m_far = frechet.matched_size(far, real, np.random.default_rng(0), splits=50)
    assert m_same.half_size == rvr.half_size == 12
    assert 0.6 < m_same.mean / rvr.mean < 1.6  # same distribution, same sample sizes: comparable figures
    assert m_far.mean > rvr.mean + 6 * 4.0 * 0.8  # |shift|^2 = 24 on top of the bias
    # with all 500 generated hits the same-distribution figure has much less small-sample bias
    assert frechet.frechet_distance(same, real) < m_same.mean
    with pytest.raises(ValueError, match="too few"):
        frechet.matched_size(same[:3], real, np.random.default_rng(0))


def test_kit_split_keeps_kits_whole_and_balances_hits() -> None:
    sizes = [12, 8, 5, 5, 5, 4, 4, 4, 4, 3, 2, 1, 1]
    kits = np.repeat([f"k{i}" for i in range(len(sizes))], sizes)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        side = frechet.kit_split(kits, rng)
        for k in np.unique(kits):
            assert len(set(side[kits == k])) == 1, f"kit {k} split across halves"
        assert abs(int(side.sum()) - int((~side).sum())) <= max(sizes)
        seen.add(tuple(side))
    assert len(seen) > 10  # random splits, not one fixed split
    small = frechet.kit_split(kits, np.random.default_rng(1), fraction=0.25)
    assert 0 < small.sum() < len(kits) and abs(small.sum() - 0.25 * len(kits)) <= max(sizes)
    with pytest.raises(ValueError, match="at least 2 kits"):
        frechet.kit_split(np.array(["a", "a"]), rng)
    with pytest.raises(ValueError, match="fraction"):
        frechet.kit_split(kits, rng, fraction=1.0)


def test_kit_split_growing_kits_leaves_both_sides_a_kit() -> None:
    kits = np.repeat(["a", "b", "c", "d"], [1, 2, 4, 8])
    for seed in range(20):
        side = frechet.kit_split(kits, np.random.default_rng(seed), fraction=0.9)
        assert side.any() and not side.all()


def test_real_vs_real_with_kits_uses_kit_disjoint_halves() -> None:
    # 30 tight kits of 4 layers: random halves share kits (tiny distance), kit-disjoint halves do not
    rng = np.random.default_rng(10)
    centres = rng.normal(size=(30, 4))
    x = np.repeat(centres, 4, axis=0) + 0.02 * rng.normal(size=(120, 4))
    kits = np.repeat(np.arange(30), 4)
    by_kit = frechet.real_vs_real(x, np.random.default_rng(0), splits=30, kits=kits)
    random = frechet.real_vs_real(x, np.random.default_rng(0), splits=30)
    assert by_kit.method == frechet.KIT_HALVES and by_kit.kits == 30 and 56 <= by_kit.half_size <= 60
    assert random.method == frechet.RANDOM_HALVES and random.kits == 0 and random.half_size == 60
    assert by_kit.mean > 3 * random.mean
    assert by_kit == frechet.real_vs_real(x, np.random.default_rng(0), splits=30, kits=kits)  # seeded
    few = frechet.real_vs_real(x, np.random.default_rng(0), splits=30, kits=kits % 3)  # 3 kits: fallback
    assert few.method == frechet.RANDOM_HALVES and few.kits == 3 and few.mean == pytest.approx(random.mean)
    with pytest.raises(ValueError, match="kit labels"):
        frechet.real_vs_real(x, np.random.default_rng(0), kits=kits[:10])


def test_kit_holdout_matches_the_held_out_size() -> None:
    rng = np.random.default_rng(11)
    x = np.repeat(rng.normal(size=(30, 4)), 4, axis=0) + 0.02 * rng.normal(size=(120, 4))
    kits = np.repeat(np.arange(30), 4)
    fig = frechet.kit_holdout(x, kits, 24, np.random.default_rng(0), splits=20)
    assert fig.half_size == 24 and fig.method == frechet.KIT_HALVES
    halves = frechet.real_vs_real(x, np.random.default_rng(0), splits=20, kits=kits)
    assert fig.mean > halves.mean  # a smaller held-out side: more small-sample bias
    with pytest.raises(ValueError, match="too few"):
        frechet.kit_holdout(x, kits % 3, 24, np.random.default_rng(0))
