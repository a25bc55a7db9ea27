"""The real-time part: an event ring from the control threads to the audio callback, and a fixed-size voice
table that mixes preallocated, immutable hit arrays.

Rules for everything the audio callback calls (:meth:`Mixer.process`): no allocation of audio buffers, no
locks, no logging, no inference, no exceptions escaping. Hits are float32 (2, n) arrays made read-only by the
render thread and handed over by reference. Control threads (MIDI, OSC, workers) push events through
:class:`EventRing`: producers serialise among themselves with a lock, the single consumer (the callback)
never takes it - it only reads slots the producer published by advancing the write index afterwards.
"""

from __future__ import annotations

import threading
import time

import numpy as np

EV_NOTE = 1
EV_PANIC = 2
EV_CHOKE = 3  # stop the voices of one pad (with the release fade)

DEFAULT_VOICES = 16
RING_SIZE = 1024
RELEASE_SAMPLES = 64  # fade-out of a stolen or choked voice, so it never clicks


class EventRing:
    """Bounded single-consumer ring of note/panic events; a full ring drops the event (counted)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.size = int(size)
        self.kind = np.zeros(self.size, dtype=np.int32)
        self.pad = np.zeros(self.size, dtype=np.int32)
        self.gain = np.zeros(self.size, dtype=np.float32)
        self.offset = np.zeros(self.size, dtype=np.int64)  # sample offset inside the consumer's next block
        self.stamp = np.zeros(self.size, dtype=np.float64)  # perf_counter() of the event's arrival
        self.hit: list[np.ndarray | None] = [None] * self.size
        self._write = 0  # only producers advance it (under _lock); published after the slot is filled
        self._read = 0  # only the consumer advances it
        self._lock = threading.Lock()
        self.dropped = 0

    def push(self, kind: int, pad: int = -1, hit: np.ndarray | None = None, gain: float = 0.0,
             offset: int = 0, stamp: float = 0.0) -> bool:
        with self._lock:
            w = self._write
            if w - self._read >= self.size:
                self.dropped += 1
                return False
            i = w % self.size
            self.kind[i] = kind
            self.pad[i] = pad
            self.gain[i] = gain
            self.offset[i] = offset
            self.stamp[i] = stamp
            self.hit[i] = hit
            self._write = w + 1  # publish
            return True

    def pending(self) -> int:
        return self._write - self._read


class Mixer:
    """Fixed voice table + mixing into the callback's output block (frames, 2)."""

    def __init__(self, max_voices: int = DEFAULT_VOICES, max_block: int = 8192, ring: EventRing | None = None,
                 choke: bool = False, release: int = RELEASE_SAMPLES) -> None:
        self.max_voices = int(max_voices)
        if self.max_voices < 1:
            raise ValueError("polyphony must be at least 1 voice")
        self.ring = ring if ring is not None else EventRing()
        self.choke = choke  # a new hit on a pad releases that pad's sounding voices
        self.hit: list[np.ndarray | None] = [None] * self.max_voices
        self.pos = np.zeros(self.max_voices, dtype=np.int64)
        self.gain = np.zeros(self.max_voices, dtype=np.float32)
        self.pad = np.full(self.max_voices, -1, dtype=np.int32)
        self.start = np.zeros(self.max_voices, dtype=np.int64)  # block offset where a new voice starts
        self.age = np.zeros(self.max_voices, dtype=np.int64)  # start order, for stealing the oldest
        self.release_left = np.zeros(self.max_voices, dtype=np.int64)  # >0: fading out
        self.release = max(1, int(release))
        self._ramp = np.linspace(1.0, 0.0, self.release + 1, dtype=np.float32)[1:]
        self._scratch = np.zeros((2, max_block), dtype=np.float32)
        self._lat = np.zeros(512, dtype=np.float64)  # arrival -> start of the block that plays it (s)
        self._lat_count = 0
        self._started = 0
        # counters the status panel reads (only the callback writes them)
        self.stolen = 0
        self.callback_errors = 0
        self.notes_started = 0

    def counters(self) -> dict[str, object]:
        """What the status reports of the mixer (read from a control thread)."""
        lat = self.note_latencies_ms()
        p99 = float(np.percentile(np.asarray(lat, dtype=np.float64), 99)) if lat else None
        return {"voices": self.active(), "max_voices": self.max_voices, "stolen": self.stolen,
                "notes": self.notes_started, "note_latency_ms_p99": p99, "callback_errors": self.callback_errors}

    def note_latencies_ms(self) -> list[float]:
        """Recent note arrival -> start of the audio block that plays it, in ms (control-thread read)."""
        n = min(self._lat_count, len(self._lat))
        return [float(x) * 1e3 for x in self._lat[:n]]

    # ----- consumer side (audio callback) ---------------------------------------------------------
    def active(self) -> int:
        return sum(1 for h in self.hit if h is not None)

    def _release_voice(self, v: int) -> None:
        if self.hit[v] is not None and self.release_left[v] == 0:
            self.release_left[v] = self.release

    def _free_voice(self) -> int:
        for v in range(self.max_voices):
            if self.hit[v] is None:
                return v
        # steal: the oldest voice (releasing ones first)
        best = -1
        best_key = None
        for v in range(self.max_voices):
            key = (0 if self.release_left[v] else 1, self.age[v])
            if best_key is None or key < best_key:
                best, best_key = v, key
        self.stolen += 1
        return best

    def _start(self, pad: int, hit: np.ndarray, gain: float, offset: int) -> None:
        self._begin(self._claim(pad), pad, hit, gain, offset)

    def _claim(self, pad: int) -> int:
        """The voice a new hit of ``pad`` takes (choking the pad's voices first when ``choke``)."""
        if self.choke:
            for v in range(self.max_voices):
                if self.pad[v] == pad and self.hit[v] is not None:
                    self._release_voice(v)
        return self._free_voice()

    def _begin(self, v: int, pad: int, hit: np.ndarray, gain: float, offset: int) -> None:
        self.hit[v] = hit
        self.pos[v] = 0
        self.gain[v] = gain
        self.pad[v] = pad
        self.start[v] = offset
        self.release_left[v] = 0
        self._started += 1
        self.age[v] = self._started
        self.notes_started += 1

    def _latency(self, now: float, stamp: float) -> None:
        """Record a started note's arrival (``stamp``; 0: not stamped) -> the start of its block (``now``)."""
        if stamp > 0.0:
            self._lat[self._lat_count % len(self._lat)] = now - stamp
            self._lat_count += 1

    def _control(self, kind: int, pad: int) -> None:
        """A panic (every voice off at once) or a choke (the pad's voices fade out)."""
        if kind == EV_PANIC:
            for v in range(self.max_voices):
                self.hit[v] = None
                self.pad[v] = -1
                self.release_left[v] = 0
        elif kind == EV_CHOKE:
            for v in range(self.max_voices):
                if self.pad[v] == pad:
                    self._release_voice(v)

    def drain(self, frames: int) -> None:
        ring = self.ring
        now = time.perf_counter() if ring._read != ring._write else 0.0
        while ring._read != ring._write:
            i = ring._read % ring.size
            kind = ring.kind[i]
            if kind == EV_NOTE:
                hit = ring.hit[i]
                if hit is not None:
                    off = int(ring.offset[i])
                    self._start(int(ring.pad[i]), hit, float(ring.gain[i]), min(max(off, 0), frames - 1))
                    self._latency(now, float(ring.stamp[i]))
            else:
                self._control(int(kind), int(ring.pad[i]))
            ring.hit[i] = None
            ring._read += 1

    def process(self, out: np.ndarray) -> None:
        """Fill ``out`` (frames, 2) float32 with the mix of all voices; never raises (errors are counted)."""
        try:
            out.fill(0.0)
            frames = out.shape[0]
            self.drain(frames)
            outT = out.T  # (2, frames) view
            for v in range(self.max_voices):
                hit = self.hit[v]
                if hit is None:
                    continue
                s = int(self.start[v])
                self.start[v] = 0
                p = int(self.pos[v])
                n = hit.shape[1]
                m = min(frames - s, n - p)
                rel = int(self.release_left[v])
                if rel:
                    m = min(m, rel)
                if m > 0:
                    tmp = self._scratch[:, :m]
                    np.multiply(hit[:, p:p + m], self.gain[v], out=tmp)
                    if rel:
                        k = self.release - rel
                        tmp *= self._ramp[k:k + m]
                        self.release_left[v] = rel - m
                    dst = outT[:, s:s + m]
                    np.add(dst, tmp, out=dst)
                    self.pos[v] = p + m
                if self.pos[v] >= n or (rel and self.release_left[v] <= 0):
                    self.hit[v] = None
                    self.pad[v] = -1
                    self.release_left[v] = 0
        except Exception:
            self.callback_errors += 1
            try:
                out.fill(0.0)
                for v in range(self.max_voices):  # a voice that raised would raise in every later block
                    self.hit[v] = None
                    self.pad[v] = -1
                    self.release_left[v] = 0
            except Exception:
                pass
