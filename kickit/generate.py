"""``kickit generate --count N -o DIR``: a sample pack of new kicks (WAV), a preview PNG and a pack.json.

Works from a plain install (numpy + onnxruntime; the preview PNG is written by kickit.png, no matplotlib).
Every file is reproducible: pack.json records the model's weights hash, the seed, the knob values and each
hit's latent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kickit.audio import write_wav
from kickit.modelfile import ModelError, ModelFile, default_model_path, load_model

MAX_COUNT = 10000
BATCH = 8


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
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")


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
                  force: bool = False) -> list[Path]:
    """Render ``count`` hits into ``out``; returns the WAV paths. Raises FileExistsError unless ``force``."""
    from kickit.hits import HitRenderer

    if count < 1 or count > MAX_COUNT:
        raise ValueError(f"--count {count}: must be 1..{MAX_COUNT}")
    width = max(3, len(str(count)))
    names = [out / f"{prefix}-{i + 1:0{width}d}.wav" for i in range(count)]
    if not force:
        clash = [p for p in [*names, out / "pack.json", out / "preview.png"] if p.exists()]
        if clash:
            raise FileExistsError(f"{clash[0]}: already exists (use --force to overwrite, or another folder)")
    renderer = HitRenderer(model, **({"method": method} if method else {}))
    values = knob_values or [0.0] * len(model.knobs)
    z = np.random.default_rng(seed).standard_normal((count, model.latent_dim)).astype(np.float32)
    z = model.apply_knobs(z, values)
    hits = []
    for i in range(0, count, BATCH):
        audio = renderer.render(z[i:i + BATCH])
        for j, hit in enumerate(audio):
            write_wav(names[i + j], hit, model.contract.sample_rate)
        if preview and len(hits) < 32:
            hits.extend(audio[: 32 - len(hits)])
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
        "hits": [{"file": p.name, "z": [round(float(x), 7) for x in zi]} for p, zi in zip(names, z, strict=True)],
    }
    (out / "pack.json").write_text(json.dumps(pack, indent=1) + "\n")
    return names


def run(args: argparse.Namespace) -> int:
    try:
        model = resolve_model(args.model, threads=args.threads)
        knob_values = parse_knob_values(model, args.knob)
        seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder")
        paths = generate_pack(model, out, args.count, seed, knob_values, method=args.method,
                              prefix=args.prefix, preview=not args.no_preview, force=args.force)
    except (ModelError, ValueError, FileExistsError, OSError) as e:
        print(f"kickit generate: {e}", file=sys.stderr)
        return 2
    extra = "" if args.no_preview else ", preview.png"
    print(f"wrote {len(paths)} kicks to {out} (seed {seed}; pack.json{extra})")
    return 0
