"""kickit.descriptors: known answers on synthetic signals, kick checks, batch shapes, real kicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kickit import descriptors as D
from kickit.audio import load_hit
from kickit.spectral import DEFAULT_CONTRACT

C = DEFAULT_CONTRACT
SR = C.sample_rate
T = np.arange(C.n_samples) / SR


def stereo(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    return np.stack([x, x if y is None else y]).astype(np.float32)


def decaying_sine(f: float, tau: float = 0.1, amp: float = 0.9) -> np.ndarray:
    return amp * np.sin(2 * np.pi * f * T) * np.exp(-T / tau)


def one(d: D.Descriptors, name: str) -> float:
    return float(getattr(d, name))


@pytest.mark.parametrize("f0", [45.0, 60.0, 90.0, 115.0])
def test_decaying_sine_fundamental(f0: float) -> None:
    d = D.describe(stereo(decaying_sine(f0)), C)
    assert one(d, "fundamental_hz") == pytest.approx(f0, rel=0.01)


def test_decaying_sine_known_answers() -> None:
    tau = 0.1
    x = stereo(decaying_sine(60.0, tau))
    d = D.describe(x, C)
    assert one(d, "decay_s") == pytest.approx(tau * np.log(10.0), rel=0.08)  # -20 dB of an exp(-t/tau) decay
    assert one(d, "attack_s") < 0.006
    assert one(d, "width") == 0.0 and one(d, "lr_correlation") == pytest.approx(1.0)
    assert one(d, "sub_share") + one(d, "low_share") > 0.99
    assert sum(one(d, k) for k in ("sub_share", "low_share", "mid_share", "high_share")) == pytest.approx(1.0)
    # crest over the first 100 ms: peak (near t = 1/(4 f)) over the RMS of the decaying sine there
    rms = np.sqrt(0.5 * tau / 0.2 * (1 - np.exp(-0.2 / tau)))
    assert one(d, "crest_db") == pytest.approx(20 * np.log10(np.exp(-1 / 240 / tau) / rms), abs=0.1)
    assert one(d, "flatness") < 1e-3
    assert one(d, "peak") == pytest.approx(np.abs(x).max())
    checks = D.kick_checks(x, C)
    assert all(bool(v) for v in checks.values()), checks


def test_decay_scales_with_tau() -> None:
    x = np.stack([stereo(decaying_sine(60.0, tau)) for tau in (0.05, 0.1, 0.2)])
    decay = D.describe(x, C).decay_s
    np.testing.assert_allclose(decay / decay[0], [1.0, 2.0, 4.0], rtol=0.1)


def test_pitch_sweep_fundamental_between_ends() -> None:
    f = 50.0 + 100.0 * np.exp(-T / 0.02)  # 150 Hz falling to 50 Hz
    phase = 2 * np.pi * np.cumsum(f) / SR
    d = D.describe(stereo(0.9 * np.sin(phase) * np.exp(-T / 0.15)), C)
    assert 50.0 <= one(d, "fundamental_hz") <= 65.0


def test_centroid_bands_and_crest_of_tones() -> None:
    fade = np.minimum(T / 0.01, 1.0) ** 2  # no onset click
    x = np.stack([stereo(0.5 * np.sin(2 * np.pi * f * T) * fade) for f in (1000.0, 5000.0)])
    d = D.describe(x, C)
    np.testing.assert_allclose(d.centroid_hz, [1000.0, 5000.0], rtol=0.03)
    assert d.mid_share[0] > 0.99 and d.high_share[1] > 0.99
    steady = D.describe(stereo(0.5 * np.sin(2 * np.pi * 100.0 * T)), C)
    assert one(steady, "crest_db") == pytest.approx(20 * np.log10(np.sqrt(2)), abs=0.05)


def test_noise_is_flat_and_not_a_kick() -> None:
    rng = np.random.default_rng(0)
    x = stereo(0.3 * rng.standard_normal(C.n_samples) * np.exp(-T / 0.1))
    d = D.describe(x, C)
    assert one(d, "flatness") > 0.3
    assert one(d, "high_share") > 0.8
    checks = D.kick_checks(x, C)
    assert not checks["low_dominant"] and not checks["all"]


def test_stereo_width_and_correlation() -> None:
    s = decaying_sine(60.0)
    rng = np.random.default_rng(1)
    cases = np.stack([stereo(s, -s), stereo(s, 0.5 * s), stereo(s, 0.3 * rng.standard_normal(C.n_samples))])
    d = D.describe(cases, C)
    assert d.lr_correlation[0] == pytest.approx(-1.0) and d.width[0] == pytest.approx(1.0)
    assert d.lr_correlation[1] == pytest.approx(1.0) and d.width[1] == pytest.approx(0.1, abs=1e-3)  # (.25/2.25)
    assert abs(d.lr_correlation[2]) < 0.1


def test_checks_catch_faults() -> None:
    s = decaying_sine(60.0)
    late = np.concatenate([np.zeros(int(0.05 * SR)), s])[: C.n_samples]
    steady = 0.9 * np.sin(2 * np.pi * 60.0 * T)
    clipped = np.clip(3.0 * s, -1.0, 1.0)
    dc = s + 0.2
    nan = s.copy()
    nan[100] = np.nan
    high = decaying_sine(200.0)
    x = np.stack([stereo(v) for v in (late, steady, clipped, dc, nan, high)])
    c = D.kick_checks(x, C)
    assert not c["transient"][0] and c["fundamental"][0]
    assert not c["decaying"][1]
    assert not c["clean"][2] and c["fundamental"][2]
    assert not c["clean"][3]
    assert not c["clean"][4]
    assert not c["fundamental"][5]
    assert not np.any(c["all"])


def test_batch_shapes_and_vector() -> None:
    x = np.stack([stereo(decaying_sine(f)) for f in (50.0, 70.0, 90.0)]).reshape(3, 1, 2, -1)
    d = D.describe(x, C)
    assert d.fundamental_hz.shape == (3, 1)
    single = D.describe(x[1, 0], C)
    assert single.fundamental_hz.shape == ()
    for k, v in d.as_dict().items():
        assert float(v[1, 0]) == pytest.approx(float(getattr(single, k)), rel=1e-9, abs=1e-12), k
    v = D.descriptor_vector(x, C)
    assert v.shape == (3, 1, len(D.VECTOR_NAMES)) and np.all(np.isfinite(v))
    assert v[2, 0, D.VECTOR_NAMES.index("log_fundamental_hz")] == pytest.approx(np.log(90.0), abs=0.01)
    assert D.is_kick(x).shape == (3, 1)


def test_mono_input_accepted() -> None:
    d = D.describe(decaying_sine(60.0)[None].astype(np.float32), C)
    assert one(d, "fundamental_hz") == pytest.approx(60.0, rel=0.01) and one(d, "width") == 0.0


def test_knob_descriptors_names() -> None:
    x = np.stack([stereo(decaying_sine(f)) for f in (50.0, 90.0)])
    k = D.knob_descriptors(x, C)
    assert set(k) == {"fundamental_hz", "decay_s", "attack_s", "centroid_hz", "width", "sub_energy",
                      "low_energy", "high_energy", "flatness", "crest"}
    assert all(v.shape == (2,) for v in k.values())
    assert k["fundamental_hz"][1] > k["fundamental_hz"][0]
    assert k["sub_energy"][0] > k["sub_energy"][1]


def test_bad_shape_refused() -> None:
    with pytest.raises(ValueError, match=r"expected audio \(\.\.\., 2, n\)"):
        D.describe(np.zeros((3, 5, 1000)), C)


def test_real_kicks_are_kicks(real_kick_paths: list[Path]) -> None:
    x = np.stack([load_hit(p, C) for p in real_kick_paths])
    d = D.describe(x, C)
    checks = D.kick_checks(x, C, d)
    assert np.all((d.fundamental_hz > 25) & (d.fundamental_hz < 130))
    assert np.all(checks["low_dominant"]) and np.all(checks["decaying"])
    assert checks["all"].mean() >= 0.6
