"""``kickit export RUNDIR|CHECKPOINT -o MODEL.onnx``: the EMA generator as one kickit model file.

Imported to build the ``kickit`` parser: torch and onnx are imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a training run folder (uses its best checkpoint) or a checkpoint file")
    parser.add_argument("-o", "--out", required=True, help="model file to write (.onnx)")
    parser.add_argument("--which", choices=["best", "last"], default="best",
                        help="checkpoint of a run folder (default best)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA")
    parser.add_argument("--knob-samples", type=int, default=1024,
                        help="latents sampled for the knob PCA (default 1024)")
    parser.add_argument("--knob-bases", type=int, default=6,
                        help="base latents on which each knob's effect is measured (default 6)")
    parser.add_argument("--knobs", type=int, default=8, help="number of knobs (default 8; 0: none)")
    parser.add_argument("--knob-steps", type=int, default=9,
                        help="knob values from -1 to 1 at which each knob is measured (odd, default 9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the knob search (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--keep-knobs", metavar="MODEL", default=None,
                        help="keep the knobs of an earlier model file of this same generator (checked: its output "
                             "must match within the parity tolerance) instead of searching them again")
    parser.add_argument("--no-fold", action="store_true",
                        help="write the graph as trained (default: upsample + conv blocks folded into the equal "
                             "transposed convolutions, 2x faster inference; same parity self-test)")


def run(args: argparse.Namespace) -> int:
    from kickit.export.exporter import export_checkpoint
    from kickit.export.onnx_export import ExportError

    try:
        result = export_checkpoint(
            args.source, args.out, which=args.which, ema=not args.no_ema, knob_samples=args.knob_samples,
            knob_bases=args.knob_bases, knob_steps=args.knob_steps, knobs=args.knobs, seed=args.seed,
            threads=args.threads, fold=not args.no_fold, keep_knobs=args.keep_knobs,
        )
    except (ExportError, OSError, ValueError) as e:
        print(f"kickit export: {e}", file=sys.stderr)
        return 2
    p = result.parity
    print(f"wrote {result.path} ({result.size_bytes / 1024:.0f} KiB): parity max |onnxruntime - torch| "
          f"{p.max_abs_diff:.2g} on {p.latents} latents (<= {p.tolerance:g}); weights sha256 "
          f"{result.weights_hash[:16]}")
    if result.encoder_path is not None:
        print(f"encoder: {result.encoder_path} (input spec -> z, the posterior mean; named in the model's metadata)")
    print("knobs: " + ", ".join(k.name for k in result.knobs))
    return 0
