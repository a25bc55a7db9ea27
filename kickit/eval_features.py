"""Per-hit features for ``kickit eval``, computed a batch at a time (vectorised numpy).

* descriptors and kick checks: from :mod:`kickit.descriptors` (the one implementation of both);
* memorisation features: the contract's scaled log-magnitude (the model's own representation), averaged over
  groups of :data:`SPEC_POOL` frames (~12 ms at the default contract), shifted so silence is 0, flattened and
  scaled to unit length (distances between them are cosine distances);
* envelopes: smoothed RMS level per hop in dB re the hit's loudest frame, for the envelope figure;
* mid spectrograms (scaled log-magnitude averaged over the channels) of a few hits, for the figure grid.
"""

from __future__ import annotations

import inspect
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from kickit.spectral import SpectralContract

log = logging.getLogger(__name__)

# Hits per vectorised feature computation: the STFT of a chunk of 4 hits (~34 MB of frames) stays cheap to
# allocate; chunks of 32 spend more time in the kernel (page faults) than in the FFT.
CHUNK = 4
SPEC_POOL = 4  # frames averaged per memorisation-feature column
ENVELOPE_FLOOR_DB = -80.0
ENVELOPE_HOPS = 4  # RMS window of the envelope figure, in hops (~12 ms at the default contract)


@dataclass
class DescriptorBackend:
    """The descriptor vector and kick checks used by the evaluation, with their names.

    The default is :mod:`kickit.descriptors` (``VECTOR_NAMES``, ``CHECK_NAMES``); the descriptors of a batch
    are computed once and shared by the vector and the checks.
    """

    names: list[str]
    check_names: list[str]

    def compute(self, audio: np.ndarray, contract: SpectralContract) -> tuple[np.ndarray, np.ndarray]:
        """(descriptor vectors (B, names), check results (B, check_names) bool) of hits (B, channels, n)."""
        from kickit import descriptors

        desc = descriptors.describe(audio, contract)
        if "desc" in inspect.signature(descriptors.descriptor_vector).parameters:
            vectors = descriptors.descriptor_vector(audio, contract, desc=desc)
        else:  # pragma: no cover - older descriptors module
            vectors = descriptors.descriptor_vector(audio, contract)
        checks = descriptors.kick_checks(audio, contract, desc)
        return (np.asarray(vectors, dtype=np.float64),
                np.stack([np.asarray(checks[n], dtype=bool) for n in self.check_names], axis=-1))


def default_backend(instrument: str | None = None) -> DescriptorBackend:
    """The descriptors and the checks that apply to ``instrument`` (default: kick, every kick check)."""
    from kickit import descriptors

    return DescriptorBackend(list(descriptors.VECTOR_NAMES), list(descriptors.check_names_for(instrument)))


def memorisation_features(scaled: np.ndarray, pool: int = SPEC_POOL) -> np.ndarray:
    """Scaled log-magnitude (B, channels, frames, rows) -> (B, features) float32 unit rows.

    Frames are averaged in groups of ``pool``; values are shifted from [-1, 1] to [0, 2] so the masked floor
    (silence) is 0; each hit's row is scaled to unit length. The Euclidean distance of two rows then measures
    the angle between the two hits' log-spectral energy patterns (``|u - v|^2 / 2 = 1 - cos``), and the
    silence two hits share counts for nothing - with a plain RMS difference, two short hits would be close just
    because both are mostly silent.
    """
    b, ch, frames, rows = scaled.shape
    keep = frames - frames % pool
    pooled = scaled[:, :, :keep, :].reshape(b, ch, keep // pool, pool, rows).mean(axis=3).reshape(b, -1)
    energy = np.asarray(pooled, dtype=np.float64) + 1.0
    norm = np.linalg.norm(energy, axis=1, keepdims=True)
    return (energy / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def envelopes_db(audio: np.ndarray, contract: SpectralContract, window_hops: int = ENVELOPE_HOPS) -> np.ndarray:
    """Smoothed level (B, frames) of (B, channels, n) hits in dB re each hit's loudest frame, floored.

    Frame t is the RMS (over both channels) of the ``window_hops * hop`` samples starting at ``t * hop``.
    """
    x = np.asarray(audio, dtype=np.float64)
    p = (x * x).mean(axis=1)
    b, n = p.shape
    frames = n // contract.hop
    w = window_hops * contract.hop
    c = np.concatenate([np.zeros((b, 1)), np.cumsum(p, axis=1)], axis=1)
    starts = np.arange(frames) * contract.hop
    ends = np.minimum(starts + w, n)
    rms = np.sqrt(np.maximum(c[:, ends] - c[:, starts], 0.0) / (ends - starts))
    top = np.maximum(rms.max(axis=1, keepdims=True), 1e-12)
    return np.maximum(20.0 * np.log10(np.maximum(rms / top, 1e-12)), ENVELOPE_FLOOR_DB).astype(np.float32)


@dataclass
class FeatureAccumulator:
    """Collects the features of one set of hits batch by batch; keeps the audio of the first ``keep`` hits."""

    contract: SpectralContract
    backend: DescriptorBackend
    keep: int = 16
    want_spectra: bool = True
    descriptors: list[np.ndarray] = field(default_factory=list)
    checks: list[np.ndarray] = field(default_factory=list)
    spectra: list[np.ndarray] = field(default_factory=list)
    envelopes: list[np.ndarray] = field(default_factory=list)
    kept_audio: list[np.ndarray] = field(default_factory=list)
    kept_mid: list[np.ndarray] = field(default_factory=list)

    def add(self, audio: np.ndarray, pool: Executor | None = None) -> None:
        """Add the features of hits (B, channels, n), computed in chunks of :data:`CHUNK` hits (on ``pool``'s
        threads when given: large array operations release the GIL; numpy's FFTs do not)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 3 or audio.shape[1:] != (self.contract.channels, self.contract.n_samples):
            raise ValueError(f"hits of shape {audio.shape[1:]}, expected "
                             f"{(self.contract.channels, self.contract.n_samples)}")
        start = len(self)
        jobs = [(audio[i:i + CHUNK], max(0, min(CHUNK, self.keep - start - i)))
                for i in range(0, audio.shape[0], CHUNK)]
        results = pool.map(lambda job: self._compute(*job), jobs) if pool else (self._compute(*j) for j in jobs)
        for r in results:
            self.descriptors.append(r["descriptors"])
            self.checks.append(r["checks"])
            self.envelopes.append(r["envelopes"])
            if "spectra" in r:
                self.spectra.append(r["spectra"])
            if "audio" in r:
                self.kept_audio.append(r["audio"])
                self.kept_mid.append(r["mid"])

    def _compute(self, audio: np.ndarray, keep: int) -> dict[str, np.ndarray]:
        """The features of one chunk (no shared state: safe on any thread); keeps its first ``keep`` hits."""
        d, checks = self.backend.compute(audio, self.contract)
        if d.shape != (audio.shape[0], len(self.backend.names)):
            raise ValueError(f"descriptor backend returned shape {d.shape}, expected "
                             f"{(audio.shape[0], len(self.backend.names))}")
        if checks.shape != (audio.shape[0], len(self.backend.check_names)):
            raise ValueError(f"descriptor backend returned checks of shape {checks.shape}")
        bad = ~np.all(np.isfinite(d), axis=1)
        if np.any(bad):  # a broken hit must not break the statistics; it already fails the checks
            log.warning("%d hits have non-finite descriptors; those values are set to 0", int(bad.sum()))
            d = np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
        out = {"descriptors": d, "checks": checks, "envelopes": envelopes_db(audio, self.contract)}
        if self.want_spectra or keep > 0:
            scaled = self.contract.encode(audio)
            if self.want_spectra:
                out["spectra"] = memorisation_features(scaled)
            if keep > 0:
                out["audio"] = audio[:keep].copy()
                out["mid"] = scaled[:keep].mean(axis=1)
        return out

    def __len__(self) -> int:
        return sum(len(d) for d in self.descriptors)

    def arrays(self) -> dict[str, np.ndarray | None]:
        def cat(parts: list[np.ndarray]) -> np.ndarray | None:
            return np.concatenate(parts) if parts else None

        return {
            "descriptors": cat(self.descriptors),
            "checks": cat(self.checks),
            "spectra": cat(self.spectra),
            "envelopes": cat(self.envelopes),
            "audio": cat(self.kept_audio),
            "mid": cat(self.kept_mid),
        }
