"""The one command-line entry point, ``kickit``.

Each subcommand lives in the module that owns it; that module exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs (or when the parser for that
command is built), so ``kickit --version`` and the bridge never import torch: a command module must import
torch inside ``run``, not at module level.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from kickit import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "devices": ("kickit.devices", "list audio devices and MIDI ports"),
    "bench": ("kickit.bench", "benchmarks (recon, render, latency, soak, train); results go to docs/benchmarks.md"),
    "data": ("kickit.training.data_cli", "fetch real kick samples and build training datasets"),
    "train": ("kickit.training.cli", "train a generator (needs the [train] extra)"),
    "export": ("kickit.export.cli", "export a trained generator to one ONNX model file"),
    "inspect": ("kickit.inspect", "show a model file's contract, knobs, parity and render time"),
    "bridge": ("kickit.bridge.cli", "play generated hits live from MIDI pads and OSC knobs"),
    "render": ("kickit.bridge.render_cli", "render a MIDI file offline with the bridge's pad/voice logic"),
    "generate": ("kickit.generate", "write a folder of new hits (a sample pack) with a preview"),
    "eval": ("kickit.evaluation", "evaluate a model against real hits (report.md + JSON)"),
    "encode": ("kickit.encode_cli", "find a model's latent for your own hit (what a pad plays after /encode)"),
    "m4l": ("kickit.max_for_live.cli", "build and check the Max for Live device"),
}


def _load(name: str):  # noqa: ANN202 - returns a module
    return importlib.import_module(COMMANDS[name][0])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kickit", description="Neural stereo kick drums you play live.")
    parser.add_argument("--version", action="version", version=f"kickit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == only:
            _load(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None  # argparse reports the unknown command
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as e:
        print(f"kickit {command}: this command needs a missing package ({e.name}); "
              f"for training commands install the extra: pip install 'kickit[train]'", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_load(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in {"torch", "onnx", "matplotlib"}:
            print(f"kickit {args.command}: needs {e.name}; install it with: pip install 'kickit[train]'",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
