"""kickit.export: ONNX export with the contract inside, parity self-test, and the loader's shape/NaN refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from kickit.export.onnx_export import (  # noqa: E402
    ExportError,
    Parity,
    export_generator,
    metadata,
    to_onnx,
    with_metadata,
)

from kickit.modelfile import META, Knob, ModelError, graph_sha256, load_model  # noqa: E402
from kickit.spectral import SpectralContract  # noqa: E402

pytestmark = pytest.mark.torch

# A small contract keeps these toy generators fast; the real default contract is covered by tiny-spec.onnx.
C = SpectralContract(n_fft=256, hop=64, frames=32, low_bins=32, bands=16)
LATENT = 16


class ToyG(torch.nn.Module):
    """z -> (B, 2, frames, rows) in [-1, 1]: linear, nearest upsampling, conv, tanh (like the real generators)."""

    def __init__(self, contract: SpectralContract = C, latent: int = LATENT, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.c = contract
        self.fc = torch.nn.Linear(latent, 8 * (contract.frames // 8) * (contract.rows // 8))
        self.conv = torch.nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 8, self.c.frames // 8, self.c.rows // 8)
        x = torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")
        return torch.tanh(self.conv(x))


class DivergingG(ToyG):
    """Differs between torch and the ONNX graph by construction (a traced-only offset)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = super().forward(z)
        if torch.onnx.is_in_onnx_export():
            out = out + 1e-3
        return out


class NaNG(ToyG):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z) + torch.log(z[:, :1, None, None] * 0.0 - 1.0)


class WrongShapeG(ToyG):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z)[:, :, : self.c.frames // 2]


def _knobs(n: int = 3) -> list[Knob]:
    eye = np.eye(LATENT, dtype=np.float32)
    return [Knob(f"k{i}", eye[i], -2.0, 1.5, {"note": i}) for i in range(n)]


def _write_raw(gen: torch.nn.Module, path: Path, contract: SpectralContract = C) -> Path:
    """Bypass the exporter's checks: graph + valid metadata, as a broken third-party tool might write it."""
    data = to_onnx(gen, LATENT)
    props = metadata(contract, family="spec-gan", output="spec", latent_dim=LATENT, knobs=_knobs(),
                     training={"steps": 0}, parity=Parity(64, 0.0, 1e-4))
    path.write_bytes(with_metadata(data, props))
    return path


def test_export_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    training = {"steps": 123, "data": {"train": 10, "kits": 3}, "config": "toy"}
    res = export_generator(ToyG(), C, out, latent_dim=LATENT, knobs=_knobs(), training=training)
    assert res.parity.ok and res.parity.latents == 64 and res.parity.max_abs_diff <= 1e-4
    m = load_model(out)
    assert m.contract == C
    assert (m.family, m.output, m.latent_dim) == ("spec-gan", "spec", LATENT)
    assert m.training["steps"] == 123 and m.training["data"] == {"train": 10, "kits": 3}
    assert "exported" in m.training
    assert [k.name for k in m.knobs] == ["k0", "k1", "k2"]
    assert all(k.lo == -2.0 and k.hi == 1.5 for k in m.knobs)
    assert m.knobs[1].effect == {"note": 1}
    np.testing.assert_array_equal(m.knobs[2].direction, np.eye(LATENT, dtype=np.float32)[2])
    assert m.weights_hash == res.weights_hash == graph_sha256(out.read_bytes())
    assert m.metadata[META["format"]] == "1"
    assert json.loads(m.metadata[META["parity"]])["ok"] is True
    # opset >= 17 and a dynamic batch
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    z = np.random.default_rng(1).standard_normal((7, LATENT)).astype(np.float32)
    with torch.no_grad():
        want = ToyG()(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(m.run(z), want, atol=1e-4)
    assert list(tmp_path.iterdir()) == [out]  # no temp files left behind


def test_same_weights_same_hash_other_weights_other_hash(tmp_path: Path) -> None:
    a = export_generator(ToyG(seed=0), C, tmp_path / "a.onnx", latent_dim=LATENT, knobs=[])
    b = export_generator(ToyG(seed=0), C, tmp_path / "b.onnx", latent_dim=LATENT, knobs=[],
                         training={"steps": 9})
    c = export_generator(ToyG(seed=1), C, tmp_path / "c.onnx", latent_dim=LATENT, knobs=[])
    assert a.weights_hash == b.weights_hash != c.weights_hash


def test_parity_failure_writes_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    export_generator(ToyG(), C, out, latent_dim=LATENT, knobs=[])
    before = out.read_bytes()
    with pytest.raises(ExportError, match=r"parity self-test failed: max \|onnxruntime - torch\| = 0\.001.*"
                                          r"exceeds 0\.0001.*was not written"):
        export_generator(DivergingG(), C, out, latent_dim=LATENT, knobs=[])
    assert out.read_bytes() == before
    assert list(tmp_path.iterdir()) == [out]
    fresh = tmp_path / "new.onnx"
    with pytest.raises(ExportError, match="parity"):
        export_generator(DivergingG(), C, fresh, latent_dim=LATENT, knobs=[])
    assert not fresh.exists()


def test_nan_generator_is_refused_by_exporter(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="parity self-test failed"):
        export_generator(NaNG(), C, tmp_path / "nan.onnx", latent_dim=LATENT, knobs=[])
    assert not (tmp_path / "nan.onnx").exists()


def test_wrong_shape_is_refused_by_exporter(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="fails kickit's own loader.*output 'spec' has shape"):
        export_generator(WrongShapeG(), C, tmp_path / "w.onnx", latent_dim=LATENT, knobs=[])
    assert not (tmp_path / "w.onnx").exists()


def test_loader_refuses_nan_output(tmp_path: Path) -> None:
    p = _write_raw(NaNG(), tmp_path / "nan.onnx")
    with pytest.raises(ModelError, match=r"nan\.onnx: output is NaN or infinite on a probe latent"):
        load_model(p)
    assert load_model(p, probe=False).output == "spec"  # the probe is what catches it


def test_loader_refuses_wrong_output_shape(tmp_path: Path) -> None:
    p = _write_raw(WrongShapeG(), tmp_path / "short.onnx")
    with pytest.raises(ModelError, match=r"short\.onnx: output 'spec' has shape .*expected \[batch, 2, 32, 48\]"):
        load_model(p)


def test_loader_refuses_fixed_batch_and_wrong_input(tmp_path: Path) -> None:
    import io

    gen = ToyG().eval()
    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gen, (torch.zeros(1, LATENT),), buf, dynamo=False, input_names=["z"],
                          output_names=["spec"], opset_version=17)
    props = metadata(C, family="spec-gan", output="spec", latent_dim=LATENT, knobs=[], training={},
                     parity=Parity(64, 0.0, 1e-4))
    p = tmp_path / "fixed.onnx"
    p.write_bytes(with_metadata(buf.getvalue(), props))
    with pytest.raises(ModelError, match="fixed batch size 1; it must be dynamic"):
        load_model(p)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gen, (torch.zeros(1, LATENT),), buf, dynamo=False, input_names=["latent"],
                          output_names=["spec"], dynamic_axes={"latent": {0: "b"}}, opset_version=17)
    q = tmp_path / "named.onnx"
    q.write_bytes(with_metadata(buf.getvalue(), props))
    with pytest.raises(ModelError, match=r"wrong inputs \['latent'\]: expected exactly one input 'z'"):
        load_model(q)


def test_audio_output_family(tmp_path: Path) -> None:
    class WaveG(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(LATENT, 2 * 64)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            x = self.fc(z).view(-1, 2, 1, 64)
            return torch.tanh(torch.nn.functional.interpolate(x, size=(1, C.n_samples), mode="nearest"))[:, :, 0]

    out = tmp_path / "wave.onnx"
    export_generator(WaveG(), C, out, latent_dim=LATENT, knobs=[], family="wave-gan", output="audio")
    m = load_model(out)
    assert (m.family, m.output, m.output_shape) == ("wave-gan", "audio", (2, C.n_samples))
    assert m.run(np.zeros((3, LATENT))).shape == (3, 2, C.n_samples)


def test_bad_export_arguments(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_generator(ToyG(), C, tmp_path / "a.onnx", latent_dim=LATENT, opset=13)
    with pytest.raises(ExportError, match="unknown model family"):
        export_generator(ToyG(), C, tmp_path / "b.onnx", latent_dim=LATENT, family="diffusion")
    assert not list(tmp_path.iterdir())


# ----- from a training run: `kickit export` ----------------------------------------------------------------


def _tiny_run(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    from kickit.training.checkpoint import FORMAT, save_checkpoint
    from kickit.training.config import get_config
    from kickit.training.models import build_generator

    cfg = get_config("tiny")
    contract = SpectralContract()
    torch.manual_seed(1)
    gen = build_generator(cfg, contract)
    ema = build_generator(cfg, contract)
    run = tmp_path / "run"
    ckpt = {"format": FORMAT, "config": cfg.to_dict(), "contract": contract.to_dict(), "step": 42,
            "generator": gen.state_dict(), "generator_ema": ema.state_dict(),
            "data_summary": {"dataset": "data/kicks", "train": 65, "heldout": 15, "kits": 20},
            "metrics": {"val": 0.5}}
    save_checkpoint(ckpt, run / "best.pt")
    save_checkpoint({**ckpt, "step": 50}, run / "last.pt")
    return run, gen.eval(), ema.eval()


def test_export_cli_from_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.cli import main

    run, gen, ema = _tiny_run(tmp_path)
    out = tmp_path / "model.onnx"
    fast = ["--knob-samples", "64", "--knob-bases", "2", "--knob-steps", "5", "--threads", "1"]
    assert main(["export", str(run), "-o", str(out), *fast]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "parity" in printed and "knobs:" in printed
    m = load_model(out)
    assert m.training["steps"] == 42 and m.training["checkpoint"] == "best.pt" and m.training["ema"] is True
    assert m.training["data"]["kits"] == 20 and m.training["config"] == "tiny"
    assert len(m.knobs) == 8
    z = np.random.default_rng(0).standard_normal((3, m.latent_dim)).astype(np.float32)
    with torch.no_grad():
        want_ema = ema(torch.from_numpy(z)).numpy()
        want_raw = gen(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(m.run(z), want_ema, atol=1e-4)  # the EMA generator is exported
    assert np.abs(want_raw - want_ema).max() > 1e-3
    # --which last, --no-ema
    out2 = tmp_path / "raw.onnx"
    assert main(["export", str(run), "-o", str(out2), "--which", "last", "--no-ema", "--knobs", "0"]) == 0
    m2 = load_model(out2)
    assert m2.knobs == []
    assert m2.training["steps"] == 50 and m2.training["ema"] is False
    np.testing.assert_allclose(m2.run(z), want_raw, atol=1e-4)


def test_export_keeps_the_knobs_of_an_earlier_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--keep-knobs: a re-export takes the knobs (names, directions, measured effects) and the checkpoint's
    recorded date of an earlier file of the same generator; a file of another generator is refused and
    nothing is written."""
    from kickit.cli import main

    run, _, _ = _tiny_run(tmp_path)
    fast = ["--knob-samples", "64", "--knob-bases", "2", "--knob-steps", "5", "--threads", "1"]
    first, again = tmp_path / "first.onnx", tmp_path / "again.onnx"
    assert main(["export", str(run), "-o", str(first), *fast]) == 0
    m1 = load_model(first)
    # as when the checkpoint was copied (a checkout): its file time is not the time it was written
    meta = dict(m1.metadata)
    training = json.loads(meta[META["training"]])
    training["checkpoint_date"] = "2026-01-02T03:04:05+00:00"
    raw = with_metadata(first.read_bytes(), {**meta, META["training"]: json.dumps(training)})
    first.write_bytes(raw)
    capsys.readouterr()
    assert main(["export", str(run), "-o", str(again), "--keep-knobs", str(first), "--knobs", "3"]) == 0
    m2 = load_model(again)
    assert [k.name for k in m2.knobs] == [k.name for k in m1.knobs] and len(m2.knobs) == 8
    for a, b in zip(m1.knobs, m2.knobs, strict=True):
        assert np.array_equal(a.direction, b.direction) and (a.lo, a.hi, a.effect) == (b.lo, b.hi, b.effect)
    assert m2.training["checkpoint_date"] == "2026-01-02T03:04:05+00:00"
    assert m2.training["reexport_of"] == [m1.weights_hash]  # (the same graph here: the same kickit exported both)
    third = tmp_path / "third.onnx"  # a re-export of a re-export names every earlier hash once
    training["reexport_of"] = ["0" * 64]
    first.write_bytes(with_metadata(first.read_bytes(), {**meta, META["training"]: json.dumps(training)}))
    assert main(["export", str(run), "-o", str(third), "--keep-knobs", str(first)]) == 0
    assert load_model(third).training["reexport_of"] == [m1.weights_hash, "0" * 64]
    # another generator's file (the raw weights, not the EMA ones): refused, nothing written
    other = tmp_path / "raw.onnx"
    assert main(["export", str(run), "-o", str(other), "--no-ema", "--knobs", "0"]) == 0
    capsys.readouterr()
    target = tmp_path / "refused.onnx"
    assert main(["export", str(run), "-o", str(target), "--keep-knobs", str(other)]) == 2
    err = capsys.readouterr().err
    assert "raw.onnx: not an export of this generator" in err and err.count("\n") == 1
    assert not target.exists()
    assert main(["export", str(run), "-o", str(target), "--keep-knobs", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err and not target.exists()


def test_export_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.cli import main

    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and err.count("\n") == 1
    run, _, _ = _tiny_run(tmp_path)
    assert main(["export", str(run), "-o", str(tmp_path / "m.onnx"), "--knob-steps", "4"]) == 2
    assert "odd number of steps" in capsys.readouterr().err
    assert main(["export", str(run), "-o", str(tmp_path / "m.onnx"), "--knob-samples", "10"]) == 2
    assert "--knob-samples 10: need at least 32" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", str(junk), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_knobs_are_orthonormal_ordered_and_measured() -> None:
    from kickit.export.knobs import compute_knobs

    def describe(audio: np.ndarray, contract: SpectralContract) -> dict[str, np.ndarray]:
        return {"width": np.abs(audio[:, 0] - audio[:, 1]).mean(-1) / (np.abs(audio).mean((1, 2)) + 1e-9)}

    knobs = compute_knobs(ToyG(), C, LATENT, n=64, bases=2, steps=5, describe=describe)
    assert len(knobs) == 8
    again = compute_knobs(ToyG(), C, LATENT, n=64, bases=2, steps=5, describe=describe)  # deterministic
    assert [k.name for k in again] == [k.name for k in knobs]
    assert all(np.array_equal(a.direction, b.direction) and a.effect == b.effect for a, b in zip(again, knobs, strict=True))
    d = np.stack([k.direction for k in knobs])
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-5)
    change = [k.effect["sound_change_db_per_step"] for k in knobs]
    assert change == sorted(change, reverse=True) and change[-1] > 0
    assert all("width" in k.effect["descriptor_rho"] for k in knobs)
    from kickit.export.knobs import KNOB_NAMES, NAME_MIN_RHO

    for i, k in enumerate(knobs):
        desc = k.effect["named_by"]
        if desc is None:
            assert k.name == f"knob {i + 1}"
        else:  # named after what it audibly drives, and turning it up raises that
            assert desc == "width" and k.name in KNOB_NAMES["width"]
            assert k.effect["descriptor_rho"]["width"] >= NAME_MIN_RHO


def test_vae_encoder_record_round_trip_and_validation(tmp_path: Path) -> None:
    rec = {"file": "m.encoder.onnx", "input": "audio", "sha256": "0" * 64}
    out = tmp_path / "vae.onnx"
    export_generator(ToyG(), C, out, latent_dim=LATENT, knobs=[], family="spec-vae", encoder=rec)
    m = load_model(out)
    assert m.family == "spec-vae" and m.encoder == rec
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(out))
    for p in proto.metadata_props:
        if p.key == META["encoder"]:
            p.value = '"just a name"'
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match=r"bad\.onnx: metadata kickit\.encoder must be an object"):
        load_model(bad)


def test_kick_safe_range_and_naming_rules() -> None:
    from kickit.export.knobs import MIN_RANGE, RANGE, KnobEffect, _spearman, kick_safe_range, name_for

    assert _spearman([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]) == 0.0  # a descriptor the knob does not move
    assert _spearman([1, 2, 3, 4], [1, 9, 10, 30]) == 1.0 and _spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert abs(_spearman([1, 2, 3, 4], [1, 2, 2, 3]) - 0.9486833) < 1e-6  # ties get average ranks

    assert kick_safe_range([1.0] * 9) == (-RANGE, RANGE)
    assert kick_safe_range([]) == (-RANGE, RANGE)
    assert kick_safe_range([0.0, 0.5, 1, 1, 1, 1, 1, 1, 0.9]) == (-RANGE * 2 / 4, RANGE)
    assert kick_safe_range([1, 1, 1, 0, 1, 0, 1, 1, 1]) == (-MIN_RANGE, MIN_RANGE)
    eff = KnobEffect(1.0, 1.1, descriptor_rho={"fundamental_hz": -0.95, "decay_s": 0.9},
                     descriptor_range={"fundamental_hz": 12.0, "decay_s": 0.05})
    assert name_for(eff, set()) == ("pitch", -0.95, "fundamental_hz")
    assert name_for(eff, {"pitch"}) == ("tune", -0.95, "fundamental_hz")
    assert name_for(eff, {"pitch", "tune"}) == ("decay", 0.9, "decay_s")
    quiet = KnobEffect(1.0, 1.1, descriptor_rho={"fundamental_hz": 0.99}, descriptor_range={"fundamental_hz": 1.0})
    assert name_for(quiet, set()) == (None, 0.0, None)  # consistent but inaudible: no name
    loose = KnobEffect(1.0, 1.1, descriptor_rho={"decay_s": 0.5}, descriptor_range={"decay_s": 0.2})
    assert name_for(loose, set()) == (None, 0.0, None)  # audible but not consistent
