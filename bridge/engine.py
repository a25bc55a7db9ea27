"""The live engine: pad state, background rendering, the pre-rendered hits and the voice mixer.

Threads:

* control threads (MIDI input, OSC server, CLI) call :meth:`Engine.note_on`, :meth:`Engine.set_knob`,
  :meth:`Engine.apply` ... They never wait for inference: a note-on plays what is already rendered.
* render workers (started by :meth:`Engine.start`; two by default) re-render pads whose latent or knobs
  changed (coalesced: the latest state is rendered, however many moves arrived meanwhile; a second worker
  starts on a new move while the first still renders an older one, whose result is then discarded). Worker 0
  also keeps each "fresh" pad's queue of new variations full. onnxruntime runs with one intra-op thread.
* the audio callback calls :meth:`Engine.process` (-> :class:`kickit.bridge.voices.Mixer`) only.

Listeners added with :meth:`Engine.add_listener` are called from the render worker as
``callback(pad_index, hit (2, n) float32, sample_rate)`` whenever a pad's current hit changes (the DAW mode
writes WAVs from it). Trigger listeners (:meth:`Engine.add_trigger_listener`) get ``(pad, hit, gain)`` for
every played hit (the file sink writes them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kickit.bridge import memory
from kickit.bridge import pads as padlib
from kickit.bridge.oscmap import Action
from kickit.bridge.pads import KNOB_COUNT, PAD_COUNT, Pad, PadMap
from kickit.bridge.presets import Preset, PresetGroup, load_preset, save_preset
from kickit.bridge.source import HitSource, freeze, same_model
from kickit.bridge.voices import EV_CHOKE, EV_NOTE, EV_PANIC, EventRing, Mixer

log = logging.getLogger("kickit.bridge")

BATCH_PADS = 4

Listener = Callable[[int, np.ndarray, int], None]
TriggerListener = Callable[[int, np.ndarray, float], None]
Layers = tuple[np.ndarray, ...]


@dataclass
class EngineConfig:
    seed: int = 0
    voices: int = 16
    choke: bool = False
    fresh_queue: int = 3  # pre-rendered new variations per "fresh" pad
    velocity_layers: int = 1  # >1: timbre follows velocity along a knob direction (pre-rendered layers)
    velocity_knob: int = 0  # which knob direction the velocity layers move along
    velocity_amount: float = 0.5  # knob value reached by the softest/hardest layer (minus/plus)
    max_block: int = 8192
    render_threads: int = 2  # a knob move starts rendering even while the previous one is still rendering


class Stats:
    """Counters and recent timings for the status panel (written by several threads; reads are snapshots)."""

    def __init__(self) -> None:
        self.render_ms: deque[float] = deque(maxlen=256)  # per render batch, per hit
        self.knob_ready_ms: deque[float] = deque(maxlen=256)  # knob move -> new hit ready
        self.not_ready = 0  # note-ons for a pad with no rendered hit yet
        self.fresh_underruns = 0  # fresh pad played its current hit because the queue was empty
        self.render_errors = 0
        self.hits_rendered = 0


def percentile(values: list[float] | deque[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


class Engine:
    """Pads + render worker + mixer. Thread-safe for control threads; :meth:`process` is the audio path."""

    def __init__(self, source: HitSource, config: EngineConfig | None = None, pad_map: PadMap | None = None) -> None:
        self.config = config or EngineConfig()
        self.source = source
        self.rate = source.rate
        self.pad_map = pad_map or PadMap()
        self.seed = int(self.config.seed)
        self.pads: list[Pad] = padlib.initial_pads(self.seed, source.latent_dim)
        # pad groups (docs/bridge.md): group 0 "main" plays self.source; group g > 0 plays group_sources[g]
        self.group_names: list[str] = ["main"]
        self.group_sources: list[HitSource | None] = [None]
        self.pad_group: list[int] = [0] * PAD_COUNT
        self.selected = 0
        self.ring = EventRing()
        self.mixer = Mixer(self.config.voices, self.config.max_block, self.ring, choke=self.config.choke)
        self.stats = Stats()
        self.events_enabled = True  # False when no audio callback drains the ring (file sink)
        self.ready: list[Layers | None] = [None] * PAD_COUNT  # current hit (velocity layers) per pad
        self._fresh: list[deque[tuple[int, int, Layers]]] = [deque() for _ in range(PAD_COUNT)]
        self._fresh_next = [0] * PAD_COUNT  # counter of the next fresh variation to render per pad
        self._gen = [0] * PAD_COUNT  # bumped on every change of a pad's sound
        self._ready_gen = [-1] * PAD_COUNT  # generation of the hit in ready[p]
        self._changes: list[deque[tuple[int, float]]] = [deque(maxlen=4096) for _ in range(PAD_COUNT)]
        self._dirty: dict[int, float] = {}  # pad -> perf_counter() of the oldest unrendered change
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._listeners: list[Listener] = []
        self._notify_lock = threading.Lock()  # listener calls, one thread at a time (never the audio thread)
        self._trigger_listeners: list[TriggerListener] = []
        self._workers: list[threading.Thread] = []
        self._stop = False
        self._busy = 0  # render batches taken from _dirty / fresh but not stored yet
        for p in range(PAD_COUNT):
            self._dirty[p] = 0.0  # 0: initial render (not a knob move; not in the knob -> ready stats)

    # ----- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._workers:
            self._stop = False
            for i in range(max(1, self.config.render_threads)):
                t = threading.Thread(target=self._run, args=(i == 0,), name=f"kickit-render-{i}", daemon=True)
                t.start()
                self._workers.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._workers:
            t.join(timeout=10)
        self._workers = []

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until every pad has its current hit and every fresh queue is full (or timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not self._workers:
                    self._cond.release()
                    try:
                        self.render_pending()
                    finally:
                        self._cond.acquire()
                else:
                    self._cond.wait(min(left, 0.05))
        return True

    def _idle(self) -> bool:
        return not self._dirty and not self._busy and self._fresh_wanted() is None

    # ----- listeners -----------------------------------------------------------------------------
    def add_listener(self, callback: Listener) -> None:
        """``callback(pad, hit (2, n) float32, rate)`` from the render worker when a pad's current hit changes.
        Called at once for every pad that already has a hit."""
        with self._notify_lock:
            with self._lock:
                self._listeners.append(callback)
                current = [(p, r[-1]) for p, r in enumerate(self.ready) if r is not None]
            for p, hit in current:
                self._call(callback, p, hit)

    def add_trigger_listener(self, callback: TriggerListener) -> None:
        """``callback(pad, hit (2, n), gain)`` from the triggering thread for every played hit."""
        self._trigger_listeners.append(callback)

    def _notify(self, changed: list[tuple[int, np.ndarray]], listeners: list[Listener]) -> None:
        """Tell listeners about new current hits, in order: with several workers a slower, older result must
        never be announced after a newer one, so a hit that is no longer current is skipped."""
        with self._notify_lock:
            for p, hit in changed:
                r = self.ready[p]
                if r is None or r[-1] is not hit:
                    continue
                for cb in listeners:
                    self._call(cb, p, hit)

    def _call(self, cb: Listener, pad: int, hit: np.ndarray) -> None:
        try:
            cb(pad, hit, self.rate)
        except Exception:
            log.exception("hit listener failed")

    # ----- rendering (worker thread or synchronous) --------------------------------------------------
    def source_of(self, p: int) -> HitSource:
        """The source (model) that renders pad ``p``: its group's."""
        g = self.pad_group[p]
        return self.source if g == 0 else self.group_sources[g]  # type: ignore[return-value]

    def _pad_z(self, p: int) -> np.ndarray:
        pad = self.pads[p]
        return self.source_of(p).apply_knobs(pad.latent, pad.knobs)

    def _layer_zs(self, z: np.ndarray, source: HitSource | None = None) -> np.ndarray:
        cfg = self.config
        knobs = (source or self.source).knobs
        if cfg.velocity_layers <= 1 or not knobs:
            return z[None, :]
        knob = knobs[min(cfg.velocity_knob, len(knobs) - 1)]
        offs = padlib.layer_offsets(cfg.velocity_layers, cfg.velocity_amount)
        return np.stack([z + np.float32(knob.offset(o)) * knob.direction for o in offs]).astype(np.float32)

    def _render(self, source: HitSource, zs: np.ndarray) -> np.ndarray | None:
        t0 = time.perf_counter()
        try:
            hits = source.render(zs)
        except Exception as e:
            self.stats.render_errors += 1
            log.error("render failed: %s", e)
            return None
        self.stats.render_ms.append((time.perf_counter() - t0) * 1e3 / max(1, len(zs)))
        self.stats.hits_rendered += len(zs)
        return hits

    def _fresh_wanted(self) -> int | None:
        q = self.config.fresh_queue
        for p in range(PAD_COUNT):
            if self.pads[p].mode == "fresh" and len(self._fresh[p]) < q:
                return p
        return None

    def render_pending(self, fresh: bool = True) -> bool:
        """Do one unit of render work (all dirty pads in one batch, else - when ``fresh`` - one fresh
        variation). False if there was nothing to do. Only one thread renders fresh variations, so they are
        queued in order."""
        with self._lock:
            if self._dirty:
                # knob moves first (oldest first), then initial renders; a few pads per batch so that several
                # workers share a full re-render (start-up, preset load)
                jobs = sorted(self._dirty.items(), key=lambda j: (j[1] == 0.0, j[1], j[0]))
                source = self.source_of(jobs[0][0])  # one batch renders pads of one model (pad group)
                jobs = [j for j in jobs if self.source_of(j[0]) is source][:BATCH_PADS]
                for p, _stamp in jobs:
                    del self._dirty[p]
                zs = [(p, stamp, self._gen[p], self._layer_zs(self._pad_z(p), source)) for p, stamp in jobs]
                kind = "ready"
            else:
                p = self._fresh_wanted() if fresh else None
                if p is None:
                    return False
                source = self.source_of(p)
                k = self._fresh_next[p]
                self._fresh_next[p] = k + 1
                pad = self.pads[p]
                z = padlib.fresh_latent(self._pad_z(p), pad.spread, self.seed, p, k)
                zs = [(p, k, self._gen[p], self._layer_zs(z, source))]
                kind = "fresh"
            self._busy += 1
        try:
            hits = self._render(source, np.concatenate([z for *_, z in zs]))
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        if hits is None:
            with self._lock:  # retry later (a bad model is replaced by load_model; do not spin)
                self._busy -= 1
                if kind == "ready":
                    for p, stamp, _g, _z in zs:
                        self._dirty.setdefault(p, stamp)
            time.sleep(0.05)
            return True
        now = time.perf_counter()
        changed: list[tuple[int, np.ndarray]] = []
        with self._cond:
            self._busy -= 1
            i = 0
            for p, tag, gen, z in zs:
                layers = tuple(freeze(h) for h in hits[i:i + len(z)])
                i += len(z)
                if source is not self.source_of(p):
                    continue  # rendered with a model that was swapped out meanwhile
                if kind == "ready":
                    # Newer than what plays now: store it even if the pad changed again meanwhile (that change
                    # is queued); under a continuous stream of knob moves the pad still updates at render rate.
                    if gen <= self._ready_gen[p]:
                        continue
                    self.ready[p] = layers
                    self._ready_gen[p] = gen
                    changes = self._changes[p]
                    while changes and changes[0][0] <= gen:  # every change this hit includes: now heard
                        self.stats.knob_ready_ms.append((now - changes.popleft()[1]) * 1e3)
                    changed.append((p, layers[-1]))
                elif gen == self._gen[p]:
                    self._fresh[p].append((gen, tag, layers))
            self._cond.notify_all()
            listeners = list(self._listeners)
        self._notify(changed, listeners)
        return True

    def _run(self, fresh: bool = True) -> None:
        if getattr(self.source, "renders_in_process", True):
            try:  # Linux: per-thread nice; rendering in this process yields to the audio and MIDI threads
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
            except (AttributeError, OSError):
                pass
        # (with render processes this thread only waits on a pipe and copies hits: it keeps the normal priority,
        # so it is not preempted while it holds the GIL the audio callback waits for)
        trimmed, last_work = True, time.monotonic()
        while True:
            trim = False
            with self._cond:
                # wait while there is nothing this worker can take (not _idle(): a render in flight on the other
                # worker is not work for this one, and waiting on it would spin)
                while not self._stop and not self._dirty and (not fresh or self._fresh_wanted() is None):
                    if fresh and not trimmed and not self._busy and time.monotonic() - last_work >= memory.IDLE_TRIM_S:
                        trim = True  # idle for a while: give the freed heap pages back, outside the lock
                        break
                    self._cond.wait(0.5 if trimmed or not fresh else memory.IDLE_TRIM_S / 2)
                if self._stop:
                    return
            if trim:
                memory.release()
                trimmed = True
                continue
            try:
                self.render_pending(fresh)
            except Exception:
                self.stats.render_errors += 1
                log.exception("render worker error")
                time.sleep(0.05)
            trimmed, last_work = False, time.monotonic()

    def _touch(self, p: int, stamp: float | None = None) -> None:
        """Pad ``p``'s sound changed: re-render its current hit and drop its queued fresh variations."""
        self._gen[p] += 1
        now = time.perf_counter() if stamp is None else stamp
        self._dirty.setdefault(p, now)
        if now > 0.0:
            self._changes[p].append((self._gen[p], now))
        self._fresh[p].clear()
        self._fresh_next[p] = self.pads[p].fresh_count
        self._cond.notify_all()

    # ----- playing -----------------------------------------------------------------------------
    def _take(self, p: int, wait: bool) -> Layers | None:
        with self._lock:
            pad = self.pads[p]
            if pad.mode == "fresh":
                if not self._fresh[p] and wait:
                    self._fill_fresh_now(p)
                if self._fresh[p]:
                    _gen, k, layers = self._fresh[p].popleft()
                    pad.fresh_count = k + 1
                    self._cond.notify_all()
                    return layers
                self.stats.fresh_underruns += 1
            if wait:  # offline: play the pad's latest state, rendering it now if needed
                while p in self._dirty or (self._busy and self.ready[p] is None):
                    self._lock.release()
                    try:
                        if not self._workers:
                            self.render_pending()
                        else:
                            time.sleep(0.001)
                    finally:
                        self._lock.acquire()
            return self.ready[p]

    def _fill_fresh_now(self, p: int) -> None:
        # offline path: render the next fresh variation synchronously (same variation the worker would make)
        while not self._fresh[p] and self.pads[p].mode == "fresh":
            if self._dirty:
                self.render_pending()
                continue
            k = self._fresh_next[p]
            self._fresh_next[p] = k + 1
            z = padlib.fresh_latent(self._pad_z(p), self.pads[p].spread, self.seed, p, k)
            hits = self._render(self.source_of(p), self._layer_zs(z, self.source_of(p)))
            if hits is None:
                return
            self._fresh[p].append((self._gen[p], k, tuple(freeze(h) for h in hits)))

    def note_on(self, pad: int, velocity: float = 1.0, *, stamp: float | None = None, offset: int = 0,
                wait: bool = False) -> bool:
        """Play ``pad`` at ``velocity`` (0..1) in the next audio block (at ``offset`` samples into it).
        ``wait``: render synchronously if nothing is ready (offline rendering); live calls never wait."""
        if not 0 <= pad < PAD_COUNT:
            return False
        layers = self._take(pad, wait)
        if layers is None:
            self.stats.not_ready += 1
            return False
        hit = layers[padlib.velocity_layer(velocity, len(layers))]
        gain = padlib.velocity_gain(velocity)
        for cb in self._trigger_listeners:
            try:
                cb(pad, hit, gain)
            except Exception:
                log.exception("trigger listener failed")
        if self.events_enabled:
            return self.ring.push(EV_NOTE, pad, hit, gain, offset, time.perf_counter() if stamp is None else stamp)
        return True

    def panic(self) -> None:
        self.ring.push(EV_PANIC)

    def choke(self, pad: int) -> None:
        self.ring.push(EV_CHOKE, pad)

    def process(self, out: np.ndarray) -> None:
        """Audio callback body: mix the voices into ``out`` (frames, 2) float32. Never raises."""
        self.mixer.process(out)

    # ----- editing -----------------------------------------------------------------------------
    def select(self, pad: int) -> None:
        with self._lock:
            self.selected = pad

    def set_knob(self, index: int, value: float, pad: int | None = None) -> None:
        with self._lock:
            p = self.selected if pad is None else pad
            v = float(np.clip(value, -1.0, 1.0))
            if self.pads[p].knobs[index] != v:
                self.pads[p].knobs[index] = v
                self._touch(p)

    def set_knobs(self, values: list[float] | tuple[float, ...], pad: int | None = None) -> None:
        with self._lock:
            p = self.selected if pad is None else pad
            vals = [float(np.clip(v, -1.0, 1.0)) for v in values]
            if self.pads[p].knobs != vals:
                self.pads[p].knobs = vals
                self._touch(p)

    def new_latent(self, pad: int) -> None:
        with self._lock:
            self.pads[pad].latent = padlib.new_latent(self.pads[pad], pad, self.seed)
            self.pads[pad].knobs = [0.0] * KNOB_COUNT
            self._touch(pad)

    def set_mode(self, pad: int, mode: str) -> None:
        with self._lock:
            self.pads[pad].mode = padlib.check_mode(mode)
            self._fresh[pad].clear()
            self._fresh_next[pad] = self.pads[pad].fresh_count
            self._cond.notify_all()

    def set_spread(self, pad: int, spread: float) -> None:
        with self._lock:
            self.pads[pad].spread = float(np.clip(spread, 0.0, padlib.MAX_SPREAD))
            self._touch(pad)

    def store(self, pad: int) -> None:
        """Bake the knob offsets into the pad's latent and zero its knobs (the sound does not change)."""
        with self._lock:
            p = self.pads[pad]
            p.latent = self.source_of(pad).apply_knobs(p.latent, p.knobs).astype(np.float32)
            p.knobs = [0.0] * KNOB_COUNT

    def set_latent(self, pad: int, z: np.ndarray) -> None:
        """Put latent ``z`` on the pad (an encoded sample), knobs to 0; the pad is re-rendered."""
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        with self._lock:
            dim = self.source_of(pad).latent_dim
            if z.shape != (dim,) or not np.all(np.isfinite(z)):
                raise ValueError(f"pad {pad}: latent of shape {z.shape} does not fit its model ({dim} values)")
            self.pads[pad].latent = z.copy()
            self.pads[pad].knobs = [0.0] * KNOB_COUNT
            self._touch(pad)

    def set_seed(self, seed: int) -> None:
        """Seed of later /new latents and fresh variations (existing pads keep their latents)."""
        with self._lock:
            self.seed = int(seed)
            for p in range(PAD_COUNT):
                self._fresh[p].clear()
                self._fresh_next[p] = self.pads[p].fresh_count
            self._cond.notify_all()

    def replace_state(self, pads: list[Pad], seed: int, selected: int = 0) -> None:
        """Install pads (a preset): every pad is re-rendered; old hits keep playing until then."""
        if len(pads) != PAD_COUNT:
            raise ValueError(f"need {PAD_COUNT} pads, got {len(pads)}")
        with self._lock:
            self.pads = [p.copy() for p in pads]
            self.seed = int(seed)
            self.selected = selected
            for p in range(PAD_COUNT):
                self._touch(p, 0.0)

    def swap_source(self, source: HitSource, group: int | str = 0) -> None:
        """Hot swap one pad group (default: the main group) to another model: render its pads with it off the
        audio path, then swap them all at once. The old hits play until the swap; other groups keep playing
        untouched. A latent size change starts the group's pads from fresh seeded latents."""
        with self._lock:
            g = self.group_index(group)
            targets = [p for p in range(PAD_COUNT) if self.pad_group[p] == g]
            current = self.source if g == 0 else self.group_sources[g]
            assert current is not None
            if source.latent_dim != current.latent_dim:
                log.warning("model %s has latent size %d (was %d): pads start from new seeded latents",
                            source.name, source.latent_dim, current.latent_dim)
        self._install(source, g, targets, keep=source.latent_dim == current.latent_dim)

    def add_group(self, name: str, pads: list[int], source: HitSource) -> int:
        """A new pad group ``name`` whose ``pads`` (taken from the groups they were in) play ``source``, from
        fresh seeded latents; rendered before it is installed. Returns the group's index."""
        with self._lock:
            if name in self.group_names:
                raise ValueError(f"pad group {name!r} exists already")
            if not pads or any(not 0 <= p < PAD_COUNT for p in pads) or len(set(pads)) != len(pads):
                raise ValueError(f"pad group {name!r}: pads {pads} must be distinct indices 0..{PAD_COUNT - 1}")
            g = len(self.group_names)
        self._install(source, g, list(pads), keep=False, new_name=name)
        return g

    def group_index(self, group: int | str) -> int:
        """A group's index from its index or name (ValueError naming the groups when there is none such)."""
        if isinstance(group, str) and group in self.group_names:
            return self.group_names.index(group)
        if isinstance(group, int) and not isinstance(group, bool) and 0 <= group < len(self.group_names):
            return group
        known = ", ".join(f"{i} {n}" for i, n in enumerate(self.group_names))
        raise ValueError(f"no pad group {group!r} (groups: {known})")

    def _install(self, source: HitSource, g: int, targets: list[int], *, keep: bool,
                 new_name: str | None = None) -> None:
        with self._lock:
            if source.rate != self.rate:
                raise ValueError(f"new model renders at {source.rate} Hz, the output runs at {self.rate} Hz")
            if keep:
                pads = {p: self.pads[p].copy() for p in targets}
            else:
                seeded = padlib.initial_pads(self.seed, source.latent_dim)
                pads = {p: seeded[p] for p in targets}
            zs = [self._layer_zs(source.apply_knobs(pads[p].latent, pads[p].knobs), source) for p in targets]
        hits = self._render(source, np.concatenate(zs)) if zs else np.zeros((0, 2, 1), np.float32)
        if hits is None:
            raise RuntimeError(f"model {source.name} failed to render; keeping the current model")
        changed = []
        with self._cond:
            if new_name is not None:
                if new_name in self.group_names:
                    raise ValueError(f"pad group {new_name!r} exists already")
                g = len(self.group_names)
                self.group_names.append(new_name)
                self.group_sources.append(source)
                old = None
            elif g == 0:
                old, self.source = self.source, source
            else:
                old, self.group_sources[g] = self.group_sources[g], source
            i = 0
            for p, z in zip(targets, zs, strict=True):
                n = len(z)
                self.ready[p] = tuple(freeze(h) for h in hits[i:i + n])
                i += n
                changed.append((p, self.ready[p][-1]))
                self._gen[p] += 1
                self._ready_gen[p] = self._gen[p]
                self._changes[p].clear()
                self._fresh[p].clear()
                self._fresh_next[p] = pads[p].fresh_count
                self._dirty.pop(p, None)
                self.pads[p] = pads[p]
                self.pad_group[p] = g
            still_used = old is not None and (old is self.source or any(s is old for s in self.group_sources))
            self._cond.notify_all()
            listeners = list(self._listeners)
        self._notify(changed, listeners)
        close = getattr(old, "close", None)  # render processes of the old model
        if close is not None and not still_used:
            close()

    def groups(self) -> list[dict]:
        """Each pad group: index, name, model name and weights hash, its pads."""
        with self._lock:
            return [{"group": g, "name": name, "model": src.name, "weights_hash": src.weights_hash,
                     "pads": [p for p in range(PAD_COUNT) if self.pad_group[p] == g]}
                    for g, name in enumerate(self.group_names)
                    for src in [self.source if g == 0 else self.group_sources[g]] if src is not None]

    # ----- actions (OSC/MIDI) --------------------------------------------------------------------
    def apply(self, action: Action, stamp: float | None = None) -> bool:
        """Apply the engine-level actions (knob, knobs, select, trigger, new, mode, spread, store, seed, panic).
        Returns False for kinds handled elsewhere (model/preset loading, status, connect, learn)."""
        k = action.kind
        if k == "trigger":
            self.note_on(action.pad, action.value, stamp=stamp)
        elif k == "knob":
            self.set_knob(action.index, action.value)
        elif k == "knobs":
            self.set_knobs(action.value)
        elif k == "select":
            self.select(action.pad)
        elif k == "new":
            self.new_latent(action.pad)
        elif k == "mode":
            self.set_mode(action.pad, action.value)
        elif k == "spread":
            self.set_spread(action.pad, action.value)
        elif k == "store":
            self.store(action.pad)
        elif k == "seed":
            self.set_seed(action.value)
        elif k == "panic":
            self.panic()
        else:
            return False
        return True

    # ----- status ------------------------------------------------------------------------------
    def status(self) -> dict:
        s = self.stats
        with self._lock:
            pads = [{"note": self.pad_map.note(i) if i < len(self.pad_map) else None, "mode": p.mode,
                     "ready": self.ready[i] is not None,
                     "fresh_queued": len(self._fresh[i]) if p.mode == "fresh" else None,
                     "group": self.group_names[self.pad_group[i]]}
                    for i, p in enumerate(self.pads)]
            knobs = list(self.pads[self.selected].knobs)
            names = [k.name for k in self.source_of(self.selected).knobs]
        groups = self.groups()
        return {
            "model": self.source.name, "weights_hash": self.source.weights_hash, "rate": self.rate,
            "selected": self.selected, "knobs": knobs, "knob_names": names, "pads": pads,
            **self.mixer.counters(),
            "render_ms_p50": percentile(s.render_ms, 50), "knob_ready_ms_p50": percentile(s.knob_ready_ms, 50),
            "knob_ready_ms_p95": percentile(s.knob_ready_ms, 95),
            "ring_dropped": self.ring.dropped,
            "not_ready": s.not_ready, "fresh_underruns": s.fresh_underruns, "render_errors": s.render_errors,
            "groups": groups,
        }

    # ----- presets -----------------------------------------------------------------------------
    def to_preset(self) -> Preset:
        with self._lock:
            groups = [PresetGroup(self.group_names[g], src.name, src.weights_hash,
                                  os.path.abspath(src.path) if getattr(src, "path", None) else None,
                                  [p for p in range(PAD_COUNT) if self.pad_group[p] == g])
                      for g, src in enumerate(self.group_sources) if src is not None]
            return Preset(self.source.weights_hash, self.source.name, self.seed, self.selected,
                          [p.copy() for p in self.pads], [g for g in groups if g.pads])

    def save_preset(self, path: str | os.PathLike[str]) -> Path:
        return save_preset(path, self.to_preset())

    def load_preset(self, path: str | os.PathLike[str]) -> list[str]:
        """Load a preset file (raises :class:`PresetError`); returns warnings (e.g. another model's preset)."""
        with self._lock:
            dims = [self.source_of(p).latent_dim for p in range(PAD_COUNT)]
        preset = load_preset(path, dims)
        warnings = []
        if not same_model(self.source, preset.model_hash):
            warnings.append(f"{path}: preset was made for model {preset.model_name or '?'} "
                            f"(weights {preset.model_hash[:12]}), playing {self.source.name} "
                            f"(weights {self.source.weights_hash[:12]}): the kicks will sound different")
        for g in preset.groups:
            src = self.group_sources[self.group_index(g.name)] if g.name in self.group_names else None
            if src is None:
                warnings.append(f"{path}: pad group {g.name} ({g.model_name}) is not loaded here: pads {g.pads} "
                                f"play {self.source.name}")
            here = [p for p in range(PAD_COUNT) if src is not None and self.pad_group[p] == self.group_index(g.name)]
            if src is not None and here != sorted(g.pads):
                warnings.append(f"{path}: pad group {g.name} has pads {here} here, the preset's had {g.pads}")
            if src is not None and not same_model(src, g.model_hash):
                warnings.append(f"{path}: pad group {g.name} was made with model {g.model_name or '?'}, playing "
                                f"{src.name}: its hits will sound different")
        self.replace_state(preset.pads, preset.seed, preset.selected)
        return warnings
