"""Hostile OSC datagrams for the reliability tests and ``kickit bench flood`` (pure logic), and an optional
coverage-guided fuzzer of the parser with atheris (``python -m kickit.bridge.oscfuzz [-runs=N]``; atheris is not
a kickit dependency: ``pip install atheris``).

:func:`hostile` makes one datagram of a named kind, seeded: random bytes, truncated or bit-flipped valid
messages, wrong/unknown type tags, non-UTF-8 addresses, datagrams over 8192 bytes, bundles nested deeper than
the parser allows, bundles with lying element sizes. :func:`valid` makes a valid control message (knob moves,
pad selects, triggers) - what a busy client sends.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
from kickit.bridge.oscmap import build

KINDS = ("random", "truncated", "bitflip", "bad_tag", "non_utf8", "oversize", "deep_bundle", "lying_bundle",
         "unknown_address", "out_of_range")
OVERSIZE = 8192


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (4 - len(b) % 4)


def valid(rng: np.random.Generator, selects: bool = True) -> bytes:
    """A valid control message: a knob move (most), a pad select or a knob set of the selected pad.
    ``selects=False``: knob moves only (they all go to the pad selected before)."""
    r = rng.random()
    if r < 0.7 or (not selects and r < 0.85):
        return build(f"/kickit/knob/{int(rng.integers(8))}", float(rng.uniform(-1, 1)))
    if r < 0.85:
        return build(f"/kickit/pad/{int(rng.integers(16))}/select")
    return build("/kickit/knobs", *[float(v) for v in rng.uniform(-1, 1, 8)])


def bundle(elements: list[bytes]) -> bytes:
    return b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def hostile(kind: str, rng: np.random.Generator, selects: bool = True) -> bytes:
    """One malformed or unwanted datagram of ``kind`` (one of :data:`KINDS`); mutated kinds start from
    :func:`valid` messages (``selects`` passed on)."""
    if kind == "random":
        return rng.bytes(int(rng.integers(1, 200)))
    if kind == "truncated":
        msg = valid(rng, selects)
        return msg[:int(rng.integers(1, len(msg)))]
    if kind == "bitflip":
        msg = bytearray(valid(rng, selects))
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(msg)))
            msg[i] ^= 1 << int(rng.integers(8))
        return bytes(msg)
    if kind == "bad_tag":
        tag = bytes([int(rng.choice([ord(c) for c in "xyzcrmtSI[]"]))])
        return _pad4(b"/kickit/knob/1") + _pad4(b"," + tag) + b"\x00" * 8
    if kind == "non_utf8":
        return _pad4(b"/kickit/\xff\xfe" + rng.bytes(3).replace(b"\x00", b"\x80")) + _pad4(b",f") + struct.pack(">f", 0.5)
    if kind == "oversize":
        n = int(rng.integers(OVERSIZE + 1, 4 * OVERSIZE))
        if rng.random() < 0.5:  # a syntactically valid message with a huge string argument
            return build("/kickit/preset/load", "x" * n)
        return rng.bytes(n)
    if kind == "deep_bundle":
        inner = valid(rng, selects)
        for _ in range(int(rng.integers(10, 40))):
            inner = bundle([inner])
        return inner
    if kind == "lying_bundle":
        e = valid(rng, selects)
        size = int(rng.choice([-4, 0, 3, len(e) + 4, 2**31 - 1]))
        return b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", size) + e
    if kind == "unknown_address":
        return build(f"/kickit/{rng.bytes(4).hex()}", 1)
    if kind == "out_of_range":
        return build(f"/kickit/knob/{int(rng.integers(8, 999))}", float(rng.uniform(-1, 1)))
    raise ValueError(f"unknown hostile kind {kind!r} (known: {', '.join(KINDS)})")


def mixed(rng: np.random.Generator, hostile_share: float = 0.5, selects: bool = True) -> bytes:
    """A flood datagram: valid control messages mixed with every hostile kind."""
    if rng.random() >= hostile_share:
        return valid(rng, selects)
    return hostile(KINDS[int(rng.integers(len(KINDS)))], rng, selects)


def _atheris_main(argv: list[str]) -> None:  # pragma: no cover - optional tool, needs atheris
    import atheris
    from kickit.bridge.oscmap import Action, Dropped, parse_datagram

    atheris.instrument_all()  # the parser is already imported (by this module): instrument what is loaded

    def one(data: bytes) -> None:
        out = parse_datagram(data)
        if not isinstance(out, list) or not out or not all(isinstance(x, (Action, Dropped)) for x in out):
            raise AssertionError(f"parse_datagram({data[:40]!r}...) returned {out!r}")

    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    _atheris_main(sys.argv)
