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

:func:`fold_for_export` returns a folded deep copy (the training module is untouched); the export's parity
self-test compares the file's graph against the *unfolded* generator, so the fold is checked on every export.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from kickit.training.models import LRELU, UpBlock
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


def _input_sizes(module: nn.Module, latent_dim: int) -> dict[str, tuple[int, int]]:
    """The spatial input size of every UpBlock, found by one forward pass of a zero latent."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, UpBlock):
            hooks.append(sub.register_forward_pre_hook(
                lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))))
    try:
        with torch.no_grad():
            module(torch.zeros(1, latent_dim))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def fold_for_export(generator: nn.Module, latent_dim: int) -> nn.Module:
    """A deep copy of ``generator`` (eval, CPU, float32) with every foldable UpBlock folded (the generator itself
    when it has none, e.g. the waveform GAN)."""
    if not any(isinstance(m, UpBlock) for m in generator.modules()):
        return generator
    g = copy.deepcopy(generator).eval().to("cpu", torch.float32)
    sizes = _input_sizes(g, latent_dim)
    for name, in_size in sizes.items():
        block = g.get_submodule(name)
        if tuple(block.size) != (2 * in_size[0], 2 * in_size[1]):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = g.get_submodule(parent_name) if parent_name else g
        setattr(parent, attr, FoldedUpBlock(block, in_size))
    return g
