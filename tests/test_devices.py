"""`kickit devices` as a subprocess: with no audio/MIDI system at all, and with a real JACK dummy server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from jackserver import JackServer

from kickit.devices import AudioDevice, DeviceReport, MidiPorts, format_report, midi_apis


def _devices(*extra: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    env["JACK_DEFAULT_SERVER"] = server or f"kickit-absent-{uuid.uuid4().hex[:8]}"
    return subprocess.run([sys.executable, "-m", "kickit.cli", "devices", *extra], env=env,
                          capture_output=True, text=True, timeout=60)


def test_no_server_says_so_plainly() -> None:
    r = _devices()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    # the native libraries' chatter ("Cannot connect to server socket", ALSA lib ...) is captured
    assert "Cannot connect" not in r.stderr and "ALSA lib" not in r.stderr
    assert "Audio devices:" in r.stdout and "MIDI ports:" in r.stdout
    if sys.platform.startswith("linux"):
        assert "JACK: none (no JACK server running)" in r.stdout
        data = json.loads(_devices("--json").stdout)
        jack = next(m for m in data["midi"] if m["api"] == "JACK")
        assert jack["error"] == "no JACK server running" and jack["inputs"] == []


@pytest.mark.jack
def test_lists_jack_audio_device_and_midi_ports(jack_server) -> None:  # noqa: ANN001 - fixture
    jack = pytest.importorskip("jack")
    client = jack.Client("padsim", no_start_server=True, servername=jack_server.name)
    client.midi_outports.register("pads")
    client.midi_inports.register("thru")
    client.activate()
    try:
        r = _devices("--json", server=jack_server.name)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["audio_error"] is None
        system = [d for d in data["audio"] if d["hostapi"].startswith("JACK")]
        assert system and system[0]["outputs"] >= 2 and system[0]["default_rate"] == jack_server.rate
        midi = next(m for m in data["midi"] if m["api"] == "JACK")
        assert midi["error"] is None
        assert any("padsim:pads" in p for p in midi["inputs"]), midi  # our output is a port kickit can read
        assert any("padsim:thru" in p for p in midi["outputs"]), midi
        text = _devices(server=jack_server.name).stdout
        assert "(JACK Audio Connection Kit): 2 in, 2 out, 44100 Hz" in text
        assert "padsim:pads" in text
    finally:
        client.deactivate()
        client.close()


def test_format_report_is_plain() -> None:
    rep = DeviceReport(
        audio=[AudioDevice(3, "Babyface", "ALSA", 2, 4, 48000.0, default_output=True)],
        midi=[MidiPorts("ALSA", inputs=["Pad 1"], outputs=[]), MidiPorts("JACK", error="no JACK server running")],
    )
    text = format_report(rep)
    assert "[3] Babyface (ALSA): 2 in, 4 out, 48000 Hz  <- default output" in text
    assert "ALSA inputs (kickit can read pads from):" in text and "    Pad 1" in text
    assert "ALSA outputs: none" in text
    assert "JACK: none (no JACK server running)" in text
    empty = format_report(DeviceReport(audio_error="PortAudio is not available (x)"))
    assert "Audio devices:\n  none: PortAudio is not available (x)" in empty
    assert "none: no MIDI API known" in empty


def test_midi_apis_per_platform() -> None:
    assert [label for _, label in midi_apis("linux")] == ["ALSA", "JACK"]
    assert midi_apis("win32")[0][0] == "WINDOWS_MM"
    assert midi_apis("plan9") == []


@pytest.mark.jack
def test_in_process_refresh_sees_a_server_started_after_import() -> None:
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed")
    import sounddevice as sd  # imported (PortAudio initialised) before the server starts

    from kickit.devices import probe

    server = JackServer().start()
    try:
        rep = probe(refresh=True)
        assert rep.audio_error is None
        assert any(d.hostapi.startswith("JACK") and d.outputs >= 2 for d in rep.audio)
    finally:
        # PortAudio lets go of the server while it still runs (it asserts if the server vanishes under it),
        # then comes back without it
        sd._terminate()
        server.stop()
        sd._initialize()
