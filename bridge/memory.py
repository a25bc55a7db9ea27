"""Process memory for long sessions (an OS adapter: glibc on Linux; a no-op elsewhere).

A session allocates and frees the same sizes for hours: a 256 KiB stereo hit per render, a few MB of arrays per
reconstruction, in several threads. glibc keeps freed blocks in its heaps (it raises its mmap threshold after
the first large free, up to 32 MiB) and every thread that allocates may get its own heap (arena); freed
memory between live blocks then stays resident: the soak benchmark saw the bridge's resident memory creep up
by ~47 MiB/hour with no live object behind it.

What kickit does about it, both off the audio path:

* :func:`limit_arenas`: at most ``ARENAS`` heaps in the bridge process (its control and render threads share
  them instead of each fragmenting its own).
* :func:`keep_heap_warm` (render processes, ``kickit bench render``): every array from the heap, and the heap
  never shrunk by ``free``: a render then reuses the pages the last one used. With glibc's defaults each
  render mapped fresh pages for its large arrays and page-faulted 400-2 400 times (up to 10 MB): a third of
  a render's time on this 2-core VM (8 hits: 129 -> 88 ms of reconstruction, docs/benchmarks.md). A render
  process's heap then stays at the size of one render's working set (tens of MB), the same every render.
* :func:`release`: ``malloc_trim(0)`` hands every whole free page inside the heaps back to the OS. A render
  process calls it after ``RENDER_IDLE_TRIM_S`` without work (the producer paused: the next render pays its
  page faults once) and, under a render stream that never pauses, after a render at most every
  ``RENDER_BUSY_TRIM_S`` (renders of different lengths leave free holes in a heap that never shrinks: without
  the trims a helper crept from 113 to 121 MiB in 3 minutes); the bridge's render threads after ``IDLE_TRIM_S``.

* :func:`fill_numpy_cache` (render processes, and the bridge when it renders in its own process): numpy keeps
  up to ``NUMPY_CACHE_DEPTH`` freed array buffers of each size under ``NUMPY_CACHE_BYTES`` bytes for reuse
  (its small-block cache, in C: ``tracemalloc`` does not see it). The reconstruction's small arrays change
  size with each hit (its support, its runs), so over a session the cache slowly fills with buffers of
  hundreds of sizes, scattered over the heap: a render process's live heap grew ~1 MiB in 2 000 renders
  (``mallinfo``; ``mtrace`` named numpy's data allocator for 713 of the 735 blocks left live), slower and
  slower up to the cache's ceiling (~3.6 MiB), and the soak read that creep as growth. Filled at start-up,
  the cache sits at its ceiling from the first render, in one compact run of the heap: the same render
  process grew 0.15 MiB in those 2 000 renders, ~4 KiB per 500 after the first 500 (docs/reliability.md).

And for the audio callback, which runs Python: :func:`settle` (after start-up and after each model swap) moves
every object alive then out of the cyclic garbage collector's reach (``gc.freeze``). A full collection of
the bridge's ~32 000 start-up objects holds the GIL for 5-7 ms (measured; more than a 2.9 ms period), in
whatever thread triggers it, while the callback waits; after the freeze it scans only what is new (0.001 ms).
The render processes settle too, after their warm-up: a full collection there landed inside a render now and
then (a hit's PGHI took 14 ms instead of 5).

Measured, and why not the obvious fix for memory: pinning the mmap threshold low (every block of 128 KiB or
more mapped and unmapped on its own) also returns the memory, but each render then page-faults its whole
working set afresh (435 000 minor faults for 43 renders instead of 21 000) and took 40 ms instead of 17 ms.
"""

from __future__ import annotations

import gc
import sys
from functools import lru_cache
from typing import Any

ARENAS = 2  # malloc arenas in the bridge process
NUMPY_CACHE_BYTES = 1024  # numpy caches freed array buffers smaller than this (numpy/_core/src/multiarray/alloc.c)
NUMPY_CACHE_DEPTH = 7  # ... this many of each size in bytes
IDLE_TRIM_S = 1.0  # seconds without a render before the bridge's render threads trim the heap
RENDER_IDLE_TRIM_S = 5.0  # seconds without a render before a render process trims its (warm) heap
RENDER_BUSY_TRIM_S = 10.0  # a render process that is never idle trims after a render at most this often
WARM_MMAP_THRESHOLD = 32 << 20  # bytes: blocks under it come from the heap (glibc's largest allowed value)
WARM_TRIM_THRESHOLD = 1 << 30  # bytes of free heap top before free() shrinks the heap: in effect never
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameter numbers (glibc malloc.h)


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (e.g. musl, macOS, Windows): their allocators need nothing
        return None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas in this process (call before threads start). True when it was set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, int(arenas)))


def keep_heap_warm() -> bool:
    """Serve every block under ``WARM_MMAP_THRESHOLD`` from the heap and never shrink it on ``free`` (glibc
    ``mallopt``), so repeated renders reuse warm pages instead of page-faulting fresh ones. For a process
    whose work is renders (call before the first one). True when it was set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, WARM_MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, WARM_TRIM_THRESHOLD))


def fill_numpy_cache() -> int:
    """Fill numpy's small-block cache (freed array buffers under ``NUMPY_CACHE_BYTES``, ``NUMPY_CACHE_DEPTH``
    of each size) to its ceiling now, in one run of the heap, instead of by the odd size over hours of renders
    (the creep the soak measured). Call it early in a process whose work is renders (before its warm-up). A
    numpy without the cache (another build, a later version) frees the blocks at once: nothing is kept.
    Returns the bytes offered to the cache (~3.6 MiB)."""
    import numpy as np

    sizes = range(1, NUMPY_CACHE_BYTES)
    blocks = [np.empty(size, dtype=np.uint8) for size in sizes for _ in range(NUMPY_CACHE_DEPTH)]
    del blocks  # freed at once: numpy keeps them
    return NUMPY_CACHE_DEPTH * sum(sizes)


def release() -> bool:
    """Return the free pages of every malloc heap to the OS (glibc ``malloc_trim``); True if any was returned.
    Takes a few milliseconds on a render process's heap: call it when idle, never on the audio path."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def settle(collect: bool = True) -> None:
    """Exempt every object alive now from the cyclic GC's full collections (``gc.freeze``), so none of them
    holds the GIL for milliseconds while the audio callback waits, or stalls a render in a render process (a
    full collection there took 5-10 ms out of a 15 ms render). ``collect`` first frees what is garbage now
    (a full collection: do it before playing, e.g. at start-up; a model swap while playing passes False)."""
    if collect:
        gc.collect()
    gc.freeze()
