"""Knobs: named latent directions, ordered by how much they change the sound (GANSpace-style).

Method (Harkonen et al., GANSpace, applied to a sound generator):

1. Sample ``n`` latents z ~ N(0, I) and take the generator's output log-spectrogram (the contract's scaled
   dB rows; waveform models are encoded with the contract first), average-pooled to a coarse time-frequency
   grid. These are the features: for a sound model the output dB spectrogram is the perceptually relevant
   "intermediate" representation, and pooling keeps the PCA cheap and the directions about envelope and
   spectral balance rather than single bins.
2. PCA of the features; each sample's coordinates x on the top components are regressed back onto z
   (least squares, ``Z ~ X U``), as GANSpace does for BigGAN, so each component gets a latent direction u_k.
   Directions are orthonormalised in PCA order (Gram-Schmidt), so turning one knob does not also turn another.
3. Range: ``lo, hi = -RANGE, +RANGE`` latent units (3 = three standard deviations of the prior along a unit
   direction: 99.7 % of the latents the generator saw in training lie inside), each side then shortened where the
   sweep stops giving kicks: walking out from the centre, the last knob step whose kick-check pass rate
   (kickit.descriptors.is_kick) stays within ``KICK_RATE_DROP`` of the centre's ends the range.
4. Measure (``measure``): for several base latents, render the hit at knob values -1..1 in equal steps and
   record (a) the mean absolute dB change per step of the spectrogram cells audible (above the mask) in either
   step (the "sound change") and its
   smoothness (largest step / mean step; 1 = perfectly even), (b) kickit.descriptors of the reconstructed
   audio, their change per step and their rank correlation with the knob value.
5. Order knobs by measured sound change (largest first) and name each by the descriptor it drives most
   consistently (|Spearman rho| >= ``NAME_MIN_RHO`` averaged over bases) and audibly (a change over the sweep of
   at least ``NAME_MIN_CHANGE``, e.g. 2 Hz of pitch, 10 ms of decay, 1 dB of band energy) - "pitch", "decay",
   "brightness", "width", ... - flipping the direction so turning the knob up raises that descriptor.
   Otherwise "knob N".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kickit.hits import render_output
from kickit.modelfile import Knob
from kickit.spectral import SpectralContract

N_KNOBS = 8
RANGE = 3.0
POOL = (16, 32)  # pooled (frames, rows) grid of the PCA features
NAME_MIN_RHO = 0.8
# smallest change over a knob's whole sweep (mean over bases) that counts as audible, per descriptor: a knob is
# only named after a descriptor it moves at least this much
NAME_MIN_CHANGE: dict[str, float] = {
    "fundamental_hz": 2.0, "decay_s": 0.010, "attack_s": 0.001, "centroid_hz": 50.0, "width": 0.02,
    "sub_energy": 1.0, "low_energy": 1.0, "high_energy": 1.0, "flatness": 0.02, "crest": 1.0,
}
KICK_KEY = "is_kick"  # describe() may add this: 1.0 per hit passing every kick check
KICK_RATE_DROP = 0.2  # a knob side is shortened where the kick pass rate falls more than this under the centre's
MIN_RANGE = 0.5

# descriptor name -> knob names (the first free one is used; a second knob driving the same descriptor gets the
# second name), in order of preference when a knob drives several descriptors equally
KNOB_NAMES: dict[str, tuple[str, ...]] = {
    "fundamental_hz": ("pitch", "tune"),
    "decay_s": ("decay", "length"),
    "attack_s": ("attack",),
    "centroid_hz": ("brightness", "tone"),
    "width": ("width", "space"),
    "sub_energy": ("sub",),
    "low_energy": ("body",),
    "high_energy": ("click", "air"),
    "flatness": ("noise",),
    "crest": ("punch",),
}


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


@dataclass
class KnobEffect:
    """What one knob does, measured on rendered hits."""

    sound_change_db: float  # mean |dB change| of the spectrogram per knob step
    smoothness: float  # largest step change / mean step change (1 = perfectly even)
    descriptor_step: dict[str, float] = field(default_factory=dict)  # mean |change| per step, per descriptor
    descriptor_rho: dict[str, float] = field(default_factory=dict)  # mean Spearman rho(knob value, descriptor)
    descriptor_range: dict[str, float] = field(default_factory=dict)  # mean |value at +1 - value at -1|
    kick_rate: list[float] = field(default_factory=list)  # share of hits passing the kick checks per knob step

    def to_dict(self) -> dict[str, Any]:
        return {
            "sound_change_db_per_step": round(self.sound_change_db, 4),
            "smoothness": round(self.smoothness, 3),
            "descriptor_change_per_step": {k: _sig(v) for k, v in self.descriptor_step.items()},
            "descriptor_rho": {k: round(v, 3) for k, v in self.descriptor_rho.items()},
            "descriptor_sweep_change": {k: _sig(v) for k, v in self.descriptor_range.items()},
            "kick_rate_per_step": [round(v, 3) for v in self.kick_rate],
        }


def _generate(generator: torch.nn.Module, z: np.ndarray, batch: int = 32) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for i in range(0, len(z), batch):
            outs.append(generator(torch.from_numpy(np.ascontiguousarray(z[i:i + batch]))).float().numpy())
    return np.concatenate(outs)


def _as_spec(raw: np.ndarray, contract: SpectralContract, output: str) -> np.ndarray:
    return raw if output == "spec" else contract.encode(raw.astype(np.float32))


def _pool(spec: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    b, c, f, r = spec.shape
    gf, gr = min(grid[0], f), min(grid[1], r)
    f2, r2 = f - f % gf, r - r % gr
    x = spec[:, :, :f2, :r2].reshape(b, c, gf, f2 // gf, gr, r2 // gr)
    return x.mean(axis=(3, 5)).reshape(b, -1)


def find_directions(
    generator: torch.nn.Module,
    contract: SpectralContract,
    latent_dim: int,
    *,
    output: str = "spec",
    k: int = N_KNOBS,
    n: int = 1024,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """GANSpace directions: (k, latent) orthonormal float32 rows, and each component's explained variance ratio."""
    if n < 2 * latent_dim:
        raise ValueError(f"need at least {2 * latent_dim} samples for a latent of {latent_dim}, got {n}")
    k = min(k, latent_dim)
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    feats = []
    for i in range(0, n, 64):
        raw = _generate(generator, z[i:i + 64])
        feats.append(_pool(_as_spec(raw, contract, output), POOL))
    x = np.concatenate(feats).astype(np.float64)
    x -= x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2
    ratio = var[:k] / max(float(var.sum()), 1e-30)
    coords = x @ vt[:k].T  # (n, k) PCA coordinates
    u, *_ = np.linalg.lstsq(coords, z.astype(np.float64), rcond=None)  # (k, latent): Z ~ coords @ u
    dirs = np.zeros((k, latent_dim))
    for i in range(k):  # Gram-Schmidt in PCA order
        d = u[i] - dirs[:i].T @ (dirs[:i] @ u[i])
        norm = np.linalg.norm(d)
        if norm < 1e-9:  # degenerate (a generator that ignores part of z): any orthogonal direction
            d = np.random.default_rng(seed + 1 + i).standard_normal(latent_dim)
            d -= dirs[:i].T @ (dirs[:i] @ d)
            norm = np.linalg.norm(d)
        dirs[i] = d / norm
    return dirs.astype(np.float32), ratio.astype(np.float64)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (a constant series has all ranks equal)."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1.0)[inverse]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; 0 when either series is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 0 else 0.0


Describe = Callable[[np.ndarray, SpectralContract], dict[str, np.ndarray]]


def measure(
    generator: torch.nn.Module,
    contract: SpectralContract,
    knob: Knob,
    *,
    output: str = "spec",
    bases: int = 6,
    steps: int = 9,
    seed: int = 7,
    describe: Describe | None = None,
) -> KnobEffect:
    """Render the knob's sweep on ``bases`` latents and measure the sound change per step (see module doc)."""
    latent_dim = knob.direction.shape[0]
    z0 = np.random.default_rng(seed).standard_normal((bases, latent_dim)).astype(np.float32)
    values = np.linspace(-1.0, 1.0, steps)
    offsets = np.array([knob.offset(v) for v in values], dtype=np.float32)
    z = (z0[:, None, :] + offsets[None, :, None] * knob.direction[None, None, :]).reshape(-1, latent_dim)
    raw = _generate(generator, z)
    spec = _as_spec(raw, contract, output).reshape(bases, steps, *contract.shape)
    db = contract.unscale_db(spec)
    # mean |dB change| between neighbouring knob steps over the cells audible (above the mask) in either step
    active = db > contract.db_threshold
    live = active[:, 1:] | active[:, :-1]
    diff = np.abs(np.diff(db, axis=1)) * live
    step_db = diff.sum(axis=(2, 3, 4)) / np.maximum(live.sum(axis=(2, 3, 4)), 1)  # (bases, steps - 1)
    mean_step = float(step_db.mean())
    smooth = float(step_db.mean(axis=0).max() / mean_step) if mean_step > 0 else 1.0
    effect = KnobEffect(mean_step, smooth)
    if describe is not None:
        audio = np.stack([render_output(raw[i:i + 1], contract, output)[0] for i in range(len(raw))])
        desc = describe(audio, contract)
        if KICK_KEY in desc:
            effect.kick_rate = [float(x) for x in np.asarray(desc.pop(KICK_KEY), dtype=np.float64)
                                .reshape(bases, steps).mean(axis=0)]
        for name, vals in desc.items():
            v = np.asarray(vals, dtype=np.float64).reshape(bases, steps)
            if not np.all(np.isfinite(v)):
                continue
            effect.descriptor_step[name] = float(np.abs(np.diff(v, axis=1)).mean())
            effect.descriptor_rho[name] = float(np.mean([_spearman(values, row) for row in v]))
            effect.descriptor_range[name] = float(np.abs(v[:, -1] - v[:, 0]).mean())
    return effect


def name_for(effect: KnobEffect, taken: set[str]) -> tuple[str | None, float, str | None]:
    """(knob name, signed rho, descriptor) of the descriptor this knob drives most consistently and audibly
    and that still has a free name, or (None, 0, None)."""
    best: tuple[str | None, float, str | None] = (None, 0.0, None)
    for desc, names in KNOB_NAMES.items():
        rho = effect.descriptor_rho.get(desc)
        free = [n for n in names if n not in taken]
        if rho is None or not free or abs(rho) < NAME_MIN_RHO:
            continue
        if effect.descriptor_range.get(desc, 0.0) < NAME_MIN_CHANGE.get(desc, 0.0):
            continue
        if abs(rho) > abs(best[1]) + 1e-9:
            best = (free[0], rho, desc)
    return best


def compute_knobs(
    generator: torch.nn.Module,
    contract: SpectralContract,
    latent_dim: int,
    *,
    output: str = "spec",
    k: int = N_KNOBS,
    n: int = 1024,
    bases: int = 6,
    steps: int = 9,
    seed: int = 0,
    describe: Describe | None = None,
) -> list[Knob]:
    """The model's knobs: directions, ranges, measured effects, ordered by sound change, named (module doc)."""
    if describe is None:
        describe = default_describe()
    dirs, ratio = find_directions(generator, contract, latent_dim, output=output, k=k, n=n, seed=seed)
    measured: list[tuple[KnobEffect, np.ndarray, float, float, float]] = []
    for i, d in enumerate(dirs):
        knob = Knob(f"pc{i + 1}", d, -RANGE, RANGE)
        measured.append((measure(generator, contract, knob, output=output, bases=bases, steps=steps,
                                 seed=seed + 100 + i, describe=describe), d, float(ratio[i]), -RANGE, RANGE))
        lo, hi = kick_safe_range(measured[-1][0].kick_rate)
        if (lo, hi) != (-RANGE, RANGE):  # measure again over the range that keeps kicks kicks
            knob = Knob(f"pc{i + 1}", d, lo, hi)
            effect = measure(generator, contract, knob, output=output, bases=bases, steps=steps,
                             seed=seed + 100 + i, describe=describe)
            measured[-1] = (effect, d, float(ratio[i]), lo, hi)
    measured.sort(key=lambda m: -m[0].sound_change_db)
    knobs: list[Knob] = []
    taken: set[str] = set()
    for i, (effect, d, var, lo, hi) in enumerate(measured):
        name, rho, named_by = name_for(effect, taken)
        if name is not None:
            taken.add(name)
            if rho < 0:  # turning the knob up raises the named descriptor
                d = -d
                lo, hi = -hi, -lo
                effect.descriptor_rho = {key: -r for key, r in effect.descriptor_rho.items()}
                effect.kick_rate = effect.kick_rate[::-1]
        info = effect.to_dict()
        info["pca_variance_ratio"] = round(var, 5)
        info["named_by"] = named_by
        knobs.append(Knob(name or f"knob {i + 1}", d.astype(np.float32), lo, hi, info))
    return knobs


def kick_safe_range(kick_rate: list[float]) -> tuple[float, float]:
    """(lo, hi): each side of +-RANGE shortened to the last knob step (walking out from the centre) whose kick
    pass rate stays within ``KICK_RATE_DROP`` of the centre's, never under ``MIN_RANGE``."""
    n = len(kick_rate)
    if n < 3 or n % 2 == 0:
        return -RANGE, RANGE
    c = n // 2
    floor = kick_rate[c] - KICK_RATE_DROP
    ends = []
    for direction in (-1, 1):
        last = 0
        for j in range(1, c + 1):
            if kick_rate[c + direction * j] < floor:
                break
            last = j
        ends.append(max(MIN_RANGE, RANGE * last / c))
    return -ends[0], ends[1]


def default_describe() -> Describe:
    """kickit.descriptors as a batch describe function (name -> values per hit)."""
    from kickit import descriptors

    def describe(audio: np.ndarray, contract: SpectralContract) -> dict[str, np.ndarray]:
        out = descriptors.knob_descriptors(audio, contract)
        out[KICK_KEY] = descriptors.is_kick(audio, contract).astype(np.float64)
        return out

    return describe
