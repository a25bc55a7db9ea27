"""The spectral contract in torch: encode audio batches on the device, unscale model outputs.

A port of :meth:`kickit.spectral.SpectralContract.encode` (same framing, window, pooling and scaling; every
constant and table is read from the contract instance, never repeated here). Agreement with the numpy
reference is tested to 1e-5.
"""

from __future__ import annotations

import numpy as np
import torch

from kickit.spectral import SpectralContract


class TorchSpectral:
    """Torch tensors of one contract's tables on one device/dtype."""

    def __init__(self, contract: SpectralContract, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        c = contract
        self.contract = c
        self.device = torch.device(device)
        self.dtype = dtype
        self.window = torch.tensor(np.array(c.window_array()), dtype=dtype, device=self.device)
        self.row_hz = torch.tensor(np.array(c.row_frequencies()), dtype=dtype, device=self.device)
        # Band pooling as a (high bins, bands) matrix of 1/width weights: power @ M = mean power per band.
        edges = c.band_edges()
        n_high = c.n_bins - c.low_bins
        m = np.zeros((n_high, c.bands))
        for k in range(c.bands):
            m[edges[k] - c.low_bins: edges[k + 1] - c.low_bins, k] = 1.0 / (edges[k + 1] - edges[k])
        self.pool_matrix = torch.as_tensor(m, dtype=dtype, device=self.device)

    # ----- STFT ---------------------------------------------------------------------------------------
    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex STFT (..., frames, n_bins) of audio (..., n_samples), the contract's framing."""
        c = self.contract
        if audio.shape[-1] != c.n_samples:
            raise ValueError(f"expected {c.n_samples} samples, got {audio.shape[-1]}")
        half = c.n_fft // 2
        padded = torch.nn.functional.pad(audio, (half, half))
        frames = padded.unfold(-1, c.n_fft, c.hop)[..., : c.frames, :]
        return torch.fft.rfft(frames * self.window.to(audio.dtype), dim=-1)

    def pool(self, mag: torch.Tensor) -> torch.Tensor:
        """Bin magnitudes (..., n_bins) -> row magnitudes (..., rows)."""
        c = self.contract
        low = mag[..., : c.low_bins]
        if not c.bands:
            return low
        power = mag[..., c.low_bins:].square()
        high = torch.sqrt(power @ self.pool_matrix.to(mag.dtype))
        return torch.cat([low, high], dim=-1)

    # ----- scaling --------------------------------------------------------------------------------------
    def to_db(self, mag: torch.Tensor) -> torch.Tensor:
        c = self.contract
        db = 20.0 * torch.log10(mag.clamp_min(1e-12))
        return torch.where(db < c.db_threshold, torch.full_like(db, c.db_floor), db)

    def scale_db(self, db: torch.Tensor) -> torch.Tensor:
        c = self.contract
        return ((db - c.db_floor) * (2.0 / (c.db_max - c.db_floor)) - 1.0).clamp(-1.0, 1.0)

    def unscale_db(self, scaled: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> dB (differentiable; no threshold mask, so gradients reach quiet cells)."""
        c = self.contract
        return (scaled.clamp(-1.0, 1.0) + 1.0) * ((c.db_max - c.db_floor) / 2.0) + c.db_floor

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (..., channels, n_samples) -> scaled log-magnitude (..., channels, frames, rows) in [-1, 1]."""
        mag = self.stft(audio).abs() * self.contract.magnitude_scale
        return self.scale_db(self.to_db(self.pool(mag)))
