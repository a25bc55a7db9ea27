"""The audio callback in a process of its own: no other Python thread can hold the GIL it needs.

In the bridge's process the callback shares the GIL with the MIDI, OSC and hand-over threads; when one of
them holds it and is preempted (a loaded machine), the callback misses its period although the bridge did
little work. Measured against a bare Python client on the same JACK server (``kickit bench latency``), that
was most of the bridge's overruns. :class:`AudioProcessSink` runs :class:`kickit.bridge.outputs.DeviceSink`
in a child process whose only busy thread is the callback:

* The engine (bridge process) pushes note, panic and choke events into a :class:`SharedEventRing`: a
  fixed ring in shared memory whose slots carry the hit itself (copied in by the producer, a few tens of
  microseconds per note), so nothing is shared by reference across processes and no slot outlives its event.
* The child's :class:`SharedMixer` is the engine's :class:`kickit.bridge.voices.Mixer` reading that ring: it
  copies a new hit's samples from its slot into the voice's own preallocated buffer and mixes exactly as in
  process (the same blocks bit for bit, tested).
* Counters (xruns, overruns, voices, note latency) come back through :class:`SharedStats`: the bridge asks,
  and the callback itself copies them into shared memory at its next period. No other thread of the child
  wakes while it plays: its main thread blocks on a pipe the bridge only uses when the callback does not
  answer (a lost device: then the pipe brings the full counters and makes the child look at its stream), and
  its device watch (DeviceSink's, reconnect by name) waits for a loss without polling. Why: any thread of
  this process that wakes takes the GIL for a moment, and when the scheduler leaves it waiting behind another
  process while it holds it, the callback waits too (traced with the kernel's scheduler events: a
  device-watch wake-up held the callback 2.3 ms; docs/reliability.md). A child that dies is started again
  with the same ring (events pushed meanwhile play late or are dropped and counted; the pads are untouched).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

import numpy as np
from kickit.bridge import memory, proctitle
from kickit.bridge.outputs import CallbackTiming, DeviceSink, OutputError, _sd, release_portaudio
from kickit.bridge.voices import EV_CHOKE, EV_NOTE, EV_PANIC, RELEASE_SAMPLES, Mixer

log = logging.getLogger("kickit.bridge")

SLOTS = 32  # events in flight between the engine and the callback (a few per period at most)
START_TIMEOUT = 60.0  # seconds for the child to import, open the device and start the stream
_FENCE = threading.Lock()  # acquire + release: a memory barrier (ordering on weakly ordered CPUs, e.g. ARM)


def _fence() -> None:
    _FENCE.acquire()
    _FENCE.release()


def _release(shm: shared_memory.SharedMemory, owner: bool) -> None:
    """Unmap a shared block; its creator also removes it."""
    shm.close()
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class SharedEventRing:
    """A single-producer-side, single-consumer ring of events with their hits, in one shared memory block.

    Layout: a header (write index, read index), per slot the event fields and a (2, slot_frames) float32
    hit. The producer fills a slot, then (after a barrier) publishes it by advancing the write index; the
    consumer reads the index, then (after a barrier) the slot, and frees it by advancing the read index.
    Producers in the bridge's process serialise among themselves with a lock; the consumer never takes it.
    A full ring drops the event (``dropped``); a hit longer than a slot is cut (``truncated``).
    """

    def __init__(self, slots: int, slot_frames: int, name: str | None = None) -> None:
        self.size, self.slot_frames = int(slots), int(slot_frames)
        n = self.size
        sizes = [("header", np.int64, (4,)), ("kind", np.int32, (n,)), ("pad", np.int32, (n,)),
                 ("gain", np.float32, (n,)), ("offset", np.int64, (n,)), ("stamp", np.float64, (n,)),
                 ("length", np.int64, (n,)), ("hits", np.float32, (n, 2, self.slot_frames))]
        total, offsets = 0, []
        for _, dt, shape in sizes:
            total = (total + 63) // 64 * 64
            offsets.append(total)
            total += int(np.prod(shape)) * np.dtype(dt).itemsize
        self.owner = name is None
        self.shm = shared_memory.SharedMemory(name=name, create=self.owner, size=total if self.owner else 0)
        for (field, dt, shape), off in zip(sizes, offsets, strict=True):
            setattr(self, field, np.ndarray(shape, dtype=dt, buffer=self.shm.buf, offset=off))
        if self.owner:
            self.header[:] = 0
            self.hits.fill(0.0)  # every page written now: resident from the start, not as the notes come
        else:
            float(self.hits[..., ::1024].sum())  # one read per page: mapped in this process from the start
        self.dropped = 0  # producer side
        self.truncated = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.shm.name

    def spec(self) -> tuple[int, int, str]:
        """What a consumer process needs to attach: (slots, slot_frames, name)."""
        return self.size, self.slot_frames, self.name

    # ----- producer (the engine's threads) ----------------------------------------------------------
    def push(self, kind: int, pad: int = -1, hit: np.ndarray | None = None, gain: float = 0.0,
             offset: int = 0, stamp: float = 0.0) -> bool:
        """Same call as :meth:`kickit.bridge.voices.EventRing.push`; the hit is copied into the slot."""
        with self._lock:
            w = int(self.header[0])
            if w - int(self.header[1]) >= self.size:
                self.dropped += 1
                return False
            i = w % self.size
            n = 0
            if kind == EV_NOTE:
                if hit is None or hit.ndim != 2 or hit.shape[0] != 2:
                    self.dropped += 1
                    return False
                n = min(hit.shape[1], self.slot_frames)
                if n < hit.shape[1]:
                    self.truncated += 1
                self.hits[i, :, :n] = hit[:, :n]
            self.kind[i], self.pad[i], self.gain[i] = kind, pad, gain
            self.offset[i], self.stamp[i], self.length[i] = offset, stamp, n
            _fence()  # the slot is written before the index that publishes it
            self.header[0] = w + 1
            return True

    def pending(self) -> int:
        return int(self.header[0]) - int(self.header[1])

    def reset(self) -> None:
        """Forget unread events (a restarted consumer starts from now)."""
        with self._lock:
            self.header[1] = self.header[0]

    def close(self) -> None:
        for field in ("header", "kind", "pad", "gain", "offset", "stamp", "length", "hits"):
            setattr(self, field, None)
        _release(self.shm, self.owner)


class SharedStats:
    """The audio process's counters in a small shared memory block, copied there by the callback on request.

    Layout (float64): the bridge's request number, the number the callback last answered, the counters in
    :attr:`FIELDS` order, then the mixer's recent note latencies. The bridge writes only the request number,
    the callback only the rest; a fence orders the counters before the answer that publishes them."""

    FIELDS = ("callbacks", "xruns", "output_callback_errors", "callback_overruns", "callback_overruns_waiting",
              "callback_max_ms", "callback_wait_max_ms", "reconnects", "output_latency_ms", "failing", "voices",
              "max_voices", "stolen", "notes", "callback_errors", "latencies")
    LATENCIES = 512  # as many as Mixer keeps
    LOG = CallbackTiming.LOG  # the callback's recent overruns, 3 numbers each

    def __init__(self, name: str | None = None) -> None:
        n = 2 + len(self.FIELDS) + self.LATENCIES + 3 * self.LOG
        self.owner = name is None
        self.shm = shared_memory.SharedMemory(name=name, create=self.owner, size=n * 8 if self.owner else 0)
        self.a: Any = np.ndarray((n,), dtype=np.float64, buffer=self.shm.buf)
        if self.owner:
            self.a[:] = 0.0
        self.values: Any = self.a[2:2 + len(self.FIELDS)]
        self.lat: Any = self.a[2 + len(self.FIELDS):2 + len(self.FIELDS) + self.LATENCIES]
        self.log: Any = self.a[2 + len(self.FIELDS) + self.LATENCIES:].reshape(self.LOG, 3)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.shm.name

    # ----- the callback's side (the audio process) --------------------------------------------------
    def requested(self) -> bool:
        a = self.a
        return bool(a[0] != a[1])

    def publish(self, sink: Any, mixer: Mixer) -> None:
        """Answer the pending request (called by the callback, after mixing: a few microseconds)."""
        a = self.a
        request = a[0]
        t = sink.timing
        latency = sink.latency_ms if sink.stream is not None and sink.latency_ms is not None else np.nan
        self.values[:] = (sink.callbacks, sink.xruns, sink.callback_errors, t.overruns, t.overruns_waiting,
                          t.max_s * 1e3, t.wait_max_s * 1e3, sink.reconnects, latency,
                          1.0 if sink.error else 0.0, mixer.active(), mixer.max_voices, mixer.stolen,
                          mixer.notes_started, mixer.callback_errors, mixer._lat_count)
        np.copyto(self.lat[:len(mixer._lat)], mixer._lat)
        np.copyto(self.log, t.log)
        _fence()
        a[1] = request

    # ----- the bridge's side ------------------------------------------------------------------------
    def read(self, timeout: float = 0.05) -> dict[str, Any] | None:
        """Ask the callback for its counters and wait up to ``timeout`` s for the answer (one period when the
        stream plays). None when it does not come (the callback is not running: the device is gone) or when
        the child reports a device error (whose text only the pipe carries)."""
        with self._lock:
            a = self.a
            if a is None:  # closed
                return None
            request = a[0] + 1
            a[0] = request
            deadline = time.monotonic() + timeout
            while a[1] != request:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.0005)
            _fence()
            v = dict(zip(self.FIELDS, (float(x) for x in self.values), strict=True))
            lat = self.lat.copy()
            log = self.log.copy()
        if v["failing"]:
            return None
        n = min(int(v["latencies"]), self.LATENCIES)
        latency = v["output_latency_ms"]
        ints = ("callbacks", "xruns", "output_callback_errors", "callback_overruns", "callback_overruns_waiting",
                "reconnects", "voices", "max_voices", "stolen", "notes", "callback_errors")
        out: dict[str, Any] = {k: int(v[k]) for k in ints}
        out.update(callback_max_ms=v["callback_max_ms"], callback_wait_max_ms=v["callback_wait_max_ms"],
                   output_latency_ms=None if np.isnan(latency) else latency, output_error=None,
                   note_latency_ms_p99=float(np.percentile(lat[:n], 99)) * 1e3 if n else None)
        out["callback_overrun_log"] = CallbackTiming.ordered(log, out["callback_overruns"])
        return out

    def close(self) -> None:
        with self._lock:
            self.a = self.values = self.lat = self.log = None
        _release(self.shm, self.owner)


class SharedMixer(Mixer):
    """:class:`Mixer` fed by a :class:`SharedEventRing`: a new hit is copied from its slot into the voice's
    preallocated buffer (the callback allocates no audio buffer), then mixed as in :class:`Mixer`."""

    def __init__(self, ring: SharedEventRing, max_voices: int, max_block: int = 8192, choke: bool = False) -> None:
        super().__init__(max_voices, max_block, None, choke)
        self.shared = ring
        self.buffers = np.zeros((self.max_voices, 2, ring.slot_frames), dtype=np.float32)
        self.buffers.fill(0.0)  # touched now, not by the callback when a voice is first used

    def drain(self, frames: int) -> None:
        r = self.shared
        header = r.header
        w = int(header[0])
        read = int(header[1])
        if read == w:
            return
        _fence()  # the slots are read after the index that published them
        now = time.perf_counter()
        while read != w:
            i = read % r.size
            kind = int(r.kind[i])
            if kind == EV_NOTE:
                pad, n = int(r.pad[i]), int(r.length[i])
                v = self._claim(pad)
                buf = self.buffers[v]
                np.copyto(buf[:, :n], r.hits[i, :, :n])
                off = min(max(int(r.offset[i]), 0), frames - 1)
                self._begin(v, pad, buf[:, :n], float(r.gain[i]), off)
                self._latency(now, float(r.stamp[i]))
            else:
                self._control(kind, int(r.pad[i]))
            read += 1
            header[1] = read  # the slot is free again


WARM_UP_SLOTS = 8  # the private ring of :func:`warm_up`


def warm_up(slot_frames: int, voices: int, max_block: int, choke: bool, block: int) -> dict[str, Any]:
    """Play the mixer's whole path once, on a private ring and mixer, before the stream starts: full-length
    hits copied out of their slots, every voice sounding, two stolen, a choke's release fade, voices ending,
    a panic, the status counters. Whatever that code needs the first time (the interpreter's memory for its
    objects, the pages of numpy's code it runs) is then taken at start-up, not by the callback at the first
    notes of a session: measured, the audio process otherwise grew by ~1.2 MiB over its first seconds of
    play and then stayed flat (docs/reliability.md). Returns the warm-up mixer's counters and the blocks mixed."""
    ring = SharedEventRing(WARM_UP_SLOTS, slot_frames)
    try:
        mixer = SharedMixer(ring, voices, max_block, choke)
        full = np.full((2, slot_frames), 1e-3, dtype=np.float32)
        out = np.zeros((block, 2), dtype=np.float32)
        blocks = 0

        def mix(n: int = 1) -> None:
            nonlocal blocks
            for _ in range(n):
                mixer.process(out)
                blocks += 1

        stamp = time.perf_counter()
        for k in range(voices + 2):  # every voice, then two notes that steal
            hit = full if k < WARM_UP_SLOTS else full[:, : 3 * block]
            while not ring.push(EV_NOTE, k % 4, hit, 0.5, k % block, stamp):
                mix()
            if ring.pending() >= WARM_UP_SLOTS // 2:
                mix()
        mix()
        ring.push(EV_CHOKE, 0)  # a pad's voices fade out over the release
        mix(1 + RELEASE_SAMPLES // block + 1)
        ring.push(EV_NOTE, 1, full[:, : 2 * block], 0.5, 0, stamp)  # a short hit that ends by itself
        mix(4)
        ring.push(EV_PANIC)
        mix()
        return {**mixer.counters(), "blocks": blocks}
    finally:
        ring.close()


def _child(conn: Connection, spec: tuple[int, int, str], stats_name: str, rate: int, device: str | None, block: int,
           voices: int, max_block: int, choke: bool) -> None:
    proctitle.set_name(proctitle.AUDIO)
    ring = SharedEventRing(*spec[:2], name=spec[2])
    stats = SharedStats(stats_name)
    try:
        warm_up(ring.slot_frames, voices, max_block, choke, block)
    except Exception:  # e.g. no room for its private ring: the first notes then take those pages, nothing else
        pass
    mixer = SharedMixer(ring, voices, max_block, choke)
    mix = mixer.process

    def process(out: np.ndarray) -> None:
        mix(out)
        if stats.requested():
            stats.publish(sink, mixer)

    host = SimpleNamespace(rate=rate, config=SimpleNamespace(max_block=max_block), process=process)
    sink = DeviceSink(host, device, block, poll=None)  # type: ignore[arg-type]
    try:
        _sd()  # sounddevice loaded before the freeze below (OutputError when PortAudio is missing)
        # the ~24 000 objects of the imports out of the collector's reach before the callback runs: a full
        # collection of them holds this process's GIL for 5.5 ms (measured), longer than a 128-frame period
        memory.settle()
        sink.start()
    except Exception as e:  # OutputError and anything PortAudio raises: reported, the parent refuses
        conn.send(("error", f"{e}"))
        ring.close()
        stats.close()
        return
    conn.send(("ready", sink.device_name))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the bridge is gone
            if msg == "counters":  # the callback did not answer: look at the stream, then say everything
                sink.check()
                conn.send({**sink.counters(), **mixer.counters()})
            else:
                break
    finally:
        sink.stop()
        mixer.shared = None  # type: ignore[assignment]
        ring.close()
        stats.close()


class AudioProcessSink:
    """:class:`DeviceSink`'s interface, with the stream and the mixer in a child process (module doc)."""

    def __init__(self, engine: Any, device: str | None = None, block: int = 128, slots: int = SLOTS) -> None:
        if not 16 <= block <= engine.config.max_block:
            raise OutputError(f"block size {block} outside 16..{engine.config.max_block}")
        self.engine = engine
        self.device, self.block, self.slots = device, int(block), int(slots)
        self.ring: SharedEventRing | None = None
        self.stats: SharedStats | None = None
        self.proc: mp.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.restarts = 0
        self.pipe_requests = 0  # counters asked through the pipe (the callback did not answer): each wakes the child
        self.device_name = "?"
        self.error: str | None = None
        self._pipe = threading.Lock()
        self._stopping = False
        self._monitor: threading.Thread | None = None
        self._last: dict[str, Any] = {}
        self._engine_ring: Any = None

    def _slot_frames(self) -> int:
        lengths = [h[-1].shape[-1] for h in getattr(self.engine, "ready", []) if h]
        return max([*lengths, self.engine.rate])  # at least a second: a later model's hits fit too

    def _spawn(self) -> None:
        assert self.ring is not None and self.stats is not None
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        cfg = self.engine.config
        proc = ctx.Process(target=_child, args=(child, self.ring.spec(), self.stats.name, self.engine.rate,
                                                self.device, self.block, cfg.voices, cfg.max_block, cfg.choke),
                           name="kickit-audio", daemon=True)
        proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT):
            proc.terminate()
            raise OutputError(f"audio process did not open the device in {START_TIMEOUT:.0f} s")
        try:
            kind, msg = parent.recv()
        except (EOFError, OSError):
            kind, msg = "error", f"the audio process exited ({proc.exitcode})"
        if kind != "ready":
            proc.join(5)
            raise OutputError(str(msg))
        self.proc, self.conn, self.device_name = proc, parent, str(msg)

    def start(self) -> None:
        self._stopping = False
        release_portaudio()  # this process plays nothing: no client of the audio server left to outlive it
        self.ring = SharedEventRing(self.slots, self._slot_frames())
        self.stats = SharedStats()
        try:
            self._spawn()
        except BaseException:
            self.ring.close()
            self.stats.close()
            self.ring = self.stats = None
            raise
        self._engine_ring = self.engine.ring
        self.engine.ring = self.ring  # from now on the engine's events go to the child
        self._monitor = threading.Thread(target=self._watch, name="kickit-audio-process", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        while not self._stopping:
            time.sleep(0.5)
            proc = self.proc
            if self._stopping or proc is None:
                continue
            if proc.is_alive():
                # the callback answers at its next period while the device plays; when it does not, the pipe
                # wakes the child to look at its stream (a stopped one is reconnected by its device watch)
                if self.stats is not None and self.stats.read() is None:
                    self._ask()
                continue
            self.error = f"the audio process died (exit code {proc.exitcode}); starting it again"
            log.error("%s", self.error)
            with self._pipe:
                self._close_child(wait=False)
                while not self._stopping:
                    try:
                        assert self.ring is not None
                        self.ring.reset()
                        self._spawn()
                        self.restarts += 1
                        self.error = None
                        log.info("audio process restarted")
                        break
                    except OutputError as e:
                        self.error = f"the audio process cannot start again ({e}); retrying"
                        time.sleep(1.0)

    def _close_child(self, wait: bool = True) -> None:
        conn, proc, self.conn, self.proc = self.conn, self.proc, None, None
        if conn is not None:
            try:
                if wait:
                    conn.send("stop")
            except (OSError, ValueError):
                pass
        if proc is not None:
            proc.join(5 if wait else 0.1)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stopping = True
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        with self._pipe:
            self._close_child()
        if self.ring is not None:
            if self.engine.ring is self.ring:
                self.engine.ring = self._engine_ring  # events after the stop go nowhere audible, never to a freed ring
            self.ring.close()
            self.ring = None
        if self.stats is not None:
            self.stats.close()
            self.stats = None

    def describe(self) -> str:
        return (f"audio device {self.device_name!r} at {self.engine.rate} Hz, block {self.block} "
                "(audio process)")

    def counters(self) -> dict[str, Any]:
        """The child's device and mixer counters: from its callback while it plays (:class:`SharedStats`),
        else through the pipe; the last known ones when neither answers in time."""
        stats = self.stats
        got = stats.read() if stats is not None and self.proc is not None else None
        if got is None:
            got = self._ask()
        if got is not None:
            self._last = got
        out = dict(self._last)
        ring = self.ring
        out.update(audio_process_restarts=self.restarts, audio_pipe_requests=self.pipe_requests,
                   ring_truncated=ring.truncated if ring else 0)
        if self.error:
            out["output_error"] = self.error
        return out

    def _ask(self) -> dict[str, Any] | None:
        """The full counters through the pipe (the child looks at its stream first); None when it does not
        answer within a second."""
        got: dict[str, Any] | None = None
        if self._pipe.acquire(timeout=1.0):
            try:
                conn = self.conn
                if conn is not None:
                    self.pipe_requests += 1
                    conn.send("counters")
                    if conn.poll(1.0):
                        got = conn.recv()
            except (EOFError, OSError):
                got = None
            finally:
                self._pipe.release()
        return got
