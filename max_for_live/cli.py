"""``kickit m4l build|check``: build the Max for Live device from its source, or check a device file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kickit.max_for_live import amxd, device
from kickit.max_for_live.check import check_file


def default_output() -> Path:
    return Path(__file__).resolve().parent / "kickit.amxd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="m4l_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="write the kickit.amxd instrument", description="write the kickit.amxd "
                       "Max for Live instrument from its source (max_for_live/device.py)")
    b.add_argument("-o", "--output", type=Path, default=None,
                   help=f"device file to write (default: {default_output()})")
    b.add_argument("--knobs", nargs=device.N_KNOBS, metavar="NAME",
                   help="the 8 knob names (default: the shipped model's knob names, else 'knob 1..8')")
    b.add_argument("--bridge-port", type=int, default=device.DEFAULT_BRIDGE_PORT,
                   help="UDP port the bridge listens on (default %(default)s)")
    b.add_argument("--device-port", type=int, default=device.DEFAULT_DEVICE_PORT,
                   help="UDP port the device listens on for the bridge's replies (default %(default)s)")
    c = sub.add_parser("check", help="check a device file", description="check a .amxd file: container, "
                       "patch cords, parameter names, OSC addresses against docs/osc.md and the bridge")
    c.add_argument("file", type=Path, nargs="?", default=None, help=f"device file (default: {default_output()})")
    c.add_argument("--docs", type=Path, default=None, help="OSC contract to check against (default: docs/osc.md)")


def _build(args: argparse.Namespace) -> int:
    out = args.output or default_output()
    try:
        doc = device.build_patcher(args.knobs, bridge_port=args.bridge_port, device_port=args.device_port)
    except ValueError as e:
        print(f"kickit m4l build: {e}", file=sys.stderr)
        return 2
    try:
        amxd.write(out, doc)
    except OSError as e:
        print(f"kickit m4l build: {out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    boxes = len(doc["patcher"]["boxes"])
    names = [b["box"]["saved_attribute_attributes"]["valueof"]["parameter_shortname"]
             for b in doc["patcher"]["boxes"] if b["box"]["maxclass"] == "live.dial"]
    print(f"wrote {out} ({out.stat().st_size} bytes, {boxes} boxes, knobs: {', '.join(names)})")
    return 0


def _check(args: argparse.Namespace) -> int:
    path = args.file or default_output()
    try:
        report = check_file(path, docs_path=args.docs)
    except amxd.AmxdError as e:
        print(f"kickit m4l check: {e}", file=sys.stderr)
        return 1
    for note in report.notes:
        print(f"{path}: note: {note}")
    for problem in report.problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{path}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    sent = sorted({u.address for u in report.uses if u.direction == "out"})
    print(f"{path}: ok ({len(report.uses)} OSC uses; sends {', '.join(sent)})")
    return 0


def run(args: argparse.Namespace) -> int:
    return _build(args) if args.m4l_command == "build" else _check(args)
