"""``kickit render --midi FILE.mid -o OUT.wav``: a MIDI file through the bridge's pad/voice logic, offline.

The same engine, mapping and mixer as the live bridge, driven by a sample clock instead of an audio device:
note-ons start at their exact sample (sample-accurate), CCs move knobs (the hit is re-rendered before the
next note that needs it), CC 120/123 panic. The output lasts until the last voice has finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.midimap import MidiMap
from kickit.bridge.pads import PadMap, parse_pad_notes

BLOCK = 128


class MidiFileError(ValueError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def read_midi_events(path: str | Path, rate: int) -> list[tuple[int, object]]:
    """(sample index, mido message) for every channel message of a MIDI file, in time order (tempo applied)."""
    import mido

    p = Path(path)
    try:
        mid = mido.MidiFile(p)
    except FileNotFoundError:
        raise MidiFileError(p, "file not found") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise MidiFileError(p, f"not a readable MIDI file ({e})") from None
    if mid.type == 2:
        raise MidiFileError(p, "MIDI type 2 files (independent sequences) are not supported")
    events: list[tuple[int, object]] = []
    t = 0.0
    try:
        for msg in mid:  # merged tracks, msg.time = delta seconds with tempo changes applied
            t += msg.time
            if not msg.is_meta:
                events.append((int(round(t * rate)), msg))
    except (ValueError, KeyError, IndexError, EOFError) as e:
        raise MidiFileError(p, f"corrupt MIDI data ({e})") from None
    return events


def render_events(engine: Engine, midimap: MidiMap, events: list[tuple[int, object]], block: int = BLOCK,
                  tail: bool = True) -> np.ndarray:
    """Drive ``engine`` (no worker thread) block by block; returns float32 (2, n)."""
    from kickit.bridge.control import Controller

    ctl = Controller(engine, midimap)
    engine.wait_ready(600.0)
    played: list[int] = []
    engine.add_trigger_listener(lambda _pad, hit, _gain: played.append(hit.shape[1]))
    end = events[-1][0] + 1 if events else 0
    hit_len = max((r[0].shape[1] for r in engine.ready if r is not None), default=0)
    total = end + (hit_len if tail else 0) + block
    n_blocks = (total + block - 1) // block
    out = np.zeros((n_blocks * block, 2), dtype=np.float32)
    i = 0
    for b in range(n_blocks):
        b0 = b * block
        while i < len(events) and events[i][0] < b0 + block:
            sample, msg = events[i]
            action = midimap.map(msg)
            if action is not None:
                if action.kind == "trigger":
                    start = max(b0, sample)
                    if engine.note_on(action.pad, action.value, offset=start - b0, wait=True):
                        end = max(end, start + (played[-1] if tail else 0))
                else:
                    ctl.handle(action)
            i += 1
        engine.process(out[b0:b0 + block])
    # the file ends where the last hit ends (hits are one-shots of fixed length)
    return np.ascontiguousarray(out.T[:, :end])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--midi", type=Path, required=True, help="MIDI file to render")
    p.add_argument("-o", "--output", type=Path, required=True, help="output WAV file")
    p.add_argument("--model", type=Path, help="model file (default: the shipped kick-v1.onnx)")
    p.add_argument("--preset", type=Path, help="preset JSON (pads' latents, modes, knobs)")
    p.add_argument("--pads", default="36-51", help="MIDI notes of pads 0..15 (default 36-51)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pads' latents (default 0)")
    p.add_argument("--rate", type=int, help="output sample rate (default: the model's)")
    p.add_argument("--voices", type=int, default=16, help="polyphony (default 16)")
    p.add_argument("--choke", action="store_true", help="a new hit on a pad fades out that pad's previous one")
    p.add_argument("--velocity-layers", type=int, default=1, help="velocity layers (as in kickit bridge)")
    p.add_argument("--velocity-knob", type=int, default=0, help="knob the velocity layers follow (0..7)")
    p.add_argument("--float", action="store_true", help="write 32-bit float WAV (default 24-bit PCM)")


def run(args: argparse.Namespace) -> int:
    from kickit.bridge.presets import PresetError
    from kickit.bridge.source import ModelSource

    from kickit.audio import AudioError, write_wav
    from kickit.modelfile import ModelError, default_model_path

    model = args.model or default_model_path()
    if model is None:
        print("kickit render: no model given and the default model (kick-v1.onnx) is not installed; "
              "pass one with --model FILE.onnx", file=sys.stderr)
        return 2
    if args.rate is not None and not 8000 <= args.rate <= 192000:
        print(f"kickit render: --rate {args.rate}: must be 8000..192000", file=sys.stderr)
        return 2
    try:
        pad_map = PadMap(parse_pad_notes(args.pads))
        source = ModelSource.open(model, args.rate)
        events = read_midi_events(args.midi, source.rate)
        engine = Engine(source, EngineConfig(seed=args.seed, voices=args.voices, choke=args.choke,
                                             velocity_layers=args.velocity_layers,
                                             velocity_knob=args.velocity_knob), pad_map)
        if args.preset is not None:
            for w in engine.load_preset(args.preset):
                print(f"kickit render: warning: {w}", file=sys.stderr)
        audio = render_events(engine, MidiMap(pad_map), events)
        write_wav(args.output, audio, source.rate, subtype="FLOAT" if args.float else "PCM_24")
    except (ModelError, PresetError, MidiFileError, AudioError, ValueError) as e:
        print(f"kickit render: {e}", file=sys.stderr)
        return 2
    notes = engine.mixer.notes_started
    print(f"kickit render: {args.output} ({audio.shape[1] / source.rate:.2f} s, {notes} hits, "
          f"{source.rate} Hz)")
    return 0
