"""Assembles a running bridge: model -> engine -> output sink, MIDI input, OSC server. Used by
``kickit bridge``, the latency benchmark and the end-to-end tests (all in-process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kickit.bridge import memory
from kickit.bridge.audioproc import AudioProcessSink
from kickit.bridge.control import Controller
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.groups import GroupSpec, check_groups
from kickit.bridge.midi_in import MidiError, MidiInput
from kickit.bridge.midimap import MidiMap
from kickit.bridge.osc_server import OscServer
from kickit.bridge.outputs import DeviceSink, FileSink, OutputError, Sink
from kickit.bridge.pads import PadMap, parse_pad_notes
from kickit.bridge.renderpool import ProcessSource
from kickit.bridge.source import ModelSource

log = logging.getLogger("kickit.bridge")


@dataclass
class BridgeOptions:
    model: Path
    midi_in: str | None = "virtual"  # None: no MIDI input
    midi_api: str = "auto"
    osc_host: str = "127.0.0.1"
    osc_port: int | None = 9000  # None: no OSC server; 0: any free port
    device: str | None = None
    block: int = 128
    pads: str = "36-51"
    preset: Path | None = None
    out_dir: Path = Path("kickit-hits")
    output: str = "auto"  # auto (device, else files) | device | files | daw
    daw_dir: Path | None = None
    seed: int = 0
    voices: int = 16
    choke: bool = False
    fresh_queue: int = 3
    velocity_layers: int = 1
    velocity_knob: int = 0
    velocity_amount: float = 0.5
    midi_client_name: str = "kickit"
    render_processes: int = 2  # with an audio device: render in this many child processes (0: threads)
    audio_process: bool = True  # with an audio device: the callback in its own process (bridge/audioproc.py)
    groups: list[GroupSpec] = field(default_factory=list)  # pad groups with their own model (docs/bridge.md)


class Bridge:
    def __init__(self, opts: BridgeOptions) -> None:
        self.opts = opts
        self.sink: Sink | None = None
        self.midi: MidiInput | None = None
        self.osc: OscServer | None = None
        self.notes: list[str] = []  # what the user should know (fallbacks), printed by the CLI
        pad_map = PadMap(parse_pad_notes(opts.pads))

        rate: int | None = None
        self.output = opts.output
        if opts.output in ("auto", "device"):
            try:
                rate = DeviceSink.probe_rate(opts.device)
                self.output = "device"
            except OutputError as e:
                if opts.output == "device":
                    raise
                self.notes.append(f"{e}; writing each hit as a WAV file to {opts.out_dir} instead")
                self.output = "files"
        # with an audio device, render in child processes: the audio callback's process never waits for a
        # render thread's GIL (bridge/renderpool.py)
        self.render_processes = opts.render_processes if self.output == "device" else 0
        if self.render_processes:
            procs = self.render_processes
            self.open_source = lambda path, r: ProcessSource.open(path, r, procs)
        else:
            self.open_source = ModelSource.open
            memory.fill_numpy_cache()  # renders in this process: numpy's cache full now (kickit.bridge.memory)
        source = self.open_source(opts.model, rate)
        cfg = EngineConfig(seed=opts.seed, voices=opts.voices, choke=opts.choke, fresh_queue=opts.fresh_queue,
                           velocity_layers=opts.velocity_layers, velocity_knob=opts.velocity_knob,
                           velocity_amount=opts.velocity_amount, max_block=max(8192, opts.block),
                           render_threads=max(1, self.render_processes or 2))
        self.engine = Engine(source, cfg, pad_map)
        self.controller = Controller(self.engine, MidiMap(pad_map), extra_status=self._extra_status,
                                     open_source=self.open_source)
        try:
            for spec, pads in zip(opts.groups, check_groups(opts.groups, pad_map), strict=True):
                self.controller.add_group(spec.name, pads, spec.model)
            if opts.preset is not None:
                self.notes.extend(self.controller.preset_groups(opts.preset))
                self.notes.extend(self.engine.load_preset(opts.preset))
        except BaseException:
            self._close_sources()
            raise

    def _close_sources(self) -> None:
        for src in [self.engine.source, *self.engine.group_sources]:
            close = getattr(src, "close", None)
            if close is not None:
                close()

    def _make_sink(self) -> Sink:
        if self.output == "device":
            if self.opts.audio_process:
                return AudioProcessSink(self.engine, self.opts.device, self.opts.block)
            return DeviceSink(self.engine, self.opts.device, self.opts.block)
        if self.output == "daw":
            try:
                from kickit.bridge import daw
            except ImportError as e:
                raise OutputError(f"DAW mode is not available in this install ({e})") from None
            return daw.make_sink(self.engine, self.opts.daw_dir, self.controller)
        return FileSink(self.engine, self.opts.out_dir)

    def start(self, wait: float = 120.0) -> None:
        """Render every pad, then open the output, the OSC server and the MIDI input."""
        self.engine.start()
        if not self.engine.wait_ready(wait):
            log.warning("pads not all rendered after %.0f s; starting anyway", wait)
        try:
            self.sink = self._make_sink()
            self.sink.start()
            if self.opts.osc_port is not None:
                self.osc = OscServer(self.controller, self.opts.osc_host, self.opts.osc_port)
                self.osc.start()
            if self.opts.midi_in is not None:
                try:
                    self.midi = MidiInput(self.opts.midi_in, self.controller.on_midi, self.opts.midi_api,
                                          client_name=self.opts.midi_client_name)
                    self.midi.start()
                except MidiError as e:
                    self.midi = None
                    if self.opts.midi_api != "auto" or self.opts.midi_in != "virtual":
                        raise
                    self.notes.append(f"{e}; MIDI input off (OSC still works)")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for part in (self.midi, self.osc, self.sink):
            if part is not None:
                try:
                    part.stop()
                except Exception as e:
                    log.debug("stopping %s: %s", type(part).__name__, e)
        self.midi = self.osc = self.sink = None
        self.engine.stop()
        self._close_sources()

    def _extra_status(self) -> dict[str, Any]:
        s: dict[str, Any] = {"output": self.sink.describe() if self.sink else "-",
                             "midi": self.midi.describe() if self.midi else "off",
                             "osc": f"{self.opts.osc_host}:{self.osc.port}" if self.osc else "off"}
        if self.sink is not None:
            s.update(self.sink.counters())
        if self.osc is not None:
            s.update(self.osc.counters())
        if self.midi is not None:
            s.update(self.midi.counters())
        return s

    def status(self) -> dict[str, Any]:
        return self.controller.status()
