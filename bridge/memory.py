"""Process memory for long sessions (an OS adapter: glibc on Linux; a no-op elsewhere).

A session allocates and frees the same sizes for hours: a 256 KiB stereo hit per render, a few MB of arrays per
reconstruction, in several threads. glibc keeps freed blocks in its heaps (it raises its mmap threshold after
the first large free, up to 32 MiB) and every thread that allocates may get its own heap (arena); freed
memory between live blocks then stays resident: the soak benchmark saw the bridge's resident memory creep up
by ~47 MiB/hour with no live object behind it.

What kickit does about it, both off the audio path:

* :func:`limit_arenas`: at most ``ARENAS`` heaps in the bridge process (its control and render threads share
  them instead of each fragmenting its own).
* :func:`release`: ``malloc_trim(0)`` hands every whole free page inside the heaps back to the OS. The render
  processes call it after ``IDLE_TRIM_S`` without work (and, under a render stream that never pauses, after
  a render every ``BUSY_TRIM_S``), the bridge's render threads when they go idle: a burst of renders keeps its
  warm heap and a pause gives the memory back.

And for the audio callback, which runs Python: :func:`settle` (after start-up and after each model swap) moves
every object alive then out of the cyclic garbage collector's reach (``gc.freeze``). A full collection of
the bridge's ~32 000 start-up objects holds the GIL for 5-7 ms (measured; more than a 2.9 ms period), in
whatever thread triggers it, while the callback waits; after the freeze it scans only what is new (0.001 ms).

Measured, and why not the obvious fix: pinning the mmap threshold (every block of 128 KiB or more mapped and
unmapped on its own) also returns the memory, but each render then page-faults its whole working set afresh
(435 000 minor faults for 43 renders instead of 21 000) and took 40 ms instead of 17 ms.
"""

from __future__ import annotations

import gc
import sys
from functools import lru_cache
from typing import Any

ARENAS = 2  # malloc arenas in the bridge process
IDLE_TRIM_S = 1.0  # seconds without a render before a render process trims its heap
BUSY_TRIM_S = 10.0  # a render process that is never idle trims after a render at most this often
_M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)


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


def release() -> bool:
    """Return the free pages of every malloc heap to the OS (glibc ``malloc_trim``); True if any was returned.
    Takes a few milliseconds on a render process's heap: call it when idle, never on the audio path."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def settle(collect: bool = True) -> None:
    """Exempt every object alive now from the cyclic GC's full collections (``gc.freeze``), so none of them
    holds the GIL for milliseconds while the audio callback waits. ``collect`` first frees what is garbage now
    (a full collection: do it before playing, e.g. at start-up; a model swap while playing passes False)."""
    if collect:
        gc.collect()
    gc.freeze()
