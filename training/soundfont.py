"""General MIDI drum kits from a SoundFont, rendered with the ``fluidsynth`` program.

* :func:`read_presets` lists a ``.sf2`` file's presets (pure RIFF parsing of the ``phdr`` chunk); the drum
  kits are the presets of bank 128.
* :func:`drum_midi` writes the MIDI file that plays given notes at given velocities on the drum channel, one
  per slot; :func:`render_kit` runs ``fluidsynth`` on it (no reverb, no chorus) and cuts the render into one
  hit per (note, velocity).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DRUM_BANK = 128
DRUM_CHANNEL = 9  # MIDI channel 10
# General MIDI percussion notes per instrument
GM_NOTES: dict[str, tuple[int, ...]] = {
    "kick": (35, 36),
    "snare": (38, 40),
    "rim": (37,),
    "clap": (39,),
    "hat": (42, 44, 46),
    "tom": (41, 43, 45, 47, 48, 50),
    "crash": (49, 57),
    "ride": (51, 59),
    "cymbal": (52, 55),
    "cowbell": (56,),
}
VELOCITIES = (60, 95, 127)
SLOT_SECONDS = 2.0  # each hit gets this long before the next starts
HOLD_SECONDS = 1.0  # note length


class SoundFontError(ValueError):
    """A SoundFont could not be read or rendered; the message names the file."""


@dataclass(frozen=True)
class Preset:
    name: str
    program: int
    bank: int


def _chunks(data: bytes, start: int, end: int) -> dict[str, tuple[int, int]]:
    """RIFF sub-chunks in data[start:end] -> id (``LIST`` as ``LIST:type``) -> (offset of data, size)."""
    out: dict[str, tuple[int, int]] = {}
    pos = start
    while pos + 8 <= end:
        cid = data[pos:pos + 4].decode("latin-1")
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if body + size > end:
            raise ValueError(f"chunk {cid!r} runs past the end of the file")
        if cid == "LIST":
            out[f"LIST:{data[body:body + 4].decode('latin-1')}"] = (body + 4, size - 4)
        else:
            out[cid] = (body, size)
        pos = body + size + (size & 1)
    return out


def read_presets(sf2: str | Path) -> list[Preset]:
    """Presets of a SoundFont 2 file, in file order (the terminal ``EOP`` record is left out)."""
    p = Path(sf2)
    try:
        with p.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
                raise SoundFontError(f"{p}: not a SoundFont 2 file (no RIFF sfbk header)")
            data = head + fh.read()
    except OSError as e:
        raise SoundFontError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        top = _chunks(data, 12, min(len(data), 8 + struct.unpack_from("<I", data, 4)[0]))
        if "LIST:pdta" not in top:
            raise ValueError("no pdta list")
        off, size = top["LIST:pdta"]
        pdta = _chunks(data, off, off + size)
        if "phdr" not in pdta:
            raise ValueError("no phdr chunk")
        off, size = pdta["phdr"]
    except (ValueError, struct.error) as e:
        raise SoundFontError(f"{p}: malformed SoundFont ({e})") from None
    presets = []
    for i in range(size // 38 - 1):  # last record is the terminal EOP
        name, program, bank = struct.unpack_from("<20sHH", data, off + 38 * i)
        presets.append(Preset(name.split(b"\0", 1)[0].decode("latin-1").strip(), program, bank))
    return presets


def drum_presets(sf2: str | Path) -> list[Preset]:
    """The drum kits of a SoundFont (bank 128), sorted by program."""
    return sorted((p for p in read_presets(sf2) if p.bank == DRUM_BANK), key=lambda p: p.program)


def drum_midi(path: str | Path, program: int, hits: list[tuple[int, int]], slot: float = SLOT_SECONDS,
              hold: float = HOLD_SECONDS) -> Path:
    """Write a MIDI file: drum kit ``program`` on channel 10, then each (note, velocity) at ``i * slot``."""
    import mido

    tpb = 480
    tempo = 500_000  # 120 bpm: one tick is 1/960 s
    ticks = int(round(tpb * 1_000_000 / tempo))  # ticks per second
    mid = mido.MidiFile(type=0, ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    tr.append(mido.Message("control_change", channel=DRUM_CHANNEL, control=0, value=DRUM_BANK >> 7 & 127, time=0))
    tr.append(mido.Message("program_change", channel=DRUM_CHANNEL, program=program, time=0))
    now = 0
    for i, (note, vel) in enumerate(hits):
        on, off = int(round(i * slot * ticks)), int(round((i * slot + hold) * ticks))
        tr.append(mido.Message("note_on", channel=DRUM_CHANNEL, note=note, velocity=vel, time=on - now))
        tr.append(mido.Message("note_off", channel=DRUM_CHANNEL, note=note, velocity=0, time=off - on))
        now = off
    end = int(round(len(hits) * slot * ticks))
    tr.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))
    p = Path(path)
    mid.save(str(p))
    return p


def fluidsynth_path() -> str | None:
    return shutil.which("fluidsynth")


def render_kit(sf2: str | Path, program: int, hits: list[tuple[int, int]], sample_rate: int,
               slot: float = SLOT_SECONDS, gain: float = 0.5, timeout: float = 300.0) -> list[np.ndarray]:
    """Render each (note, velocity) of drum kit ``program`` with fluidsynth: float32 (2, slot samples) each."""
    import soundfile as sf

    exe = fluidsynth_path()
    if exe is None:
        raise SoundFontError("fluidsynth is not installed (apt-get install fluidsynth)")
    with tempfile.TemporaryDirectory(prefix="kickit-fluid-") as tmp:
        mid = drum_midi(Path(tmp) / "kit.mid", program, hits, slot)
        wav = Path(tmp) / "kit.wav"
        cmd = [exe, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate),
               "-T", "wav", "-O", "float", "-F", str(wav), str(sf2), str(mid)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SoundFontError(f"{sf2}: fluidsynth took more than {timeout:g} s") from None
        if r.returncode != 0 or not wav.exists():
            why = (r.stderr or r.stdout).strip().splitlines()
            raise SoundFontError(f"{sf2}: fluidsynth failed (exit {r.returncode}): {why[-1] if why else 'no output'}")
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise SoundFontError(f"{sf2}: fluidsynth rendered at {rate} Hz, asked for {sample_rate}")
    audio = audio.T
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    n = int(round(slot * sample_rate))
    need = n * len(hits)
    if audio.shape[1] < need:
        audio = np.pad(audio, ((0, 0), (0, need - audio.shape[1])))
    return [np.ascontiguousarray(audio[:2, i * n:(i + 1) * n]) for i in range(len(hits))]
