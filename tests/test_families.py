"""The waveform GAN and spectrogram VAE families: configs, networks, training (checkpoint, exact resume), export
with parity (the VAE's encoder as a companion file), loading, encoding and rendering through kickit.hits."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from kickit.export.exporter import export_checkpoint  # noqa: E402
from kickit.export.onnx_export import encoder_path_for, encoder_to_onnx  # noqa: E402
from kickit.training import checkpoint as ck  # noqa: E402
from kickit.training.config import TrainConfig, get_config  # noqa: E402
from kickit.training.models import build_discriminator, build_generator, generator_from_checkpoint  # noqa: E402
from kickit.training.train import train  # noqa: E402
from kickit.training.vae import EncoderMean, SpecVAE, beta_at, kl_per_dim  # noqa: E402
from kickit.training.wavegan import WaveDiscriminator, WaveGenerator  # noqa: E402

from kickit.hits import HitRenderer, finish  # noqa: E402
from kickit.modelfile import META, ModelError, load_model  # noqa: E402

pytestmark = pytest.mark.torch
MODELS = Path(__file__).resolve().parent / "data" / "models"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, real_kicks_dir, contract) -> Path:
    from kickit.training.data import build_dataset

    out = tmp_path_factory.mktemp("ds") / "kicks"
    build_dataset([real_kicks_dir], out, contract)
    return out


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _state(path: Path) -> dict:
    return ck.load_checkpoint(path)


# ----- configs and networks ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, family", [("wavegan", "wave-gan"), ("wavegan-tiny", "wave-gan"),
                                          ("vae", "spec-vae"), ("vae-tiny", "spec-vae")])
def test_family_presets_round_trip(name: str, family: str) -> None:
    cfg = get_config(name)
    assert cfg.family == family
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert get_config("default").family == "spec-gan"
    # checkpoints written before the family field existed load as spectrogram GANs
    old = get_config("default").to_dict()
    del old["family"]
    assert TrainConfig.from_dict(old).family == "spec-gan"


@pytest.mark.parametrize("changes, match", [
    ({"family": "wave-vae"}, "family 'wave-vae'"),
    ({"family": "wave-gan", "loss": "wgan-gp"}, "bce and hinge"),
    ({"wg_kernel": 4}, "odd"),
    ({"d_dropout": 1.0}, "d_dropout"),
    ({"kl_beta": -1.0}, "kl_beta"),
])
def test_bad_family_settings_are_refused(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_config("tiny").replace(**changes)


def test_wave_networks(contract) -> None:
    cfg = get_config("wavegan")
    torch.manual_seed(0)
    g, d = build_generator(cfg, contract), build_discriminator(cfg, contract)
    assert isinstance(g, WaveGenerator) and isinstance(d, WaveDiscriminator)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv1d)]
    assert not any(isinstance(m, torch.nn.ConvTranspose1d) for m in g.modules())
    assert any(m.dilation[0] > 1 for m in convs)  # dilated convolutions
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules())
    drops = [m for m in d.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == pytest.approx(0.3) for m in drops)
    assert sum(p.numel() for p in g.parameters()) < 2_000_000
    with torch.no_grad():
        out = g.eval()(torch.randn(3, cfg.latent_dim))
        assert out.shape == (3, 2, contract.n_samples) and out.abs().max() <= 1.0
        assert d.eval()(out).shape == (3,)
    with pytest.raises(ValueError, match="do not divide"):
        WaveGenerator(cfg.replace(wg_channels=(8,) * 9), contract)


def test_vae_networks_and_kl(contract) -> None:
    cfg = get_config("vae-tiny")
    torch.manual_seed(0)
    vae = build_generator(cfg, contract)
    assert isinstance(vae, SpecVAE) and not vae.decoder.latent_norm
    x = torch.rand(2, *contract.shape) * 2 - 1
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, cfg.latent_dim)
    assert vae(mu).shape == (2, *contract.shape)
    assert torch.equal(EncoderMean(vae.encoder)(x), mu)
    # KL of the prior itself is 0; it grows with the mean's distance
    z = torch.zeros(4, 8)
    assert float(kl_per_dim(z, z)) == 0.0
    assert float(kl_per_dim(z + 2.0, z)) == pytest.approx(2.0)
    # beta warm-up: linear from 0 to kl_beta
    c = cfg.replace(kl_beta=0.5, kl_warmup=10)
    assert [beta_at(c, s) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]
    assert beta_at(c.replace(kl_warmup=0), 0) == 0.5


# ----- training, resume, export, load, render ----------------------------------------------------------
def _train_and_resume(cfg: TrainConfig, dataset: Path, tmp_path: Path) -> dict:
    straight = train(cfg, dataset, tmp_path / "straight", progress=None)
    assert straight.step == cfg.max_steps and np.isfinite(straight.best_val)
    last = _state(tmp_path / "straight" / "last.pt")
    assert last["config"]["family"] == cfg.family
    train(cfg, dataset, tmp_path / "resumed", max_steps=2, progress=None)
    train(cfg, dataset, tmp_path / "resumed", resume=True, max_steps=cfg.max_steps, progress=None)
    resumed = _state(tmp_path / "resumed" / "last.pt")
    for key in ("generator", "generator_ema", "discriminator"):
        for name in last[key]:
            assert torch.equal(last[key][name], resumed[key][name]), f"{key}.{name} differs after resume"
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, cfg.max_steps + 1))
    return last


def test_wave_gan_trains_resumes_exports_and_renders_without_reconstruction(dataset, tmp_path, contract) -> None:
    cfg = get_config("wavegan-tiny")
    last = _train_and_resume(cfg, dataset, tmp_path)
    # previews: the generated audio itself
    wavs = sorted((tmp_path / "straight" / "previews" / "step-0000004").glob("*.wav"))
    assert len(wavs) == cfg.preview_hits
    gen = generator_from_checkpoint(last)
    assert isinstance(gen, WaveGenerator) and not gen.training

    out = tmp_path / "wave.onnx"
    res = export_checkpoint(tmp_path / "straight", out, knobs=2, knob_samples=64, knob_bases=2, knob_steps=3)
    assert res.parity.ok and res.parity.max_abs_diff <= 1e-4
    m = load_model(out)
    assert (m.family, m.output, m.latent_dim, len(m.knobs)) == ("wave-gan", "audio", cfg.latent_dim, 2)
    assert m.training["family"] == "wave-gan" and m.training["steps"] == cfg.max_steps
    assert not m.can_encode and m.encoder is None
    z = np.random.default_rng(3).standard_normal((2, cfg.latent_dim)).astype(np.float32)
    raw = m.run(z)
    with torch.no_grad():
        np.testing.assert_allclose(raw, gen(torch.from_numpy(z)).numpy(), atol=1e-4)
    hits = HitRenderer(m).render(z)
    assert hits.shape == (2, 2, contract.n_samples)
    np.testing.assert_array_equal(hits, finish(raw, contract))  # no reconstruction: post-processing only


def test_vae_trains_resumes_exports_pair_and_encodes(dataset, tmp_path, contract) -> None:
    cfg = get_config("vae-tiny")
    assert cfg.adv_weight > 0  # the optional adversarial loss is exercised too
    last = _train_and_resume(cfg, dataset, tmp_path)
    assert "encoder.head.weight" in last["generator_ema"]
    rows = list(csv.DictReader(open(tmp_path / "straight" / "log.csv")))
    assert all(float(r["g_rec"]) > 0 and r["kl_nats"] != "" and r["d_adv"] != "" for r in rows)
    assert float(rows[0]["g_kl"]) == 0.0 and float(rows[-1]["g_kl"]) > 0.0  # beta warm-up starts at 0

    out = tmp_path / "vae.onnx"
    res = export_checkpoint(tmp_path / "straight", out, knobs=2, knob_samples=64, knob_bases=2, knob_steps=3)
    assert res.parity.ok
    enc = encoder_path_for(out)
    assert enc.name == "vae.encoder.onnx" and enc.is_file() and res.encoder_path == enc
    m = load_model(out)
    assert (m.family, m.output, m.latent_dim) == ("spec-vae", "spec", cfg.latent_dim)
    assert m.can_encode and m.encoder_path == enc
    assert m.encoder["file"] == enc.name and m.encoder["input"] == "spec"
    assert m.encoder["sha256"] == hashlib.sha256(enc.read_bytes()).hexdigest() and m.encoder["parity"]["ok"]
    # encoder round trip: ONNX encoder == torch posterior mean; batch and single input agree
    vae = generator_from_checkpoint(last)
    x = np.asarray(json_free_hits(m, 3), dtype=np.float32)
    z = m.encode_scaled(x)
    assert z.shape == (3, cfg.latent_dim) and z.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(z, vae.encode(torch.from_numpy(x))[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(m.encode_scaled(x[1]), z[1:2], atol=1e-6)
    # the decoded latent of an encoded hit is a playable hit
    hits = HitRenderer(m).render(z)
    assert hits.shape == (3, 2, contract.n_samples) and np.all(np.isfinite(hits))
    with pytest.raises(ValueError, match="must be \\(batch"):
        m.encode_scaled(x[:, :, :10])
    with pytest.raises(ValueError, match="NaN"):
        m.encode_scaled(np.full_like(x[:1], np.nan))


def json_free_hits(m, n: int) -> np.ndarray:
    """n of the model's own spectrograms from seeded latents."""
    return m.run(np.random.default_rng(7).standard_normal((n, m.latent_dim)).astype(np.float32))


# ----- the shipped test files and the encoder checks of the loader --------------------------------------
def test_tiny_family_test_files_load() -> None:
    v = load_model(MODELS / "tiny-vae.onnx", require_encoder=True)
    assert v.family == "spec-vae" and v.can_encode and len(v.knobs) == 8
    assert v.encode_scaled(v.run(np.zeros((1, v.latent_dim), np.float32))).shape == (1, v.latent_dim)
    w = load_model(MODELS / "tiny-wave.onnx")
    assert (w.family, w.output, w.can_encode) == ("wave-gan", "audio", False)
    spec_model = load_model(MODELS / "tiny-spec.onnx")
    with pytest.raises(ModelError, match="without an encoder cannot encode"):
        spec_model.encode_scaled(np.zeros(spec_model.contract.shape, np.float32))


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copy(MODELS / "tiny-vae.onnx", tmp_path / "tiny-vae.onnx")
    shutil.copy(MODELS / "tiny-vae.encoder.onnx", tmp_path / "tiny-vae.encoder.onnx")
    return tmp_path / "tiny-vae.onnx", tmp_path / "tiny-vae.encoder.onnx"


def _with_encoder_record(model: Path, record: dict) -> None:
    """Rewrite the model's kickit.encoder metadata (the graph, and so the weights hash, stays the same)."""
    proto = onnx.load(str(model))
    for p in proto.metadata_props:
        if p.key == META["encoder"]:
            p.value = json.dumps(record)
    model.write_bytes(proto.SerializeToString())


def test_missing_encoder_leaves_the_model_playable(tmp_path) -> None:
    model, enc = _pair(tmp_path)
    enc.unlink()
    m = load_model(model)
    assert not m.can_encode and m.run(np.zeros((1, m.latent_dim), np.float32)).shape[0] == 1
    with pytest.raises(ModelError, match="tiny-vae.encoder.onnx: encoder file named by tiny-vae.onnx is missing"):
        m.encode_scaled(np.zeros(m.contract.shape, np.float32))
    with pytest.raises(ModelError, match="tiny-vae.encoder.onnx.*missing"):
        load_model(model, require_encoder=True)
    assert not load_model(model, load_encoder=False).can_encode


def test_wrong_encoder_files_are_refused_naming_them(tmp_path, contract) -> None:
    model, enc = _pair(tmp_path)
    record = load_model(model).encoder
    # modified encoder bytes: the hash in the model no longer matches
    data = bytearray(enc.read_bytes())
    data[-1] ^= 0xFF
    enc.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"tiny-vae\.encoder\.onnx: encoder sha256 does not match"):
        load_model(model)
    # a file with the right hash but the wrong graph (the spectrogram generator: input z, not spec)
    bad = tmp_path / "other.onnx"
    shutil.copy(MODELS / "tiny-spec.onnx", bad)
    _with_encoder_record(model, {**record, "file": bad.name, "sha256": hashlib.sha256(bad.read_bytes()).hexdigest()})
    with pytest.raises(ModelError, match=r"other\.onnx: encoder inputs \['z'\]: expected exactly one float input"):
        load_model(model)
    # an encoder of another latent size
    wave = tmp_path / "wave.onnx"
    torch.manual_seed(0)
    other = SpecVAE(get_config("vae-tiny").replace(latent_dim=8), contract)
    wave.write_bytes(encoder_to_onnx(EncoderMean(other.encoder), contract))
    _with_encoder_record(model, {**record, "file": wave.name, "sha256": hashlib.sha256(wave.read_bytes()).hexdigest()})
    with pytest.raises(ModelError, match=r"wave\.onnx: encoder output 'z' must be \[batch, 16\]"):
        load_model(model)
    # names that leave the model's folder, unsupported inputs, no hash
    for rec, match in (({**record, "file": "../x.onnx"}, "plain file name"),
                       ({**record, "input": "audio"}, "input 'audio' is not supported"),
                       ({"file": enc.name}, "sha256")):
        _with_encoder_record(model, rec)
        with pytest.raises(ModelError, match=match):
            load_model(model)
