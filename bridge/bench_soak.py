"""``kickit bench soak``: the latency benchmark's set-up (JACK dummy server, bridge subprocess, probe client)
run for a long time with continuous random knob and note traffic; reports the bridge's memory (RSS) growth,
xruns, callback errors and note-on latency over the whole run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from kickit.bridge import bench_latency, memory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model file (default: the shipped model, else tests' tiny model)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="length of the run in seconds (default 600)")
    length.add_argument("--minutes", type=float, help="length of the run in minutes")
    p.add_argument("--period", type=int, default=128, help="JACK period in frames (default 128)")


REST_S = memory.RENDER_IDLE_TRIM_S + 2.0  # seconds at rest before a sample at rest: past the helpers' idle trim


def at_rest(before: list[tuple[int, str, int, int | None]], after: list[tuple[int, str, int, int | None]]
            ) -> dict[str, Any] | None:
    """Memory of the bridge's processes at rest before the traffic and at rest after it (the same quiet state:
    the render helpers trimmed): RSS and PSS summed over the processes alive in both, and the growth of each
    process. None when a sample is missing or a process was replaced (a restarted helper is not comparable)."""
    if not before or not after:
        return None
    b = {pid: (name, rss, pss) for pid, name, rss, pss in before}
    a = {pid: (name, rss, pss) for pid, name, rss, pss in after}
    if set(a) != set(b):
        return None
    both = sorted(b)
    pss_ok = all(b[p][2] is not None and a[p][2] is not None for p in both)
    return {
        "rss_before_mib": sum(b[p][1] for p in both) / 1024, "rss_after_mib": sum(a[p][1] for p in both) / 1024,
        "pss_before_mib": sum(b[p][2] for p in both) / 1024 if pss_ok else None,  # type: ignore[misc]
        "pss_after_mib": sum(a[p][2] for p in both) / 1024 if pss_ok else None,  # type: ignore[misc]
        "processes": [(f"{b[p][0]} ({p})", (a[p][1] - b[p][1]) / 1024) for p in both],
    }


def growth(rss: list[tuple[float, int]]) -> tuple[float, float]:
    """(RSS growth in MiB from the first 10% of the run to the last 10%, slope in MiB per hour)."""
    if len(rss) < 4:
        return float("nan"), float("nan")
    t = np.array([a for a, _ in rss], dtype=np.float64)
    kb = np.array([b for _, b in rss], dtype=np.float64)
    k = max(1, len(rss) // 10)
    delta = (kb[-k:].mean() - kb[:k].mean()) / 1024.0
    slope = np.polyfit(t, kb / 1024.0, 1)[0] * 3600.0
    return float(delta), float(slope)


def per_process(procs: list[tuple[float, list[tuple[int, str, int, int | None]]]]) -> list[dict[str, Any]]:
    """Memory of each process of the bridge's tree over the run (``process_memory`` samples): per process
    (name and pid), RSS and PSS at the start, their growth from the first 10% of its samples to the last 10%,
    the RSS range and the RSS trend over the second half of the run (still growing at the end, or settled).
    The last row is the PSS summed over all the processes (RSS summed over processes counts shared pages several times)."""
    series: dict[tuple[str, int], list[tuple[float, int, int | None]]] = {}
    totals: list[tuple[float, int]] = []
    for t, sample in procs:
        for pid, name, rss, pss in sample:
            series.setdefault((name, pid), []).append((t, rss, pss))
        if all(p is not None for *_, p in sample):
            totals.append((t, sum(int(p) for *_, p in sample)))  # type: ignore[arg-type]
    rows = [_memory_row(f"{name} ({pid})", [(t, r) for t, r, _ in xs], [(t, p) for t, _, p in xs if p is not None])
            for (name, pid), xs in series.items()]
    if totals:
        rows.append(_memory_row("all processes (PSS: each shared page counted once)", totals, totals))
    return rows


def _memory_row(label: str, rss: list[tuple[float, int]], pss: list[tuple[float, int]]) -> dict[str, Any]:
    """One row of :func:`per_process` from a process's (seconds, KiB) samples."""
    start, end = rss[0][0], rss[-1][0]
    late = [(t, r) for t, r in rss if t >= start + (end - start) / 2]
    return {"process": label, "seconds": end - start, "rss_start_mib": rss[0][1] / 1024,
            "rss_growth_mib": growth(rss)[0], "pss_growth_mib": growth(pss)[0] if pss else float("nan"),
            "rss_min_mib": min(r for _, r in rss) / 1024, "rss_max_mib": max(r for _, r in rss) / 1024,
            "rss_slope_late_mib_per_hour": growth(late)[1]}


def run(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60.0 if args.minutes is not None else (args.seconds or 600.0)
    if seconds <= 0:
        print(f"kickit bench soak: the run length must be positive, got {seconds:g} s", file=sys.stderr)
        return 2
    return bench_latency.run_bench(
        "soak", args, lambda model: bench_latency.measure(model, seconds, args.period, 44100, 0.1, 0.05,
                                                          rest=REST_S), report,
        ("soak", "Bridge soak (memory and xruns)"))


def report(r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The soak's table and its JSON summary."""
    delta, slope = growth(r["rss_kb"])
    first = r["rss_kb"][0][1] / 1024 if r["rss_kb"] else float("nan")
    per = 1e3 / r["rate"]
    text = (
        f"`kickit bench soak`: {r['seconds']:.0f} s of continuous traffic (note-on every 100 ms, OSC knob move "
        f"every 50 ms) into `kickit bridge` (subprocess) on a JACK dummy server, period {r['period']}, model "
        f"`{r['model']}`.\n\n| measure | result |\n|---|---|\n"
        f"| bridge RSS at start (with its render helper processes) | {first:.1f} MiB |\n"
        f"| RSS growth (first 10% -> last 10% of the run) | {delta:+.2f} MiB |\n"
        f"| RSS trend | {slope:+.2f} MiB/hour |\n"
        f"| notes sent / measured / bit-exact | {r['notes_sent']} / {r['notes_measured']} / "
        f"{r['notes_bit_exact']} |\n"
        f"| note-on -> first sample p99 | {r['note_p99_frames'] * per:.2f} ms |\n"
        + bench_latency.xrun_rows(r, "in the run", target=False) +
        f"| control: overruns of a bare Python audio client on the same server over the same seconds (the "
        f"machine's own) | {r.get('bare_overruns', '-')} of {r.get('bare_callbacks', '-')} callbacks |\n"
        f"| of those overruns, the ones whose wait alone was a period or more (before any mixing): bridge / bare "
        f"client | {r.get('bridge_overruns_waiting', '-')} / {r.get('bare_overruns_waiting', '-')} |\n"
        f"| xruns flagged to the bridge (any cause) / server xruns | {r['bridge_xruns']} / {r['server_xruns']} |\n"
        f"| callback exceptions | {r['callback_errors']} |\n"
        + bench_latency.status_row(r)
    )
    rest = at_rest(r.get("rest_before", []), r.get("rest_after", []))
    if rest is not None:
        d_rss = rest["rss_after_mib"] - rest["rss_before_mib"]
        pss = "" if rest["pss_before_mib"] is None else (
            f"; PSS {rest['pss_before_mib']:.1f} -> {rest['pss_after_mib']:.1f} MiB "
            f"({rest['pss_after_mib'] - rest['pss_before_mib']:+.2f} MiB)")
        text += (f"| RSS at rest ({r.get('rest_seconds', REST_S):.0f} s after the last render, before -> after the "
                 f"traffic: the same quiet state) | {rest['rss_before_mib']:.1f} -> {rest['rss_after_mib']:.1f} "
                 f"MiB (**{d_rss:+.2f} MiB**){pss}; per process "
                 + ", ".join(f"{name} {d:+.2f}" for name, d in rest["processes"]) + " MiB |\n")
    rows = per_process(r.get("procs", []))
    if rows:
        text += ("\nMemory per process (RSS; PSS shares a page among the processes mapping it; growth from the "
                 "first 10% of a process's samples to the last 10%; late trend: over the second half of the run):"
                 "\n\n| process | RSS at start | RSS growth | PSS growth | RSS min / max | late trend |\n"
                 "|---|---|---|---|---|---|\n")
        for row in rows:
            text += (f"| {row['process']} | {row['rss_start_mib']:.1f} MiB | {row['rss_growth_mib']:+.2f} MiB | "
                     f"{row['pss_growth_mib']:+.2f} MiB | {row['rss_min_mib']:.1f} / {row['rss_max_mib']:.1f} MiB | "
                     f"{row['rss_slope_late_mib_per_hour']:+.1f} MiB/hour |\n")
    return text, {"rss_growth_mib": delta, "rss_slope_mib_per_hour": slope, "per_process": rows, "at_rest": rest,
                  **{k: v for k, v in r.items() if k not in bench_latency.RAW_KEYS}}
