"""Reliability of the MIDI side (issue #10): the byte-stream parser (running status, real-time bytes, split and
oversized system exclusive, junk; seeded fuzz) and, on a real JACK server, a sysex flood, running status,
note-on velocity 0 and 1000 notes/s bursts into the bridge's virtual port while its audio callback plays
(voice stealing, bounded event ring). The named port that disappears and comes back is
tests/test_bridge_jack.py::test_a_named_midi_port_that_disappears_is_reopened_when_it_comes_back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mido
import numpy as np
import pytest
from kickit.bridge.midi_in import MAX_SYSEX, MidiStream

ATTEMPTS = 8  # a phase whose events the loaded JACK graph dropped (xruns reported) is run again


def test_running_status_several_messages_and_realtime_bytes() -> None:
    s = MidiStream()
    # running status inside one event and across events, a clock byte in the middle of a message
    assert s.feed([0x90, 36, 100, 37, 0xF8, 90]) == [bytes([0x90, 36, 100]), bytes([0x90, 37, 90])]
    assert s.feed([38, 0]) == [bytes([0x90, 38, 0])]  # velocity 0: a note-off in running status
    assert s.feed([0xC2, 5, 6]) == [bytes([0xC2, 5]), bytes([0xC2, 6])]  # 2-byte messages repeat too
    assert s.feed([0xB0, 74]) == [] and s.feed([64]) == [bytes([0xB0, 74, 64])]  # split over two events
    assert s.dropped == 0 and s.sysex == 0


def test_sysex_is_counted_never_passed_on_and_bounded() -> None:
    s = MidiStream(max_sysex=16)
    assert s.feed([0xF0, 1, 2]) == [] and s.feed([3, 0xF7, 0x90, 40, 1]) == [bytes([0x90, 40, 1])]
    assert s.sysex == 1 and s.dropped == 0
    assert s.feed([0xF0] + [7] * 10_000 + [0xF7]) == []  # over the limit: counted as dropped, no buffer kept
    assert s.sysex == 2 and s.dropped == 1 and s.sysex_len is None
    # a sysex cut by a status byte (no F7) and junk: dropped, the next message still parses
    assert s.feed([0xF0, 1, 2, 0x80, 36, 0]) == [bytes([0x80, 36, 0])]
    assert s.feed([0xF4, 0xF7, 0x90, 36]) == [] and s.feed([0xA0, 1, 2]) == [bytes([0xA0, 1, 2])]
    assert s.dropped == 5  # unterminated sysex, F4, lone F7, the note cut by A0, (the earlier oversize)
    assert MAX_SYSEX >= 1024


def test_seeded_fuzz_of_the_byte_stream_parser() -> None:
    """50 000 random events (random bytes, mutated note streams, sysex fragments): never raises, state stays
    bounded, and every message it emits is complete and valid for mido."""
    rng = np.random.default_rng(20)
    s, one = MidiStream(max_sysex=256), MidiStream(max_sysex=256)
    emitted = 0
    for i in range(50_000):
        r = i % 3
        if r == 0:
            ev = rng.integers(0, 256, int(rng.integers(1, 12))).tolist()
        elif r == 1:
            ev = [0x90 | int(rng.integers(16)), int(rng.integers(128)), int(rng.integers(128))] * 2
            ev[int(rng.integers(len(ev)))] = int(rng.integers(256))
        else:
            ev = [0xF0, *rng.integers(0, 128, int(rng.integers(0, 400))).tolist()] + ([0xF7] if rng.random() < .5 else [])
        got = s.feed(ev)
        # the same bytes one at a time (sysex data skipped per event must not change a thing)
        assert [raw for b in ev for raw in one.feed([b])] == got
        for raw in got:
            msg = mido.Message.from_bytes(raw)
            assert msg.type != "sysex" and len(raw) == len(msg.bytes())
            emitted += 1
        assert len(s.pending) <= 3 and (s.sysex_len is None or s.sysex_len <= 400 * 2)
    assert emitted > 10_000 and s.dropped > 0 and s.sysex > 0
    assert (s.sysex, s.dropped, s.sysex_len) == (one.sysex, one.dropped, one.sysex_len)


def midi_flood_scenario(server_name: str, model: str) -> None:
    """Run in a fresh process (libjack and PortAudio must see only this server): the engine plays through a
    real PortAudio stream on the server; a JACK client sends raw MIDI events to the bridge's virtual port."""
    import threading
    import time

    import jack
    from kickit.bridge.control import Controller
    from kickit.bridge.engine import Engine, EngineConfig
    from kickit.bridge.midi_in import MidiInput
    from kickit.bridge.outputs import DeviceSink
    from kickit.bridge.source import ModelSource

    engine = Engine(ModelSource.open(model, 44100), EngineConfig(seed=1))
    engine.start()
    assert engine.wait_ready(120)
    triggered: list[int] = []
    engine.add_trigger_listener(lambda pad, hit, gain: triggered.append(pad))
    sink = DeviceSink(engine, None, 128)
    sink.start()
    controller = Controller(engine)
    arrived: list[int] = []  # note-ons (velocity > 0) that reached the bridge's MIDI input

    def on_midi(msg: mido.Message, stamp: float) -> None:
        if msg.type == "note_on" and msg.velocity > 0:
            arrived.append(msg.note)
        controller.on_midi(msg, stamp)

    midi = MidiInput("virtual", on_midi, api="jack", client_name="kickit-rel")
    midi.start()
    queue: list[bytes] = []
    lock = threading.Lock()
    c = jack.Client("pads-ctl", no_start_server=True, servername=server_name)
    out = c.midi_outports.register("out")

    def process(frames: int) -> None:
        out.clear_buffer()
        with lock:
            batch, queue[:] = list(queue), []
        for i, ev in enumerate(batch):
            try:
                out.write_midi_event(min(i, frames - 1), ev)
            except jack.JackError:  # this cycle's MIDI buffer is full: the rest goes in the next cycles
                with lock:
                    queue[:0] = batch[i:]
                break

    xruns = [0]  # xruns the server reported to this client
    c.set_xrun_callback(lambda _delay: xruns.__setitem__(0, xruns[0] + 1))
    c.set_process_callback(process)
    c.activate()
    c.connect(out, c.get_ports("kickit-rel", is_midi=True, is_input=True)[0])

    def send(*events: bytes) -> None:
        with lock:
            queue.extend(events)

    def settle(n: int, timeout: float = 20.0) -> None:
        """Until n hits were triggered, or the sender's queue is empty and the count stopped moving."""
        deadline, last, still = time.monotonic() + timeout, -1, 0
        while len(triggered) < n and time.monotonic() < deadline and still < 50:
            with lock:
                idle = not queue
            still = still + 1 if idle and len(triggered) == last else 0
            last = len(triggered)
            time.sleep(0.01)
        time.sleep(0.3)

    def attempts(phase: Callable[[], tuple[bool, str]]) -> str:
        """Run a phase until (nearly) all its events arrived: JACK itself drops a client's MIDI events in a cycle
        it has to skip (xruns come in bursts on a loaded machine), so a phase that fell short is run again,
        pausing longer each time, but only when the server reported xruns during it: a loss without xruns
        fails at once."""
        why = ""
        for k in range(ATTEMPTS):
            triggered.clear()
            arrived.clear()
            x0 = xruns[0]
            ok, why = phase()
            # whatever arrived, every note that reached the bridge played, in order (checked on every attempt)
            assert triggered == [p for n in arrived if (p := engine.pad_map.pad(n)) is not None], (triggered, arrived)
            if ok:
                return why
            assert xruns[0] > x0, f"events lost without an xrun: {why}"
            time.sleep(0.2 * (k + 1))
        raise AssertionError(f"events lost in each of {ATTEMPTS} attempts (xruns every time): {why}")

    def sysex_flood() -> tuple[bool, str]:
        # sysex flood (1 KB every 3 ms, ~340 KB/s) with a note every 50 ms: every note plays
        sysex0 = midi.stream.sysex
        t0, notes, sysex_sent = time.monotonic(), 0, 0
        while time.monotonic() - t0 < 2.0:
            send(bytes([0xF0, *([0x55] * 1022), 0xF7]))
            sysex_sent += 1
            if int((time.monotonic() - t0) / 0.05) >= notes:
                send(bytes([0x90, 36 + notes % 16, 100]))
                notes += 1
            time.sleep(0.003)
        settle(notes)
        assert sysex_sent > 100 and midi.errors == 0, midi.counters()
        sysex = midi.stream.sysex - sysex0
        ok = len(arrived) >= notes * 0.9 and sysex >= sysex_sent * 0.5
        return ok, f"{len(arrived)} of {notes} notes, {sysex} of {sysex_sent} sysex"

    def running_status() -> tuple[bool, str]:
        # running status in one event and across events, velocity 0 as note-off
        send(bytes([0x90, 36, 100, 37, 100]))
        time.sleep(0.05)
        send(bytes([38, 100]), bytes([39, 0]), bytes([0x80, 40, 64]))
        settle(3)
        # the velocity-0 note-on (39) and the note-off play nothing
        return arrived == [36, 37, 38], f"arrived {arrived}"

    burst_stats: dict[str, int] = {}

    def burst() -> tuple[bool, str]:
        # 1000 notes/s for 2 s: every note that reached the bridge reaches the mixer, voices are stolen, the
        # event ring never overflows
        started0, stolen0, ring0 = engine.mixer.notes_started, engine.mixer.stolen, engine.ring.dropped
        rng = np.random.default_rng(21)
        t0, sent = time.monotonic(), 0
        while (el := time.monotonic() - t0) < 2.0:
            while sent < int(el * 1000):
                send(bytes([0x90, 36 + int(rng.integers(16)), 100]))
                sent += 1
            time.sleep(0.002)
        settle(sent)
        assert engine.ring.dropped == ring0 and engine.ring.pending() == 0
        assert engine.mixer.notes_started - started0 == len(arrived)
        assert engine.mixer.stolen - stolen0 > 0 and engine.mixer.active() <= engine.mixer.max_voices
        burst_stats.update(sent=sent, stolen=engine.mixer.stolen - stolen0)
        # what the loaded graph drops never reaches the bridge (CI once measured 88 % arriving), so the arrival
        # bar only guards against a broken sender or input
        return len(arrived) >= sent * 0.75, f"{len(arrived)} of {sent} notes"

    try:
        flood = attempts(sysex_flood)
        print(f"sysex flood: {flood}")
        attempts(running_status)
        print("running status: done")
        attempts(burst)
        assert engine.mixer.callback_errors == 0 and sink.callback_errors == 0 and midi.errors == 0
        print(f"burst {burst_stats}; sysex {midi.stream.sysex} xruns {xruns[0]}")
    finally:
        c.deactivate()
        c.close()
        midi.stop()
        sink.stop()
        engine.stop()
        print("stopped")


@pytest.mark.jack
def test_sysex_flood_running_status_and_1000_notes_per_second_on_jack(jack_server, tiny_model_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("jack")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_reliability_midi import midi_flood_scenario; "
            "midi_flood_scenario(sys.argv[2], sys.argv[3]); print('ok')")
    # unbuffered, with faulthandler: if the process dies, what it printed (the phases done) and every thread's
    # stack come back with it
    r = subprocess.run([sys.executable, "-u", "-X", "faulthandler", "-c", code, str(Path(__file__).parent), jack_server.name,
                        str(tiny_model_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout + r.stderr)[-3000:]
