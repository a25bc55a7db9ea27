"""The bridge plays the other families' model files: the waveform GAN (output ``audio``, no reconstruction) and
the spectrogram VAE's decoder, through the real engine (pre-rendering workers, the audio callback's mixer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.source import ModelSource

from kickit.hits import finish

MODELS = Path(__file__).resolve().parent / "data" / "models"
TIMEOUT = 120.0


def _play(engine: Engine, blocks: int, frames: int = 128) -> np.ndarray:
    out = np.zeros((blocks * frames, 2), dtype=np.float32)
    for b in range(blocks):
        engine.process(out[b * frames:(b + 1) * frames])
    return out.T


@pytest.mark.parametrize("name", ["tiny-wave.onnx", "tiny-vae.onnx"])
def test_engine_plays_family_models(name: str) -> None:
    source = ModelSource.open(MODELS / name)
    engine = Engine(source, EngineConfig(seed=3))
    engine.start()
    try:
        assert engine.wait_ready(TIMEOUT)
        hit = engine.ready[1][0]
        n = source.model.contract.n_samples
        assert hit.shape == (2, n) and np.all(np.isfinite(hit)) and np.abs(hit).max() > 0.1
        z = source.apply_knobs(engine.pads[1].latent, engine.pads[1].knobs)
        if source.model.output == "audio":  # the generated audio itself, only post-processed
            np.testing.assert_array_equal(hit, finish(source.model.run(z[None]), source.model.contract)[0])
        assert engine.note_on(1, 1.0)
        out = _play(engine, n // 128 + 2)
        assert np.array_equal(out[:, :n], hit) and np.all(out[:, n:] == 0)
    finally:
        engine.stop()
