"""Inference form of a generator for export: the same function with fewer multiply-adds.

A spectrogram generator grows its output with :class:`kickit.training.models.UpBlock`: nearest-neighbour
upsampling by 2, then a 3x3 convolution (the DrumGAN seed's "upsample + conv", which trains without the
checkerboard artefacts of a free transposed convolution). Each output pixel then sees only 2x2 distinct input
pixels, so the block is exactly a transposed convolution (stride 2, 4x4 kernel, padding 1) whose kernel is
summed from the 3x3 one: 16 instead of 36 multiply-adds per output pixel and channel, and the big 256x256
layers never convolve an upsampled copy. Measured on the shipped generator with onnxruntime, one thread:
6.1 -> 3.0 ms per hit (docs/benchmarks.md, render). Coordinate channels (a fixed grid concatenated after the
upsampling) contribute a constant map, computed once here and added.

Derivation, per axis: output row ``2i + a`` of the 3x3 convolution (padding 1) reads upsampled rows
``2i + a - 1 .. 2i + a + 1``, which are input rows ``i - 1, i, i`` (a = 0) or ``i, i, i + 1`` (a = 1), so
row ``2i`` is ``w0 x[i-1] + (w1 + w2) x[i]`` and row ``2i + 1`` is ``(w0 + w1) x[i] + w2 x[i+1]``. A transposed
convolution with stride 2 and padding 1 writes ``x[j]`` to output row ``2j + t - 1`` with tap ``t``: row ``2i``
takes tap 3 from ``x[i-1]`` and tap 1 from ``x[i]``, row ``2i + 1`` tap 2 from ``x[i]`` and tap 0 from
``x[i+1]``, hence the taps ``(w2, w1 + w2, w0 + w1, w0)`` (``_TAPS``). Zero padding at the upsampled border is
zero padding at the input border, so the edges are exact too. The kernel is constrained (a function of the
trained 3x3 one), so the transposed convolution is the trained upsample + conv, not a new layer.

Two more folds on the same principle (the function kept, the graph cheaper; onnxruntime, one thread, the
shipped generator: 4.5 -> 3.9 ms per hit):

* PixelNorm's mean over channels is a 1x1 convolution with weights 1/C (and the epsilon as its bias):
  onnxruntime runs it as one small matrix product instead of a reduction across the channel axis, and
  ``x * x`` replaces ``x ** 2`` (:class:`FoldedPixelNorm`).
* The mid/side output (``L = mid + side``, ``R = mid - side``) is linear, so it is mixed into the output
  block's kernel and bias; the output block's constant maps (coordinate channels, the fixed texture noise)
  and its bias are constants, so they join the generator's output bias map: the output is one transposed
  convolution, one addition and tanh (:func:`_fold_output`).

:func:`fold_for_export` returns a folded deep copy (the training module is untouched); the export's parity
self-test compares the file's graph against the *unfolded* generator, so the fold is checked on every export.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from kickit.training.models import LRELU, Generator, PixelNorm, UpBlock
from torch import nn

# transposed-convolution tap t (0..3) as a sum of the 3x3 kernel's taps (rows: t; columns: w0, w1, w2)
_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)


class FoldedUpBlock(nn.Module):
    """:class:`UpBlock` (x2 nearest upsampling + 3x3 conv, padding 1) as one transposed conv (stride 2, 4x4)."""

    def __init__(self, block: UpBlock, in_size: tuple[int, int]) -> None:
        super().__init__()
        h, w = in_size
        if tuple(block.size) != (2 * h, 2 * w):
            raise ValueError(f"FoldedUpBlock: upsampling {in_size} -> {tuple(block.size)} is not x2")
        conv = block.conv
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.dilation != (1, 1) \
                or conv.groups != 1:
            raise ValueError("FoldedUpBlock: only a 3x3 conv with padding 1 folds")
        weight = conv.weight.detach().to(torch.float64)  # (c_out, c_in [+ 2 coords], 3, 3)
        c_in = weight.shape[1] - (2 if block.coords else 0)
        # (c_in, c_out, 4, 4): the transposed convolution's weight layout
        kernel = torch.einsum("tk,ul,oikl->iotu", _TAPS, _TAPS, weight[:, :c_in])
        self.register_buffer("weight", kernel.to(torch.float32))
        self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else None)
        if block.coords:  # the grid is fixed: its contribution is a constant map
            const = F.conv2d(block.grid.to(torch.float64), weight[:, c_in:], padding=1)
            self.register_buffer("const", const.to(torch.float32))
        else:
            self.const = None
        self.noise = block.noise
        self.noise_gain = block.noise_gain if block.noise is not None else None
        self.norm = block.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        x = F.conv_transpose2d(x, self.weight.to(x.dtype), bias, stride=2, padding=1)
        if self.const is not None:
            x = x + self.const.to(x.dtype)
        if self.noise is not None:
            x = x + self.noise_gain.to(x.dtype) * self.noise.to(x.dtype)
        if self.norm is None:
            return x
        return self.norm(F.leaky_relu(x, LRELU))


class FoldedPixelNorm(nn.Module):
    """:class:`PixelNorm` of a (B, C, H, W) input with the channel mean as a 1x1 convolution (module doc)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.full((1, channels, 1, 1), 1.0 / channels))
        self.register_buffer("eps", torch.full((1,), 1e-8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(F.conv2d(x * x, self.weight.to(x.dtype), self.eps.to(x.dtype)))


def _input_shapes(module: nn.Module, latent_dim: int) -> dict[str, tuple[int, ...]]:
    """The input shape (batch 1) of every UpBlock and PixelNorm, found by one forward pass of a zero latent."""
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, (UpBlock, PixelNorm)):
            hooks.append(sub.register_forward_pre_hook(
                lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape))))
    try:
        with torch.no_grad():
            module(torch.zeros(1, latent_dim))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def _fold_output(gen: Generator) -> None:
    """Mid/side mixed into the (folded) output block, its constant maps and bias into the output bias map, in
    place (module doc). A generator without a folded output block, or without mid/side and a bias map, is
    left as it is."""
    out = gen.out
    if not isinstance(out, FoldedUpBlock) or out.norm is not None:
        return
    with torch.no_grad():
        if gen.midside:  # L = mid + side, R = mid - side, on the output channels of everything the block adds
            mix = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
            out.weight = torch.einsum("lc,icuv->iluv", mix, out.weight.to(torch.float64)).to(torch.float32)
            if out.bias is not None:
                out.bias = (mix @ out.bias.to(torch.float64)).to(torch.float32)
            if out.const is not None:
                out.const = torch.einsum("lc,bchw->blhw", mix, out.const.to(torch.float64)).to(torch.float32)
            if out.noise is not None:
                out.noise_gain.copy_(torch.einsum("lc,bchw->blhw", mix, out.noise_gain.to(torch.float64)))
            gen.midside = False
        if gen.base is None:
            return
        base = gen.base.detach().to(torch.float64)
        if out.const is not None:
            base = base + out.const.to(torch.float64)
            out.const = None
        if out.noise is not None:
            base = base + out.noise_gain.detach().to(torch.float64) * out.noise.to(torch.float64)
            out.noise = out.noise_gain = None
        if out.bias is not None:
            base = base + out.bias.to(torch.float64).view(1, -1, 1, 1)
            out.bias = None
        gen.base = nn.Parameter(base.to(torch.float32), requires_grad=False)


def fold_for_export(generator: nn.Module, latent_dim: int) -> nn.Module:
    """A deep copy of ``generator`` (eval, CPU, float32) with every foldable UpBlock and PixelNorm folded and a
    spectrogram generator's output folded (:func:`_fold_output`); the generator itself when there is nothing
    to fold (e.g. the waveform GAN)."""
    if not any(isinstance(m, UpBlock) for m in generator.modules()):
        return generator
    g = copy.deepcopy(generator).eval().to("cpu", torch.float32)
    for name, shape in _input_shapes(g, latent_dim).items():
        sub = g.get_submodule(name)
        if isinstance(sub, UpBlock):
            if tuple(sub.size) != (2 * shape[-2], 2 * shape[-1]):
                continue
            new: nn.Module = FoldedUpBlock(sub, (shape[-2], shape[-1]))
        elif len(shape) == 4:
            new = FoldedPixelNorm(shape[1])
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = g.get_submodule(parent_name) if parent_name else g
        setattr(parent, attr, new)
    for sub in g.modules():
        if isinstance(sub, Generator):
            _fold_output(sub)
    return g
