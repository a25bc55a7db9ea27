"""Pure bridge logic with plain messages and arrays: pads, MIDI/OSC mapping, voices/mixer, presets, panel."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from kickit.bridge import pads as padlib
from kickit.bridge.midimap import MidiMap, cc_to_knob
from kickit.bridge.oscmap import Action, Dropped, build, map_message, parse_datagram
from kickit.bridge.pads import PadMap, parse_pad_notes
from kickit.bridge.presets import Preset, PresetError, load_preset, save_preset
from kickit.bridge.status import format_line, format_panel
from kickit.bridge.voices import EV_CHOKE, EV_NOTE, EV_PANIC, EventRing, Mixer
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder


def hit(n: int = 1000, seed: int = 0) -> np.ndarray:
    h = np.random.default_rng(seed).uniform(-0.5, 0.5, (2, n)).astype(np.float32)
    h.setflags(write=False)
    return h


def run_blocks(mixer: Mixer, blocks: int, frames: int = 128) -> np.ndarray:
    out = np.zeros((blocks * frames, 2), dtype=np.float32)
    for b in range(blocks):
        mixer.process(out[b * frames:(b + 1) * frames])
    return out.T


# ----- pads ------------------------------------------------------------------------------------------------
def test_parse_pad_notes() -> None:
    assert parse_pad_notes("36-51") == list(range(36, 52))
    assert parse_pad_notes("36, 38,40-41") == [36, 38, 40, 41]
    for bad, word in [("", "empty"), ("36-", "not a note"), ("51-36", "not a note"), ("x", "not a note"),
                      ("0-127", "at most 16"), ("36,36", "repeats"), ("120-130", "outside")]:
        with pytest.raises(ValueError, match=word):
            parse_pad_notes(bad)


def test_pad_map_and_seeded_latents() -> None:
    m = PadMap(parse_pad_notes("60-63"))
    assert m.pad(60) == 0 and m.pad(63) == 3 and m.pad(64) is None and m.note(2) == 62
    a = padlib.initial_pads(7, 16)
    b = padlib.initial_pads(7, 16)
    assert all(np.array_equal(x.latent, y.latent) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].latent, a[1].latent)
    assert not np.array_equal(a[0].latent, padlib.initial_pads(8, 16)[0].latent)
    z1 = padlib.new_latent(a[0], 0, 7)
    z2 = padlib.new_latent(a[0], 0, 7)
    assert a[0].new_count == 3 and not np.array_equal(z1, z2)
    f1 = padlib.fresh_latent(a[0].latent, 0.5, 7, 0, 0)
    assert np.array_equal(f1, padlib.fresh_latent(a[0].latent, 0.5, 7, 0, 0))
    assert np.array_equal(padlib.fresh_latent(a[0].latent, 0.0, 7, 0, 3), a[0].latent)


def test_velocity_curve_and_layers() -> None:
    assert padlib.velocity_gain(1.0) == 1.0 and padlib.velocity_gain(0.5) == 0.25 and padlib.velocity_gain(-1) == 0
    assert padlib.velocity_layer(0.1, 1) == 0
    assert [padlib.velocity_layer(v, 3) for v in (0.0, 0.4, 0.7, 1.0)] == [0, 1, 2, 2]
    assert padlib.layer_offsets(3, 0.5) == [-0.5, 0.0, 0.5] and padlib.layer_offsets(1, 0.5) == [0.0]


# ----- MIDI ------------------------------------------------------------------------------------------------
def msg(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**kw)


def test_midi_mapping() -> None:
    m = MidiMap()
    assert m.map(msg(type="note_on", note=36, velocity=127)) == Action("trigger", pad=0, value=1.0)
    assert m.map(msg(type="note_on", note=51, velocity=64)).pad == 15
    assert m.map(msg(type="note_on", note=35, velocity=64)) is None  # not a pad
    assert m.map(msg(type="note_on", note=36, velocity=0)) is None  # note-off by running status
    assert m.map(msg(type="note_off", note=36, velocity=0)) is None  # one-shots ignore note-off
    assert m.map(msg(type="control_change", control=74, value=127)) == Action("knob", index=4, value=1.0)
    assert m.map(msg(type="control_change", control=70, value=64)).value == 0.0
    assert m.map(msg(type="control_change", control=120, value=0)).kind == "panic"
    assert m.map(msg(type="control_change", control=123, value=0)).kind == "panic"
    assert m.map(msg(type="control_change", control=121, value=0)) is None
    assert m.map(msg(type="control_change", control=1, value=5)) is None
    assert m.map(msg(type="pitchwheel", pitch=0)) is None
    assert cc_to_knob(0) == -1.0 and cc_to_knob(127) == 1.0 and cc_to_knob(64) == 0.0


def test_midi_learn_moves_and_swaps_ccs() -> None:
    m = MidiMap()
    m.learn(2)
    assert m.map(msg(type="control_change", control=21, value=10)) == Action("learned", index=2, value=21)
    assert m.map(msg(type="control_change", control=21, value=127)) == Action("knob", index=2, value=1.0)
    assert m.map(msg(type="control_change", control=72, value=127)) is None  # the old CC is free now
    m.learn(0)
    m.map(msg(type="control_change", control=21, value=0))  # knob 2's CC: the two knobs swap
    assert m.knob_ccs[0] == 21 and m.knob_ccs[2] == 70 and len(set(m.knob_ccs)) == 8
    with pytest.raises(ValueError):
        m.learn(8)
    with pytest.raises(ValueError, match="distinct"):
        MidiMap(knob_ccs=[1] * 8)


# ----- OSC -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address,args,expected", [
    ("/kickit/knob/3", [0.5], Action("knob", index=3, value=0.5)),
    ("/kickit/knob/0", [-1], Action("knob", index=0, value=-1.0)),
    ("/kickit/knobs", [0.0] * 8, Action("knobs", value=(0.0,) * 8)),
    ("/kickit/pad/5/select", [], Action("select", pad=5)),
    ("/kickit/pad/0/trigger", [], Action("trigger", pad=0, value=1.0)),
    ("/kickit/pad/15/trigger", [0.25], Action("trigger", pad=15, value=0.25)),
    ("/kickit/pad/1/trigger", [127], Action("trigger", pad=1, value=1.0)),
    ("/kickit/pad/2/new", [], Action("new", pad=2)),
    ("/kickit/pad/2/mode", ["fresh"], Action("mode", pad=2, value="fresh")),
    ("/kickit/pad/2/store", [], Action("store", pad=2)),
    ("/kickit/pad/2/spread", [0.75], Action("spread", pad=2, value=0.75)),
    ("/kickit/seed", [42], Action("seed", value=42)),
    ("/kickit/model/load", ["/m.onnx"], Action("model_load", value="/m.onnx")),
    ("/kickit/preset/save", ["p.json"], Action("preset_save", value="p.json")),
    ("/kickit/preset/load", ["p.json"], Action("preset_load", value="p.json")),
    ("/kickit/panic", [], Action("panic")),
    ("/kickit/status", [], Action("status")),
    ("/kickit/connect", [9001], Action("connect", value=9001)),
    ("/kickit/knob/7/learn", [], Action("learn", index=7)),
])
def test_osc_contract_addresses(address: str, args: list, expected: Action) -> None:
    assert map_message(address, args) == expected
    assert parse_datagram(build(address, *args)) == [expected]


@pytest.mark.parametrize("address,args,reason", [
    ("/kickit/knob/8", [0.0], "out of range"),
    ("/kickit/knob/1", [1.5], "not in [-1, 1]"),
    ("/kickit/knob/1", [float("nan")], "not in [-1, 1]"),
    ("/kickit/knob/1", ["x"], "not in [-1, 1]"),
    ("/kickit/knob/1", [], "one number"),
    ("/kickit/knobs", [0.0] * 7, "expects 8"),
    ("/kickit/pad/16/trigger", [], "out of range"),
    ("/kickit/pad/0/trigger", [0], "not in 1..127"),
    ("/kickit/pad/0/trigger", [1.5], "not in (0, 1]"),
    ("/kickit/pad/0/mode", ["loop"], "mode must be"),
    ("/kickit/pad/0/select", [1], "no arguments"),
    ("/kickit/seed", [1.5], "integer"),
    ("/kickit/connect", [0], "port"),
    ("/kickit/model/load", [], "path string"),
    ("/kickit/nope", [], "unknown"),
    ("/other/knob/1", [0.1], "unknown"),
])
def test_osc_bad_messages_are_dropped_with_a_reason(address: str, args: list, reason: str) -> None:
    r = map_message(address, args)
    assert isinstance(r, Dropped) and reason in r.reason


def test_osc_bundles_and_garbage() -> None:
    b = OscBundleBuilder(IMMEDIATELY)
    for a, v in (("/kickit/knob/0", 0.1), ("/kickit/knob/9", 0.1), ("/kickit/pad/3/select", None)):
        mb = OscMessageBuilder(a)
        if v is not None:
            mb.add_arg(v)
        b.add_content(mb.build())
    out = parse_datagram(b.build().dgram)
    assert out[0] == Action("knob", index=0, value=pytest.approx(0.1))
    assert isinstance(out[1], Dropped) and out[2] == Action("select", pad=3)
    for junk in (b"", b"garbage", b"/kickit/knob/1\x00\x00,f\x00\x00", b"#bundle\x00" + b"\xff" * 20,
                 b"/kickit/knob/1\x00\x00,f\x00\x00" + struct.pack(">f", float("inf"))):
        res = parse_datagram(junk)
        assert res and all(isinstance(r, Dropped) for r in res), junk


def test_osc_parser_never_raises_on_random_or_mutated_packets() -> None:
    rng = np.random.default_rng(1)
    valid = [build("/kickit/knob/1", 0.5), build("/kickit/pad/2/trigger", 100), build("/kickit/knobs", *[0.1] * 8),
             build("/kickit/model/load", "x.onnx")]
    for i in range(3000):
        if i % 2:
            data = rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        else:
            d = bytearray(valid[i % len(valid)])
            for _ in range(int(rng.integers(1, 4))):
                d[int(rng.integers(len(d)))] = int(rng.integers(256))
            data = bytes(d[: int(rng.integers(1, len(d) + 1))])
        for r in parse_datagram(data):
            assert isinstance(r, (Action, Dropped))
            if isinstance(r, Action) and r.kind == "knob":
                assert -1.0 <= r.value <= 1.0 and 0 <= r.index < 8


# ----- voices ----------------------------------------------------------------------------------------------
def test_note_starts_at_its_offset_and_plays_the_hit_exactly() -> None:
    mixer = Mixer(max_voices=4)
    h = hit(1000)
    mixer.ring.push(EV_NOTE, 0, h, 1.0, offset=10)
    out = run_blocks(mixer, 10)
    assert np.all(out[:, :10] == 0)
    assert np.array_equal(out[:, 10:1010], h)
    assert np.all(out[:, 1010:] == 0)
    assert mixer.active() == 0 and mixer.notes_started == 1 and mixer.callback_errors == 0


def test_voices_sum_with_gain_and_the_oldest_is_stolen() -> None:
    mixer = Mixer(max_voices=2)
    a, b, c = hit(600, 1), hit(600, 2), hit(600, 3)
    mixer.ring.push(EV_NOTE, 0, a, 0.5)
    mixer.ring.push(EV_NOTE, 1, b, 1.0)
    out = run_blocks(mixer, 1)
    np.testing.assert_allclose(out, 0.5 * a[:, :128] + b[:, :128], atol=1e-7)
    mixer.ring.push(EV_NOTE, 2, c, 1.0)  # steals voice "a" (the oldest)
    out = run_blocks(mixer, 1)
    assert mixer.stolen == 1 and mixer.active() == 2
    np.testing.assert_allclose(out, b[:, 128:256] + c[:, :128], atol=1e-7)


def test_choke_fades_out_without_a_click_and_panic_silences() -> None:
    mixer = Mixer(max_voices=4, choke=True, release=64)
    a = np.ones((2, 5000), dtype=np.float32)
    mixer.ring.push(EV_NOTE, 0, a, 1.0)
    run_blocks(mixer, 1)
    mixer.ring.push(EV_CHOKE, 0)
    out = run_blocks(mixer, 1)
    assert np.all(np.diff(out[0, :65]) <= 0) and out[0, 0] < 1.0 and np.all(out[:, 64:] == 0)
    mixer.ring.push(EV_NOTE, 0, a, 1.0)
    mixer.ring.push(EV_NOTE, 1, a, 1.0)
    run_blocks(mixer, 1)
    mixer.ring.push(EV_PANIC)
    out = run_blocks(mixer, 2)
    assert np.all(out == 0) and mixer.active() == 0


def test_choke_mode_releases_the_same_pad_on_a_new_hit() -> None:
    mixer = Mixer(max_voices=4, choke=True, release=32)
    a = np.ones((2, 5000), dtype=np.float32)
    mixer.ring.push(EV_NOTE, 3, a, 1.0)
    run_blocks(mixer, 1)
    mixer.ring.push(EV_NOTE, 3, a, 0.5)
    out = run_blocks(mixer, 1)
    assert np.isclose(out[0, 40], 0.5) and mixer.active() == 1


def test_ring_full_drops_and_counts() -> None:
    ring = EventRing(size=4)
    assert all(ring.push(EV_NOTE, 0, hit(10)) for _ in range(4))
    assert not ring.push(EV_NOTE, 0, hit(10)) and ring.dropped == 1
    mixer = Mixer(max_voices=2, ring=ring)
    run_blocks(mixer, 1)
    assert ring.pending() == 0 and mixer.stolen == 2


def test_callback_errors_are_counted_never_raised() -> None:
    mixer = Mixer()
    mixer.ring.push(EV_NOTE, 0, np.ones((3, 3, 3), dtype=np.float32), 1.0)  # a broken "hit"
    out = np.ones((128, 2), dtype=np.float32)
    mixer.process(out)
    assert mixer.callback_errors == 1 and np.all(out == 0)


# ----- presets ---------------------------------------------------------------------------------------------
def test_preset_round_trip_is_bit_exact(tmp_path) -> None:
    pads = padlib.initial_pads(3, 24)
    pads[1].mode, pads[1].knobs[2], pads[1].spread = "fresh", 0.3, 0.9
    pads[2].latent = (pads[2].latent / np.float32(3.0)).astype(np.float32)  # values with long decimals
    path = save_preset(tmp_path / "p.json", Preset("abc", "m.onnx", 3, 4, pads))
    back = load_preset(path, 24)
    assert back.model_hash == "abc" and back.seed == 3 and back.selected == 4
    for a, b in zip(pads, back.pads, strict=True):
        assert a.latent.tobytes() == b.latent.tobytes()
        assert (a.mode, a.knobs, a.spread, a.new_count) == (b.mode, b.knobs, b.spread, b.new_count)


def test_bad_presets_are_refused_with_the_file_named(tmp_path) -> None:
    good = json.loads((save_preset(tmp_path / "g.json", Preset("h", "m", 0, 0, padlib.initial_pads(0, 8)))
                       ).read_text())
    cases = {
        "notjson": "{", "wrongkind": json.dumps({"kind": "other"}),
        "latent": json.dumps({**good, "pads": [{**good["pads"][0], "latent": [0.0] * 3}] * 16}),
        "mode": json.dumps({**good, "pads": [{**good["pads"][0], "mode": "loop"}] * 16}),
        "knob": json.dumps({**good, "pads": [{**good["pads"][0], "knobs": [2.0] * 8}] * 16}),
        "count": json.dumps({**good, "pads": good["pads"][:3]}),
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(text)
        with pytest.raises(PresetError, match=str(p).replace(".", r"\.")):
            load_preset(p, 8)
    with pytest.raises(PresetError, match="cannot read"):
        load_preset(tmp_path / "missing.json", 8)


# ----- status panel ----------------------------------------------------------------------------------------
def test_status_panel_text() -> None:
    s = {"model": "m.onnx", "weights_hash": "0123456789abcdef", "rate": 44100, "selected": 1,
         "knobs": [0.5] + [0.0] * 7, "knob_names": ["punch"] + [f"k{i}" for i in range(7)],
         "pads": [{"note": 36 + i, "mode": "fresh" if i == 1 else "hold", "ready": i != 2} for i in range(16)],
         "voices": 2, "max_voices": 16, "xruns": 3, "osc_dropped": 4, "render_ms_p50": 12.0,
         "last_error": "boom"}
    text = "\n".join(format_panel(s))
    assert "m.onnx" in text and "> 1:37F" in text and " 2:38H?" in text and "punch +0.50" in text
    assert "xruns 3" in text and "OSC 4" in text and "last error: boom" in text
    assert "xruns 3" in format_line(s)


def test_status_panel_redraws_in_place_on_a_tty_and_logs_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    from kickit.bridge.status import StatusPanel

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = {"model": "m.onnx", "pads": [], "knobs": [0.0] * 8, "voices": 1}
    out = Tty()
    panel = StatusPanel(lambda: s, out)
    panel.draw()
    n = out.getvalue().count("\n")
    panel.draw()
    text = out.getvalue()
    assert panel.tty and f"\x1b[{n}F" in text and text.count("\x1b[2K") == 2 * n
    plain = io.StringIO()
    with caplog.at_level(logging.INFO, logger="kickit.bridge"):
        StatusPanel(lambda: s, plain).draw()
    assert plain.getvalue() == "" and "voices 1" in caplog.text


def test_callback_timing_counts_overruns_and_those_that_waited_a_period() -> None:
    from kickit.bridge.outputs import CallbackTiming

    t = CallbackTiming()
    period = 128 / 44100
    t.record(0.0001, 0.0005, period)  # in time
    t.record(0.0020, 0.0015, period)  # wait + run over the period: an overrun, the run's share in it
    t.record(0.0040, 0.0001, period)  # the wait alone over the period: an overrun before any mixing
    t.record(period, 1e-6, period)  # exactly a period of waiting counts as waiting
    c = t.counters()
    assert c["callback_overruns"] == 3 and c["callback_overruns_waiting"] == 2
    assert c["callback_max_ms"] == pytest.approx(1.5) and c["callback_wait_max_ms"] == pytest.approx(4.0)
