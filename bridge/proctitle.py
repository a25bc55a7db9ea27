"""Names for the bridge's helper processes, so ``top``, ``ps`` and the benchmarks tell them apart (an OS
adapter): a spawned helper is otherwise one more ``python`` next to the bridge.

* Linux: the process's ``comm`` (``/proc/self/comm``, at most 15 bytes; what ``top`` and ``ps -o comm`` show).
* macOS and Windows: unchanged (the helpers show as ``python``; Activity Monitor and Task Manager group them
  under the bridge's process tree).
"""

from __future__ import annotations

import sys
from pathlib import Path

RENDER = "kickit-render"
AUDIO = "kickit-audio"
DEVICE_WATCH = "kickit-watch"  # the thread that reconnects a lost audio device


def set_name(name: str) -> bool:
    """Name the calling process (its main thread). Returns whether the OS took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        Path("/proc/self/comm").write_bytes(name.encode("ascii", "replace")[:15])
    except OSError:
        return False
    return True


def set_thread_name(name: str) -> bool:
    """Name the calling thread (Linux: its ``comm``, what ``top -H`` shows). Returns whether the OS took it."""
    if not sys.platform.startswith("linux"):
        return False
    import threading

    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_bytes(name.encode("ascii", "replace")[:15])
    except OSError:
        return False
    return True


def name_of(pid: int) -> str | None:
    """A process's name as :func:`set_name` wrote it (Linux), None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
