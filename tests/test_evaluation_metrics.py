"""kickit.eval_metrics on synthetic feature sets: targets, verdicts and the memorisation check."""

from __future__ import annotations

import numpy as np
import pytest

from kickit import eval_metrics as em

NAMES = ["a", "b", "c"]
CHECKS = ["x", "y"]


def _set(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0, fail: float = 0.0,
         spectra: np.ndarray | None = None) -> em.HitSet:
    d = rng.normal(size=(n, len(NAMES))) * scale + shift
    checks = np.ones((n, len(CHECKS)), dtype=bool)
    checks[: int(round(fail * n)), 1] = False
    return em.HitSet(d, checks, spectra)


def _spectra(rng: np.random.Generator, n: int, f: int = 64) -> np.ndarray:
    return rng.normal(size=(n, f)).astype(np.float32)


def test_same_distribution_passes_every_target() -> None:
    rng = np.random.default_rng(0)
    train_spec = _spectra(rng, 100)
    # spectra a little farther from the training hits than held-out ones: a generator exactly as close as
    # held-out data sits at the 5% boundary of the memorisation target by construction
    gen = _set(rng, 400, spectra=1.2 * _spectra(rng, 400))
    real = _set(rng, 100, spectra=_spectra(rng, 100))
    train = _set(rng, 100, spectra=train_spec)
    r = em.evaluate(gen, real, train, NAMES, CHECKS, rng=np.random.default_rng(1))
    verdicts = {t["name"]: t["verdict"] for t in r["targets"]}
    assert verdicts == {"kick checks": "PASS", "frechet distance": "PASS", "diversity": "PASS",
                        "memorisation": "PASS"}, r["targets"]
    assert r["verdict"] == "PASS"
    assert 0.8 < r["diversity"]["ratio"] < 1.2
    assert r["frechet"]["generated_vs_heldout"] < r["frechet"]["real_vs_real"]


def test_shifted_collapsed_failing_generator_fails_the_right_targets() -> None:
    rng = np.random.default_rng(2)
    gen = _set(rng, 300, shift=3.0, scale=0.2, fail=0.5)
    real = _set(rng, 60, fail=0.1)
    r = em.evaluate(gen, real, None, NAMES, CHECKS, rng=np.random.default_rng(3))
    verdicts = {t["name"]: t["verdict"] for t in r["targets"]}
    assert verdicts == {"kick checks": "FAIL", "frechet distance": "FAIL", "diversity": "FAIL",
                        "memorisation": "N/A"}
    assert r["verdict"] == "FAIL"
    assert r["checks"]["generated"]["pass_rate"] == pytest.approx(0.5)
    assert r["checks"]["heldout"]["per_check"] == {"x": 1.0, "y": pytest.approx(0.9)}
    assert r["diversity"]["ratio"] == pytest.approx(0.2, rel=0.25)


def test_too_diverse_generator_fails_diversity_only() -> None:
    rng = np.random.default_rng(4)
    r = em.evaluate(_set(rng, 300, scale=2.0), _set(rng, 80), None, NAMES, CHECKS, rng=np.random.default_rng(5))
    verdicts = {t["name"]: t["verdict"] for t in r["targets"]}
    assert verdicts["diversity"] == "FAIL" and verdicts["kick checks"] == "PASS"
    assert r["verdict"] == "FAIL"


def test_all_passing_without_training_set_is_incomplete() -> None:
    rng = np.random.default_rng(6)
    r = em.evaluate(_set(rng, 300), _set(rng, 100), None, NAMES, CHECKS, rng=np.random.default_rng(7))
    assert r["memorisation"] is None
    assert r["verdict"] == "INCOMPLETE"


def test_memorisation_flags_copies_of_training_hits() -> None:
    rng = np.random.default_rng(8)
    train = _spectra(rng, 50)
    held = _spectra(rng, 30)
    copies = train[rng.integers(0, 50, size=40)]
    fresh = 1.3 * _spectra(rng, 40)
    m = em.memorisation(np.concatenate([copies, fresh]), held, train)
    assert m["share"] == pytest.approx(0.5)
    assert m["flagged"] == 40
    assert m["generated_nearest"]["min"] == pytest.approx(0.0, abs=1e-6)
    assert m["heldout_duplicates"] == 0


def test_memorisation_threshold_ignores_leaked_duplicates() -> None:
    rng = np.random.default_rng(9)
    train = _spectra(rng, 50)
    held = np.concatenate([train[:3], _spectra(rng, 30)])  # 3 held-out hits leaked from the training set
    m = em.memorisation(train[:10], held, train)
    assert m["heldout_duplicates"] == 3
    assert m["threshold"] > 0.5  # from the 30 genuine held-out hits, not the copies
    assert m["share"] == 1.0


def test_hitset_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="number of hits"):
        em.HitSet(np.zeros((3, 2)), np.ones((4, 1), dtype=bool))


def test_too_few_real_hits_is_refused() -> None:
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="at least 4 held-out"):
        em.evaluate(_set(rng, 10), _set(rng, 3), None, NAMES, CHECKS, rng=rng)
