"""``kickit bench TARGET``: each target lives in the module that owns what it measures."""

from __future__ import annotations

import argparse
import importlib
import sys

TARGETS: dict[str, tuple[str, str]] = {
    "recon": ("kickit.recon_bench", "phase reconstruction: fidelity and ms per stereo hit"),
    "render": ("kickit.export.bench", "model inference + reconstruction per hit and per batch"),
    "latency": ("kickit.bridge.bench_latency", "note-on -> first sample and knob -> ready on a real JACK server"),
    "soak": ("kickit.bridge.bench_soak", "long run with random knob and note traffic: RSS growth and xruns"),
    "flood": ("kickit.bridge.bench_flood", "OSC flood (2000 datagrams/s, half hostile) while notes play"),
    "train": ("kickit.training.bench", "training throughput (steps/s, hits/s)"),
    "daw": ("kickit.max_for_live.bench", "DAW mode: Max for Live knob move -> new hit file announced"),
    "eval": ("kickit.eval_bench", "kickit eval run time for 500 hits (render, descriptors, statistics, report)"),
}


def _requested_target() -> str | None:
    """The target named on the command line (``kickit ... bench TARGET``), if any."""
    argv = sys.argv[1:]
    if "bench" in argv:
        rest = [a for a in argv[argv.index("bench") + 1 :] if not a.startswith("-")]
        return rest[0] if rest else None
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only the requested target's module is imported (a target that needs torch costs nothing otherwise)."""
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    wanted = _requested_target()
    for name, (module, help_) in TARGETS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
        if wanted is None or wanted == name:
            importlib.import_module(module).add_arguments(p)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(TARGETS[args.target][0]).run(args) or 0)
