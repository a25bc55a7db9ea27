"""The torch port of the spectral contract agrees with the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kickit.training.spectral_torch import TorchSpectral  # noqa: E402

from kickit.audio import load_hit  # noqa: E402
from kickit.spectral import SpectralContract  # noqa: E402

pytestmark = pytest.mark.torch


def _synthetic(contract: SpectralContract) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(contract.n_samples) / contract.sample_rate
    sweep = np.sin(2 * np.pi * (50 * t + 4.0 * np.exp(-t * 30))) * np.exp(-t * 6)
    noise = 0.3 * rng.standard_normal(contract.n_samples) * np.exp(-t * 40)
    quiet = 1e-6 * np.sin(2 * np.pi * 5000 * t)  # straddles the dB threshold
    return np.stack([sweep + noise, sweep * 0.5 + quiet])


def test_encode_matches_numpy_float64(contract, real_kick_paths) -> None:
    audio = np.stack([load_hit(p, contract).astype(np.float64) for p in real_kick_paths[:4]]
                     + [_synthetic(contract)])
    ref = contract.encode(audio)
    got = TorchSpectral(contract, dtype=torch.float64).encode(torch.from_numpy(audio)).numpy()
    assert got.shape == ref.shape == (5, *contract.shape)
    assert np.abs(got - ref).max() < 1e-5


def test_encode_float32_close(contract, real_kick_paths) -> None:
    audio = np.stack([load_hit(p, contract) for p in real_kick_paths[:2]])
    ref = contract.encode(audio.astype(np.float64))
    got = TorchSpectral(contract).encode(torch.from_numpy(audio)).numpy()
    assert got.dtype == np.float32
    off = np.abs(got - ref) > 1e-3
    # float32 rounding may only flip cells lying right at the dB threshold (a jump to the floor).
    thr = float(contract.scale_db(np.float64(contract.db_threshold)))
    flip = ((np.abs(ref - thr) < 1e-3) & (got == -1.0)) | ((np.abs(got - thr) < 1e-3) & (ref == -1.0))
    assert off.mean() < 1e-4
    assert np.all(flip[off])


def test_other_contract_and_unscale(contract) -> None:
    c = SpectralContract(n_fft=1024, hop=64, frames=64, low_bins=64, bands=32)
    audio = _synthetic(c)[None]
    ts = TorchSpectral(c, dtype=torch.float64)
    assert np.abs(ts.encode(torch.from_numpy(audio)).numpy() - c.encode(audio)).max() < 1e-5
    scaled = np.linspace(-0.5, 1.0, 11)
    assert np.allclose(ts.unscale_db(torch.from_numpy(scaled)).numpy(), c.unscale_db(scaled))


def test_wrong_length_is_refused(contract) -> None:
    with pytest.raises(ValueError, match="expected .* samples"):
        TorchSpectral(contract).encode(torch.zeros(2, contract.n_samples - 1))
