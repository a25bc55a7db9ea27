"""kickit.synth: the procedural kick really is a kick (pitch, attack, decay, stereo) and is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from kickit.spectral import SpectralContract
from kickit.synth import procedural_kick, procedural_kicks, random_params, render_kick


def _fundamental(x: np.ndarray, rate: int) -> float:
    """Strongest spectral peak above 20 Hz of the body (after the click and the sweep, 80-400 ms)."""
    seg = x[int(0.08 * rate): int(0.4 * rate)]
    seg = seg * np.hanning(seg.size)
    spec = np.abs(np.fft.rfft(seg, 1 << 17))
    f = np.fft.rfftfreq(1 << 17, 1 / rate)
    spec[f < 20] = 0
    return float(f[np.argmax(spec)])


@pytest.fixture(scope="module")
def kicks(contract: SpectralContract) -> np.ndarray:
    return procedural_kicks(np.random.default_rng(7), 24, contract)


def test_shape_dtype_and_clean(kicks: np.ndarray, contract: SpectralContract) -> None:
    assert kicks.shape == (24, 2, contract.n_samples) and kicks.dtype == np.float32
    assert np.all(np.isfinite(kicks))
    peaks = np.max(np.abs(kicks), axis=(1, 2))
    assert np.all(peaks <= 10 ** (-1 / 20) + 1e-6) and np.all(peaks >= 10 ** (-3 / 20) - 1e-6)
    assert np.all(np.abs(kicks.mean(axis=2)) < 1e-3)  # no DC
    assert np.all(np.abs(kicks[:, :, -1]) < 1e-4)  # faded out at the end


def test_fundamental_in_kick_range_and_matches_params(contract: SpectralContract) -> None:
    rng = np.random.default_rng(3)
    for _ in range(12):
        p = random_params(rng, contract)
        x = render_kick(p, contract)
        f0 = _fundamental(x.mean(axis=0), contract.sample_rate)
        assert 40.0 <= f0 <= 120.0
        # the sweep settles on f_end (the body still glides a little at 80 ms, so allow some slack)
        assert f0 == pytest.approx(p.f_end, rel=0.15)


def test_fast_attack_and_exponential_decay(kicks: np.ndarray, contract: SpectralContract) -> None:
    sr = contract.sample_rate
    win = 2048  # ~46 ms: longer than a period of the lowest fundamental
    for k in kicks:
        env = np.max(np.abs(k), axis=0)
        assert np.argmax(env) < 0.010 * sr  # transient within 10 ms
        m = k.mean(axis=0)
        rms = np.sqrt(np.mean(m[: (m.size // win) * win].reshape(-1, win) ** 2, axis=1))
        start = int(np.argmax(rms))
        assert start <= 1
        tail = rms[start:]
        live = tail[tail > 1e-4 * tail[0]]
        assert np.all(live[1:] < 1.03 * live[:-1])  # decaying envelope (no swell above 0.25 dB)
        assert live[-1] < 0.2 * live[0]
        assert 20 * np.log10(tail[-2] / tail[0]) < -18  # has died away by the end
        # exponential: log-RMS is close to a straight line over the first 40 dB
        keep = tail > tail[0] * 0.01
        y = np.log(tail[keep])
        if y.size >= 4:
            fit = np.polyfit(np.arange(y.size), y, 1)
            resid = y - np.polyval(fit, np.arange(y.size))
            assert np.max(np.abs(resid)) < 0.9


def test_low_band_dominates(kicks: np.ndarray, contract: SpectralContract) -> None:
    f = np.fft.rfftfreq(contract.n_samples, 1 / contract.sample_rate)
    for k in kicks:
        p = np.abs(np.fft.rfft(k.mean(axis=0))) ** 2
        assert p[f < 200].sum() > 0.6 * p.sum()


def test_slight_stereo(kicks: np.ndarray) -> None:
    for k in kicks:
        assert not np.array_equal(k[0], k[1])
        corr = np.corrcoef(k[0], k[1])[0, 1]
        assert 0.95 < corr < 0.99999
        side = (k[0] - k[1]) / 2
        mid = (k[0] + k[1]) / 2
        assert np.sqrt(np.mean(side**2)) < 0.1 * np.sqrt(np.mean(mid**2))


def test_deterministic_and_varied(contract: SpectralContract) -> None:
    a = procedural_kick(np.random.default_rng(11), contract)
    b = procedural_kick(np.random.default_rng(11), contract)
    c = procedural_kick(np.random.default_rng(12), contract)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    batch = procedural_kicks(np.random.default_rng(11), 2, contract)
    np.testing.assert_array_equal(batch[0], a)
    assert procedural_kicks(np.random.default_rng(0), 0, contract).shape == (0, 2, contract.n_samples)
    with pytest.raises(ValueError):
        procedural_kicks(np.random.default_rng(0), -1, contract)


def test_other_contract_length() -> None:
    small = SpectralContract(n_fft=512, hop=128, frames=64, low_bins=64, bands=64)
    x = procedural_kick(np.random.default_rng(0), small)
    assert x.shape == (2, small.n_samples) and np.all(np.isfinite(x))


def test_passes_the_project_kick_checks(kicks: np.ndarray, contract: SpectralContract) -> None:
    from kickit.descriptors import kick_checks

    checks = kick_checks(kicks, contract)
    failed = {name: int(np.sum(~np.asarray(ok))) for name, ok in checks.items() if not np.all(ok)}
    assert not failed, failed
