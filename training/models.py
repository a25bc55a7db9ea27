"""Generator and discriminator of the spectrogram GAN.

Generator ``z (B, latent) -> (B, channels, frames, rows)`` in [-1, 1] (the contract's scaled log-magnitude):
a linear layer to a small seed grid, then blocks of nearest-neighbour upsampling + 3x3 convolution (no
transposed convolutions, so no checkerboard), PixelNorm (batch-independent, so eval output equals training
output and the ONNX export needs no batch statistics) or BatchNorm (the DCGAN baseline), optional
frame/row coordinate maps (a kick is not shift-invariant in frequency or time), a learned output bias map
initialised to the mean real spectrogram, fixed noise maps with learned gains in the high-resolution blocks
(texture, deterministic), a mid/side output (the convolutions produce mid and side levels, so nearly-mono
kicks need no effort to keep both channels alike), and tanh.

Discriminator: strided 4x4 convolutions (downsampling from the first layer keeps the 256x256 input cheap),
spectral norm, self-attention at one low resolution (SAGAN, StereoSampleGAN), a row-coordinate input channel,
and a linear head. ``forward(x, features=True)`` also returns each block's activations (feature matching).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kickit.training.config import TrainConfig
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from kickit.spectral import SpectralContract

LRELU = 0.2


def _coords(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w): frame position and row position, each in [-1, 1]."""
    t = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(1, 1, h, w)
    f = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(1, 1, h, w)
    return torch.cat([t, f], dim=1).contiguous()


class PixelNorm(nn.Module):
    """Normalise each position's channel vector to unit RMS (ProGAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _norm(kind: str, channels: int) -> nn.Module:
    return PixelNorm() if kind == "pixel" else nn.BatchNorm2d(channels)


class UpBlock(nn.Module):
    """Nearest-neighbour upsample to ``size``, (coordinates), 3x3 conv, (LeakyReLU + norm unless final)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], norm: str | None, coords: bool,
                 texture: bool = False) -> None:
        super().__init__()
        self.size = size
        self.coords = coords
        if coords:
            self.register_buffer("grid", _coords(*size), persistent=False)
        self.conv = nn.Conv2d(c_in + (2 if coords else 0), c_out, 3, padding=1)
        self.norm = _norm(norm, c_out) if norm else None
        if texture:  # a fixed noise map (a buffer: deterministic, exported) with learned per-channel gains
            self.register_buffer("noise", torch.randn(1, 1, *size))
            self.noise_gain = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        else:
            self.noise = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.size, mode="nearest")
        if self.coords:
            x = torch.cat([x, self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        x = self.conv(x)
        if self.noise is not None:
            x = x + self.noise_gain.to(x.dtype) * self.noise.to(x.dtype)
        if self.norm is None:
            return x
        return self.norm(F.leaky_relu(x, LRELU))


class Generator(nn.Module):
    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        channels, frames, rows = contract.shape
        n = len(cfg.g_channels)
        if frames % 2**n or rows % 2**n:
            raise ValueError(f"generator: {n} upsampling blocks do not divide the contract shape "
                             f"{frames}x{rows} (use fewer g_channels)")
        self.latent_dim = cfg.latent_dim
        self.latent_norm = cfg.g_latent_norm
        self.out_shape = (channels, frames, rows)
        h, w = frames >> n, rows >> n
        c0 = cfg.g_channels[0]
        self.seed_shape = (c0, h, w)
        self.fc = nn.Linear(cfg.latent_dim, c0 * h * w)
        self.seed_norm = _norm(cfg.g_norm, c0)
        blocks = []
        for i in range(1, n):
            size = (h << i, w << i)
            blocks.append(UpBlock(cfg.g_channels[i - 1], cfg.g_channels[i], size, cfg.g_norm,
                                  max(size) <= cfg.g_coords, 0 < cfg.g_texture <= max(size)))
        self.blocks = nn.Sequential(*blocks)
        self.out = UpBlock(cfg.g_channels[-1], channels, (frames, rows), None, max(frames, rows) <= cfg.g_coords,
                           0 < cfg.g_texture <= max(frames, rows))
        self.midside = cfg.g_stereo == "midside" and channels == 2
        if cfg.g_base:
            self.base = nn.Parameter(torch.zeros(1, channels, frames, rows))
            with torch.no_grad():  # start near the base map: the convs learn the residual
                self.out.conv.weight.mul_(0.1)
                self.out.conv.bias.zero_()
        else:
            self.base = None
        if cfg.g_norm == "batch":
            _dcgan_init(self)

    @torch.no_grad()
    def init_base(self, mean_scaled: torch.Tensor) -> None:
        """Set the output bias map so an all-zero residual gives ``mean_scaled`` (channels, frames, rows)."""
        if self.base is None:
            return
        self.base.copy_(torch.atanh(mean_scaled.clamp(-0.995, 0.995)).view_as(self.base))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent_norm:
            z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        x = self.fc(z).view(z.shape[0], *self.seed_shape)
        x = self.seed_norm(F.leaky_relu(x, LRELU))
        x = self.out(self.blocks(x))
        if self.midside:  # the convs produce mid and side levels: L = mid + side, R = mid - side
            x = torch.cat([x[:, :1] + x[:, 1:], x[:, :1] - x[:, 1:]], dim=1)
        if self.base is not None:
            x = x + self.base.to(x.dtype)
        return torch.tanh(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention over all positions of a (low-resolution) feature map; gamma starts at 0."""

    def __init__(self, c: int, sn: bool) -> None:
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.q = wrap(nn.Conv2d(c, max(1, c // 8), 1))
        self.k = wrap(nn.Conv2d(c, max(1, c // 8), 1))
        self.v = wrap(nn.Conv2d(c, max(1, c // 2), 1))
        self.o = wrap(nn.Conv2d(max(1, c // 2), c, 1))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)  # (b, hw, c/8)
        k = self.k(x).flatten(2)  # (b, c/8, hw)
        v = self.v(x).flatten(2)  # (b, c/2, hw)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (b, hw, hw)
        y = torch.bmm(v, attn.transpose(1, 2)).view(b, -1, h, w)
        return x + self.gamma * self.o(y)


class Discriminator(nn.Module):
    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        channels, frames, rows = contract.shape
        n = len(cfg.d_channels)
        if frames % 2**n or rows % 2**n:
            raise ValueError(f"discriminator: {n} strided blocks do not divide the contract shape {frames}x{rows}")
        wrap = spectral_norm if cfg.d_spectral_norm else (lambda m: m)
        self.coords = cfg.d_coords
        if self.coords:
            self.register_buffer("rowpos", torch.linspace(-1.0, 1.0, rows).view(1, 1, 1, rows), persistent=False)
        blocks: list[nn.Module] = []
        c_prev = channels + (1 if self.coords else 0)
        h = frames
        for i, c in enumerate(cfg.d_channels):
            layers: list[nn.Module] = [wrap(nn.Conv2d(c_prev, c, 4, stride=2, padding=1))]
            if not cfg.d_spectral_norm and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(LRELU))
            h //= 2
            if cfg.d_attention and h == cfg.d_attention:
                layers.append(SelfAttention(c, cfg.d_spectral_norm))
            blocks.append(nn.Sequential(*layers))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.head = wrap(nn.Linear(c_prev * (frames >> n) * (rows >> n), 1))
        if not cfg.d_spectral_norm:
            _dcgan_init(self)

    def forward(self, x: torch.Tensor, features: bool = False) -> Any:
        if self.coords:
            x = torch.cat([x, self.rowpos.to(x.dtype).expand(x.shape[0], 1, x.shape[2], -1)], dim=1)
        return blocks_then_head(self.blocks, self.head, x, features)


def blocks_then_head(blocks: nn.ModuleList, head: nn.Module, x: torch.Tensor, features: bool) -> Any:
    """A discriminator's forward: its blocks in turn, then the linear head on the flattened last output.
    Returns the logits (B,), or with ``features`` also every block's output (for the G feature-matching loss)."""
    feats = []
    for block in blocks:
        x = block(x)
        feats.append(x)
    logits = head(x.flatten(1)).squeeze(1)
    return (logits, feats) if features else logits


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_generator(cfg: TrainConfig | dict[str, Any], contract: SpectralContract) -> nn.Module:
    """A freshly initialised generator of the config's family (uses the torch global RNG): the spectrogram
    :class:`Generator`, the waveform generator (``wave-gan``) or the whole VAE (``spec-vae``, whose forward
    decodes)."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    if cfg.family == "wave-gan":
        from kickit.training.wavegan import WaveGenerator

        return WaveGenerator(cfg, contract)
    if cfg.family == "spec-vae":
        from kickit.training.vae import SpecVAE

        return SpecVAE(cfg, contract)
    return Generator(cfg, contract)


def build_discriminator(cfg: TrainConfig | dict[str, Any], contract: SpectralContract) -> nn.Module:
    """The family's discriminator (the spectrogram one for ``spec-gan`` and ``spec-vae``)."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    if cfg.family == "wave-gan":
        from kickit.training.wavegan import WaveDiscriminator

        return WaveDiscriminator(cfg, contract)
    return Discriminator(cfg, contract)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def generator_from_checkpoint(ckpt: dict[str, Any], ema: bool = True) -> nn.Module:
    """The (EMA) generator of a loaded checkpoint, on CPU, float32, in eval mode."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    contract = SpectralContract.from_dict(ckpt["contract"])
    generator = build_generator(cfg, contract)
    key = "generator_ema" if ema else "generator"
    try:
        generator.load_state_dict(ckpt[key])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"checkpoint: {key} weights do not fit the {cfg.name!r} config "
                         f"({str(e).splitlines()[0]})") from None
    return generator.eval()
