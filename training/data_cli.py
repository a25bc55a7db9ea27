"""``kickit data fetch`` and ``kickit data build`` (numpy only; no torch).

    kickit data fetch [--dest DIR] [--instrument kick] [--cache DIR] [--no-soundfont]
    kickit data build SRC... -o DATASET [--instrument kick] [--heldout 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kickit.training import kits as kitlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="build a real sample collection from Debian's free drum kit packages",
                       description="Download (apt-get download, no root) and unpack hydrogen-drumkits, "
                                   "hydrogen-data and fluid-soundfont-gm, and collect one instrument's hits "
                                   "with kit and licence. Already-downloaded packages are reused.")
    f.add_argument("--dest", type=Path, default=None,
                   help="collection folder (default: CACHE/samples/INSTRUMENT)")
    f.add_argument("--cache", type=Path, default=None,
                   help="download cache (default: $KICKIT_CACHE or ~/.cache/kickit)")
    f.add_argument("--instrument", default="kick", choices=kitlib.instruments())
    f.add_argument("--no-soundfont", action="store_true", help="skip the General MIDI SoundFont kits")
    b = sub.add_parser("build", help="build a training dataset (manifest, split by kit, spectrogram cache)",
                       description="Build a dataset folder from sample folders (a fetched collection or your "
                                   "own samples; kit = parent folder name unless sources.json says otherwise).")
    b.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="sample folders or files")
    b.add_argument("-o", "--out", type=Path, required=True, metavar="DATASET", help="dataset folder to write")
    b.add_argument("--instrument", default="kick", choices=kitlib.instruments())
    b.add_argument("--heldout", type=float, default=0.2, help="share of hits held out, by kit (default 0.2)")
    b.add_argument("--seed", type=int, default=0, help="split seed (default 0)")


def _fetch(args: argparse.Namespace) -> int:
    from kickit.training.fetch import FetchError, fetch
    from kickit.training.soundfont import SoundFontError

    try:
        col = fetch(dest=args.dest, instrument=args.instrument, cache=args.cache,
                    soundfont=not args.no_soundfont)
    except (FetchError, SoundFontError, OSError) as e:
        print(f"kickit data fetch: {e}", file=sys.stderr)
        return 1
    for s in col.skipped:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    print(f"{len(col.items)} {args.instrument} hits from {len(col.kits)} kits in {col.root} "
          f"({len(col.skipped)} skipped); next: kickit data build {col.root} -o DATASET")
    return 0


def _build(args: argparse.Namespace) -> int:
    from kickit.training.data import DatasetError, build_dataset

    try:
        ds = build_dataset(args.sources, args.out, instrument=args.instrument, heldout=args.heldout,
                           seed=args.seed)
    except (DatasetError, OSError) as e:
        print(f"kickit data build: {e}", file=sys.stderr)
        return 1
    s = ds.summary()
    print(f"{ds.root}: {s['train']} train hits from {s['kits_train']} kits, {s['heldout']} held-out hits "
          f"from {s['kits_heldout']} kits, {s['skipped']} files skipped (listed in manifest.json)")
    return 0


def dataset_instrument(dataset: str | Path) -> str | None:
    """The instrument a dataset folder's manifest records (None when it has no manifest or no such field)."""
    import json

    try:
        got = json.loads((Path(dataset) / "manifest.json").read_text(encoding="utf-8")).get("instrument")
    except (OSError, ValueError, AttributeError):
        return None
    return got if isinstance(got, str) and got else None


def check_instrument(dataset: str | Path, instrument: str) -> str | None:
    """None when ``dataset`` holds ``instrument`` hits, else the one-line reason."""
    if instrument not in kitlib.INSTRUMENTS:
        return f"--instrument {instrument}: unknown (known: {', '.join(kitlib.instruments())})"
    got = dataset_instrument(dataset)
    if got is None:
        return (f"{dataset}: the dataset records no instrument; rebuild it with kickit data build "
                f"--instrument {instrument}")
    if got != instrument:
        return f"{dataset}: holds {got} hits, not {instrument} (pass --instrument {got} or another --data)"
    return None


def run(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        return _fetch(args)
    if args.data_command == "build":
        return _build(args)
    print("kickit data: say fetch or build (kickit data -h)", file=sys.stderr)
    return 2
