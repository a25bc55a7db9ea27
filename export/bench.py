"""``kickit bench render``: model inference + reconstruction per hit (batch 1) and per batch of 8.

Model: ``--model FILE``, else the shipped default model, else an untrained generator of the training
``default`` config exported to a temporary file (same architecture, same cost; needs the [train] extra).
Variants measured: onnxruntime intra-op threads 1 and 2, graph optimisation off vs full, fp16 and dynamic int8
quantisation (with their quality cost: output error and log-spectral distance of the rendered hits vs fp32).
Results go to docs/benchmarks.md (section "render") unless --no-write.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_ONE_MS = 20.0
TARGET_BATCH8_MS = 80.0
REPEATS = 3  # extra renders of each hit for its own cost (the fastest of them)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None, help="model file (default: shipped model, else an "
                                                             "untrained default-config generator)")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per measurement (default 40)")
    parser.add_argument("--method", default=None, help="reconstruction method (default: kickit's)")
    parser.add_argument("--no-variants", action="store_true", help="only the shipped settings (1 thread, full opt)")


def _ms(xs: list[float]) -> tuple[float, float]:
    return float(np.median(xs)), float(np.percentile(xs, 95))


def _time(fn: Any, runs: int, warmup: int = 2) -> list[float]:
    out = []
    for i in range(runs + warmup):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def _session(data: bytes, threads: int, optimise: bool) -> Any:
    import onnxruntime as ort

    from kickit.modelfile import session_options

    so = session_options(threads)
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


PROCESSES = 2  # the bridge's render processes (kickit.bridge.app default)


class _Processes:
    """The bridge's process renderer with the bench's renderer interface (inference is not timed apart)."""

    def __init__(self, source: Any, model: Any) -> None:
        self.source, self.model = source, model

    def render(self, z: np.ndarray) -> np.ndarray:
        return self.source.render(z)

    def close(self) -> None:
        self.source.close()


def _untrained_default(tmp: Path) -> Path:
    import torch
    from kickit.export.exporter import export_untrained

    torch.set_num_threads(2)
    return export_untrained("default", tmp / "untrained-default.onnx")


def _quantised(data: bytes, tmp: Path) -> bytes | None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(data)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs every tensor (INFO) and a pre-processing hint
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    except Exception as e:  # quantisation support depends on the ops in the graph
        print(f"int8 quantisation failed: {str(e).splitlines()[0]}")
        return None
    finally:
        root.setLevel(level)
    return dst.read_bytes()


def _half(data: bytes) -> bytes | None:
    """fp16 weights and activations (float32 input/output kept), via onnxruntime's converter."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        return None
    try:
        return convert_float_to_float16(onnx.load_from_string(data), keep_io_types=True).SerializeToString()
    except Exception as e:  # the converter does not know every op
        print(f"fp16 conversion failed: {str(e).splitlines()[0]}")
        return None


def run(args: argparse.Namespace) -> int:
    from kickit.bridge import memory

    from kickit.benchdoc import reference_ms, write_section
    from kickit.hits import DEFAULT_METHOD, HitRenderer, render_output
    from kickit.modelfile import default_model_path, load_model

    method = args.method or DEFAULT_METHOD
    runs = max(2, args.runs)
    memory.keep_heap_warm()  # the render processes' heap policy (kickit.bridge.memory), here too
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if args.model:
            path, what = Path(args.model), f"`{Path(args.model).name}`"
        elif default_model_path() is not None:
            path, what = default_model_path(), "the shipped `kick-v1.onnx`"
        else:
            path, what = _untrained_default(tmp), "an untrained generator of the `default` training config"
        model = load_model(path)
        contract, output = model.contract, model.output
        data = Path(path).read_bytes()
        # A hit's cost depends on the hit (how many frames and bins sound: 6-15 ms of reconstruction for the
        # shipped model), so every round renders other latents: the figures are over hits, not of one hit.
        rng = np.random.default_rng(0)
        zs = rng.standard_normal((runs, 1, model.latent_dim)).astype(np.float32)
        z8s = rng.standard_normal((runs, 8, model.latent_dim)).astype(np.float32)
        z8 = z8s[0]

        def recon(raw: np.ndarray) -> np.ndarray:
            return render_output(raw, contract, output, method=method)

        memory.settle()  # the render processes' collector: start-up objects frozen (kickit.bridge.renderpool)
        raws = model.run(zs[:, 0])[:, None]
        raw8s = [model.run(z) for z in z8s[: max(2, runs // 4)]]
        raw8 = raw8s[0]
        recon(raws[0])
        recon1 = _ms([_time(lambda r=r: recon(r), 1, warmup=0)[0] for r in raws])
        recon8 = _ms([_time(lambda r=r: recon(r), 1, warmup=0)[0] for r in raw8s])
        ref8 = recon(raw8)

        variants: list[tuple[str, bytes, int, bool]] = [("fp32, full graph optimisation", data, 1, True)]
        if not args.no_variants:
            variants += [("fp32, full graph optimisation", data, 2, True),
                         ("fp32, graph optimisation off", data, 1, False)]
            h = _half(data)
            if h is not None:
                variants.append(("fp16", h, 1, True))
            q = _quantised(data, tmp)
            if q is not None:
                variants.append(("int8 dynamic quantisation", q, 1, True))
        # Interleaved: every round times each variant once, so load from other processes hits all alike.
        renderers: list[Any] = [
            HitRenderer(dataclasses.replace(model, session=_session(blob, threads, opt), threads=threads), method,
                        workers=threads) for _, blob, threads, opt in variants]
        if not args.no_variants and not args.method:
            # the bridge's own renderer: a batch split across its 2 render processes (kickit.bridge.renderpool)
            from kickit.bridge.renderpool import ProcessSource

            variants.append((f"fp32, full graph optimisation, {PROCESSES} render processes (the bridge)", data, 1,
                             True))
            renderers.append(_Processes(ProcessSource.open(path, None, processes=PROCESSES), model))
        times: list[dict[str, list[float]]] = [{"inf1": [], "tot1": [], "tot8": []} for _ in variants]
        for r in renderers:  # warm-up
            r.render(zs[0])
            r.render(z8)
        memory.settle()
        ref_before = reference_ms()
        for k in range(runs):
            for r, t in zip(renderers, times, strict=True):
                t["inf1"] += _time(lambda r=r, k=k: r.model.run(zs[k]), 1, warmup=0)
                t["tot1"] += _time(lambda r=r, k=k: r.render(zs[k]), 1, warmup=0)
                if k % 2 == 0:
                    t["tot8"] += _time(lambda r=r, k=k: r.render(z8s[k]), 1, warmup=0)
        ref_after = reference_ms()
        # The cost of each hit apart from the machine's moments: the bridge's settings render every hit of the
        # rounds REPEATS more times; the fastest of its renders is what the hit itself costs.
        base_r = renderers[0]
        fastest = [min([times[0]["tot1"][k]] + _time(lambda k=k: base_r.render(zs[k]), REPEATS, warmup=0))
                   for k in range(runs)]
        cost1 = _ms(fastest)
        rows = []
        for (name, _, threads, _), r, t in zip(variants, renderers, times, strict=True):
            err = float(np.max(np.abs(r.model.run(z8) - raw8)))
            lsd = _lsd(r.render(z8), ref8, contract)
            r.close()
            inf1, tot1, tot8 = _ms(t["inf1"]), _ms(t["tot1"]), _ms(t["tot8"])
            rows.append((name, threads, inf1, tot1, tot8, err, lsd))
            print(f"{name}, {threads} thread(s): inference {inf1[0]:.1f} ms, one hit {tot1[0]:.1f}/{tot1[1]:.1f} "
                  f"ms (median/p95), batch of 8 {tot8[0]:.1f}/{tot8[1]:.1f} ms, max out err {err:.2g}, "
                  f"LSD {lsd:.2f} dB")

    base = rows[0]  # the bridge's settings: fp32, full optimisation, 1 thread
    fp32 = [r for r in rows if r[0].startswith("fp32, full")]
    best8 = min(fp32, key=lambda r: r[4][1])
    how8 = "2 render processes" if "processes" in best8[0] else f"{best8[1]} thread(s)"
    verdict1 = "meets" if base[3][1] <= TARGET_ONE_MS else "misses"
    verdict8 = "meets" if best8[4][1] <= TARGET_BATCH8_MS else "misses"
    lines = [
        f"Model: {what} ({model.family}, latent {model.latent_dim}, {model.size_bytes / 1024:.0f} KiB); "
        f"reconstruction `{method}`; post-processing included; {runs} rounds (batch of 8: every 2nd), "
        "variants interleaved round by round; every round renders other latents (seeded), so the figures "
        "are over hits whose cost differs (how long they sound, how wide their spectrum).",
        "",
        f"Reconstruction + post alone: one hit {recon1[0]:.1f} ms median / {recon1[1]:.1f} ms p95 "
        f"({len(raws)} hits), batch of 8 {recon8[0]:.1f} / {recon8[1]:.1f} ms ({len(raw8s)} batches).",
        "",
        f"Machine speed reference (`kickit.benchdoc.reference_ms`, a fixed numpy workload; lower is faster): "
        f"{ref_before:.2f} ms before the rounds, {ref_after:.2f} ms after. What each hit itself costs with the "
        f"bridge's settings (the fastest of {REPEATS + 1} renders of each of the {runs} hits, so the machine's "
        f"slow moments drop out; for reading the figures, not for the target): median {cost1[0]:.1f} ms, "
        f"p95 {cost1[1]:.1f} ms.",
        "",
        "| variant | threads (ORT intra-op = reconstruction workers) | inference, 1 hit (median / p95 ms) | inference + reconstruction, 1 hit "
        "(median / p95 ms) | batch of 8 (median / p95 ms) | max output error vs fp32 | LSD of hits vs fp32 (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, threads, inf1, tot1, tot8, err, lsd in rows:
        lines.append(f"| {name} | {threads} | {inf1[0]:.1f} / {inf1[1]:.1f} | {tot1[0]:.1f} / {tot1[1]:.1f} | "
                     f"{tot8[0]:.1f} / {tot8[1]:.1f} | {err:.2g} | {lsd:.2f} |")
    lines += [
        "",
        f"Targets: one hit <= {TARGET_ONE_MS:.0f} ms p95 with the bridge's settings (fp32, full optimisation, "
        f"1 thread): {verdict1} ({base[3][1]:.1f} ms). Batch of 8 <= {TARGET_BATCH8_MS:.0f} ms p95 "
        f"(fp32, {how8}): {verdict8} ({best8[4][1]:.1f} ms).",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        p = write_section("render", "Render: inference + reconstruction (`kickit bench render`)", body)
        print(f"written to {p}")
    return 0


def _lsd(a: np.ndarray, b: np.ndarray, contract: Any) -> float:
    """Mean log-spectral distance (dB) between two batches of hits, over cells above -90 dB of the reference."""
    sa = np.abs(contract.stft(a.astype(np.float64))) * contract.magnitude_scale
    sb = np.abs(contract.stft(b.astype(np.float64))) * contract.magnitude_scale
    da = 20 * np.log10(np.maximum(sa, 1e-6))
    db = 20 * np.log10(np.maximum(sb, 1e-6))
    mask = db > db.max() - 90
    return float(np.sqrt(np.mean((da[mask] - db[mask]) ** 2)))
