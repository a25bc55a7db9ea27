"""CPU priority of the render processes (an OS adapter: Linux, macOS/BSD, Windows).

The bridge has three kinds of work: the audio callback (real time: the host API's thread), the bridge's own
threads (MIDI, OSC, hand-over of finished hits; short, and any of them may hold the GIL the callback waits
for) and rendering (inference + reconstruction, 10-25 ms per hit, in helper processes). Rendering is
background work: every note plays a hit that is already rendered, so a render that waits a little costs
nothing audible, while a bridge thread preempted by a render *while it holds the GIL* makes the callback miss
its period (priority inversion, measured: docs/reliability.md). So the render processes run at the lowest
priority the OS gives without privileges, and the bridge's threads preempt them at once:

* Linux: ``SCHED_IDLE`` (runs only when no normal thread wants the core); ``nice 19`` if that is refused.
* macOS and BSD: ``nice 19``.
* Windows: ``BELOW_NORMAL_PRIORITY_CLASS`` (the idle class would also yield to every background program).

When the machine is otherwise idle, a background process runs at full speed: priority only decides who waits
when both want a core. The other side of it: while other programs keep every core busy at normal priority (a
DAW bouncing a project), a render waits for them (measured beside two busy loops on 2 cores: a 20 ms render
took 6.3 s) - the pads still play their ready hits at once, only new hits come late. The render processes
start (import, model, warm-up) at normal priority and lower it just before they report ready, so a bridge
started on such a machine still comes up (2.5 s beside the two busy loops; in the background class from the
start: not in 120 s).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

_BELOW_NORMAL_PRIORITY_CLASS = 0x00004000


def background() -> str:
    """Lower this process's CPU priority below the bridge's (call it in a render process). Returns what was
    set (for logs and tests): ``"SCHED_IDLE"``, ``"nice 19"``, ``"below normal"`` or ``"unchanged"``."""
    if sys.platform == "win32":
        try:
            import ctypes

            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            if kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), _BELOW_NORMAL_PRIORITY_CLASS):
                return "below normal"
        except (AttributeError, OSError):
            pass
        return "unchanged"
    # On Linux both calls act on one thread, not the process: every thread that exists now is lowered (the
    # process's native threads started before this call, e.g. a BLAS pool), and later ones inherit it.
    threads = _threads()
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            for tid in threads:
                _each(lambda t: os.sched_setscheduler(t, os.SCHED_IDLE, os.sched_param(0)), tid)
            return "SCHED_IDLE"
        except OSError:
            pass
    try:
        for tid in threads:
            _each(lambda t: os.setpriority(os.PRIO_PROCESS, t, 19), tid)
        return "nice 19"
    except (AttributeError, OSError):
        return "unchanged"


def _threads() -> list[int]:
    """The calling thread first (0), then this process's other threads (Linux: ``/proc/self/task``)."""
    try:
        others = [int(t) for t in os.listdir("/proc/self/task") if int(t) != threading.get_native_id()]
    except (OSError, ValueError):
        others = []
    return [0, *others]


def _each(call: Callable[[int], object], tid: int) -> None:
    """Apply ``call`` to one thread; one that ended meanwhile is skipped, a refusal of this thread raises."""
    try:
        call(tid)
    except ProcessLookupError:
        pass
    except OSError:
        if tid == 0:
            raise
