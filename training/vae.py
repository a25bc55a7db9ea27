"""The spectrogram VAE (family ``spec-vae``; the VAE seed): encoder, decoder and one training step.

* Encoder: strided 4x4 convolutions (``e_channels``) with LeakyReLU 0.2 over the scaled spectrogram plus a row
  (frequency) coordinate channel, then a linear layer to the posterior mean and log-variance of ``latent_dim``.
* Decoder: the spectrogram GAN's generator (:class:`kickit.training.models.Generator`, the same blocks, base map
  and mid/side output) built with ``g_latent_norm=False`` so the latent's length carries information.
* :class:`SpecVAE` holds both; ``forward(z)`` decodes, so validation, previews and knobs treat it like any
  generator (z ~ N(0, I), the prior), and the EMA covers encoder and decoder together.

Loss per step (``VAEStep``): L1 reconstruction of the real batch (mean per cell), ``beta * KL`` with the KL in
nats per latent dimension and beta ramping linearly from 0 to ``kl_beta`` over ``kl_warmup`` steps (so the
decoder learns to use the latent before the prior pulls it in), the spectral-statistics loss on hits decoded
from prior latents (``prior_stats_weight``: what the model plays is prior samples, so they are held to the
real set's descriptor statistics), and optionally (``adv_weight`` > 0) the adversarial loss of ``cfg.loss``
with the spectrogram discriminator on reconstructions and prior samples, for sharpness.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from kickit.training import losses as L
from kickit.training.config import TrainConfig
from kickit.training.models import LRELU, Generator
from kickit.training.spectral_torch import TorchSpectral
from torch import nn

from kickit.spectral import SpectralContract

LOGVAR_MIN, LOGVAR_MAX = -12.0, 6.0


class Encoder(nn.Module):
    """Scaled spectrogram (B, channels, frames, rows) -> (mean, log-variance), each (B, latent)."""

    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        channels, frames, rows = contract.shape
        n = len(cfg.e_channels)
        if frames % 2**n or rows % 2**n:
            raise ValueError(f"encoder: {n} strided blocks do not divide the contract shape {frames}x{rows}")
        self.latent_dim = cfg.latent_dim
        self.in_shape = (channels, frames, rows)
        self.register_buffer("rowpos", torch.linspace(-1.0, 1.0, rows).view(1, 1, 1, rows), persistent=False)
        layers: list[nn.Module] = []
        c_prev = channels + 1
        for c in cfg.e_channels:
            layers += [nn.Conv2d(c_prev, c, 4, stride=2, padding=1), nn.LeakyReLU(LRELU)]
            c_prev = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_prev * (frames >> n) * (rows >> n), 2 * cfg.latent_dim)
        with torch.no_grad():  # start with a narrow posterior near the origin
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([x, self.rowpos.to(x.dtype).expand(x.shape[0], 1, x.shape[2], -1)], dim=1)
        h = self.head(self.convs(x).flatten(1))
        mu, logvar = h[:, : self.latent_dim], h[:, self.latent_dim:]
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class EncoderMean(nn.Module):
    """The exported encoder graph: scaled spectrogram -> posterior mean ``z``."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.encoder(spec)[0]


class SpecVAE(nn.Module):
    def __init__(self, cfg: TrainConfig, contract: SpectralContract) -> None:
        super().__init__()
        if cfg.g_latent_norm:
            cfg = cfg.replace(g_latent_norm=False)
        self.latent_dim = cfg.latent_dim
        self.encoder = Encoder(cfg, contract)
        self.decoder = Generator(cfg, contract)

    def init_base(self, mean_scaled: torch.Tensor) -> None:
        self.decoder.init_base(mean_scaled)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats per latent dimension, averaged over the batch."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).mean()


def beta_at(cfg: TrainConfig, step: int) -> float:
    """The KL weight at ``step``: linear warm-up from 0 to ``kl_beta`` over ``kl_warmup`` steps."""
    if cfg.kl_warmup <= 0:
        return cfg.kl_beta
    return cfg.kl_beta * min(1.0, step / cfg.kl_warmup)


class VAEStep:
    """One VAE training step (module doc); ``disc`` is only updated when ``adv_weight`` > 0."""

    def __init__(self, cfg: TrainConfig, vae: SpecVAE, disc: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, spec: TorchSpectral,
                 average_grads: Callable[[nn.Module], None]) -> None:
        self.cfg, self.vae, self.disc, self.opt_g, self.opt_d, self.spec = cfg, vae, disc, opt_g, opt_d, spec
        self.average_grads = average_grads

    def __call__(self, step: int, data: torch.Tensor, sampler: np.random.Generator,
                 stats: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, vae, disc = self.cfg, self.vae, self.disc
        dev = data.device
        b = cfg.batch_size
        real = data[torch.as_tensor(sampler.integers(0, len(data), b), device=dev)]
        mu, logvar = vae.encode(real)
        z_post = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_prior = torch.randn(b, cfg.latent_dim, device=dev)
        out = vae.decoder(torch.cat([z_post, z_prior]))
        rec, prior = out[:b], out[b:]
        losses: dict[str, torch.Tensor] = {}
        if cfg.adv_weight > 0:
            disc.requires_grad_(True)
            d_loss = L.d_losses(cfg, disc, torch.cat([real, real]), out.detach())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss["d_total"].backward()
            self.average_grads(disc)
            self.opt_d.step()
            disc.requires_grad_(False)
            losses.update(d_loss)
        g = {"g_rec": F.l1_loss(rec, real), "g_kl": beta_at(cfg, step) * kl_per_dim(mu, logvar)}
        if cfg.prior_stats_weight > 0:
            g["g_stats"] = cfg.prior_stats_weight * L.stats_loss(L.hit_features(prior, self.spec), stats)
        if cfg.adv_weight > 0:
            g["g_adv"] = cfg.adv_weight * L.g_adversarial(cfg.loss, disc(out))
        g["g_total"] = sum(g.values())
        self.opt_g.zero_grad(set_to_none=True)
        g["g_total"].backward()
        self.average_grads(vae)
        self.opt_g.step()
        with torch.no_grad():
            g["kl_nats"] = kl_per_dim(mu, logvar).detach()  # logged, not optimised
        return {**losses, **g}
