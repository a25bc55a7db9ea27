"""The numbers of ``kickit eval`` from per-hit features: pure logic, no I/O (see docs/evaluation.md).

Inputs are per-hit arrays for three sets - generated hits, held-out real hits and (optionally) training hits:
the descriptor matrix (items, descriptors), the kick-check matrix (items, checks) of booleans and a
memorisation feature matrix (items, features; the pooled log-spectrogram) and, for real hits, the kit of each
hit (real kicks come in kits of near-copies: the reference figures keep kits whole, see :func:`evaluate`).
Output is one JSON-ready dict with every figure and a PASS/FAIL per target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kickit import frechet

# Targets for a shipped model (the model-shipping issue).
PASS_RATE_MIN_RATIO = 0.9  # generated pass rate >= 0.9 x the real hits' rate
FRECHET_MAX_RATIO = 2.0  # Frechet distance <= 2 x the real-vs-real figure
DIVERSITY_RANGE = (0.7, 1.3)  # mean pairwise distance, generated / real
MEMORISATION_PERCENTILE = 5.0  # threshold: this percentile of held-out-to-training nearest distances
MEMORISATION_MAX_SHARE = 0.05  # share of generated hits closer to a training hit than the threshold
# Smallest descriptor difference that matters: the floor of each descriptor's standardisation scale (see
# docs/evaluation.md). Keyed by kickit.descriptors.VECTOR_NAMES; by prefix for the log descriptors.
SCALE_FLOORS = {
    "log_": 0.05,  # 5 % of a time or a frequency
    "_share": 0.01,  # 1 % of the hit's energy
    "width": 0.01,
    "lr_correlation": 0.01,
    "crest_db": 0.5,  # dB
}
DEFAULT_SCALE_FLOOR = 1e-3


def scale_floors(names: list[str]) -> np.ndarray:
    """The standardisation floor of each named descriptor (:data:`SCALE_FLOORS`)."""
    out = []
    for n in names:
        hit = [v for k, v in SCALE_FLOORS.items() if n == k or (k.endswith("_") and n.startswith(k))
               or (k.startswith("_") and n.endswith(k))]
        out.append(hit[0] if hit else DEFAULT_SCALE_FLOOR)
    return np.asarray(out)


DUPLICATE_DISTANCE = 1e-4  # held-out hits this close to a training hit are copies (a split leak), not data


@dataclass
class HitSet:
    """Per-hit features of one set of hits."""

    descriptors: np.ndarray  # (n, d) float
    checks: np.ndarray  # (n, k) bool
    spectra: np.ndarray | None = None  # (n, f) float, memorisation features
    kits: np.ndarray | None = None  # (n,) kit label of each hit (real hits), None when unknown

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, dtype=np.float64)
        self.checks = np.asarray(self.checks, dtype=bool)
        if self.descriptors.ndim != 2 or self.checks.ndim != 2:
            raise ValueError("HitSet: descriptors and checks must be 2-D (items, columns)")
        if self.descriptors.shape[0] != self.checks.shape[0]:
            raise ValueError("HitSet: descriptors and checks disagree on the number of hits")
        if self.spectra is not None and self.spectra.shape[0] != self.descriptors.shape[0]:
            raise ValueError("HitSet: spectra and descriptors disagree on the number of hits")
        if self.kits is not None:
            self.kits = np.asarray(self.kits).astype(str)
            if self.kits.shape != (self.descriptors.shape[0],):
                raise ValueError("HitSet: kit labels and descriptors disagree on the number of hits")

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])


def _target(name: str, value: float | None, ok: bool | None, rule: str) -> dict[str, Any]:
    verdict = "N/A" if ok is None else ("PASS" if ok else "FAIL")
    return {"name": name, "value": value, "rule": rule, "verdict": verdict}


def check_rates(checks: np.ndarray, check_names: list[str]) -> dict[str, Any]:
    """Share of hits passing all checks, and per check."""
    c = np.asarray(checks, dtype=bool)
    all_ok = c.all(axis=1) if c.shape[1] else np.ones(c.shape[0], dtype=bool)
    return {
        "pass_rate": float(all_ok.mean()) if c.shape[0] else 0.0,
        "per_check": {n: float(c[:, i].mean()) for i, n in enumerate(check_names)},
    }


def memorisation(gen: np.ndarray, held: np.ndarray, train: np.ndarray,
                 percentile: float = MEMORISATION_PERCENTILE, metric: str = "cosine") -> dict[str, Any]:
    """DrumGAN's check: nearest training hit of each generated hit vs held-out-to-training distances.

    ``metric``: ``"cosine"`` for unit-length feature rows (the distance is ``1 - cos``, from 0 for a copy to 1
    for hits with no energy in common), ``"rms"`` for the RMS difference of the rows (Euclidean /
    sqrt(features); used on standardised descriptors). The threshold is the ``percentile`` of the held-out
    hits' nearest-training-hit distances; the figure is the share of generated hits whose nearest training hit
    is closer than that threshold. Held-out hits that are copies of a training hit (distance under
    :data:`DUPLICATE_DISTANCE`: a leak in the split) would set the threshold to zero; they are left out of it
    and counted under ``heldout_duplicates``.
    """
    if metric not in ("cosine", "rms"):
        raise ValueError(f"memorisation: unknown metric {metric!r}")
    d_gen, idx = frechet.nearest_distances(gen, train)
    d_held, _ = frechet.nearest_distances(held, train)
    if metric == "cosine":
        d_gen, d_held = d_gen * d_gen / 2.0, d_held * d_held / 2.0
    else:
        scale = 1.0 / np.sqrt(gen.shape[1])
        d_gen, d_held = d_gen * scale, d_held * scale
    dup = d_held < DUPLICATE_DISTANCE
    usable = d_held[~dup] if np.any(~dup) else d_held
    threshold = float(np.percentile(usable, percentile))
    close = d_gen < max(threshold, DUPLICATE_DISTANCE)
    return {
        "share": float(close.mean()),
        "threshold": threshold,
        "percentile": percentile,
        "metric": metric,
        "generated_nearest": {"min": float(d_gen.min()), "median": float(np.median(d_gen))},
        "heldout_nearest": {"min": float(d_held.min()), "median": float(np.median(d_held))},
        "flagged": int(close.sum()),
        "heldout_duplicates": int(dup.sum()),
        "nearest_index": idx,
        "generated_distances": d_gen,
        "flagged_mask": close,
        "heldout_distances": d_held,
    }


def _real_pool(real: HitSet, train: HitSet | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All real hits (held-out, then training when given): descriptors, checks and kit labels (None unless
    every hit has one)."""
    sets = [real] + ([train] if train is not None and len(train) else [])
    kits = None if any(h.kits is None for h in sets) else np.concatenate([h.kits for h in sets])
    return (np.concatenate([h.descriptors for h in sets]), np.concatenate([h.checks for h in sets]), kits)


def evaluate(
    gen: HitSet,
    real: HitSet,
    train: HitSet | None,
    descriptor_names: list[str],
    check_names: list[str],
    *,
    rng: np.random.Generator,
    splits: int = 20,
    ridge: float = frechet.DEFAULT_RIDGE,
) -> dict[str, Any]:
    """All figures and target verdicts. Arrays that the figures need are returned under ``"_arrays"``.

    ``real`` is the held-out real hits, ``train`` the training hits (optional); "all real hits" below is both.
    Real kicks come in kits of near-copies (velocity layers), so the reference figures respect the kits
    (docs/evaluation.md): descriptors are standardised on all real hits; real-vs-real is the Frechet distance
    between kit-disjoint halves of all real hits (random halves under :data:`frechet.MIN_KITS` kits or without
    kit labels); diversity and the kick-check rate are compared with all real hits. THE Frechet figure stays
    generated vs held-out (hits no model was trained on).
    """
    if len(real) < 4:
        raise ValueError(f"need at least 4 held-out real hits, got {len(real)}")
    if len(gen) < 2:
        raise ValueError(f"need at least 2 generated hits, got {len(gen)}")
    all_d, all_checks, all_kits = _real_pool(real, train)
    st = frechet.Standardiser.fit(all_d, scale_floors(descriptor_names))
    zg, zr, za = st(gen.descriptors), st(real.descriptors), st(all_d)

    rates_gen = check_rates(gen.checks, check_names)
    rates_real = check_rates(real.checks, check_names)
    rates_all = check_rates(all_checks, check_names)

    fd = frechet.frechet_distance(zg, zr, ridge=ridge)
    rvr = frechet.real_vs_real(za, rng, splits=splits, ridge=ridge, kits=all_kits)
    sized = None
    if all_kits is not None and len(za) > len(zr) and rvr.method == frechet.KIT_HALVES:
        sized = frechet.kit_holdout(za, all_kits, len(zr), rng, splits=splits, ridge=ridge)
    if rvr.method == frechet.KIT_HALVES:
        how = f"kit-disjoint halves of all {len(za)} real hits ({rvr.kits} kits)"
    elif all_kits is None:
        how = f"random halves of all {len(za)} real hits (no kit labels: kit structure not respected)"
    else:
        how = (f"random halves of all {len(za)} real hits (only {rvr.kits} kits, under {frechet.MIN_KITS}: "
               "kit structure not respected)")

    div_gen = frechet.mean_pairwise_distance(zg)
    div_all = frechet.mean_pairwise_distance(za)
    div_held = frechet.mean_pairwise_distance(zr)
    div_ratio = div_gen / div_all if div_all > 0 else float("inf")

    def means(d: np.ndarray) -> dict[str, float]:
        return dict(zip(descriptor_names, map(float, d.mean(axis=0)), strict=True))

    n_kits = {name: (len(np.unique(h.kits)) if h is not None and h.kits is not None else None)
              for name, h in (("heldout", real), ("train", train))}
    out: dict[str, Any] = {
        "counts": {"generated": len(gen), "heldout": len(real), "train": len(train) if train else 0,
                   "real": len(za), "kits": {**n_kits, "real": rvr.kits if all_kits is not None else None}},
        "checks": {"generated": rates_gen, "real": rates_all, "heldout": rates_real, "names": check_names},
        "frechet": {
            "generated_vs_heldout": fd,
            "real_vs_real": rvr.mean,
            "real_vs_real_std": rvr.std,
            "real_vs_real_splits": rvr.splits,
            "real_vs_real_half_size": rvr.half_size,
            "real_vs_real_method": rvr.method,
            "real_vs_real_note": how,
            "ratio": fd / rvr.mean if rvr.mean > 0 else float("inf"),
            "heldout_sized": sized.mean if sized else None,
            "heldout_sized_std": sized.std if sized else None,
            "heldout_sized_size": sized.half_size if sized else None,
            "ridge": ridge,
            "descriptors": descriptor_names,
            "standardised_on": len(za),
            "scale": dict(zip(descriptor_names, map(float, st.scale), strict=True)),
        },
        "diversity": {"generated": div_gen, "real": div_all, "heldout": div_held, "ratio": div_ratio,
                      "heldout_ratio": div_gen / div_held if div_held > 0 else float("inf")},
        "descriptor_means": {"generated": means(gen.descriptors), "heldout": means(real.descriptors),
                             "real": means(all_d)},
    }
    if train is not None and len(train) >= 2:
        # for scale, no target: what the training hits themselves score against the held-out hits
        zt = st(train.descriptors)
        div_train = frechet.mean_pairwise_distance(zt)
        fd_train = frechet.frechet_distance(zt, zr, ridge=ridge)
        out["training_reference"] = {
            "pass_rate": check_rates(train.checks, check_names)["pass_rate"],
            "frechet": fd_train,
            "frechet_ratio": fd_train / rvr.mean if rvr.mean > 0 else float("inf"),
            "diversity_ratio": div_train / div_all if div_all > 0 else float("inf"),
        }
    else:
        out["training_reference"] = None
    mem = None
    if train is not None and len(train) and gen.spectra is not None and real.spectra is not None \
            and train.spectra is not None:
        mem = memorisation(gen.spectra, real.spectra, train.spectra)
        # the same check in the standardised descriptor space, for reference (no target)
        mem_d = memorisation(zg, zr, st(train.descriptors), metric="rms")
        out["memorisation"] = {k: v for k, v in mem.items() if not isinstance(v, np.ndarray)}
        out["memorisation"]["space"] = "log-spectrogram energy pattern (cosine distance)"
        out["memorisation"]["descriptor_space_share"] = mem_d["share"]
    else:
        out["memorisation"] = None

    real_rate = rates_all["pass_rate"]
    targets = [
        _target("kick checks", rates_gen["pass_rate"], rates_gen["pass_rate"] >= PASS_RATE_MIN_RATIO * real_rate,
                f"pass rate >= {PASS_RATE_MIN_RATIO} x real hits' rate ({PASS_RATE_MIN_RATIO * real_rate:.3f})"),
        _target("frechet distance", fd, fd <= FRECHET_MAX_RATIO * rvr.mean,
                f"vs held-out <= {FRECHET_MAX_RATIO} x real-vs-real ({FRECHET_MAX_RATIO * rvr.mean:.3f}, "
                f"{rvr.method})"),
        _target("diversity", div_ratio, DIVERSITY_RANGE[0] <= div_ratio <= DIVERSITY_RANGE[1],
                f"generated / all real hits in {DIVERSITY_RANGE[0]}-{DIVERSITY_RANGE[1]}"),
        _target("memorisation", mem["share"] if mem else None,
                (mem["share"] < MEMORISATION_MAX_SHARE) if mem else None,
                f"< {MEMORISATION_MAX_SHARE:.0%} of generated hits closer to a training hit than the "
                f"{MEMORISATION_PERCENTILE:g}th percentile of held-out-to-training distances"),
    ]
    out["targets"] = targets
    verdicts = [t["verdict"] for t in targets]
    out["verdict"] = "FAIL" if "FAIL" in verdicts else ("INCOMPLETE" if "N/A" in verdicts else "PASS")
    out["_arrays"] = {
        "z_generated": zg,
        "z_heldout": zr,
        "memorisation": mem,
    }
    return out
