"""kickit.spectral: the one frozen spectral contract (round trips, layout, scaling, serialisation, validation)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kickit.audio import load_hit
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

C = DEFAULT_CONTRACT


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_derived_sizes() -> None:
    assert C.n_samples == C.frames * C.hop
    assert C.n_bins == C.n_fft // 2 + 1
    assert C.shape == (C.channels, C.frames, C.rows)
    assert C.rows == C.low_bins + C.bands
    assert C.band_edges()[0] == C.low_bins and C.band_edges()[-1] == C.n_bins
    assert np.all(np.diff(C.band_edges()) >= 1)
    assert np.all(np.diff(C.row_frequencies()) > 0)
    assert C.ola_normalisation().shape == (C.n_samples,)


def test_stft_istft_perfect_reconstruction() -> None:
    x = _noise((2, 2, C.n_samples))
    spec = C.stft(x)
    assert spec.shape == (2, 2, C.frames, C.n_bins)
    np.testing.assert_allclose(C.istft(spec), x, atol=1e-9)
    np.testing.assert_allclose(C.overlap_add(C.frame(x)), x, atol=1e-9)


def test_stft_round_trip_real_kick(real_kick_paths: list) -> None:
    x = load_hit(real_kick_paths[0], C)
    y = C.istft(C.stft(x))
    np.testing.assert_allclose(y, x, atol=2e-5)


def test_stft_matches_definition() -> None:
    """Frame t is centred on sample t * hop of the zero-padded signal, periodic Hann window."""
    x = _noise((C.n_samples,), 1)
    t = 37
    start = t * C.hop - C.n_fft // 2
    seg = x[start : start + C.n_fft]
    n = np.arange(C.n_fft)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / C.n_fft)
    np.testing.assert_allclose(C.stft(x)[t], np.fft.rfft(seg * w), atol=1e-9)


def test_sinusoid_reads_zero_db() -> None:
    t = np.arange(C.n_samples) / C.sample_rate
    k = 20  # exactly on bin 20
    x = np.sin(2 * np.pi * k * C.sample_rate / C.n_fft * t)
    mag = np.abs(C.stft(x))[100] * C.magnitude_scale
    assert mag[k] == pytest.approx(1.0, rel=1e-6)


def test_scale_unscale_exact_above_threshold_and_mask_below() -> None:
    db = np.linspace(C.db_threshold + 1e-3, C.db_max, 1001)
    np.testing.assert_allclose(C.unscale_db(C.scale_db(db)), db, atol=1e-9)
    s = C.scale_db(db)
    assert s.min() >= -1.0 and s.max() == pytest.approx(1.0)
    below = np.array([C.db_threshold - 0.1, -200.0, C.db_floor])
    assert np.all(C.to_db(10 ** (below / 20)) == C.db_floor)
    assert np.all(C.db_to_magnitude(C.unscale_db(C.scale_db(C.to_db(10 ** (below / 20))))) == 0.0)


def test_encode_decode_exact_low_bins() -> None:
    x = (0.5 * _noise((2, C.n_samples), 2)).astype(np.float64)
    scaled = C.encode(x)
    assert scaled.shape == C.shape and scaled.min() >= -1 and scaled.max() <= 1
    mag = C.decode_magnitude(scaled)
    assert mag.shape == (2, C.frames, C.n_bins)
    ref = np.abs(C.stft(x))[..., : C.low_bins]
    keep = 20 * np.log10(ref * C.magnitude_scale + 1e-30) > C.db_threshold
    np.testing.assert_allclose(mag[..., : C.low_bins][keep], ref[keep], rtol=1e-9)
    assert np.all(mag[..., : C.low_bins][~keep] == 0.0)


def test_decode_float32_close() -> None:
    x = (0.5 * _noise((2, C.n_samples), 3)).astype(np.float32)
    scaled = C.encode(x)
    assert scaled.dtype == np.float32
    mag = C.decode_magnitude(scaled)
    ref = np.abs(C.stft(x.astype(np.float64)))[..., : C.low_bins]
    got = mag[..., : C.low_bins]
    keep = got > 0
    assert keep.mean() > 0.99
    np.testing.assert_allclose(got[keep], ref[keep], rtol=2e-3)
    assert np.all(20 * np.log10(ref[~keep] * C.magnitude_scale) < C.db_threshold + 0.1)


def test_pool_unpool_sanity() -> None:
    flat = np.full((3, C.n_bins), 0.25)
    np.testing.assert_allclose(C.pool(flat), 0.25, rtol=1e-12)
    np.testing.assert_allclose(C.unpool_db(np.full((3, C.rows), -12.0)), -12.0, atol=1e-9)
    # pooling keeps each band's energy: width * rms^2 == sum of squares
    mag = np.abs(_noise((C.n_bins,), 4))
    rows = C.pool(mag)
    edges = C.band_edges()
    for k in (0, C.bands // 2, C.bands - 1):
        lo, hi = edges[k], edges[k + 1]
        assert rows[C.low_bins + k] ** 2 * (hi - lo) == pytest.approx(np.sum(mag[lo:hi] ** 2), rel=1e-9)
    np.testing.assert_array_equal(rows[: C.low_bins], mag[: C.low_bins])
    # a level ramp over log frequency survives unpooling between band centres
    hz = C.row_frequencies()
    ramp = -6.0 * np.log2(np.maximum(hz, 1.0) / 1000.0)
    bins_hz = np.arange(C.n_bins) * C.sample_rate / C.n_fft
    got = C.unpool_db(ramp)
    inside = (bins_hz > hz[C.low_bins]) & (bins_hz < hz[-1])
    np.testing.assert_allclose(got[inside], -6.0 * np.log2(bins_hz[inside] / 1000.0), atol=0.2)


def test_dict_json_round_trip() -> None:
    c2 = SpectralContract(n_fft=1024, hop=256, frames=64, low_bins=64, bands=32)
    assert SpectralContract.from_dict(c2.to_dict()) == c2
    assert SpectralContract.from_json(c2.to_json()) == c2
    assert SpectralContract.from_json(C.to_json()) == C
    with pytest.raises(ValueError, match="unknown fields"):
        SpectralContract.from_dict({**C.to_dict(), "colour": "red"})
    d = C.to_dict()
    del d["hop"]
    with pytest.raises(ValueError, match="missing fields"):
        SpectralContract.from_dict(d)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": "hamming"}, "unknown window"),
        ({"hop": 300}, "multiple of hop"),
        ({"low_bins": 0}, "low_bins"),
        ({"low_bins": 1025}, "low_bins"),
        ({"bands": 2000}, "bands"),
        ({"bands": -1}, "bands"),
        ({"db_threshold": -130.0}, "db_floor < db_threshold"),
        ({"db_max": -100.0}, "db_floor < db_threshold"),
        ({"version": 99}, "version"),
    ],
)
def test_bad_contracts_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(C, **change)


def test_wrong_length_refused() -> None:
    with pytest.raises(ValueError, match=f"expected {C.n_samples} samples"):
        C.stft(np.zeros((2, C.n_samples - 1)))


def test_contract_is_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.hop = 64  # type: ignore[misc]
    assert hash(C) == hash(SpectralContract())
    with pytest.raises(ValueError):
        C.window_array()[0] = 1.0


def test_no_bands_contract_decodes_to_all_bins() -> None:
    c = SpectralContract(n_fft=1024, hop=256, frames=64, low_bins=100, bands=0)
    assert c.rows == 100
    x = 0.3 * _noise((2, c.n_samples), 5)
    scaled = c.encode(x)
    assert scaled.shape == (2, 64, 100)
    mag = c.decode_magnitude(scaled)
    assert mag.shape == (2, 64, c.n_bins)
    assert np.all(mag[..., 100:] == 0.0)
    low = mag[..., :100]
    assert (low > 0).mean() > 0.99
    np.testing.assert_allclose(low[low > 0], np.abs(c.stft(x))[..., :100][low > 0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_magnitude_matches_its_definition(dtype: type) -> None:
    """The fused decoding (silent tail frames skipped, scale folded into the exponent) equals the plain chain
    db_to_magnitude(unpool_db(unscale_db(.))) / magnitude_scale: same zeros (the mask), same values to rounding."""
    c = DEFAULT_CONTRACT
    rng = np.random.default_rng(5)
    scaled = rng.uniform(-1.0, 0.6, (2, c.channels, c.frames, c.rows)).astype(dtype)
    scaled[0, :, 200:] = -1.0  # a silent tail in one hit only
    scaled[1, 0, :, 100:140] = -0.55  # rows around the mask threshold (-90 dB)
    want = c.db_to_magnitude(c.unpool_db(c.unscale_db(scaled))) / c.magnitude_scale
    got = c.decode_magnitude(scaled)
    assert got.dtype == dtype and got.shape == want.shape
    assert np.array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == np.float32 else 1e-12, atol=0)
    silent = np.full((1, c.channels, c.frames, c.rows), -1.0, dtype)
    assert not np.any(c.decode_magnitude(silent))


def test_decode_magnitude_crops_to_what_sounds() -> None:
    """A kick-like matrix (high bands silent after a few frames and above a cut-off, low rows ringing on)
    decodes to the plain chain's values, and a hit decodes to the same bits alone or in a batch."""
    c = DEFAULT_CONTRACT
    rng = np.random.default_rng(9)
    scaled = rng.uniform(-0.4, 0.6, (3, c.channels, c.frames, c.rows)).astype(np.float32)
    scaled[0, :, 30:, c.low_bins:] = -1.0  # bands die after 30 frames
    scaled[0, :, :, c.low_bins + 70:] = -1.0  # and above band 70
    scaled[0, :, 150:, 40:] = -1.0  # the tail: low bins only
    scaled[1, 0, :, c.low_bins + 20:] = -1.0  # one channel darker than the other
    want = c.db_to_magnitude(c.unpool_db(c.unscale_db(scaled))) / c.magnitude_scale
    got = c.decode_magnitude(scaled)
    assert np.array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
    assert not np.any(got[0, :, 30:, c.low_bins:]) and np.any(got[0, :, :30, c.low_bins:])
    for i in range(3):
        np.testing.assert_array_equal(c.decode_magnitude(scaled[i]), got[i])


def test_decode_magnitude_in_two_boxes_of_frames() -> None:
    """Bands wide over the attack and narrow over the body (as a kick's; the case the two decoding boxes of
    frames are for): the values are the plain chain's, the body's bins sound up to the last band that does, and
    the cells right of it are the mask's zeros."""
    from kickit.spectral import _tables

    c = DEFAULT_CONTRACT
    rng = np.random.default_rng(11)
    scaled = rng.uniform(-0.4, 0.6, (c.channels, c.frames, c.rows)).astype(np.float32)
    scaled[:, 12:, c.low_bins + 30:] = -1.0  # after the attack only the 30 lowest bands sound ...
    scaled[:, 200:, c.low_bins:] = -1.0  # ... until frame 200
    want = c.db_to_magnitude(c.unpool_db(c.unscale_db(scaled))) / c.magnitude_scale
    got = c.decode_magnitude(scaled)
    assert np.array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
    cols = _tables(c).cols_for_top
    body = c.low_bins + int(cols[30])  # bins that lean on one of the 30 bands
    assert np.any(got[:, 12:200, c.low_bins + int(cols[29]) : body])  # bins between bands 29 and 30
    assert not np.any(got[:, 12:, body:])
    assert np.any(got[:, :12, body:])  # the attack's box reaches higher


def test_unpooling_blocks_cover_every_band_a_bin_reads() -> None:
    """The blocked unpooling product (decode_magnitude's) skips only exact zeros of the interpolation matrix:
    each block of bins lists every band its bins read, the blocks tile the high bins, and a box of any width
    unpools to the full product's values."""
    from kickit.spectral import _tables, _unpool_box

    c = DEFAULT_CONTRACT
    t = _tables(c)
    n_high = c.n_bins - c.low_bins
    assert [b[0] for b in t.unpool_blocks] == list(range(0, n_high, t.unpool_blocks[0][1]))
    assert t.unpool_blocks[-1][1] == n_high
    for c0, c1, b0, b1 in t.unpool_blocks:
        block = t.interp64[:, c0:c1]
        assert not block[:b0].any() and not block[b1:].any()
        assert block[b0].any() and block[b1 - 1].any()  # no band listed that the block does not read
    rng = np.random.default_rng(4)
    bands = rng.uniform(-120.0, 6.0, (40, c.bands)).astype(np.float32)
    for width in (1, 37, 128, 129, 500, n_high):
        got = _unpool_box(bands, t.interp32, width, t)
        np.testing.assert_allclose(got, bands @ t.interp32[:, :width], rtol=1e-6, atol=1e-4)
