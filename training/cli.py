"""``kickit train --config NAME|PATH --data DATASET --out RUNDIR [--resume] [--max-steps N] [--device cpu|cuda]``.

Several processes (GPUs or machines): ``torchrun --nproc_per_node N -m kickit.cli train ...``.
torch is imported inside :func:`run` only (``kickit`` builds its parser without it).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default", metavar="NAME|PATH",
                        help="named config (default, tiny, dcgan, wavegan, wavegan-tiny, vae, vae-tiny) or a JSON file of overrides "
                             "({\"base\": \"default\", ...}); ignored with --resume (the run keeps its config)")
    parser.add_argument("--data", required=True, metavar="DATASET", help="dataset folder (kickit data build)")
    parser.add_argument("--out", required=True, metavar="RUNDIR", help="run folder: checkpoints, log.csv, previews")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUNDIR exactly from last.pt")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop at this step (overrides config)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
    parser.add_argument("--instrument", default=None, metavar="NAME",
                        help="the instrument to train (kick, snare, ...): must be the dataset's (kickit data build "
                             "--instrument records it; it goes into the checkpoint and the model file)")


def run(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads that wait for a
    # descheduled peer made CPU steps up to 7x slower (measured). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from kickit.training.checkpoint import CheckpointError
    from kickit.training.config import load_config
    from kickit.training.train import TrainingDiverged, train

    if args.max_steps is not None and args.max_steps < 1:
        print(f"kickit train: --max-steps {args.max_steps}: must be >= 1", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ValueError as e:
        print(f"kickit train: {e}", file=sys.stderr)
        return 2
    if args.instrument is not None:
        from kickit.training.data_cli import check_instrument

        err = check_instrument(args.data, args.instrument)
        if err:
            print(f"kickit train: {err}", file=sys.stderr)
            return 2
    try:
        result = train(cfg, args.data, args.out, resume=args.resume, max_steps=args.max_steps, device=args.device)
    except TrainingDiverged as e:
        print(f"kickit train: {e}", file=sys.stderr)
        return 3
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        print(f"kickit train: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    print(f"{result.out_dir}: step {result.step}, best val_stats {result.best_val:.4f}, "
          f"{result.steps_per_s:.2f} steps/s")
    return 0
