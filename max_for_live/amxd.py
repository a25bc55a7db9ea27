"""The .amxd container: a flat list of chunks around the patcher JSON.

Each chunk is a 4-byte ASCII tag and a little-endian uint32 length (of the data that follows, not counting
the 8 header bytes), then the data; no padding. A device Live opens has, in order:

* ``ampf`` (4 bytes): the device type, ``aaaa`` audio effect, ``mmmm`` MIDI effect, ``iiii`` instrument;
* ``meta`` (4 bytes): flags, zero for an ordinary (unfrozen, unencrypted) device;
* ``ptch``: the patcher JSON in UTF-8 followed by one NUL byte.

Frozen devices carry an ``mx@c`` archive inside ``ptch`` and encrypted ones a ``ciph`` chunk; kickit writes
neither and the reader refuses them with a clear message. Every problem is an :class:`AmxdError` whose
one-line message names the file.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICE_TYPES = {"aaaa": "audio effect", "mmmm": "MIDI effect", "iiii": "instrument"}
INSTRUMENT = "iiii"
KNOWN_CHUNKS = ("ampf", "meta", "ptch", "ciph", "anno")
MAX_BYTES = 64 * 1024 * 1024


class AmxdError(ValueError):
    """A device file is malformed; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Amxd:
    device_type: str  # "iiii", "aaaa" or "mmmm"
    meta: bytes
    patcher: dict[str, Any]  # the whole JSON document, {"patcher": {...}}
    chunks: tuple[str, ...]


def _chunk(tag: str, data: bytes) -> bytes:
    return tag.encode("ascii") + struct.pack("<I", len(data)) + data


def encode(patcher: dict[str, Any], device_type: str = INSTRUMENT) -> bytes:
    """The bytes of a device file holding ``patcher`` (the ``{"patcher": {...}}`` document)."""
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"unknown device type {device_type!r} (known: {', '.join(DEVICE_TYPES)})")
    if not isinstance(patcher, dict) or not isinstance(patcher.get("patcher"), dict):
        raise ValueError('the patcher document must be {"patcher": {...}}')
    text = json.dumps(patcher, indent="\t", ensure_ascii=False, sort_keys=False) + "\n"
    return (_chunk("ampf", device_type.encode("ascii")) + _chunk("meta", b"\x00\x00\x00\x00")
            + _chunk("ptch", text.encode("utf-8") + b"\x00"))


def decode(data: bytes, name: str | os.PathLike[str] = "<bytes>") -> Amxd:
    """Parse device bytes; raises :class:`AmxdError` (naming ``name``) on anything malformed."""
    pos = 0
    chunks: list[tuple[str, bytes]] = []
    while pos < len(data):
        if len(data) - pos < 8:
            raise AmxdError(name, f"truncated chunk header at byte {pos} ({len(data) - pos} bytes left)")
        raw_tag = data[pos:pos + 4]
        try:
            tag = raw_tag.decode("ascii")
        except UnicodeDecodeError:
            tag = ""
        if tag not in KNOWN_CHUNKS:
            after = f" (bad length in the {chunks[-1][0]!r} chunk before it?)" if chunks else ""
            raise AmxdError(name, f"bad chunk tag {raw_tag!r} at byte {pos}{after}: not a valid device file")
        (length,) = struct.unpack_from("<I", data, pos + 4)
        if length > len(data) - pos - 8:
            raise AmxdError(name, f"chunk {tag!r} at byte {pos} says {length} bytes but only "
                                  f"{len(data) - pos - 8} follow (bad chunk length or truncated file)")
        chunks.append((tag, data[pos + 8:pos + 8 + length]))
        pos += 8 + length
    if not chunks:
        raise AmxdError(name, "empty file")
    tags = [t for t, _ in chunks]
    if tags[0] != "ampf":
        raise AmxdError(name, f"first chunk is {tags[0]!r}, expected 'ampf': not a Max for Live device")
    kind = chunks[0][1]
    if len(kind) != 4 or kind.decode("ascii", "replace") not in DEVICE_TYPES:
        raise AmxdError(name, f"ampf chunk holds {kind!r}, expected a device type "
                              f"({', '.join(DEVICE_TYPES)}) of 4 bytes")
    if "ciph" in tags:
        raise AmxdError(name, "the device is encrypted (ciph chunk); kickit cannot read it")
    found = dict(chunks)
    for need in ("meta", "ptch"):
        if need not in found:
            raise AmxdError(name, f"no {need!r} chunk (chunks: {', '.join(tags)})")
    if tags.index("meta") > tags.index("ptch"):
        raise AmxdError(name, "the 'meta' chunk must come before 'ptch'")
    if len(found["meta"]) != 4:
        raise AmxdError(name, f"meta chunk is {len(found['meta'])} bytes, expected 4")
    body = found["ptch"]
    if body[:4] == b"mx@c":
        raise AmxdError(name, "the device is frozen (mx@c archive); unfreeze it in Max to check it")
    if not body.endswith(b"\x00"):
        raise AmxdError(name, "ptch chunk does not end with the NUL byte Max writes after the JSON")
    try:
        doc = json.loads(body[:-1].decode("utf-8"))
    except UnicodeDecodeError as e:
        raise AmxdError(name, f"patcher JSON is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AmxdError(name, f"patcher JSON is invalid: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("patcher"), dict):
        raise AmxdError(name, 'patcher JSON must be an object {"patcher": {...}}')
    return Amxd(kind.decode("ascii"), found["meta"], doc, tuple(tags))


def read(path: str | os.PathLike[str]) -> Amxd:
    """Read and parse a device file; :class:`AmxdError` naming the file on any problem."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise AmxdError(p, "not a file")
        if size > MAX_BYTES:
            raise AmxdError(p, f"too large ({size / 2**20:.1f} MB) for a device file")
        data = p.read_bytes()
    except OSError as e:
        raise AmxdError(p, f"cannot read ({e.strerror or e})") from None
    return decode(data, p)


def write(path: str | os.PathLike[str], patcher: dict[str, Any], device_type: str = INSTRUMENT) -> Path:
    """Write a device file atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    data = encode(patcher, device_type)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
