"""``kickit m4l check``: is a device file well formed, self-consistent and in step with the bridge?

Checks, each problem one line naming the file:

* the container (chunks, lengths, JSON; see amxd.py);
* every box has a unique id, a maxclass and inlet/outlet counts (and, for objects kickit knows, the counts
  Max gives them);
* every patch cord resolves: source and destination ids exist, outlet/inlet indices are within
  numoutlets/numinlets;
* Live parameters: long names present and unique, short names present, ranges sane;
* OSC: every address the patch sends is one the bridge accepts and every address it routes is one the bridge
  sends, and all of them are in docs/osc.md.

Pure functions over the parsed JSON (:func:`check_patcher`, :func:`osc_uses`) plus :func:`check_file`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kickit.max_for_live import amxd
from kickit.max_for_live.patcher import object_spec

OSC_PREFIX = "/kickit/"
_TOKEN = re.compile(r"/kickit/[A-Za-z0-9_/<>{}%$\-]*")
_PLACEHOLDER = re.compile(r"^(\d+|<[^>]*>|\{[^}]*\}|%l?[di]|\$i?\d|\*)$")


@dataclass(frozen=True)
class OscUse:
    """One OSC address the patch uses. ``direction``: "out" (device -> bridge) or "in" (bridge -> device).

    ``address`` is a template: ``{}`` stands for a number the patch fills in at run time (a pad index);
    ``args`` are OSC type tags the patch sends ('i', 'f', 's'; '?' where it cannot tell) and ``values``
    the constant arguments written in the patch (None where the value is filled in at run time).
    """

    direction: str
    address: str
    args: tuple[str, ...]
    values: tuple[Any, ...]
    box: str


@dataclass
class Report:
    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    uses: list[OscUse] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def normalise(address: str) -> str:
    """Address with every variable segment (digits, <n>, {}, %ld, $1) replaced by ``*``."""
    parts = address.rstrip("/").split("/")
    return "/".join("*" if _PLACEHOLDER.match(s) else s for s in parts)


def _boxes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    boxes = doc.get("patcher", {}).get("boxes", [])
    return [b["box"] for b in boxes if isinstance(b, dict) and isinstance(b.get("box"), dict)]


def _sprintf_uses(text: str) -> tuple[str, tuple[str, ...]]:
    words = [w for w in text.split()[1:] if w != "symout"]
    address = re.sub(r"%l?[di]", "{}", words[0])
    args = []
    for w in words[1:]:
        m = re.fullmatch(r"%l?([dif]|s)", w)
        args.append({"d": "i", "i": "i", "f": "f", "s": "s"}[m.group(1)] if m else "?")
    return address, tuple(args)


def _const(word: str) -> tuple[str, Any]:
    if re.fullmatch(r"\$[ifs]?\d", word):  # filled in at run time by the incoming message
        return {"i": "i", "f": "f", "s": "s"}.get(word[1], "?"), None
    try:
        return "i", int(word)
    except ValueError:
        pass
    try:
        return "f", float(word)
    except ValueError:
        return "s", word


def osc_uses(doc: dict[str, Any]) -> list[OscUse]:
    """Every OSC address the patch sends (message boxes, sprintf, prepend) or expects (route)."""
    boxes = _boxes(doc)
    by_id = {b.get("id"): b for b in boxes}
    sources: dict[str, list[dict[str, Any]]] = {}
    for line in doc.get("patcher", {}).get("lines", []):
        try:
            src, dst = line["patchline"]["source"][0], line["patchline"]["destination"][0]
        except (KeyError, TypeError, IndexError):
            continue
        if src in by_id:
            sources.setdefault(dst, []).append(by_id[src])
    uses: list[OscUse] = []
    for b in boxes:
        text = b.get("text")
        if not isinstance(text, str) or OSC_PREFIX not in text:
            continue
        words = text.split()
        cls = b.get("maxclass")
        head = words[0] if words else ""
        if cls == "newobj" and head in ("route", "routepass", "select", "sel"):
            for w in words[1:]:
                if w.startswith(OSC_PREFIX):
                    uses.append(OscUse("in", w, (), (), b["id"]))
        elif cls == "newobj" and head == "sprintf":
            address, args = _sprintf_uses(text)
            uses.append(OscUse("out", address, args, (None,) * len(args), b["id"]))
        elif cls == "newobj" and head == "prepend" and len(words) > 1:
            kinds = {s.get("maxclass") for s in sources.get(b["id"], [])}
            arg = "f" if kinds & {"live.dial", "flonum"} else "i" if kinds & {"live.numbox", "number"} else "?"
            uses.append(OscUse("out", words[1], (arg,), (None,), b["id"]))
        elif cls == "message" and head.startswith(OSC_PREFIX):
            for part in text.split(","):  # a message box may hold several messages
                ws = part.split()
                if not ws:
                    continue
                consts = [_const(w) for w in ws[1:]]
                address = re.sub(r"\$[ifs]?\d", "{}", ws[0])
                uses.append(OscUse("out", address, tuple(t for t, _ in consts), tuple(v for _, v in consts),
                                   b["id"]))
        else:
            for tok in _TOKEN.findall(text):
                uses.append(OscUse("out", tok, (), (), b["id"]))
    return uses


def docs_addresses(text: str) -> set[str]:
    """Normalised /kickit/ addresses mentioned in a markdown document (docs/osc.md)."""
    return {normalise(t) for t in _TOKEN.findall(text)}


def default_docs_path() -> Path | None:
    repo = Path(__file__).resolve().parent.parent
    p = repo / "docs" / "osc.md"
    return p if p.is_file() else None


def example_message(use: OscUse) -> tuple[str, list[Any]]:
    """A concrete message for an address the patch sends: placeholders -> 0, arguments -> typical values
    of their type (the patch's own constants where it has them)."""
    address = use.address.replace("{}", "0")
    sample = {"i": 100, "f": 0.5, "s": "hold", "?": 0.5}
    args = [v if v is not None else sample[t] for t, v in zip(use.args, use.values, strict=True)]
    return address, args


@dataclass(frozen=True)
class BridgeTable:
    """What the bridge does with addresses: ``handles(address, args)`` -> None or the reason it drops it;
    ``sends``: the normalised addresses it sends (None when the bridge does not publish them)."""

    handles: Any
    sends: set[str] | None


def bridge_table() -> BridgeTable | None:
    """The bridge's own OSC mapping (kickit.bridge.oscmap), or None when the bridge is not importable."""
    try:
        from kickit.bridge import oscmap
    except ImportError:
        return None

    def handles(address: str, args: list[Any]) -> str | None:
        result = oscmap.map_message(address, args)
        return getattr(result, "reason", None) if isinstance(result, oscmap.Dropped) else None

    sends = getattr(oscmap, "SENDS", None)
    return BridgeTable(handles, {normalise(a) for a in sends} if sends is not None else None)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_structure(doc: dict[str, Any], where: str = "") -> Iterator[str]:
    """Boxes and patch cords of a patcher and, recursively, of its subpatchers (``where`` prefixes those)."""
    body = doc.get("patcher")
    if not isinstance(body, dict):
        yield f'{where}patcher JSON must be {{"patcher": {{...}}}}'
        return
    for problem in _check_level(body):
        yield where + problem
    for entry in body.get("boxes") or []:
        b = entry.get("box") if isinstance(entry, dict) else None
        if isinstance(b, dict) and isinstance(b.get("patcher"), dict):
            yield from check_structure({"patcher": b["patcher"]}, f"{where}in subpatcher {b.get('id')}: ")


def _check_level(body: dict[str, Any]) -> Iterator[str]:
    raw_boxes, raw_lines = body.get("boxes"), body.get("lines", [])
    if not isinstance(raw_boxes, list) or not isinstance(raw_lines, list):
        yield "patcher 'boxes' and 'lines' must be lists"
        return
    boxes: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(raw_boxes):
        b = entry.get("box") if isinstance(entry, dict) else None
        if not isinstance(b, dict):
            yield f"boxes[{i}] is not {{\"box\": {{...}}}}"
            continue
        bid = b.get("id")
        if not isinstance(bid, str) or not bid:
            yield f"boxes[{i}] has no id"
            continue
        if bid in boxes:
            yield f"box id {bid} is used twice"
            continue
        if not isinstance(b.get("maxclass"), str):
            yield f"box {bid} has no maxclass"
            continue
        nin, nout = b.get("numinlets"), b.get("numoutlets")
        if not (isinstance(nin, int) and isinstance(nout, int) and nin >= 0 and nout >= 0):
            yield f"box {bid} ({b['maxclass']}) has no valid numinlets/numoutlets"
            continue
        boxes[bid] = b
        try:
            spec_in, spec_out, _ = object_spec(b["maxclass"], b.get("text"))
        except (KeyError, ValueError):
            continue  # an object kickit does not know: take its counts as written
        if (nin, nout) != (spec_in, spec_out):
            yield (f"box {bid} [{b.get('text') or b['maxclass']}] declares {nin} inlets/{nout} outlets, "
                   f"Max gives it {spec_in}/{spec_out}")
    for i, entry in enumerate(raw_lines):
        line = entry.get("patchline") if isinstance(entry, dict) else None
        try:
            (src, outlet), (dst, inlet) = line["source"][:2], line["destination"][:2]  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            yield f"lines[{i}] is not a patchline with source [id, outlet] and destination [id, inlet]"
            continue
        where = f"patch cord {src}:{outlet} -> {dst}:{inlet}"
        if src not in boxes:
            yield f"{where}: source box {src} does not exist"
            continue
        if dst not in boxes:
            yield f"{where}: destination box {dst} does not exist"
            continue
        if not isinstance(outlet, int) or not 0 <= outlet < boxes[src]["numoutlets"]:
            yield f"{where}: box {src} has {boxes[src]['numoutlets']} outlets, no outlet {outlet}"
        if not isinstance(inlet, int) or not 0 <= inlet < boxes[dst]["numinlets"]:
            yield f"{where}: box {dst} has {boxes[dst]['numinlets']} inlets, no inlet {inlet}"


def check_parameters(doc: dict[str, Any]) -> Iterator[str]:
    seen: dict[str, str] = {}
    shorts: dict[str, str] = {}
    for b in _boxes(doc):
        if not b.get("parameter_enable"):
            continue
        bid = b.get("id")
        valueof = (b.get("saved_attribute_attributes") or {}).get("valueof")
        if not isinstance(valueof, dict):
            yield f"parameter box {bid} has no saved_attribute_attributes.valueof"
            continue
        long_ = valueof.get("parameter_longname")
        short = valueof.get("parameter_shortname")
        if not isinstance(long_, str) or not long_.strip():
            yield f"parameter box {bid} has no parameter_longname"
            continue
        if long_ in seen:
            yield f"parameter name {long_!r} is used by both {seen[long_]} and {bid} (names must be unique)"
        seen[long_] = bid
        if not isinstance(short, str) or not short.strip():
            yield f"parameter {long_!r} ({bid}) has no parameter_shortname"
        elif short in shorts:
            yield f"parameter short name {short!r} is used by both {shorts[short]} and {bid} (names must be unique)"
        else:
            shorts[short] = bid
        lo, hi = valueof.get("parameter_mmin", 0.0), valueof.get("parameter_mmax", 127.0)
        if not (_num(lo) and _num(hi) and lo < hi):
            yield f"parameter {long_!r} ({bid}): range {lo}..{hi} is not a valid min < max"
        init = valueof.get("parameter_initial")
        if init is not None and _num(lo) and _num(hi):
            vals = init if isinstance(init, list) else [init]
            if not all(_num(v) and lo <= v <= hi for v in vals):
                yield f"parameter {long_!r} ({bid}): initial value {init} outside {lo}..{hi}"


def check_osc(uses: Iterable[OscUse], docs: set[str] | None, bridge: BridgeTable | None) -> Iterator[str]:
    for u in uses:
        addr = normalise(u.address)
        if docs is not None and addr not in docs:
            yield f"OSC address {u.address} (box {u.box}) is not in docs/osc.md"
        if bridge is None:
            continue
        if u.direction == "out":
            address, args = example_message(u)
            reason = bridge.handles(address, args)
            if reason is not None:
                shown = " ".join([address, *map(str, args)])
                yield f"OSC message '{shown}' (box {u.box}) is dropped by the bridge: {reason}"
        elif bridge.sends is not None and addr not in bridge.sends:
            yield f"OSC address {u.address} (box {u.box}) is expected from the bridge, which never sends it"


def check_patcher(doc: dict[str, Any], *, docs_text: str | None = None,
                  bridge: BridgeTable | None = None) -> tuple[list[str], list[OscUse]]:
    """Problems of a patcher document (empty when fine) and the OSC addresses it uses."""
    problems = list(check_structure(doc))
    problems += check_parameters(doc)
    uses = osc_uses(doc)
    docs = docs_addresses(docs_text) if docs_text is not None else None
    problems += check_osc(uses, docs, bridge)
    return problems, uses


def check_file(path: str | os.PathLike[str], *, docs_path: str | os.PathLike[str] | None = None,
               use_bridge: bool = True) -> Report:
    """Check a device file; container errors raise :class:`amxd.AmxdError`, the rest land in the report."""
    report = Report(str(path))
    dev = amxd.read(path)
    if dev.device_type != amxd.INSTRUMENT:
        report.notes.append(f"device type is {amxd.DEVICE_TYPES[dev.device_type]}, not instrument")
    docs_file = Path(docs_path) if docs_path is not None else default_docs_path()
    docs_text = None
    if docs_file is not None:
        try:
            docs_text = docs_file.read_text(encoding="utf-8")
        except OSError as e:
            report.problems.append(f"cannot read the OSC contract {docs_file} ({e.strerror or e})")
    else:
        report.notes.append("docs/osc.md not found: OSC addresses not checked against the docs")
    bridge = bridge_table() if use_bridge else None
    if use_bridge and bridge is None:
        report.notes.append("the bridge (kickit.bridge.oscmap) is not importable: addresses not checked "
                            "against the bridge")
    elif bridge is not None and bridge.sends is None:
        report.notes.append("the bridge does not publish the addresses it sends (oscmap.SENDS): "
                            "routed addresses checked against docs/osc.md only")
    problems, uses = check_patcher(dev.patcher, docs_text=docs_text, bridge=bridge)
    report.problems += problems
    report.uses = uses
    return report
