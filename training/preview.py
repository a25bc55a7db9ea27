"""Training previews: a PNG grid of real vs generated spectrograms and WAVs of generated hits.

The grid (StereoSampleGAN's figure): top row real hits, bottom row generated hits, each panel the mid
(mean of the channels) scaled log-magnitude, time left to right, frequency rows bottom to top. The WAVs go
through the same path as the bridge: :func:`kickit.reconstruction.reconstruct_scaled` then
:func:`kickit.hits.finish` (DC removal, fade-out, peak normalisation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kickit.audio import write_wav
from kickit.hits import finish
from kickit.reconstruction import reconstruct_scaled
from kickit.spectral import SpectralContract


def spectrogram_grid(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike[str], title: str = "",
                     raw: np.ndarray | None = None) -> Path:
    """Write a PNG: ``real`` and ``fake`` (n, channels, frames, rows) scaled spectrograms, one row each (and
    ``raw``, the non-EMA generator's hits, as a third row when given)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [("real", real), ("generated", fake)] + ([("raw G", raw)] if raw is not None else [])
    n = max(len(b) for _, b in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n + 0.6, 1.8 * len(rows)), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(batch):
                mid = np.asarray(batch[i], dtype=np.float32).mean(axis=0)  # (frames, rows)
                ax.imshow(mid.T, origin="lower", aspect="auto", vmin=-1.0, vmax=1.0, cmap="magma",
                          interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0:
                ax.set_ylabel(label)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, p)
    return p


def write_preview(out_dir: str | os.PathLike[str], step: int, real: np.ndarray, fake: np.ndarray,
                  contract: SpectralContract, n_wavs: int = 8, raw: np.ndarray | None = None) -> list[Path]:
    """Grid PNG and ``n_wavs`` WAVs of the generated (EMA) hits into ``out_dir/previews/step-NNNNNNN*``."""
    base = Path(out_dir) / "previews"
    stem = f"step-{step:07d}"
    title = f"step {step}: real (top) / generated (EMA)" + (" / raw generator" if raw is not None else "")
    written = [spectrogram_grid(real, fake, base / f"{stem}.png", title=title, raw=raw)]
    if n_wavs > 0:
        audio = finish(reconstruct_scaled(np.asarray(fake[:n_wavs], dtype=np.float32), contract), contract)
        for i, hit in enumerate(audio):
            written.append(write_wav(base / stem / f"hit-{i:02d}.wav", hit, contract.sample_rate))
    return written
