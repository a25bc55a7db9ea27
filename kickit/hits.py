"""Latents -> finished stereo hits: model inference, phase reconstruction (spec models) and post-processing.

The one rendering path shared by the bridge, ``kickit generate``, ``kickit render`` and ``kickit eval``.
Deterministic: the same latents give bit-identical audio (seeded/no randomness anywhere, fixed thread count).

Post-processing, in order, per hit:

1. DC removal: each channel's mean is subtracted (the kick check "no DC" measures exactly this).
2. Fade-out: the last ``fade_ms`` milliseconds get a raised-cosine fade, so a hit cut at the contract length
   never ends in a click.
3. Peak normalisation: both channels scaled by one gain so the louder one peaks at ``peak_dbfs`` (the stereo
   balance is kept; a silent hit stays silent).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from kickit import blas, reconstruction
from kickit.modelfile import ModelFile
from kickit.spectral import SpectralContract

PEAK_DBFS = -1.0
FADE_MS = 10.0
DEFAULT_METHOD: str = reconstruction.DEFAULT_METHOD


def finish(audio: np.ndarray, contract: SpectralContract, *, peak_dbfs: float = PEAK_DBFS,
           fade_ms: float = FADE_MS) -> np.ndarray:
    """Post-process hits (..., channels, n): DC removal, fade-out, peak normalisation. Returns float32."""
    x = np.array(audio, dtype=np.float32, copy=True)
    if x.size and not (np.isfinite(x.max()) and np.isfinite(x.min())):  # max/min propagate NaN: one check
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    x -= x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    fade = min(n, int(round(fade_ms * 1e-3 * contract.sample_rate)))
    if fade > 0:
        x[..., n - fade:] *= _fade(fade)
    peak = np.maximum(x.max(axis=(-2, -1), keepdims=True), -x.min(axis=(-2, -1), keepdims=True))
    target = np.float32(10.0 ** (peak_dbfs / 20.0))
    gain = np.where(peak > 1e-9, target / np.maximum(peak, np.float32(1e-9)), np.float32(0.0))
    x *= gain
    return x


@lru_cache(maxsize=8)
def _fade(n: int) -> np.ndarray:
    """Raised-cosine fade-out of n samples, float32 (read-only)."""
    ramp = (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float64))).astype(np.float32)
    ramp.setflags(write=False)
    return ramp


class HitRenderer:
    """``render(z (B, latent)) -> float32 (B, channels, n_samples)`` for a loaded model file."""

    def __init__(
        self,
        model: ModelFile,
        method: str = DEFAULT_METHOD,
        *,
        iterations: int | None = None,
        peak_dbfs: float = PEAK_DBFS,
        fade_ms: float = FADE_MS,
        workers: int = 1,
    ) -> None:
        """``workers`` > 1: a batch pipelines inference (onnxruntime releases the GIL) with reconstruction on
        that many threads. Measured on 2 cores, numpy's FFTs hold the GIL, so the reconstruction threads overlap
        little (docs/benchmarks.md, render and recon); the bridge keeps 1."""
        if method not in reconstruction.METHODS:
            raise ValueError(f"unknown reconstruction method {method!r} (known: {', '.join(reconstruction.METHODS)})")
        blas.single_threaded()  # see kickit.blas: a multi-threaded BLAS made decoding 30x slower on 2 cores
        self.model = model
        self.contract = model.contract
        self.method = method
        self.iterations = iterations
        self.peak_dbfs = peak_dbfs
        self.fade_ms = fade_ms
        self.workers = max(1, int(workers))
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the reconstruction threads (only started when workers > 1)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> HitRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def render(self, z: np.ndarray) -> np.ndarray:
        """Generate finished hits for latents z (B, latent) (or one latent (latent,) -> (1, 2, n)).

        With ``workers`` > 1 a batch of a spectrogram model is pipelined: this thread runs inference hit by
        hit (onnxruntime releases the GIL) while the pool reconstructs the hits already inferred."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if self.workers == 1 or self.model.output != "spec" or len(z) <= 1:
            return self.from_output(self.model.run(z))
        pool = self._get_pool()
        futures = [pool.submit(self._one, self.model.run(z[i:i + 1])[0]) for i in range(len(z))]
        return np.stack([f.result() for f in futures])

    def render_knobs(self, z: np.ndarray, values: Sequence[float]) -> np.ndarray:
        """Hits for latents z moved by the model's knobs set to ``values`` (each in [-1, 1])."""
        return self.render(self.model.apply_knobs(z, values))

    def from_output(self, raw: np.ndarray) -> np.ndarray:
        """Finished hits from raw model output (``spec`` (B, 2, frames, rows) or ``audio`` (B, 2, n))."""
        raw = np.asarray(raw, dtype=np.float32)
        n = len(raw)
        if self.model.output != "spec" or n == 0:
            return render_output(raw, self.contract, self.model.output, **self._kw())
        # One hit at a time: faster than one big batch (the working set stays in cache) and each hit's audio
        # is independent of what else is in the batch.
        if self.workers == 1 or n == 1:
            return np.stack([self._one(raw[i]) for i in range(n)])
        return np.stack(list(self._get_pool().map(lambda i: self._one(raw[i]), range(n))))

    def _kw(self) -> dict[str, object]:
        return {"method": self.method, "iterations": self.iterations, "peak_dbfs": self.peak_dbfs,
                "fade_ms": self.fade_ms}

    def _one(self, raw: np.ndarray) -> np.ndarray:
        return render_output(raw[None], self.contract, "spec", **self._kw())[0]  # type: ignore[arg-type]

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kickit-recon")
        return self._pool


def render_output(
    raw: np.ndarray,
    contract: SpectralContract,
    output: str,
    *,
    method: str = DEFAULT_METHOD,
    iterations: int | None = None,
    peak_dbfs: float = PEAK_DBFS,
    fade_ms: float = FADE_MS,
    threads: int = 1,
) -> np.ndarray:
    """Raw generator output -> finished hits; also used by the exporter on torch outputs (same path).
    ``threads``: threads for the channels' final synthesis (bit-identical to 1)."""
    blas.single_threaded()
    raw = np.asarray(raw, dtype=np.float32)
    if not np.all(np.isfinite(raw)):  # a model may misbehave on some latent: silence there, never a crash
        raw = np.nan_to_num(raw, nan=-1.0 if output == "spec" else 0.0, posinf=1.0, neginf=-1.0)
    if output == "spec":
        # one hit at a time: each is decoded on its own support (a hit is the same alone or in a batch)
        audio = np.zeros((*raw.shape[:-2], contract.n_samples), dtype=np.float32)
        for src, dst in zip(raw.reshape(-1, *raw.shape[-3:]), audio.reshape(-1, *audio.shape[-2:]), strict=True):
            dst[...] = reconstruction.reconstruct(contract.decode_magnitude(src), contract, method=method,
                                                  iterations=iterations, threads=threads, validate=False)
    elif output == "audio":
        audio = raw
    else:
        raise ValueError(f"unknown model output kind {output!r}")
    return finish(audio, contract, peak_dbfs=peak_dbfs, fade_ms=fade_ms)
