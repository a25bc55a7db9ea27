"""OSC contract v1 (docs/osc.md): datagram bytes -> validated actions, and the replies' bytes. Pure logic.

:func:`parse_datagram` never raises: a datagram that is not OSC, an unknown address, wrong argument types or
an out-of-range value gives a :class:`Dropped` with a one-line reason instead of an action.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kickit.bridge.pads import KNOB_COUNT, MODES, PAD_COUNT
from pythonosc.osc_message_builder import OscMessageBuilder

PREFIX = "/kickit"
MAX_DATAGRAM = 65507
MAX_TEXT = 4096


@dataclass(frozen=True)
class Action:
    """One thing a client asked for. ``pad``/``index`` are validated indices; ``value`` depends on ``kind``."""

    kind: str
    pad: int | None = None
    index: int | None = None
    value: Any = None


@dataclass(frozen=True)
class Dropped:
    address: str
    reason: str


_PAD_RE = re.compile(r"^/kickit/pad/(\d{1,3})/(select|trigger|new|mode|store|spread|encode)$")
MAX_GROUPS = 16  # pad groups (one model each); group 0 is the main model
_KNOB_RE = re.compile(r"^/kickit/knob/(\d{1,3})(/learn)?$")


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) and 0 < len(x) <= MAX_TEXT and "\x00" not in x else None


def _knob_value(x: Any) -> float | None:
    v = _number(x)
    return v if v is not None and -1.0 <= v <= 1.0 else None


def map_message(address: str, args: Sequence[Any]) -> Action | Dropped:
    """One OSC message -> an :class:`Action` or a :class:`Dropped` (the reason)."""
    def drop(reason: str) -> Dropped:
        return Dropped(address, reason)

    if not address.startswith(PREFIX + "/"):
        return drop("unknown address")
    m = _KNOB_RE.match(address)
    if m:
        i = int(m.group(1))
        if i >= KNOB_COUNT:
            return drop(f"knob {i} out of range 0..{KNOB_COUNT - 1}")
        if m.group(2):
            return Action("learn", index=i) if not args else drop("learn takes no arguments")
        if len(args) != 1:
            return drop(f"expects one number, got {len(args)} arguments")
        v = _knob_value(args[0])
        return Action("knob", index=i, value=v) if v is not None else drop(f"knob value {args[0]!r} not in [-1, 1]")
    m = _PAD_RE.match(address)
    if m:
        pad, verb = int(m.group(1)), m.group(2)
        if pad >= PAD_COUNT:
            return drop(f"pad {pad} out of range 0..{PAD_COUNT - 1}")
        if verb in ("select", "new", "store"):
            return Action(verb, pad=pad) if not args else drop(f"{verb} takes no arguments")
        if verb == "trigger":
            if not args:
                return Action("trigger", pad=pad, value=1.0)
            if len(args) != 1:
                return drop("trigger takes at most one velocity")
            a = args[0]
            if isinstance(a, int) and not isinstance(a, bool):
                return Action("trigger", pad=pad, value=a / 127.0) if 1 <= a <= 127 else drop(
                    f"velocity {a} not in 1..127")
            v = _number(a)
            if v is None or not 0.0 < v <= 1.0:
                return drop(f"velocity {a!r} not in (0, 1]")
            return Action("trigger", pad=pad, value=v)
        if verb == "encode":
            t = _text(args[0]) if len(args) == 1 else None
            return Action("encode", pad=pad, value=t) if t is not None else drop(
                "encode expects one non-empty path string")
        if verb == "mode":
            if len(args) != 1 or args[0] not in MODES:
                return drop(f"mode must be one of {', '.join(MODES)}")
            return Action("mode", pad=pad, value=args[0])
        # spread
        v = _number(args[0]) if len(args) == 1 else None
        if v is None or not 0.0 <= v <= 2.0:
            return drop("spread must be one number in [0, 2]")
        return Action("spread", pad=pad, value=v)
    if address == "/kickit/knobs":
        if len(args) != KNOB_COUNT:
            return drop(f"expects {KNOB_COUNT} numbers, got {len(args)}")
        vals = [_knob_value(a) for a in args]
        if any(v is None for v in vals):
            return drop("knob values must be numbers in [-1, 1]")
        return Action("knobs", value=tuple(vals))
    if address in ("/kickit/panic", "/kickit/status"):
        return Action(address.rsplit("/", 1)[1]) if not args else drop("takes no arguments")
    if address == "/kickit/seed":
        if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int) or not 0 <= args[0] < 2**31:
            return drop("seed must be one integer in 0..2^31-1")
        return Action("seed", value=int(args[0]))
    if address == "/kickit/connect":
        if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int) or not 1 <= args[0] <= 65535:
            return drop("connect needs one UDP port 1..65535")
        return Action("connect", value=int(args[0]))
    if address == "/kickit/model/load":
        t = _text(args[0]) if len(args) in (1, 2) else None
        if t is None:
            return drop("expects a non-empty path string and optionally a pad group index")
        if len(args) == 1:
            return Action("model_load", value=t)  # index None: the main group
        g = args[1]
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < MAX_GROUPS:
            return drop(f"pad group {g!r} is not an integer 0..{MAX_GROUPS - 1}")
        return Action("model_load", index=g, value=t)
    if address in ("/kickit/preset/save", "/kickit/preset/load"):
        t = _text(args[0]) if len(args) == 1 else None
        if t is None:
            return drop("expects one non-empty path string")
        return Action(address[len(PREFIX) + 1:].replace("/", "_"), value=t)
    return drop("unknown address")


class OscParseError(ValueError):
    pass


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise OscParseError("unterminated string")
    nxt = (end + 4) & ~3
    if nxt > len(data) or any(data[end:nxt]):
        raise OscParseError("bad string padding")
    try:
        return data[pos:end].decode("utf-8"), nxt
    except UnicodeDecodeError:
        raise OscParseError("string is not UTF-8") from None


def _message(data: bytes) -> tuple[str, list[Any]]:
    address, pos = _string(data, 0)
    if not address.startswith("/"):
        raise OscParseError("address does not start with /")
    if pos == len(data):
        return address, []  # OSC 1.0 allows a missing type tag string: no arguments
    tags, pos = _string(data, pos)
    if not tags.startswith(","):
        raise OscParseError("no type tag string")
    args: list[Any] = []
    for t in tags[1:]:
        if t in "if":
            if pos + 4 > len(data):
                raise OscParseError("truncated argument")
            args.append(struct.unpack_from(">i" if t == "i" else ">f", data, pos)[0])
            pos += 4
        elif t in "hd":
            if pos + 8 > len(data):
                raise OscParseError("truncated argument")
            args.append(struct.unpack_from(">q" if t == "h" else ">d", data, pos)[0])
            pos += 8
        elif t == "s":
            text, pos = _string(data, pos)
            args.append(text)
        elif t == "b":
            if pos + 4 > len(data):
                raise OscParseError("truncated blob")
            n = struct.unpack_from(">i", data, pos)[0]
            end = pos + 4 + n
            if n < 0 or ((end + 3) & ~3) > len(data):
                raise OscParseError("truncated blob")
            args.append(bytes(data[pos + 4:end]))
            pos = (end + 3) & ~3
        elif t in "TF":
            args.append(t == "T")
        elif t == "N":
            args.append(None)
        else:
            raise OscParseError(f"unsupported type tag {t!r}")
    if pos != len(data):
        raise OscParseError("trailing bytes after the arguments")
    return address, args


def _elements(data: bytes, depth: int = 0) -> list[tuple[str, list[Any]]]:
    if data.startswith(b"#bundle\x00"):
        if depth > 8:
            raise OscParseError("bundles nested too deep")
        if len(data) < 16:
            raise OscParseError("truncated bundle")
        pos, out = 16, []
        while pos < len(data):
            if pos + 4 > len(data):
                raise OscParseError("truncated bundle element")
            n = struct.unpack_from(">i", data, pos)[0]
            if n <= 0 or n % 4 or pos + 4 + n > len(data):
                raise OscParseError("bad bundle element size")
            out.extend(_elements(data[pos + 4:pos + 4 + n], depth + 1))
            pos += 4 + n
        return out
    if len(data) % 4:
        raise OscParseError("size is not a multiple of 4")
    return [_message(data)]


def parse_datagram(data: bytes) -> list[Action | Dropped]:
    """A UDP datagram (one message or a bundle) -> its actions/drops in order. Never raises."""
    if not data:
        return [Dropped("?", "empty datagram")]
    if len(data) > MAX_DATAGRAM:
        return [Dropped("?", f"datagram of {len(data)} bytes is too large")]
    try:
        messages = _elements(bytes(data))
    except (OscParseError, struct.error) as e:
        return [Dropped("?", f"not an OSC packet ({e})")]
    except Exception as e:  # defensive: nothing a client sends may stop the server loop
        return [Dropped("?", f"not an OSC packet ({type(e).__name__})")]
    out: list[Action | Dropped] = []
    for address, args in messages:
        try:
            out.append(map_message(address, args))
        except Exception as e:  # defensive, as above
            out.append(Dropped(str(address)[:80], f"internal mapping error ({type(e).__name__})"))
    return out


def build(address: str, *args: Any) -> bytes:
    """An OSC message's bytes (float -> f, int -> i, str -> s)."""
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(int(a), OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(a, int):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(a, float):
            b.add_arg(a, OscMessageBuilder.ARG_TYPE_FLOAT)
        else:
            b.add_arg(str(a), OscMessageBuilder.ARG_TYPE_STRING)
    return b.build().dgram


# Addresses the bridge sends to clients (docs/osc.md, "Bridge -> client"); `kickit m4l check` verifies that the
# Max for Live device only routes these (added by the M4L engineer).
SENDS = ("/kickit/status", "/kickit/knob/names", "/kickit/model", "/kickit/hit/ready")
