"""Where hits come from: a loaded model file rendered at the output device's rate.

:class:`ModelSource` wraps :func:`kickit.modelfile.load_model` + :class:`kickit.hits.HitRenderer` and
resamples with soxr when the device rate differs from the model contract's. Hits come out float32 (B, 2, n),
C-contiguous and read-only, ready to be handed to the audio callback by reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from kickit.audio import resample
from kickit.modelfile import Knob, ModelFile, load_model


def same_model(source: object, weights_hash: str) -> bool:
    """Whether ``weights_hash`` names the model ``source`` plays: its own file, or an earlier export of the same
    generator that this file re-exports (``kickit export --keep-knobs``, parity-checked; the training summary's
    ``reexport_of``), which plays the same kicks."""
    return weights_hash == getattr(source, "weights_hash", None) or weights_hash in getattr(source, "reexport_of", ())


class HitSource(Protocol):
    name: str
    weights_hash: str
    latent_dim: int
    knobs: list[Knob]
    rate: int

    def render(self, z: np.ndarray) -> np.ndarray: ...

    def apply_knobs(self, z: np.ndarray, values: list[float]) -> np.ndarray: ...


def freeze(hits: np.ndarray) -> np.ndarray:
    """C-contiguous float32 copy marked read-only (safe to share with the audio callback)."""
    out = np.array(hits, dtype=np.float32, order="C", copy=True)
    out.setflags(write=False)
    return out


class ModelSource:
    """Hits of a model file at ``rate`` Hz."""

    def __init__(self, model: ModelFile, rate: int | None = None, method: str | None = None) -> None:
        from kickit.hits import HitRenderer  # the reconstruction stack, only when a model is used

        self.model = model
        self.name = model.path.name
        self.path = model.path
        self.weights_hash = model.weights_hash
        self.reexport_of = model.reexport_of  # earlier exports of the same generator (presets made with them)
        self.latent_dim = model.latent_dim
        self.knobs = list(model.knobs)
        self.model_rate = model.contract.sample_rate
        self.rate = int(rate or self.model_rate)
        self.renderer = HitRenderer(model) if method is None else HitRenderer(model, method)

    @classmethod
    def open(cls, path: str | os.PathLike[str], rate: int | None = None) -> ModelSource:
        """Load and validate a model file (raises :class:`kickit.modelfile.ModelError` naming the file)."""
        return cls(load_model(Path(path), threads=1), rate)

    def knob_names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def apply_knobs(self, z: np.ndarray, values: list[float]) -> np.ndarray:
        knobs = self.knobs
        return self.model.apply_knobs(z, list(values[: len(knobs)]) + [0.0] * (len(knobs) - len(values)))

    def render(self, z: np.ndarray) -> np.ndarray:
        # one latent at a time: onnxruntime's results depend (in the last bits) on the batch size, and a hit
        # must be bit-identical however it was batched (presets, kickit render == live)
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.latent_dim)
        hits = np.concatenate([self.renderer.render(z[i:i + 1]) for i in range(len(z))])
        if self.rate != self.model_rate:
            hits = np.stack([resample(h, self.model_rate, self.rate) for h in hits])
        return hits
