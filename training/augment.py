"""Augmentation for small hit datasets (numpy only; runs on batches of contract-length stereo audio).

Each hit independently, each transform with probability ``cfg.probability``:

* pitch: +-``pitch_semitones`` by resampling (playback-speed change, as a sampler does: the fundamental moves by
  ``2 ** (s / 12)`` and the decay shortens/lengthens with it), then cut/padded back to the contract length;
* gain: +-``gain_db`` (never pushed over full scale);
* time shift: a delay of up to ``shift_ms`` (the onset stays intact; a kick is never cut before its attack);
* stereo width: the side signal scaled by ``1 +- width``.

A share ``procedural_share`` of the hits is replaced by procedural kicks (:mod:`kickit.synth`) for variety.
Every random draw comes from the ``np.random.Generator`` passed in, in a fixed order: the same generator state
gives the same batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kickit.audio import FADE_SECONDS, fit_length
from kickit.spectral import SpectralContract
from kickit.synth import procedural_kick


@dataclass
class AugmentConfig:
    probability: float = 0.5  # chance of each transform, per hit
    pitch_semitones: float = 2.0
    gain_db: float = 3.0
    shift_ms: float = 3.0
    width: float = 0.3
    procedural_share: float = 0.0  # share of hits replaced by procedural kicks

    def __post_init__(self) -> None:
        for name in ("probability", "procedural_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {v}")
        for name in ("pitch_semitones", "gain_db", "shift_ms", "width"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.width > 1.0:
            raise ValueError(f"AugmentConfig.width must be <= 1, got {self.width}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def pitch_shift(audio: np.ndarray, semitones: float, contract: SpectralContract) -> np.ndarray:
    """Resample (2, n) audio so it plays ``semitones`` higher at the same rate; cut (with a fade) or pad to n."""
    if semitones == 0.0:
        return audio
    import soxr

    n = audio.shape[-1]
    ratio = 2.0 ** (semitones / 12.0)
    # reading the hit ``ratio`` times faster = resampling from rate*ratio down to rate
    out = soxr.resample(np.ascontiguousarray(audio.T, dtype=np.float32), contract.sample_rate * ratio,
                        contract.sample_rate, quality="HQ")
    out = np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T
    return fit_length(out, n, contract.sample_rate, FADE_SECONDS)


def delay(audio: np.ndarray, samples: int) -> np.ndarray:
    """Shift later by ``samples`` (zeros in front, the end cut with a short fade)."""
    if samples <= 0:
        return audio
    n = audio.shape[-1]
    out = np.zeros_like(audio)
    out[:, samples:] = audio[:, : n - samples]
    k = min(n, 64)
    out[:, n - k:] *= np.linspace(1.0, 0.0, k, dtype=audio.dtype)
    return out


def set_width(audio: np.ndarray, factor: float) -> np.ndarray:
    """Scale the side (L - R) signal by ``factor``, keeping the mid."""
    mid = 0.5 * (audio[0] + audio[1])
    side = 0.5 * (audio[0] - audio[1]) * factor
    return np.stack([mid + side, mid - side]).astype(audio.dtype, copy=False)


class Augmenter:
    """``Augmenter(cfg, contract)(audio (B, 2, n), rng) -> (B, 2, n)`` float32; see the module docstring."""

    def __init__(self, cfg: AugmentConfig, contract: SpectralContract) -> None:
        self.cfg = cfg
        self.contract = contract

    def draw(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per-hit parameters (all drawn up front, in a fixed order): zeros/ones where a transform is off."""
        c, p = self.cfg, self.cfg.probability
        on = rng.random((4, batch)) < p
        return {
            "procedural": rng.random(batch) < c.procedural_share,
            "semitones": np.where(on[0], rng.uniform(-c.pitch_semitones, c.pitch_semitones, batch), 0.0),
            "gain_db": np.where(on[1], rng.uniform(-c.gain_db, c.gain_db, batch), 0.0),
            "delay": np.where(on[2], rng.integers(0, int(c.shift_ms * 1e-3 * self.contract.sample_rate) + 1,
                                                  batch), 0),
            "width": np.where(on[3], rng.uniform(1.0 - c.width, 1.0 + c.width, batch), 1.0),
        }

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(audio, dtype=np.float32)
        want = (self.contract.channels, self.contract.n_samples)
        if x.ndim != 3 or x.shape[1:] != want:
            raise ValueError(f"Augmenter: expected audio (B, {want[0]}, {want[1]}), got {x.shape}")
        params = self.draw(x.shape[0], rng)
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            hit = procedural_kick(rng, self.contract) if params["procedural"][i] else x[i]
            hit = pitch_shift(hit, float(params["semitones"][i]), self.contract)
            hit = delay(hit, int(params["delay"][i]))
            if params["width"][i] != 1.0:
                hit = set_width(hit, float(params["width"][i]))
            if params["gain_db"][i] != 0.0:
                hit = hit * np.float32(10.0 ** (params["gain_db"][i] / 20.0))
            peak = float(np.max(np.abs(hit)))
            if peak > 1.0:
                hit = hit / np.float32(peak)
            out[i] = hit
        return out
