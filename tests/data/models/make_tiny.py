"""Regenerate tiny-spec.onnx, the small real model file the tests (and the bridge's tests) load.

    .venv/bin/python tests/data/models/make_tiny.py

An untrained (seeded) generator of the training ``tiny`` config at the default spectral contract, its output
base map initialised to the mean spectrogram of a few synthetic kicks (as training initialises it from the
data), exported by the real exporter: parity self-test, full metadata, 8 measured knobs. The file exercises
every part of the format and the rendering path, renders kick-shaped hits, and stays under 1 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from kickit.export.exporter import export_untrained

from kickit.modelfile import load_model
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

OUT = Path(__file__).resolve().parent / "tiny-spec.onnx"


def synthetic_kicks(contract: SpectralContract = DEFAULT_CONTRACT, count: int = 4) -> np.ndarray:
    """Sine kicks with a pitch sweep (150 Hz -> 45-65 Hz), exponential decay and a short click, stereo."""
    rng = np.random.default_rng(1)
    t = np.arange(contract.n_samples) / contract.sample_rate
    out = np.zeros((count, 2, contract.n_samples), dtype=np.float32)
    for i in range(count):
        f_end = rng.uniform(45, 65)
        freq = f_end + (150.0 - f_end) * np.exp(-t / 0.03)
        phase = 2 * np.pi * np.cumsum(freq) / contract.sample_rate
        body = np.sin(phase) * np.exp(-t / rng.uniform(0.15, 0.3))
        click = rng.standard_normal((2, len(t))) * np.exp(-t / 0.002) * 0.3
        out[i] = 0.8 * body[None, :] + click
    return out


def main() -> int:
    torch.set_num_threads(2)
    path = export_untrained("tiny", OUT, seed=0, knobs=True, base_audio=synthetic_kicks())
    m = load_model(path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB), latent {m.latent_dim}, "
          f"knobs: {', '.join(k.name for k in m.knobs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
