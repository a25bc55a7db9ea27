"""``kickit bench flood``: an OSC flood (2000 datagrams/s by default, half of them hostile - every kind in
:mod:`kickit.bridge.oscfuzz` - and half valid knob moves of pad 1) into ``kickit bridge`` (a subprocess on a
JACK dummy server, as in ``kickit bench latency``) for ``--seconds`` while a probe JACK client plays a note
every 100 ms over MIDI and captures the output.

Reports: notes heard and bit-exact, xruns flagged to the bridge during the flood against the same length of
idle baseline, callback exceptions, the bridge's OSC counters (received, handled, dropped, errors; the kernel
drops what the socket cannot hold), the bridge's RSS growth (with its render helpers) and how long a valid
message takes to be answered right after the flood (``/kickit/status`` round trips).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from kickit.bridge import bench_latency
from kickit.bridge.bareclient import BareClient
from kickit.bridge.bench_soak import growth
from kickit.bridge.outputs import JACK_CLIENT, SWITCH_INTERVAL
from kickit.bridge.stalls import StallWatch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model file (default: the shipped model, else tests' tiny model)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the flood (default 60)")
    p.add_argument("--rate", type=float, default=2000.0, help="OSC datagrams per second (default 2000)")
    p.add_argument("--hostile", type=float, default=0.5, help="share of hostile datagrams (default 0.5)")
    p.add_argument("--period", type=int, default=128, help="JACK period in frames (default 128)")
    p.add_argument("--baseline", type=float, default=10.0, help="idle seconds measured first (default 10)")
    p.add_argument("--control", action="store_true",
                   help="control run: flood a UDP port nobody reads instead of the bridge (same sender load)")


POOL = 20000  # distinct datagrams, made before the flood starts and sent in turn


def _flood(port: int, rate: float, hostile: float, seconds: float, sent: Any, go: Any) -> None:
    """The sender, in its own process (this process's GIL belongs to the probe's JACK callback); the datagrams
    are made beforehand so that sending costs little CPU. Stops at ``seconds`` even when behind."""
    from kickit.bridge.oscfuzz import mixed

    rng = np.random.default_rng(0)
    pool = [mixed(rng, hostile, selects=False) for _ in range(POOL)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    go.wait()
    t0 = time.monotonic()
    n = 0
    try:
        while (elapsed := time.monotonic() - t0) < seconds:
            due = min(int(elapsed * rate), n + int(rate / 100) + 1)  # catch up in bursts of <= 10 ms
            while n < due:
                try:
                    sock.sendto(pool[n % POOL], ("127.0.0.1", port))
                except OSError:
                    pass  # a full send buffer: the datagram is lost on our side (counted as not received)
                n += 1
            sent.value = n
            time.sleep(0.001)
    finally:
        sent.value = n
        sock.close()


def measure(model: Path, seconds: float, rate: float = 2000.0, hostile: float = 0.5, period: int = 128,
            baseline: float = 10.0, sample_rate: int = 44100, control: bool = False) -> dict:
    """``control``: the same flood goes to a socket nobody reads (what the sender's load alone costs)."""
    from kickit.bridge.engine import Engine, EngineConfig
    from kickit.bridge.jackprobe import DummyJack, JackProbe
    from kickit.bridge.oscmap import build
    from kickit.bridge.source import ModelSource

    eng = Engine(ModelSource.open(model, sample_rate), EngineConfig(seed=0))
    expected = eng.source.render(eng.source.apply_knobs(eng.pads[0].latent, eng.pads[0].knobs)[None])[0]
    del eng

    server = DummyJack(sample_rate, period).start()
    switch = sys.getswitchinterval()  # the probe's callback takes this process's GIL: hand it over fast
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
    bridge = probe = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    errlog = tempfile.TemporaryFile()
    ctx = multiprocessing.get_context("spawn")
    sent = ctx.Value("q", 0)
    go = ctx.Event()
    flood = None
    deaf = None
    bare: BareClient | None = None
    watch: StallWatch | None = None
    alive = False
    try:
        watch = StallWatch()  # the machine's own stalls, per CPU: first without the bridge, then under it
        quiet = bench_latency.stall_baseline(watch, baseline)
        osc_port = bench_latency._free_udp_port()
        deaf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the control run's target: bound, never read
        deaf.bind(("127.0.0.1", 0))
        target = deaf.getsockname()[1] if control else osc_port
        flood = ctx.Process(target=_flood, args=(target, rate, hostile, seconds, sent, go), daemon=True)
        flood.start()  # started (imports done) before the measurement; sends once `go` is set
        env = dict(os.environ, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "kickit.cli", "bridge", "--model", str(model), "--midi-api", "jack",
             "--osc-port", str(osc_port), "--block", str(period), "--seed", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=errlog)
        probe = JackProbe(server.name, seconds=seconds + 10)
        midi = probe.find_port("kickit", midi=True, is_input=True, timeout=120)
        outs = probe.find_port(f"{JACK_CLIENT}:", is_output=True, timeout=10)
        if not midi or len(outs) < 2:
            raise RuntimeError("the bridge did not open its JACK ports in time")
        probe.activate(outs[:2], midi[0])
        bare = BareClient(period, env)  # the control: a Python audio client that does nothing else
        # the flood's knob moves go to pad 1; the notes play pad 0, whose hit must stay bit-exact
        sock.sendto(build("/kickit/pad/1/select"), ("127.0.0.1", osc_port))
        time.sleep(0.3)
        s0, bare0 = bench_latency._status(sock, osc_port), bare.counters()
        x0 = probe.xruns
        time.sleep(baseline)  # idle: the machine's own xrun rate
        before, bare1 = bench_latency._status(sock, osc_port), bare.counters()
        idle_bridge, idle_server = int(before.get("xruns", 0)) - int(s0.get("xruns", 0)), probe.xruns - x0
        x1, log_mark = probe.xruns, server.mark()
        watch.collect()
        pc0 = time.perf_counter()
        probe.start_capture()
        t0 = time.monotonic()
        go.set()
        traffic = bench_latency.NoteTraffic(probe, bridge.pid, t0, 0.1)
        rss = traffic.rss
        while time.monotonic() - t0 < seconds:
            traffic.tick(time.monotonic())
            time.sleep(0.002)
        flood.join(60)  # it stops at `seconds` by itself
        time.sleep(0.5)  # what is still in the socket buffer is read
        flood_end = time.monotonic()
        probe.capturing = False
        server_xruns = probe.xruns - x1
        pc1 = time.perf_counter()
        stalls = watch.collect() if watch.realtime else None
        causes = bench_latency.attribute(server.xruns_since(log_mark), stalls, period / sample_rate,
                                         list(probe.late_finishes))
        machine = bench_latency.stall_summary(watch, stalls, pc1 - pc0, quiet, period / sample_rate)
        bare2 = bare.counters()
        # a valid message right after the flood: how long until it is answered
        rtts = []
        for _ in range(20):
            while True:  # clear stale replies
                try:
                    sock.settimeout(0.001)
                    sock.recvfrom(65536)
                except (TimeoutError, BlockingIOError):
                    break
            sock.settimeout(5)
            t = time.perf_counter()
            sock.sendto(build("/kickit/status"), ("127.0.0.1", osc_port))
            data, _ = sock.recvfrom(65536)
            rtts.append((time.perf_counter() - t) * 1e3)
        after = json.loads(data[data.index(b"{"):].rstrip(b"\x00").decode())
        first_after_s = time.monotonic() - flood_end
        bare_log = {o[0]: o for b in (bare1, bare2) for o in b.get("callback_overrun_log") or []}
        split = {"bridge": bench_latency.split_overruns(after.get("callback_overrun_log") or [], stalls, pc0, pc1),
                 "bare": bench_latency.split_overruns(list(bare_log.values()), stalls, pc0, pc1)}
    finally:
        if flood is not None and flood.is_alive():
            flood.terminate()
        sock.close()
        if deaf is not None:
            deaf.close()
        if bare is not None:
            bare.close()
        if watch is not None:
            watch.close()
        if probe is not None:
            probe.close()
        if bridge is not None:
            alive = bridge.poll() is None
        err = bench_latency.stop_bridge(bridge, errlog)
        server.close()
        sys.setswitchinterval(switch)
    notes, latencies, exact = bench_latency.match_notes(probe, expected)
    heard = len(latencies)
    delta, slope = growth(rss)
    return {
        "model": model.name, "seconds": seconds, "rate": rate, "hostile": hostile, "period": period,
        "sample_rate": sample_rate, "sent": int(sent.value), "osc_received": after.get("osc_received", 0) - before.get(
            "osc_received", 0) - 20, "osc_handled": after.get("osc_handled", 0) - before.get("osc_handled", 0) - 20,
        "osc_dropped": after.get("osc_dropped", 0) - before.get("osc_dropped", 0),
        "osc_errors": after.get("osc_errors", 0), "notes_sent": notes, "notes_heard": heard,
        "notes_bit_exact": exact, "bridge_xruns": int(after.get("xruns", 0)) - int(before.get("xruns", 0)),
        **bench_latency.overruns(s0, before, after, bare0, bare1, bare2),
        "server_xruns": server_xruns, "xrun_causes": causes, "machine_stalls": machine,
        "callback_overrun_split": split, "baseline_seconds": baseline, "idle_bridge_xruns": idle_bridge,
        "idle_server_xruns": idle_server, "callback_errors": after.get("callback_errors"),
        "output_callback_errors": after.get("output_callback_errors"), "ring_dropped": after.get("ring_dropped"),
        "rss_start_mib": rss[0][1] / 1024 if rss else float("nan"), "rss_growth_mib": delta,
        "rss_slope_mib_per_hour": slope, "reply_ms_p50": float(np.percentile(rtts, 50)),
        "reply_ms_max": float(max(rtts)), "first_reply_ms": rtts[0], "replies_done_after_s": first_after_s,
        "bridge_alive": alive, "control": control, "bridge_stderr_tail": err.strip().splitlines()[-3:],
    }


def report(r: dict) -> str:
    lost = r["sent"] - r["osc_received"]
    control = ("**Control run**: the flood went to a UDP port nobody reads, not to the bridge (the sender's load "
               "alone).\n\n") if r.get("control") else ""
    return control + (
        f"`kickit bench flood`: {r['seconds']:.0f} s of OSC at {r['rate']:.0f} datagrams/s ({r['hostile']:.0%} "
        "hostile: random bytes, truncated and bit-flipped packets, bad type tags, non-UTF-8 addresses, datagrams "
        "over 8192 bytes, deep and lying bundles, unknown addresses, out-of-range values; the rest knob moves "
        "of pad 1) into `kickit bridge` (subprocess) on a JACK dummy server, period "
        f"{r['period']}, while a probe client plays a note every 100 ms over JACK MIDI. Model `{r['model']}`.\n\n"
        "| measure | result | target |\n|---|---|---|\n"
        f"| datagrams sent / received by the bridge / lost in the kernel | {r['sent']} / {r['osc_received']} / "
        f"{lost} | |\n"
        f"| handled / dropped (counted in `/kickit/status`) / handler errors | {r['osc_handled']} / "
        f"{r['osc_dropped']} / {r['osc_errors']} | errors 0 |\n"
        f"| notes sent / heard / bit-exact | {r['notes_sent']} / {r['notes_heard']} / {r['notes_bit_exact']} "
        "| all |\n"
        + bench_latency.xrun_rows(r, "during the flood") + bench_latency.control_rows(r, "during the flood") +
        f"| xruns flagged to the bridge (any cause) during the flood / in {r['baseline_seconds']:.0f} s idle "
        f"before | {r['bridge_xruns']} / {r['idle_bridge_xruns']} | |\n"
        f"| server xruns during the flood / idle | {r['server_xruns']} / {r['idle_server_xruns']} | |\n"
        f"| callback exceptions (mixer / output) / events dropped | {r['callback_errors']} / "
        f"{r['output_callback_errors']} / {r['ring_dropped']} | 0 |\n"
        f"| bridge RSS at start / growth (first 10% -> last 10%) | {r['rss_start_mib']:.1f} MiB / "
        f"{r['rss_growth_mib']:+.2f} MiB | bounded |\n"
        f"| valid message right after the flood: first reply / p50 / max of 20 | {r['first_reply_ms']:.2f} / "
        f"{r['reply_ms_p50']:.2f} / {r['reply_ms_max']:.2f} ms | <= 10 ms |\n"
        f"| bridge still running | {'yes' if r['bridge_alive'] else 'NO'} | yes |\n"
    )


def run(args: argparse.Namespace) -> int:
    key, title = "flood", "Bridge under an OSC flood"
    if args.control:
        key, title = "flood-control", f"{title}: control run (the same flood to a port nobody reads)"
    elif args.hostile != 0.5:
        key, title = f"flood-hostile-{round(args.hostile * 100)}", f"{title} ({args.hostile:.0%} hostile)"
    return bench_latency.run_bench(
        "flood", args,
        lambda model: measure(model, args.seconds, args.rate, args.hostile, args.period, args.baseline,
                              control=args.control),
        lambda r: (report(r), {k: v for k, v in r.items() if k != "bridge_stderr_tail"}), (key, title))
