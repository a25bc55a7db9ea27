"""MIDI messages -> the same actions as OSC (pure logic): notes trigger pads, CCs move knobs, CC 120/123
panic. Works on mido messages or anything with the same attributes (type, note, velocity, control, value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kickit.bridge.oscmap import Action
from kickit.bridge.pads import KNOB_COUNT, PadMap

DEFAULT_KNOB_CCS = (70, 71, 72, 73, 74, 75, 76, 77)  # the "sound controller" CCs most pads/knob boxes send
PANIC_CCS = (120, 123)  # all sound off, all notes off


def cc_to_knob(value: int) -> float:
    """CC 0..127 -> knob value in [-1, 1] with 64 exactly at the centre (0 -> -1, 127 -> +1)."""
    v = max(0, min(127, int(value)))
    return (v - 64) / 63.0 if v >= 64 else (v - 64) / 64.0


class MidiMap:
    """Notes -> pads (via :class:`PadMap`), CCs -> knobs with MIDI learn; omni (every channel)."""

    def __init__(self, pads: PadMap | None = None, knob_ccs: Sequence[int] = DEFAULT_KNOB_CCS) -> None:
        if len(knob_ccs) != KNOB_COUNT or any(not 0 <= c <= 119 for c in knob_ccs) or len(set(knob_ccs)) != len(
                knob_ccs):
            raise ValueError(f"knob CCs must be {KNOB_COUNT} distinct controller numbers in 0..119, got {list(knob_ccs)}")
        self.pads = pads or PadMap()
        self.knob_ccs = list(knob_ccs)
        self.learning: int | None = None  # knob index waiting for the next CC

    def learn(self, knob: int) -> None:
        """The next CC (not 120..127) that arrives is mapped to ``knob`` (and unmapped from any other knob)."""
        if not 0 <= knob < KNOB_COUNT:
            raise ValueError(f"knob {knob} out of range 0..{KNOB_COUNT - 1}")
        self.learning = knob

    def cc_map(self) -> dict[int, int]:
        return {cc: k for k, cc in enumerate(self.knob_ccs)}

    def map(self, msg: Any) -> Action | None:
        """A MIDI message -> an action, or None for what the bridge ignores (note-off: pads are one-shots)."""
        kind = getattr(msg, "type", None)
        if kind == "note_on":
            if msg.velocity == 0:
                return None  # running-status note-off
            pad = self.pads.pad(msg.note)
            return None if pad is None else Action("trigger", pad=pad, value=msg.velocity / 127.0)
        if kind == "control_change":
            cc, value = int(msg.control), int(msg.value)
            if cc in PANIC_CCS:
                return Action("panic")
            if cc >= 120:
                return None
            if self.learning is not None:
                knob, self.learning = self.learning, None
                if cc in self.knob_ccs:  # swap so two knobs never share a CC
                    other = self.knob_ccs.index(cc)
                    self.knob_ccs[other] = self.knob_ccs[knob]
                self.knob_ccs[knob] = cc
                return Action("learned", index=knob, value=cc)
            knob = self.cc_map().get(cc)
            return None if knob is None else Action("knob", index=knob, value=cc_to_knob(value))
        return None
