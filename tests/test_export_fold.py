"""kickit.export.fold: upsample + conv blocks exported as the equal transposed convolution, checked by parity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from kickit.export import fold as fold_mod  # noqa: E402
from kickit.export.fold import FoldedPixelNorm, FoldedUpBlock, fold_for_export  # noqa: E402
from kickit.export.onnx_export import ExportError, export_generator, to_onnx  # noqa: E402
from kickit.training.config import TrainConfig, get_config  # noqa: E402
from kickit.training.models import Generator, PixelNorm, UpBlock  # noqa: E402
from kickit.training.wavegan import WaveGenerator  # noqa: E402

from kickit.modelfile import load_model  # noqa: E402
from kickit.spectral import DEFAULT_CONTRACT  # noqa: E402

pytestmark = pytest.mark.torch


def _tiny() -> TrainConfig:
    """The tiny config with 16 channels in every block: random weights on 4-channel PixelNorms are ill-conditioned
    (a near-zero channel vector's norm amplifies float32 rounding: torch float32 vs float64 ~1e-4, the parity
    tolerance itself); with 16 channels, ~1.5e-5."""
    return dataclasses.replace(get_config("tiny"), g_channels=(16,) * 6)


def _trained_like(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-zero values everywhere (fresh generators start with zero gains and a tiny output conv)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module.eval()


@pytest.mark.parametrize("coords", [False, True])
@pytest.mark.parametrize("norm", [None, "pixel"])
@pytest.mark.parametrize("texture", [False, True])
def test_folded_block_equals_upsample_conv(coords: bool, norm: str | None, texture: bool) -> None:
    torch.manual_seed(1)
    block = _trained_like(UpBlock(5, 3, (10, 6), norm, coords, texture))
    x = torch.randn(3, 5, 5, 3)
    folded = FoldedUpBlock(block, (5, 3))
    with torch.no_grad():
        want, got = block(x), folded(x)
    assert got.shape == want.shape == (3, 3, 10, 6)
    assert float((got - want).abs().max()) < 1e-5
    # the edges too (zero padding): the first and last rows and columns carry the fold's border cases
    assert float((got[..., [0, -1], :] - want[..., [0, -1], :]).abs().max()) < 1e-5


def test_folded_pixel_norm_equals_pixel_norm() -> None:
    x = torch.randn(3, 7, 5, 4) * 3.0
    x[0, :, 0, 0] = 0.0  # an all-zero channel vector: the epsilon keeps it finite, as in training
    with torch.no_grad():
        want, got = PixelNorm()(x), FoldedPixelNorm(7)(x)
    assert torch.isfinite(got).all()
    assert float((got - want).abs().max()) < 1e-5


@pytest.mark.parametrize(("stereo", "base", "texture"), [("midside", True, 128), ("midside", False, 128),
                                                         ("lr", True, 0), ("lr", False, 0)])
def test_folded_output_equals_the_generator(stereo: str, base: bool, texture: int) -> None:
    """Mid/side mixed into the output kernel, the output block's constants and bias in the bias map: the same
    function, and (with a bias map) the graph ends in one transposed conv, one addition and tanh."""
    cfg = dataclasses.replace(_tiny(), g_stereo=stereo, g_base=base, g_texture=texture, g_coords=256)
    gen = _trained_like(Generator(cfg, DEFAULT_CONTRACT), seed=5)
    folded = fold_for_export(gen, cfg.latent_dim)
    assert not folded.midside and gen.midside == (stereo == "midside")
    z = torch.randn(4, cfg.latent_dim)
    with torch.no_grad():
        assert float((folded(z) - gen(z)).abs().max()) < 1e-4
    graph = onnx.load_from_string(to_onnx(folded, cfg.latent_dim)).graph
    ops = [n.op_type for n in graph.node]
    assert "Sub" not in ops and "Slice" not in ops  # no mid/side arithmetic left
    assert ops.count("ReduceMean") == 1  # the latent's norm only: every PixelNorm mean is a 1x1 conv
    if base:
        producer = {o: n for n in graph.node for o in n.output}
        tanh = producer[graph.output[0].name]
        add = producer[tanh.input[0]]
        assert (tanh.op_type, add.op_type) == ("Tanh", "Add")
        assert producer[add.input[0]].op_type == "ConvTranspose"


def test_fold_refuses_what_it_cannot_fold() -> None:
    with pytest.raises(ValueError, match="not x2"):
        FoldedUpBlock(UpBlock(2, 2, (9, 8), None, False), (4, 4))
    block = UpBlock(2, 2, (8, 8), None, False)
    block.conv = torch.nn.Conv2d(2, 2, 5, padding=2)
    with pytest.raises(ValueError, match="3x3"):
        FoldedUpBlock(block, (4, 4))


def test_fold_for_export_replaces_every_block_and_keeps_the_generator() -> None:
    cfg = _tiny()
    gen = _trained_like(Generator(cfg, DEFAULT_CONTRACT))
    folded = fold_for_export(gen, cfg.latent_dim)
    assert not any(isinstance(m, UpBlock) for m in folded.modules())
    assert sum(isinstance(m, FoldedUpBlock) for m in folded.modules()) == len(cfg.g_channels)
    assert any(isinstance(m, UpBlock) for m in gen.modules())  # the training module is untouched
    z = torch.randn(4, cfg.latent_dim)
    with torch.no_grad():
        assert float((folded(z) - gen(z)).abs().max()) < 1e-4  # the export parity tolerance
    ops = {n.op_type for n in onnx.load_from_string(to_onnx(folded, cfg.latent_dim)).graph.node}
    assert "ConvTranspose" in ops and "Resize" not in ops
    ops = {n.op_type for n in onnx.load_from_string(to_onnx(gen, cfg.latent_dim)).graph.node}
    assert "Resize" in ops and "ConvTranspose" not in ops
    wave = WaveGenerator(get_config("wavegan-tiny"), DEFAULT_CONTRACT)
    assert fold_for_export(wave, 16) is wave  # nothing to fold: exported as trained


def test_export_writes_the_folded_graph_and_a_bad_fold_is_caught(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _tiny()
    gen = _trained_like(Generator(cfg, DEFAULT_CONTRACT), seed=3)
    res = export_generator(gen, DEFAULT_CONTRACT, tmp_path / "f.onnx", latent_dim=cfg.latent_dim, knobs=[])
    plain = export_generator(gen, DEFAULT_CONTRACT, tmp_path / "p.onnx", latent_dim=cfg.latent_dim, knobs=[],
                             fold=False)
    assert res.parity.ok and plain.parity.ok
    mf, mp = load_model(res.path), load_model(plain.path)
    assert mf.training["graph"].startswith("folded") and mp.training["graph"] == "as trained"
    z = np.random.default_rng(0).standard_normal((5, cfg.latent_dim)).astype(np.float32)
    assert np.max(np.abs(mf.run(z) - mp.run(z))) < 1e-4
    # a wrong fold (taps of one phase swapped) changes the function: the parity self-test refuses the file
    monkeypatch.setattr(fold_mod, "_TAPS", fold_mod._TAPS.flip(0))
    with pytest.raises(ExportError, match="parity self-test failed"):
        export_generator(gen, DEFAULT_CONTRACT, tmp_path / "bad.onnx", latent_dim=cfg.latent_dim, knobs=[])
    assert not (tmp_path / "bad.onnx").exists()
