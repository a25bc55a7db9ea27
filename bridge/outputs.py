"""Output sinks: where the engine's hits go. One interface, three kinds:

* :class:`DeviceSink` - an audio device through sounddevice/PortAudio; the callback only mixes
  (:meth:`kickit.bridge.engine.Engine.process`), counts xruns from the status flags, and a lost device is
  reopened by name while the engine keeps its state.
* :class:`FileSink` - no audio device: every triggered hit is written as a WAV file to a folder.
* the DAW mode (``kickit bridge --daw``, :mod:`kickit.bridge.daw`) plugs in the same way.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kickit.audio import write_wav

if TYPE_CHECKING:  # at run time the sinks only use the engine's attributes: the audio process (bridge/audioproc.py)
    from kickit.bridge.engine import Engine  # imports no model runtime

log = logging.getLogger("kickit.bridge")

SWITCH_INTERVAL = 0.0002  # seconds; see DeviceSink.start
JACK_CLIENT = "kickit-audio"  # the bridge's audio client in a JACK graph (PortAudio would call it "PortAudio")
_jack_names: dict[str, bytes] = {}  # PortAudio keeps the pointer: each name set stays alive here
_jack_name: list[str | None] = [None]  # the name this process asked for (a fresh PortAudio instance gets it too)


class OutputError(RuntimeError):
    """No usable output (one line, naming the device and what was wrong)."""


class Sink(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> str: ...

    def counters(self) -> dict[str, Any]: ...


def _sd():  # noqa: ANN202 - the sounddevice module, or OutputError when PortAudio is missing
    try:
        import sounddevice as sd
    except (OSError, ImportError) as e:
        raise OutputError(f"no audio output: PortAudio is not available ({e})") from None
    return sd


def host_wait(stream: Any, time_info: Any) -> float:
    """Seconds from the host API's call into the audio callback to now (its Python code running), on
    PortAudio's stream clock: the wait for the GIL and the interpreter; 0 for a host API without a usable clock."""
    invoked = time_info.currentTime
    if stream is None or invoked <= 0.0:
        return 0.0
    wait = stream.time - invoked
    return wait if 0.0 <= wait < 1.0 else 0.0


class CallbackTiming:
    """An audio callback's own share of its periods: the wait from the host API's call to its Python code (the
    GIL, held by another thread of the process) plus its run. A callback whose share exceeds its period is an
    xrun the process caused - unless the machine stopped it meanwhile: the last :data:`LOG` overruns are kept
    with their times (``perf_counter``, the system's monotonic clock) so that a benchmark can set them against
    the machine's own stalls measured over the same seconds (:mod:`kickit.bridge.stalls`)."""

    LOG = 32
    __slots__ = ("log", "max_s", "overruns", "overruns_waiting", "wait_max_s")

    def __init__(self) -> None:
        self.overruns = 0
        self.overruns_waiting = 0  # of them: the wait alone was a period or more (the Python code had not run)
        self.max_s = 0.0  # longest run, seconds
        self.wait_max_s = 0.0  # longest wait, seconds
        self.log = np.zeros((self.LOG, 3), dtype=np.float64)  # (end, wait, run) of recent overruns, a ring

    def record(self, wait: float, used: float, period_s: float, end: float = 0.0) -> None:
        """One callback: ``wait`` and ``used`` seconds, ending at ``end`` (perf_counter)."""
        if used > self.max_s:
            self.max_s = used
        if wait > self.wait_max_s:
            self.wait_max_s = wait
        if wait + used > period_s:
            self.log[self.overruns % self.LOG] = (end, wait, used)
            self.overruns += 1
            if wait >= period_s:
                self.overruns_waiting += 1

    def recent(self) -> list[list[float]]:
        """The last overruns as [end, wait, run] (seconds), oldest first."""
        return self.ordered(self.log, self.overruns)

    @classmethod
    def ordered(cls, log: np.ndarray, overruns: int) -> list[list[float]]:
        """A ring ``log`` (as :attr:`log`) after ``overruns`` overruns, oldest first."""
        n = min(overruns, cls.LOG)
        return [[float(x) for x in log[(overruns - n + k) % cls.LOG]] for k in range(n)]

    def counters(self) -> dict[str, Any]:
        return {"callback_overruns": self.overruns, "callback_overruns_waiting": self.overruns_waiting,
                "callback_max_ms": self.max_s * 1e3, "callback_wait_max_ms": self.wait_max_s * 1e3,
                "callback_overrun_log": self.recent()}


def rescan_devices() -> None:
    """Re-initialise PortAudio so devices (or a JACK server) that appeared since start-up are seen."""
    sd = _sd()
    try:
        sd._terminate()
        sd._initialize()
    except Exception as e:  # PortAudio errors while re-initialising: report on the next open
        log.debug("PortAudio re-init failed: %s", e)


def find_output_device(name: str | None) -> tuple[int, dict[str, Any]]:
    """The output device matching ``name`` (exact, else case-insensitive substring) or the default one."""
    sd = _sd()
    try:
        devices = list(sd.query_devices())
    except Exception as e:
        raise OutputError(f"no audio output: cannot list audio devices ({e})") from None
    outputs = [(i, d) for i, d in enumerate(devices) if d["max_output_channels"] >= 1]
    if not outputs:
        raise OutputError("no audio output device found (no sound card or audio server)")
    if name is None:
        try:
            idx = sd.default.device[1]
        except Exception:
            idx = -1
        for i, d in outputs:
            if i == idx:
                return i, dict(d)
        return outputs[0][0], dict(outputs[0][1])
    exact = [(i, d) for i, d in outputs if d["name"] == name]
    partial = [(i, d) for i, d in outputs if name.lower() in d["name"].lower()]
    found = exact or partial
    if not found:
        names = ", ".join(repr(d["name"]) for _, d in outputs)
        raise OutputError(f"audio device {name!r} not found (outputs: {names})")
    return found[0][0], dict(found[0][1])


def release_portaudio() -> None:
    """Terminate this process's PortAudio instance (sounddevice initialises it on import), so that it holds no
    client of the audio server: the bridge's process when the callback runs in a process of its own. A JACK
    server that dies later then leaves nothing here that PortAudio would fail to close at exit."""
    import sys as _sys

    sd = _sys.modules.get("sounddevice")
    if sd is None:
        return
    try:
        while getattr(sd, "_initialized", 0) > 0:
            sd._terminate()
    except Exception as e:
        log.debug("PortAudio terminate failed: %s", e)


def _guarded(fn: Callable[[], None], timeout: float) -> bool:
    """Run ``fn`` in a daemon thread; False if it did not return within ``timeout`` seconds."""
    t = threading.Thread(target=fn, name="kickit-portaudio", daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


def _disable_portaudio_exit_handler() -> None:
    """sounddevice terminates PortAudio at exit, which hangs forever on a stream PortAudio could not close."""
    import atexit

    sd = _sd()
    atexit.unregister(sd._exit_handler)


_abandoned: list[Any] = []  # streams of a PortAudio instance given up on: kept referenced, never called again
_generation = [0]  # bumped each time sounddevice is switched to a fresh PortAudio instance


def _portaudio_path() -> Path | None:
    """The file of the PortAudio library loaded in this process (from /proc/self/maps; Linux only). Copies
    loaded by :func:`fresh_portaudio` are deleted at once, so this is the original library file."""
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and "libportaudio" in Path(parts[5]).name:
                path = Path(parts[5].strip())
                if path.is_file():
                    return path
    except OSError:
        pass
    return None


def name_jack_client(name: str, library: str | None = None) -> bool:
    """Linux/JACK adapter: the name PortAudio's JACK host API gives its client from its next initialisation on
    (what JACK patchbays show, and what the JACK server names in its xrun reports). ``library``: the PortAudio
    file or soname (default: the one sounddevice loaded; loading it again by the same name reaches the same
    instance). False, and nothing changed, where that PortAudio has no JACK host API (the macOS and Windows
    builds) or cannot be loaded so."""
    import ctypes

    if library is None:
        library = getattr(_sd(), "_libname", None)
    if not library:
        return False
    try:
        setter = ctypes.CDLL(library).PaJack_SetClientName
    except (OSError, AttributeError):
        return False
    setter.argtypes, setter.restype = [ctypes.c_char_p], ctypes.c_int
    encoded = _jack_names.setdefault(name, name.encode())
    return setter(encoded) == 0


def use_jack_client_name(name: str) -> bool:
    """Give this process's PortAudio JACK client ``name`` now (re-initialising PortAudio when it runs a JACK
    host API, so the client is opened again under that name); False when there is no JACK host API."""
    sd = _sd()
    try:
        jack = any("JACK" in str(h.get("name", "")) for h in sd.query_hostapis())
    except Exception:
        jack = False
    if not jack or not name_jack_client(name):
        return False
    _jack_name[0] = name
    rescan_devices()
    return True


def fresh_portaudio(stale: Any) -> None:
    """Switch sounddevice to a new, independent PortAudio instance, abandoning ``stale`` (a stream) and the
    instance it belongs to.

    Why: when a JACK server dies under a running stream, PortAudio's JACK host API (pa_jack.c ``RealStop``)
    waits up to 10 minutes for a process cycle that never comes before it stops the stream, and
    ``Pa_Terminate`` stops every open stream first; so that instance can be neither closed nor re-initialised
    in time. A private copy of the library file loads as a separate instance (its own globals, its own JACK
    client), which sees the restarted server. Costs one abandoned instance (a few MB) per server death.
    Raises OutputError when this is not possible (no /proc, library not found).
    """
    import shutil
    import tempfile

    sd = _sd()
    src = _portaudio_path()
    if src is None or not src.is_file():
        raise OutputError("cannot locate the PortAudio library file to start a fresh instance")
    folder = Path(tempfile.mkdtemp(prefix="kickit-portaudio-"))
    copy = folder / f"libportaudio-{_generation[0] + 1}.so"
    try:
        shutil.copyfile(src, copy)
        if _jack_name[0]:  # loaded by this path first, the new instance opens its JACK client under that name
            name_jack_client(_jack_name[0], str(copy))
        lib = sd._ffi.dlopen(str(copy))
    except OSError as e:
        raise OutputError(f"cannot load a fresh PortAudio instance from {copy} ({e})") from None
    finally:
        copy.unlink(missing_ok=True)  # the mapping stays valid; nothing is left on disk
        shutil.rmtree(folder, ignore_errors=True)
    _abandoned.append((sd._lib, stale))
    _disable_portaudio_exit_handler()  # the old instance must never be terminated (it would hang)
    _generation[0] += 1
    sd._last_callback = None  # the exit handler would stop the stale stream through the new library
    sd._lib = lib
    sd._initialized = 0
    sd._initialize()


class DeviceSink:
    """Stereo float32 output stream whose callback mixes the engine's voices.

    ``jack_name``: the client's name when PortAudio plays through JACK (:func:`use_jack_client_name`).
    ``poll``: seconds between the device watch's checks that the stream still runs; None: the watch only
    wakes when PortAudio reports the stream finished or :meth:`check` (called by whoever notices the callback
    stopped) finds it inactive - so no thread of this process but the callback's runs while the device plays.
    """

    def __init__(self, engine: Engine, device: str | None = None, block: int = 128,
                 jack_name: str | None = JACK_CLIENT, poll: float | None = 0.5) -> None:
        if not 16 <= block <= engine.config.max_block:
            raise OutputError(f"block size {block} outside 16..{engine.config.max_block}")
        self.engine = engine
        self.device = device
        self.block = int(block)
        self.jack_name, self.poll = jack_name, poll
        self.latency_ms: float | None = None  # the open stream's output latency
        self.xruns = 0
        self.callbacks = 0
        self.callback_errors = 0  # exceptions caught in the callback outside the mixer (which counts its own)
        self.timing = CallbackTiming()  # the callback's own share of each period (overruns: the bridge's xruns)
        self.reconnects = 0
        self.device_name = "?"
        self.stream = None
        self._stopping = False
        self._monitor: threading.Thread | None = None
        self._lost = threading.Event()
        self._stuck = False
        self.error: str | None = None

    @staticmethod
    def probe_rate(device: str | None) -> int:
        """The device's sample rate (what hits must be rendered at); raises OutputError when none."""
        _i, info = find_output_device(device)
        return int(round(info["default_samplerate"]))

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        t0 = perf_counter()
        wait = 0.0
        try:
            if status:
                self.xruns += 1
            self.callbacks += 1
            wait = host_wait(self.stream, time_info)
            self.engine.process(outdata)
        except Exception:  # counted, never raised: an exception would stop the stream
            self.callback_errors += 1
            try:
                outdata.fill(0.0)
            except Exception:
                pass
        end = perf_counter()
        self.timing.record(wait, end - t0, frames / self.engine.rate, end)

    @property
    def callback_overruns(self) -> int:
        """Callbacks whose wait + run exceeded their period: xruns the bridge caused (:class:`CallbackTiming`)."""
        return self.timing.overruns

    @property
    def callback_max_s(self) -> float:
        return self.timing.max_s

    @property
    def callback_wait_max_s(self) -> float:
        return self.timing.wait_max_s

    def _finished(self) -> None:
        if not self._stopping:
            self._lost.set()

    def _open(self) -> None:
        sd = _sd()
        idx, info = find_output_device(self.device)
        rate = int(round(info["default_samplerate"]))
        if rate != self.engine.rate:
            raise OutputError(f"audio device {info['name']!r} now runs at {rate} Hz; hits are rendered at "
                              f"{self.engine.rate} Hz (restart the bridge)")
        try:
            stream = sd.OutputStream(device=idx, samplerate=rate, blocksize=self.block, channels=2,
                                     dtype="float32", latency="low", callback=self._callback,
                                     finished_callback=self._finished)
            stream.start()
        except Exception as e:
            raise OutputError(f"audio device {info['name']!r}: cannot open a stereo stream at {rate} Hz, "
                              f"block {self.block} ({e})") from None
        self.stream = stream
        self.device_name = str(info["name"])
        try:
            self.latency_ms = float(stream.latency) * 1e3
        except Exception:
            self.latency_ms = None
        self._lost.clear()

    def start(self) -> None:
        self._stopping = False
        # The callback runs Python and needs the GIL: a render thread holding it for the default 5 ms switch
        # interval would make it miss a 2.9 ms period. Ask for the GIL to be handed over much sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        if self.jack_name:
            use_jack_client_name(self.jack_name)
        self._open()
        self._monitor = threading.Thread(target=self._watch, name="kickit-audio-watch", daemon=True)
        self._monitor.start()

    def check(self) -> bool:
        """One look at the stream: a stream that stopped running without PortAudio's finished callback (a JACK
        server that died) counts as lost, and the watch reconnects. Returns whether it runs."""
        s = self.stream
        running = s is not None and bool(s.active)
        if s is not None and not running:
            self._lost.set()
        return running

    def _watch(self) -> None:
        from kickit.bridge import proctitle

        proctitle.set_thread_name(proctitle.DEVICE_WATCH)
        while not self._stopping:
            if not self._lost.wait(self.poll):  # poll None: until a loss is reported
                self.check()
            lost = self._lost.is_set()
            if self._stopping:
                return
            if not lost:
                continue
            name = self.device_name
            log.warning("audio device %r lost; reconnecting by name (state kept)", name)
            self.error = f"audio device {name!r} lost; waiting for it to come back (MIDI, OSC and pads keep running)"
            stale = self.stream
            if not self._close_stream():
                # PortAudio cannot release a stream whose JACK server died (for 10 minutes): leave that
                # instance behind and continue with a fresh one (the engine and its state are untouched)
                try:
                    fresh_portaudio(stale)
                    self._stuck = False
                    log.info("audio: PortAudio could not release the lost stream; continuing on a fresh instance")
                except OutputError as e:
                    self.error = (f"audio device {name!r} lost and PortAudio cannot release it ({e}); MIDI, OSC "
                                  "and all pads keep running: restart the bridge to play to the device again")
                    log.error("%s", self.error)
                    return
            while not self._stopping:
                if not _guarded(rescan_devices, 5.0):
                    self.error = "PortAudio hangs re-initialising; restart the bridge"
                    log.error("%s", self.error)
                    return
                try:
                    self._open()
                    self.reconnects += 1
                    self.error = None
                    log.info("audio device %r is back", self.device_name)
                    break
                except OutputError as e:
                    log.debug("reconnect failed: %s", e)
                    self._lost.wait(1.0)
                    self._lost.clear()

    def _close_stream(self, timeout: float = 2.0) -> bool:
        """Abort and close the stream; False when PortAudio hangs doing it (it does when a JACK server dies):
        the stream is then abandoned, and PortAudio is left alone (no terminate at exit either)."""
        s, self.stream = self.stream, None
        if s is None:
            return True
        generation = _generation[0]

        def close() -> None:
            try:
                s.abort()
                if _generation[0] == generation:  # never through another PortAudio instance than its own
                    s.close()
            except Exception as e:  # a dead device can fail to close; the stream object is dropped anyway
                log.debug("closing the stream: %s", e)

        if _guarded(close, timeout):
            return True
        self._stuck = True
        _disable_portaudio_exit_handler()
        return False

    def stop(self) -> None:
        self._stopping = True
        self._lost.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        if not self._stuck:
            self._close_stream()

    def describe(self) -> str:
        return f"audio device {self.device_name!r} at {self.engine.rate} Hz, block {self.block}"

    def counters(self) -> dict[str, Any]:
        return {"xruns": self.xruns, "reconnects": self.reconnects, "output_error": self.error,
                "output_callback_errors": self.callback_errors, **self.timing.counters(),
                "output_latency_ms": self.latency_ms if self.stream is not None else None}


class FileSink:
    """Every triggered hit (with its velocity gain) becomes a WAV file in ``out_dir``."""

    def __init__(self, engine: Engine, out_dir: str | Path) -> None:
        self.engine = engine
        self.out_dir = Path(out_dir)
        self.written = 0
        self.errors = 0
        self._queue: queue.Queue[tuple[int, np.ndarray, float] | None] = queue.Queue(maxsize=256)
        self._thread: threading.Thread | None = None
        self._counter = itertools.count(1)
        self.last_path: Path | None = None

    def start(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out_dir}: cannot create the hits folder ({e.strerror or e})") from None
        self.engine.events_enabled = False
        self.engine.add_trigger_listener(self._on_trigger)
        self._thread = threading.Thread(target=self._write_loop, name="kickit-file-sink", daemon=True)
        self._thread.start()

    def _on_trigger(self, pad: int, hit: np.ndarray, gain: float) -> None:
        try:
            self._queue.put_nowait((pad, hit, gain))
        except queue.Full:
            self.errors += 1

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pad, hit, gain = item
            path = self.out_dir / f"hit-{next(self._counter):05d}-pad{pad:02d}.wav"
            try:
                write_wav(path, hit * np.float32(gain), self.engine.rate)
                self.written += 1
                self.last_path = path
            except Exception as e:
                self.errors += 1
                log.error("%s: cannot write hit (%s)", path, e)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def describe(self) -> str:
        return f"files in {self.out_dir}"

    def counters(self) -> dict[str, Any]:
        return {"files_written": self.written, "file_errors": self.errors}
