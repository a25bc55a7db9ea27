"""``kickit devices``: list audio devices (PortAudio via sounddevice) and MIDI ports (mido + python-rtmidi).

On Linux both MIDI APIs are asked: ALSA (the sequencer) and JACK. Whatever is missing (no PortAudio library,
no ALSA sequencer, no JACK server) is said in one plain line; there is never a traceback, and the native
libraries' own chatter on stderr is captured (shown with ``-v``). Listing never starts a JACK server
(``JACK_NO_START_SERVER=1`` is set for the probe unless the caller set it).

Probing (:func:`probe_audio`, :func:`probe_midi`) is separated from formatting (:func:`format_report`), which
is a pure function of a :class:`DeviceReport`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

# rtmidi API names (as mido spells them) worth asking on each platform, with a short label
MIDI_APIS: dict[str, list[tuple[str, str]]] = {
    "linux": [("LINUX_ALSA", "ALSA"), ("UNIX_JACK", "JACK")],
    "darwin": [("MACOSX_CORE", "CoreMIDI"), ("UNIX_JACK", "JACK")],
    "win32": [("WINDOWS_MM", "Windows MM")],
}


@dataclass
class AudioDevice:
    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_rate: float
    default_input: bool = False
    default_output: bool = False


@dataclass
class MidiPorts:
    api: str  # label, e.g. "ALSA"
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None  # why this API could not be asked


@dataclass
class DeviceReport:
    audio: list[AudioDevice] = field(default_factory=list)
    audio_error: str | None = None
    midi: list[MidiPorts] = field(default_factory=list)
    native_messages: str = ""  # what the native libraries printed on stderr while probing

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("native_messages")
        return d


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where C libraries print) to a temp file; yields a list that receives the
    captured text when the block ends. Falls back to doing nothing where fd 2 cannot be redirected."""
    out: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def probe_audio(refresh: bool = False) -> tuple[list[AudioDevice], str | None]:
    """Audio devices PortAudio sees. PortAudio enumerates when it initialises (at ``import sounddevice``);
    ``refresh=True`` re-initialises it to see servers/devices that appeared since, which also closes any
    stream this process has open (so the bridge never asks for it while playing)."""
    fresh = "sounddevice" not in sys.modules
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio shared library is missing
        return [], f"PortAudio is not available ({_one_line(e)}); install libportaudio2"
    try:
        if refresh and not fresh:
            sd._terminate()
            sd._initialize()
        hostapis = sd.query_hostapis()
        devices = sd.query_devices()
    except Exception as e:  # noqa: BLE001 - PortAudio errors come as several types; report, never raise
        return [], f"PortAudio could not list devices ({_one_line(e)})"
    out: list[AudioDevice] = []
    for d in devices:
        api = hostapis[d["hostapi"]] if 0 <= d["hostapi"] < len(hostapis) else {}
        out.append(AudioDevice(
            index=int(d["index"]), name=str(d["name"]), hostapi=str(api.get("name", "?")),
            inputs=int(d["max_input_channels"]), outputs=int(d["max_output_channels"]),
            default_rate=float(d["default_samplerate"]),
            default_input=api.get("default_input_device") == d["index"],
            default_output=api.get("default_output_device") == d["index"],
        ))
    return out, None


def midi_apis(platform: str = sys.platform) -> list[tuple[str, str]]:
    """(mido API name, label) pairs to ask on this platform."""
    key = "linux" if platform.startswith("linux") else platform
    return MIDI_APIS.get(key, [])


def probe_midi(apis: list[tuple[str, str]] | None = None) -> list[MidiPorts]:
    """MIDI input and output ports per API; an API that cannot be asked gets an ``error`` line instead."""
    apis = midi_apis() if apis is None else apis
    try:
        import mido
        import rtmidi  # noqa: F401 - mido's backend needs it; say so plainly when it is missing
    except ImportError as e:
        return [MidiPorts(api=label, error=f"python-rtmidi/mido not installed ({e.name})") for _, label in apis]
    out: list[MidiPorts] = []
    for name, label in apis:
        try:
            backend = mido.Backend("mido.backends.rtmidi", api=name, load=True)
            compiled = backend.module.get_api_names()
            if name not in compiled:
                out.append(MidiPorts(api=label, error="not compiled into python-rtmidi"))
                continue
            ins, outs = backend.get_input_names(), backend.get_output_names()
        except Exception as e:  # noqa: BLE001 - rtmidi raises SystemError/RuntimeError when the API is down
            out.append(MidiPorts(api=label, error=_midi_reason(label, e)))
            continue
        out.append(MidiPorts(api=label, inputs=list(ins), outputs=list(outs)))
    return out


def _midi_reason(label: str, e: BaseException) -> str:
    text = _one_line(e)
    if label == "ALSA" and "sequencer" in text.lower():
        return "no ALSA sequencer on this machine: /dev/snd/seq missing or not accessible"
    if label == "JACK" and ("server" in text.lower() or "jack" in text.lower()):
        return "no JACK server running"
    return text


def probe(refresh: bool = False) -> DeviceReport:
    """Probe audio and MIDI with native stderr captured; never starts a JACK server. ``refresh``: see
    :func:`probe_audio`."""
    saved = os.environ.get("JACK_NO_START_SERVER")
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    try:
        with captured_native_stderr() as native:
            audio, audio_error = probe_audio(refresh)
            midi = probe_midi()
    finally:
        if saved is None:
            os.environ.pop("JACK_NO_START_SERVER", None)
    return DeviceReport(audio=audio, audio_error=audio_error, midi=midi, native_messages="".join(native))


def format_report(report: DeviceReport) -> str:
    """Human-readable listing (pure)."""
    lines = ["Audio devices:"]
    if report.audio_error:
        lines.append(f"  none: {report.audio_error}")
    elif not report.audio:
        lines.append("  none found (no sound card, and no JACK server running)")
    for d in report.audio:
        io = []
        if d.inputs:
            io.append(f"{d.inputs} in")
        if d.outputs:
            io.append(f"{d.outputs} out")
        flags = [w for w, on in (("default input", d.default_input), ("default output", d.default_output)) if on]
        lines.append(f"  [{d.index}] {d.name} ({d.hostapi}): {', '.join(io) or 'no channels'}, "
                     f"{d.default_rate:g} Hz" + (f"  <- {', '.join(flags)}" if flags else ""))
    lines.append("MIDI ports:")
    if not report.midi:
        lines.append("  none: no MIDI API known on this platform")
    for m in report.midi:
        if m.error:
            lines.append(f"  {m.api}: none ({m.error})")
            continue
        if not m.inputs and not m.outputs:
            lines.append(f"  {m.api}: no ports")
            continue
        lines.append(f"  {m.api} inputs (kickit can read pads from): " + ("none" if not m.inputs else ""))
        lines.extend(f"    {p}" for p in m.inputs)
        lines.append(f"  {m.api} outputs: " + ("none" if not m.outputs else ""))
        lines.extend(f"    {p}" for p in m.outputs)
    return "\n".join(line.rstrip() for line in lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")


def run(args: argparse.Namespace) -> int:
    report = probe()
    if report.native_messages.strip():
        log.debug("native libraries said while probing:\n%s", report.native_messages.rstrip())
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0
