"""``kickit encode SAMPLE.wav``: a latent of the model for your own hit (what a pad plays after /encode).

    kickit encode SAMPLE.wav [--model M.onnx] [-o z.json|z.npy] [--steps N] [--time-budget S] [--render OUT.wav]

Models with an encoder (VAE family) encode at once; the others are searched (kickit.encode: slower, about a
minute for the shipped model; ``--steps``/``--time-budget`` bound it). Prints the latent's summary and the
spectral distance of the model's version to the sample; ``-o`` saves the latent (JSON with the model's name
and weights hash, or a plain .npy); ``--render`` writes the hit the pad will play, so you can listen first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

LATENT_FORMAT = "kickit-latent-1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kickit.encode import DEFAULT_STEPS, DEFAULT_TIME_BUDGET

    p.add_argument("sample", type=Path, metavar="SAMPLE", help="your hit (WAV/FLAC/AIFF/OGG)")
    p.add_argument("--model", type=Path, help="model file (default: the shipped kick-v1.onnx)")
    p.add_argument("-o", "--out", type=Path, metavar="Z.json|Z.npy", help="save the latent here")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"search generations for models without an encoder (default {DEFAULT_STEPS})")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET, metavar="S",
                   help=f"stop the search after S seconds with its best so far (default {DEFAULT_TIME_BUDGET:g})")
    p.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    p.add_argument("--search", action="store_true", help="search even when the model has an encoder")
    p.add_argument("--render", type=Path, metavar="OUT.wav", help="write the model's version of the hit")


def latent_document(z: np.ndarray, model: Any, sample: Path, info: dict[str, Any]) -> dict[str, Any]:
    return {"format": LATENT_FORMAT, "model": {"name": model.path.name, "weights_sha256": model.weights_hash},
            "sample": str(sample), "encode": info, "latent": [float(x) for x in np.asarray(z, np.float32)]}


def save_latent(path: Path, doc: dict[str, Any]) -> Path:
    """JSON (the whole document) or .npy (the float32 latent only), written atomically."""
    from kickit.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        with atomic_write(path, "wb") as fh:
            np.save(fh, np.asarray(doc["latent"], dtype=np.float32))
    else:
        with atomic_write(path, "w") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    from kickit.audio import AudioError, write_wav
    from kickit.encode import EncodeError, encode_file
    from kickit.modelfile import ModelError, default_model_path, load_model

    if args.steps < 0 or args.time_budget <= 0:
        print(f"kickit encode: --steps {args.steps} / --time-budget {args.time_budget}: need steps >= 0 and a "
              "positive budget", file=sys.stderr)
        return 2
    if args.out is not None and args.out.suffix.lower() not in (".json", ".npy"):
        print(f"kickit encode: {args.out}: the latent is saved as .json or .npy", file=sys.stderr)
        return 2
    model_path = args.model or default_model_path()
    if model_path is None:
        print("kickit encode: no model given and the default model is not installed; pass --model FILE.onnx",
              file=sys.stderr)
        return 2
    try:
        model = load_model(model_path)
    except ModelError as e:
        print(f"kickit encode: {e}", file=sys.stderr)
        return 2
    from kickit.encode import has_encoder

    how = "encoder" if has_encoder(model) and not args.search else (
        f"latent search, up to {args.steps} steps / {args.time_budget:g} s")
    problem = getattr(model, "encoder_problem", None)
    if problem and not args.search:
        print(f"kickit encode: the model's encoder cannot be used ({problem}); searching instead", file=sys.stderr)
    print(f"kickit encode: {args.sample.name} with {model.path.name} ({how}) ...", file=sys.stderr)
    try:
        z, info = encode_file(model, args.sample, steps=args.steps, time_budget=args.time_budget, seed=args.seed,
                              search=True if args.search else None)
    except (AudioError, EncodeError) as e:
        print(f"kickit encode: {e}", file=sys.stderr)
        return 1
    d = info.to_dict()
    extra = (f", from {info.start_distance:.4f} in {info.steps} steps ({info.evaluations} model runs, "
             f"stopped by {info.stopped})") if info.method == "search" else ""
    print(f"{args.sample}: latent of {model.latent_dim} via {info.method} in {info.seconds:.1f} s; spectral "
          f"distance {info.distance:.4f}{extra}")
    print(f"  |z| {np.linalg.norm(z):.2f} (a N(0, I) latent: ~{np.sqrt(model.latent_dim):.1f}), mean "
          f"{float(z.mean()):+.3f}, std {float(z.std()):.3f}, first {np.array2string(z[:4], precision=3)}")
    try:
        if args.out is not None:
            print(f"  latent saved to {save_latent(args.out, latent_document(z, model, args.sample, d))}")
        if args.render is not None:
            from kickit.hits import HitRenderer

            hit = HitRenderer(model).render(z[None])[0]
            print(f"  the pad's hit written to {write_wav(args.render, hit, model.contract.sample_rate)}")
    except OSError as e:
        print(f"kickit encode: cannot write {e.filename or ''} ({e.strerror or e})", file=sys.stderr)
        return 1
    return 0
