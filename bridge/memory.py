"""Process memory settings for long sessions (an OS adapter: glibc on Linux; a no-op elsewhere).

A session allocates and frees the same sizes for hours: a 256 KiB stereo hit per render, a few MB of arrays per
reconstruction, in several threads. glibc serves freed blocks above its mmap threshold from the heap once it
has raised that threshold (it does so dynamically, up to 32 MiB, after the first large free), and per-thread
heaps then fragment: the soak benchmark saw the bridge's resident memory creep up by ~47 MiB/hour with no live
object behind it. Pinning the threshold makes every block of 128 KiB or more a private mapping that goes back
to the OS when it is freed, so resident memory follows what is really in use. Each such allocation costs a
mmap/munmap pair (microseconds), and only render and control threads allocate: the audio callback never does.
"""

from __future__ import annotations

import sys

MMAP_THRESHOLD = 128 * 1024  # bytes: blocks this size or larger are mapped and unmapped on their own
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc malloc.h)


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold in this process (see the module doc). True when it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to pin
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
