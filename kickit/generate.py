"""``kickit generate --count N -o DIR``: a sample pack of new kicks (WAV), a preview PNG and a pack.json.

Works from a plain install (numpy + onnxruntime; the preview PNG is written by kickit.png, no matplotlib).
Every file is reproducible: pack.json records the model's weights hash, the seed, the knob values and each
hit's latent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kickit.audio import write_wav
from kickit.modelfile import ModelError, ModelFile, default_model_path, load_model
from kickit.spectral import SpectralContract

MAX_COUNT = 10000
BATCH = 8
MAX_TRIES = 10  # --only-kicks gives up after this many hits tried per hit wanted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", "-n", type=int, default=16, help="number of kicks (default 16)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, recorded)")
    parser.add_argument("--model", "-m", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                        help="set a knob (value in -1..1) for every hit; repeatable")
    parser.add_argument("--method", default=None, help="phase reconstruction method (default: kickit's)")
    parser.add_argument("--prefix", default="kick", help="file name prefix (default 'kick')")
    parser.add_argument("--force", action="store_true", help="overwrite existing files of the same names")
    parser.add_argument("--only-kicks", action="store_true",
                        help="keep only hits passing the kick checks (transient, 40-120 Hz fundamental, low band "
                             "dominant, decaying, clean); rejected latents are replaced by new ones")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    parser.add_argument("--threads", type=int, default=2, help="threads for inference and reconstruction (default 2)")


def resolve_model(path: str | None, threads: int = 1) -> ModelFile:
    """The model named on the command line, else the shipped default; ModelError with a clear message."""
    if path is None:
        default = default_model_path()
        if default is None:
            raise ModelError("kickit.models/kick-v1.onnx", "no default model is shipped yet; pass --model FILE")
        path = str(default)
    return load_model(path, threads=threads)


def parse_knob_values(model: ModelFile, specs: list[str]) -> list[float]:
    values = [0.0] * len(model.knobs)
    names = [k.name for k in model.knobs]
    for spec in specs:
        name, sep, raw = spec.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--knob {spec!r}: expected NAME=VALUE")
        if name not in names:
            raise ValueError(f"--knob {spec!r}: no knob {name!r} in {model.path} (knobs: {', '.join(names)})")
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"--knob {spec!r}: {raw!r} is not a number") from None
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"--knob {spec!r}: value must be in -1..1")
        values[names.index(name)] = v
    return values


def generate_pack(model: ModelFile, out: Path, count: int, seed: int, knob_values: list[float] | None = None,
                  *, method: str | None = None, prefix: str = "kick", preview: bool = True,
                  force: bool = False, workers: int = 1,
                  accept: Callable[[np.ndarray, SpectralContract], np.ndarray] | None = None) -> list[Path]:
    """Render ``count`` hits into ``out``; returns the WAV paths. Raises FileExistsError unless ``force``.

    ``accept(audio (B, 2, n), contract) -> bool (B,)``: keep only the hits it accepts (``--only-kicks`` passes
    kickit.descriptors.is_kick), drawing new latents until ``count`` are kept or ``MAX_TRIES * count`` tried.
    """
    from kickit.hits import HitRenderer

    if count < 1 or count > MAX_COUNT:
        raise ValueError(f"--count {count}: must be 1..{MAX_COUNT}")
    width = max(3, len(str(count)))
    names = [out / f"{prefix}-{i + 1:0{width}d}.wav" for i in range(count)]
    if not force:
        clash = [p for p in [*names, out / "pack.json", out / "preview.png"] if p.exists()]
        if clash:
            raise FileExistsError(f"{clash[0]}: already exists (use --force to overwrite, or another folder)")
    renderer = HitRenderer(model, **({"method": method} if method else {}), workers=workers)
    values = knob_values or [0.0] * len(model.knobs)
    rng = np.random.default_rng(seed)
    kept_z: list[np.ndarray] = []
    hits: list[np.ndarray] = []
    tried = 0
    with renderer:
        while len(kept_z) < count:
            if tried >= count * MAX_TRIES:
                raise ValueError(
                    f"only {len(kept_z)} of {tried} generated hits passed the kick checks, {count} wanted; "
                    f"{model.path} does not make kicks reliably (drop --only-kicks to keep every hit)")
            n = min(BATCH, count * MAX_TRIES - tried) if accept is not None else min(BATCH, count - len(kept_z))
            z = model.apply_knobs(rng.standard_normal((n, model.latent_dim)).astype(np.float32), values)
            tried += n
            audio = renderer.render(z)
            ok = np.ones(n, dtype=bool) if accept is None else np.asarray(accept(audio, model.contract), bool)
            for zi, hit in zip(z[ok], audio[ok], strict=True):
                if len(kept_z) == count:
                    break
                write_wav(names[len(kept_z)], hit, model.contract.sample_rate)
                kept_z.append(zi)
                if preview and len(hits) < 32:
                    hits.append(hit)
    if preview:
        from kickit.png import preview_grid, write_png

        write_png(out / "preview.png", preview_grid(np.stack(hits), model.contract))
    pack = {
        "model": str(model.path),
        "weights_sha256": model.weights_hash,
        "seed": seed,
        "method": renderer.method,
        "knobs": {k.name: v for k, v in zip(model.knobs, values, strict=True)},
        "sample_rate": model.contract.sample_rate,
        "only_kicks": accept is not None,
        "tried": tried,
        "hits": [{"file": p.name, "z": [round(float(x), 7) for x in zi]} for p, zi in zip(names, kept_z, strict=True)],
    }
    (out / "pack.json").write_text(json.dumps(pack, indent=1) + "\n")
    return names


def _is_kick(audio: np.ndarray, contract: SpectralContract) -> np.ndarray:
    from kickit.descriptors import is_kick

    return is_kick(audio, contract)


def run(args: argparse.Namespace) -> int:
    try:
        model = resolve_model(args.model, threads=args.threads)
        knob_values = parse_knob_values(model, args.knob)
        seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder")
        paths = generate_pack(model, out, args.count, seed, knob_values, method=args.method,
                              prefix=args.prefix, preview=not args.no_preview, force=args.force,
                              workers=args.threads, accept=_is_kick if args.only_kicks else None)
    except (ModelError, ValueError, FileExistsError, OSError) as e:
        print(f"kickit generate: {e}", file=sys.stderr)
        return 2
    extra = "" if args.no_preview else ", preview.png"
    print(f"wrote {len(paths)} kicks to {out} (seed {seed}; pack.json{extra})")
    return 0
