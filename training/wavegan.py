"""The waveform GAN (family ``wave-gan``; the DrumGAN/WaveGAN seed): networks and one training step.

Generator ``z (B, latent) -> (B, channels, n_samples)`` in [-1, 1], stereo audio at the contract's rate and hit
length: a linear layer to a short seed (``n_samples / 4**len(wg_channels)`` samples), then per block x4
nearest-neighbour upsampling + 1-D convolution (no transposed convolutions, so no periodic artefacts),
BatchNorm, LeakyReLU 0.2 and a dilated residual convolution (a wider receptive field at each rate for the
long, low kick body), and an output convolution producing mid and side (L = mid + side, R = mid - side) before
tanh. BatchNorm is exported with its running statistics (eval mode), as the training previews render them.

Discriminator: strided (x4) 1-D convolutions on the raw stereo audio, each followed by LeakyReLU 0.2 and
dropout 0.3 (WaveGAN), and a linear head.

Losses: the adversarial loss of ``cfg.loss`` (``bce``, the seed, or ``hinge``) and optionally the spectral
statistics loss of the spectrogram GAN computed on the encoded generated audio (``stats_weight``; through
:class:`kickit.training.spectral_torch.TorchSpectral`, so the contract is the same).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kickit.training import losses as L
from kickit.training.config import TrainConfig
from kickit.training.models import blocks_then_head
from kickit.training.spectral_torch import TorchSpectral
from torch import nn

from kickit.audio import write_wav
from kickit.hits import finish
from kickit.spectral import SpectralContract

LRELU = 0.2
UPSAMPLE = 4


class WaveBlock(nn.Module):
    """x4 nearest-neighbour upsampling, conv + BatchNorm + LeakyReLU, then a dilated residual conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm1d(c_out)
        self.dil = nn.Conv1d(c_out, c_out, 3, padding=dilation, dilation=dilation)
        self.dil_norm = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=UPSAMPLE, mode="nearest")
        x = F.leaky_relu(self.norm(self.conv(x)), LRELU)
        return x + F.leaky_relu(self.dil_norm(self.dil(x)), LRELU)


class WaveGenerator(nn.Module):
    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        n = len(cfg.wg_channels)
        seed_len, rest = divmod(contract.n_samples, UPSAMPLE**n)
        if rest or seed_len < 1:
            raise ValueError(f"wave generator: {n} x{UPSAMPLE} upsampling blocks do not divide the contract's "
                             f"{contract.n_samples} samples (use fewer wg_channels)")
        self.latent_dim = cfg.latent_dim
        self.channels = contract.channels
        self.out_shape = (contract.channels, contract.n_samples)
        c0 = cfg.wg_channels[0]
        self.seed_shape = (c0, seed_len)
        self.fc = nn.Linear(cfg.latent_dim, c0 * seed_len)
        self.seed_norm = nn.BatchNorm1d(c0)
        chans = (c0, *cfg.wg_channels)
        self.blocks = nn.Sequential(*[WaveBlock(chans[i], chans[i + 1], cfg.wg_kernel, cfg.wg_dilation)
                                      for i in range(n)])
        self.out = nn.Conv1d(cfg.wg_channels[-1], contract.channels, cfg.wg_kernel, padding=cfg.wg_kernel // 2)
        self.midside = contract.channels == 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], *self.seed_shape)
        x = F.leaky_relu(self.seed_norm(x), LRELU)
        x = self.out(self.blocks(x))
        if self.midside:
            x = torch.cat([x[:, :1] + x[:, 1:], x[:, :1] - x[:, 1:]], dim=1)
        return torch.tanh(x)


class WaveDiscriminator(nn.Module):
    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        n = len(cfg.wd_channels)
        if contract.n_samples % UPSAMPLE**n:
            raise ValueError(f"wave discriminator: {n} x{UPSAMPLE} strided blocks do not divide "
                             f"{contract.n_samples} samples")
        blocks: list[nn.Module] = []
        c_prev = contract.channels
        for c in cfg.wd_channels:
            blocks.append(nn.Sequential(
                nn.Conv1d(c_prev, c, cfg.wd_kernel, stride=UPSAMPLE, padding=cfg.wd_kernel // 2),
                nn.LeakyReLU(LRELU), nn.Dropout(cfg.d_dropout)))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_prev * (contract.n_samples // UPSAMPLE**n), 1)

    def forward(self, x: torch.Tensor, features: bool = False) -> Any:
        return blocks_then_head(self.blocks, self.head, x, features)


class WaveGANStep:
    """One training step of the waveform GAN: ``d_steps`` D updates on real vs generated audio, one G update.

    Real batches are drawn with the run's (checkpointed) numpy sampler from the training audio; latents and
    dropout use the torch global RNG (checkpointed too), so a resumed run continues exactly.
    """

    def __init__(self, cfg: TrainConfig, gen: nn.Module, disc: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, spec: TorchSpectral, real_audio: np.ndarray,
                 average_grads: Callable[[nn.Module], None]) -> None:
        self.cfg, self.gen, self.disc, self.opt_g, self.opt_d, self.spec = cfg, gen, disc, opt_g, opt_d, spec
        self.average_grads = average_grads
        self.real = torch.as_tensor(np.asarray(real_audio, dtype=np.float32), device=spec.device)

    def __call__(self, sampler: np.random.Generator, stats: tuple[torch.Tensor, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
        cfg, gen, disc = self.cfg, self.gen, self.disc
        dev = self.real.device
        disc.requires_grad_(True)
        for i in range(cfg.d_steps):
            real = self.real[torch.as_tensor(sampler.integers(0, len(self.real), cfg.batch_size), device=dev)]
            z = torch.randn(cfg.batch_size, cfg.latent_dim, device=dev)
            with torch.set_grad_enabled(i == cfg.d_steps - 1):
                fake = gen(z)
            d_loss = {"d_adv": L.d_adversarial(cfg.loss, disc(real), disc(fake.detach()))}
            d_loss["d_total"] = d_loss["d_adv"]
            self.opt_d.zero_grad(set_to_none=True)
            d_loss["d_total"].backward()
            self.average_grads(disc)
            self.opt_d.step()
        disc.requires_grad_(False)
        g_loss = {"g_adv": L.g_adversarial(cfg.loss, disc(fake))}
        if cfg.stats_weight > 0:
            g_loss["g_stats"] = cfg.stats_weight * L.stats_loss(L.hit_features(self.spec.encode(fake), self.spec),
                                                                 stats)
        g_loss["g_total"] = sum(g_loss.values())
        self.opt_g.zero_grad(set_to_none=True)
        g_loss["g_total"].backward()
        self.average_grads(gen)
        self.opt_g.step()
        return {**d_loss, **g_loss}


def write_audio_preview(out_dir: str | os.PathLike[str], step: int, audio: np.ndarray,
                        contract: SpectralContract) -> list[Path]:
    """Generated hits (n, channels, n_samples) as finished WAVs in ``out_dir/previews/step-NNNNNNN/``."""
    base = Path(out_dir) / "previews" / f"step-{step:07d}"
    return [write_wav(base / f"hit-{i:02d}.wav", hit, contract.sample_rate)
            for i, hit in enumerate(finish(audio, contract))]
