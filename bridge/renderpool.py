"""Rendering in helper processes, so the audio callback's process never waits for the GIL of a render.

The audio callback (PortAudio) and the MIDI callback run Python in real-time threads; when a render thread of
the same process holds the GIL and is itself preempted (a loaded machine), the callback misses its period -
priority inversion. :class:`ProcessSource` has the interface of :class:`kickit.bridge.source.ModelSource`
but runs inference + reconstruction in ``processes`` child processes (spawned, each with its own model
session, one intra-op thread, at background CPU priority (:mod:`kickit.bridge.priority`) and with a warm heap
(:func:`kickit.bridge.memory.keep_heap_warm`)); the bridge's render threads only wait on a pipe (GIL
released) and copy the finished hits back. The child runs exactly :meth:`ModelSource.render`, so hits are
bit-identical to the in-process path (``kickit render``, tests).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from kickit.bridge import memory, priority, proctitle
from kickit.bridge.source import ModelSource

log = logging.getLogger("kickit.bridge")


WARM_UP_RENDERS = 32  # hits a render process renders (and throws away) before it reports ready


class RenderProcessError(RuntimeError):
    pass


def _child(path: str, rate: int, conn: Connection) -> None:
    proctitle.set_name(proctitle.RENDER)
    memory.keep_heap_warm()  # renders reuse their pages (kickit.bridge.memory)
    memory.fill_numpy_cache()  # numpy's small-block cache at its ceiling now, not by a creep over the session
    try:
        src = ModelSource.open(path, rate)
        warm = np.random.default_rng(0).standard_normal((WARM_UP_RENDERS, src.latent_dim)).astype(np.float32)
        src.render(warm)  # the first real render finds the heap grown and the code paths loaded
    except Exception as e:  # reported to the parent, which refuses the model
        conn.send(("error", f"{e}"))
        return
    # Start-up at normal priority: on a machine whose cores other programs keep busy (a DAW exporting), a
    # background-class process would not get the CPU to import and warm up at all (measured: no helper ready
    # in 120 s beside two busy loops). The audio callback is not affected either way: it runs in the host's
    # real-time thread. From here on, rendering yields to the bridge's threads (kickit.bridge.priority).
    memory.settle()  # no full collection of the start-up objects in the middle of a render (kickit.bridge.memory)
    priority.background()
    conn.send(("ready", None))
    trimmed, last_trim = False, time.monotonic()
    while True:
        try:
            if not trimmed and not conn.poll(memory.RENDER_IDLE_TRIM_S):
                memory.release()  # a pause: hand the heap's free pages back (kickit.bridge.memory)
                trimmed, last_trim = True, time.monotonic()
            z = conn.recv()
            trimmed = False
        except (EOFError, OSError):
            return
        if z is None:
            return
        try:
            conn.send(("ok", src.render(z)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        if time.monotonic() - last_trim >= memory.RENDER_BUSY_TRIM_S:  # a stream that never pauses: now and
            memory.release()  # then, after the answer went out (what fragmentation left free goes back)
            last_trim = time.monotonic()


class ProcessSource:
    """A model file rendered in child processes; same attributes and methods as ModelSource."""

    renders_in_process = False  # the engine's render threads only wait for the children

    def __init__(self, path: str | os.PathLike[str], rate: int | None = None, processes: int = 2) -> None:
        # validate (and keep knob metadata) in this process: a bad file is refused before any child starts
        self.local = ModelSource.open(path, rate)
        self.model = self.local.model
        self.name, self.path = self.local.name, self.local.path
        self.weights_hash, self.latent_dim = self.local.weights_hash, self.local.latent_dim
        self.reexport_of = self.local.reexport_of
        self.knobs, self.rate, self.model_rate = self.local.knobs, self.local.rate, self.local.model_rate
        ctx = mp.get_context("spawn")
        # the free children, the one that finished last on top: a lone render (a knob move) goes to the child
        # whose caches still hold the last render's code and arrays, not to the one idle longest (a batch
        # still takes every free child)
        self._free: queue.Queue[tuple[mp.process.BaseProcess, Connection]] = queue.LifoQueue()
        self._all: list[tuple[mp.process.BaseProcess, Connection]] = []
        self._lock = threading.Lock()
        try:
            for i in range(max(1, processes)):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_child, args=(str(Path(path).resolve()), self.rate, child),
                                   name=f"kickit-render-proc-{i}", daemon=True)
                proc.start()
                child.close()
                self._all.append((proc, parent))
            for proc, conn in self._all:
                if not conn.poll(120):
                    raise RenderProcessError(f"{path}: render process did not start in 120 s")
                kind, msg = conn.recv()
                if kind != "ready":
                    raise RenderProcessError(f"{path}: render process failed: {msg}")
                self._free.put((proc, conn))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], rate: int | None = None, processes: int = 2) -> ProcessSource:
        return cls(path, rate, processes)

    def knob_names(self) -> list[str]:
        return self.local.knob_names()

    def apply_knobs(self, z: np.ndarray, values: list[float]) -> np.ndarray:
        return self.local.apply_knobs(z, values)

    def render(self, z: np.ndarray) -> np.ndarray:
        """Hits for latents z (B, latent). A batch is shared by every child that is free now (at least one,
        waited for), one hit at a time to whichever child finishes first, so a batch of 8 keeps both cores
        busy however the hits' costs differ; hits do not depend on their batch, so the audio is the same bit
        for bit however it is shared."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        items = [self._free.get(timeout=300)]
        while len(items) < min(len(z), len(self._all)):
            try:
                items.append(self._free.get_nowait())
            except queue.Empty:
                break
        if len(items) == 1:
            chunks = [z]  # one child: the whole batch in one message
        else:
            chunks = [z[i:i + 1] for i in range(len(z))]
        results: list[np.ndarray | None] = [None] * len(chunks)
        failure: str | None = None
        busy: dict[Connection, int] = {}  # connection -> index of the chunk it is rendering
        nxt = 0
        try:
            for _proc, conn in items:
                if nxt < len(chunks):
                    conn.send(chunks[nxt])
                    busy[conn] = nxt
                    nxt += 1
            while busy:  # every child that was sent work is read, so no answer is left behind
                ready = mp_connection.wait(list(busy), timeout=300)
                if not ready:
                    failure = "render process did not answer in 300 s"
                    break
                for conn in ready:
                    i = busy.pop(conn)  # type: ignore[call-overload]
                    kind, payload = conn.recv()  # type: ignore[union-attr]
                    if kind != "ok":
                        failure = failure or str(payload)
                    else:
                        results[i] = payload
                    if nxt < len(chunks) and failure is None:
                        conn.send(chunks[nxt])  # type: ignore[union-attr]
                        busy[conn] = nxt  # type: ignore[index]
                        nxt += 1
        except (EOFError, OSError) as e:
            failure = f"render process died ({e})"
        finally:
            for item in items:
                self._free.put(item)
        if failure is not None:
            raise RenderProcessError(f"{self.name}: {failure}")
        return results[0] if len(results) == 1 else np.concatenate(results)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            procs, self._all = self._all, []
        for _proc, conn in procs:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc, conn in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
            conn.close()
