"""Applies actions from OSC and MIDI to the engine, including the ones that need files or replies:
model hot swap (per pad group), presets, encoding a user's sample onto a pad, status, MIDI learn. Replies go
through ``send(address, *args)`` (the OSC server's).

Slow work never runs on the OSC/MIDI thread: model loads run in a loader thread, encodes (kickit.encode: a
search through the model for GANs, about a minute for the shipped model) in one encode worker, in order.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kickit.bridge import memory
from kickit.bridge.engine import Engine
from kickit.bridge.midimap import MidiMap
from kickit.bridge.oscmap import Action
from kickit.bridge.presets import PresetError, load_preset
from kickit.bridge.source import ModelSource

log = logging.getLogger("kickit.bridge")

Send = Callable[..., None]


class RateLimitedLog:
    """At most one log line per ``interval`` seconds; the next line says how many were suppressed."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = -1e9
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, fmt: str, *args: Any) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._suppressed += 1
                return False
            n, self._suppressed, self._last = self._suppressed, 0, now
        log.warning(fmt + (f" (+{n} more suppressed)" if n else ""), *args)
        return True


class Controller:
    def __init__(self, engine: Engine, midimap: MidiMap | None = None, send: Send | None = None,
                 extra_status: Callable[[], dict[str, Any]] | None = None,
                 open_source: Callable[[str, int], Any] | None = None) -> None:
        self.engine = engine
        self.open_source = open_source or ModelSource.open  # (path, rate) -> a HitSource; raises on a bad file
        self.midimap = midimap or MidiMap(engine.pad_map)
        self.send: Send = send or (lambda *a: None)
        self.extra_status = extra_status or (lambda: {})
        self.model_loads = 0
        self.model_errors = 0
        self.last_error: str | None = None
        self._loader: threading.Thread | None = None
        self._limited = RateLimitedLog()
        self.encodes = 0
        self.encode_errors = 0
        self.last_encode: dict[str, Any] | None = None
        self.encode_budget = 60.0  # seconds a latent search may take (kickit.encode)
        self._encode_q: queue.Queue[tuple[int, str, threading.Event]] = queue.Queue()
        self._encoder: threading.Thread | None = None
        self._encode_lock = threading.Lock()

    # ----- MIDI ---------------------------------------------------------------------------------
    def on_midi(self, msg: Any, stamp: float) -> None:
        action = self.midimap.map(msg)
        if action is not None:
            self.handle(action, stamp)

    # ----- everything ---------------------------------------------------------------------------
    def handle(self, action: Action, stamp: float | None = None) -> None:
        if self.engine.apply(action, stamp):
            return
        k = action.kind
        if k == "model_load":
            self.load_model(action.value, group=action.index or 0)
        elif k == "encode":
            self.encode_pad(action.pad, action.value)
        elif k == "preset_save":
            try:
                path = self.engine.save_preset(action.value)
                log.info("preset saved to %s", path)
            except OSError as e:
                self._error(f"{action.value}: cannot save the preset ({e.strerror or e})")
        elif k == "preset_load":
            self.load_preset(action.value)
        elif k == "status":
            self.send("/kickit/status", json.dumps(self.status()))
        elif k == "learn":
            self.midimap.learn(action.index)
            log.info("MIDI learn: move a controller for knob %d", action.index)
        elif k == "learned":
            log.info("MIDI learn: CC %d -> knob %d", action.value, action.index)
        elif k == "connect":
            pass  # handled by the OSC server (it owns the reply address)
        else:
            self._error(f"unhandled action {k!r}")

    def _error(self, text: str) -> None:
        self.last_error = text
        log.error("%s", text)

    def knob_names(self) -> list[str]:
        """The selected pad's model's knob names (its pad group's), padded to 8."""
        names = [k.name for k in self.engine.source_of(self.engine.selected).knobs][:8]
        return names + [f"knob {i + 1}" for i in range(len(names), 8)]

    def announce(self) -> None:
        """Knob names and model name to the registered client (on connect and after a model load)."""
        self.send("/kickit/knob/names", *self.knob_names())
        self.send("/kickit/model", self.engine.source.name)

    def load_model(self, path: str, block: bool = False, group: int | str = 0) -> None:
        """Validate and render the new model for a pad group (default: the main one) in a thread; a bad file
        is refused and the old one keeps playing; the other groups are not touched."""
        def work() -> None:
            try:
                g = self.engine.group_index(group)
                keeping = self.engine.groups()[g]["model"]
            except ValueError as e:
                self.model_errors += 1
                self._error(f"{path}: model not loaded: {e}")
                return
            try:
                source = self.open_source(path, self.engine.rate)
                self.engine.swap_source(source, g)
            except Exception as e:  # ModelError, render failure, rate mismatch: all refused the same way
                self.model_errors += 1
                self._error(f"model not loaded, keeping {keeping}: {e}")
                return
            self.model_loads += 1
            memory.settle(collect=False)  # the new model's objects too (kickit.bridge.memory)
            log.info("model %s loaded for pad group %s (weights %s)", source.name, self.engine.group_names[g],
                     source.weights_hash[:12])
            self.announce()

        self._start_loader(work, path, block)

    def _start_loader(self, work: Callable[[], None], path: str, block: bool) -> None:
        if self._loader is not None and self._loader.is_alive():
            self._error(f"{path}: a model is already loading; try again when it is done")
            return
        self._loader = threading.Thread(target=work, name="kickit-model-load", daemon=True)
        self._loader.start()
        if block:
            self._loader.join()

    def add_group(self, name: str, pads: list[int], path: str | Path) -> None:
        """Open a model for a new pad group and install it (synchronous; raises on a bad file)."""
        source = self.open_source(str(path), self.engine.rate)
        try:
            self.engine.add_group(name, pads, source)
        except BaseException:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            raise

    def preset_groups(self, path: str | Path) -> list[str]:
        """Open the pad groups a preset names that the engine does not have yet (raises PresetError)."""
        preset = load_preset(path, None)
        notes = []
        for g in preset.groups:
            if g.name in self.engine.group_names:
                continue
            if not g.model_path:
                raise PresetError(path, f"pad group {g.name} needs its model ({g.model_name}) but the preset "
                                        "has no model path")
            try:
                self.add_group(g.name, g.pads, resolve(g.model_path, Path(path).parent))
            except Exception as e:
                raise PresetError(path, f"pad group {g.name}: {e}") from None
            notes.append(f"pad group {g.name} plays {g.model_name} on pads {g.pads}")
        return notes

    def load_preset(self, path: str, block: bool = False) -> None:
        """Load a preset; one that names new pad groups opens their models in the loader thread first."""
        def apply() -> None:
            try:
                for w in self.preset_groups(path) + self.engine.load_preset(path):
                    log.warning("%s", w)
                log.info("preset %s loaded", path)
            except PresetError as e:
                self._error(str(e))

        try:
            preset = load_preset(path, None)
        except PresetError as e:
            self._error(str(e))
            return
        if all(g.name in self.engine.group_names for g in preset.groups):
            apply()  # no model to open: fast, right here
        else:
            self._start_loader(apply, path, block)

    # ----- encode a user's sample onto a pad -------------------------------------------------------
    def encode_pad(self, pad: int, path: str, block: bool = False) -> None:
        """Queue: load ``path``, encode it with the pad's model (kickit.encode), put the latent on the pad
        (knobs 0). Runs in the encode worker; a bad file is counted and logged, the pad keeps its sound."""
        done = threading.Event()
        with self._encode_lock:
            self._encode_q.put((pad, path, done))
            if self._encoder is None:
                self._encoder = threading.Thread(target=self._encode_loop, name="kickit-encode", daemon=True)
                self._encoder.start()
        if block:
            done.wait()

    def _encode_loop(self) -> None:
        while True:
            try:
                pad, path, done = self._encode_q.get(timeout=5.0)
            except queue.Empty:
                with self._encode_lock:  # idle: stop, unless a request arrived just now
                    if self._encode_q.empty():
                        self._encoder = None
                        return
                continue
            try:
                self._encode_one(pad, path)
            except Exception as e:  # never let the worker die on one request
                self.encode_errors += 1
                self._error(f"{path}: encode onto pad {pad} failed ({type(e).__name__}: {e})")
            finally:
                done.set()

    def _encode_one(self, pad: int, path: str) -> None:
        from kickit.audio import AudioError, load_hit
        from kickit.encode import EncodeError, encode_hit

        source = self.engine.source_of(pad)
        model = getattr(source, "model", None)
        if model is None:
            self.encode_errors += 1
            self._error(f"{path}: pad {pad}'s model source cannot encode samples")
            return
        try:
            audio = load_hit(resolve(path), model.contract)
            z, info = encode_hit(model, audio, time_budget=self.encode_budget)
        except (AudioError, EncodeError) as e:
            self.encode_errors += 1
            self._error(f"encode onto pad {pad} dropped, the pad keeps its sound: {e}")
            return
        if self.engine.source_of(pad) is not source:
            self.encode_errors += 1
            self._error(f"{path}: pad {pad}'s model changed while encoding; encode it again")
            return
        self.engine.set_latent(pad, z)
        self.encodes += 1
        self.last_encode = {"pad": pad, "file": str(path), **info.to_dict()}
        log.info("pad %d: %s encoded (%s, spectral distance %.4f, %.1f s)", pad, Path(path).name, info.method,
                 info.distance, info.seconds)

    def status(self) -> dict[str, Any]:
        s = self.engine.status()
        s["model_loads"] = self.model_loads
        s["model_errors"] = self.model_errors
        s["last_error"] = self.last_error
        s["encodes"] = self.encodes
        s["encode_errors"] = self.encode_errors
        s["last_encode"] = self.last_encode
        s["knob_ccs"] = list(self.midimap.knob_ccs)
        s.update(self.extra_status())
        return s

    def log_drop(self, address: str, reason: str) -> None:
        self._limited.warning("OSC %s dropped: %s", address, reason)


def resolve(path: str, base: Path | None = None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p
