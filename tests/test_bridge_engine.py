"""The bridge engine with a real model file and real onnxruntime: pre-rendered hits, knobs, fresh mode,
presets, model hot swap, file output and ``kickit render`` (offline, sample-accurate)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from kickit.bridge.control import Controller
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.midimap import MidiMap
from kickit.bridge.oscmap import Action
from kickit.bridge.outputs import FileSink
from kickit.bridge.render_cli import read_midi_events, render_events
from kickit.bridge.source import ModelSource

from kickit.cli import main

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def source(tiny_model_path: Path) -> ModelSource:
    return ModelSource.open(tiny_model_path)


@pytest.fixture(scope="module")
def engine(source: ModelSource) -> Engine:
    e = Engine(source, EngineConfig(seed=5))
    e.start()
    assert e.wait_ready(TIMEOUT)
    yield e
    e.stop()


def play(engine: Engine, blocks: int, frames: int = 128) -> np.ndarray:
    out = np.zeros((blocks * frames, 2), dtype=np.float32)
    for b in range(blocks):
        engine.process(out[b * frames:(b + 1) * frames])
    return out.T


def test_every_pad_is_prerendered_and_a_note_plays_it_in_the_next_block(engine: Engine) -> None:
    assert all(r is not None for r in engine.ready)
    h = engine.ready[3][0]
    assert h.dtype == np.float32 and h.shape == (2, engine.source.model.contract.n_samples)
    assert not h.flags.writeable and np.all(np.isfinite(h)) and np.abs(h).max() > 0.1
    assert engine.note_on(3, 1.0)
    out = play(engine, h.shape[1] // 128 + 2)
    assert np.array_equal(out[:, : h.shape[1]], h)  # bit-exact, starting at the first sample of the block
    assert np.all(out[:, h.shape[1]:] == 0)
    assert engine.note_on(3, 0.5)
    out = play(engine, 4)
    np.testing.assert_allclose(out, 0.25 * h[:, :512], rtol=0, atol=1e-7)
    engine.panic()
    play(engine, 1)
    assert engine.mixer.active() == 0


def test_hits_are_deterministic_and_differ_between_pads(engine: Engine, source: ModelSource) -> None:
    z = source.apply_knobs(engine.pads[2].latent, engine.pads[2].knobs)
    assert np.array_equal(source.render(z[None])[0], engine.ready[2][0])
    assert not np.array_equal(engine.ready[2][0], engine.ready[4][0])


def test_knob_move_rerenders_the_selected_pad_and_notifies_listeners(engine: Engine) -> None:
    got: list[tuple[int, np.ndarray, int]] = []
    engine.add_listener(lambda p, h, r: got.append((p, h, r)))
    assert len(got) == 16  # every current hit at once
    got.clear()
    engine.select(6)
    before = engine.ready[6][0]
    for v in (0.2, 0.5, 0.9):  # coalesced: the latest value wins
        engine.set_knob(1, v)
    assert engine.wait_ready(TIMEOUT)
    after = engine.ready[6][0]
    assert not np.array_equal(before, after)
    assert engine.pads[6].knobs[1] == 0.9 and got and got[-1][0] == 6 and got[-1][2] == engine.rate
    assert np.array_equal(got[-1][1], after)
    expected = engine.source.render(engine.source.apply_knobs(engine.pads[6].latent, engine.pads[6].knobs)[None])[0]
    assert np.array_equal(after, expected)
    # store bakes the knobs into the latent: same sound, knobs at zero
    engine.store(6)
    assert engine.pads[6].knobs == [0.0] * 8
    z = engine.source.apply_knobs(engine.pads[6].latent, engine.pads[6].knobs)
    assert np.array_equal(engine.source.render(z[None])[0], after)
    assert engine.stats.knob_ready_ms


def test_fresh_mode_plays_a_new_kick_each_hit_reproducibly(source: ModelSource) -> None:
    def hits(n: int) -> list[np.ndarray]:
        e = Engine(source, EngineConfig(seed=11, fresh_queue=2))
        e.set_mode(0, "fresh")
        e.start()
        try:
            assert e.wait_ready(TIMEOUT)
            out = []
            for _ in range(n):
                e.add_trigger_listener(lambda p, h, g, acc=out: acc.append(h)) if not out else None
                assert e.note_on(0, 1.0, wait=True)
            return out
        finally:
            e.stop()

    a, b = hits(3), hits(3)
    assert len(a) == 3
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_new_latent_mode_spread_seed_via_actions(engine: Engine) -> None:
    ctl = Controller(engine)
    before = engine.ready[9][0]
    ctl.handle(Action("new", pad=9))
    assert engine.wait_ready(TIMEOUT) and not np.array_equal(before, engine.ready[9][0])
    ctl.handle(Action("mode", pad=9, value="fresh"))
    ctl.handle(Action("spread", pad=9, value=0.5))
    ctl.handle(Action("seed", value=3))
    assert engine.wait_ready(TIMEOUT)
    assert engine.pads[9].mode == "fresh" and engine.pads[9].spread == 0.5 and engine.seed == 3
    assert engine.status()["pads"][9]["fresh_queued"] == engine.config.fresh_queue
    ctl.handle(Action("mode", pad=9, value="hold"))


def test_preset_reopens_the_same_kicks_bit_exactly(engine: Engine, source: ModelSource, tmp_path: Path) -> None:
    engine.set_knob(2, -0.7, pad=1)
    assert engine.wait_ready(TIMEOUT)
    path = engine.save_preset(tmp_path / "set.json")
    other = Engine(source, EngineConfig(seed=999))
    assert other.load_preset(path) == []
    assert other.wait_ready(TIMEOUT)
    for p in range(16):
        assert np.array_equal(other.ready[p][0], engine.ready[p][0]), f"pad {p}"


def test_preset_for_another_model_warns(source: ModelSource, tmp_path: Path) -> None:
    e = Engine(source)
    path = e.save_preset(tmp_path / "p.json")
    path.write_text(path.read_text().replace(source.weights_hash, "f" * 64))
    warnings = e.load_preset(path)
    assert len(warnings) == 1 and "made for model" in warnings[0] and str(path) in warnings[0]


def test_preset_of_an_earlier_export_of_the_same_model_loads_quietly(tiny_model_path: Path, tmp_path: Path) -> None:
    """A re-export (``kickit export --keep-knobs``) names the earlier files' weights hashes in its training
    summary: presets saved with them play the same kicks, so they load without the other-model warning."""
    onnx = pytest.importorskip("onnx")
    from kickit.bridge.source import same_model

    from kickit.modelfile import META

    proto = onnx.load(str(tiny_model_path))
    for prop in proto.metadata_props:  # the graph (and so its hash) unchanged
        if prop.key == META["training"]:
            prop.value = json.dumps({**json.loads(prop.value), "reexport_of": ["e" * 64, 7]})  # 7: ignored
    path = tmp_path / "reexport.onnx"
    onnx.save(proto, str(path))
    src = ModelSource.open(path)
    assert src.reexport_of == ("e" * 64,) and same_model(src, "e" * 64) and same_model(src, src.weights_hash)
    assert not same_model(src, "f" * 64)
    e = Engine(src)
    preset = e.save_preset(tmp_path / "p.json")
    preset.write_text(preset.read_text().replace(src.weights_hash, "e" * 64))
    assert e.load_preset(preset) == []
    preset.write_text(preset.read_text().replace("e" * 64, "f" * 64))
    assert len(e.load_preset(preset)) == 1


def test_model_hot_swap_refuses_a_bad_file_and_keeps_playing(engine: Engine, tiny_model_path: Path,
                                                             tmp_path: Path) -> None:
    ctl = Controller(engine)
    sent: list[tuple] = []
    ctl.send = lambda *a: sent.append(a)
    before = [r[0] for r in engine.ready]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    ctl.load_model(str(bad), block=True)
    assert ctl.model_errors == 1 and "bad.onnx" in ctl.last_error and "keeping" in ctl.last_error
    assert engine.source.name == "tiny-spec.onnx" and all(r[0] is h for r, h in zip(engine.ready, before, strict=True))
    assert engine.note_on(0)
    copy = tmp_path / "copy.onnx"
    shutil.copy(tiny_model_path, copy)
    ctl.load_model(str(copy), block=True)
    assert ctl.model_loads == 1 and engine.source.name == "copy.onnx"
    assert all(np.array_equal(r[0], h) for r, h in zip(engine.ready, before, strict=True))  # same weights
    assert sent[0][0] == "/kickit/knob/names" and len(sent[0]) == 9 and sent[1] == ("/kickit/model", "copy.onnx")
    play(engine, 2)


def test_file_sink_writes_each_hit(source: ModelSource, tmp_path: Path) -> None:
    e = Engine(source)
    sink = FileSink(e, tmp_path / "hits")
    sink.start()
    try:
        assert e.note_on(0, 1.0, wait=True) and e.note_on(1, 0.5, wait=True)
    finally:
        sink.stop()
    files = sorted((tmp_path / "hits").glob("*.wav"))
    assert [f.name for f in files] == ["hit-00001-pad00.wav", "hit-00002-pad01.wav"]
    a, rate = sf.read(files[1], dtype="float32", always_2d=True)
    assert rate == 44100
    np.testing.assert_allclose(a.T, 0.25 * e.ready[1][0], atol=2e-7 + 1 / 2**23)


def write_midi(path: Path, notes: list[tuple[float, int, int]], ccs: list[tuple[float, int, int]] = ()) -> Path:
    """notes/ccs: (seconds, note|cc, velocity|value) at 120 bpm, 480 ticks per beat."""
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    events = [(t, mido.Message("note_on", note=n, velocity=v)) for t, n, v in notes]
    events += [(t, mido.Message("control_change", control=c, value=v)) for t, c, v in ccs]
    events.sort(key=lambda e: e[0])
    last = 0
    for t, m in events:
        tick = int(round(t * 960))
        tr.append(m.copy(time=tick - last))
        last = tick
    mid.save(path)
    return path


def test_render_midi_is_sample_accurate(source: ModelSource, tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "a.mid", [(0.0, 36, 127), (0.5, 38, 127), (0.55, 36, 64)],
                      ccs=[(0.25, 70, 127)])
    events = read_midi_events(midi, 44100)
    assert [s for s, _ in events] == [0, 11025, 22050, 24255]  # 24255 = 189 blocks + 63 samples
    e = Engine(source, EngineConfig(seed=2))
    audio = render_events(e, MidiMap(e.pad_map), events)
    h0 = source.render(e.pads[0].latent[None])[0]
    h2 = e.ready[2][0]
    h0k = e.ready[0][0]  # pad 0 after CC 70 moved knob 0 of the selected pad (0) to +1
    assert not np.array_equal(h0, h0k)
    n = h0.shape[1]
    ref = np.zeros((2, 24255 + n), dtype=np.float32)
    ref[:, :n] += h0
    ref[:, 22050:22050 + n] += h2
    ref[:, 24255:24255 + n] += np.float32((64 / 127) ** 2) * h0k
    assert audio.shape == ref.shape
    np.testing.assert_allclose(audio, ref, rtol=0, atol=1e-6)


def test_kickit_render_cli(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    midi = write_midi(tmp_path / "b.mid", [(0.0, 36, 127), (0.1, 37, 100)])
    out = tmp_path / "out.wav"
    assert main(["render", "--midi", str(midi), "-o", str(out), "--model", str(tiny_model_path), "--float"]) == 0
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    e = Engine(ModelSource.open(tiny_model_path))
    ref = render_events(e, MidiMap(e.pad_map), read_midi_events(midi, 44100))
    assert rate == 44100 and np.array_equal(audio.T, ref)
    assert "2 hits" in capsys.readouterr().out
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    assert main(["render", "--midi", str(bad), "-o", str(out), "--model", str(tiny_model_path)]) == 2
    assert "bad.mid" in capsys.readouterr().err
    assert main(["render", "--midi", str(tmp_path / "none.mid"), "-o", str(out),
                 "--model", str(tiny_model_path)]) == 2
    assert "none.mid: file not found" in capsys.readouterr().err


def test_bridge_cli_without_a_model_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["bridge", "--model", str(tmp_path / "missing.onnx"), "--midi-in", "none", "--osc-port", "0",
               "--files", "--out-dir", str(tmp_path / "h")])
    assert rc == 2 and "missing.onnx" in capsys.readouterr().err
    assert main(["bridge", "--block", "3"]) == 2
    assert "--block 3" in capsys.readouterr().err


def test_status_reports_latencies(engine: Engine) -> None:
    engine.note_on(0)
    play(engine, 1)
    time.sleep(0.01)
    s = engine.status()
    assert s["notes"] >= 1 and s["note_latency_ms_p99"] is not None and s["render_ms_p50"] > 0


def test_the_bridge_never_imports_torch(tiny_model_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, kickit.bridge.cli, kickit.bridge.app, kickit.bridge.render_cli, kickit.bridge.bench_latency\n"
        "from kickit.bridge.engine import Engine\nfrom kickit.bridge.source import ModelSource\n"
        f"e = Engine(ModelSource.open({str(tiny_model_path)!r}))\nassert e.note_on(0, wait=True)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'matplotlib'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ""


def test_no_audio_device_falls_back_to_files(tiny_model_path: Path, tmp_path: Path) -> None:
    from kickit.bridge.app import Bridge, BridgeOptions

    b = Bridge(BridgeOptions(model=tiny_model_path, midi_in=None, osc_port=None, device="no-such-device-xyz",
                             out_dir=tmp_path / "hits"))
    assert b.output == "files" and "writing each hit as a WAV file" in b.notes[0]
    assert ("no-such-device-xyz" in b.notes[0] or "no audio output" in b.notes[0]) and str(tmp_path) in b.notes[0]
    b.start()
    try:
        b.controller.handle(Action("trigger", pad=4, value=1.0))
        assert "files in" in b.status()["output"]
    finally:
        b.stop()
    (f,) = (tmp_path / "hits").glob("*.wav")
    assert f.name == "hit-00001-pad04.wav"


def test_kickit_bridge_cli_runs_and_stops_cleanly(tiny_model_path: Path, tmp_path: Path) -> None:
    """The real command as a user runs it without a sound card: OSC triggers -> WAV files, SIGINT -> exit 0."""
    import signal
    import socket
    import subprocess
    import sys

    from kickit.bridge.oscmap import build

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = tmp_path / "hits"
    proc = subprocess.Popen([sys.executable, "-m", "kickit.cli", "bridge", "--model", str(tiny_model_path),
                             "--files", "--out-dir", str(out), "--midi-in", "none", "--osc-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.5)
        deadline = time.monotonic() + TIMEOUT
        answered = False
        while not answered and time.monotonic() < deadline and proc.poll() is None:
            sock.sendto(build("/kickit/status"), ("127.0.0.1", port))
            try:
                answered = bool(sock.recvfrom(65536)[0])
            except TimeoutError:
                pass
        assert answered, "the bridge did not answer /kickit/status"
        sock.sendto(build("/kickit/pad/1/trigger", 0.5), ("127.0.0.1", port))
        sock.sendto(b"junk", ("127.0.0.1", port))
        sock.sendto(build("/kickit/pad/2/trigger"), ("127.0.0.1", port))
        assert wait_files(out, 2)
        sock.close()
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "playing to files in" in stderr and "OSC ? dropped" in stderr and "stopped" in stderr


def wait_files(folder: Path, n: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("*.wav"))) >= n:
            return True
        time.sleep(0.05)
    return False


def test_velocity_layers_change_timbre_with_velocity(source: ModelSource) -> None:
    e = Engine(source, EngineConfig(velocity_layers=3, velocity_knob=1, velocity_amount=0.6))
    assert e.wait_ready(TIMEOUT)
    layers = e.ready[0]
    assert len(layers) == 3 and not np.array_equal(layers[0], layers[2])
    knob = source.knobs[1]
    z = source.apply_knobs(e.pads[0].latent, e.pads[0].knobs)
    soft = source.render((z + np.float32(knob.offset(-0.6)) * knob.direction)[None])[0]
    assert np.array_equal(layers[0], soft)
    played: list[np.ndarray] = []
    e.add_trigger_listener(lambda p, h, g: played.append(h))
    e.note_on(0, 0.1)
    e.note_on(0, 1.0)
    assert played[0] is layers[0] and played[1] is layers[2]


def test_hits_are_resampled_to_the_device_rate(tiny_model_path: Path, source: ModelSource) -> None:
    s48 = ModelSource.open(tiny_model_path, 48000)
    z = np.zeros((1, source.latent_dim), dtype=np.float32)
    a, b = source.render(z)[0], s48.render(z)[0]
    assert s48.rate == 48000 and abs(b.shape[1] - round(a.shape[1] * 48000 / 44100)) <= 1
    e = Engine(s48)
    assert e.rate == 48000


def test_presets_and_midi_learn_through_actions(engine: Engine, tmp_path: Path) -> None:
    ctl = Controller(engine)
    ctl.handle(Action("preset_save", value=str(tmp_path / "x.json")))
    assert (tmp_path / "x.json").is_file()
    ctl.handle(Action("preset_load", value=str(tmp_path / "missing.json")))
    assert "missing.json" in ctl.last_error and "cannot read" in ctl.last_error
    ctl.handle(Action("preset_load", value=str(tmp_path / "x.json")))
    assert engine.wait_ready(TIMEOUT)
    ctl.handle(Action("learn", index=5))
    ctl.on_midi(mido.Message("control_change", control=20, value=0), 0.0)
    assert ctl.midimap.knob_ccs[5] == 20
    ctl.on_midi(mido.Message("control_change", control=20, value=127), 0.0)
    assert engine.pads[engine.selected].knobs[5] == 1.0
    assert ctl.status()["knob_ccs"][5] == 20


def test_a_continuous_knob_stream_still_updates_the_pad(source: ModelSource) -> None:
    """Knob moves faster than renders: each finished render newer than the playing hit is heard at once
    (no livelock where every render is superseded before it lands)."""
    e = Engine(source, EngineConfig(render_threads=2))
    e.start()
    try:
        assert e.wait_ready(TIMEOUT)
        first = e.ready[0][0]
        updates = 0
        last = first
        t_end = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < t_end:  # a move every 5 ms: several per render
            e.set_knob(0, -0.9 + 1.8 * ((i * 37) % 100) / 100.0)
            i += 1
            if e.ready[0][0] is not last:
                last = e.ready[0][0]
                updates += 1
            time.sleep(0.005)
        assert updates >= 2, f"the pad changed {updates} times during a 2 s knob stream"
        assert e.wait_ready(TIMEOUT)
        z = source.apply_knobs(e.pads[0].latent, e.pads[0].knobs)
        assert np.array_equal(e.ready[0][0], source.render(z[None])[0])  # and the last move wins
        assert len(e.stats.knob_ready_ms) == min(i, e.stats.knob_ready_ms.maxlen)  # each move counted once
    finally:
        e.stop()


def test_idle_render_workers_wait_instead_of_spinning(source: ModelSource) -> None:
    """A render in flight on one worker is no work for the other: it must sleep, not poll (a spinning worker
    held the GIL and a core, and made every render in the bridge twice as slow)."""
    e = Engine(source, EngineConfig(render_threads=2))
    e.start()
    try:
        assert e.wait_ready(TIMEOUT)
        time.sleep(0.2)
        with e._lock:
            e._busy += 1  # as if the other worker were rendering (in a render process: its thread only waits)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            time.sleep(0.5)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        finally:
            with e._cond:
                e._busy -= 1
                e._cond.notify_all()
        assert cpu < 0.2 * wall, f"render workers used {cpu:.2f} s of CPU in {wall:.2f} s with nothing to do"
    finally:
        e.stop()


def test_render_processes_give_bit_identical_hits(tiny_model_path: Path, source: ModelSource,
                                                  tmp_path: Path) -> None:
    from kickit.bridge.renderpool import ProcessSource

    from kickit.modelfile import ModelError

    ps = ProcessSource.open(tiny_model_path, 44100, processes=1)
    try:
        z = np.random.default_rng(4).standard_normal((3, source.latent_dim)).astype(np.float32)
        assert np.array_equal(ps.render(z), source.render(z))
        assert ps.weights_hash == source.weights_hash and [k.name for k in ps.knobs] == source.knob_names()
        if hasattr(os, "SCHED_IDLE"):  # Linux: the render process runs in the background class (priority.py)
            assert all(os.sched_getscheduler(p.pid) == os.SCHED_IDLE for p, _c in ps._all)
    finally:
        ps.close()
    assert not any(p.is_alive() for p, _c in ps._all)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="bad.onnx"):
        ProcessSource.open(bad, 44100, processes=1)


def test_render_processes_start_beside_programs_that_keep_every_core_busy(tiny_model_path: Path) -> None:
    """A render helper imports and warms up at normal priority, and only then drops to the background class:
    in the background class from the start, two busy loops (one per core here) kept it from ever getting
    ready (no helper in 120 s, measured). It must start, and then be in the background class."""
    import subprocess
    import sys

    from kickit.bridge.renderpool import ProcessSource

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        ps = ProcessSource.open(tiny_model_path, 44100, processes=1)  # raises if not ready in 120 s
        try:
            if hasattr(os, "SCHED_IDLE"):
                assert all(os.sched_getscheduler(p.pid) == os.SCHED_IDLE for p, _c in ps._all)
        finally:
            ps.close()
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_render_processes_split_a_batch_and_serve_concurrent_renders(tiny_model_path: Path,
                                                                    source: ModelSource) -> None:
    import threading

    from kickit.bridge.renderpool import ProcessSource

    ps = ProcessSource.open(tiny_model_path, 44100, processes=2)
    try:
        sizes: list[tuple[int, int]] = []
        for k, (_proc, conn) in enumerate(ps._all):  # record what each child is sent
            orig = conn.send
            conn.send = lambda obj, orig=orig, k=k: (  # type: ignore[method-assign]
                obj is None or sizes.append((k, len(obj))), orig(obj))[1]
        z = np.random.default_rng(7).standard_normal((5, source.latent_dim)).astype(np.float32)
        assert np.array_equal(ps.render(z), source.render(z))  # shared by both children, same audio bit for bit
        assert [n for _k, n in sizes] == [1] * 5 and {k for k, _n in sizes} == {0, 1}  # a hit at a time, both
        # two threads rendering at once: each gets its own hits (no crossed answers), none waits forever
        zs = [np.random.default_rng(10 + i).standard_normal((1 + i % 3, source.latent_dim)).astype(np.float32)
              for i in range(12)]
        want = [source.render(x) for x in zs]
        got: dict[int, np.ndarray] = {}

        def worker(idx: list[int]) -> None:
            for i in idx:
                got[i] = ps.render(zs[i])

        threads = [threading.Thread(target=worker, args=(list(range(k, 12, 2)),)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(np.array_equal(got[i], want[i]) for i in range(12))
        # one render at a time (knob moves): always the child that rendered last, whose caches are warm
        sizes.clear()
        for i in range(4):
            ps.render(zs[i][:1])
        assert len(sizes) == 4 and len({k for k, _n in sizes}) == 1
    finally:
        ps.close()


def test_osc_port_in_use_is_a_clear_error_and_nothing_is_left_running(tiny_model_path: Path, tmp_path: Path) -> None:
    import socket
    import threading

    from kickit.bridge.app import Bridge, BridgeOptions
    from kickit.bridge.osc_server import OscError

    before = set(threading.enumerate())
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        b = Bridge(BridgeOptions(model=tiny_model_path, midi_in=None, osc_port=port, output="files",
                                 out_dir=tmp_path / "h"))
        with pytest.raises(OscError, match=f"cannot listen on 127.0.0.1:{port}"):
            b.start()
    finally:
        taken.close()
    left = [t.name for t in threading.enumerate() if t.is_alive() and t not in before and t.name.startswith("kickit-")]
    assert not left


def test_release_returns_freed_hits_to_the_os() -> None:
    """kickit.bridge.memory: freed hit-sized blocks between small survivors stay resident in glibc's heap (the
    soak's creep); ``release`` (malloc_trim, called when rendering goes idle) hands them back to the OS."""
    import subprocess
    import sys

    code = (
        "import numpy as np, sys\n"
        "from kickit.bridge.memory import limit_arenas, release\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
        "assert limit_arenas()\n"
        "big = np.ones(1 << 20, np.float32); del big  # glibc raises its mmap threshold after this free\n"
        "base = rss()\n"
        "hits, keep = [], []\n"
        "for i in range(50):\n"
        "    hits.append(np.ones((2, 65536), np.float32))  # 512 KiB, like a render's arrays\n"
        "    keep.append(np.ones(512, np.float32))  # a small survivor after each\n"
        "del hits\n"
        "before = rss() - base\n"
        "assert release() or sys.argv[1] == 'any'\n"
        "print(before, rss() - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "strict"], capture_output=True, text=True, check=True).stdout
    held, released = (int(v) for v in out.split())
    print(f"RSS growth, KiB: freed but held {held}, after release {released}")
    assert held > 16 * 1024  # what it fixes: the 25 MiB of freed blocks are still resident
    assert released < 4 * 1024  # KiB: the small survivors only


def test_callback_overruns_count_only_the_bridges_own_lateness(source: ModelSource,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """DeviceSink: a callback whose GIL wait (host API call -> Python) plus mixing exceeds its period is an xrun
    the bridge caused; a flagged xrun with a prompt callback is not."""
    from types import SimpleNamespace

    from kickit.bridge.outputs import DeviceSink

    e = Engine(source)
    sink = DeviceSink(e, block=128)
    period = 128 / e.rate
    out = np.zeros((128, 2), np.float32)

    class Clock:  # the stream's clock (PortAudio stream time) when the callback's Python code runs
        time = 10.0
        latency = 0.006

    sink.stream = Clock()

    def call(invoked: float, flagged: bool = False) -> None:
        sink._callback(out, 128, SimpleNamespace(currentTime=invoked), 1 if flagged else 0)

    call(10.0 - 0.1 * period, flagged=True)  # prompt, but the host flagged an xrun (not the bridge's)
    assert sink.xruns == 1 and sink.callback_overruns == 0
    call(10.0 - 1.5 * period)  # waited one and a half periods for the GIL: the bridge's xrun
    assert sink.callback_overruns == 1 and sink.callback_wait_max_s == pytest.approx(1.5 * period)
    monkeypatch.setattr(e, "process", lambda o: time.sleep(2 * period))  # a mix that runs too long
    call(10.0)
    assert sink.callback_overruns == 2 and sink.callback_max_s >= 2 * period
    call(0.0)  # a host API without a clock: only the run time counts
    assert sink.callback_overruns == 3
    c = sink.counters()
    assert c["callback_overruns"] == 3 and c["callback_wait_max_ms"] == pytest.approx(1.5 * period * 1e3)


def test_settle_takes_live_objects_out_of_full_collections() -> None:
    import gc
    import subprocess
    import sys

    code = (
        "import gc, time\n"
        "from kickit.bridge.memory import settle\n"
        "junk = [[i] for i in range(300000)]  # many live container objects, as after start-up\n"
        "t = time.perf_counter(); gc.collect(); before = time.perf_counter() - t\n"
        "settle()\n"
        "t = time.perf_counter(); gc.collect(); after = time.perf_counter() - t\n"
        "print(before, after, gc.get_freeze_count())\n"
    )
    before, after, frozen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout.split()
    assert int(frozen) >= 300000 and float(after) < float(before) / 5
    assert gc.isenabled()


_MALLINFO = (
    "import ctypes\n"
    "class MallInfo(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
    "fordblks keepcost'.split()]\n"
    "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = MallInfo\n"
    "def used(): return libc.mallinfo2().uordblks  # bytes in live malloc blocks\n"
)


def _heap_growth(code: str, fill: bool) -> int:
    """Bytes of live malloc blocks a fresh interpreter gained over ``code``'s measured part (glibc)."""
    import subprocess

    prog = (_MALLINFO + ("from kickit.bridge import memory; memory.fill_numpy_cache()\n" if fill else "") + code
            + "print(used() - u0)\n")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's mallinfo2")


@needs_glibc
def test_numpy_cache_filled_at_start_keeps_the_heap_from_creeping() -> None:
    """Small arrays of ever new sizes: numpy keeps freed buffers of each size (its small-block cache, which
    tracemalloc does not see), so the live heap creeps up by megabytes; filled at start, it stays flat."""
    code = ("import numpy as np\n"
            "rng = np.random.default_rng(0)\n"
            "u0 = used()\n"
            "for _ in range(5000):  # a few sizes at a time, several arrays of each alive at once\n"
            "    blocks = [np.empty(int(n), np.uint8) for n in rng.integers(1, 1024, 4) for _ in range(7)]\n"
            "    del blocks\n")
    creep, filled = _heap_growth(code, fill=False), _heap_growth(code, fill=True)
    assert creep > 2 << 20  # the control: this numpy caches (~3.6 MiB at its ceiling)
    assert filled < 256 << 10


@needs_glibc
def test_renders_of_varied_hits_leave_the_heap_flat_with_the_cache_filled() -> None:
    """The render processes' case: hits of the shipped model from random latents (their supports and runs,
    so the reconstruction's small arrays, change size with each hit)."""
    from kickit.modelfile import default_model_path

    model = default_model_path()
    if model is None:
        pytest.fail("models/kick-v1.onnx (the shipped model) is missing")
    code = ("import numpy as np\n"
            "from kickit.bridge.source import ModelSource\n"
            f"src = ModelSource.open({str(model)!r})\n"
            "z = np.random.default_rng(3).standard_normal((400, src.latent_dim)).astype(np.float32)\n"
            "src.render(z[:100])  # warm: code paths, FFT plans\n"
            "u0 = used()\n"
            "src.render(z[100:])\n")
    creep, filled = _heap_growth(code, fill=False), _heap_growth(code, fill=True)
    assert creep > 200 << 10  # the control: ~320 KiB in 300 renders
    assert filled < 128 << 10  # ~50 KiB


def test_background_priority_in_a_fresh_process() -> None:
    """priority.background() lowers the calling process only, to the lowest unprivileged class."""
    import subprocess
    import sys

    code = ("import os; from kickit.bridge import priority; what = priority.background(); "
            "print(what, os.sched_getscheduler(0) if hasattr(os, 'sched_getscheduler') else -1, sep='|')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    what, policy = out.stdout.strip().split("|")
    if hasattr(os, "SCHED_IDLE"):
        assert what == "SCHED_IDLE" and int(policy) == os.SCHED_IDLE
    else:
        assert what in ("nice 19", "below normal", "unchanged")
    if hasattr(os, "sched_getscheduler"):
        assert os.sched_getscheduler(0) != getattr(os, "SCHED_IDLE", -1)  # this process is untouched
    if hasattr(os, "SCHED_IDLE") and os.path.isdir("/proc/self/task"):
        # a thread that was already running when background() was called is lowered too (Linux applies the
        # policy per thread), and so is one started after it (inherited)
        code = ("import os, threading, time\n"
                "from kickit.bridge import priority\n"
                "ev = threading.Event()\n"
                "early = threading.Thread(target=ev.wait, daemon=True); early.start()\n"
                "priority.background()\n"
                "late = threading.Thread(target=ev.wait, daemon=True); late.start()\n"
                "print(sorted({os.sched_getscheduler(int(t)) for t in os.listdir('/proc/self/task')}))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == f"[{os.SCHED_IDLE}]"


def test_callback_timing_logs_its_recent_overruns_in_order() -> None:
    """The last overruns with their times (for setting them against the machine's stalls), oldest first; a
    ring: the oldest are forgotten, the counts go on."""
    from kickit.bridge.outputs import CallbackTiming

    t = CallbackTiming()
    period = 0.0029
    t.record(0.0001, 0.0001, period, end=1.0)
    assert t.recent() == [] and t.overruns == 0
    n = CallbackTiming.LOG + 8
    for k in range(n):
        t.record(0.001, 0.003, period, end=2.0 + k)  # an overrun
        t.record(0.001, 0.0005, period, end=2.5 + k)  # in time
    c = t.counters()
    assert c["callback_overruns"] == n and c["callback_overruns_waiting"] == 0
    log = c["callback_overrun_log"]
    assert [e[0] for e in log] == [2.0 + k for k in range(8, n)]  # the last LOG, oldest first
    assert all(e[1:] == [0.001, 0.003] for e in log)
