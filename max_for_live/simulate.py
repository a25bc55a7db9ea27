"""Runs the control (message) side of a patcher: the Max objects the kickit device uses, Max's message order.

Live cannot run in tests, so this is how the device's *wiring* is exercised: :class:`PatchRunner` loads the
patcher JSON, and the test plays a note (``notein``), turns a dial, clicks a button, picks a menu item or
delivers an OSC message to ``udpreceive``; what reaches ``udpsend`` is what the device would send to the
bridge, and ``replace <path>`` messages reaching a ``buffer~`` are what it would load. A wrong cord, a
swapped inlet or a bad ``sprintf`` format changes the messages, and the end-to-end test against the real
bridge fails.

Semantics follow Max: outlets fire right to left (``trigger``, ``notein``, ``stripnote``), the left inlet is
hot and the others cold, one outlet feeding several inlets fires them right to left by patching position.
Signal objects (``play~``, ``*~``, ``plugout~``) are not run; the messages they receive are recorded.
Unknown objects raise :class:`SimError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Atom = int | float | str
Msg = list[Atom]
BANG: Msg = ["bang"]


class SimError(RuntimeError):
    pass


def _num(text: str) -> Atom:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_atoms(text: str) -> Msg:
    return [_num(w) for w in text.split()]


def _fmt(spec: str, value: Atom) -> str:
    if spec in ("%ld", "%d", "%i"):
        return str(int(value))  # type: ignore[arg-type]
    if spec == "%f":
        return f"{float(value):f}"  # type: ignore[arg-type]
    return str(value)


_SPEC = re.compile(r"%l?d|%i|%f|%s")
_EXPR_OK = re.compile(r"^[0-9+\-*/(). ]+$")


@dataclass
class Obj:
    id: str
    maxclass: str
    words: list[str]
    x: float
    state: dict[str, Any] = field(default_factory=dict)


class PatchRunner:
    """Message-level execution of a patcher document (``{"patcher": {...}}``)."""

    def __init__(self, doc: dict[str, Any], *, seed: int = 0) -> None:
        import random

        self.rng = random.Random(seed)
        self.objs: dict[str, Obj] = {}
        for entry in doc["patcher"]["boxes"]:
            b = entry["box"]
            text = b.get("text", "") if b["maxclass"] in ("newobj", "message", "comment") else ""
            words = text.split() if b["maxclass"] == "newobj" else [text]
            obj = Obj(b["id"], b["maxclass"], words, float(b.get("patching_rect", [0.0])[0]))
            obj.state["box"] = b
            self.objs[b["id"]] = obj
        self.cords: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for entry in doc["patcher"]["lines"]:
            ln = entry["patchline"]
            self.cords.setdefault((ln["source"][0], ln["source"][1]), []).append(
                (ln["destination"][0], ln["destination"][1]))
        for outs in self.cords.values():  # Max: right to left by the destination's position
            outs.sort(key=lambda d: -self.objs[d[0]].x)
        self.sent: list[Msg] = []  # what reached udpsend
        self.loaded: dict[str, str] = {}  # buffer~ name -> path of the last replace
        self.played: list[tuple[str, Any]] = []  # (play~ buffer name, gain of its channels)
        self.texts: dict[str, str] = {}  # comment id -> its text after set messages
        self.on_send: Callable[[Msg], None] | None = None
        self._depth = 0

    # ----- finding boxes -----------------------------------------------------------------------------
    def find(self, pred: Callable[[Obj], bool]) -> list[Obj]:
        return [o for o in self.objs.values() if pred(o)]

    def one(self, pred: Callable[[Obj], bool], what: str) -> Obj:
        found = self.find(pred)
        if len(found) != 1:
            raise SimError(f"{what}: {len(found)} boxes match")
        return found[0]

    def parameter(self, longname: str) -> Obj:
        def match(o: Obj) -> bool:
            v = o.state["box"].get("saved_attribute_attributes", {}).get("valueof", {})
            return v.get("parameter_longname") == longname
        return self.one(match, f"parameter {longname!r}")

    def newobj(self, head: str) -> list[Obj]:
        return self.find(lambda o: o.maxclass == "newobj" and o.words and o.words[0] == head)

    # ----- what the outside world does ---------------------------------------------------------------
    def load(self) -> None:
        """The device is loaded: loadmess boxes fire, live.thisdevice bangs."""
        for o in self.newobj("loadmess"):
            self._out(o, 0, parse_atoms(" ".join(o.words[1:])))
        for o in self.newobj("live.thisdevice"):
            self._out(o, 0, BANG)

    def note(self, pitch: int, velocity: int, channel: int = 1) -> None:
        for o in self.newobj("notein"):
            self._out(o, 2, [channel])
            self._out(o, 1, [velocity])
            self._out(o, 0, [pitch])

    def turn(self, longname: str, value: float) -> None:
        """Move a live.dial / live.numbox / live.menu parameter (as the user or Live automation does)."""
        o = self.parameter(longname)
        self._input(o, 0, [value])

    def click(self, longname: str) -> None:
        o = self.parameter(longname)
        if o.maxclass != "live.text":
            raise SimError(f"{longname!r} is a {o.maxclass}, not a button")
        self._out(o, 0, BANG)

    def tick(self) -> None:
        """One metro period."""
        for o in self.newobj("metro"):
            if o.state.get("on"):
                self._out(o, 0, BANG)

    def timeout(self) -> None:
        """Time passes: every armed delay fires."""
        for o in self.newobj("delay"):
            if o.state.pop("armed", False):
                self._out(o, 0, BANG)

    def receive(self, address: str, args: list[Atom]) -> None:
        """An OSC message arrives at udpreceive."""
        for o in self.newobj("udpreceive"):
            self._out(o, 0, [address, *args])

    def text_of(self, varname_or_id: str) -> str:
        for o in self.objs.values():
            if o.id == varname_or_id or o.state["box"].get("varname") == varname_or_id:
                return self.texts.get(o.id, o.words[0] if o.words else "")
        raise SimError(f"no box {varname_or_id!r}")

    # ----- message passing ---------------------------------------------------------------------------
    def _out(self, o: Obj, outlet: int, msg: Msg) -> None:
        self._depth += 1
        if self._depth > 200:
            raise SimError("stack overflow (a feedback loop in the patch)")
        try:
            for dest, inlet in self.cords.get((o.id, outlet), []):
                self._input(self.objs[dest], inlet, list(msg))
        finally:
            self._depth -= 1

    def _input(self, o: Obj, inlet: int, msg: Msg) -> None:  # noqa: C901 - one branch per object class
        cls = o.maxclass
        head = o.words[0] if cls == "newobj" and o.words else cls
        args = o.words[1:] if cls == "newobj" else []
        st = o.state
        if cls == "message":
            if msg and msg[0] == "set":
                o.words = [" ".join(map(str, msg[1:]))]
                return
            for part in o.words[0].split(","):
                atoms = []
                for w in part.split():
                    m = re.fullmatch(r"\$[ifs]?(\d)", w)
                    atoms.append(msg[int(m.group(1)) - 1] if m and msg != BANG else _num(w))
                if atoms:
                    self._out(o, 0, atoms)
        elif cls in ("comment", "live.comment"):
            if msg and msg[0] == "set":
                self.texts[o.id] = " ".join(map(str, msg[1:]))
        elif cls in ("live.dial", "live.numbox", "live.menu"):
            if msg and msg[0] == "set":
                st["value"] = msg[1]
                return
            v = msg[0] if msg != BANG else st.get("value", 0)
            if cls != "live.dial":
                v = int(round(float(v)))
            st["value"] = v
            self._out(o, 0, [v])
        elif cls == "live.text":
            self._out(o, 0, BANG)
        elif head in ("t", "trigger"):
            for i in reversed(range(len(args))):
                kind = args[i]
                out = BANG if kind == "b" else [int(msg[0])] if kind == "i" else (
                    [float(msg[0])] if kind == "f" else msg)
                self._out(o, i, out)
        elif head == "stripnote":
            if inlet == 1:
                st["vel"] = msg[0]
            elif st.get("vel", 0):
                self._out(o, 1, [st["vel"]])
                self._out(o, 0, [msg[0]])
        elif head in ("-", "/"):
            if inlet == 1:
                st["arg"] = msg[0]
                return
            b = st.get("arg", _num(args[0]) if args else 0)
            a = msg[0]
            self._out(o, 0, [a - b if head == "-" else float(a) / float(b)])  # type: ignore[operator]
        elif head == "split":
            lo, hi = _num(args[0]), _num(args[1])
            if inlet == 0:
                self._out(o, 0 if lo <= msg[0] <= hi else 1, [msg[0]])  # type: ignore[operator]
        elif head in ("pack", "sprintf"):
            n = int(o.state["box"]["numinlets"])
            vals = st.setdefault("vals", [_num(a) for a in args] if head == "pack" else [0] * n)
            if inlet > 0:
                vals[inlet] = msg[1] if msg[0] == "symbol" and len(msg) > 1 else msg[0]
                return
            if msg != BANG:
                for i, a in enumerate(msg[:n]):
                    vals[i] = a
            if head == "pack":
                self._out(o, 0, list(vals))
            else:
                fmt = " ".join(a for a in args if a != "symout")
                it = iter(vals)
                self._out(o, 0, [_SPEC.sub(lambda m: _fmt(m.group(0), next(it)), fmt)])
        elif head == "fromsymbol":
            self._out(o, 0, parse_atoms(str(msg[0])))
        elif head == "prepend":
            self._out(o, 0, [*parse_atoms(" ".join(args)), *msg])
        elif head in ("route", "sel", "select"):
            if inlet != 0:
                return
            keys = [_num(a) for a in args]
            first = msg[0]
            for i, k in enumerate(keys):
                if first == k:
                    self._out(o, i, msg[1:] if head == "route" and len(msg) > 1 else BANG)
                    return
            self._out(o, len(keys), msg)
        elif head == "unpack":
            for i in reversed(range(min(len(msg), len(args)))):
                self._out(o, i, [msg[i]])
        elif head == "i":
            if inlet == 1:
                st["v"] = int(msg[0])
                return
            if msg != BANG:
                st["v"] = int(msg[0])
            self._out(o, 0, [st.get("v", int(_num(args[0])) if args else 0)])
        elif head == "gate":
            if inlet == 0:
                st["open"] = int(msg[0])
            elif st.get("open", 0) > 0:
                self._out(o, st["open"] - 1, msg)
        elif head == "metro":
            if inlet == 0:
                st["on"] = msg == BANG or bool(msg[0])
        elif head == "delay":
            if inlet == 0:
                st["armed"] = msg != ["stop"]
        elif head == "random":
            if inlet == 0:
                self._out(o, 0, [self.rng.randrange(int(args[0]))])
        elif head == "expr":
            expr = " ".join(args)
            expr = re.sub(r"\$[if]1", str(msg[0]), expr)
            if not _EXPR_OK.match(expr):
                raise SimError(f"expr {expr!r}: only arithmetic is simulated")
            self._out(o, 0, [eval(expr, {"__builtins__": {}})])  # noqa: S307 - checked: digits/operators only
        elif head == "udpsend":
            self.sent.append(msg)
            if self.on_send is not None:
                self.on_send(msg)
        elif head == "buffer~":
            if msg[0] == "replace":
                self.loaded[args[0]] = str(msg[1])
        elif head == "play~":
            if inlet == 0:
                self.played.append((args[0], msg))
        elif head in ("*~", "plugout~", "loadmess", "live.thisdevice", "notein", "udpreceive"):
            if head == "*~" and inlet == 1:
                st["gain"] = float(msg[0])
        else:
            raise SimError(f"box {o.id}: object {head!r} is not simulated")

    def gains(self, buffer_name: str) -> list[float]:
        """Gains of the *~ objects fed by the play~ of ``buffer_name``."""
        player = self.one(lambda o: o.maxclass == "newobj" and o.words[:2] == ["play~", buffer_name],
                          f"play~ {buffer_name}")
        out = []
        for outlet in range(2):
            for dest, _ in self.cords.get((player.id, outlet), []):
                out.append(self.objs[dest].state.get("gain", 0.0))
        return out
