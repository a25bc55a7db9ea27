"""Drum kits as data sources: Hydrogen ``drumkit.xml`` parsing, instrument matching by name, licences.

Pure parsing (no I/O beyond reading the given files): :func:`parse_drumkit` reads one kit's XML (every
Hydrogen format: layers inside ``instrumentComponent``, directly in the instrument, or a bare ``filename``),
:func:`match_instrument` decides whether an instrument name is a kick / snare / hat / ..., and
:func:`debian_licences` reads a Debian ``copyright`` file for kits whose XML has no licence.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# keyword patterns per instrument (matched on the lower-cased instrument name, word-ish boundaries)
INSTRUMENTS: dict[str, tuple[str, ...]] = {
    "kick": (r"kick", r"\bkik\b", r"bass ?drum", r"\bbd\d*\b", r"\bbombo\b"),
    "snare": (r"snare", r"\bsd\d*\b", r"\bsn\d*\b"),
    "hat": (r"hi-?hat", r"\bhh\b", r"\bhat\b", r"\bhats\b"),
    "clap": (r"\bclap",),
    "tom": (r"\btom",),
    "ride": (r"\bride\b",),
    "crash": (r"\bcrash\b",),
    "cymbal": (r"cymbal", r"\bsplash\b", r"\bchina\b"),
    "rim": (r"\brim", r"side ?stick", r"\bstick\b"),
    "cowbell": (r"cowbell",),
}
# names that contain a keyword of another instrument and must not count (e.g. a kick of a djembe set)
EXCLUDE: dict[str, tuple[str, ...]] = {
    "kick": (r"snare", r"\bhat\b", r"\btom", r"djembe"),
    "snare": (r"\bkick\b",),
    "rim": (r"rimshot",),  # a snare rimshot is a snare hit
}


class KitError(ValueError):
    """A kit description could not be read; the message names the file."""


def instruments() -> list[str]:
    return sorted(INSTRUMENTS)


def match_instrument(name: str, instrument: str) -> bool:
    """Whether a kit instrument called ``name`` is a ``instrument`` (kick, snare, hat, ...)."""
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r} (known: {', '.join(instruments())})")
    text = " ".join(name.lower().replace("_", " ").split())
    if not any(re.search(p, text) for p in INSTRUMENTS[instrument]):
        return False
    return not any(re.search(p, text) for p in EXCLUDE.get(instrument, ()))


@dataclass
class KitLayer:
    file: str  # as written in the XML (relative to the kit folder)
    min_velocity: float = 0.0
    max_velocity: float = 1.0


@dataclass
class KitInstrument:
    name: str
    layers: list[KitLayer] = field(default_factory=list)


@dataclass
class DrumKit:
    name: str
    folder: Path
    licence: str | None
    author: str | None
    instruments: list[KitInstrument] = field(default_factory=list)

    def select(self, instrument: str) -> list[tuple[KitInstrument, KitLayer]]:
        """Every velocity layer of every instrument that is a ``instrument``, in kit order."""
        return [(ins, lay) for ins in self.instruments if match_instrument(ins.name, instrument)
                for lay in ins.layers]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str | None:
    for c in el:
        if _local(c.tag) == name:
            return (c.text or "").strip()
    return None


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


def parse_drumkit(xml_path: str | Path) -> DrumKit:
    """Read a Hydrogen ``drumkit.xml``; raises :class:`KitError` naming the file when it is not one."""
    p = Path(xml_path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as e:
        raise KitError(f"{p}: not a readable drumkit.xml ({e})") from None
    if _local(root.tag) != "drumkit_info":
        raise KitError(f"{p}: not a Hydrogen drumkit (root element <{_local(root.tag)}>)")
    name = _child_text(root, "name") or p.parent.name
    licence = _child_text(root, "license") or None
    kit = DrumKit(name=name, folder=p.parent, licence=licence, author=_child_text(root, "author") or None)
    ilist = next((c for c in root if _local(c.tag) == "instrumentList"), None)
    for ins in ilist if ilist is not None else []:
        if _local(ins.tag) != "instrument":
            continue
        iname = _child_text(ins, "name") or ""
        layers = []
        for lay in ins.iter():
            if _local(lay.tag) != "layer":
                continue
            fn = _child_text(lay, "filename")
            if fn:
                layers.append(KitLayer(fn, _float(_child_text(lay, "min"), 0.0), _float(_child_text(lay, "max"), 1.0)))
        if not layers:
            fn = _child_text(ins, "filename")
            if fn:
                layers.append(KitLayer(fn))
        kit.instruments.append(KitInstrument(iname, layers))
    return kit


def find_drumkits(root: str | Path) -> list[Path]:
    """Every ``drumkit.xml`` under a folder, sorted."""
    return sorted(Path(root).rglob("drumkit.xml"))


def debian_licences(copyright_path: str | Path) -> dict[str, str]:
    """``Files:`` pattern -> ``License:`` short name from a machine-readable Debian copyright file.

    Patterns are returned as written (e.g. ``drumkits/BJA_Pacific.h2drumkit``, ``*``); see :func:`licence_for`.
    """
    text = Path(copyright_path).read_text(encoding="utf-8", errors="replace")
    out: dict[str, str] = {}
    for para in re.split(r"\n\s*\n", text):
        files: list[str] = []
        licence = None
        current = None
        for line in para.splitlines():
            if line.startswith("Files:"):
                files = line[len("Files:"):].split()
                current = "files"
            elif line.startswith("License:"):
                licence = line[len("License:"):].strip() or None
                current = None
            elif line[:1] in (" ", "\t") and current == "files":
                files.extend(line.split())
            elif line and line[0] not in (" ", "\t"):
                current = None
        if files and licence:
            for f in files:
                out.setdefault(f, licence)
    return out


def licence_for(kit_folder: str, licences: dict[str, str]) -> str | None:
    """The Debian licence of a kit folder name, matching ``drumkits/<name>.h2drumkit`` patterns (Debian writes
    a space as ``?``), else the ``*`` paragraph."""
    for pattern, lic in licences.items():
        if not pattern.endswith(".h2drumkit"):
            continue
        stem = pattern.rsplit("/", 1)[-1][: -len(".h2drumkit")]
        regex = "^" + re.escape(stem).replace(r"\?", ".").replace(r"\*", ".*") + "$"
        if re.match(regex, kit_folder):
            return lic
    return licences.get("*")
