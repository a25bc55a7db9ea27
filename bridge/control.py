"""Applies actions from OSC and MIDI to the engine, including the ones that need files or replies:
model hot swap, presets, status, MIDI learn. Replies go through ``send(address, *args)`` (the OSC server's).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kickit.bridge.engine import Engine
from kickit.bridge.midimap import MidiMap
from kickit.bridge.oscmap import Action
from kickit.bridge.presets import PresetError
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
            self.load_model(action.value)
        elif k == "preset_save":
            try:
                path = self.engine.save_preset(action.value)
                log.info("preset saved to %s", path)
            except OSError as e:
                self._error(f"{action.value}: cannot save the preset ({e.strerror or e})")
        elif k == "preset_load":
            try:
                for w in self.engine.load_preset(action.value):
                    log.warning("%s", w)
                log.info("preset %s loaded", action.value)
            except PresetError as e:
                self._error(str(e))
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
        names = [k.name for k in self.engine.source.knobs][:8]
        return names + [f"knob {i + 1}" for i in range(len(names), 8)]

    def announce(self) -> None:
        """Knob names and model name to the registered client (on connect and after a model load)."""
        self.send("/kickit/knob/names", *self.knob_names())
        self.send("/kickit/model", self.engine.source.name)

    def load_model(self, path: str, block: bool = False) -> None:
        """Validate and render the new model in a thread; a bad file is refused and the old one keeps playing."""
        def work() -> None:
            try:
                source = self.open_source(path, self.engine.rate)
                self.engine.swap_source(source)
            except Exception as e:  # ModelError, render failure, rate mismatch: all refused the same way
                self.model_errors += 1
                self._error(f"model not loaded, keeping {self.engine.source.name}: {e}")
                return
            self.model_loads += 1
            log.info("model %s loaded (weights %s)", source.name, source.weights_hash[:12])
            self.announce()

        if self._loader is not None and self._loader.is_alive():
            self._error(f"{path}: a model is already loading; try again when it is done")
            return
        self._loader = threading.Thread(target=work, name="kickit-model-load", daemon=True)
        self._loader.start()
        if block:
            self._loader.join()

    def status(self) -> dict[str, Any]:
        s = self.engine.status()
        s["model_loads"] = self.model_loads
        s["model_errors"] = self.model_errors
        s["last_error"] = self.last_error
        s["knob_ccs"] = list(self.midimap.knob_ccs)
        s.update(self.extra_status())
        return s

    def log_drop(self, address: str, reason: str) -> None:
        self._limited.warning("OSC %s dropped: %s", address, reason)


def resolve(path: str, base: Path | None = None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p
