"""A small builder for Max patcher JSON (the ``{"patcher": {"boxes": [...], "lines": [...]}}`` format).

Pure logic, no I/O. Boxes get ids ``obj-1``, ``obj-2``... in creation order; inlet/outlet counts and outlet
types come from :data:`OBJECTS` (what Max itself reports for these objects), so the patch source never spells
them by hand and the checker can verify every patch cord against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# object class (first word of a newobj's text, or a UI maxclass) -> (numinlets, numoutlets, outlettype), as
# Max 8/9 save them (checked against patchers saved by Max)
# A callable computes the counts from the arguments (route, trigger, unpack, sprintf...).
ObjSpec = tuple[int, int, list[str]]


def _route(args: list[str]) -> ObjSpec:
    n = max(1, len(args))  # Max 8+: one inlet per argument (to change it) besides the left one
    return n + 1, n + 1, [""] * (n + 1)


def _trigger(args: list[str]) -> ObjSpec:
    kinds = {"b": "bang", "i": "int", "f": "float", "l": "", "a": "", "s": ""}
    types = [kinds.get(a, "") for a in (args or ["a", "a"])]
    return 1, len(types), types


def _select(args: list[str]) -> ObjSpec:
    n = max(1, len(args))
    return n + 1, n + 1, ["bang"] * n + [""]


def _unpack(args: list[str]) -> ObjSpec:
    n = max(2, len(args))
    types = [{"s": "", "i": "int", "f": "float"}.get(a, "") for a in (args or ["0", "0"])]
    return 1, n, (types + [""] * n)[:n]


def _pack(args: list[str]) -> ObjSpec:
    return max(2, len(args)), 1, [""]


def _sprintf(args: list[str]) -> ObjSpec:
    fmt = " ".join(a for a in args if a != "symout")
    n = fmt.count("%") - 2 * fmt.count("%%")
    return max(1, n), 1, [""]


def _play(args: list[str]) -> ObjSpec:
    ch = int(args[1]) if len(args) > 1 and args[1].isdigit() else 1
    return 1, ch + 1, ["signal"] * ch + ["bang"]


OBJECTS: dict[str, Any] = {
    # newobj classes
    "notein": (1, 3, ["int", "int", "int"]),
    "stripnote": (2, 2, ["int", "int"]),
    "-": (2, 1, ["int"]),
    "/": (2, 1, ["float"]),
    "split": (3, 2, ["int", "int"]),
    "pack": _pack,
    "sprintf": _sprintf,
    "fromsymbol": (1, 1, [""]),
    "prepend": (1, 1, [""]),
    "udpsend": (1, 0, []),
    "udpreceive": (1, 1, [""]),
    "route": _route,
    "t": _trigger,
    "trigger": _trigger,
    "sel": _select,
    "select": _select,
    "unpack": _unpack,
    "i": (2, 1, ["int"]),
    "metro": (2, 1, ["bang"]),
    "delay": (2, 1, ["bang"]),
    "loadmess": (1, 1, [""]),
    "gate": (2, 2, ["", ""]),
    "random": (2, 1, ["int"]),
    "expr": (1, 1, [""]),
    "buffer~": (1, 2, ["float", "bang"]),
    "play~": _play,
    "*~": (2, 1, ["signal"]),
    "plugout~": (2, 2, ["signal", "signal"]),
    "live.thisdevice": (1, 3, ["bang", "int", "int"]),
    # UI maxclasses
    "message": (2, 1, [""]),
    "comment": (1, 0, []),
    "live.comment": (1, 0, []),
    "live.dial": (1, 2, ["", "float"]),
    "live.numbox": (1, 2, ["", "float"]),
    "live.text": (1, 2, ["", ""]),
    "live.menu": (1, 3, ["", "", "float"]),
}


def object_spec(maxclass: str, text: str | None) -> ObjSpec:
    """Inlets, outlets and outlet types of a box; KeyError for an object this builder does not know."""
    if maxclass == "newobj":
        words = (text or "").split()
        if not words:
            raise KeyError("empty object box")
        spec = OBJECTS[words[0]]
        return spec(words[1:]) if callable(spec) else spec
    spec = OBJECTS[maxclass]
    return spec([]) if callable(spec) else spec


@dataclass(frozen=True)
class Box:
    """A handle on a box in a :class:`Patcher`; ``box[i]`` is outlet ``i`` for :meth:`Patcher.connect`."""

    id: str
    numinlets: int
    numoutlets: int

    def __getitem__(self, outlet: int) -> tuple[Box, int]:
        return self, outlet


class Patcher:
    """Collects boxes and patch cords; :meth:`to_dict` gives the patcher JSON object."""

    def __init__(self) -> None:
        self.boxes: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self._n = 0
        self._cursor = (20.0, 20.0)

    def _place(self, width: float, height: float) -> list[float]:
        x, y = self._cursor
        if x + width > 1200.0:
            x, y = 20.0, y + 40.0
        self._cursor = (x + width + 16.0, y)
        return [x, y, width, height]

    def newline(self) -> None:
        """Start the next row of boxes in the patching view (layout only)."""
        self._cursor = (20.0, self._cursor[1] + 60.0)

    def add(self, maxclass: str, text: str | None = None, *, width: float | None = None,
            height: float = 22.0, presentation: list[float] | None = None, **attrs: Any) -> Box:
        """Add a box: ``add("newobj", "route /a /b")``, ``add("message", "start")``, ``add("live.dial", ...)``."""
        nin, nout, types = object_spec(maxclass, text)
        self._n += 1
        box: dict[str, Any] = {"id": f"obj-{self._n}", "maxclass": maxclass, "numinlets": nin, "numoutlets": nout}
        if types:
            box["outlettype"] = list(types)
        w = width if width is not None else max(40.0, 7.0 * len(text or maxclass) + 12.0)
        box["patching_rect"] = self._place(w, height)
        if text is not None:
            box["text"] = text
        if presentation is not None:
            box["presentation"] = 1
            box["presentation_rect"] = [float(v) for v in presentation]
        box.update(attrs)
        self.boxes.append({"box": box})
        return Box(box["id"], nin, nout)

    def obj(self, text: str, **kw: Any) -> Box:
        return self.add("newobj", text, **kw)

    def msg(self, text: str, **kw: Any) -> Box:
        return self.add("message", text, **kw)

    def connect(self, source: tuple[Box, int] | Box, dest: Box, inlet: int = 0) -> None:
        src, outlet = source if isinstance(source, tuple) else (source, 0)
        if not 0 <= outlet < src.numoutlets:
            raise ValueError(f"{src.id} has no outlet {outlet} (it has {src.numoutlets})")
        if not 0 <= inlet < dest.numinlets:
            raise ValueError(f"{dest.id} has no inlet {inlet} (it has {dest.numinlets})")
        self.lines.append({"patchline": {"source": [src.id, outlet], "destination": [dest.id, inlet]}})

    def to_dict(self, **patcher_attrs: Any) -> dict[str, Any]:
        body: dict[str, Any] = dict(patcher_attrs)
        body["boxes"] = list(self.boxes)
        body["lines"] = list(self.lines)
        return {"patcher": body}
