"""The machine's stalls, measured: the benchmarks' evidence for which late audio periods were not the bridge's.

On a virtual machine a CPU can stop for milliseconds (the host runs something else: "stolen" time), and on a
kernel built without preemption (``PREEMPT_NONE``, usual on servers) a task inside a long system call holds
its CPU until it returns, so a real-time audio thread woken on that CPU waits. Neither is the bridge's doing,
and both make any audio client late, a bare one that only writes silence included (measured with the kernel's
scheduler trace: docs/reliability.md).

``python -m kickit.bridge.stalls --cpu N`` pins itself to CPU ``N`` at the highest real-time priority it is
allowed up to :data:`PRIORITY` (``SCHED_FIFO``, above any audio client's) and wakes every :data:`TICK` seconds on an absolute
schedule; a wake-up later than :data:`THRESHOLD` means that CPU gave nothing to the highest-priority thread on
it for that long: a stall, recorded with its start and length on the system's monotonic clock (Python's
``perf_counter``, which the bridge's callback also uses for its overrun log). It costs ~1 % of a core.
:class:`StallWatch` runs one per CPU from a benchmark; :func:`during` tells whether an overrun of the
bridge's callback overlapped a stall. Linux only (affinity and ``SCHED_FIFO`` as root or with an rtprio
limit); elsewhere, or without the privilege, it says so and the benchmark reports the stalls as unmeasured.

Protocol on stdin/stdout (as :mod:`kickit.bridge.bareclient`): a JSON line when it runs (``{"ready": ...}``),
then, for every line read, a JSON line of the stalls recorded since the previous one; end of input stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

TICK = 0.001  # seconds between wake-ups
THRESHOLD = 0.001  # seconds late: a stall (the kernel's timer slack and Python's own wake-up cost stay below)
KEEP = 4096  # stalls kept between two requests (the oldest are dropped beyond it, and counted)


PRIORITY = 90  # SCHED_FIFO: above audio clients (JACK's run at its priority minus 1: 9 here, 69 with -P 70)


def realtime(priority: int = PRIORITY) -> str:
    """Make the calling thread SCHED_FIFO at ``priority`` (at most the highest allowed). Returns the policy
    set, or why not."""
    if not hasattr(os, "sched_setscheduler"):
        return "no real-time scheduling on this OS"
    try:
        prio = min(priority, os.sched_get_priority_max(os.SCHED_FIFO))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
        return f"SCHED_FIFO {prio}"
    except (OSError, AttributeError) as e:
        return f"not real-time ({e})"


def watch(stop: threading.Event, found: deque[tuple[float, float]], tick: float = TICK,
          threshold: float = THRESHOLD) -> None:
    """The detector's loop, until ``stop``: every stall as (start, seconds) appended to ``found``."""
    clock = time.perf_counter
    due = clock() + tick
    while not stop.is_set():
        wait = due - clock()
        if wait > 0:
            time.sleep(wait)
        now = clock()
        late = now - due
        if late > threshold:
            found.append((due, late))
        due += tick
        if due < now:  # a stall longer than a tick: start again from now
            due = now + tick


def serve(cpu: int) -> int:
    try:
        os.sched_setaffinity(0, {cpu})
        pinned = True
    except (OSError, AttributeError, ValueError):
        pinned = False
    policy = realtime()
    found: deque[tuple[float, float]] = deque(maxlen=KEEP)
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(stop, found), daemon=True)  # inherits affinity and policy
    t.start()
    print(json.dumps({"ready": cpu, "pinned": pinned, "policy": policy}), flush=True)
    try:
        for _line in sys.stdin:
            got = [found.popleft() for _ in range(len(found))]
            print(json.dumps({"cpu": cpu, "stalls": got}), flush=True)
    finally:
        stop.set()
        t.join(1.0)
    return 0


class StallWatch:
    """One detector process per CPU of this machine (see the module doc)."""

    def __init__(self, cpus: list[int] | None = None, timeout: float = 10.0) -> None:
        if cpus is None:
            try:
                cpus = sorted(os.sched_getaffinity(0))
            except AttributeError:
                cpus = list(range(os.cpu_count() or 1))
        self.procs: list[subprocess.Popen[str]] = []
        self.info: list[dict[str, Any]] = []
        self.stalls: list[tuple[float, float]] = []
        self.by_cpu: list[tuple[int, float, float]] = []  # (cpu, start, seconds) of every stall collected
        for cpu in cpus:
            p = subprocess.Popen([sys.executable, "-m", "kickit.bridge.stalls", "--cpu", str(cpu)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            line = self._readline(p, timeout)
            try:
                self.info.append(dict(json.loads(line)))
            except ValueError:
                self.info.append({"ready": cpu, "policy": f"did not start ({line.strip()[-200:]!r})"})

    @staticmethod
    def _readline(p: subprocess.Popen[str], timeout: float) -> str:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        return p.stdout.readline() if ready else ""

    @property
    def realtime(self) -> bool:
        """Whether every detector runs pinned at a real-time priority (else its stalls are not the machine's)."""
        return bool(self.info) and all(i.get("pinned") and str(i.get("policy", "")).startswith("SCHED_FIFO")
                                       for i in self.info)

    def collect(self) -> list[tuple[float, float]]:
        """The stalls recorded since the previous call (each CPU's), also added to :attr:`stalls`."""
        got: list[tuple[float, float]] = []
        for p in self.procs:
            try:
                assert p.stdin is not None
                p.stdin.write("\n")
                p.stdin.flush()
                reply = json.loads(self._readline(p, 5.0))
                mine = [(float(a), float(b)) for a, b in reply["stalls"]]
                self.by_cpu += [(int(reply["cpu"]), a, b) for a, b in mine]
                got += mine
            except (OSError, ValueError, KeyError, AssertionError):
                continue
        got.sort()
        self.stalls += got
        return got

    def close(self) -> None:
        for p in self.procs:
            try:
                if p.stdin is not None:
                    p.stdin.close()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()


def overlaps(start: float, end: float, stalls: list[tuple[float, float]]) -> bool:
    """Whether one of ``stalls`` ((start, seconds)) overlapped the interval ``start`` .. ``end``."""
    return any(s < end and s + d > start for s, d in stalls)


def during(overrun: list[float] | tuple[float, ...], stalls: list[tuple[float, float]], margin: float = 0.0005) -> bool:
    """Whether an overrun of a callback, ``(end, wait, run)`` as :class:`kickit.bridge.outputs.CallbackTiming`
    logs it, overlapped one of ``stalls`` ((start, seconds)): the machine stopped while that period was due."""
    end, wait, run = overrun[0], overrun[1], overrun[2]
    return overlaps(end - wait - run - margin, end + margin, stalls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kickit.bridge.stalls", description=__doc__.splitlines()[0])
    p.add_argument("--cpu", type=int, required=True, help="the CPU to watch")
    args = p.parse_args(argv)
    return serve(args.cpu)


if __name__ == "__main__":
    sys.exit(main())
