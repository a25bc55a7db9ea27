"""``kickit bench latency``: the bridge on a real JACK server (dummy backend), driven and measured by a second
JACK client.

The benchmark starts its own JACK server (44.1 kHz, period 128 by default), runs ``kickit bridge`` as a
subprocess (its own process and GIL, as in real use; audio through PortAudio, MIDI on a virtual JACK port,
OSC on a free UDP port) and a probe client (JACK-Client package) in this process that

* every ``--note-interval`` seconds sends CC 123 (all notes off) and, 10 ms later, a note-on for pad 0; the
  probe writes each event at the start of a JACK cycle and records the cycle's frame time, and captures the
  bridge's output by frame: note-on -> first sample is a frame difference (checked against the pad's
  pre-rendered hit, which the benchmark renders itself to know where the hit's first sample is);
* sends OSC knob moves for pad 1 every ``--knob-interval`` seconds; knob -> new hit ready comes from the
  bridge's own timing (OSC arrival -> hit swapped in), read with /kickit/status;
* counts xruns: the bridge's callback status flags, and the server's xruns seen by the probe.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kickit.bridge.bareclient import JACK_NAME as BARE_NAME
from kickit.bridge.bareclient import BareClient
from kickit.bridge.jackprobe import NOT_RUN, ServerXrun, client_matches
from kickit.bridge.midi_in import DEFAULT_VIRTUAL_NAME
from kickit.bridge.outputs import JACK_CLIENT, SWITCH_INTERVAL
from kickit.bridge.stalls import StallWatch, overlaps

from kickit.benchdoc import write_section


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model file (default: the shipped model, else tests' tiny model)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the traffic run (default 60)")
    p.add_argument("--period", type=int, default=128, help="JACK period in frames (default 128)")
    p.add_argument("--rate", type=int, default=44100, help="JACK sample rate (default 44100)")
    p.add_argument("--note-interval", type=float, default=0.1, help="seconds between note-ons (default 0.1)")
    p.add_argument("--knob-interval", type=float, default=0.05, help="seconds between knob moves (default 0.05)")
    p.add_argument("--no-audio-process", dest="audio_process", action="store_false",
                   help="passed to kickit bridge: the audio callback in the bridge's own process (for comparison)")
    p.add_argument("--render-processes", type=int, default=2,
                   help="passed to kickit bridge (default 2; 0 = render threads in the bridge process)")


def _default_model() -> Path | None:
    from kickit.modelfile import default_model_path

    m = default_model_path()
    if m is not None:
        return m
    tiny = Path(__file__).resolve().parent.parent / "tests" / "data" / "models" / "tiny-spec.onnx"
    return tiny if tiny.exists() else None


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _status(sock: socket.socket, port: int) -> dict:
    from kickit.bridge.oscmap import build

    # The bridge also sends this socket its notifications (a hit ready per knob move): after minutes of traffic
    # they fill its receive buffer and the kernel would drop the reply. Drain first; ask again every 0.5 s.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            sock.recvfrom(65536)
    except (BlockingIOError, InterruptedError):
        pass
    finally:
        sock.settimeout(timeout)
    deadline = time.monotonic() + 15
    asked = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - asked >= 0.5:
            sock.sendto(build("/kickit/status"), ("127.0.0.1", port))
            asked = time.monotonic()
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            continue
        reply = _status_reply(data)
        if reply is not None:
            return reply
    raise RuntimeError("the bridge did not answer /kickit/status in 15 s")


def _status_reply(data: bytes) -> dict | None:
    """The bridge's /kickit/status reply in a datagram (None: another message, e.g. a notification)."""
    from pythonosc.osc_packet import OscPacket

    for tm in OscPacket(data).messages:
        if tm.message.address == "/kickit/status":
            return json.loads(tm.message.params[0])
    return None


def _kb(path: Path, key: str) -> int | None:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return None


def process_memory(pid: int) -> list[tuple[int, str, int, int | None]]:
    """(pid, name, RSS KiB, PSS KiB) of a process and all its descendants (the bridge, its render and audio
    helpers; names from :mod:`kickit.bridge.proctitle`, the root is ``bridge``). RSS counts a page shared by
    several processes (libraries, the audio ring in shared memory) in each of them; PSS shares it out, so the
    PSS sum is what the tree really holds. Empty when the process is gone. Linux (``/proc``)."""
    from kickit.bridge.proctitle import name_of

    out: list[tuple[int, str, int, int | None]] = []
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            rss = _kb(Path(f"/proc/{p}/status"), "VmRSS:")
            try:
                pss = _kb(Path(f"/proc/{p}/smaps_rollup"), "Pss:")
            except OSError:  # kernels before 4.14, or not permitted
                pss = None
            children = [int(c) for task in Path(f"/proc/{p}/task").iterdir()
                        for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if rss is not None:
            out.append((p, "bridge" if p == pid else (name_of(p) or "?"), rss, pss))
        todo.extend(children)
    return out


def _at_rest(pid: int, rest: float) -> list[tuple[int, str, int, int | None]]:
    """``process_memory`` after ``rest`` seconds without traffic (nothing when ``rest`` is 0)."""
    if rest <= 0:
        return []
    time.sleep(rest)
    return process_memory(pid)


# what measure() returns for the reports only (raw samples, stderr): left out of the benchmarks' JSON summaries
RAW_KEYS = ("bridge_stderr_tail", "rss_kb", "procs", "rest_before", "rest_after")


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int | None:
    """A counter's increase between two status replies (None when either lacks it)."""
    if key not in after or key not in before:
        return None
    return int(after[key]) - int(before[key])


def overruns(idle0: dict[str, Any], before: dict[str, Any], after: dict[str, Any], bare0: dict[str, Any],
             bare1: dict[str, Any], bare2: dict[str, Any]) -> dict[str, int | None]:
    """The bridge's callback overruns and the bare client's (the control), over the idle baseline
    (``idle0`` -> ``before``) and the measured run (``before`` -> ``after``), from status replies and the bare
    client's counters taken at the same three moments."""
    return {"bridge_overruns": _delta(after, before, "callback_overruns"),
            "bare_overruns": _delta(bare2, bare1, "callback_overruns"),
            "bare_callbacks": _delta(bare2, bare1, "callbacks"),
            "idle_bridge_overruns": _delta(before, idle0, "callback_overruns"),
            "idle_bare_overruns": _delta(bare1, bare0, "callback_overruns"),
            "bridge_overruns_waiting": _delta(after, before, "callback_overruns_waiting"),
            "bare_overruns_waiting": _delta(bare2, bare1, "callback_overruns_waiting")}


XRUN_WINDOW_PERIODS, XRUN_WINDOW_MARGIN_S = 3, 0.001  # before a server report: when its late cycle may have run
ROLES = {"bridge audio": JACK_CLIENT, "bridge MIDI": DEFAULT_VIRTUAL_NAME, "probe": "kickit-probe",
         "bare client": BARE_NAME}


def attribute(events: list[ServerXrun], stalls: list[tuple[float, float]] | None = None,
              period_s: float = 128 / 44100, probe_late: list[tuple[float, int]] | None = None) -> dict[str, Any]:
    """The JACK server's xrun reports over a run, counted by who made them (:meth:`ServerXrun.causes`): the
    bridge's audio client or its MIDI client (the benchmark's bridge uses the virtual port's default name),
    the probe, the bare control client, nobody run in time ("not run"), or another client. ``bridge`` is the
    first two together, ``reports`` the number of xruns the server reported. With the machine's ``stalls``
    (:class:`kickit.bridge.stalls.StallWatch`), ``during_stall`` counts, per role, the xruns whose late cycle
    overlapped a stall of the machine (from three periods before the server's report was read to that moment),
    and ``bridge_own`` is the bridge's xruns without one: the ones it caused itself. None when the stalls were
    not measured. The bridge's MIDI client runs after the probe in the graph (the probe sends it the notes):
    with ``probe_late`` (:attr:`JackProbe.late_finishes`), an xrun of that client in a cycle the probe itself
    finished late is the probe's ("probe" in ``behind_probe``), not the bridge's."""
    roles = [*ROLES, "not run", "other"]
    out: dict[str, Any] = dict.fromkeys(roles, 0)
    during = dict.fromkeys(roles, 0)
    behind = 0
    for event in events:
        stamp = event.stamp
        window = (stamp - XRUN_WINDOW_PERIODS * period_s - XRUN_WINDOW_MARGIN_S, stamp) if stamp is not None else None
        stalled = stalls is not None and window is not None and overlaps(*window, stalls)
        for client in event.causes():
            role = "not run" if client == NOT_RUN else next(
                (k for k, name in ROLES.items() if client_matches(client, name)), "other")
            if role == "bridge MIDI" and not stalled and window is not None and probe_late is not None and any(
                    window[0] <= t <= window[1] for t, _ in probe_late):
                behind += 1
                continue
            out[role] += 1
            during[role] += int(stalled)
    bridge = out["bridge audio"] + out["bridge MIDI"]
    own = None if stalls is None else bridge - during["bridge audio"] - during["bridge MIDI"]
    return {**out, "bridge": bridge, "reports": len(events), "during_stall": during if stalls is not None else None,
            "bridge_own": own, "behind_probe": behind}


def stall_baseline(watch: Any, seconds: float) -> float | None:
    """The machine's stalls per minute with only the JACK server running (before the bridge starts): whether
    the bridge's load adds stalls of its own. None when the detector is not real-time."""
    watch.collect()
    time.sleep(seconds)
    n = len(watch.collect())
    return n * 60.0 / seconds if watch.realtime else None


def stall_summary(watch: Any, stalls: list[tuple[float, float]] | None, seconds: float = 0.0,
                  quiet_per_min: float | None = None, period_s: float = 128 / 44100) -> dict[str, Any]:
    """The report's figures on the machine's stalls over a run of ``seconds`` at ``period_s`` (and, for
    comparison, the rate measured before the bridge started)."""
    d = [x for _, x in stalls or []]
    # the share of the run in which an xrun would count as "in a stall" (attribute's window around each one):
    # the chance that an xrun with nothing to do with a stall is excused by accident
    widen = XRUN_WINDOW_PERIODS * period_s + XRUN_WINDOW_MARGIN_S
    cover = min(1.0, sum(x + widen for x in d) / seconds) if seconds > 0 else None
    return {"realtime": bool(watch.realtime) and stalls is not None, "count": len(d),
            "max_ms": max(d, default=0.0) * 1e3, "total_ms": sum(d) * 1e3, "cover": cover,
            "per_min": len(d) * 60.0 / seconds if seconds > 0 else None, "quiet_per_min": quiet_per_min,
            "policy": [i.get("policy") for i in watch.info]}


def split_overruns(log: list[list[float]], stalls: list[tuple[float, float]] | None, t0: float,
                   t1: float) -> tuple[int, int | None]:
    """A callback's logged overruns between ``t0`` and ``t1`` (perf_counter): how many, and how many of them
    overlapped a stall of the machine (:func:`kickit.bridge.stalls.during`; None when not measured)."""
    from kickit.bridge.stalls import during

    mine = [o for o in log if t0 <= o[0] <= t1]
    return len(mine), None if stalls is None else sum(during(o, stalls) for o in mine)


def xrun_rows(r: dict[str, Any], during: str, target: bool = True) -> str:
    """The report's rows on xruns: the server's attribution (the target's measure), the machine's stalls, then
    the callbacks' own view. ``target``: with the target column (a three-column table)."""
    a = r.get("xrun_causes")
    rows: list[tuple[str, str, str]] = []
    if not a:
        rows.append(("xruns caused by the bridge (the JACK server's reports)", "- (no server log)", "0"))
    else:
        own = a.get("bridge_own")
        ok = "met" if (a["bridge"] if own is None else own) == 0 else "NOT met"
        d = a.get("during_stall") or {}

        def st(role: str) -> str:
            return f" ({d[role]} in a stall)" if d else ""

        rows.append((f"xruns caused by the bridge {during}: xruns the JACK server reported with the bridge's audio "
                     "or MIDI client still running its cycle, less those whose late cycle overlapped a stall of "
                     "the machine", f"**{'-' if own is None else own}** (reported {a['bridge']}: audio "
                     f"{a['bridge audio']}{st('bridge audio')}, MIDI {a['bridge MIDI']}{st('bridge MIDI')})",
                     f"0 ({ok})"))
        behind = f"; the bridge's MIDI client late behind a late probe: {a['behind_probe']}" if a.get(
            "behind_probe") else ""
        rows.append((f"the other xruns the server reported {during}, by who was still running: the probe / the "
                     "bare control client / no client run in time / another client",
                     f"{a['probe']}{st('probe')} / {a['bare client']}{st('bare client')} / {a['not run']}"
                     f"{st('not run')} / {a['other']} (of {a['reports']}){behind}", ""))
    stalls = r.get("machine_stalls")
    if stalls and stalls.get("realtime"):
        rate = "" if stalls.get("per_min") is None else f"; {stalls['per_min']:.0f} per minute"
        if stalls.get("quiet_per_min") is not None:
            rate += f", {stalls['quiet_per_min']:.0f} per minute before the bridge started"
        if stalls.get("cover") is not None:
            rate += f"; an unrelated xrun would fall in one by chance {stalls['cover']:.1%} of the time"
        rows.append(("the machine's stalls over the run: a CPU giving nothing for more than 1 ms to a real-time "
                     "thread above the audio clients (`kickit.bridge.stalls`)",
                     f"{stalls['count']} (longest {stalls['max_ms']:.1f} ms, {stalls['total_ms']:.0f} ms in all"
                     f"{rate})", ""))
    else:
        rows.append(("the machine's stalls over the run", "not measured (needs Linux and real-time priority)", ""))
    cb = r.get("callback_overrun_split")
    rows.append(("callbacks timed from inside, periods whose GIL wait + mixing overran: the bridge's / the bare "
                 "client's", f"{cb['bridge'][0]} ({cb['bridge'][1]} in a stall) / {cb['bare'][0]} "
                 f"({cb['bare'][1]} in a stall)" if cb else
                 f"{r.get('bridge_overruns', '-')} / {r.get('bare_overruns', '-')}", ""))
    return "".join(f"| {m} | {v} | {t} |\n" if target else f"| {m} | {v} |\n" for m, v, t in rows)


def control_rows(r: dict[str, Any], during: str) -> str:
    """The report's rows for the control: the bare client's overruns ``during`` the run, then both idle."""
    return (f"| control: overruns of a bare Python audio client on the same server {during} (the machine's own) "
            f"| {r.get('bare_overruns', '-')} of {r.get('bare_callbacks', '-')} callbacks | |\n"
            f"| of those overruns, the ones whose wait alone (host API's call -> the callback's Python code) was a "
            f"period or more, before any mixing: bridge / bare client | {r.get('bridge_overruns_waiting', '-')} / "
            f"{r.get('bare_overruns_waiting', '-')} | |\n"
            f"| overruns in {r['baseline_seconds']:.0f} s idle before: bridge / bare client | "
            f"{r.get('idle_bridge_overruns', '-')} / {r.get('idle_bare_overruns', '-')} | |\n")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def measure(model: Path, seconds: float, period: int, rate: int, note_interval: float,
            knob_interval: float, baseline: float = 5.0, render_processes: int = 2, audio_process: bool = True,
            rest: float = 0.0) -> dict:
    """One run of the bridge under note and knob traffic (module doc). ``rest`` > 0: the bridge's processes'
    memory is also sampled at rest, ``rest`` seconds after the last render before the traffic and again after
    it (``rest_before`` / ``rest_after``): the same quiet state twice, so what the traffic left behind is
    told apart from a render helper's working set, which it holds while busy and hands back when idle."""
    from kickit.bridge.engine import Engine, EngineConfig
    from kickit.bridge.jackprobe import DummyJack, JackProbe
    from kickit.bridge.oscmap import build
    from kickit.bridge.source import ModelSource

    # the hit pad 0 will play (same model, seed 0): where its first sample is, and what it must sound like
    eng = Engine(ModelSource.open(model, rate), EngineConfig(seed=0))
    expected = eng.source.render(eng.source.apply_knobs(eng.pads[0].latent, eng.pads[0].knobs)[None])[0]
    del eng

    server = DummyJack(rate, period).start()
    # the probe's process callback takes this process's GIL: hand it over as fast as the bridge does
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    bridge = None
    probe = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    errlog = tempfile.TemporaryFile()
    bare: BareClient | None = None
    watch: StallWatch | None = None
    try:
        watch = StallWatch()  # the machine's own stalls, per CPU: first without the bridge, then under it
        quiet = stall_baseline(watch, baseline)
        osc_port = _free_udp_port()
        env = dict(os.environ, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "kickit.cli", "bridge", "--model", str(model), "--midi-api", "jack",
             "--osc-port", str(osc_port), "--block", str(period), "--seed", "0",
             "--render-processes", str(render_processes), *([] if audio_process else ["--no-audio-process"])],
            env=env, stdout=subprocess.DEVNULL, stderr=errlog)
        probe = JackProbe(server.name, seconds=seconds + 10)
        midi = probe.find_port("kickit", midi=True, is_input=True, timeout=120)
        outs = probe.find_port(f"{JACK_CLIENT}:", is_output=True, timeout=10)
        if not midi or len(outs) < 2:
            raise RuntimeError("the bridge did not open its JACK ports in time")
        probe.activate(outs[:2], midi[0])
        bare = BareClient(period, env)  # the control: a Python audio client that does nothing else
        time.sleep(0.3)
        sock.sendto(build("/kickit/pad/1/select"), ("127.0.0.1", osc_port))
        server0, status0, bare0 = probe.xruns, _status(sock, osc_port), bare.counters()
        time.sleep(baseline)  # the bridge running with no traffic: the machine's own xrun rate
        before, bare1 = _status(sock, osc_port), bare.counters()
        idle_server, idle_bridge = probe.xruns - server0, _delta(before, status0, "xruns")
        rest_before = _at_rest(bridge.pid, rest)
        server_xruns0, log_mark = probe.xruns, server.mark()
        watch.collect()  # from here on
        pc0 = time.perf_counter()
        probe.start_capture()
        rng = np.random.default_rng(0)
        t0 = time.monotonic()
        next_knob = t0 + 0.01
        traffic = NoteTraffic(probe, bridge.pid, t0, note_interval)
        rss, procs = traffic.rss, traffic.procs
        poll = StatusPoll(sock, osc_port, t0)
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            traffic.tick(now)
            poll.tick(now, t0)
            if now >= next_knob:
                sock.sendto(build(f"/kickit/knob/{int(rng.integers(8))}", float(rng.uniform(-1, 1))),
                            ("127.0.0.1", osc_port))
                next_knob += knob_interval
            time.sleep(0.002)
        time.sleep(0.3)
        probe.capturing = False
        after, bare2 = _status(sock, osc_port), bare.counters()
        server_xruns = probe.xruns - server_xruns0
        pc1 = time.perf_counter()
        stalls = watch.collect() if watch.realtime else None
        causes = attribute(server.xruns_since(log_mark), stalls, period / rate, list(probe.late_finishes))
        poll.keep(after)
        bare_log = {o[0]: o for b in (bare1, bare2) for o in b.get("callback_overrun_log") or []}
        split = {"bridge": split_overruns(list(poll.overruns.values()), stalls, pc0, pc1),
                 "bare": split_overruns(list(bare_log.values()), stalls, pc0, pc1)}
        machine = stall_summary(watch, stalls, pc1 - pc0, quiet, period / rate)
        rest_after = _at_rest(bridge.pid, rest)
    except RuntimeError as e:  # the bridge stopped answering: say in what state, with its last words
        state = "still running" if bridge is not None and bridge.poll() is None else (
            f"exited with {bridge.returncode}" if bridge is not None else "not started")
        stacks = stack_dump(bridge.pid) if bridge is not None and bridge.poll() is None else ""
        tail = " | ".join(stop_bridge(bridge, errlog).strip().splitlines()[-5:]) or "(nothing)"
        bridge = None
        raise RuntimeError(f"{e} (the bridge {state}; its stderr ends: {tail}){stacks}") from None
    finally:
        sock.close()
        if bare is not None:
            bare.close()
        if watch is not None:
            watch.close()
        if probe is not None:
            probe.close()
        err = stop_bridge(bridge, errlog) if not errlog.closed else ""
        server.close()
        sys.setswitchinterval(switch)
    notes, latencies, exact = match_notes(probe, expected)
    lat = np.asarray(latencies, dtype=np.float64)
    return {
        "model": model.name, "render_processes": render_processes, "audio_process": audio_process, "rate": rate, "period": period, "seconds": seconds, "notes_sent": notes,
        "notes_measured": len(latencies), "notes_bit_exact": exact,
        "note_p50_frames": _pct(list(lat), 50), "note_p99_frames": _pct(list(lat), 99),
        "note_max_frames": float(lat.max()) if len(lat) else float("nan"),
        "knob_ready_p50_ms": after.get("knob_ready_ms_p50"), "knob_ready_p95_ms": after.get("knob_ready_ms_p95"),
        "render_ms_per_hit": after.get("render_ms_p50"),
        "bridge_xruns": int(after.get("xruns", 0)) - int(before.get("xruns", 0)),
        **overruns(status0, before, after, bare0, bare1, bare2),
        "bare_callback_wait_max_ms": bare2.get("callback_wait_max_ms"),
        "callback_max_ms": after.get("callback_max_ms"), "callback_wait_max_ms": after.get("callback_wait_max_ms"),
        "callback_max_before_ms": before.get("callback_max_ms"),
        "callback_wait_max_before_ms": before.get("callback_wait_max_ms"),
        "server_xruns": server_xruns, "xrun_causes": causes, "machine_stalls": machine,
        "callback_overrun_split": split, "baseline_seconds": baseline,
        "idle_server_xruns": idle_server, "idle_bridge_xruns": idle_bridge, "callback_errors": after.get("callback_errors"),
        "osc_dropped": after.get("osc_dropped"), "rss_kb": rss, "procs": procs, "rest_before": rest_before,
        "rest_after": rest_after, "rest_seconds": rest, "bridge_stderr_tail": (err or "").strip().splitlines()[-3:],
        **poll.summary(),
    }


class NoteTraffic:
    """The benchmarks' note traffic, advanced by :meth:`tick` from their send loop: a note-on of pad 0 every
    ``note_interval`` s, each 10 ms after an all-notes-off (tagged -1), and the bridge's RSS once a second
    (``rss``: (seconds since ``t0``, KiB))."""

    def __init__(self, probe: Any, pid: int, t0: float, note_interval: float) -> None:
        self.probe, self.pid, self.t0, self.note_interval = probe, pid, t0, note_interval
        self.next_note, self.next_rss, self.tag = t0 + 0.2, t0, 0
        self.rss: list[tuple[float, int]] = []
        self.procs: list[tuple[float, list[tuple[int, str, int, int | None]]]] = []  # process_memory() samples

    def tick(self, now: float) -> None:
        if now >= self.next_rss:
            procs = process_memory(self.pid)
            if procs and procs[0][0] == self.pid:
                self.rss.append((now - self.t0, sum(r for _, _, r, _ in procs)))
                self.procs.append((now - self.t0, procs))
            self.next_rss += 1.0
        if now >= self.next_note:
            self.probe.send([0xB0, 123, 0], -1)
            time.sleep(0.010)
            self.tag += 1
            self.probe.send([0x90, 36, 127], self.tag)
            self.next_note += self.note_interval


def status_row(r: dict[str, Any], tail: str = "|") -> str:
    """The report's row for :class:`StatusPoll` (empty for a result without it)."""
    if "status_replies" not in r:
        return ""
    stalls = r["status_stalls"]
    p50, top = (f"{v:.1f}" if v == v else "-" for v in (r["status_reply_p50_ms"], r["status_reply_max_ms"]))
    return (f"| `/kickit/status` asked once a second during the traffic: replies, p50 / max reply, unanswered for "
            f"{StatusPoll.STALL_S:.0f} s | {r['status_replies']}, {p50} / {top} ms, {len(stalls)}"
            f"{' (at ' + ', '.join(f'{t:.0f} s' for t in stalls[:5]) + ')' if stalls else ''} {tail}\n")


class StatusPoll:
    """``/kickit/status`` asked every ``every`` s during the traffic, without blocking the send loop (a
    producer's Max for Live device polls it the same way): how fast the bridge answers while it works, and
    whether it ever stops answering (a request unanswered for ``STALL_S`` counts as a stall) - seen when it
    happens, not only at the end of a run. The socket also receives the bridge's notifications; they are read
    and passed over."""

    STALL_S = 3.0

    def __init__(self, sock: socket.socket, port: int, t0: float, every: float = 1.0) -> None:
        self.sock, self.port, self.every = sock, port, every
        self.next, self.asked = t0, None
        self.replies: list[float] = []  # seconds from request to reply
        self.stalls: list[float] = []  # seconds into the run at which a request went unanswered for STALL_S
        self.overruns: dict[float, list[float]] = {}  # the callback's logged overruns seen in the replies, by end

    def tick(self, now: float, t0: float) -> None:
        from kickit.bridge.oscmap import build

        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            while True:
                data, _ = self.sock.recvfrom(65536)
                reply = _status_reply(data)
                if reply is not None:
                    self.keep(reply)
                if self.asked is not None and reply is not None:
                    self.replies.append(now - self.asked)
                    self.asked = None
        except (BlockingIOError, InterruptedError):
            pass
        except Exception:  # a datagram that does not parse: not the reply
            pass
        finally:
            self.sock.settimeout(timeout)
        if self.asked is not None and now - self.asked > self.STALL_S:
            self.stalls.append(now - t0)
            self.asked = None
        if self.asked is None and now >= self.next:
            self.sock.sendto(build("/kickit/status"), ("127.0.0.1", self.port))
            self.asked, self.next = now, now + self.every

    def keep(self, status: dict[str, Any]) -> None:
        """Add a status reply's overrun log (the last few overruns of the callback) to :attr:`overruns`."""
        for entry in status.get("callback_overrun_log") or []:
            self.overruns[float(entry[0])] = [float(x) for x in entry]

    def summary(self) -> dict[str, Any]:
        r = np.asarray(self.replies, dtype=np.float64) * 1e3
        return {"status_replies": len(r), "status_reply_p50_ms": _pct(list(r), 50),
                "status_reply_max_ms": float(r.max()) if len(r) else float("nan"), "status_stalls": self.stalls}


def stack_dump(pid: int) -> str:
    """Every Python thread's stack in the bridge and its helper processes, when py-spy is installed (a
    diagnosis of a bridge that stopped answering; empty otherwise)."""
    import shutil

    spy = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                      if (Path(sys.executable).parent / "py-spy").exists() else None)
    if spy is None:
        return ""
    try:
        done = subprocess.run([spy, "dump", "--subprocesses", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"\n(py-spy dump failed: {e})"
    return "\nstacks (py-spy dump):\n" + (done.stdout or done.stderr)


def stop_bridge(bridge: subprocess.Popen[bytes] | None, errlog: Any) -> str:
    """Stop the bridge subprocess like Ctrl-C (killed after 20 s) and return what it wrote to stderr."""
    if bridge is not None:
        bridge.send_signal(signal.SIGINT)
        try:
            bridge.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bridge.kill()
    errlog.seek(0)
    err = errlog.read().decode(errors="replace")
    errlog.close()
    return err


def match_notes(probe: Any, expected: np.ndarray) -> tuple[int, list[int], int]:
    """The probe's notes found in its capture: (notes sent, note-on -> first sample in frames of each note
    heard, how many of those are bit-identical to ``expected``). The next all-notes-off cuts a hit."""
    from kickit.bridge.jackprobe import first_sample

    h0 = first_sample(expected) or 0
    cap = probe.captured()
    latencies: list[int] = []
    exact = 0
    notes = [f for f, t in probe.sent if t > 0]
    panics = sorted(f for f, t in probe.sent if t < 0)
    for frame in notes:
        start = frame - probe.start_frame
        later = [f for f in panics if f > frame]
        end = (later[0] - probe.start_frame) if later else cap.shape[1]
        if start < 0 or start >= cap.shape[1]:
            continue
        on = first_sample(cap[:, :end], start)
        if on is None:
            continue
        onset = on - h0
        latencies.append(onset - start)
        n = min(end - onset, expected.shape[1])
        if n > 0 and np.array_equal(cap[:, onset:onset + n], expected[:, :n]):
            exact += 1
    return len(notes), latencies, exact


def report(r: dict) -> str:
    per = 1e3 / r["rate"]
    p = r["period"]

    def ms(frames: float) -> str:
        return f"{frames * per:.2f} ms ({frames / p:.2f} periods)"

    def num(v: object) -> str:
        return "-" if v is None else f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"  # type: ignore[operator]

    ok_note = r["note_p99_frames"] <= 2 * p
    audio = "in its own process" if r.get("audio_process", True) else "in the bridge's process"
    ok_knob = r["knob_ready_p95_ms"] is not None and r["knob_ready_p95_ms"] <= 30.0
    return (
        "`kickit bench latency`: a JACK server on the dummy backend (started by the benchmark), `kickit bridge` "
        "as a **subprocess** (PortAudio output, virtual JACK MIDI input, OSC), and a second JACK client "
        "(JACK-Client) in the benchmark process that sends MIDI and captures the bridge's output by frame.\n\n"
        f"Model `{r['model']}`, {r['rate']} Hz, period {p}, rendering in {r['render_processes']} helper "
        f"process(es) (0: threads), audio callback {audio}, {r['seconds']:.0f} s of continuous traffic "
        "(a note-on every 100 ms, each 10 ms after an all-notes-off; an OSC knob move every 50 ms).\n\n"
        "| measure | result | target |\n|---|---|---|\n"
        f"| note-on -> first sample, p50 | {ms(r['note_p50_frames'])} | |\n"
        f"| note-on -> first sample, p99 | {ms(r['note_p99_frames'])} | <= 2 periods "
        f"({'met' if ok_note else 'NOT met'}) |\n"
        f"| note-on -> first sample, max | {ms(r['note_max_frames'])} | |\n"
        f"| notes measured / sent / bit-exact hits | {r['notes_measured']} / {r['notes_sent']} / "
        f"{r['notes_bit_exact']} | all |\n"
        f"| knob OSC -> new hit ready, p50 | {num(r['knob_ready_p50_ms'])} | |\n"
        f"| knob OSC -> new hit ready, p95 | {num(r['knob_ready_p95_ms'])} | <= 30 ms "
        f"({'met' if ok_knob else 'NOT met'}) |\n"
        f"| render per hit (inference + reconstruction), p50 | {num(r['render_ms_per_hit'])} | |\n"
        + xrun_rows(r, "in the run") + control_rows(r, "over the same seconds") +
        f"| longest callback (mixing) / longest wait for the GIL: at the end; before the traffic (start-up) | "
        f"{num(r.get('callback_max_ms'))} / {num(r.get('callback_wait_max_ms'))}; "
        f"{num(r.get('callback_max_before_ms'))} / {num(r.get('callback_wait_max_before_ms'))} | |\n"
        f"| xruns flagged to the bridge's callback (any cause) | {r['bridge_xruns']} | |\n"
        f"| server xruns seen by the probe client | {r['server_xruns']} | |\n"
        f"| baseline: xruns in {r['baseline_seconds']:.0f} s with the bridge idle (bridge / server) | "
        f"{r['idle_bridge_xruns']} / {r['idle_server_xruns']} | |\n"
        f"| callback exceptions | {r['callback_errors']} | 0 |\n"
        + status_row(r, "| |") + "\n"
        "Note-on latency counts from the start of the JACK cycle in which the probe wrote the MIDI event to "
        "the first sample of the hit in the captured output (one period is the floor: the bridge's audio "
        "runs before the MIDI port in the JACK graph). An xrun is the bridge's when the JACK server, whose log "
        "names every client that had not finished its cycle when the next was due, found the bridge's audio "
        "client (`kickit-audio`) or its MIDI client (`kickit`) still running; clients merely triggered behind "
        "a running one waited for it, and an xrun where no client was running is the machine's (nobody got a "
        "CPU in time). So is one whose late cycle overlapped a stall of the machine: `kickit.bridge.stalls` runs "
        "one detector per CPU, pinned, at a real-time priority above every audio client, waking every "
        "millisecond, and a wake-up more than 1 ms late means that CPU gave nothing to anyone for that long (its "
        "host stopped it, or the kernel was busy without preemption); the report gives the chance that an "
        "unrelated xrun falls in one by accident. The probe (`kickit-probe`, a Python client in the benchmark's process) is the "
        "measuring instrument; its own late cycles show in its row. The callback's inside view - from the host "
        "API's call (PortAudio's stream clock) to its return, the wait for the GIL plus the mixing - and the "
        "control (`kickit.bridge.bareclient`, a callback that only writes silence in a process that does "
        "nothing else, timed the same way) are kept for comparison with earlier runs.\n"
    )


def run_bench(name: str, args: argparse.Namespace, measure: Callable[[Path], dict[str, Any]],
              report: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]], section: tuple[str, str]) -> int:
    """The shared ``run`` of the bridge benchmarks (latency, flood, soak): the model (``--model`` or the shipped
    one), one-line errors (exit 2: no model, 1: the measurement failed), the report and a JSON line on stdout,
    and the section ``(key, title)`` of docs/benchmarks.md unless ``--no-write``."""
    model = args.model or _default_model()
    if model is None:
        print(f"kickit bench {name}: no model (pass --model FILE.onnx)", file=sys.stderr)
        return 2
    try:
        r = measure(Path(model))
    except (RuntimeError, OSError, ImportError) as e:
        print(f"kickit bench {name}: {e}", file=sys.stderr)
        return 1
    text, summary = report(r)
    print(text)
    print(json.dumps(summary))
    if not args.no_write:
        print(f"written to {write_section(*section, text)}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_bench(
        "latency", args,
        lambda model: measure(model, args.seconds, args.period, args.rate, args.note_interval, args.knob_interval,
                              render_processes=args.render_processes, audio_process=args.audio_process),
        lambda r: (report(r), {k: v for k, v in r.items() if k not in RAW_KEYS}),
        ("latency", "Bridge latency (note-on, knob) and xruns on JACK"))
