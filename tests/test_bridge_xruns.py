"""Who made an xrun: the JACK server's own reports (its log), the machine's stalls (kickit.bridge.stalls), and
the benchmarks' attribution from both. Parsing and attribution with plain text and numbers; the detector and
the server's reports for real (a JACK dummy server with a client that overruns on purpose)."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections import deque

import pytest
from kickit.bridge.bench_latency import attribute, split_overruns, xrun_rows
from kickit.bridge.jackprobe import NOT_RUN, client_matches, server_xruns, xrun_causes
from kickit.bridge.stalls import THRESHOLD, during, watch

# as jackd 1.9.21 writes it (dummy backend; seen in a benchmark run)
LOG = """\
JACK server starting in realtime mode with priority 10
JackEngine::XRun: client = kickit-probe was not finished, state = Running
JackEngine::XRun: client = kickit was not finished, state = Triggered
JackAudioDriver::ProcessGraphAsyncMaster: Process error
JackEngine::XRun: client = kickit-probe was not finished, state = Triggered
JackEngine::XRun: client = kickit-audio was not finished, state = Triggered
JackEngine::XRun: client = kickit was not finished, state = Triggered
JackAudioDriver::ProcessGraphAsyncMaster: Process error
JackEngine::XRun: client = kickit was not finished, state = Running
JackAudioDriver::ProcessGraphAsyncMaster: Process error
JackEngine::XRun: client = kickit-audio was not finished, state = Running
JackEngine::XRun: client = kickit-bare was not finished, state = Running
"""


def test_server_reports_are_parsed_and_each_xrun_is_given_to_the_clients_still_running() -> None:
    events = server_xruns(LOG)
    assert [len(e) for e in events] == [2, 3, 1, 2]  # the last report has no closing line: still counted
    assert events[0] == [("kickit-probe", "Running"), ("kickit", "Triggered")] and events[0].stamp is None
    assert events[0].causes() == {"kickit-probe"}  # the MIDI client waited behind the probe
    assert events[1].causes() == {NOT_RUN}  # nobody was running: no client got a CPU in time
    assert events[2].causes() == {"kickit"}
    assert events[3].causes() == {"kickit-audio", "kickit-bare"}  # two at once: counted for both
    assert xrun_causes(events) == {"kickit-probe": 1, NOT_RUN: 1, "kickit": 1, "kickit-audio": 1, "kickit-bare": 1}
    assert server_xruns("") == [] and server_xruns("JACK server starting\n") == []
    assert client_matches("kickit-audio-01", "kickit-audio") and client_matches("kickit", "kickit")
    assert not client_matches("kickit-probe", "kickit") and not client_matches("kickit-audio", "kickit")


def test_attribution_counts_the_bridges_xruns_and_excuses_only_those_in_a_machine_stall() -> None:
    lines = [(10.0 + k * 0.1, line) for k, line in enumerate(LOG.splitlines())]
    events = server_xruns(lines)
    assert events[0].stamp == pytest.approx(10.1) and events[3].stamp == pytest.approx(11.0)
    period = 128 / 44100
    plain = attribute(events)
    assert plain["bridge audio"] == 1 and plain["bridge MIDI"] == 1 and plain["bridge"] == 2
    assert plain["probe"] == 1 and plain["bare client"] == 1 and plain["not run"] == 1 and plain["reports"] == 4
    assert plain["bridge_own"] is None and plain["during_stall"] is None  # stalls not measured
    # a stall just before the MIDI client's late cycle was reported (t=10.8): that one was the machine's
    stalls = [(10.8 - 0.004, 0.003)]
    a = attribute(events, stalls, period)
    assert a["during_stall"]["bridge MIDI"] == 1 and a["during_stall"]["bridge audio"] == 0
    assert a["bridge_own"] == 1  # the audio client's overrun at t=11.0 had no stall: the bridge's own
    assert attribute(events, [(11.0 - 0.002, 0.002), (10.8 - 0.001, 0.0015)], period)["bridge_own"] == 0
    assert attribute(events, [(5.0, 0.01), (11.5, 0.01)], period)["bridge_own"] == 2  # stalls elsewhere in time
    # the MIDI client runs after the probe: late in a cycle the probe itself finished late, it is the probe's
    behind = attribute(events, [], period, probe_late=[(10.8 - 0.002, 120)])
    assert behind["behind_probe"] == 1 and behind["bridge MIDI"] == 0 and behind["bridge_own"] == 1
    assert attribute(events, [], period, probe_late=[(9.0, 120)])["bridge_own"] == 2  # another cycle
    rows = xrun_rows({"xrun_causes": a, "machine_stalls": {"realtime": True, "count": 1, "max_ms": 3.0,
                                                          "total_ms": 3.0}}, "in the run")
    assert "| **1** (reported 2: audio 1 (0 in a stall), MIDI 1 (1 in a stall)) | 0 (NOT met) |" in rows
    assert "not measured" in xrun_rows({"xrun_causes": plain}, "in the run", target=False)


def test_an_overrun_is_the_machines_only_when_a_stall_overlaps_its_period() -> None:
    overrun = (20.0, 0.004, 0.0002)  # ended at 20.0 after waiting 4 ms and running 0.2 ms
    assert during(overrun, [(19.997, 0.003)])  # the stall covered the wait
    assert not during(overrun, [(19.990, 0.003)])  # over before the period began
    assert not during(overrun, [(20.002, 0.003)])  # began after it ended
    assert not during(overrun, [])
    log = [[20.0, 0.004, 0.0002], [25.0, 0.003, 0.0001], [40.0, 0.003, 0.0001]]
    assert split_overruns(log, [(24.998, 0.002)], 15.0, 30.0) == (2, 1)
    assert split_overruns(log, None, 15.0, 30.0) == (2, None)


def test_the_detector_sees_its_thread_held_back() -> None:
    """A stall made on purpose: the detector's thread cannot run while another thread of its process holds
    the GIL for ~30 ms (a long switch interval), so it wakes that much late and records it."""
    found: deque[tuple[float, float]] = deque()
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(stop, found))
    old = sys.getswitchinterval()
    t.start()
    try:
        time.sleep(0.2)
        quiet = len(found)
        sys.setswitchinterval(0.05)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.03:  # pure Python: the GIL is kept for the whole switch interval
            pass
        sys.setswitchinterval(old)
        time.sleep(0.1)
    finally:
        sys.setswitchinterval(old)
        stop.set()
        t.join()
    held = [(s, d) for s, d in list(found)[quiet:] if d > 0.01]
    assert held, list(found)
    assert all(t0 - 0.01 <= s <= t0 + 0.03 for s, _ in held)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (affinity, SCHED_FIFO)")
def test_stall_watch_runs_one_pinned_detector_per_cpu() -> None:
    from kickit.bridge.stalls import StallWatch

    w = StallWatch()
    try:
        assert len(w.info) == len(os.sched_getaffinity(0))
        assert all(i["pinned"] for i in w.info)
        if os.geteuid() == 0:
            assert w.realtime and all(i["policy"].startswith("SCHED_FIFO") for i in w.info)
        time.sleep(0.3)
        got = w.collect()
        assert all(d > THRESHOLD for _, d in got) and w.stalls == got
        assert len(w.by_cpu) == len(got) and {c for c, _, _ in w.by_cpu} <= os.sched_getaffinity(0)
        assert w.collect() == [] or all(s >= got[-1][0] for s, _ in w.stalls[len(got):])
    finally:
        w.close()
    assert all(p.returncode == 0 for p in w.procs)


@pytest.mark.jack
def test_the_jack_server_names_a_client_that_overruns_and_the_stamps_place_it() -> None:
    """A real JACK dummy server and two clients: one whose process callback takes four periods every 50th
    cycle, one that does nothing. The server's own reports (read as they come, stamped) name the slow client
    as still running, never the idle one."""
    jack = pytest.importorskip("jack")
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed")
    from kickit.bridge.jackprobe import DummyJack

    server = DummyJack(44100, 128).start()
    clients = []
    try:
        mark = server.mark()
        slow = jack.Client("kickit-slow", no_start_server=True, servername=server.name)
        idle = jack.Client("kickit-idle", no_start_server=True, servername=server.name)
        clients += [slow, idle]
        count = [0]
        slept: list[float] = []

        @slow.set_process_callback
        def process(frames: int) -> None:
            count[0] += 1
            if count[0] % 50 == 0:
                slept.append(time.perf_counter())
                time.sleep(4 * 128 / 44100)

        idle.set_process_callback(lambda frames: None)
        t0 = time.perf_counter()
        slow.activate()
        idle.activate()
        time.sleep(1.5)
        t1 = time.perf_counter()
        for c in clients:
            c.deactivate()
        time.sleep(0.2)
        events = server.xruns_since(mark)
    finally:
        for c in clients:
            c.close()
        server.close()
    causes = xrun_causes(events)
    assert causes.get("kickit-slow", 0) >= 3, events
    assert "kickit-idle" not in causes
    assert all(e.stamp is not None and t0 <= e.stamp <= t1 + 0.5 for e in events)
    mine = [e for e in events if "kickit-slow" in e.causes()]
    # each report came within a few periods after one of the slow cycles began
    assert all(any(0 <= e.stamp - s < 0.05 for s in slept) for e in mine)
