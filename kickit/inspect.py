"""``kickit inspect MODEL.onnx``: contract, knobs, size, parity result and the time to render one hit."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kickit.modelfile import ModelError, ModelFile, load_model

SWEEP_VALUES = (-1.0, -0.5, 0.0, 0.5, 1.0)
SWEEP_GAP_S = 0.1


def write_sweeps(model: ModelFile, out: Path, seed: int = 0) -> list[Path]:
    """One WAV per knob: a hit at each of SWEEP_VALUES, separated by short silences (to hear what it does)."""
    from kickit.audio import write_wav
    from kickit.hits import HitRenderer

    renderer = HitRenderer(model)
    z = np.random.default_rng(seed).standard_normal((1, model.latent_dim)).astype(np.float32)
    gap = np.zeros((model.contract.channels, int(SWEEP_GAP_S * model.contract.sample_rate)), dtype=np.float32)
    paths = []
    for i, knob in enumerate(model.knobs):
        values = np.zeros((len(SWEEP_VALUES), len(model.knobs)))
        values[:, i] = SWEEP_VALUES
        hits = renderer.render(np.concatenate([model.apply_knobs(z, list(v)) for v in values]))
        audio = np.concatenate([part for h in hits for part in (h, gap)], axis=-1)
        slug = "".join(c if c.isalnum() else "-" for c in knob.name)
        paths.append(write_wav(out / f"knob-{i + 1}-{slug}.wav", audio, model.contract.sample_rate))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.onnx)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the timing (default 1)")
    parser.add_argument("--runs", type=int, default=20, help="timed renders of one hit (default 20)")
    parser.add_argument("--sweep", metavar="DIR", default=None,
                        help="also write one WAV per knob to DIR: the same hit at knob values "
                             f"{', '.join(f'{v:+g}' for v in SWEEP_VALUES)}, one after the other")
    parser.add_argument("--seed", type=int, default=0, help="latent of the --sweep hit (default 0)")


def time_render(model: ModelFile, runs: int = 20) -> dict[str, Any]:
    """Median and p95 ms of inference, reconstruction and the whole render of one hit, over ``runs`` different
    hits (seeded latents; after 2 warm-ups): a hit's reconstruction cost follows how long and how wide it
    sounds, so one latent timed again and again would describe that hit, not the model."""
    from kickit.hits import HitRenderer

    renderer = HitRenderer(model)
    zs = np.random.default_rng(0).standard_normal((runs + 2, 1, model.latent_dim)).astype(np.float32)
    infer, total = [], []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        raw = model.run(zs[i])
        t1 = time.perf_counter()
        renderer.from_output(raw)
        t2 = time.perf_counter()
        if i >= 2:
            infer.append((t1 - t0) * 1e3)
            total.append((t2 - t0) * 1e3)
    recon = [t - i for t, i in zip(total, infer, strict=True)]

    def stats(xs: list[float]) -> dict[str, float]:
        return {"median_ms": round(float(np.median(xs)), 2), "p95_ms": round(float(np.percentile(xs, 95)), 2)}

    return {"runs": runs, "threads": model.threads, "method": renderer.method, "inference": stats(infer),
            "reconstruction": stats(recon), "total": stats(total)}


def describe(model: ModelFile, timing: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "size_bytes": model.size_bytes,
        "format": int(model.metadata.get("kickit.format", "0")),
        "family": model.family,
        "output": model.output,
        "latent_dim": model.latent_dim,
        "weights_sha256": model.weights_hash,
        "contract": model.contract.to_dict(),
        "training": model.training,
        "parity": model.parity,
        "exporter": model.metadata.get("kickit.exporter", ""),
        "knobs": [{"name": k.name, "lo": k.lo, "hi": k.hi, "effect": k.effect} for k in model.knobs],
        "render_one_hit": timing,
    }


def _knob_line(i: int, k: dict[str, Any]) -> str:
    e = k["effect"] or {}
    parts = [f"{i:>2}. {k['name']:<12} range {k['lo']:+.2f}..{k['hi']:+.2f}"]
    if "sound_change_db_per_step" in e:
        kick = e.get("kick_rate_per_step") or []
        kick_txt = f", kicks {kick[0]:.0%}/{kick[len(kick) // 2]:.0%}/{kick[-1]:.0%} at -1/0/+1" if kick else ""
        parts.append(f"sound change {e['sound_change_db_per_step']:.2f} dB/step, smoothness "
                     f"{e.get('smoothness', 0):.2f}{kick_txt}")
    rho = e.get("descriptor_rho") or {}
    step = e.get("descriptor_change_per_step") or {}
    named = e.get("named_by")
    top = sorted(rho, key=lambda d: (d != named, -abs(rho[d])))[:3]
    if top:
        parts.append("; ".join(f"{d} {step.get(d, 0):.3g}/step (rho {rho[d]:+.2f})" for d in top))
    return ", ".join(parts[:2]) + (f"\n      {parts[2]}" if len(parts) > 2 else "")


def format_text(info: dict[str, Any]) -> str:
    c = info["contract"]
    t = info["training"] or {}
    lines = [
        f"model      {info['path']} ({info['size_bytes'] / 1024:.0f} KiB)",
        f"format     kickit {info['format']}, family {info['family']}, output {info['output']}, "
        f"latent {info['latent_dim']}",
        f"weights    sha256 {info['weights_sha256']}",
        f"exporter   {info['exporter']}" + (f"; graph {t['graph']}" if isinstance(t, dict) and t.get("graph") else ""),
    ]
    if t:
        data = t.get("data") or {}
        data_txt = ", ".join(f"{k} {v}" for k, v in data.items() if not isinstance(v, (dict, list))) \
            if isinstance(data, dict) else str(data)
        lines.append(f"training   {t.get('steps', '?')} steps, config {t.get('config', '?')}, "
                     f"exported {t.get('exported', '?')}" + (f"; data: {data_txt}" if data_txt else ""))
    lines.append(
        f"contract   {c['sample_rate']} Hz, {c['channels']} ch, {c['frames'] * c['hop']} samples "
        f"({c['frames'] * c['hop'] / c['sample_rate'] * 1e3:.0f} ms); STFT n_fft {c['n_fft']} hop {c['hop']}, "
        f"{c['frames']} frames x {c['low_bins'] + c['bands']} rows ({c['low_bins']} bins + {c['bands']} bands); "
        f"dB {c['db_floor']:g}..{c['db_max']:g} (mask under {c['db_threshold']:g}); contract v{c['version']}"
    )
    p = info["parity"] or {}
    if p:
        verdict = "ok" if p.get("ok") else "FAILED"
        lines.append(f"parity     max |onnxruntime - torch| = {p.get('max_abs_diff', float('nan')):.3g} on "
                     f"{p.get('latents', '?')} latents (tolerance {p.get('tolerance', 0):g}): {verdict}")
    else:
        lines.append("parity     not recorded")
    r = info["render_one_hit"]
    if r:
        lines.append(
            f"render     one hit: {r['total']['median_ms']:.1f} ms median, {r['total']['p95_ms']:.1f} ms p95 "
            f"(inference {r['inference']['median_ms']:.1f} + reconstruction {r['reconstruction']['median_ms']:.1f}"
            f" ms, {r['method']}, {r['threads']} thread(s), {r['runs']} runs)"
        )
    lines.append(f"knobs      {len(info['knobs'])}, ordered by how much they change the sound:")
    lines += [_knob_line(i + 1, k) for i, k in enumerate(info["knobs"])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args.model, threads=args.threads)
    except ModelError as e:
        print(f"kickit inspect: {e}", file=sys.stderr)
        return 2
    timing = time_render(model, max(1, args.runs))
    info = describe(model, timing)
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    if args.sweep:
        try:
            paths = write_sweeps(model, Path(args.sweep), args.seed)
        except OSError as e:
            print(f"kickit inspect: {args.sweep}: cannot write the sweeps ({e.strerror or e})", file=sys.stderr)
            return 2
        if not args.json:
            print(f"sweeps     {len(paths)} WAVs in {args.sweep} (knob at {', '.join(f'{v:+g}' for v in SWEEP_VALUES)})")
    return 0
