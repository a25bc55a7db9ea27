"""Training package: configs, models, losses, checkpoints, the loop (tiny config on CPU), resume, NaN stop, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kickit.training import checkpoint as ck  # noqa: E402
from kickit.training import losses as L  # noqa: E402
from kickit.training.config import NAMED, TrainConfig, get_config, load_config  # noqa: E402
from kickit.training.models import (  # noqa: E402
    build_discriminator,
    build_generator,
    generator_from_checkpoint,
)
from kickit.training.spectral_torch import TorchSpectral  # noqa: E402
from kickit.training.train import TrainingDiverged, train  # noqa: E402

from kickit.audio import read_audio  # noqa: E402
from kickit.cli import main as kickit_main  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, real_kicks_dir, data_dir, contract) -> Path:
    """A tiny real dataset built by the data layer from the committed kicks and the bad files (skipped)."""
    from kickit.training.data import build_dataset

    out = tmp_path_factory.mktemp("ds") / "kicks"
    build_dataset([real_kicks_dir, data_dir / "bad"], out, contract)
    return out


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _tiny(**changes) -> TrainConfig:
    return get_config("tiny").replace(**changes)


# ----- config ------------------------------------------------------------------------------------------
def test_named_configs_round_trip() -> None:
    for name in NAMED:
        cfg = get_config(name)
        assert cfg.name == name
        d = json.loads(json.dumps(cfg.to_dict()))
        assert TrainConfig.from_dict(d) == cfg
    assert get_config("dcgan").d_attention == 0 and get_config("dcgan").fm_weight == 0
    assert get_config("default").d_attention > 0 and get_config("default").d_spectral_norm


def test_json_overrides(tmp_path) -> None:
    p = tmp_path / "small.json"
    p.write_text(json.dumps({"base": "tiny", "batch_size": 3, "loss": "wgan-gp", "g_channels": [8, 8, 4, 4, 4, 4]}))
    cfg = load_config(p)
    assert (cfg.name, cfg.batch_size, cfg.loss, cfg.g_channels) == ("small", 3, "wgan-gp", (8, 8, 4, 4, 4, 4))
    assert cfg.latent_dim == get_config("tiny").latent_dim


@pytest.mark.parametrize("text, match", [
    ("{not json", "not a readable JSON config"),
    ("[1, 2]", "object of overrides"),
    ('{"bogus_field": 1}', "unknown fields"),
    ('{"loss": "square"}', "loss 'square'"),
    ('{"base": "nope"}', "unknown training config 'nope'"),
    ('{"augment": {"pitch_semitones": -1}}', "augment .*pitch_semitones must be >= 0"),
    ('{"augment": {"reverb": 1}}', "augment .*reverb"),
])
def test_bad_config_files(tmp_path, text: str, match: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(p)


def test_unknown_config_name() -> None:
    with pytest.raises(ValueError, match="neither a named config"):
        load_config("nonexistent-config")


# ----- models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "default", "dcgan"])
def test_generator_shape_and_range(name: str, contract) -> None:
    cfg = get_config(name)
    torch.manual_seed(0)
    gen = build_generator(cfg, contract).eval()
    disc = build_discriminator(cfg, contract).eval()
    z = torch.randn(2, cfg.latent_dim) * 10
    with torch.no_grad():
        x = gen(z)
        logits = disc(x)
    assert x.shape == (2, *contract.shape)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.isfinite(x).all()
    assert logits.shape == (2,)
    assert not torch.allclose(x[0], x[1])  # the latent matters


def test_too_many_blocks_for_the_contract(contract) -> None:
    with pytest.raises(ValueError, match="do not divide the contract shape"):
        build_generator(_tiny(g_channels=(4,) * 9), contract)
    with pytest.raises(ValueError, match="do not divide the contract shape"):
        build_discriminator(_tiny(d_channels=(4,) * 9), contract)


def test_generator_base_starts_at_the_mean(contract) -> None:
    cfg = _tiny()
    gen = build_generator(cfg, contract).eval()
    target = torch.linspace(-0.9, 0.9, contract.rows).expand(*contract.shape).clone()
    gen.init_base(target)
    with torch.no_grad():
        out = gen(torch.randn(4, cfg.latent_dim)).mean(0)
    assert (out - target).abs().mean() < 0.1


def test_midside_output_and_fixed_texture(contract) -> None:
    cfg = _tiny()
    torch.manual_seed(1)
    gen = build_generator(cfg, contract).eval()
    assert "out.noise" in gen.state_dict()  # the texture map travels with the weights (export, checkpoints)
    z = torch.randn(2, cfg.latent_dim)
    with torch.no_grad():
        assert torch.equal(gen(z), gen(z))  # deterministic: the same latent gives the same hit
        gen.out.conv.weight[1].zero_()
        gen.out.conv.bias[1].zero_()
        gen.out.noise_gain[:, 1].zero_()
        gen.base.copy_(gen.base[:, :1].expand_as(gen.base))
        x = gen(z)
    assert torch.equal(x[:, 0], x[:, 1])  # no side signal: mono
    assert not torch.equal(x[0], x[1])


def test_pixelnorm_generator_is_batch_independent(contract) -> None:
    cfg = _tiny()
    gen = build_generator(cfg, contract).eval()
    z = torch.randn(3, cfg.latent_dim)
    with torch.no_grad():
        assert torch.allclose(gen(z)[1:2], gen(z[1:2]), atol=1e-5)


# ----- losses ------------------------------------------------------------------------------------------
def test_hit_features_and_stats(contract, real_kick_paths) -> None:
    from kickit.audio import load_hit

    spec = TorchSpectral(contract)
    kicks = torch.from_numpy(contract.encode(np.stack([load_hit(p, contract) for p in real_kick_paths])))
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(contract.encode(rng.uniform(-0.5, 0.5, (len(kicks), 2, contract.n_samples))
                                             .astype(np.float32)))
    fk, fn = L.hit_features(kicks, spec), L.hit_features(noise, spec)
    assert fk.shape == fn.shape and fk.shape[0] == len(kicks) and torch.isfinite(fk).all()
    low = L.ENV_SEGMENTS + len(L._row_groups(spec.row_hz)) + 1  # index of the low-band share
    assert fk[:, low].mean() > fn[:, low].mean() + 1.0  # kicks: >10 dB more of their energy below 150 Hz
    env = fk[:, : L.ENV_SEGMENTS]
    assert (env[:, 1] > env[:, -1]).all()  # kicks decay
    assert L.stats_loss(fk, fk) == 0
    assert L.stats_distance(fn, fk) > L.stats_distance(fk[: len(fk) // 2], fk) > 0


def test_adversarial_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert math.isclose(float(L.d_adversarial("hinge", real, fake)), (0 + 0.5) / 2 + (0 + 1) / 2)
    assert math.isclose(float(L.g_adversarial("hinge", fake)), 1.0)
    assert float(L.d_adversarial("bce", real, fake)) > 0
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        L.d_adversarial("nope", real, fake)


def test_gradient_penalty_and_losses_dicts(contract) -> None:
    cfg = _tiny(loss="wgan-gp")
    spec = TorchSpectral(contract)
    gen, disc = build_generator(cfg, contract), build_discriminator(cfg, contract)
    real = torch.rand(3, *contract.shape) * 2 - 1
    fake = gen(torch.randn(3, cfg.latent_dim))
    d = L.d_losses(cfg, disc, real, fake.detach())
    assert set(d) == {"d_adv", "d_gp", "d_total"} and d["d_gp"] > 0
    g = L.g_losses(cfg, disc, fake, real, fake, real, spec)
    assert set(g) == {"g_adv", "g_fm", "g_stats", "g_total"}
    g["g_total"].backward()
    assert all(p.grad is not None for p in gen.parameters())


def test_diff_augment(contract) -> None:
    cfg = _tiny()
    torch.manual_seed(0)
    x = torch.rand(4, *contract.shape) * 2 - 1
    x.requires_grad_(True)
    y = L.diff_augment(x, cfg)
    assert y.shape == x.shape and float(y.detach().min()) >= -1 and float(y.detach().max()) <= 1
    assert not torch.equal(x, y)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(L.diff_augment(x, cfg.replace(diffaug=())), x)


# ----- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_errors(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ck.CheckpointError, match="junk.pt: not a readable checkpoint"):
        ck.load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ck.CheckpointError, match="other.pt: not a kickit checkpoint"):
        ck.load_checkpoint(other)
    with pytest.raises(ck.CheckpointError, match="no such run folder"):
        ck.find_checkpoint(tmp_path / "missing")
    with pytest.raises(ck.CheckpointError, match="has no best.pt or last.pt"):
        ck.find_checkpoint(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"x")
    assert ck.find_checkpoint(tmp_path, "best") == tmp_path / "last.pt"  # best falls back to last


def test_atomic_save_leaves_no_temp_files(tmp_path) -> None:
    ck.save_checkpoint({"a": torch.zeros(3)}, tmp_path / "x.pt")
    ck.save_checkpoint({"a": torch.ones(3)}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.ones(3))


# ----- the loop ----------------------------------------------------------------------------------------
def _state(path: Path) -> dict:
    return ck.load_checkpoint(path)


def _same_weights(a: dict, b: dict) -> None:
    for key in ("generator", "generator_ema", "discriminator"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"


def test_train_checkpoints_previews_and_exact_resume(dataset, tmp_path, contract) -> None:
    cfg = _tiny()
    straight = train(cfg, dataset, tmp_path / "straight", progress=None)
    assert straight.step == cfg.max_steps and math.isfinite(straight.best_val)
    run = tmp_path / "straight"
    last, best = _state(run / "last.pt"), _state(run / "best.pt")
    assert last["format"] == ck.FORMAT and last["step"] == cfg.max_steps
    assert last["config"] == cfg.to_dict() and last["contract"] == contract.to_dict()
    for key in ("generator", "generator_ema", "discriminator", "opt_g", "opt_d", "rng", "data_summary", "metrics"):
        assert key in last
    assert last["data_summary"]["train"] >= 1 and last["data_summary"]["heldout"] >= 2
    assert last["data_summary"]["kits"]
    # corrupt files skipped by the data layer are surfaced: in the checkpoint and in skipped.txt
    skipped = (run / "skipped.txt").read_text()
    assert "garbage.wav" in skipped and "empty.wav" in skipped
    assert any("garbage.wav" in s for s in last["data_summary"]["skipped"])
    assert math.isfinite(last["metrics"]["val_stats"]) and best["metrics"]["val_stats"] == straight.best_val
    # log and previews
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, cfg.max_steps + 1))
    assert all(math.isfinite(float(r["g_total"])) for r in rows)
    assert json.loads((run / "config.json").read_text())["name"] == "tiny"
    pngs = sorted((run / "previews").glob("*.png"))
    assert [p.name for p in pngs] == ["step-0000002.png", "step-0000004.png"]
    assert pngs[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wavs = sorted((run / "previews" / "step-0000004").glob("*.wav"))
    assert len(wavs) == cfg.preview_hits
    audio, rate = read_audio(wavs[0])
    assert rate == contract.sample_rate and audio.shape == (2, contract.n_samples) and np.abs(audio).max() > 0.1
    # the export engineer's entry point
    gen = generator_from_checkpoint(last)
    assert not gen.training
    with torch.no_grad():
        assert gen(torch.zeros(1, cfg.latent_dim)).shape == (1, *contract.shape)

    # interrupted at step 2, resumed to the end: bit-identical weights
    train(cfg, dataset, tmp_path / "resumed", max_steps=2, progress=None)
    assert _state(tmp_path / "resumed" / "last.pt")["step"] == 2
    resumed = train(cfg, dataset, tmp_path / "resumed", resume=True, max_steps=cfg.max_steps, progress=None)
    assert resumed.step == cfg.max_steps
    _same_weights(_state(tmp_path / "resumed" / "last.pt"), last)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, cfg.max_steps + 1))

    # a run folder is never overwritten by accident, and --resume needs a run
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, dataset, run, progress=None)
    with pytest.raises(FileNotFoundError, match="has no last.pt"):
        train(cfg, dataset, tmp_path / "empty", resume=True, progress=None)


def test_nan_stops_and_keeps_last_good_checkpoint(dataset, tmp_path) -> None:
    cfg = _tiny(max_steps=6)

    def poison(step: int, gen: torch.nn.Module) -> None:
        if step == 3:  # a weight blows up after step 3's update: step 4's losses are NaN
            with torch.no_grad():
                next(gen.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: .*=nan.*last good checkpoint"):
        train(cfg, dataset, tmp_path / "run", progress=None, fault=poison)
    last = _state(tmp_path / "run" / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(t).all() for t in last["generator"].values())
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    # resuming the last good checkpoint continues cleanly; the log drops the rows after it
    assert train(cfg, dataset, tmp_path / "run", resume=True, progress=None).step == 6
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_wgan_gp_and_dcgan_variants_train(dataset, tmp_path) -> None:
    for name, cfg in (("wgan", _tiny(loss="wgan-gp", max_steps=2)),
                      ("dcgan", get_config("dcgan").replace(
                          g_channels=(16, 16, 8, 8, 4, 4), d_channels=(4, 8, 8, 16, 16, 16), batch_size=4,
                          latent_dim=16, max_steps=2, val_every=2, checkpoint_every=2, preview_every=100,
                          val_samples=4))):
        res = train(cfg, dataset, tmp_path / name, progress=None)
        assert res.step == 2 and math.isfinite(res.best_val)
        assert _state(tmp_path / name / "last.pt")["config"]["loss"] == cfg.loss


# ----- CLI ---------------------------------------------------------------------------------------------
def test_cli_train_and_errors(dataset, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = kickit_main(["train", "--config", "tiny", "--data", str(dataset), "--out", str(out), "--max-steps", "2"])
    assert rc == 0, capsys.readouterr().err
    assert "step 2" in capsys.readouterr().out
    assert _state(out / "last.pt")["step"] == 2
    rc = kickit_main(["train", "--config", "tiny", "--data", str(dataset), "--out", str(out), "--resume",
                      "--max-steps", "3"])
    assert rc == 0 and _state(out / "last.pt")["step"] == 3
    capsys.readouterr()

    assert kickit_main(["train", "--config", "nope", "--data", str(dataset), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kickit train: --config nope") and err.count("\n") == 1
    assert kickit_main(["train", "--config", "tiny", "--data", str(dataset), "--out", str(out)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert kickit_main(["train", "--config", "tiny", "--data", str(tmp_path / "no-data"),
                        "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kickit train: ") and "no-data" in err and err.count("\n") == 1


# ----- bench -------------------------------------------------------------------------------------------
def test_bench_train_runs(capsys) -> None:
    rc = kickit_main(["bench", "train", "--configs", "tiny", "--steps", "3", "--no-write"])
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("| tiny |"))
    steps_per_s = float(row.split("|")[5])
    assert steps_per_s > 0
    assert kickit_main(["bench", "train", "--configs", "nope", "--no-write"]) == 2
