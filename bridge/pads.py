"""Pads: which MIDI note plays which pad, and what each pad holds (pure logic, no I/O, no threads).

A pad holds a latent snapshot, a mode ("hold": the same kick each hit; "fresh": a new kick near the pad's
latent each hit), eight knob values in [-1, 1] (offsets along the model's knob directions, 0 = the stored
latent) and the spread of its fresh variations. Everything random is derived from the session seed, the pad
index and a counter, so a session (and a preset) is reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PAD_COUNT = 16
KNOB_COUNT = 8
MODES = ("hold", "fresh")
DEFAULT_FIRST_NOTE = 36
DEFAULT_SPREAD = 0.35
MAX_SPREAD = 2.0

# stream tags mixed into the seed so the latent streams never overlap
_STREAM_NEW = 1
_STREAM_FRESH = 2


def parse_pad_notes(spec: str) -> list[int]:
    """``"36-51"`` or ``"36,38,40-45"`` -> the MIDI notes of pads 0, 1, ... (at most 16, all distinct, 0..127)."""
    notes: list[int] = []
    text = spec.strip()
    if not text:
        raise ValueError("pad notes: empty (expected e.g. 36-51)")
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                notes.extend(range(a, b + 1))
            else:
                notes.append(int(part))
        except ValueError:
            raise ValueError(f"pad notes: {part!r} is not a note or a range like 36-51") from None
    if any(not 0 <= n <= 127 for n in notes):
        raise ValueError(f"pad notes: {spec!r} has notes outside 0..127")
    if len(set(notes)) != len(notes):
        raise ValueError(f"pad notes: {spec!r} repeats a note")
    if len(notes) > PAD_COUNT:
        raise ValueError(f"pad notes: {spec!r} gives {len(notes)} pads; at most {PAD_COUNT}")
    return notes


class PadMap:
    """MIDI note <-> pad index."""

    def __init__(self, notes: Sequence[int] | None = None) -> None:
        self.notes = list(notes) if notes is not None else list(range(DEFAULT_FIRST_NOTE,
                                                                       DEFAULT_FIRST_NOTE + PAD_COUNT))
        self._pad_of = {n: i for i, n in enumerate(self.notes)}

    def pad(self, note: int) -> int | None:
        return self._pad_of.get(int(note))

    def note(self, pad: int) -> int:
        return self.notes[pad]

    def __len__(self) -> int:
        return len(self.notes)


def seeded_latent(seed: int, stream: int, pad: int, counter: int, latent_dim: int) -> np.ndarray:
    """A N(0, I) float32 latent fully determined by (seed, stream, pad, counter)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, stream, pad, counter])
    return rng.standard_normal(latent_dim).astype(np.float32)


@dataclass
class Pad:
    latent: np.ndarray
    mode: str = "hold"
    knobs: list[float] = field(default_factory=lambda: [0.0] * KNOB_COUNT)
    spread: float = DEFAULT_SPREAD
    new_count: int = 0  # how many times /new was used on this pad (its next random latent)
    fresh_count: int = 0  # index of the next fresh variation

    def copy(self) -> Pad:
        return Pad(self.latent.copy(), self.mode, list(self.knobs), self.spread, self.new_count, self.fresh_count)


def initial_pads(seed: int, latent_dim: int, count: int = PAD_COUNT) -> list[Pad]:
    """Pad i starts at the seeded latent (seed, new, i, 0); ``new_count`` 1 so /new gives a different one."""
    return [Pad(seeded_latent(seed, _STREAM_NEW, i, 0, latent_dim), new_count=1) for i in range(count)]


def new_latent(pad: Pad, index: int, seed: int) -> np.ndarray:
    """The pad's next random latent (advances ``new_count``)."""
    z = seeded_latent(seed, _STREAM_NEW, index, pad.new_count, len(pad.latent))
    pad.new_count += 1
    return z


def fresh_latent(base: np.ndarray, spread: float, seed: int, pad_index: int, counter: int) -> np.ndarray:
    """Fresh variation ``counter`` of a pad: its knob-moved latent plus ``spread`` x seeded noise."""
    noise = seeded_latent(seed, _STREAM_FRESH, pad_index, counter, len(base))
    return (base + np.float32(spread) * noise).astype(np.float32)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown pad mode {mode!r} (modes: {', '.join(MODES)})")
    return mode


def velocity_gain(velocity: float) -> float:
    """Velocity in [0, 1] -> linear gain: squared (full velocity 0 dB, half velocity -12 dB)."""
    v = min(1.0, max(0.0, float(velocity)))
    return v * v


def velocity_layer(velocity: float, layers: int) -> int:
    """Which of ``layers`` pre-rendered velocity layers plays at this velocity (0 = softest)."""
    if layers <= 1:
        return 0
    v = min(1.0, max(0.0, float(velocity)))
    return min(layers - 1, int(v * layers))


def layer_offsets(layers: int, amount: float) -> list[float]:
    """Knob values of the velocity layers: evenly from -amount (softest) to +amount (hardest); [0] for one."""
    if layers <= 1:
        return [0.0]
    return [float(amount) * (2.0 * j / (layers - 1) - 1.0) for j in range(layers)]
