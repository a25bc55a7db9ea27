"""A user's own hit -> a latent of a model: encoder when the model has one, else projection by search.

numpy + onnxruntime only (the bridge uses it; never torch).

* VAE-style models (``ModelFile.can_encode``) map the hit's scaled spectrogram (the spectral contract's
  ``encode`` of the loaded, peak-normalised hit) straight to z with their encoder graph: milliseconds.
* Models without an encoder (the spectrogram GANs) are inverted by a derivative-free search through the
  ONNX generator in batches: a separable CMA-style evolution strategy (weighted recombination of the best
  ``mu`` of ``popsize`` candidates, cumulative step-size adaptation, a diagonal covariance learned from the
  selected steps). It minimises :func:`spectral_distance` (L1 of scaled spectrograms, the rows under the
  contract's ``low_bins`` weighted up: that is where a kick's body lives) plus a small prior term that keeps
  ``|z|`` on the shell where N(0, I) latents live, so the found latent still behaves under the knobs and
  "fresh" variations. It stops after ``steps`` generations or ``time_budget`` seconds, whichever comes
  first: with the shipped 128-latent model on one core that is about a minute (``popsize`` model runs per
  generation); the reported distance tells how close it got.

A hit that is unusable raises :class:`kickit.audio.AudioError` (one line naming the file); a model that
can do neither raises :class:`EncodeError`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kickit.audio import load_hit, peak_normalise
from kickit.modelfile import ModelFile

PEAK_DB = -1.0  # hits are peak-normalised like the training data before they are compared
LOW_WEIGHT = 2.0  # weight of the rows under low_bins (linear bins: fundamental, body) vs the pooled bands
PRIOR_WEIGHT = 0.05  # weight of (|z| / sqrt(d) - 1)^2
DEFAULT_STEPS = 60  # generations of the search
DEFAULT_POPSIZE = 24  # candidates per generation (one batched model run)
DEFAULT_TIME_BUDGET = 90.0  # seconds; the search returns its best so far when this runs out
INIT_SAMPLES = 64  # at most this many random N(0, I) latents (4 x popsize) tried first; the best starts the search


class EncodeError(ValueError):
    """The model cannot encode (the one-line message says why)."""


@dataclass
class EncodeInfo:
    method: str  # "encoder" or "search"
    distance: float  # spectral_distance of the model's output at z to the hit (lower is closer)
    start_distance: float | None = None  # search: distance of the best random latent it started from
    steps: int = 0  # search generations run
    evaluations: int = 0  # model runs (latents) spent
    seconds: float = 0.0
    stopped: str = ""  # "steps", "time" or "" (encoder)
    history: list[float] = field(default_factory=list)  # best distance after each generation

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "distance": self.distance, "start_distance": self.start_distance,
                "steps": self.steps, "evaluations": self.evaluations, "seconds": round(self.seconds, 3),
                "stopped": self.stopped}


def has_encoder(model: ModelFile) -> bool:
    return bool(model.can_encode)


def row_weights(model: ModelFile) -> np.ndarray:
    """Per-row weights (rows,) summing to 1: the linear low bins count ``LOW_WEIGHT`` times a pooled band."""
    c = model.contract
    w = np.ones(c.rows, dtype=np.float32)
    w[: c.low_bins] = LOW_WEIGHT
    return w / w.sum()


def spectral_distance(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted L1 between scaled spectrograms (..., 2, frames, rows) and a target (2, frames, rows) -> (...,)."""
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return (d.mean(axis=(-3, -2)) * weights).sum(axis=-1)


def target_spectrogram(model: ModelFile, audio: np.ndarray) -> np.ndarray:
    """A hit (2, n) at the contract rate -> the peak-normalised hit's scaled spectrogram (2, frames, rows)."""
    hit = peak_normalise(np.asarray(audio, dtype=np.float32), PEAK_DB)
    return model.contract.encode(hit).astype(np.float32)


def model_spectrograms(model: ModelFile, z: np.ndarray) -> np.ndarray:
    """The model's output for latents z (B, latent) as scaled spectrograms (B, 2, frames, rows)."""
    raw = model.run(np.asarray(z, dtype=np.float32))
    if model.output == "spec":
        return np.nan_to_num(raw, nan=-1.0, posinf=1.0, neginf=-1.0)
    from kickit.hits import finish  # audio models: compare the finished hit, as it will be heard

    audio = finish(raw, model.contract, peak_dbfs=PEAK_DB)
    return model.contract.encode(audio).astype(np.float32)


def prior(z: np.ndarray) -> np.ndarray:
    """(|z| / sqrt(d) - 1)^2 for latents (..., d): 0 on the N(0, I) shell."""
    d = z.shape[-1]
    return (np.linalg.norm(z, axis=-1) / np.sqrt(d) - 1.0) ** 2


def load_target(model: ModelFile, path: str | os.PathLike[str]) -> np.ndarray:
    """Read a hit file for ``model`` (raises AudioError naming the file) -> (2, n) float32."""
    return load_hit(path, model.contract)


def encode_hit(
    model: ModelFile,
    audio: np.ndarray,
    *,
    steps: int = DEFAULT_STEPS,
    popsize: int = DEFAULT_POPSIZE,
    time_budget: float = DEFAULT_TIME_BUDGET,
    seed: int = 0,
    search: bool | None = None,
) -> tuple[np.ndarray, EncodeInfo]:
    """A hit (2, n) at the model's contract rate -> (z (latent,) float32, info).

    ``search``: None = the encoder when the model has one, else search; True = always search; False = the
    encoder only (raises :class:`EncodeError` for a model without one).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != model.contract.channels:
        raise ValueError(f"hit must be ({model.contract.channels}, samples), got {audio.shape}")
    target = target_spectrogram(model, audio)
    weights = row_weights(model)
    t0 = time.perf_counter()
    if search is False or (search is None and has_encoder(model)):
        if not has_encoder(model):
            raise EncodeError(f"{model.path.name}: model family {model.family!r} has no encoder "
                              "(use the latent search: kickit encode without --encoder-only)")
        z = np.asarray(model.encode_scaled(target[None]), dtype=np.float32).reshape(-1)[: model.latent_dim]
        if z.shape != (model.latent_dim,) or not np.all(np.isfinite(z)):
            raise EncodeError(f"{model.path.name}: the encoder returned an unusable latent {z.shape}")
        dist = float(spectral_distance(model_spectrograms(model, z[None]), target, weights)[0])
        return z, EncodeInfo("encoder", dist, evaluations=1, seconds=time.perf_counter() - t0)
    return search_latent(model, target, steps=steps, popsize=popsize, time_budget=time_budget, seed=seed)


def search_latent(model: ModelFile, target: np.ndarray, *, steps: int = DEFAULT_STEPS,
                  popsize: int = DEFAULT_POPSIZE, time_budget: float = DEFAULT_TIME_BUDGET,
                  seed: int = 0) -> tuple[np.ndarray, EncodeInfo]:
    """The latent whose output is closest to a scaled spectrogram ``target`` (2, frames, rows), by search."""
    t0 = time.perf_counter()
    weights = row_weights(model)
    if steps < 0 or popsize < 4 or time_budget <= 0:
        raise ValueError(f"search needs steps >= 0, popsize >= 4 and a positive time budget "
                         f"(got {steps}, {popsize}, {time_budget})")
    d = model.latent_dim
    rng = np.random.default_rng(seed)

    def cost(zs: np.ndarray) -> np.ndarray:
        return spectral_distance(model_spectrograms(model, zs), target, weights) + PRIOR_WEIGHT * prior(zs)

    # start: the best of a batch of prior samples (and the zero latent)
    n_init = min(INIT_SAMPLES, 4 * popsize)
    init = np.concatenate([np.zeros((1, d), np.float32),
                           rng.standard_normal((n_init - 1, d)).astype(np.float32)])
    f = np.concatenate([cost(init[i:i + popsize]) for i in range(0, len(init), popsize)])
    evals = len(init)
    b = int(np.argmin(f))
    best_z, best_f = init[b].copy(), float(f[b])
    start = float(spectral_distance(model_spectrograms(model, best_z[None]), target, weights)[0])
    evals += 1

    # separable CMA-ES-style search around it
    mu = popsize // 2
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mu_eff = 1.0 / float((w ** 2).sum())
    c_sigma = (mu_eff + 2.0) / (d + mu_eff + 5.0)
    d_sigma = 1.0 + 2.0 * max(0.0, np.sqrt((mu_eff - 1.0) / (d + 1.0)) - 1.0) + c_sigma
    c_mu = min(1.0, mu_eff / (d + 2.0) ** 1.5 * (d + 2.0) / 3.0)  # separable rank-mu learning rate
    chi_n = np.sqrt(d) * (1.0 - 1.0 / (4.0 * d) + 1.0 / (21.0 * d * d))
    mean = best_z.astype(np.float64)
    sigma = 0.5
    diag = np.ones(d)
    p_sigma = np.zeros(d)
    history: list[float] = []
    stopped = "steps"
    done = 0
    for _gen in range(steps):
        if time.perf_counter() - t0 > time_budget:
            stopped = "time"
            break
        y = rng.standard_normal((popsize, d)) * np.sqrt(diag)
        zs = (mean + sigma * y).astype(np.float32)
        f = cost(zs)
        evals += popsize
        order = np.argsort(f)
        if float(f[order[0]]) < best_f:
            best_f, best_z = float(f[order[0]]), zs[order[0]].copy()
        sel = y[order[:mu]]
        step = w @ sel
        mean = mean + sigma * step
        p_sigma = (1.0 - c_sigma) * p_sigma + np.sqrt(c_sigma * (2.0 - c_sigma) * mu_eff) * step / np.sqrt(diag)
        sigma *= float(np.exp((c_sigma / d_sigma) * (np.linalg.norm(p_sigma) / chi_n - 1.0)))
        sigma = float(np.clip(sigma, 1e-4, 3.0))
        diag = (1.0 - c_mu) * diag + c_mu * (w @ (sel ** 2))
        history.append(best_f)
        done += 1
    dist = float(spectral_distance(model_spectrograms(model, best_z[None]), target, weights)[0])
    info = EncodeInfo("search", dist, start_distance=start, steps=done, evaluations=evals + 1,
                      seconds=time.perf_counter() - t0, stopped=stopped, history=history)
    return best_z.astype(np.float32), info


def encode_file(model: ModelFile, path: str | os.PathLike[str], **kw: Any) -> tuple[np.ndarray, EncodeInfo]:
    """:func:`encode_hit` of a hit file (AudioError names the file when it cannot be used)."""
    return encode_hit(model, load_target(model, path), **kw)
