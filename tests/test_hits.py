"""kickit.hits: latents -> finished stereo hits (inference, reconstruction, post-processing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kickit.hits import FADE_MS, PEAK_DBFS, HitRenderer, finish, render_output
from kickit.modelfile import load_model
from kickit.spectral import DEFAULT_CONTRACT as C

PEAK = 10.0 ** (PEAK_DBFS / 20.0)


def _decaying(rng: np.random.Generator, b: int = 3) -> np.ndarray:
    t = np.arange(C.n_samples) / C.sample_rate
    f = rng.uniform(45, 90, size=(b, 1, 1))
    gain = np.array([1.0, 0.5])[None, :, None]
    x = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.15) * gain * 0.3 + 0.05  # with DC
    return x.astype(np.float32)


def test_finish_post_processing() -> None:
    x = _decaying(np.random.default_rng(0))
    y = finish(x, C)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.abs(y.mean(axis=-1)) < 2e-3)  # DC removed (the fade moves the mean by a hair)
    np.testing.assert_allclose(np.abs(y).max(axis=(1, 2)), PEAK, rtol=1e-6)  # each hit peaks at the level
    np.testing.assert_allclose(np.abs(y[:, 1]).max(axis=-1) / np.abs(y[:, 0]).max(axis=-1), 0.5, rtol=0.05)
    assert np.all(y[..., -1] == 0.0)  # faded to silence
    fade = int(FADE_MS * 1e-3 * C.sample_rate)
    tail = np.abs(y[..., -fade:]).max(axis=-1)
    assert np.all(tail < np.abs(y[..., -2 * fade:-fade]).max(axis=-1) + 1e-7)
    np.testing.assert_array_equal(x, _decaying(np.random.default_rng(0)))  # input untouched


def test_finish_silence_and_nan() -> None:
    z = np.zeros((2, 2, C.n_samples), dtype=np.float32)
    assert np.array_equal(finish(z, C), z)
    bad = _decaying(np.random.default_rng(1), 1)
    bad[0, 0, 100] = np.nan
    out = finish(bad, C)
    assert np.all(np.isfinite(out))


def test_renderer_shapes_level_determinism(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    r = HitRenderer(m)
    z = np.random.default_rng(4).standard_normal((3, m.latent_dim)).astype(np.float32)
    a = r.render(z)
    assert a.shape == (3, m.contract.channels, m.contract.n_samples) and a.dtype == np.float32
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(np.abs(a).max(axis=(1, 2)), PEAK, rtol=1e-5)
    assert np.array_equal(a, r.render(z))  # bit-identical
    assert np.array_equal(a, HitRenderer(load_model(tiny_model_path)).render(z))  # and across loads
    one = r.render(z[1])
    assert one.shape == (1, *a.shape[1:])
    np.testing.assert_allclose(one[0], a[1], atol=1e-4)  # a batch renders like single hits


def test_renderer_knobs_change_the_hit(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    r = HitRenderer(m)
    z = np.random.default_rng(5).standard_normal((1, m.latent_dim)).astype(np.float32)
    centre = r.render_knobs(z, [0.0] * len(m.knobs))
    assert np.array_equal(centre, r.render(z))
    moved = r.render_knobs(z, [1.0] + [0.0] * (len(m.knobs) - 1))
    assert not np.allclose(moved, centre, atol=1e-3)


def test_render_output_spec_matches_renderer(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    z = np.random.default_rng(6).standard_normal((2, m.latent_dim)).astype(np.float32)
    r = HitRenderer(m)
    np.testing.assert_array_equal(render_output(m.run(z), m.contract, "spec", method=r.method), r.render(z))
    with pytest.raises(ValueError, match="unknown model output kind"):
        render_output(m.run(z), m.contract, "midi")


def test_audio_output_skips_reconstruction() -> None:
    x = _decaying(np.random.default_rng(2), 2)
    np.testing.assert_array_equal(render_output(x, C, "audio"), finish(x, C))


def test_unknown_method(tiny_model_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown reconstruction method 'magic'"):
        HitRenderer(load_model(tiny_model_path), method="magic")


def test_parallel_reconstruction_matches(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    z = np.random.default_rng(8).standard_normal((5, m.latent_dim)).astype(np.float32)
    one = HitRenderer(m).render(z)
    with HitRenderer(m, workers=2) as r:
        two = r.render(z)
        assert r.workers == 2
        # pipelined: inference hit by hit, so each hit equals the hit rendered alone, bit for bit ...
        alone = np.concatenate([r.render(z[i]) for i in range(len(z))])
        np.testing.assert_array_equal(two, alone)
    np.testing.assert_array_equal(alone, np.concatenate([HitRenderer(m).render(z[i:i + 1]) for i in range(len(z))]))
    # ... and within float rounding of batched inference (onnxruntime's kernels differ by batch size)
    np.testing.assert_allclose(two, one, atol=1e-4)


def test_non_finite_model_output_renders_as_silence_not_a_crash() -> None:
    spec = np.full((2, *C.shape), -1.0, dtype=np.float32)
    spec[0, :, :40, :60] = 0.3
    spec[1] = np.nan
    spec[0, 0, 5, 5] = np.inf
    out = render_output(spec, C, "spec")
    assert np.all(np.isfinite(out))
    assert np.abs(out[0]).max() > 0.5 and np.abs(out[1]).max() == 0.0


def test_renderer_keeps_numpy_blas_on_one_thread(tiny_model_path: Path) -> None:
    """A multi-threaded BLAS on busy cores made one spectrogram decode 30x slower (kickit.blas)."""
    from threadpoolctl import threadpool_info

    HitRenderer(load_model(tiny_model_path))
    # numpy's own BLAS (libraries loaded later by other packages, e.g. scipy's, are not on the render path)
    blas = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert blas and all(p["num_threads"] == 1 for p in blas)
