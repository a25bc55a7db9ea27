"""kickit.encode and ``kickit encode``: a user's hit -> a latent (encoder or search), on real model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kickit import cli
from kickit.audio import AudioError, read_audio, write_wav
from kickit.encode import (
    EncodeError,
    encode_file,
    encode_hit,
    has_encoder,
    model_spectrograms,
    row_weights,
    search_latent,
    spectral_distance,
)
from kickit.hits import HitRenderer
from kickit.modelfile import load_model

VAE = Path(__file__).resolve().parent / "data" / "models" / "tiny-vae.onnx"


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path):  # noqa: ANN201
    return load_model(tiny_model_path)


def _random_median(model, target: np.ndarray) -> float:  # noqa: ANN001
    z = np.random.default_rng(9).standard_normal((32, model.latent_dim)).astype(np.float32)
    return float(np.median(spectral_distance(model_spectrograms(model, z), target, row_weights(model))))


def test_search_finds_a_latent_close_to_the_models_own_output(tiny) -> None:  # noqa: ANN001
    z_true = np.random.default_rng(5).standard_normal((1, tiny.latent_dim)).astype(np.float32)
    target = model_spectrograms(tiny, z_true)[0]
    z, info = search_latent(tiny, target, steps=40, seed=1)
    assert z.shape == (tiny.latent_dim,) and z.dtype == np.float32
    assert info.method == "search" and info.steps == 40 and info.stopped == "steps"
    # much closer than a random latent, and closer than where it started
    assert info.distance < 0.5 * _random_median(tiny, target)
    assert info.distance < info.start_distance
    assert all(b <= a for a, b in zip(info.history, info.history[1:], strict=False))  # best so far never worsens
    got = float(spectral_distance(model_spectrograms(tiny, z[None]), target, row_weights(tiny))[0])
    assert got == pytest.approx(info.distance, rel=1e-5)


def test_encode_hit_of_a_rendered_hit_is_seeded_and_improves(tiny) -> None:  # noqa: ANN001
    z_true = np.random.default_rng(2).standard_normal((1, tiny.latent_dim)).astype(np.float32)
    hit = HitRenderer(tiny).render(z_true)[0]
    z1, info1 = encode_hit(tiny, hit, steps=8, seed=3)
    z2, _ = encode_hit(tiny, hit, steps=8, seed=3)
    np.testing.assert_array_equal(z1, z2)
    assert info1.distance <= info1.start_distance
    assert info1.evaluations > 8 * 4


def test_time_budget_stops_the_search_with_its_best_so_far(tiny, real_kick_paths) -> None:  # noqa: ANN001
    z, info = encode_file(tiny, real_kick_paths[0], steps=50, time_budget=1e-9)
    assert info.stopped == "time" and info.steps == 0
    assert np.all(np.isfinite(z)) and info.distance == pytest.approx(info.start_distance)


def test_bad_files_raise_one_line_naming_the_file(tiny, bad_audio_paths) -> None:  # noqa: ANN001
    for kind in ("empty", "garbage", "silent", "nan", "truncated"):
        path = bad_audio_paths[kind]
        with pytest.raises(AudioError) as e:
            encode_file(tiny, path, steps=1)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AudioError, match="no such file"):
        encode_file(tiny, "/nonexistent/kick.wav")


def test_encoder_only_on_a_model_without_encoder_says_so(tiny, real_kick_paths) -> None:  # noqa: ANN001
    assert not has_encoder(tiny)
    with pytest.raises(EncodeError, match="has no encoder"):
        encode_file(tiny, real_kick_paths[0], search=False)


@pytest.mark.skipif(not VAE.is_file(), reason="tests/data/models/tiny-vae.onnx (VAE family) not built yet")
def test_vae_model_encodes_with_its_encoder(real_kick_paths) -> None:
    vae = load_model(VAE)
    assert has_encoder(vae)
    z, info = encode_file(vae, real_kick_paths[0])
    assert info.method == "encoder" and z.shape == (vae.latent_dim,) and np.all(np.isfinite(z))
    z_s, info_s = encode_file(vae, real_kick_paths[0], search=True, steps=2)
    assert info_s.method == "search"


# ----- the command ---------------------------------------------------------------------------------------------
def test_cli_saves_json_and_npy_and_renders(tmp_path: Path, tiny_model_path: Path, real_kick_paths, capsys) -> None:  # noqa: ANN001
    sample = real_kick_paths[1]
    out = tmp_path / "z.json"
    wav = tmp_path / "pad.wav"
    rc = cli.main(["encode", str(sample), "--model", str(tiny_model_path), "--steps", "3", "-o", str(out),
                   "--render", str(wav)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "spectral distance" in printed and "search" in printed
    doc = json.loads(out.read_text())
    model = load_model(tiny_model_path)
    assert doc["format"] == "kickit-latent-1" and doc["model"]["weights_sha256"] == model.weights_hash
    z = np.asarray(doc["latent"], dtype=np.float32)
    assert z.shape == (model.latent_dim,) and doc["encode"]["steps"] == 3
    audio, rate = read_audio(wav)
    assert rate == model.contract.sample_rate and audio.shape == (2, model.contract.n_samples)
    # the rendered file is the hit the latent gives
    np.testing.assert_allclose(audio, HitRenderer(model).render(z[None])[0], atol=1e-4)

    npy = tmp_path / "z.npy"
    assert cli.main(["encode", str(sample), "--model", str(tiny_model_path), "--steps", "3", "-o", str(npy)]) == 0
    np.testing.assert_array_equal(np.load(npy), z)  # same seed, same latent


def test_cli_bad_input_one_line(tmp_path: Path, tiny_model_path: Path, bad_audio_paths, capsys) -> None:  # noqa: ANN001
    bad = bad_audio_paths["garbage"]
    assert cli.main(["encode", str(bad), "--model", str(tiny_model_path), "--steps", "1"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kickit encode: ")]
    assert len(err) == 2 and str(bad) in err[-1]  # the progress line, then the error naming the file
    good = tmp_path / "k.wav"
    write_wav(good, np.zeros((2, 64), np.float32) + 0.1, 44100)
    assert cli.main(["encode", str(good), "--model", str(tiny_model_path), "-o", str(tmp_path / "z.txt")]) == 2
    assert "z.txt" in capsys.readouterr().err
    notmodel = tmp_path / "m.onnx"
    notmodel.write_bytes(b"not a model")
    assert cli.main(["encode", str(good), "--model", str(notmodel)]) == 2
    assert str(notmodel) in capsys.readouterr().err


WAVE = Path(__file__).resolve().parent / "data" / "models" / "tiny-wave.onnx"


@pytest.mark.skipif(not WAVE.is_file(), reason="tests/data/models/tiny-wave.onnx (waveform GAN) not built yet")
def test_waveform_model_without_encoder_is_searched(real_kick_paths) -> None:  # noqa: ANN001
    wave = load_model(WAVE)
    assert wave.output == "audio" and not has_encoder(wave)
    z, info = encode_file(wave, real_kick_paths[2], steps=3, popsize=4, seed=0)
    assert info.method == "search" and info.steps == 3 and z.shape == (wave.latent_dim,)
    assert info.distance <= info.start_distance
