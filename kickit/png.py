"""A small PNG writer and hit preview images, numpy + zlib only.

``kickit generate`` runs from a plain install, where matplotlib is not a dependency; a 30-line PNG encoder
(8-bit RGB, one IDAT chunk, filter type 0) gives the same picture everywhere without adding a dependency.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from kickit.spectral import SpectralContract

# A perceptually ordered dark-to-bright colour map (control points, interpolated linearly).
_CMAP = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]], dtype=np.float64,
)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(encode_png(rgb))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def colormap(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (..., 3)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64)), 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(np.floor(x).astype(np.int64), len(_CMAP) - 2)
    f = (x - i)[..., None]
    return np.round(_CMAP[i] * (1.0 - f) + _CMAP[i + 1] * f).astype(np.uint8)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array."""
    ri = (np.arange(h) * a.shape[0] // h).clip(0, a.shape[0] - 1)
    ci = (np.arange(w) * a.shape[1] // w).clip(0, a.shape[1] - 1)
    return a[ri][:, ci]


def hit_tile(audio: np.ndarray, contract: SpectralContract, size: int = 160) -> np.ndarray:
    """One hit (2, n) as an RGB tile: waveform (L red, R cyan) above the mid spectrogram (low rows at the bottom)."""
    wave_h = size // 3
    tile = np.full((wave_h + size, size, 3), 16, dtype=np.uint8)
    # waveform: peak envelope per pixel column, both channels
    n = audio.shape[-1]
    cols = np.array_split(np.arange(n), size)
    for ch, colour in ((0, (235, 80, 80)), (1, (80, 220, 235))):
        for x, idx in enumerate(cols):
            seg = audio[ch, idx]
            lo, hi = float(seg.min()), float(seg.max())
            y0 = int(round((1.0 - hi) * 0.5 * (wave_h - 1)))
            y1 = int(round((1.0 - lo) * 0.5 * (wave_h - 1)))
            tile[max(0, y0):min(wave_h, y1 + 1), x] = colour
    # spectrogram of the mid signal in the contract's scaled dB rows: time across, frequency up
    mid = np.broadcast_to(audio.mean(axis=0, keepdims=True), (contract.channels, n)).astype(np.float32)
    spec = contract.encode(mid)[0]  # (frames, rows) in [-1, 1]
    img = _resize(spec.T[::-1], size, size)
    tile[wave_h:] = colormap((img + 1.0) / 2.0)
    return tile


def preview_grid(hits: np.ndarray, contract: SpectralContract, columns: int = 4, size: int = 160,
                 gap: int = 4) -> np.ndarray:
    """Hits (B, 2, n) as one RGB image: a grid of :func:`hit_tile`."""
    tiles = [hit_tile(h, contract, size) for h in hits]
    if not tiles:
        raise ValueError("no hits to preview")
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    th, tw, _ = tiles[0].shape
    out = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap, 3), 40, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        out[y:y + th, x:x + tw] = t
    return out
