"""The audio callback's own process (kickit.bridge.audioproc): the shared event ring and its mixer, as pure
logic (no audio device: two views of one shared memory block in this process), and the process itself on a
real JACK server: killed, it is started again and the next note plays the pre-rendered hit bit for bit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from kickit.bridge.audioproc import SharedEventRing, SharedMixer
from kickit.bridge.outputs import JACK_CLIENT
from kickit.bridge.voices import EV_CHOKE, EV_NOTE, EV_PANIC, EventRing, Mixer


def _hits(rng: np.random.Generator, n: int = 5) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        length = int(rng.integers(300, 2000))
        h = (rng.standard_normal((2, length)) * np.exp(-np.arange(length) / 400.0)).astype(np.float32)
        h.setflags(write=False)
        out.append(h)
    return out


@pytest.mark.parametrize("choke", [False, True])
def test_shared_mixer_plays_the_same_blocks_as_the_mixer(choke: bool) -> None:
    """A seeded stream of notes (offsets, gains, 16+ overlapping voices so some are stolen), chokes and
    panics: the shared ring + SharedMixer produce the same audio bit for bit as EventRing + Mixer."""
    rng = np.random.default_rng(3)
    hits = _hits(rng)
    ref = Mixer(max_voices=6, max_block=256, ring=EventRing(), choke=choke)
    shared = SharedEventRing(16, 2048)
    consumer = SharedEventRing(16, 2048, name=shared.name)  # the child's view of the same block
    try:
        mixer = SharedMixer(consumer, max_voices=6, max_block=256, choke=choke)
        a = np.zeros((128, 2), np.float32)
        b = np.zeros((128, 2), np.float32)
        events = 0
        for block in range(400):
            for _ in range(int(rng.integers(0, 3))):
                r = rng.random()
                if r < 0.9:
                    pad, h = int(rng.integers(4)), hits[int(rng.integers(len(hits)))]
                    gain, off = float(rng.uniform(0.1, 1.0)), int(rng.integers(0, 128))
                    assert ref.ring.push(EV_NOTE, pad, h, gain, off, 0.0)
                    assert shared.push(EV_NOTE, pad, h, gain, off, 0.0)
                elif r < 0.97:
                    pad = int(rng.integers(4))
                    ref.ring.push(EV_CHOKE, pad)
                    shared.push(EV_CHOKE, pad)
                else:
                    ref.ring.push(EV_PANIC)
                    shared.push(EV_PANIC)
                events += 1
            ref.process(a)
            mixer.process(b)
            assert np.array_equal(a, b), f"block {block} differs"
        assert events > 300 and ref.stolen > 0 and mixer.stolen == ref.stolen
        assert mixer.notes_started == ref.notes_started and mixer.callback_errors == 0
        assert shared.pending() == 0 and shared.dropped == 0
    finally:
        consumer.close()
        shared.close()


def test_shared_ring_full_truncated_and_malformed_events_are_counted() -> None:
    ring = SharedEventRing(4, 100)
    try:
        hit = np.ones((2, 150), np.float32)
        for _ in range(4):
            assert ring.push(EV_NOTE, 0, hit[:, :50], 1.0)
        assert not ring.push(EV_NOTE, 0, hit[:, :50], 1.0) and ring.dropped == 1  # full: dropped, counted
        assert ring.pending() == 4
        ring.reset()  # a restarted consumer starts from now
        assert ring.pending() == 0
        assert ring.push(EV_NOTE, 1, hit, 0.5) and ring.truncated == 1  # longer than a slot: cut, counted
        assert not ring.push(EV_NOTE, 1, np.ones(10, np.float32), 1.0) and ring.dropped == 2  # not (2, n)
        assert not ring.push(EV_NOTE, 1, None, 1.0) and ring.dropped == 3
        mixer = SharedMixer(ring, max_voices=2, max_block=256)
        out = np.zeros((256, 2), np.float32)
        mixer.process(out)
        assert np.array_equal(out[:100], np.full((100, 2), 0.5, np.float32)) and not out[100:].any()
        assert ring.pending() == 0 and mixer.notes_started == 1
    finally:
        ring.close()
    with pytest.raises(FileNotFoundError):  # the creator unlinked the block
        SharedEventRing(4, 100, name=ring.name)


@pytest.mark.jack
def test_the_audio_process_killed_is_started_again_and_plays(tiny_model_path: Path) -> None:
    """The bridge (in this process) with its audio callback in a child process on a real JACK server: the
    child is killed (SIGKILL); the bridge starts a new one, keeps its pads, and a note on the virtual MIDI
    port plays the pre-rendered hit bit for bit from the new child's output."""
    pytest.importorskip("jack")
    from jackserver import JackServer, reinit_portaudio, stop_rig
    from kickit.bridge.app import Bridge, BridgeOptions
    from kickit.bridge.audioproc import AudioProcessSink
    from kickit.bridge.jackprobe import JackProbe
    from test_bridge_jack import COMPARE, capture_note, silence

    try:
        server = JackServer().start()
    except Exception as e:  # jackd missing
        pytest.skip(str(e))
    bridge = probe = None
    try:
        reinit_portaudio()
        name = f"kickit-ap-{os.getpid()}"
        bridge = Bridge(BridgeOptions(model=tiny_model_path, midi_api="jack", osc_port=None, output="device",
                                      midi_client_name=name))
        bridge.start(120)
        sink = bridge.sink
        assert isinstance(sink, AudioProcessSink) and sink.proc is not None
        old = sink.proc
        probe = JackProbe(server.name, seconds=60)

        def outputs() -> list[str]:  # the bridge's audio output ports now
            return [p.name for p in probe.client.get_ports(f"{JACK_CLIENT}:", is_audio=True, is_output=True)]

        assert len(outputs()) == 2
        old.kill()
        deadline = time.monotonic() + 60
        while (sink.restarts == 0 or sink.proc is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.restarts == 1 and sink.proc is not old and sink.proc.is_alive()
        assert "died" not in str(sink.counters().get("output_error"))
        midi = probe.find_port(name, midi=True, is_input=True)
        probe.client.activate()
        probe.client.connect(probe.midi_out, midi[0])
        probe.start_capture()
        hit = bridge.engine.ready[0][0]
        h0 = int(np.flatnonzero(np.max(np.abs(hit), axis=0) > 0)[0])

        def connect() -> None:
            """The audio outputs now (the new child's; the killed client's leave the graph) -> the probe."""
            import jack

            for src, dst in zip(sorted(outputs()), probe.inputs, strict=False):
                try:
                    probe.client.connect(src, dst)
                except jack.JackError:
                    pass  # already connected, or a port of the killed client that just left

        for _attempt in range(10):  # retried on xruns, as the other captures (tests/test_bridge_jack.py)
            connect()
            silence(probe)
            x0 = probe.xruns
            cap = capture_note(probe, 36, 127, COMPARE)
            idx = np.flatnonzero(np.max(np.abs(cap), axis=0) > 0)
            if len(idx):
                seg = cap[:, int(idx[0]) - h0:int(idx[0]) - h0 + COMPARE]
                if np.array_equal(seg, hit[:, :COMPARE]):
                    break
                time.sleep(0.3)  # an xrun reaches the probe through JACK's notification thread, after the cycle
                assert probe.xruns != x0, "a hit played after the restart and it is not the pad's"
            time.sleep(0.1 * (_attempt + 1))
        else:
            pytest.fail("no exact hit from the restarted audio process in 10 attempts")
    finally:
        stop_rig(probe, bridge, server)


@pytest.mark.parametrize(("voices", "choke", "block"), [(16, False, 128), (4, True, 64), (1, True, 1024)])
def test_warm_up_plays_the_whole_mixing_path_and_leaves_nothing_behind(voices: int, choke: bool, block: int) -> None:
    """The audio process's start-up pass: every voice, steals, a choke's release, a panic; no error, no voice
    left sounding, and its private shared-memory ring is gone afterwards."""
    from kickit.bridge.audioproc import warm_up

    shm = Path("/dev/shm")
    before = set(shm.iterdir()) if shm.is_dir() else set()
    c = warm_up(30000, voices, 8192, choke, block)
    assert c["callback_errors"] == 0
    assert c["notes"] == voices + 3 and c["stolen"] >= 2
    assert c["voices"] == 0 and c["blocks"] > 0
    if shm.is_dir():
        assert set(shm.iterdir()) - before == set()


def test_shared_stats_are_answered_by_the_callback_and_missing_when_it_does_not_run() -> None:
    """The bridge asks, the callback (here a thread standing in for it, on its own view of the block) answers
    at its next period with the sink's and the mixer's counters; no answer (callback not running) or a device
    error gives None, so the bridge falls back to the pipe."""
    import threading
    from types import SimpleNamespace

    from kickit.bridge.audioproc import SharedStats
    from kickit.bridge.outputs import CallbackTiming

    bridge_side = SharedStats()
    child_side = SharedStats(bridge_side.name)
    mixer = Mixer(4)
    ring = mixer.ring
    hit = np.full((2, 300), 0.5, dtype=np.float32)
    timing = CallbackTiming()
    timing.record(0.004, 0.001, 0.0029, end=12.5)  # one overrun, waiting a whole period
    timing.record(0.0001, 0.0002, 0.0029, end=12.6)  # in time: not logged
    sink = SimpleNamespace(timing=timing, callbacks=0, xruns=3, callback_errors=1, reconnects=2, latency_ms=5.8,
                           stream=object(), error=None)
    out = np.zeros((128, 2), dtype=np.float32)
    stop = threading.Event()

    def callback() -> None:
        while not stop.is_set():
            mixer.process(out)
            sink.callbacks += 1
            if child_side.requested():
                child_side.publish(sink, mixer)
            time.sleep(0.002)

    try:
        assert bridge_side.read(timeout=0.05) is None  # nothing plays: no answer
        ring.push(EV_NOTE, 2, hit, 1.0, 0, time.perf_counter())
        ring.push(EV_NOTE, 3, hit, 1.0, 0, time.perf_counter())
        t = threading.Thread(target=callback)
        t.start()
        try:
            got = bridge_side.read(timeout=2.0)
            assert got is not None
            assert got["voices"] == 2 and got["notes"] == 2 and got["max_voices"] == 4
            assert got["xruns"] == 3 and got["output_callback_errors"] == 1 and got["reconnects"] == 2
            assert got["callback_overruns"] == 1 and got["callback_overruns_waiting"] == 1
            assert got["callback_wait_max_ms"] == pytest.approx(4.0) and got["output_latency_ms"] == 5.8
            assert got["callbacks"] >= 1 and got["output_error"] is None
            assert got["callback_overrun_log"] == [[12.5, 0.004, 0.001]]
            assert got["note_latency_ms_p99"] is not None and got["note_latency_ms_p99"] >= 0.0
            later = bridge_side.read(timeout=2.0)
            assert later is not None and later["callbacks"] > got["callbacks"]  # a fresh answer each time
            sink.error = "audio device 'x' lost"
            assert bridge_side.read(timeout=2.0) is None  # the error's text comes through the pipe
        finally:
            stop.set()
            t.join()
        assert bridge_side.read(timeout=0.05) is None
    finally:
        child_side.close()
        bridge_side.close()
    assert bridge_side.read() is None  # closed: no answer, no error


def _switches(pid: int, tid: int) -> int:
    text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    return sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches" in line)


def test_no_thread_of_the_audio_process_but_the_callback_wakes_while_it_plays(tiny_model_path: Path) -> None:
    """While the device plays and the bridge reads the child's counters again and again, the child's main
    thread (blocked on its pipe) and its device watch (waiting for a loss) are never run: a thread that wakes
    takes the child's GIL, and the callback would wait for it (docs/reliability.md). The counters still come,
    from the callback itself."""
    pytest.importorskip("jack")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc")
    from jackserver import JackServer, reinit_portaudio, stop_rig
    from kickit.bridge import proctitle
    from kickit.bridge.app import Bridge, BridgeOptions
    from kickit.bridge.audioproc import AudioProcessSink

    try:
        server = JackServer().start()
    except Exception as e:  # jackd missing
        pytest.skip(str(e))
    bridge = None
    try:
        reinit_portaudio()
        bridge = Bridge(BridgeOptions(model=tiny_model_path, midi_api="jack", osc_port=None, output="device",
                                      midi_client_name=f"kickit-w{os.getpid()}"))
        bridge.start(120)
        sink = bridge.sink
        assert isinstance(sink, AudioProcessSink) and sink.proc is not None
        pid = sink.proc.pid
        watch = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()
                 if (t / "comm").read_text().strip() == proctitle.DEVICE_WATCH]
        assert len(watch) == 1
        time.sleep(1.0)  # the first counters read by the bridge's start are behind us
        c0 = sink.counters()
        asked0 = c0["audio_pipe_requests"]
        main0, watch0 = _switches(pid, pid), _switches(pid, watch[0])
        for k in range(20):
            bridge.engine.note_on(k % 16, 0.8)
            c = sink.counters()
            time.sleep(0.05)
        asked = c["audio_pipe_requests"] - asked0
        assert c["callbacks"] > c0["callbacks"] and c["notes"] > c0["notes"]
        assert _switches(pid, watch[0]) == watch0
        assert _switches(pid, pid) - main0 <= 2 * asked, asked  # only a pipe request (a late callback) wakes it
    finally:
        stop_rig(None, bridge, server)
