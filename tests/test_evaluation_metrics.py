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
    # no kit labels: halves of all 200 real hits (held-out + training), about the generated-vs-held-out sizes
    assert r["frechet"]["real_vs_real_method"] == "random halves" and r["frechet"]["real_vs_real_half_size"] == 100
    assert r["frechet"]["ratio"] < 1.5
    tr = r["training_reference"]
    assert tr["frechet_ratio"] == pytest.approx(tr["frechet"] / r["frechet"]["real_vs_real"])
    assert tr["frechet_ratio"] < 3.0 and 0.8 < tr["diversity_ratio"] < 1.2


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
    assert r["memorisation"] is None and r["training_reference"] is None
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


def test_scale_floors_follow_descriptor_names() -> None:
    floors = em.scale_floors(["log_decay_s", "sub_share", "width", "lr_correlation", "crest_db", "mystery"])
    np.testing.assert_allclose(floors, [0.05, 0.01, 0.01, 0.01, 0.5, em.DEFAULT_SCALE_FLOOR])


def test_near_constant_real_descriptor_does_not_dominate() -> None:
    # real kicks are mono (width ~ 0 +- 1e-6); generated ones have a little width: a difference of a few
    # floors, not of a million standard deviations
    rng = np.random.default_rng(11)
    names = ["log_decay_s", "width"]
    real = em.HitSet(np.column_stack([rng.normal(-2, 0.5, 60), rng.normal(0, 1e-6, 60)]), np.ones((60, 1), bool))
    gen = em.HitSet(np.column_stack([rng.normal(-2, 0.5, 300), rng.uniform(0.0, 0.03, 300)]),
                    np.ones((300, 1), bool))
    r = em.evaluate(gen, real, None, names, ["ok"], rng=np.random.default_rng(12))
    assert r["frechet"]["scale"]["width"] == pytest.approx(0.01)
    assert 1.0 < r["frechet"]["generated_vs_heldout"] < 10.0
    assert r["diversity"]["ratio"] < 3.0


def test_memorisation_features_ignore_shared_silence() -> None:
    from kickit.eval_features import memorisation_features

    silent = -np.ones((1, 2, 64, 32), dtype=np.float32)  # the masked floor everywhere
    a, b = silent.copy(), silent.copy()
    a[..., :8, 0:4] = 1.0  # two short hits with energy in different places
    b[..., :8, 10:14] = 1.0
    f = memorisation_features(np.concatenate([a, b, a]))
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    m = em.memorisation(f[:1], f[1:2], f[1:3])  # generated a; held-out b; training b and a copy of a
    assert m["metric"] == "cosine"
    assert m["generated_nearest"]["min"] == pytest.approx(0.0, abs=1e-6)  # the copy
    assert m["heldout_nearest"]["min"] == pytest.approx(0.0, abs=1e-6)  # b is in the training set too
    # a and b share only silence: cosine distance 1 (an RMS difference would call them close)
    d = float(np.sum((f[0] - f[1]) ** 2) / 2)
    assert d == pytest.approx(1.0, abs=1e-6)
    assert float(np.sqrt(np.mean((a - b) ** 2))) < 0.6


# ----- kit structure: real kicks come in kits of near-copies (velocity layers) ---------------------------------
KIT_NAMES = ["a", "b", "c", "d", "e"]


def _kits(rng: np.random.Generator, n_kits: int, layers: int = 4, spread: float = 0.05,
          prefix: str = "kit") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight kit clusters: (kit centres, hits (n_kits * layers, d), kit label per hit)."""
    centres = rng.normal(size=(n_kits, len(KIT_NAMES)))
    hits = np.repeat(centres, layers, axis=0) + spread * rng.normal(size=(n_kits * layers, len(KIT_NAMES)))
    return centres, hits, np.repeat([f"{prefix}{i}" for i in range(n_kits)], layers)


def _kit_sets(seed: int) -> tuple[np.random.Generator, np.ndarray, em.HitSet, em.HitSet]:
    rng = np.random.default_rng(seed)
    centres, hits, kits = _kits(rng, 60)
    # 20 whole kits held out, spread along the sound axis like the dataset's split (training/data.py:
    # split_by_kit): every third kit in the order of the centres' first principal component
    c = centres - centres.mean(axis=0)
    order = np.argsort(c @ np.linalg.svd(c, full_matrices=False)[2][0])
    held_out = order[1::3]
    held_kits = np.isin(kits, [f"kit{i}" for i in held_out])
    ok = np.ones((len(hits), 1), dtype=bool)
    real = em.HitSet(hits[held_kits], ok[held_kits], kits=kits[held_kits])
    train = em.HitSet(hits[~held_kits], ok[~held_kits], kits=kits[~held_kits])
    return rng, np.delete(centres, held_out, axis=0), real, train


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_of_the_training_kits_passes_frechet_and_diversity(seed: int) -> None:
    # a model that learnt the training kits: new members (fresh layers) around the training kits' centres
    rng, centres, real, train = _kit_sets(seed)
    gen_hits = centres[rng.integers(0, len(centres), 400)] + 0.05 * rng.normal(size=(400, len(KIT_NAMES)))
    gen = em.HitSet(gen_hits, np.ones((400, 1), dtype=bool))
    r = em.evaluate(gen, real, train, KIT_NAMES, ["ok"], rng=np.random.default_rng(seed))
    verdicts = {t["name"]: t["verdict"] for t in r["targets"]}
    assert verdicts["frechet distance"] == "PASS" and verdicts["diversity"] == "PASS", r["targets"]
    fr = r["frechet"]
    assert fr["real_vs_real_method"] == "kit-disjoint halves" and r["counts"]["kits"]["real"] == 60
    assert 0.8 < r["diversity"]["ratio"] < 1.2
    # what the training data itself scores is on the same side of the target
    assert r["training_reference"]["frechet_ratio"] < em.FRECHET_MAX_RATIO
    # random halves (pairs of layers of the same kits on both sides) give a far smaller reference, against
    # which the same model would fail
    from kickit import frechet

    every = np.concatenate([real.descriptors, train.descriptors])
    st = frechet.Standardiser.fit(every, em.scale_floors(KIT_NAMES))
    random_halves = frechet.real_vs_real(st(every), np.random.default_rng(0), splits=20)
    assert random_halves.method == "random halves"
    assert fr["real_vs_real"] > 3 * random_halves.mean
    assert fr["generated_vs_heldout"] > em.FRECHET_MAX_RATIO * random_halves.mean


@pytest.mark.parametrize("seed", [0, 1])
def test_model_collapsed_onto_one_kit_fails_frechet_and_diversity(seed: int) -> None:
    rng, centres, real, train = _kit_sets(seed)
    gen_hits = centres[0] + 0.05 * rng.normal(size=(400, len(KIT_NAMES)))
    gen = em.HitSet(gen_hits, np.ones((400, 1), dtype=bool))
    r = em.evaluate(gen, real, train, KIT_NAMES, ["ok"], rng=np.random.default_rng(seed))
    verdicts = {t["name"]: t["verdict"] for t in r["targets"]}
    assert verdicts["frechet distance"] == "FAIL" and verdicts["diversity"] == "FAIL", r["targets"]
    assert r["diversity"]["ratio"] < 0.1 and r["verdict"] == "FAIL"


def test_reference_figures_use_all_real_hits() -> None:
    rng, _, real, train = _kit_sets(3)
    gen = em.HitSet(rng.normal(size=(50, len(KIT_NAMES))), np.ones((50, 1), dtype=bool))
    r = em.evaluate(gen, real, train, KIT_NAMES, ["ok"], rng=np.random.default_rng(0))
    every = np.concatenate([real.descriptors, train.descriptors])
    assert r["frechet"]["standardised_on"] == len(every) == r["counts"]["real"]
    for i, name in enumerate(KIT_NAMES):  # standardised by all real hits, not the held-out ones alone
        assert r["frechet"]["scale"][name] == pytest.approx(every[:, i].std(ddof=1))
        assert r["descriptor_means"]["real"][name] == pytest.approx(every[:, i].mean())
    assert r["counts"]["kits"] == {"heldout": 20, "train": 40, "real": 60}
    assert r["diversity"]["ratio"] == pytest.approx(r["diversity"]["generated"] / r["diversity"]["real"])
    assert r["diversity"]["heldout_ratio"] == pytest.approx(r["diversity"]["generated"] / r["diversity"]["heldout"])
    assert r["frechet"]["heldout_sized"] is not None and r["frechet"]["heldout_sized_size"] > 40


def test_pass_rate_target_compares_with_all_real_hits() -> None:
    rng, _, real, train = _kit_sets(4)
    real.checks[:] = False  # held-out kits all fail a check; the training kits all pass
    verdicts = {}
    for passing in (50, 65):  # of 100 generated hits; the real hits' rate is 2/3 (0.9 x 2/3 = 0.6)
        gen_checks = np.zeros((100, 1), dtype=bool)
        gen_checks[:passing] = True
        gen = em.HitSet(rng.normal(size=(100, len(KIT_NAMES))), gen_checks)
        r = em.evaluate(gen, real, train, KIT_NAMES, ["ok"], rng=np.random.default_rng(0))
        assert r["checks"]["real"]["pass_rate"] == pytest.approx(2 / 3)
        assert r["checks"]["heldout"]["pass_rate"] == 0.0
        verdicts[passing] = next(t for t in r["targets"] if t["name"] == "kick checks")["verdict"]
    assert verdicts == {50: "FAIL", 65: "PASS"}  # against the held-out rate (0) both would pass


def test_without_enough_kits_real_vs_real_falls_back_to_random_halves() -> None:
    rng = np.random.default_rng(5)
    _, hits, kits = _kits(rng, 3, layers=10)
    real = em.HitSet(hits, np.ones((30, 1), dtype=bool), kits=kits)
    gen = em.HitSet(rng.normal(size=(50, len(KIT_NAMES))), np.ones((50, 1), dtype=bool))
    r = em.evaluate(gen, real, None, KIT_NAMES, ["ok"], rng=np.random.default_rng(0))
    assert r["frechet"]["real_vs_real_method"] == "random halves"
    assert "only 3 kits" in r["frechet"]["real_vs_real_note"]
    assert r["frechet"]["heldout_sized"] is None
    no_labels = em.evaluate(gen, em.HitSet(hits, np.ones((30, 1), dtype=bool)), None, KIT_NAMES, ["ok"],
                            rng=np.random.default_rng(0))
    assert "no kit labels" in no_labels["frechet"]["real_vs_real_note"]


def test_hitset_kit_labels_must_match_hits() -> None:
    with pytest.raises(ValueError, match="kit labels"):
        em.HitSet(np.zeros((3, 2)), np.ones((3, 1), dtype=bool), kits=np.array(["a", "b"]))
