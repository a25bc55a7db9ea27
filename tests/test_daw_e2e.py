"""End to end: the bridge in DAW mode (real engine, real model, real OSC server on UDP) and the Max for Live
device's own patch, run message by message (kickit.max_for_live.simulate) on the other end of the socket.

Live cannot run here, so the patch's control logic stands in for it: the test plays notes into its
``notein``, turns its dials, clicks its buttons; whatever reaches its ``udpsend`` goes to the bridge over UDP,
and the bridge's replies go into its ``udpreceive``. The buffers it loads must hold exactly the bridge's hits.
A wrong cord, a wrong sprintf format or an address the bridge does not handle fails this test.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from kickit.bridge import daw
from kickit.bridge.app import Bridge, BridgeOptions
from kickit.bridge.engine import Engine
from kickit.bridge.oscmap import build
from kickit.bridge.pads import PAD_COUNT
from kickit.max_for_live import device
from kickit.max_for_live.check import normalise, osc_uses
from kickit.max_for_live.simulate import PatchRunner
from pythonosc.osc_message import OscMessage

TIMEOUT = 30.0


class Device:
    """The kickit patch, simulated, wired to a real UDP socket on its udpreceive port."""

    def __init__(self, bridge_port: int, knob_names: list[str] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        names = knob_names or [f"knob {i + 1}" for i in range(8)]
        self.patch = device.build_patcher(names, bridge_port=bridge_port, device_port=self.port)
        self.runner = PatchRunner(self.patch)
        (udpsend,) = self.runner.newobj("udpsend")
        self.bridge = (udpsend.words[1], int(udpsend.words[2]))  # where the patch sends: from the patch
        self.runner.on_send = self._send
        self.received: list[tuple[str, list[Any]]] = []

    def _send(self, msg: list[Any]) -> None:
        self.sock.sendto(build(str(msg[0]), *msg[1:]), self.bridge)

    def pump(self, until: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
        """Deliver the bridge's datagrams to the patch until ``until()`` holds."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or until}; received {self.received[-5:]}")
            self.sock.settimeout(min(left, 0.5))
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            msg = OscMessage(data)
            self.received.append((msg.address, list(msg.params)))
            self.runner.receive(msg.address, list(msg.params))

    def drain(self, quiet: float = 0.3) -> None:
        """Deliver everything still in flight (until the socket is quiet)."""
        self.sock.settimeout(quiet)
        try:
            while True:
                msg = OscMessage(self.sock.recvfrom(65536)[0])
                self.received.append((msg.address, list(msg.params)))
                self.runner.receive(msg.address, list(msg.params))
        except TimeoutError:
            pass

    def buffer(self, pad: int) -> str | None:
        return self.runner.loaded.get(f"---kickit_pad{pad}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def bridge(tiny_model_path: Path, tmp_path: Path):  # noqa: ANN201 - yields the running parts
    """What ``kickit bridge --daw DIR --midi-in none --osc-port 0`` runs, in-process."""
    b = Bridge(BridgeOptions(model=tiny_model_path, midi_in=None, osc_port=0, output="daw",
                             daw_dir=tmp_path / "daw"))
    b.start()
    try:
        assert b.osc is not None and isinstance(b.sink, daw.DawSink)
        yield b.engine, b.osc, b.sink
    finally:
        b.stop()


def wav(path: str) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.T


def current(engine: Engine, pad: int) -> np.ndarray:
    layers = engine.ready[pad]
    assert layers is not None
    return layers[-1]


def settle(engine: Engine, sink: daw.DawSink, dev: Device) -> None:
    assert engine.wait_ready(TIMEOUT) and sink.mode.flush(TIMEOUT)
    dev.drain()


def test_device_and_bridge_in_daw_mode(bridge, tmp_path: Path) -> None:
    engine, server, sink = bridge
    dev = Device(server.port)
    run = dev.runner
    played: list[tuple[int, np.ndarray]] = []
    engine.add_trigger_listener(lambda pad, h, gain: played.append((pad, h)))
    try:
        # Live loads the device: it registers its port; the bridge answers with names, model and all hits
        run.load()
        dev.pump(lambda: all(dev.buffer(p) for p in range(PAD_COUNT)), what="16 buffers loaded")
        settle(engine, sink, dev)
        for pad in range(PAD_COUNT):
            path = dev.buffer(pad)
            assert path and Path(path).is_absolute() and Path(path).parent == (tmp_path / "daw").resolve()
            assert np.array_equal(wav(path), current(engine, pad)), f"pad {pad}: buffer != the bridge's hit"
        names = [k.name for k in engine.source.knobs][:8]
        assert [run.text_of(f"label {i + 1}") for i in range(len(names))] == names
        assert run.text_of("model line") == f"model: {engine.source.name}"
        assert run.text_of("status line").startswith("connected to the bridge")

        # the 2 s ping while connected is a status request; the reply keeps the status line "connected"
        run.tick()
        dev.pump(lambda: any(a == "/kickit/status" for a, _ in dev.received), what="status reply")
        status = json.loads(next(args[0] for a, args in dev.received if a == "/kickit/status"))
        assert status["model"] == engine.source.name

        # a dial (Live parameter) edits the selected pad (0): a new file lands in pad 0's buffer
        before, old = dev.buffer(0), np.array(current(engine, 0))
        run.turn("Knob 4", 0.75)
        dev.pump(lambda: dev.buffer(0) != before, what="pad 0 reloaded")
        settle(engine, sink, dev)
        assert engine.pads[0].knobs[3] == pytest.approx(0.75)
        assert np.array_equal(wav(dev.buffer(0)), current(engine, 0))
        assert not np.array_equal(current(engine, 0), old), "the knob changed the kick"

        # the Pad parameter selects pad 5; the dials now edit it
        run.turn("Pad", 5)
        before = dev.buffer(5)
        run.turn("Knob 1", -0.5)
        dev.pump(lambda: dev.buffer(5) != before, what="pad 5 reloaded")
        settle(engine, sink, dev)
        assert engine.selected == 5 and engine.pads[5].knobs[0] == pytest.approx(-0.5)
        assert np.array_equal(wav(dev.buffer(5)), current(engine, 5))

        # Store: offsets baked into the pad, the bridge's knobs and the device's dials back to 0
        run.click("Store")
        deadline = time.monotonic() + TIMEOUT
        while any(engine.pads[5].knobs) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(engine.pads[5].knobs)
        assert run.parameter("Knob 1").state["value"] == 0.0
        settle(engine, sink, dev)

        # New kick: a new kick on pad 5, loaded into its buffer
        old = np.array(current(engine, 5))
        before = dev.buffer(5)
        run.click("New kick")
        dev.pump(lambda: dev.buffer(5) != before, what="pad 5 new kick")
        settle(engine, sink, dev)
        assert np.array_equal(wav(dev.buffer(5)), current(engine, 5))
        assert not np.array_equal(current(engine, 5), old)

        # a note on the track (F1 = 41 -> pad 5): the buffer plays in Live at once and the bridge is told
        run.note(41, 100)
        assert run.played[-1] == ("---kickit_pad5", ["start"])
        assert run.gains("---kickit_pad5") == [pytest.approx(100 / 127)] * 2
        deadline = time.monotonic() + TIMEOUT
        while not played and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [p for p, _ in played] == [5]
        sent = len(run.sent)
        run.note(30, 100)  # below pad 0: ignored, nothing sent, nothing played
        run.note(41, 0)  # note-off: stripnote drops it
        assert len(run.sent) == sent

        # the mode menu -> fresh: each played hit's new variation becomes the buffer for the next note
        run.turn("Pad mode", 1)
        deadline = time.monotonic() + TIMEOUT
        while engine.pads[5].mode != "fresh" and time.monotonic() < deadline:
            time.sleep(0.01)
        settle(engine, sink, dev)
        played.clear()
        before = dev.buffer(5)
        run.note(41, 64)
        dev.pump(lambda: dev.buffer(5) != before, what="fresh variation loaded")
        assert played and np.array_equal(wav(dev.buffer(5)), played[-1][1])
        run.turn("Pad mode", 0)

        # Randomize: eight dial moves, one re-render (coalesced) of pad 5
        before = dev.buffer(5)
        run.click("Randomize")
        dev.pump(lambda: dev.buffer(5) != before, what="randomized pad 5")
        settle(engine, sink, dev)
        knob_values = [run.parameter(f"Knob {i + 1}").state["value"] for i in range(8)]
        assert engine.pads[5].knobs == pytest.approx(knob_values, abs=1e-6)
        assert np.array_equal(wav(dev.buffer(5)), current(engine, 5))

        # nothing the patch sent was dropped, and every kind of message the patch can send was sent
        assert server.dropped == 0
        sent_kinds = {normalise(str(m[0])) for m in run.sent}
        patch_kinds = {normalise(u.address) for u in osc_uses(dev.patch) if u.direction == "out"}
        assert patch_kinds == sent_kinds, f"not exercised: {sorted(patch_kinds - sent_kinds)}"
        received_kinds = {a for a, _ in dev.received}
        assert received_kinds == {u.address for u in osc_uses(dev.patch) if u.direction == "in"}

        # old versions are cleaned up: at most the current and the previous file per pad
        files = sorted(p.name for p in (tmp_path / "daw").iterdir())
        per_pad: dict[str, int] = {}
        for f in files:
            per_pad[f[:5]] = per_pad.get(f[:5], 0) + 1
        assert max(per_pad.values()) <= 2 and not [f for f in files if f.endswith(".tmp")]
    finally:
        dev.close()


def test_device_notices_a_silent_bridge() -> None:
    """No bridge on the port: the ping times out, the status line says so, the next ping re-sends connect."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    dev = Device(port)
    try:
        run = dev.runner
        run.load()
        assert run.sent == [["/kickit/connect", dev.port]]
        run.tick()
        assert run.sent[-1] == ["/kickit/connect", dev.port], "not connected yet: the ping registers again"
        run.timeout()
        assert run.text_of("status line") == f"bridge not answering on 127.0.0.1:{port} (start: kickit bridge --daw)"
        assert probe.recvfrom(65536)[0] == build("/kickit/connect", dev.port), "the real datagram went out"
    finally:
        dev.close()
        probe.close()


def test_cli_bridge_daw_mode(tiny_model_path: Path, tmp_path: Path) -> None:
    """``kickit bridge --daw DIR`` as a user runs it: files appear, the device gets them, Ctrl-C cleans up."""
    import os
    import signal
    import subprocess
    import sys

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    folder = tmp_path / "hits"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kickit.cli", "bridge", "--daw", str(folder), "--model", str(tiny_model_path),
         "--midi-in", "none", "--osc-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    dev = Device(port)
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.glob("pad*.wav"))) < PAD_COUNT and proc.poll() is None:
            assert time.monotonic() < deadline, "no hit files after 60 s"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        dev.runner.load()
        dev.pump(lambda: all(dev.buffer(p) for p in range(PAD_COUNT)), timeout=60, what="16 buffers loaded")
        assert all(Path(dev.buffer(p)).is_file() for p in range(PAD_COUNT))
        assert wav(dev.buffer(0)).shape[0] == 2
    finally:
        dev.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "DAW mode" in out
    assert not list(folder.glob("pad*.wav")), "the bridge removes its hit files when it stops"


def test_cli_daw_folder_is_a_file(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.cli import main

    f = tmp_path / "not-a-folder"
    f.write_text("x")
    rc = main(["bridge", "--daw", str(f), "--model", str(tiny_model_path), "--midi-in", "none", "--osc-port", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{f.resolve()}: the DAW folder is a file, not a folder" in err
