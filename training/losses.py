"""Losses (returned as named dicts), DiffAugment and the spectral statistics of a batch of hits.

* Adversarial: ``hinge`` (default), ``wgan-gp`` (Wasserstein with gradient penalty and a small drift term),
  ``bce`` (non-saturating, the DCGAN baseline).
* Generator feature matching: L1 between the batch-mean discriminator activations of real and fake hits.
* Spectral statistics: per-hit kick descriptors computed from the scaled spectrogram with the contract's row
  frequencies (:func:`hit_features`), compared as batch mean and standard deviation between generated and real
  hits. Rolloff is deliberately absent (it hurt in the seed experiments).
* DiffAugment (Zhao et al. 2020): the same random, differentiable transforms on real and fake inputs of the
  discriminator (time shift with silence fill, level offset of the non-silent cells, cutout), so a small data
  set does not let D memorise the real hits.

Descriptor units are chosen so one unit is a meaningful difference: levels in tens of dB, the centroid in
octaves. The validation metric (:func:`stats_distance`) uses the same features and units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kickit.training.config import TrainConfig
from kickit.training.spectral_torch import TorchSpectral

ENV_SEGMENTS = 16  # envelope: mean level of this many equal time segments
PROFILE_BANDS = 12  # spectral profile: mean level of this many log-spaced frequency groups
LOW_HZ = 150.0  # "low band": where a kick's fundamental and body live
CENTROID_SECONDS = 0.1  # the centroid is measured over the attack and body
DB_UNIT = 10.0
EPS = 1e-10


# ----- descriptors ------------------------------------------------------------------------------------
def hit_features(scaled: torch.Tensor, spec: TorchSpectral) -> torch.Tensor:
    """Descriptors of each hit, (B, K): envelope segments, spectral profile, log centroid, low-band share,
    stereo balance and width (side/mid energy). Differentiable; all but the stereo ones use the mean power of
    the channels."""
    c = spec.contract
    db = spec.unscale_db(scaled.float())
    power = torch.pow(10.0, db / 10.0)  # normalised power; the floor (-120 dB) is ~0
    mid = power.mean(dim=1)  # (B, frames, rows)
    b, frames, rows = mid.shape
    # Envelope decay: level per time segment (frame energy, dB).
    frame_e = mid.sum(dim=-1)
    seg = frame_e[:, : frames - frames % ENV_SEGMENTS].reshape(b, ENV_SEGMENTS, -1).mean(dim=-1)
    env = 10.0 * torch.log10(seg + EPS) / DB_UNIT
    # Spectral profile: level of log-spaced row groups over the whole hit.
    hz = spec.row_hz.to(mid.device)
    total_row = mid.sum(dim=1)  # (B, rows)
    groups = _row_groups(hz)
    prof = torch.stack([total_row[:, g0:g1].sum(dim=-1) for g0, g1 in groups], dim=1)
    prof = 10.0 * torch.log10(prof + EPS) / DB_UNIT
    # Centroid over the attack and body, in octaves above 20 Hz.
    n_body = max(1, min(frames, round(CENTROID_SECONDS * c.sample_rate / c.hop)))
    body = mid[:, :n_body].sum(dim=1)
    logf = torch.log2(hz.clamp_min(20.0) / 20.0)
    centroid = (body * logf).sum(dim=-1) / (body.sum(dim=-1) + EPS)
    # Low-band share of the energy (dB).
    low = total_row[:, hz < LOW_HZ].sum(dim=-1)
    low_share = 10.0 * torch.log10((low + EPS) / (total_row.sum(dim=-1) + EPS)) / DB_UNIT
    # Stereo: level difference between the channels and side/mid energy (dB, the side floored at -40 dB).
    if power.shape[1] >= 2:
        ch = power.sum(dim=(2, 3))
        balance = 10.0 * torch.log10((ch[:, 0] + EPS) / (ch[:, 1] + EPS)) / DB_UNIT
        amp = power[:, :2].sqrt()
        side = (amp[:, 0] - amp[:, 1]).square().sum(dim=(1, 2))
        centre = (amp[:, 0] + amp[:, 1]).square().sum(dim=(1, 2))
        width = 10.0 * torch.log10(side / (centre + EPS) + 1e-4) / DB_UNIT
    else:
        balance = width = torch.zeros_like(centroid)
    return torch.cat([env, prof, centroid[:, None], low_share[:, None], balance[:, None], width[:, None]], dim=1)


def _row_groups(hz: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous row ranges of PROFILE_BANDS log-spaced frequency groups (non-empty ones)."""
    lo, hi = max(float(hz[1]), 20.0), float(hz[-1]) * 1.0001
    edges = torch.logspace(math.log10(lo), math.log10(hi), PROFILE_BANDS + 1, device=hz.device)
    idx = torch.searchsorted(hz.contiguous(), edges).tolist()
    idx[0] = 0
    idx[-1] = hz.numel()
    return [(a, b) for a, b in zip(idx[:-1], idx[1:], strict=True) if b > a]


def stats_loss(fake_feats: torch.Tensor, real: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Squared differences of batch mean and standard deviation of the descriptors; ``real`` is a batch of real
    descriptors or their (mean, std) over a larger set (a steadier target). Real values are detached."""
    mu, sd = real if isinstance(real, tuple) else (real.mean(0), real.std(0))
    d_mu = fake_feats.mean(0) - mu.detach()
    d_sd = fake_feats.std(0) - sd.detach()
    return d_mu.square().mean() + d_sd.square().mean()


@torch.no_grad()
def stats_distance(gen_feats: torch.Tensor, ref_feats: torch.Tensor) -> float:
    """The validation metric: mean over descriptors of (difference of means)^2 + (difference of stds)^2,
    generated (EMA samples) vs held-out hits, in the descriptor units (lower is better)."""
    return float(stats_loss(gen_feats.float(), ref_feats.float()))


# ----- adversarial ------------------------------------------------------------------------------------
def d_adversarial(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean() + 1e-3 * real.square().mean()  # drift keeps D's output centred
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def g_adversarial(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    if kind == "bce":
        return F.softplus(-fake).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def gradient_penalty(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = disc(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def feature_matching(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    total = fake_feats[0].new_zeros(())
    for f, r in zip(fake_feats, real_feats, strict=True):
        total = total + (f.float().mean(0) - r.detach().float().mean(0)).abs().mean()
    return total / len(fake_feats)


def d_losses(cfg: TrainConfig, disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor
             ) -> dict[str, torch.Tensor]:
    """Discriminator losses for (already DiffAugmented) real and detached fake inputs; ``total`` is optimised."""
    out = {"d_adv": d_adversarial(cfg.loss, disc(real), disc(fake))}
    if cfg.loss == "wgan-gp":
        out["d_gp"] = cfg.gp_weight * gradient_penalty(disc, real, fake)
    out["d_total"] = sum(out.values())
    return out


def g_losses(cfg: TrainConfig, disc: torch.nn.Module, fake_aug: torch.Tensor, real_aug: torch.Tensor,
             fake: torch.Tensor, real: torch.Tensor, spec: TorchSpectral,
             real_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Generator losses; ``fake``/``real`` are the un-augmented batches (for the statistics loss, whose target
    is ``real_stats`` (descriptor mean, std over all real training hits) when given, else the real batch)."""
    need_feats = cfg.fm_weight > 0
    if need_feats:
        d_fake, f_fake = disc(fake_aug, features=True)
        with torch.no_grad():
            _, f_real = disc(real_aug, features=True)
    else:
        d_fake = disc(fake_aug)
    out = {"g_adv": g_adversarial(cfg.loss, d_fake)}
    if need_feats:
        out["g_fm"] = cfg.fm_weight * feature_matching(f_fake, f_real)
    if cfg.stats_weight > 0:
        target = real_stats if real_stats is not None else hit_features(real, spec)
        out["g_stats"] = cfg.stats_weight * stats_loss(hit_features(fake, spec), target)
    out["g_total"] = sum(out.values())
    return out


# ----- DiffAugment ------------------------------------------------------------------------------------
def diff_augment(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Random differentiable transforms of a (B, C, frames, rows) scaled batch (torch global RNG)."""
    if not cfg.diffaug:
        return x
    b, _, frames, rows = x.shape
    silence = -1.0
    if "translation" in cfg.diffaug and cfg.diffaug_shift > 0:
        m = max(1, int(round(frames * cfg.diffaug_shift)))
        shift = torch.randint(-m, m + 1, (b, 1, 1, 1), device=x.device)
        idx = torch.arange(frames, device=x.device).view(1, 1, frames, 1) - shift
        valid = (idx >= 0) & (idx < frames)
        gathered = torch.gather(x, 2, idx.clamp(0, frames - 1).expand(b, x.shape[1], frames, rows))
        x = torch.where(valid, gathered, torch.full_like(gathered, silence))
    if "gain" in cfg.diffaug and cfg.diffaug_gain > 0:
        g = (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1) * cfg.diffaug_gain
        x = torch.where(x > silence + 1e-3, (x + g).clamp(-1.0, 1.0), x)
    if "cutout" in cfg.diffaug and cfg.diffaug_cutout > 0:
        ch, cw = max(1, int(frames * cfg.diffaug_cutout)), max(1, int(rows * cfg.diffaug_cutout))
        t0 = torch.randint(0, frames - ch + 1, (b, 1, 1, 1), device=x.device)
        r0 = torch.randint(0, rows - cw + 1, (b, 1, 1, 1), device=x.device)
        t = torch.arange(frames, device=x.device).view(1, 1, frames, 1)
        r = torch.arange(rows, device=x.device).view(1, 1, 1, rows)
        hole = (t >= t0) & (t < t0 + ch) & (r >= r0) & (r < r0 + cw)
        x = torch.where(hole, torch.full_like(x, silence), x)
    return x
