"""MIDI input through mido + python-rtmidi: a named port or a virtual port, reopened when it comes back.

The OS specifics live here (:func:`choose_api`): Linux has ALSA and JACK (use what is there, or what
``--midi-api`` asks for), macOS CoreMIDI (virtual ports work; or the IAC driver), Windows WinMM (no virtual
ports: connect through a loopback driver such as loopMIDI and name its port).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kickit.bridge")

# --midi-api value -> python-rtmidi API name (mido backend suffix)
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
VIRTUAL = "virtual"
DEFAULT_VIRTUAL_NAME = "kickit"

Handler = Callable[[Any, float], None]


class MidiError(RuntimeError):
    """MIDI input unusable (one line: which API/port and why)."""


def _compiled() -> list[str]:
    import rtmidi

    return [rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()]


def _api_works(api: str) -> bool:
    import rtmidi

    try:
        m = rtmidi.MidiIn(getattr(rtmidi, f"API_{api}"), name="kickit-probe")
    except Exception:
        return False
    try:
        m.get_port_count()
        return True
    except Exception:
        return False
    finally:
        m.delete()


def choose_api(requested: str = "auto", platform: str | None = None) -> str:
    """The rtmidi API to use ("LINUX_ALSA", "UNIX_JACK", ...). ``auto``: the platform's native API; on Linux
    ALSA when its sequencer works, else JACK when a JACK server runs."""
    import rtmidi

    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # probing must never spawn a JACK server
    plat = platform or sys.platform
    compiled = {getattr(rtmidi, f"API_{v}", None): v for v in APIS.values()}
    available = [compiled[a] for a in rtmidi.get_compiled_api() if a in compiled]
    if requested != "auto":
        if requested not in APIS:
            raise MidiError(f"unknown MIDI API {requested!r} (choose auto, {', '.join(APIS)})")
        api = APIS[requested]
        if api not in available:
            raise MidiError(f"MIDI API {requested!r} is not compiled into python-rtmidi here "
                            f"(available: {', '.join(available) or 'none'})")
        if not _api_works(api):
            hint = " (is a JACK server running?)" if requested == "jack" else (
                " (no ALSA sequencer: is snd-seq loaded?)" if requested == "alsa" else "")
            raise MidiError(f"MIDI API {requested!r} does not work on this machine{hint}")
        return api
    if plat.startswith("linux"):
        order = ["LINUX_ALSA", "UNIX_JACK"]
    elif plat == "darwin":
        order = ["MACOSX_CORE", "UNIX_JACK"]
    elif plat.startswith("win"):
        order = ["WINDOWS_MM"]
    else:
        order = list(APIS.values())
    for api in order:
        if api in available and _api_works(api):
            return api
    raise MidiError("no working MIDI API (Linux: no ALSA sequencer and no JACK server; "
                    f"tried {', '.join(order)})")


def supports_virtual(api: str) -> bool:
    return api != "WINDOWS_MM"


def match_port(wanted: str, names: list[str]) -> str | None:
    """Exact name, else the first name containing ``wanted`` (case-insensitive; rtmidi adds client numbers)."""
    if wanted in names:
        return wanted
    low = wanted.lower()
    for n in names:
        if low in n.lower():
            return n
    return None


class MidiInput:
    """Opens the port, calls ``handler(message, arrival perf_counter())`` from rtmidi's thread, and watches a
    named port: when it disappears it is closed and reopened as soon as it is back."""

    def __init__(self, port: str, handler: Handler, api: str = "auto", client_name: str = DEFAULT_VIRTUAL_NAME,
                 poll: float = 1.0) -> None:
        self.wanted = port
        self.handler = handler
        self.api = choose_api(api)
        self.virtual = port == VIRTUAL
        self.client_name = client_name
        self.poll = poll
        if self.virtual and not supports_virtual(self.api):
            raise MidiError("virtual MIDI ports are not supported on Windows: install a loopback driver "
                            "(e.g. loopMIDI), create a port and pass its name with --midi-in")
        import mido

        self.backend = mido.Backend(f"mido.backends.rtmidi/{self.api}", load=True)
        self.port: Any = None
        self.port_name: str | None = None
        self.errors = 0
        self.reopens = 0
        self.received = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def _callback(self, msg: Any) -> None:
        stamp = time.perf_counter()
        self.received += 1
        try:
            self.handler(msg, stamp)
        except Exception:  # a bad message or handler bug must not kill rtmidi's thread
            self.errors += 1
            log.exception("MIDI handler failed on %s", msg)

    def input_names(self) -> list[str]:
        try:
            return list(self.backend.get_input_names())
        except Exception as e:
            log.debug("listing MIDI inputs failed: %s", e)
            return []

    def _open(self) -> bool:
        if self.virtual:
            self.port = self.backend.open_input(self.client_name, virtual=True, client_name=self.client_name,
                                                 callback=self._callback)
            self.port_name = self.client_name
            return True
        name = match_port(self.wanted, [n for n in self.input_names() if self.client_name not in n])
        if name is None:
            return False
        self.port = self.backend.open_input(name, callback=self._callback)
        self.port_name = name
        return True

    def start(self) -> None:
        try:
            ok = self._open()
        except Exception as e:
            raise MidiError(f"MIDI input {self.wanted!r} ({self.api}): cannot open ({e})") from None
        if not ok:
            names = ", ".join(repr(n) for n in self.input_names()) or "none"
            log.warning("MIDI input %r not found (inputs: %s); waiting for it to appear", self.wanted, names)
        if not self.virtual:
            self._watch = threading.Thread(target=self._watch_loop, name="kickit-midi-watch", daemon=True)
            self._watch.start()

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.poll):
            names = self.input_names()
            present = self.port_name is not None and self.port_name in names
            if self.port is not None and not present:
                log.warning("MIDI input %r disappeared; will reopen it when it comes back", self.port_name)
                self._close()
            if self.port is None:
                try:
                    if self._open():
                        self.reopens += 1
                        log.info("MIDI input %r opened", self.port_name)
                except Exception as e:
                    log.debug("reopening MIDI input failed: %s", e)

    def _close(self) -> None:
        p, self.port = self.port, None
        if p is not None:
            try:
                p.close()
            except Exception as e:
                log.debug("closing MIDI input: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self._close()

    def describe(self) -> str:
        api = {v: k for k, v in APIS.items()}.get(self.api, self.api)
        if self.virtual:
            return f"virtual port {self.client_name!r} ({api})"
        state = self.port_name if self.port is not None else f"{self.wanted} (waiting)"
        return f"{state} ({api})"

