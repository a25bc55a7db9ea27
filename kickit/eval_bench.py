"""``kickit bench eval``: how long ``kickit eval`` takes for 500 hits (target: well under a few minutes).

Runs the whole evaluation (rendering through HitRenderer in batches, descriptors and kick checks, memorisation
features, statistics, report with figures and WAVs) on a model (default: the tiny test model of the source
tree) against real hits (default: tests/data/kicks, split by kit into held-out and training halves), and
records the wall time of each stage and per generated hit. Section ``eval`` of docs/benchmarks.md unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kickit import evaluation as ev
from kickit.audio import iter_audio_files

TARGET_S = 120.0  # the whole eval of 500 hits, on 2 cores


def _source_tree() -> Path:
    return Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model file or 'procedural' (default: tests/data/models/tiny-spec.onnx)")
    parser.add_argument("--ref", default=None,
                        help="real hits or dataset folder (default: tests/data/kicks, split by kit)")
    parser.add_argument("-n", "--count", type=int, default=ev.DEFAULT_COUNT, help="generated hits (default 500)")
    parser.add_argument("--batch", type=int, default=ev.DEFAULT_BATCH, help="render batch")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--workers", type=int, default=ev.DEFAULT_WORKERS,
                        help=f"reconstruction and feature threads (default {ev.DEFAULT_WORKERS})")


def split_by_kit(kicks: Path, dest: Path) -> ev.RefPaths:
    """A folder with one sub-folder per kit (like tests/data/kicks) -> copies under ``dest/heldout`` and
    ``dest/train``, whole kits to one side, balancing the hit counts (kits in name order, each to the side
    with fewer hits so far; held-out first on a tie)."""
    counts = {"heldout": 0, "train": 0}
    for kit in sorted(p for p in kicks.iterdir() if p.is_dir()):
        side = "heldout" if counts["heldout"] <= counts["train"] else "train"
        shutil.copytree(kit, dest / side / kit.name)
        counts[side] += sum(1 for _ in iter_audio_files(kit))
    return ev.RefPaths(dest / "heldout", dest / "train", None)


def run(args: argparse.Namespace) -> int:
    from kickit.benchdoc import write_section

    model = args.model or str(_source_tree() / "tests" / "data" / "models" / "tiny-spec.onnx")
    with tempfile.TemporaryDirectory(prefix="kickit-bench-eval-") as tmp:
        try:
            if args.ref:
                ref = ev.resolve_ref(args.ref, None)
                ref_label = args.ref
            else:
                kicks = _source_tree() / "tests" / "data" / "kicks"
                if not kicks.is_dir():
                    raise ev.EvalError("no tests/data/kicks here; pass --ref DIR")
                ref = split_by_kit(kicks, Path(tmp) / "ref")
                ref_label = "tests/data/kicks split by kit"
            source = ev.make_source(model, threads=args.threads, workers=args.workers)
            t0 = time.perf_counter()
            r = ev.run_eval(source, ref, Path(tmp) / "out", count=args.count, batch=args.batch,
                            workers=args.workers)
            wall = time.perf_counter() - t0
        except (ev.EvalError, ValueError, OSError) as e:
            print(f"kickit bench eval: {e}", file=sys.stderr)
            return 2
    n = r["counts"]["generated"]
    t = r["timing"]
    verdict = "PASS" if wall <= TARGET_S else "FAIL"
    rows = [
        "| stage | s | ms per generated hit |",
        "|---|---|---|",
        *(f"| {k.removesuffix('_s').replace('_', ' ')} | {v:.1f} | {1e3 * v / n:.1f} |" for k, v in t.items()),
        f"| **total** | **{wall:.1f}** | **{1e3 * wall / n:.1f}** |",
    ]
    body = (
        f"`kickit bench eval`: the whole `kickit eval` of {n} hits from `{Path(model).name}` "
        f"({r['meta']['source'].get('method', 'n/a')} reconstruction, batch {args.batch}, {args.threads} "
        f"onnxruntime threads, {args.workers} workers) against {ref_label} ({r['counts']['heldout']} held-out, {r['counts']['train']} "
        f"training hits), report with figures and WAVs included.\n\n"
        + "\n".join(rows)
        + f"\n\nTarget: the whole eval of 500 hits under {TARGET_S:.0f} s on 2 cores: **{verdict}** "
        f"({wall:.1f} s)."
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('eval', 'Evaluation run time', body)}")
    return 0
