"""The one training configuration (:class:`TrainConfig`), its named presets and JSON overrides.

Named configs:

* ``default``: the shipped model. Lean nearest-neighbour-upsampling generator with a learned mean-spectrogram
  base, coordinate maps, fixed-noise texture and a mid/side output; spectral-norm discriminator with
  self-attention at 16x16; hinge loss, feature matching, the spectral-statistics loss, DiffAugment and an
  augmentation pool (small-data GAN).
* ``dcgan``: the "Kick it Out" baseline: plain DCGAN (BatchNorm generator producing left/right directly, no
  base map, coordinates or texture; no attention, no spectral norm, no feature matching, no statistics loss, no
  DiffAugment or augmentation pool), non-saturating BCE loss, Adam(0.5, 0.999).
* ``tiny``: a very small network for tests (seconds per run on CPU).
* ``wavegan`` / ``wavegan-tiny`` (family ``wave-gan``, :mod:`kickit.training.wavegan`): the DrumGAN/WaveGAN seed,
  a 1-D conv generator straight to stereo audio (nearest-neighbour upsampling + conv, dilated convs, BatchNorm)
  against a strided 1-D conv discriminator (dropout 0.3, LeakyReLU 0.2); BCE (the seed) or hinge.
* ``vae`` / ``vae-tiny`` (family ``spec-vae``, :mod:`kickit.training.vae`): the VAE seed, a conv encoder to the
  posterior mean/log-variance and the spectrogram generator as decoder; L1 reconstruction, KL with beta
  warm-up, the spectral-statistics loss on prior samples, optional adversarial loss.

``--config PATH`` reads a JSON object of overrides; its optional ``"base"`` names the preset it starts from
(``default`` when absent). The config travels in every checkpoint as a plain dict (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSSES = ("hinge", "wgan-gp", "bce")
TRAIN_FAMILIES = ("spec-gan", "wave-gan", "spec-vae")  # model families this trainer builds (kickit.modelfile)
DIFFAUG_OPS = ("translation", "gain", "cutout")
NORMS = ("pixel", "batch")


@dataclass
class TrainConfig:
    name: str = "default"
    family: str = "spec-gan"  # "spec-gan", "wave-gan" (training/wavegan.py) or "spec-vae" (training/vae.py)
    seed: int = 0
    # ----- generator --------------------------------------------------------------------------------
    latent_dim: int = 128
    # Channels from the 4x4 seed up to the last hidden block (one entry per resolution: 4, 8, ..., 128);
    # the final block upsamples to the contract's (frames, rows) and convolves straight to the channels.
    g_channels: tuple[int, ...] = (256, 128, 64, 32, 16, 8)
    g_norm: str = "pixel"  # "pixel" (batch-independent: eval == train, export-safe) or "batch" (DCGAN)
    # Append frame/row coordinate maps to the conv inputs of blocks up to this resolution (0: none): a kick is
    # not shift-invariant in frequency or time; the high-resolution blocks inherit the position from below.
    g_coords: int = 64
    g_base: bool = True  # learned output bias map, initialised to the mean real spectrogram
    g_texture: int = 128  # blocks at this resolution and above add a fixed noise map with learned gains (0: none)
    g_stereo: str = "midside"  # "midside": the convs produce mid and side levels; "lr": left and right directly
    g_latent_norm: bool = True  # normalise z to unit RMS first (GANs); a VAE decoder keeps the latent's length
    # ----- discriminator ----------------------------------------------------------------------------
    d_channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256)  # strided 4x4 convs: 128, 64, 32, 16, 8, 4
    d_attention: int = 16  # resolution at which self-attention runs (0: none)
    d_spectral_norm: bool = True
    d_coords: bool = True  # a row (frequency) coordinate channel at the input
    # ----- waveform GAN (family "wave-gan") ------------------------------------------------------------
    # Generator: a linear seed of n_samples / 4**len(wg_channels) samples, then per entry one block of x4
    # nearest-neighbour upsampling + conv (wg_kernel) + BatchNorm + LeakyReLU and a dilated residual conv.
    wg_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    wg_kernel: int = 9
    wg_dilation: int = 3
    # Discriminator: strided (x4) 1-D convs on the stereo audio, LeakyReLU 0.2 and dropout after each.
    wd_channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    wd_kernel: int = 9
    d_dropout: float = 0.3
    # ----- VAE (family "spec-vae") ------------------------------------------------------------------------
    e_channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256)  # encoder: strided 4x4 convs, then mean/log-variance
    kl_beta: float = 0.01  # weight of the KL divergence in nats per latent dimension (after the warm-up)
    kl_warmup: int = 1000  # steps over which beta ramps linearly from 0 to kl_beta
    adv_weight: float = 0.0  # optional adversarial loss (cfg.loss, the spectrogram D) on decoded hits
    prior_stats_weight: float = 0.1  # spectral-statistics loss on hits decoded from prior latents
    # ----- losses -----------------------------------------------------------------------------------
    loss: str = "hinge"  # "hinge", "wgan-gp" or "bce" (non-saturating, the DCGAN baseline)
    gp_weight: float = 10.0
    fm_weight: float = 1.0  # generator feature matching (mean D features real vs fake)
    stats_weight: float = 1.0  # spectral-statistics loss (batch statistics of descriptors)
    # ----- optimisation -----------------------------------------------------------------------------
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    d_steps: int = 1  # discriminator updates per generator update
    ema_decay: float = 0.999
    ema_start: int = 100  # steps before the EMA starts tracking (copied until then)
    max_steps: int = 6000  # ~1.6 h on 2 quiet CPU cores at ~1 step/s (kickit bench train); minutes on an H100
    amp: bool = False  # bf16 autocast on CUDA
    threads: int = 2  # torch intra-op threads on CPU
    channels_last: bool = True
    # ----- small-data measures ----------------------------------------------------------------------
    diffaug: tuple[str, ...] = ("translation", "gain", "cutout")
    diffaug_shift: float = 0.0625  # max time shift as a share of the frames
    diffaug_gain: float = 0.1  # max level offset in scaled units (0.1 = 6.3 dB)
    diffaug_cutout: float = 0.25  # cutout band size as a share of frames/rows
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig overrides (kickit.training.augment)
    aug_pool: int = 512  # augmented real hits encoded once per refresh (0: plain training spectrograms)
    aug_refresh: int = 500  # steps between pool refreshes
    # ----- bookkeeping ------------------------------------------------------------------------------
    log_every: int = 10
    preview_every: int = 500
    checkpoint_every: int = 250
    val_every: int = 250
    val_samples: int = 128
    preview_hits: int = 8

    def __post_init__(self) -> None:
        for name in ("g_channels", "d_channels", "wg_channels", "wd_channels", "e_channels"):
            setattr(self, name, tuple(int(c) for c in getattr(self, name)))
        self.diffaug = tuple(str(o) for o in self.diffaug)
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"training config {self.name!r}: {msg}")

        if self.family not in TRAIN_FAMILIES:
            bad(f"family {self.family!r} is not one of {TRAIN_FAMILIES}")
        if self.loss not in LOSSES:
            bad(f"loss {self.loss!r} is not one of {LOSSES}")
        for name in ("wg_channels", "wd_channels", "e_channels"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                bad(f"{name} must be a non-empty list of positive channel counts")
        if self.wg_kernel < 1 or self.wg_kernel % 2 == 0 or self.wd_kernel < 1 or self.wd_kernel % 2 == 0:
            bad("wg_kernel and wd_kernel must be odd and >= 1")
        if self.wg_dilation < 1:
            bad("wg_dilation must be >= 1")
        if not 0.0 <= self.d_dropout < 1.0:
            bad("d_dropout must be in [0, 1)")
        if self.kl_beta < 0 or self.kl_warmup < 0 or self.adv_weight < 0 or self.prior_stats_weight < 0:
            bad("kl_beta, kl_warmup, adv_weight and prior_stats_weight must be >= 0")
        if self.family == "wave-gan" and self.loss == "wgan-gp":
            bad("the wave-gan family supports the bce and hinge losses")
        if self.g_stereo not in ("midside", "lr"):
            bad(f"g_stereo {self.g_stereo!r} is not 'midside' or 'lr'")
        if self.g_norm not in NORMS:
            bad(f"g_norm {self.g_norm!r} is not one of {NORMS}")
        unknown = sorted(set(self.diffaug) - set(DIFFAUG_OPS))
        if unknown:
            bad(f"unknown diffaug ops {unknown} (known: {DIFFAUG_OPS})")
        if self.latent_dim < 1:
            bad("latent_dim must be >= 1")
        if not self.g_channels or min(self.g_channels) < 1:
            bad("g_channels must be a non-empty list of positive channel counts")
        if not self.d_channels or min(self.d_channels) < 1:
            bad("d_channels must be a non-empty list of positive channel counts")
        if self.d_attention and (self.d_attention & (self.d_attention - 1)):
            bad(f"d_attention {self.d_attention} must be 0 or a power of two")
        if self.batch_size < 2:
            bad("batch_size must be >= 2 (batch statistics need two hits)")
        for name in ("lr_g", "lr_d", "max_steps", "log_every", "preview_every", "checkpoint_every", "val_every",
                     "d_steps", "threads"):
            if getattr(self, name) <= 0:
                bad(f"{name} must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            bad("ema_decay must be in [0, 1)")
        if self.val_samples < 2:
            bad("val_samples must be >= 2")
        if self.preview_hits < 0 or self.aug_pool < 0 or self.aug_refresh < 1:
            bad("preview_hits and aug_pool must be >= 0, aug_refresh >= 1")
        from kickit.training.augment import AugmentConfig

        try:
            AugmentConfig(**self.augment)
        except (TypeError, ValueError) as e:
            bad(f"augment {self.augment}: {e}")

    # ----- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"training config: unknown fields {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _default() -> TrainConfig:
    return TrainConfig()


def _tiny() -> TrainConfig:
    return TrainConfig(
        name="tiny", latent_dim=16, g_channels=(16, 16, 8, 8, 4, 4), d_channels=(4, 8, 8, 16, 16, 16),
        d_attention=16, batch_size=4, max_steps=4, ema_start=1, aug_pool=8, aug_refresh=2,
        log_every=1, preview_every=2, checkpoint_every=2, val_every=2, val_samples=4, preview_hits=2,
    )


def _dcgan() -> TrainConfig:
    return TrainConfig(
        name="dcgan", g_norm="batch", g_coords=0, g_base=False, g_texture=0, g_stereo="lr", d_attention=0,
        d_spectral_norm=False, d_coords=False, loss="bce", fm_weight=0.0, stats_weight=0.0, beta1=0.5, beta2=0.999, diffaug=(),
        aug_pool=0,
    )


def _wavegan() -> TrainConfig:
    # The DrumGAN/WaveGAN seed: BCE, Adam(0.5, 0.9)-style momentum, no spectrogram-only small-data measures
    # (DiffAugment and the augmentation pool work on spectrograms); the statistics loss runs on the encoded audio.
    return TrainConfig(
        name="wavegan", family="wave-gan", loss="bce", fm_weight=0.0, stats_weight=1.0, beta1=0.5, beta2=0.9,
        lr_g=1e-4, lr_d=1e-4, diffaug=(), aug_pool=0,
    )


def _wavegan_tiny() -> TrainConfig:
    return _wavegan().replace(
        name="wavegan-tiny", latent_dim=16, wg_channels=(16, 8, 8, 4, 4), wd_channels=(4, 8, 8, 16, 16),
        wg_kernel=5, wd_kernel=5, batch_size=4, max_steps=4, ema_start=1, log_every=1, preview_every=2,
        checkpoint_every=2, val_every=2, val_samples=4, preview_hits=2,
    )


def _vae() -> TrainConfig:
    return TrainConfig(
        name="vae", family="spec-vae", latent_dim=64, g_latent_norm=False, loss="hinge", fm_weight=0.0,
        stats_weight=0.0, diffaug=(), aug_pool=512, lr_g=5e-4, beta1=0.9, beta2=0.999,
    )


def _vae_tiny() -> TrainConfig:
    return _vae().replace(
        name="vae-tiny", latent_dim=16, g_channels=(16, 16, 8, 8, 4, 4), d_channels=(4, 8, 8, 16, 16, 16),
        e_channels=(4, 8, 8, 16, 16, 16), d_attention=16, g_texture=0, batch_size=4, max_steps=4, ema_start=1, aug_pool=8,
        aug_refresh=2, kl_warmup=2, adv_weight=0.1, log_every=1, preview_every=2, checkpoint_every=2, val_every=2,
        val_samples=4, preview_hits=2,
    )


NAMED: dict[str, Any] = {"default": _default, "tiny": _tiny, "dcgan": _dcgan, "wavegan": _wavegan,
                         "wavegan-tiny": _wavegan_tiny, "vae": _vae, "vae-tiny": _vae_tiny}


def get_config(name: str) -> TrainConfig:
    """A named config (``default``, ``tiny``, ``dcgan``, ``wavegan``, ``wavegan-tiny``, ``vae``, ``vae-tiny``)."""
    if name not in NAMED:
        raise ValueError(f"unknown training config {name!r} (named configs: {', '.join(NAMED)})")
    return NAMED[name]()


def load_config(name_or_path: str | os.PathLike[str]) -> TrainConfig:
    """A named config, or a JSON file of overrides (``{"base": "default", "batch_size": 8, ...}``)."""
    s = str(name_or_path)
    if s in NAMED:
        return get_config(s)
    p = Path(s)
    if not p.is_file():
        raise ValueError(f"--config {s}: neither a named config ({', '.join(NAMED)}) nor a JSON file")
    try:
        overrides = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable JSON config ({str(e).splitlines()[0]})") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{p}: a JSON config must be an object of overrides")
    base = overrides.pop("base", "default")
    cfg = get_config(str(base)).to_dict()
    cfg["name"] = overrides.pop("name", p.stem)
    try:
        return TrainConfig.from_dict({**cfg, **overrides})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: {e}") from None


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return p
