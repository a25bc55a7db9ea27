"""A second JACK client that plays MIDI into the bridge and records its audio output, frame-accurately.

Used by ``kickit bench latency`` and the end-to-end tests. Needs the JACK-Client package (dev extra) and a
running JACK server. Every MIDI event is written at offset 0 of a process cycle and stamped with that cycle's
frame time; the captured audio is stored by absolute frame, so "note-on -> first sample" is a frame difference.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter, deque
from typing import Any

import numpy as np


class JackProbe:
    def __init__(self, server: str | None = None, seconds: float = 120.0, name: str = "kickit-probe") -> None:
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server)
        self.rate = self.client.samplerate
        self.period = self.client.blocksize
        self.midi_out = self.client.midi_outports.register("midi_out")
        self.inputs = [self.client.inports.register(f"in_{i + 1}") for i in range(2)]
        self.capacity = int(seconds * self.rate)
        self.audio = np.zeros((2, self.capacity), dtype=np.float32)
        self.start_frame: int | None = None
        self.written = 0
        self._pending: deque[tuple[bytes, int]] = deque()
        self.sent: list[tuple[int, int]] = []  # (frame, tag) of every event written
        self.xruns = 0
        # cycles the probe itself finished late (less than a quarter of the period left for the clients after it,
        # e.g. the bridge's MIDI input): (perf_counter, frames since the cycle began) - the benchmark's own lateness
        self.late_finishes: deque[tuple[float, int]] = deque(maxlen=100_000)
        self.capturing = False
        self._lock = threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)

    def _xrun(self, delay: float) -> None:
        self.xruns += 1

    def _process(self, frames: int) -> None:
        frame0 = self.client.last_frame_time
        self.midi_out.clear_buffer()
        while self._pending:
            data, tag = self._pending.popleft()
            self.midi_out.write_midi_event(0, data)
            self.sent.append((frame0, tag))
        if self.capturing:
            if self.start_frame is None:
                self.start_frame = frame0
            pos = frame0 - self.start_frame
            if 0 <= pos and pos + frames <= self.capacity:
                self.audio[0, pos:pos + frames] = self.inputs[0].get_array()
                self.audio[1, pos:pos + frames] = self.inputs[1].get_array()
                self.written = pos + frames
        done = self.client.frames_since_cycle_start
        if done > frames * 3 // 4:
            self.late_finishes.append((time.perf_counter(), int(done)))

    def activate(self, audio_from: list[str], midi_to: str | None) -> None:
        """Activate and connect ``audio_from`` (two output ports) -> our inputs, our MIDI out -> ``midi_to``."""
        self.client.activate()
        for src, dst in zip(audio_from, self.inputs, strict=True):
            self.client.connect(src, dst)
        if midi_to is not None:
            self.client.connect(self.midi_out, midi_to)

    def find_port(self, pattern: str, *, midi: bool = False, is_input: bool = False, is_output: bool = False,
                  timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            ports = self.client.get_ports(pattern, is_midi=midi, is_audio=not midi, is_input=is_input,
                                          is_output=is_output)
            if ports or time.monotonic() > deadline:
                return [p.name for p in ports]
            time.sleep(0.05)

    def start_capture(self) -> None:
        self.capturing = True

    def send(self, data: bytes | list[int], tag: int = 0) -> None:
        self._pending.append((bytes(data), tag))

    def captured(self) -> np.ndarray:
        return self.audio[:, : self.written]

    def close(self) -> None:
        try:
            self.client.deactivate()
        finally:
            self.client.close()


def first_sample(audio: np.ndarray, start: int = 0, threshold: float = 1e-6) -> int | None:
    """Index of the first sample at or after ``start`` whose magnitude (either channel) exceeds threshold."""
    idx = np.flatnonzero(np.max(np.abs(audio[:, start:]), axis=0) > threshold)
    return int(idx[0]) + start if len(idx) else None


_XRUN = re.compile(r"XRun: client = (.+?) was not finished, state = (\w+)")
NOT_RUN = "(no client was run in time)"


class ServerXrun(list[tuple[str, str]]):
    """One xrun the JACK server reported: (client, state) of every client that had not finished its cycle when
    the next one was due, and ``stamp``: when its report was read (``perf_counter``; None from plain text)."""

    stamp: float | None = None

    def causes(self) -> set[str]:
        """Who made it: the clients still "Running" (one "Triggered" behind them waited for them); when no
        client was running, the machine - nobody had been given a CPU in time (:data:`NOT_RUN`)."""
        return {client for client, state in self if state == "Running"} or {NOT_RUN}


def server_xruns(log: str | list[tuple[float, str]]) -> list[ServerXrun]:
    """The JACK server's own xrun reports from its log (jackd 1.9), as text or as (stamp, line) pairs: one
    :class:`ServerXrun` per xrun. ``state`` is "Running" (it had started and was still at work: too slow, or
    its thread was stopped inside its cycle) or "Triggered" (woken but not yet run: waiting for an earlier
    client in the graph, or for a CPU)."""
    lines = [(None, line) for line in log.splitlines()] if isinstance(log, str) else log
    events: list[ServerXrun] = []
    current = ServerXrun()
    for stamp, line in lines:
        m = _XRUN.search(line)
        if m:
            if not current:
                current.stamp = stamp
            current.append((m.group(1), m.group(2)))
        elif current:
            events.append(current)
            current = ServerXrun()
    if current:
        events.append(current)
    return events


def xrun_causes(events: list[ServerXrun]) -> Counter[str]:
    """Each xrun counted for the client(s) that made it (:meth:`ServerXrun.causes`); one with two running
    clients counts for both."""
    causes: Counter[str] = Counter()
    for event in events:
        for client in event.causes():
            causes[client] += 1
    return causes


def client_matches(reported: str, name: str) -> bool:
    """Whether a client name in the server's report is ``name`` (JACK appends "-NN" to a name already taken)."""
    return re.fullmatch(re.escape(name) + r"(-\d+)?", reported) is not None


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the benchmark dies (an interrupted run leaves no server behind)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class DummyJack:
    """``jackd -n NAME --realtime -d dummy -r RATE -p PERIOD`` started and stopped by the benchmark. Its log is
    read as it comes by a thread that stamps every line (``perf_counter``): the server's own xrun reports
    (:meth:`xruns_since`), each with the moment it was reported (a pipe, so the thread only wakes when the
    server writes)."""

    def __init__(self, rate: int = 44100, period: int = 128) -> None:
        self.name = f"kickit-bench-{uuid.uuid4().hex[:6]}"
        self.rate, self.period = rate, period
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[tuple[float, str]] = []
        self._reader: threading.Thread | None = None

    def _read(self, out: Any) -> None:
        for raw in iter(out.readline, b""):
            self.lines.append((time.perf_counter(), raw.decode("utf-8", "replace").rstrip("\n")))

    def mark(self) -> int:
        """The log's length now: :meth:`xruns_since` reads what came after."""
        return len(self.lines)

    def xruns_since(self, mark: int) -> list[ServerXrun]:
        """The server's xrun reports logged after ``mark`` (:func:`server_xruns`)."""
        return server_xruns(self.lines[mark:])

    def start(self) -> DummyJack:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise RuntimeError("jackd is not installed (see ../shared/rt/jack-dummy.sh)")
        rt = ["--realtime"] if os.geteuid() == 0 else ["--no-realtime"]
        self.proc = subprocess.Popen([jackd, "-n", self.name, *rt, "-d", "dummy", "-r", str(self.rate), "-p",
                                      str(self.period)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), name="jackd-log", daemon=True)
        self._reader.start()
        env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")
        for _ in range(100):
            r = subprocess.run(["jack_lsp"], env=env, capture_output=True)
            if r.returncode == 0 and b"system:playback_1" in r.stdout:
                os.environ["JACK_DEFAULT_SERVER"] = self.name
                os.environ["JACK_NO_START_SERVER"] = "1"
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd {self.name} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        self.proc = None

    def close(self) -> None:
        """Stop the server (its log lines stay readable)."""
        self.stop()
