"""DAW mode (``kickit bridge --daw [DIR]``): every pad's current hit as a WAV file, announced over OSC.

No audio device is needed: the kick plays inside the DAW (the kickit Max for Live device loads each file into
the pad's ``buffer~`` and plays it on note-on, sample-accurate, through Live's mixer).

* The engine calls :meth:`DawMode.on_hit` (its listener hook) from the render worker whenever a pad's current
  hit changes; that only parks the hit (latest wins per pad) and wakes the writer thread, so the render
  worker never waits for the disk.
* The writer thread writes ``padNN-VVVVVV.wav`` (32-bit float, so the file holds exactly the bridge's hit)
  atomically (temp file + rename: the DAW never reads a half-written file), then announces it with
  ``/kickit/hit/ready <pad> <absolute path>``. A new version gets a new name, so a ``buffer~`` still reading
  the previous file is never disturbed; versions older than the previous announced one are deleted (a
  deletion that fails, e.g. a file held open on Windows, is retried later).
* Pads in "fresh" mode: each trigger plays a new variation; :meth:`DawMode.on_trigger` (the engine's trigger
  listener) announces it, so the next note in the DAW plays a new kick too.
* :meth:`DawMode.resend` re-announces the current files (after a client connects, or a pad/mode change).

:class:`HitFiles` is the file bookkeeping (names, versions, clean-up) without threads.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from kickit.atomic import atomic_write
from kickit.audio import AudioError, resample

log = logging.getLogger("kickit.bridge.daw")

NAME_RE = re.compile(r"^pad(\d{2})-(\d{6,})\.wav$")
SUBTYPE = "FLOAT"
KEEP = 2  # versions kept per pad: the current one and the previous one (a buffer~ may still be loading it)
READY_ADDRESS = "/kickit/hit/ready"

Notify = Callable[[int, str], None]


def default_folder() -> Path:
    """Per-user cache folder for the hit files: ~/.cache/kickit/daw, ~/Library/Caches/kickit/daw or
    %LOCALAPPDATA%\\kickit\\daw."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kickit" / "daw"


def file_name(pad: int, version: int) -> str:
    return f"pad{pad:02d}-{version:06d}.wav"


class HitFiles:
    """The versioned hit files of one folder. Not thread-safe (the DAW writer thread owns it)."""

    def __init__(self, folder: str | os.PathLike[str], *, keep: int = KEEP, subtype: str = SUBTYPE) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = Path(folder).expanduser().resolve()
        self.keep = keep
        self.subtype = subtype
        self._version: dict[int, int] = {}
        self._announced: dict[int, list[Path]] = {}  # oldest first; last = current
        self._doomed: list[Path] = []  # deletions that failed, retried

    def prepare(self) -> int:
        """Create the folder (refusing a path that is a file) and delete hit files left by an earlier run;
        returns how many were deleted. Files not named like ours are never touched."""
        if self.folder.exists() and not self.folder.is_dir():
            raise AudioError(self.folder, "the DAW folder is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioError(self.folder, f"cannot create the DAW folder ({e.strerror or e})") from None
        if not os.access(self.folder, os.W_OK):
            raise AudioError(self.folder, "the DAW folder is not writable")
        removed = 0
        for f in self.folder.iterdir():
            if NAME_RE.match(f.name) and f.is_file():
                try:
                    f.unlink()
                    removed += 1
                except OSError as e:
                    log.warning("%s: cannot delete an old hit file (%s)", f, e.strerror or e)
        return removed

    def write(self, pad: int, audio: np.ndarray, rate: int) -> Path:
        """Write the next version of ``pad``'s hit atomically; returns its absolute path.

        Temp file in the same folder, then rename: a reader sees the whole file or none. No fsync: the files
        are a cache that lives as long as the bridge, so durability across a power cut buys nothing and
        would cost milliseconds per knob move."""
        data = np.asarray(audio, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != 2 or not data.shape[1]:
            raise AudioError(self.folder, f"pad {pad}: a hit must be stereo (2, n) audio, got {data.shape}")
        if not np.all(np.isfinite(data)):
            raise AudioError(self.folder, f"pad {pad}: refusing to write NaN or infinite samples")
        version = self._version.get(pad, 0) + 1
        self._version[pad] = version
        path = self.folder / file_name(pad, version)
        with atomic_write(path) as fh:
            sf.write(fh, data.T, int(rate), subtype=self.subtype, format="WAV")
        return path

    def announced(self, pad: int, path: Path) -> None:
        """``path`` is now ``pad``'s current file: delete what is older than the kept versions."""
        files = self._announced.setdefault(pad, [])
        files.append(path)
        while len(files) > self.keep:
            self._doomed.append(files.pop(0))
        self._sweep()

    def discard(self, path: Path) -> None:
        """A written file that was never announced (the announcement failed)."""
        self._doomed.append(path)
        self._sweep()

    def _sweep(self) -> None:
        left = []
        for f in self._doomed:
            try:
                f.unlink(missing_ok=True)
            except OSError:
                left.append(f)
        self._doomed = left

    def current(self, pad: int) -> Path | None:
        files = self._announced.get(pad)
        return files[-1] if files else None

    def currents(self) -> dict[int, Path]:
        return {p: f[-1] for p, f in sorted(self._announced.items()) if f}

    def remove_all(self) -> None:
        for files in self._announced.values():
            self._doomed.extend(files)
            files.clear()
        self._sweep()


class DawMode:
    """Writes each pad's current hit to a file and announces it; see the module docstring."""

    def __init__(self, folder: str | os.PathLike[str], notify: Notify, *, rate: int | None = None,
                 keep: int = KEEP, keep_files: bool = False) -> None:
        self.files = HitFiles(folder, keep=keep)
        self.notify = notify
        self.rate = rate  # write at this rate (resampled with soxr) instead of the hit's own rate
        self.keep_files = keep_files
        self.written = 0
        self.announced = 0
        self.errors = 0
        self.write_ms: list[float] = []
        self._pending: dict[int, tuple[np.ndarray, int]] = {}
        self._resend: set[int] = set()
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._engine: object | None = None
        self._last_error = 0.0

    @property
    def folder(self) -> Path:
        return self.files.folder

    # ----- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> DawMode:
        removed = self.files.prepare()
        if removed:
            log.info("DAW mode: deleted %d hit files of an earlier run in %s", removed, self.folder)
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="kickit-daw", daemon=True)
            self._thread.start()
        return self

    def attach(self, engine: object) -> DawMode:
        """Listen to an engine (``add_listener`` and, when it has one, ``add_trigger_listener``)."""
        self._engine = engine
        engine.add_listener(self.on_hit)  # type: ignore[attr-defined]
        add_trigger = getattr(engine, "add_trigger_listener", None)
        if add_trigger is not None:
            add_trigger(self.on_trigger)
        return self

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if not self.keep_files:
            self.files.remove_all()

    def __enter__(self) -> DawMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- engine hooks (called from the engine's threads: never block) ----------------------------------
    def on_hit(self, pad: int, hit: np.ndarray, rate: int) -> None:
        """A pad's current hit changed (the engine's listener hook)."""
        with self._cond:
            self._pending[int(pad)] = (hit, int(rate))
            self._cond.notify_all()

    def on_trigger(self, pad: int, hit: np.ndarray, gain: float) -> None:
        """A pad was played; for a "fresh" pad the played variation becomes the pad's file (the engine's
        trigger listener). Hold pads keep their file: it already holds this hit."""
        engine = self._engine
        try:
            fresh = engine is not None and engine.pads[pad].mode == "fresh"  # type: ignore[attr-defined]
        except (AttributeError, IndexError, TypeError):
            fresh = False
        if fresh:
            self.on_hit(pad, hit, int(engine.rate))  # type: ignore[union-attr]

    def resend(self, pad: int | None = None) -> None:
        """Announce the current file of ``pad`` (all pads when None) again, e.g. after a client connects."""
        with self._cond:
            self._resend.update(range(256) if pad is None else [int(pad)])
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every parked hit is written and announced (tests, clean shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._resend or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def current(self, pad: int) -> Path | None:
        return self.files.current(pad)

    # ----- writer thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._pending and not self._resend:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                jobs = sorted(self._pending.items())
                self._pending.clear()
                resend = sorted(self._resend - {p for p, _ in jobs})
                self._resend.clear()
                self._busy = True
            try:
                for pad, (hit, rate) in jobs:
                    self._write_one(pad, hit, rate)
                currents = self.files.currents()
                for pad in resend:
                    if pad in currents:
                        self._announce(pad, currents[pad])
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _error(self, msg: str, *args: object) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error > 2.0:  # rate-limited: a full disk must not flood the log
            self._last_error = now
            log.error(msg, *args)

    def _write_one(self, pad: int, hit: np.ndarray, rate: int) -> None:
        t0 = time.perf_counter()
        audio = np.asarray(hit, dtype=np.float32)
        if self.rate and self.rate != rate:
            audio = resample(audio, rate, self.rate)
            rate = self.rate
        try:
            path = self.files.write(pad, audio, rate)
        except (OSError, AudioError, RuntimeError, ValueError) as e:
            self._error("DAW mode: pad %d: cannot write its hit file in %s (%s)", pad, self.folder, e)
            return
        self.written += 1
        self.write_ms.append((time.perf_counter() - t0) * 1e3)
        del self.write_ms[:-256]
        if self._announce(pad, path):
            self.files.announced(pad, path)
        else:
            self.files.discard(path)

    def _announce(self, pad: int, path: Path) -> bool:
        try:
            self.notify(pad, path.as_posix())  # forward slashes: Max's own path style on Windows too
        except Exception as e:  # a notify failure (no client, socket error) must not stop the writer
            self._error("DAW mode: pad %d: cannot announce %s (%s)", pad, path, e)
            return False
        self.announced += 1
        return True

    def status(self) -> dict:
        ms = np.asarray(self.write_ms[-256:], dtype=np.float64)
        return {"folder": str(self.folder), "written": self.written, "announced": self.announced,
                "errors": self.errors, "write_ms_p50": float(np.median(ms)) if ms.size else None}


class DawSink:
    """The output sink of ``kickit bridge --daw`` (same interface as the bridge's device and file sinks).

    ``send(address, *args)`` is the OSC reply path (the OSC server's ``send``; with ``controller`` given, its
    current ``send`` is used, so the sink may be made before the server). When the device (re)connects, the
    controller's ``announce`` (knob names, model) is followed by every pad's current file.
    """

    def __init__(self, engine: object, folder: str | os.PathLike[str], send: Callable[..., object] | None = None,
                 *, controller: object | None = None, rate: int | None = None, keep_files: bool = False) -> None:
        if send is None and controller is None:
            raise ValueError("DawSink needs an OSC send function or a controller")
        self.engine = engine
        self.controller = controller

        def reply(address: str, *args: object) -> None:
            target = send if send is not None else controller.send  # type: ignore[union-attr]
            target(address, *args)

        self.mode = DawMode(folder, make_notify(reply), rate=rate, keep_files=keep_files)

    def start(self) -> None:
        self.mode.start()
        self.engine.events_enabled = False  # type: ignore[attr-defined] # no audio callback drains the ring
        if self.controller is not None:
            announce = self.controller.announce  # type: ignore[attr-defined]

            def announce_and_resend() -> None:
                announce()
                self.mode.resend()

            self.controller.announce = announce_and_resend  # type: ignore[attr-defined]
        self.mode.attach(self.engine)

    def stop(self) -> None:
        self.mode.close()

    def describe(self) -> str:
        return f"DAW mode: hit files in {self.mode.folder}, announced with {READY_ADDRESS}"

    def counters(self) -> dict:
        s = self.mode.status()
        return {"daw_written": s["written"], "daw_announced": s["announced"], "daw_errors": s["errors"],
                "daw_write_ms_p50": s["write_ms_p50"]}


# ----- glue for kickit bridge --daw (bridge/app.py) -------------------------------------------------------------------


def make_sink(engine: object, folder: str | os.PathLike[str] | None, controller: object, *,
              rate: int | None = None) -> DawSink:
    """The sink ``kickit bridge --daw [DIR]`` uses (bridge/app.py); ``folder`` None -> :func:`default_folder`."""
    return DawSink(engine, folder if folder is not None else default_folder(), controller=controller, rate=rate)


def make_notify(send: Callable[..., object]) -> Notify:
    """A notify callback from an OSC send function ``send(address, *args)`` (the bridge's reply path)."""
    def notify(pad: int, path: str) -> None:
        send(READY_ADDRESS, int(pad), path)
    return notify
