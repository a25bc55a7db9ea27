"""Pad groups: one model per group of pads (pure logic: parsing and checking, no I/O).

``kickit bridge --model kick.onnx --group snare=snare.onnx:40-43 --group hat=hat.onnx:44,46``: the pads
played by MIDI notes 40..43 render with snare.onnx, 44 and 46 with hat.onnx, every other pad with the main
model (group 0, "main"). Each group has its own model, so its own knobs; the knobs edit the selected pad with
its group's knob directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kickit.bridge.pads import PadMap, parse_pad_notes

MAIN = "main"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class GroupSpec:
    name: str
    model: Path
    notes: tuple[int, ...]


def parse_group(spec: str) -> GroupSpec:
    """``NAME=MODEL.onnx:NOTES`` (NOTES as for ``--pads``: ``40-43`` or ``38,40``) -> a :class:`GroupSpec`.
    Raises ValueError with a one-line reason."""
    name, eq, rest = spec.partition("=")
    model, colon, notes = rest.rpartition(":")
    if not eq or not colon or not model or not notes:
        raise ValueError(f"pad group {spec!r}: expected NAME=MODEL.onnx:NOTES, e.g. snare=snare.onnx:40-43")
    name = name.strip()
    if not _NAME.match(name) or name == MAIN:
        raise ValueError(f"pad group {spec!r}: name {name!r} must be a letter then letters, digits, _ or - "
                         f"(at most 32) and not {MAIN!r}")
    try:
        parsed = parse_pad_notes(notes)
    except ValueError as e:
        raise ValueError(f"pad group {name}: {e}") from None
    return GroupSpec(name, Path(model.strip()).expanduser(), tuple(parsed))


def group_pads(spec: GroupSpec, pad_map: PadMap) -> list[int]:
    """The pad indices of a group's notes; ValueError naming a note that is not one of the pads' notes."""
    pads = []
    for n in spec.notes:
        p = pad_map.pad(n)
        if p is None:
            raise ValueError(f"pad group {spec.name}: note {n} is not a pad (pads are notes "
                             f"{min(pad_map.notes)}..{max(pad_map.notes)}; see --pads)")
        pads.append(p)
    return pads


def check_groups(specs: list[GroupSpec], pad_map: PadMap) -> list[list[int]]:
    """Each group's pads; ValueError when two groups share a name or a pad."""
    seen: dict[int, str] = {}
    names: set[str] = set()
    out = []
    for s in specs:
        if s.name in names:
            raise ValueError(f"pad group {s.name}: given twice")
        names.add(s.name)
        pads = group_pads(s, pad_map)
        for p in pads:
            if p in seen:
                raise ValueError(f"pad group {s.name}: note {pad_map.note(p)} is already in group {seen[p]}")
            seen[p] = s.name
        out.append(pads)
    return out
