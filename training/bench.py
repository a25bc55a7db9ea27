"""``kickit bench train``: training throughput (steps/s, hits/s) of the named configs.

Runs the real training loop (:func:`kickit.training.train.train`: augmentation pool, DiffAugment, D and G
updates, EMA) for ``--steps`` steps per config in a temporary run folder, on ``--data`` or, without it, on a
small dataset of procedural kicks built by the data layer. Only the update time counts (the first step, and
validation/checkpoint/preview work, are excluded); hits/s = steps/s x batch size (generated hits per second).
The result goes to the ``train`` section of docs/benchmarks.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_CONFIGS = ("default", "dcgan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), metavar="NAME,...",
                        help="configs to measure, comma separated: names or JSON files (default: default,dcgan)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per config (default 12)")
    parser.add_argument("--data", default=None, metavar="DATASET",
                        help="dataset folder (default: 24 procedural kicks built in a temporary folder)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def _procedural_dataset(root: Path) -> Path:
    import numpy as np
    from kickit.training.data import build_dataset

    from kickit.audio import write_wav
    from kickit.spectral import DEFAULT_CONTRACT
    from kickit.synth import procedural_kicks

    kicks = procedural_kicks(np.random.default_rng(0), 24, DEFAULT_CONTRACT)
    for i, hit in enumerate(kicks):  # six "kits" so the data layer can hold some out
        write_wav(root / "wav" / f"kit{i % 6}" / f"kick{i:02d}.wav", hit, DEFAULT_CONTRACT.sample_rate)
    build_dataset([root / "wav"], root / "ds", DEFAULT_CONTRACT)
    return root / "ds"


def run(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads that wait for a
    # descheduled peer made CPU steps up to 7x slower (measured). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from kickit.training.config import load_config
    from kickit.training.models import build_discriminator, build_generator, count_parameters
    from kickit.training.train import train

    from kickit.benchdoc import write_section

    if args.steps < 3:
        print("kickit bench train: --steps must be >= 3", file=sys.stderr)
        return 2
    try:
        configs = [load_config(n.strip()) for n in args.configs.split(",") if n.strip()]
    except ValueError as e:
        print(f"kickit bench train: {e}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="kickit-bench-train-") as tmp:
        data = Path(args.data) if args.data else _procedural_dataset(Path(tmp))
        for cfg in configs:
            # no validation, checkpoint or preview inside the measured steps
            cfg = cfg.replace(max_steps=args.steps, val_every=10**9, checkpoint_every=10**9, preview_every=10**9,
                              log_every=10**9, preview_hits=0)
            try:
                res = train(cfg, data, Path(tmp) / f"run-{cfg.name}", device=args.device, progress=None)
            except (ValueError, RuntimeError, OSError) as e:
                print(f"kickit bench train: {cfg.name}: {e}", file=sys.stderr)
                return 1
            from kickit.spectral import DEFAULT_CONTRACT

            g = count_parameters(build_generator(cfg, DEFAULT_CONTRACT))
            d = count_parameters(build_discriminator(cfg, DEFAULT_CONTRACT))
            timed = sorted(res.step_seconds[1:])
            median = timed[len(timed) // 2]
            rows.append((cfg.name, g, d, cfg.batch_size, res.steps_per_s, res.steps_per_s * cfg.batch_size, median,
                         2 * 3600 * res.steps_per_s))
            print(f"{cfg.name}: {res.steps_per_s:.3f} steps/s, {res.steps_per_s * cfg.batch_size:.1f} hits/s, "
                  f"median step {median:.3f} s", flush=True)
    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    body = (
        f"`kickit bench train --steps {args.steps}` on {args.device} (torch threads: {threads}; "
        f"data: {'`' + str(args.data) + '`' if args.data else '24 procedural kicks'}). One step = "
        "one discriminator and one generator update with DiffAugment and the augmentation pool; validation, "
        "checkpoints and previews excluded. Target: the default config reaches the quality targets within 2 h "
        "on 2 CPU cores and within 10 min on one H100.\n\n"
        "| config | G params | D params | batch | steps/s | hits/s | median step (s) | steps in 2 h |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "\n".join(f"| {n} | {g / 1e6:.2f}M | {d / 1e6:.2f}M | {b} | {s:.3f} | {h:.1f} | {m:.3f} | {t:.0f} |"
                    for n, g, d, b, s, h, m, t in rows)
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('train', 'Training throughput', body)}")
    return 0
