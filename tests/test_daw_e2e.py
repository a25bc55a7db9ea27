"""End to end: the bridge in DAW mode (real engine, real model, real OSC server on UDP) and a client that
speaks exactly the OSC messages the Max for Live patch sends and expects.

Live cannot run here, so this client is the stand-in for the device: every message it sends is derived from
the patch source (max_for_live/device.py, through the checker's osc_uses), and the test fails if the patch
sends an address this test does not exercise, or if the bridge drops one of them.
"""

from __future__ import annotations

import json
import socket
import time
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
from kickit.max_for_live.check import OscUse, normalise, osc_uses
from pythonosc.osc_message import OscMessage

TIMEOUT = 30.0


class Device:
    """The device's side of the OSC exchange: a UDP socket, messages built from the patch's OscUses."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.patch = device.build_patcher([f"k{i}" for i in range(8)], device_port=self.port)
        self.uses = osc_uses(self.patch)
        self.sent: set[str] = set()
        self.inbox: list[tuple[str, list[Any]]] = []
        self.bridge: tuple[str, int] | None = None

    def use(self, template: str) -> OscUse:
        (u,) = [u for u in self.uses if u.direction == "out" and u.address == template]
        return u

    def send(self, template: str, *fill: int, args: tuple[Any, ...] = ()) -> None:
        """Send the patch's message ``template`` with its ``{}`` filled by ``fill`` and its run-time
        arguments ``args``, typed as the patch types them (its constants are sent as written)."""
        u = self.use(template)
        address = u.address.format(*fill)
        values, it = [], iter(args)
        for kind, const in zip(u.args, u.values, strict=True):
            v = const if const is not None else next(it)
            assert {"i": int, "f": float, "s": str}[kind] is type(v), f"{template}: {v!r} is not OSC type {kind}"
            values.append(v)
        assert next(it, None) is None, f"{template} takes {len(u.args)} arguments"
        assert self.bridge is not None
        self.sock.sendto(build(address, *values), self.bridge)
        self.sent.add(u.address)

    def receive(self, address: str, count: int = 1, timeout: float = TIMEOUT, **match: Any) -> list[list[Any]]:
        """Wait for ``count`` messages with ``address`` (and, with pad=N, first argument N)."""
        assert any(u.direction == "in" and u.address == address for u in self.uses), \
            f"the patch does not route {address}"
        deadline = time.monotonic() + timeout
        found: list[list[Any]] = []
        while True:
            for item in list(self.inbox):
                a, args = item
                if a == address and ("pad" not in match or args[0] == match["pad"]):
                    found.append(args)
                    self.inbox.remove(item)
                    if len(found) == count:
                        return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count} x {address} {match} within {timeout} s (got {found})")
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            msg = OscMessage(data)
            self.inbox.append((msg.address, list(msg.params)))

    def drain(self, quiet: float = 0.3) -> None:
        """Forget everything received so far, including what is still in flight."""
        self.sock.settimeout(quiet)
        try:
            while True:
                self.sock.recvfrom(65536)
        except TimeoutError:
            pass
        self.inbox.clear()

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


def test_device_and_bridge_in_daw_mode(bridge, tmp_path: Path) -> None:
    engine, server, sink = bridge
    dev = Device()
    dev.bridge = ("127.0.0.1", server.port)
    played: list[tuple[int, np.ndarray]] = []
    engine.add_trigger_listener(lambda pad, h, gain: played.append((pad, h)))
    try:
        # connect: the patch registers its udpreceive port; the bridge answers with names, model, all hits
        dev.send("/kickit/connect")
        names = dev.receive("/kickit/knob/names")[0]
        assert names == [k.name for k in engine.source.knobs][:8]
        assert dev.receive("/kickit/model")[0] == [engine.source.name]
        assert engine.wait_ready(TIMEOUT) and sink.mode.flush(TIMEOUT)
        ready = {args[0]: args[1] for args in dev.receive("/kickit/hit/ready", count=PAD_COUNT)}
        assert sorted(ready) == list(range(PAD_COUNT))
        for pad, path in ready.items():
            assert Path(path).is_absolute() and Path(path).parent == (tmp_path / "daw").resolve()
            assert np.array_equal(wav(path), current(engine, pad)), f"pad {pad}: file != the bridge's hit"
        assert sink.mode.flush(TIMEOUT)
        dev.drain()  # the announcements of the start-up files may arrive twice (written, then resent)

        # the status ping the patch sends every 2 s
        dev.send("/kickit/status")
        status = json.loads(dev.receive("/kickit/status")[0][0])
        assert status["model"] == engine.source.name

        # a knob move (live.dial -> float) re-renders the selected pad (0) and announces the new file
        before = np.array(current(engine, 0))
        dev.sock.sendto(b"", dev.bridge)  # an empty datagram is dropped, the next message still works
        knobs = [u.address for u in dev.uses if u.direction == "out" and normalise(u.address) == "/kickit/knob/*"]
        assert knobs == [f"/kickit/knob/{i}" for i in range(8)], "one live.dial per knob, in order"
        dev.send(knobs[3], args=(0.75,))
        (args,) = dev.receive("/kickit/hit/ready", pad=0)
        assert engine.pads[0].knobs[3] == pytest.approx(0.75)
        assert np.array_equal(wav(args[1]), current(engine, 0))
        assert not np.array_equal(wav(args[1]), before), "the knob changed the hit"

        # select another pad (live.numbox) and move a knob: the change goes to that pad
        dev.send("/kickit/pad/{}/select", 5)
        dev.send(knobs[0], args=(-0.5,))
        (args,) = dev.receive("/kickit/hit/ready", pad=5)
        assert engine.selected == 5 and engine.pads[5].knobs[0] == pytest.approx(-0.5)
        assert np.array_equal(wav(args[1]), current(engine, 5))

        # Store: knob offsets baked into the latent, knobs back to 0
        dev.send("/kickit/pad/{}/store", 5)
        deadline = time.monotonic() + TIMEOUT
        while any(engine.pads[5].knobs) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(engine.pads[5].knobs)
        assert engine.wait_ready(TIMEOUT) and sink.mode.flush(TIMEOUT)
        dev.drain()

        # New kick: a new latent for the pad, a new file
        old = np.array(current(engine, 5))
        dev.send("/kickit/pad/{}/new", 5)
        (args,) = dev.receive("/kickit/hit/ready", pad=5)
        assert np.array_equal(wav(args[1]), current(engine, 5)) and not np.array_equal(wav(args[1]), old)

        # a note on the track: stripnote -> pad -> trigger with the MIDI velocity (int 1..127)
        dev.send("/kickit/pad/{}/trigger", 5, args=(100,))
        deadline = time.monotonic() + TIMEOUT
        while not played and time.monotonic() < deadline:
            time.sleep(0.01)
        assert played and played[-1][0] == 5

        # pad mode menu -> fresh: each trigger's new variation becomes the pad's file for the next note
        dev.send("/kickit/pad/{}/mode", 5, args=("fresh",))
        deadline = time.monotonic() + TIMEOUT
        while engine.pads[5].mode != "fresh" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.wait_ready(TIMEOUT) and sink.mode.flush(TIMEOUT)
        dev.drain()
        played.clear()
        dev.send("/kickit/pad/{}/trigger", 5, args=(64,))
        (args,) = dev.receive("/kickit/hit/ready", pad=5)
        assert played and np.array_equal(wav(args[1]), played[-1][1])
        dev.send("/kickit/pad/{}/mode", 5, args=("hold",))

        # nothing the patch sent was dropped, and the patch sends nothing this test did not exercise
        assert sink.mode.flush(TIMEOUT)
        assert server.dropped == 1, "only the empty datagram is dropped"
        patch_out = {u.address for u in dev.uses if u.direction == "out"}
        missing = patch_out - dev.sent - set(knobs)  # the eight knob addresses are one kind of message
        assert not missing, f"the patch sends addresses this test does not exercise: {sorted(missing)}"
        patch_in = {u.address for u in dev.uses if u.direction == "in"}
        assert patch_in == {"/kickit/hit/ready", "/kickit/knob/names", "/kickit/model", "/kickit/status"}

        # old versions are cleaned up: at most the current and the previous file per pad
        files = sorted(p.name for p in (tmp_path / "daw").iterdir())
        per_pad = {}
        for f in files:
            per_pad[f[:5]] = per_pad.get(f[:5], 0) + 1
        assert max(per_pad.values()) <= 2 and not [f for f in files if f.endswith(".tmp")]
    finally:
        dev.close()


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
    dev = Device()
    dev.bridge = ("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.glob("pad*.wav"))) < PAD_COUNT and proc.poll() is None:
            assert time.monotonic() < deadline, "no hit files after 60 s"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        dev.send("/kickit/connect")
        ready = {a[0]: a[1] for a in dev.receive("/kickit/hit/ready", count=PAD_COUNT)}
        assert sorted(ready) == list(range(PAD_COUNT)) and all(Path(p).is_file() for p in ready.values())
        assert wav(ready[0]).shape[0] == 2
    finally:
        dev.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "DAW mode" in out
    assert not list(folder.glob("pad*.wav")), "the bridge removes its hit files when it stops"
