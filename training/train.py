"""The training loop, top to bottom: setup, data, models, resume, then steps of D and G updates with EMA,
logging, validation, checkpoints and previews.

One step: a batch of real spectrograms from the augmentation pool (the training hits plus ``aug_pool``
augmented copies, re-drawn every ``aug_refresh`` steps); ``d_steps`` discriminator updates on DiffAugmented
real vs generated hits; one generator update that reuses the last generated batch (adversarial + feature
matching + spectral statistics against the whole pool's descriptor statistics); an EMA update of the generator
(the weights that are exported), with a warm-up so early EMAs are not stale.

Other families (``cfg.family``): the loop, bookkeeping, EMA, checkpoints and resume are shared; the step is the
family's own (``wave-gan``: :class:`kickit.training.wavegan.WaveGANStep` on the training audio; ``spec-vae``:
:class:`kickit.training.vae.VAEStep` on the pool's spectrograms; the VAE's encoder and decoder are one module,
so "generator" in the checkpoint holds both). Validation and previews see every family's output as a
spectrogram (waveform output is encoded with the contract); wave-gan previews write the generated audio itself.

Data parallel (``torchrun --nproc_per_node N -m kickit.cli train ...`` or any launcher that sets
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``): every rank holds the full models, draws its own
batches, latents and augmentations, and gradients are averaged with ``all_reduce`` after each backward (the DDP
algorithm, done by hand because a GAN step runs the discriminator several times per backward). Rank 0 logs,
validates, previews and writes checkpoints; before each checkpoint the ranks compare weight checksums.

Resuming is exact: a checkpoint holds the step, model and optimiser states and every RNG (python, numpy, torch
and the batch sampler, per rank); the augmentation pool is a pure function of (seed, rank, refresh index), so it
is rebuilt rather than stored. Validation and previews use their own generators and never touch those RNGs.

The validation metric (``val_stats``, lower is better; ``best.pt`` keeps its minimum): the spectral-statistics
distance (:func:`kickit.training.losses.stats_distance`) between ``val_samples`` EMA-generator hits from fixed
latents and all held-out real hits: squared differences of the mean and standard deviation of each kick
descriptor (envelope segments, spectral profile, centroid, low-band share, stereo balance), in units of 10 dB
and octaves. It is cheap (one generator pass, no phase reconstruction) and tracks what the kick checks and the
Frechet distance of ``kickit eval`` measure; 0 means the generated set matches the held-out set's statistics.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
from kickit.training import checkpoint as ckpt_mod
from kickit.training import losses as L
from kickit.training.config import TrainConfig, save_config
from kickit.training.models import build_discriminator, build_generator, count_parameters
from kickit.training.preview import write_preview
from kickit.training.spectral_torch import TorchSpectral
from kickit.training.vae import VAEStep
from kickit.training.wavegan import WaveGANStep, write_audio_preview

from kickit.spectral import SpectralContract

VAL_SEED = 1234  # fixed latents for validation and previews
LOG_NAME = "log.csv"
FAMILY_LOG_COLUMNS: dict[str, tuple[str, ...]] = {"spec-vae": ("g_rec", "g_kl", "kl_nats")}  # after val_stats


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_val: float
    metrics: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0  # training updates only (no validation/checkpoint/preview), first step excluded
    step_seconds: list[float] = field(default_factory=list)  # each step's update time in this call


# ----- small helpers ----------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _average_grads(module: torch.nn.Module, world: int) -> None:
    if world == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def _average_scalars(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist(), strict=True)}


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def data_summary(ds: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Dataset path, counts, kits and the skipped (unusable) files with their reasons."""
    manifest = ds.manifest if isinstance(getattr(ds, "manifest", None), dict) else {}
    items = [i for i in manifest.get("items", []) if isinstance(i, dict)]
    skipped = [f"{s.get('path')}: {s.get('reason')}" if isinstance(s, dict) else str(s)
               for s in manifest.get("skipped", [])]
    return {
        **(ds.summary() if hasattr(ds, "summary") else {}),
        "path": str(Path(path).resolve()),
        "train": int(len(ds.train_spec)),
        "heldout": int(len(ds.heldout_spec)),
        "kits": sorted({str(i["kit"]) for i in items if i.get("kit") is not None}),
        "skipped": skipped,
    }


class AugmentPool:
    """Real training spectrograms plus ``cfg.aug_pool`` augmented ones, rebuilt every ``aug_refresh`` steps.

    The augmented hits are a pure function of (seed, rank, refresh index), so a resumed run rebuilds exactly
    the pool the uninterrupted run had.
    """

    def __init__(self, cfg: TrainConfig, ds: Any, spec: TorchSpectral, rank: int, device: torch.device) -> None:
        self.cfg, self.ds, self.spec, self.rank, self.device = cfg, ds, spec, rank, device
        self.real = torch.as_tensor(np.asarray(ds.train_spec, dtype=np.float32), device=device)
        self.block: int | None = None
        self.data = self.real
        self.stats = self._stats()
        self.augmenter = None
        if cfg.aug_pool > 0:
            from kickit.training.augment import AugmentConfig, Augmenter

            self.augmenter = Augmenter(AugmentConfig(**cfg.augment), ds.contract)

    def at(self, step: int) -> torch.Tensor:
        if self.augmenter is None:
            return self.data
        block = step // self.cfg.aug_refresh
        if block != self.block:
            rng = np.random.default_rng([self.cfg.seed, self.rank, 7919, block])
            audio = np.asarray(self.ds.train_audio, dtype=np.float32)
            pick = rng.integers(0, len(audio), self.cfg.aug_pool)
            specs = []
            for i in range(0, len(pick), 32):
                aug = np.asarray(self.augmenter(audio[pick[i: i + 32]], rng), dtype=np.float32)
                specs.append(self.spec.encode(torch.as_tensor(aug, device=self.device)))
            self.data = torch.cat([self.real, *specs])
            self.stats = self._stats()
            self.block = block
        return self.data

    @torch.no_grad()
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the kick descriptors over the whole pool: the statistics loss's target."""
        feats = torch.cat([L.hit_features(self.data[i: i + 64], self.spec) for i in range(0, len(self.data), 64)])
        return feats.mean(0), feats.std(0)


def _family_step(cfg: TrainConfig, gen: torch.nn.Module, disc: torch.nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, spec: TorchSpectral, ds: Any, world: int
                 ) -> Callable[[int, torch.Tensor, np.random.Generator, Any], dict[str, torch.Tensor]] | None:
    """The training step of a non-default family, as ``step_fn(step, pool_data, sampler, pool_stats)``; None for
    the spectrogram GAN (whose step is written out in :func:`train`)."""
    def average(module: torch.nn.Module) -> None:
        _average_grads(module, world)

    if cfg.family == "wave-gan":
        wave = WaveGANStep(cfg, gen, disc, opt_g, opt_d, spec, ds.train_audio, average)
        return lambda step, data, sampler, stats: wave(sampler, stats)
    if cfg.family == "spec-vae":
        return VAEStep(cfg, gen, disc, opt_g, opt_d, spec, average)  # type: ignore[arg-type]
    return None


# ----- the run ----------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    max_steps: int | None = None,
    device: str = "cpu",
    progress: TextIO | None = sys.stderr,
    fault: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``out_dir``; returns when ``max_steps`` is reached.

    ``fault(step, generator)`` is a test hook called after each step's update (to inject NaN weights).
    """
    from kickit.training.data import load_dataset

    # --- setup: ranks, device, threads, seeds ---
    rank, world, local_rank = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    master = rank == 0
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif device == "cpu":
        dev = torch.device("cpu")  # processes on one machine share its cfg.threads cores
        torch.set_num_threads(max(1, cfg.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    else:
        raise ValueError(f"--device {device!r}: use cpu or cuda")
    out = Path(out_dir)
    last_path = out / ckpt_mod.LAST
    if resume and not last_path.is_file():
        raise FileNotFoundError(f"{out}: --resume but the run folder has no {ckpt_mod.LAST}")
    if not resume and last_path.exists():
        raise FileExistsError(f"{out}: already holds a run ({ckpt_mod.LAST}); use --resume or another folder")
    ckpt = ckpt_mod.load_checkpoint(last_path, map_location="cpu") if resume else None
    if resume and master:
        for tmp in ckpt_mod.remove_partial(out):
            _say(progress, f"removed {tmp.name}: a checkpoint write that never finished (the run was killed)")
    if ckpt is not None:
        cfg = TrainConfig.from_dict(ckpt["config"])  # a run keeps the config it started with
    if max_steps is not None:
        cfg = cfg.replace(max_steps=int(max_steps))
    amp = cfg.amp and dev.type == "cuda"
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    # --- data ---
    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data}: no such dataset folder (build one with kickit data build)")
    ds = load_dataset(data)
    contract: SpectralContract = ds.contract
    if ckpt is not None and SpectralContract.from_dict(ckpt["contract"]) != contract:
        raise ValueError(f"{data}: the dataset's spectral contract differs from the checkpoint's")
    if len(ds.train_spec) < 1 or len(ds.heldout_spec) < 2:
        raise ValueError(f"{data}: need >= 1 training and >= 2 held-out hits "
                         f"(has {len(ds.train_spec)} and {len(ds.heldout_spec)})")
    summary = data_summary(ds, data)
    spec = TorchSpectral(contract, dev)

    # --- models (identical initial weights on every rank), optimisers ---
    torch.manual_seed(cfg.seed)
    gen = build_generator(cfg, contract).to(dev, memory_format=fmt)
    disc = build_discriminator(cfg, contract).to(dev, memory_format=fmt)
    if hasattr(gen, "init_base"):  # spectrogram outputs start at the mean real spectrogram
        gen.init_base(torch.as_tensor(np.asarray(ds.train_spec, dtype=np.float32)).mean(0).to(dev))
    gen_ema = copy.deepcopy(gen).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    sampler = np.random.default_rng([cfg.seed, rank])
    torch.manual_seed(cfg.seed * 1000 + rank)
    np.random.seed((cfg.seed * 1000 + rank) % 2**32)

    # --- resume ---
    step, best_val, metrics = 0, math.inf, {}
    if ckpt is not None:
        gen.load_state_dict(ckpt["generator"])
        gen_ema.load_state_dict(ckpt["generator_ema"])
        disc.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step = int(ckpt["step"])
        metrics = dict(ckpt.get("metrics") or {})
        best_val = float(metrics.get("best_val", math.inf))
        rngs = ckpt["rng"]
        ckpt_mod.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0], sampler)
        del ckpt

    # --- bookkeeping: fixed validation latents, held-out features, log ---
    zgen = torch.Generator().manual_seed(VAL_SEED)
    z_val = torch.randn(cfg.val_samples, cfg.latent_dim, generator=zgen).to(dev)
    held = torch.as_tensor(np.asarray(ds.heldout_spec, dtype=np.float32), device=dev)
    with torch.no_grad():
        held_feats = L.hit_features(held, spec)
    pool = AugmentPool(cfg, ds, spec, rank, dev)
    family_step = _family_step(cfg, gen, disc, opt_g, opt_d, spec, ds, world)
    extra_cols = FAMILY_LOG_COLUMNS.get(cfg.family, ())

    def as_spec(x: torch.Tensor) -> torch.Tensor:
        """Generated output as the contract's scaled spectrogram (waveform models are encoded)."""
        return spec.encode(x.float()) if cfg.family == "wave-gan" else x
    log_file = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
        if summary["skipped"]:
            (out / "skipped.txt").write_text("\n".join(summary["skipped"]) + "\n")
            _say(progress, f"data: {len(summary['skipped'])} unusable file(s) skipped by the data layer, listed in "
                           f"{out / 'skipped.txt'} (first: {summary['skipped'][0]})")
        _say(progress, f"train {cfg.name}: G {count_parameters(gen) / 1e6:.2f}M, D {count_parameters(disc) / 1e6:.2f}M "
                       f"params; {summary['train']} train / {summary['heldout']} held-out hits; "
                       f"{world} process(es) on {dev}; steps {step} -> {cfg.max_steps}")
        kept: list[list[str]] = []
        if step > 0 and (out / LOG_NAME).exists():  # resuming: drop rows logged after the checkpoint
            with open(out / LOG_NAME, newline="") as f:
                kept = [r for r in list(csv.reader(f))[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        log_file = open(out / LOG_NAME, "w", newline="")  # noqa: SIM115 - open for the whole run
        log_writer = csv.writer(log_file)
        log_writer.writerow(["step", "time_s", "steps_per_s", "d_total", "d_adv", "d_gp", "g_total", "g_adv",
                             "g_fm", "g_stats", "val_stats", *extra_cols])
        log_writer.writerows(kept)

    def validate() -> float:
        with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=amp):
            fake = torch.cat([as_spec(gen_ema(z_val[i: i + 32])) for i in range(0, len(z_val), 32)]).float()
        return L.stats_distance(L.hit_features(fake, spec), held_feats)

    def save(path: Path, val: float | None) -> None:
        for name, module in (("generator", gen), ("discriminator", disc)):
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise TrainingDiverged(f"{out}: {name} weights became NaN/inf at step {step}; the last good "
                                       f"checkpoint ({last_path}) is kept - resume it with a lower learning rate")
        states = [ckpt_mod.rng_state(sampler)]
        if world > 1:  # the ranks must hold identical weights: compare checksums before writing
            sums = torch.tensor([float(sum(p.double().sum() for p in m.parameters())) for m in (gen, disc)],
                                dtype=torch.float64, device=dev)
            all_sums = [torch.zeros_like(sums) for _ in range(world)]
            dist.all_gather(all_sums, sums)
            if any(not torch.equal(s, all_sums[0]) for s in all_sums):
                raise RuntimeError(f"{out}: data-parallel ranks hold different weights at step {step}")
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if not master:
            return
        ckpt_mod.save_checkpoint({
            "format": ckpt_mod.FORMAT, "config": cfg.to_dict(), "contract": contract.to_dict(), "step": step,
            "generator": gen.state_dict(), "generator_ema": gen_ema.state_dict(),
            "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": states, "data_summary": summary,
            "metrics": {**metrics, "best_val": best_val, **({"val_stats": val} if val is not None else {})},
        }, path)

    def preview() -> None:
        n = cfg.preview_hits
        with torch.no_grad():
            fake_out = gen_ema(z_val[:n]).float()
            fake = as_spec(fake_out).cpu().numpy()
            gen.eval()  # (BatchNorm generators: running statistics, as exported)
            raw = as_spec(gen(z_val[:n])).float().cpu().numpy()
            gen.train()
        real = np.asarray(ds.heldout_spec[:n], dtype=np.float32)
        if cfg.family == "wave-gan":  # the WAVs are the generated audio itself, not a reconstruction
            write_preview(out, step, real, fake, contract, n_wavs=0, raw=raw)
            write_audio_preview(out, step, fake_out.cpu().numpy(), contract)
        else:
            write_preview(out, step, real, fake, contract, n_wavs=n, raw=raw)

    def spec_gan_step(data_now: torch.Tensor) -> dict[str, torch.Tensor]:
        # Discriminator update(s): real vs detached fake, both DiffAugmented. The last fake keeps its graph: the
        # generator update reuses it (one generator forward per step instead of two).
        disc.requires_grad_(True)
        for i in range(cfg.d_steps):
            real = data_now[torch.as_tensor(sampler.integers(0, len(data_now), cfg.batch_size), device=dev)]
            real = real.contiguous(memory_format=fmt)
            z = torch.randn(cfg.batch_size, cfg.latent_dim, device=dev)
            with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
                with torch.set_grad_enabled(i == cfg.d_steps - 1):
                    fake = gen(z).float()
                d_loss = L.d_losses(cfg, disc, L.diff_augment(real, cfg), L.diff_augment(fake.detach(), cfg))
            opt_d.zero_grad(set_to_none=True)
            d_loss["d_total"].backward()
            _average_grads(disc, world)
            opt_d.step()
        # Generator update: fool the updated D (on augmented fakes), match D's features and the real batch
        # statistics.
        disc.requires_grad_(False)
        with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
            g_loss = L.g_losses(cfg, disc, L.diff_augment(fake, cfg), L.diff_augment(real, cfg), fake, real, spec,
                                real_stats=pool.stats)
        opt_g.zero_grad(set_to_none=True)
        g_loss["g_total"].backward()
        _average_grads(gen, world)
        opt_g.step()
        return {**d_loss, **g_loss}

    # --- the loop ---
    t_start, t_last, step_last = time.perf_counter(), time.perf_counter(), step
    rate = 0.0
    step_seconds: list[float] = []
    while step < cfg.max_steps:
        t_step = time.perf_counter()
        data_now = pool.at(step)
        if family_step is not None:  # wave-gan / spec-vae: the family's step (training/wavegan.py, vae.py)
            losses = family_step(step, data_now, sampler, pool.stats)
        else:
            losses = spec_gan_step(data_now)
        k = step - cfg.ema_start  # EMA warm-up: the decay grows to ema_decay, so early EMAs are not stale
        _update_ema(gen_ema, gen, 0.0 if k < 0 else min(cfg.ema_decay, (1.0 + k) / (10.0 + k)))
        step += 1
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        step_seconds.append(time.perf_counter() - t_step)

        if fault is not None:
            fault(step, gen)
        values = _average_scalars({k: float(v.detach()) for k, v in losses.items()}, world, dev)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            if log_file:
                log_file.close()
            raise TrainingDiverged(
                f"{out}: training diverged at step {step}: {', '.join(f'{k}={values[k]}' for k in bad)}; "
                f"the last good checkpoint ({last_path}) is kept - resume it with a lower learning rate")
        metrics.update(values)

        val = None
        if step % cfg.val_every == 0 or step == cfg.max_steps:
            val = validate() if master else 0.0
            if world > 1:  # every rank takes the same best/not-best decision (saving is collective)
                t = torch.tensor([val], dtype=torch.float64, device=dev)
                dist.broadcast(t, 0)
                val = float(t.item())
            metrics["val_stats"] = val
            if val < best_val:
                best_val = val
                save(out / ckpt_mod.BEST, val)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save(last_path, val)
        if master and cfg.preview_hits > 0 and (step % cfg.preview_every == 0 or step == cfg.max_steps):
            preview()
        if master and (step % cfg.log_every == 0 or step == cfg.max_steps or val is not None):
            now = time.perf_counter()
            rate = (step - step_last) / max(now - t_last, 1e-9)
            t_last, step_last = now, step
            log_writer.writerow([step, f"{now - t_start:.2f}", f"{rate:.4f}"] + [
                f"{values[k]:.6g}" if k in values else "" for k in
                ("d_total", "d_adv", "d_gp", "g_total", "g_adv", "g_fm", "g_stats")] + [
                f"{val:.6g}" if val is not None else ""] + [
                f"{values[k]:.6g}" if k in values else "" for k in extra_cols])
            log_file.flush()
            _progress(progress, step, cfg.max_steps, values, rate, best_val)

    if master:
        if log_file:
            log_file.close()
        if progress is not None:
            progress.write("\n")
            progress.flush()
    if world > 1:
        dist.barrier()
    timed = step_seconds[1:] or step_seconds
    return TrainResult(out, step, best_val, {k: float(v) for k, v in metrics.items()},
                       steps_per_s=len(timed) / sum(timed) if timed else 0.0, step_seconds=step_seconds)


def _say(stream: TextIO | None, line: str) -> None:
    if stream is not None:
        stream.write(line + "\n")
        stream.flush()


def _progress(stream: TextIO | None, step: int, total: int, values: dict[str, float], rate: float,
              best: float) -> None:
    if stream is None:
        return
    width = 24
    done = int(width * step / max(total, 1))
    bar = "#" * done + "." * (width - done)
    parts = " ".join(f"{k}={values[k]:.3f}" for k in ("d_total", "g_adv", "g_fm", "g_stats", "g_rec", "kl_nats")
                     if k in values)
    eta = (total - step) / rate if rate > 0 else float("nan")
    stream.write(f"\r[{bar}] {step}/{total} {parts} best_val={best:.4f} {rate:.2f} steps/s eta {eta / 60:.1f} min ")
    stream.flush()
