"""``kickit bridge``: play generated stereo kicks live from MIDI pads and OSC knobs (docs/bridge.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from kickit.bridge.midi_in import APIS, MidiError
from kickit.bridge.osc_server import OscError
from kickit.bridge.outputs import OutputError
from kickit.bridge.presets import PresetError

log = logging.getLogger("kickit.bridge")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model file (default: the shipped kick-v1.onnx)")
    p.add_argument("--midi-in", default="virtual", metavar="NAME|virtual",
                   help="MIDI input port name (substring ok) or 'virtual' for a virtual port named kickit "
                        "(default); 'none' for no MIDI")
    p.add_argument("--midi-api", default="auto", choices=["auto", *APIS], help="MIDI system (default: auto)")
    p.add_argument("--osc-port", type=int, default=9000, help="OSC UDP port (default 9000; 0 = off)")
    p.add_argument("--osc-host", default="127.0.0.1", help="OSC listen address (default 127.0.0.1)")
    p.add_argument("--device", help="audio output device name (substring ok; default: the system default)")
    p.add_argument("--block", type=int, default=128, help="audio block size in frames (default 128)")
    p.add_argument("--pads", default="36-51", help="MIDI notes of pads 0..15, e.g. 36-51 (default)")
    p.add_argument("--group", action="append", default=[], metavar="NAME=MODEL:NOTES",
                   help="a pad group with its own model, e.g. snare=snare-v1.onnx:40-43 (the pads of MIDI notes "
                        "40..43 play snare-v1.onnx with its own knobs); repeatable")
    p.add_argument("--preset", type=Path, help="preset JSON to start from")
    p.add_argument("--out-dir", type=Path, default=Path("kickit-hits"),
                   help="where hits go as WAV files when there is no audio device (default ./kickit-hits)")
    p.add_argument("--files", action="store_true", help="write hits to --out-dir even if an audio device exists")
    p.add_argument("--daw", nargs="?", const=Path("kickit-daw"), type=Path, metavar="DIR",
                   help="DAW mode (Ableton/Max for Live): pad hits as WAV files in DIR, announced over OSC")
    p.add_argument("--seed", type=int, default=0, help="seed of the pads' latents (default 0)")
    p.add_argument("--voices", type=int, default=16, help="polyphony (default 16; the oldest voice is stolen)")
    p.add_argument("--choke", action="store_true", help="a new hit on a pad fades out that pad's previous one")
    p.add_argument("--fresh-queue", type=int, default=3, help="pre-rendered variations per fresh pad (default 3)")
    p.add_argument("--velocity-layers", type=int, default=1,
                   help="pre-rendered velocity layers per pad (timbre follows velocity; default 1 = gain only)")
    p.add_argument("--velocity-knob", type=int, default=0, help="knob whose direction the layers follow (0..7)")
    p.add_argument("--render-processes", type=int, default=2,
                   help="with an audio device, render in this many helper processes so rendering never "
                        "delays the audio thread (default 2; 0 = threads in the bridge process)")
    p.add_argument("--no-audio-process", dest="audio_process", action="store_false",
                   help="run the audio callback in the bridge's own process (default: a process of its own, so "
                        "no other bridge thread can hold the interpreter lock it needs)")


_RANGES = (  # (option, low, high, unit)
    ("block", 16, 8192, " frames"),
    ("osc_port", 0, 65535, ""),
    ("voices", 1, 256, ""),
    ("velocity_layers", 1, 8, ""),
    ("velocity_knob", 0, 7, ""),
    ("render_processes", 0, 8, ""),
    ("fresh_queue", 0, 32, ""),
)


def _check(args: argparse.Namespace) -> str | None:
    for name, lo, hi, unit in _RANGES:
        value = getattr(args, name)
        if not lo <= value <= hi:
            return f"--{name.replace('_', '-')} {value}: must be {lo}..{hi}{unit}"
    return None


def run(args: argparse.Namespace) -> int:
    from kickit.bridge.app import Bridge, BridgeOptions
    from kickit.bridge.groups import parse_group
    from kickit.bridge.memory import limit_arenas, settle
    from kickit.bridge.renderpool import RenderProcessError
    from kickit.bridge.status import StatusPanel

    from kickit.modelfile import ModelError, default_model_path

    limit_arenas()  # hours of renders without resident-memory creep (kickit.bridge.memory)
    err = _check(args)
    if err:
        print(f"kickit bridge: {err}", file=sys.stderr)
        return 2
    model = args.model or default_model_path()
    if model is None:
        print("kickit bridge: no model given and the default model (kick-v1.onnx) is not installed; "
              "pass one with --model FILE.onnx", file=sys.stderr)
        return 2
    try:
        groups = [parse_group(g) for g in args.group]
    except ValueError as e:
        print(f"kickit bridge: --group {e}", file=sys.stderr)
        return 2
    output = "daw" if args.daw is not None else ("files" if args.files else "auto")
    opts = BridgeOptions(
        model=Path(model), midi_in=None if args.midi_in == "none" else args.midi_in, midi_api=args.midi_api,
        osc_host=args.osc_host, osc_port=args.osc_port or None, device=args.device, block=args.block,
        pads=args.pads, preset=args.preset, out_dir=args.out_dir, output=output, daw_dir=args.daw,
        seed=args.seed, voices=args.voices, choke=args.choke, fresh_queue=args.fresh_queue,
        velocity_layers=args.velocity_layers, velocity_knob=args.velocity_knob,
        render_processes=args.render_processes, audio_process=args.audio_process, groups=groups,
    )
    try:
        bridge = Bridge(opts)
        models = ", ".join([opts.model.name] + [f"{g.name}: {g.model.name}" for g in groups])
        print(f"kickit bridge: rendering 16 pads with {models} ...", file=sys.stderr)
        bridge.start()
    except (ModelError, PresetError, OutputError, MidiError, OscError, RenderProcessError, ValueError) as e:
        print(f"kickit bridge: {e}", file=sys.stderr)
        return 2
    settle()  # the start-up objects are out of the garbage collector's reach (kickit.bridge.memory)
    for note in bridge.notes:
        print(f"kickit bridge: {note}", file=sys.stderr)
    s = bridge.status()
    print(f"kickit bridge: playing to {s['output']}; MIDI {s['midi']}; OSC {s['osc']}. Ctrl-C to quit.",
          file=sys.stderr)
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        done.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    panel = StatusPanel(bridge.status)
    panel.start()
    try:
        while not done.wait(0.25):
            pass
    finally:
        panel.stop()
        for sig, h in old.items():
            signal.signal(sig, h)
        bridge.stop()
    print("kickit bridge: stopped", file=sys.stderr)
    return 0
