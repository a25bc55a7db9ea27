"""MIDI input through mido + python-rtmidi: a named port or a virtual port, reopened when it comes back.

Events are read from rtmidi's own bounded queue by a thread of the bridge every :data:`POLL_INTERVAL`, not
through an rtmidi callback: with JACK, rtmidi calls back from the JACK client's real-time process thread, and
a Python callback there has to take the bridge's GIL first - when another bridge thread holds it, the
callback finishes late and the JACK server flags an xrun for the whole graph (seen in its own xrun reports,
``kickit bench latency``). Read from the queue, the process thread runs no Python: a note costs at most one
poll interval of latency (the audio block that plays it usually starts later anyway).

The OS specifics live here (:func:`choose_api`): Linux has ALSA and JACK (use what is there, or what
``--midi-api`` asks for), macOS CoreMIDI (virtual ports work; or the IAC driver), Windows WinMM (no virtual
ports: connect through a loopback driver such as loopMIDI and name its port).
"""

from __future__ import annotations

import logging
import os
import re
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


_LENGTHS = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}  # channel messages, by status
_COMMON = {0xF1: 2, 0xF2: 3, 0xF3: 2, 0xF6: 1}  # system common messages
MAX_SYSEX = 4096  # bytes; a longer system exclusive message is discarded (counted)
OPEN_SETTLE = 0.1  # seconds after connecting a named port before it counts as open
POLL_INTERVAL = 0.001  # seconds between reads of rtmidi's queue when it was empty
QUEUE_LIMIT = 4096  # events rtmidi keeps for the reader (a burst beyond it is dropped by rtmidi)
READ_BATCH = 256  # events read under the port lock at once (a close never waits for a whole flood)


class MidiStream:
    """MIDI bytes as they arrive (one driver event at a time) -> complete messages; pure logic.

    Handles what a raw byte stream can hold and :func:`mido.Message.from_bytes` refuses: running status
    (data bytes after a channel message repeat its status, also across events), several messages in one event,
    real-time bytes anywhere (ignored: the bridge has no use for clock or transport), system exclusive split
    over events (counted in ``sysex`` and never passed on; over :data:`MAX_SYSEX` bytes also counted in
    ``dropped``). A partial message cut by a new status byte, a stray data byte or an undefined status is
    dropped and counted; nothing here ever raises or grows without bound.
    """

    def __init__(self, max_sysex: int = MAX_SYSEX) -> None:
        self.max_sysex = max_sysex
        self.running: int | None = None
        self.pending: list[int] = []
        self.need = 0
        self.sysex_len: int | None = None  # bytes of the system exclusive message being received
        self.sysex = 0
        self.dropped = 0

    def reset(self) -> None:
        """Forget a partial message and the running status (a reopened port starts a new stream)."""
        self.running, self.pending, self.sysex_len = None, [], None

    def _status(self, b: int) -> None:
        if self.pending:
            self.dropped += 1  # cut short by a new status byte
        self.pending = []
        if self.sysex_len is not None:  # a status byte ends an unterminated system exclusive message
            self.sysex_len = None
            self.dropped += 1
        if b < 0xF0:
            self.running, self.pending, self.need = b, [b], _LENGTHS[b & 0xF0]
        elif b == 0xF0:
            self.running, self.sysex_len = None, 0
        elif b in _COMMON:
            self.running, self.pending, self.need = None, [b], _COMMON[b]
        else:  # 0xF4, 0xF5 (undefined), a lone 0xF7
            self.running = None
            self.dropped += 1

    def feed(self, data: bytes | list[int]) -> list[bytes]:
        buf = _as_bytes(data)
        out: list[bytes] = []
        i, n = 0, len(buf)
        while i < n:
            if self.sysex_len is not None:  # skip the data bytes of a system exclusive message in one search
                m = _STATUS_BYTE.search(buf, i)
                end = n if m is None else m.start()
                self.sysex_len += end - i
                if m is None:
                    break
                i = end
            b = buf[i]
            i += 1
            if b >= 0xF8:  # real time: may appear anywhere, changes nothing
                continue
            if b == 0xF7 and self.sysex_len is not None:
                if self.sysex_len > self.max_sysex:
                    self.dropped += 1
                self.sysex += 1
                self.sysex_len = None
                continue
            if b >= 0x80:
                self._status(b)
            elif self.pending:
                self.pending.append(b)
            elif self.running is not None:
                self.pending = [self.running, b]
                self.need = _LENGTHS[self.running & 0xF0]
            else:
                self.dropped += 1  # a data byte with no status to belong to
                continue
            if self.pending and len(self.pending) == self.need:
                out.append(bytes(self.pending))
                self.pending = []
        return out


_STATUS_BYTE = re.compile(rb"[\x80-\xff]")


def _as_bytes(data: bytes | list[int]) -> bytes:
    """A driver event as bytes (python-rtmidi hands over a list of ints; anything over 255 keeps its low byte)."""
    if isinstance(data, bytes):
        return data
    try:
        return bytes(data)
    except ValueError:
        return bytes(int(b) & 0xFF for b in data)


class MidiInput:
    """Opens the port, calls ``handler(message, perf_counter() when read)`` from its reader thread (module doc),
    and watches a named port: when it disappears it is closed and reopened as soon as it is back."""

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
        self.received = 0  # complete messages passed to the handler
        self.stream = MidiStream()
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._port_lock = threading.Lock()  # the reader uses the port only under it; a close takes it away

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            batch = []
            with self._port_lock:
                port = self.port
                while port is not None and len(batch) < READ_BATCH:
                    try:
                        event = port.get_message()
                    except Exception:  # a port failing under the reader: the watch reopens it
                        self.errors += 1
                        break
                    if event is None:
                        break
                    batch.append(event)
            for event in batch:
                self._raw(event)
            if not batch:
                time.sleep(POLL_INTERVAL)

    def _raw(self, event: Any, _data: Any = None) -> None:
        """One event from rtmidi's queue: (bytes of one driver event, delta time)."""
        stamp = time.perf_counter()
        try:
            messages = self.stream.feed(event[0])
        except Exception:  # defensive: nothing a device sends may stop rtmidi's thread
            self.errors += 1
            return
        import mido

        for raw in messages:
            try:
                msg = mido.Message.from_bytes(raw)
            except (ValueError, TypeError):
                self.stream.dropped += 1
                continue
            self._callback(msg, stamp)

    def _callback(self, msg: Any, stamp: float | None = None) -> None:
        stamp = time.perf_counter() if stamp is None else stamp
        self.received += 1
        try:
            self.handler(msg, stamp)
        except Exception:  # a bad message or handler bug must not kill rtmidi's thread
            self.errors += 1
            log.exception("MIDI handler failed on %s", msg)

    def counters(self) -> dict[str, Any]:
        return {"midi_received": self.received, "midi_sysex": self.stream.sysex, "midi_dropped": self.stream.dropped,
                "midi_errors": self.errors, "midi_reopens": self.reopens}

    def _rtmidi_in(self) -> Any:
        import rtmidi

        m = rtmidi.MidiIn(getattr(rtmidi, f"API_{self.api}"), name=self.client_name, queue_size_limit=QUEUE_LIMIT)
        m.ignore_types(sysex=False, timing=True, active_sense=True)  # sysex is counted (and skipped) here
        return m

    def input_names(self) -> list[str]:
        try:
            return list(self.backend.get_input_names())
        except Exception as e:
            log.debug("listing MIDI inputs failed: %s", e)
            return []

    def _open(self) -> bool:
        m = self._rtmidi_in()
        self.stream.reset()  # a reopened port starts a new byte stream (the counters go on)
        if self.virtual:
            m.open_virtual_port(self.client_name)
            name = self.client_name
        else:
            ports = list(m.get_ports())
            name = match_port(self.wanted, [n for n in ports if self.client_name not in n])
            if name is None:
                m.delete()
                return False
            m.open_port(ports.index(name))
            time.sleep(OPEN_SETTLE)  # the connection takes effect in a later cycle of the MIDI system
        with self._port_lock:
            self.port = m
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
        # a note read from the queue must get this process's GIL within a fraction of a period, not after the
        # default 5 ms that another thread (a finished render being handed over) may keep it
        from kickit.bridge.outputs import SWITCH_INTERVAL

        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._reader = threading.Thread(target=self._read_loop, name="kickit-midi-in", daemon=True)
        self._reader.start()
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
        with self._port_lock:  # the reader is not inside the port after this
            p, self.port = self.port, None
        if p is not None:
            try:
                p.delete()
            except Exception as e:
                log.debug("closing MIDI input: %s", e)

    def stop(self) -> None:
        self._stop.set()
        for t in (self._watch, self._reader):
            if t is not None:
                t.join(timeout=5)
        self._close()

    def describe(self) -> str:
        api = {v: k for k, v in APIS.items()}.get(self.api, self.api)
        if self.virtual:
            return f"virtual port {self.client_name!r} ({api})"
        state = self.port_name if self.port is not None else f"{self.wanted} (waiting)"
        return f"{state} ({api})"

