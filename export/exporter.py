"""From a training run (or checkpoint) to a kickit model file: load the EMA generator, compute knobs, export.

Families (the checkpoint's config says which): ``spec-gan`` exports the generator (output ``spec``); ``wave-gan``
the waveform generator (output ``audio``, no reconstruction at play time); ``spec-vae`` the decoder as the
generator (output ``spec``, input ``z`` ~ N(0, I), the prior) and the encoder as ``NAME.encoder.onnx`` next to it
(named in the model's ``kickit.encoder`` metadata with its sha256). Knobs are GANSpace directions of each
family's generator/decoder over prior latents (export/knobs.py; waveform output is encoded with the contract).

Also ``export_untrained(config_name, out)``: a freshly initialised generator of a named training config, used
for the test model (tests/data/models/tiny-spec.onnx) and for benchmarking the default architecture before a
trained model exists.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kickit.export.knobs import compute_knobs
from kickit.export.onnx_export import (
    ExportError,
    ExportResult,
    encoder_path_for,
    export_encoder,
    export_generator,
    parity_check,
)
from kickit.training import checkpoint as ckpt_mod
from kickit.training import config as config_mod
from kickit.training import models as models_mod

from kickit.modelfile import Knob, load_model
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract


def _latent_dim(cfg: Any) -> int:
    for name in ("latent_dim", "latent", "z_dim"):
        v = getattr(cfg, name, None) if not isinstance(cfg, dict) else cfg.get(name)
        if v is not None:
            return int(v)
    raise ValueError("training config has no latent size (latent_dim)")


def family_output(cfg: Any) -> tuple[str, str]:
    """(model family, output kind) of a training config (dict or TrainConfig); ``spec-gan`` when absent."""
    family = (cfg.get("family") if isinstance(cfg, dict) else getattr(cfg, "family", None)) or "spec-gan"
    return family, ("audio" if family == "wave-gan" else "spec")


def _export_family(generator: torch.nn.Module, contract: SpectralContract, out: str | os.PathLike[str], *,
                   family: str, latent_dim: int, training: dict[str, Any],
                   knob_fn: Any, fold: bool = True) -> ExportResult:
    """Export one trained module of any family (the VAE: encoder file first, then the decoder model file)."""
    output = "audio" if family == "wave-gan" else "spec"
    if family != "spec-vae":
        return export_generator(generator, contract, out, latent_dim=latent_dim, training=training,
                                family=family, output=output, knob_fn=knob_fn, fold=fold)
    from kickit.training.vae import EncoderMean

    enc_path = encoder_path_for(out)
    existed = enc_path.exists()
    record = export_encoder(EncoderMean(generator.encoder), generator.decoder, contract, out, latent_dim=latent_dim)
    try:
        res = export_generator(generator.decoder, contract, out, latent_dim=latent_dim, training=training,
                               family=family, output=output, knob_fn=knob_fn, encoder=record, fold=fold)
        res.encoder_path = enc_path
        return res
    except ExportError:
        if not existed:  # the model file was not written: do not leave its new encoder behind
            enc_path.unlink(missing_ok=True)
        raise


def _config_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return cfg
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))


def knobs_from(path: str | os.PathLike[str], generator: torch.nn.Module, latent_dim: int, output: str
               ) -> tuple[list[Knob], dict[str, Any]]:
    """The knobs and training summary of an earlier model file of this very generator, the summary's
    ``reexport_of`` set to that file's weights hash and the ones it re-exported. A re-export (a newer kickit's
    graph) keeps the knobs its users learned instead of searching them again (the search's naming and signs
    can tip on the last bits of a measurement). Refused (:class:`ExportError`) unless the file's graph computes
    this generator's function within the parity tolerance: another generator's knobs would move another
    sound."""
    model = load_model(path)
    if model.latent_dim != latent_dim or model.output != output:
        raise ExportError(f"{path}: knobs of a {model.latent_dim}-latent {model.output!r} model, not of this "
                          f"{latent_dim}-latent {output!r} generator")
    p = parity_check(generator, Path(path).read_bytes(), latent_dim, output)
    if not p.ok:
        raise ExportError(f"{path}: not an export of this generator (max |its output - the generator's| = "
                          f"{p.max_abs_diff:.3g} > {p.tolerance:g}); its knobs would move another sound")
    training = {**model.training, "reexport_of": list(dict.fromkeys([model.weights_hash, *model.reexport_of]))}
    return list(model.knobs), training


def export_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    which: str = "best",
    ema: bool = True,
    knob_samples: int = 1024,
    knob_bases: int = 6,
    knob_steps: int = 9,
    knobs: int = 8,
    seed: int = 0,
    threads: int = 2,
    fold: bool = True,
    keep_knobs: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export the (EMA) generator of a run folder or checkpoint file to ``out`` (``fold``: see
    :func:`kickit.export.onnx_export.export_generator`). ``keep_knobs``: an earlier model file of the same
    generator whose knobs are kept (:func:`knobs_from`) instead of searched."""
    if knobs < 0 or knob_steps < 3 or knob_steps % 2 == 0 or knob_bases < 1:
        raise ValueError(f"knobs {knobs}, knob steps {knob_steps}, knob bases {knob_bases}: need knobs >= 0, "
                         "an odd number of steps >= 3 and at least one base")
    torch.set_num_threads(max(1, threads))
    path = Path(ckpt_mod.find_checkpoint(source, which))
    ckpt = ckpt_mod.load_checkpoint(path)
    generator = models_mod.generator_from_checkpoint(ckpt, ema=ema)
    contract = SpectralContract.from_dict(ckpt["contract"])
    cfg = ckpt["config"]
    cfg_d = _config_dict(cfg)
    latent_dim = _latent_dim(cfg)
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    training = {
        "steps": int(ckpt.get("step", 0)),
        "config": cfg_d.get("name", "?"),
        "data": ckpt.get("data_summary") or {},
        "metrics": ckpt.get("metrics") or {},
        "checkpoint": path.name,
        "checkpoint_date": mtime,
        "ema": bool(ema),
    }
    if knob_samples < 2 * latent_dim:
        raise ValueError(f"--knob-samples {knob_samples}: need at least {2 * latent_dim} for a latent of {latent_dim}")

    family, output = family_output(cfg)
    training["family"] = family
    kept: list[Knob] | None = None
    if keep_knobs is not None:
        kept, earlier = knobs_from(keep_knobs, generator.decoder if family == "spec-vae" else generator, latent_dim,
                                   output)
        if (earlier.get("checkpoint"), earlier.get("steps")) == (training["checkpoint"], training["steps"]):
            # the same checkpoint: its date as first recorded (a copied checkpoint file's time is the copy's)
            training["checkpoint_date"] = earlier.get("checkpoint_date", mtime)
        # the weights hashes of the earlier exports of this function: presets made with them play the same kicks
        training["reexport_of"] = earlier["reexport_of"]

    def knob_fn(g: torch.nn.Module) -> list[Knob]:
        if kept is not None:
            return kept
        if knobs == 0:
            return []
        return compute_knobs(g, contract, latent_dim, output=output, k=knobs, n=knob_samples, bases=knob_bases,
                             steps=knob_steps, seed=seed)

    return _export_family(generator, contract, out, family=family, latent_dim=latent_dim, training=training,
                          knob_fn=knob_fn, fold=fold)


def export_untrained(
    config_name: str,
    out: str | os.PathLike[str],
    *,
    contract: SpectralContract = DEFAULT_CONTRACT,
    seed: int = 0,
    knobs: bool = False,
    knob_samples: int = 256,
    knob_bases: int = 3,
    base_audio: np.ndarray | None = None,
) -> Path:
    """A seeded, untrained generator of a named training config as a model file (for tests and benchmarks).

    ``base_audio`` (N, 2, n): hits whose mean scaled spectrogram initialises the generator's output base map
    (as training does with the real data), so even untrained output is kick-shaped.
    """
    cfg = config_mod.get_config(config_name)
    torch.manual_seed(seed)
    generator = models_mod.build_generator(cfg, contract).eval()
    if base_audio is not None and hasattr(generator, "init_base"):
        mean = contract.encode(np.asarray(base_audio, dtype=np.float32)).mean(axis=0)
        generator.init_base(torch.from_numpy(mean))
    latent_dim = _latent_dim(cfg)
    training = {"steps": 0, "config": config_name, "data": {}, "note": f"untrained, torch seed {seed}"}
    family, output = family_output(cfg)
    knob_fn = None
    if knobs:
        def knob_fn(g: torch.nn.Module) -> list[Knob]:
            return compute_knobs(g, contract, latent_dim, output=output, n=max(knob_samples, 2 * latent_dim),
                                 bases=knob_bases, seed=seed)
    res = _export_family(generator, contract, out, family=family, latent_dim=latent_dim, training=training,
                         knob_fn=knob_fn)
    return res.path
