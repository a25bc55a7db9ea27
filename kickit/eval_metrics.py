"""The numbers of ``kickit eval`` from per-hit features: pure logic, no I/O (see docs/evaluation.md).

Inputs are per-hit arrays for three sets - generated hits, held-out real hits and (optionally) training hits:
the descriptor matrix (items, descriptors), the kick-check matrix (items, checks) of booleans and a
memorisation feature matrix (items, features; the pooled log-spectrogram). Output is one JSON-ready dict with
every figure and a PASS/FAIL per target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kickit import frechet

# Targets for a shipped model (the model-shipping issue).
PASS_RATE_MIN_RATIO = 0.9  # generated pass rate >= 0.9 x the real hits' rate
FRECHET_MAX_RATIO = 2.0  # Frechet distance <= 2 x the real-vs-real figure
DIVERSITY_RANGE = (0.7, 1.3)  # mean pairwise distance, generated / real
MEMORISATION_PERCENTILE = 5.0  # threshold: this percentile of held-out-to-training nearest distances
MEMORISATION_MAX_SHARE = 0.05  # share of generated hits closer to a training hit than the threshold
DUPLICATE_DISTANCE = 1e-4  # held-out hits this close to a training hit are copies (a split leak), not data


@dataclass
class HitSet:
    """Per-hit features of one set of hits."""

    descriptors: np.ndarray  # (n, d) float
    checks: np.ndarray  # (n, k) bool
    spectra: np.ndarray | None = None  # (n, f) float, memorisation features
    names: list[str] = field(default_factory=list)  # file names (real sets), for the report

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, dtype=np.float64)
        self.checks = np.asarray(self.checks, dtype=bool)
        if self.descriptors.ndim != 2 or self.checks.ndim != 2:
            raise ValueError("HitSet: descriptors and checks must be 2-D (items, columns)")
        if self.descriptors.shape[0] != self.checks.shape[0]:
            raise ValueError("HitSet: descriptors and checks disagree on the number of hits")
        if self.spectra is not None and self.spectra.shape[0] != self.descriptors.shape[0]:
            raise ValueError("HitSet: spectra and descriptors disagree on the number of hits")

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
                 percentile: float = MEMORISATION_PERCENTILE) -> dict[str, Any]:
    """DrumGAN's check: nearest training hit of each generated hit vs held-out-to-training distances.

    Distances are RMS differences between feature rows (Euclidean / sqrt(features)). The threshold is the
    ``percentile`` of the held-out hits' nearest-training-hit distances; the figure is the share of generated
    hits whose nearest training hit is closer than that threshold. Held-out hits that are copies of a training
    hit (distance under :data:`DUPLICATE_DISTANCE`: a leak in the split) would set the threshold to zero; they
    are left out of it and counted under ``heldout_duplicates``.
    """
    scale = 1.0 / np.sqrt(gen.shape[1])
    d_gen, idx = frechet.nearest_distances(gen, train)
    d_held, _ = frechet.nearest_distances(held, train)
    d_gen, d_held = d_gen * scale, d_held * scale
    dup = d_held < DUPLICATE_DISTANCE
    usable = d_held[~dup] if np.any(~dup) else d_held
    threshold = float(np.percentile(usable, percentile))
    close = d_gen < max(threshold, DUPLICATE_DISTANCE)
    return {
        "share": float(close.mean()),
        "threshold": threshold,
        "percentile": percentile,
        "generated_nearest": {"min": float(d_gen.min()), "median": float(np.median(d_gen))},
        "heldout_nearest": {"min": float(d_held.min()), "median": float(np.median(d_held))},
        "flagged": int(close.sum()),
        "heldout_duplicates": int(dup.sum()),
        "nearest_index": idx,
        "generated_distances": d_gen,
        "heldout_distances": d_held,
    }


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
    """All figures and target verdicts. Arrays that the figures need are returned under ``"_arrays"``."""
    if len(real) < 4:
        raise ValueError(f"need at least 4 held-out real hits, got {len(real)}")
    if len(gen) < 2:
        raise ValueError(f"need at least 2 generated hits, got {len(gen)}")
    st = frechet.Standardiser.fit(real.descriptors)
    zg, zr = st(gen.descriptors), st(real.descriptors)

    rates_gen = check_rates(gen.checks, check_names)
    rates_real = check_rates(real.checks, check_names)

    fd = frechet.frechet_distance(zg, zr, ridge=ridge)
    rvr = frechet.real_vs_real(zr, rng, splits=splits, ridge=ridge)

    div_gen = frechet.mean_pairwise_distance(zg)
    div_real = frechet.mean_pairwise_distance(zr)
    div_ratio = div_gen / div_real if div_real > 0 else float("inf")

    out: dict[str, Any] = {
        "counts": {"generated": len(gen), "heldout": len(real), "train": len(train) if train else 0},
        "checks": {"generated": rates_gen, "heldout": rates_real, "names": check_names},
        "frechet": {
            "generated_vs_heldout": fd,
            "real_vs_real": rvr.mean,
            "real_vs_real_std": rvr.std,
            "real_vs_real_splits": rvr.splits,
            "real_vs_real_half_size": rvr.half_size,
            "ratio": fd / rvr.mean if rvr.mean > 0 else float("inf"),
            "ridge": ridge,
            "descriptors": descriptor_names,
        },
        "diversity": {"generated": div_gen, "heldout": div_real, "ratio": div_ratio},
        "descriptor_means": {
            "generated": dict(zip(descriptor_names, map(float, gen.descriptors.mean(axis=0)), strict=True)),
            "heldout": dict(zip(descriptor_names, map(float, real.descriptors.mean(axis=0)), strict=True)),
        },
    }
    mem = None
    if train is not None and len(train) and gen.spectra is not None and real.spectra is not None \
            and train.spectra is not None:
        mem = memorisation(gen.spectra, real.spectra, train.spectra)
        # the same check in the standardised descriptor space, for reference (no target)
        mem_d = memorisation(zg, zr, st(train.descriptors))
        out["memorisation"] = {k: v for k, v in mem.items() if not isinstance(v, np.ndarray)}
        out["memorisation"]["space"] = "log-spectrogram"
        out["memorisation"]["descriptor_space_share"] = mem_d["share"]
    else:
        out["memorisation"] = None

    real_rate = rates_real["pass_rate"]
    targets = [
        _target("kick checks", rates_gen["pass_rate"], rates_gen["pass_rate"] >= PASS_RATE_MIN_RATIO * real_rate,
                f"pass rate >= {PASS_RATE_MIN_RATIO} x held-out rate ({PASS_RATE_MIN_RATIO * real_rate:.3f})"),
        _target("frechet distance", fd, fd <= FRECHET_MAX_RATIO * rvr.mean,
                f"<= {FRECHET_MAX_RATIO} x real-vs-real ({FRECHET_MAX_RATIO * rvr.mean:.3f})"),
        _target("diversity", div_ratio, DIVERSITY_RANGE[0] <= div_ratio <= DIVERSITY_RANGE[1],
                f"generated / held-out in {DIVERSITY_RANGE[0]}-{DIVERSITY_RANGE[1]}"),
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
