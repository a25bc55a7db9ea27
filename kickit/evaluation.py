"""``kickit eval MODEL --ref DIR``: does a model sound like kicks? Writes report.md, eval.json, figures, WAVs.

MODEL is a model file (``.onnx``), the word ``procedural`` (the procedural kick synth, the baseline) or a
folder of hits (a sample pack written by ``kickit generate`` or any other generator). The method and the
targets are documented in docs/evaluation.md; the numbers come from :mod:`kickit.eval_metrics`, the report
and figures from :mod:`kickit.eval_report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kickit import __version__
from kickit.audio import AudioError, load_folder
from kickit.eval_features import DescriptorBackend, FeatureAccumulator, default_backend
from kickit.eval_metrics import HitSet, evaluate
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

log = logging.getLogger(__name__)

PROCEDURAL = "procedural"
DEFAULT_COUNT = 500
MAX_COUNT = 20000
DEFAULT_BATCH = 32
DEFAULT_SPLITS = 20
DEFAULT_WAVS = 8
JSON_NAME = "eval.json"
REPORT_NAME = "report.md"
MIN_REAL = 4


class EvalError(ValueError):
    """A bad argument or input; the one-line message names what is wrong."""


# ----- where the hits come from ----------------------------------------------------------------------------
class HitSource(Protocol):
    name: str
    contract: SpectralContract

    def describe(self) -> dict[str, Any]: ...

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        """Finished hits (b, channels, n) float32, ``count`` in all, in batches of at most ``batch``."""
        ...


class ModelSource:
    """Hits from a model file through :class:`kickit.hits.HitRenderer` (z ~ N(0, I), knobs at centre)."""

    def __init__(self, path: str, *, method: str | None = None, threads: int = 2) -> None:
        from kickit.hits import HitRenderer
        from kickit.modelfile import load_model

        self.model = load_model(path, threads=threads)
        self.renderer = HitRenderer(self.model, **({"method": method} if method else {}))
        self.contract = self.model.contract
        self.name = Path(path).stem

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"kind": "model", "path": str(m.path), "family": m.family, "output": m.output,
                "latent_dim": m.latent_dim, "weights_sha256": m.weights_hash, "method": self.renderer.method}

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        z = rng.standard_normal((count, self.model.latent_dim)).astype(np.float32)
        for i in range(0, count, batch):
            yield self.renderer.render(z[i:i + batch])


class ProceduralSource:
    """The procedural kick synth (:func:`kickit.synth.procedural_kick`), post-processed like model hits."""

    name = PROCEDURAL

    def __init__(self, contract: SpectralContract = DEFAULT_CONTRACT) -> None:
        self.contract = contract

    def describe(self) -> dict[str, Any]:
        return {"kind": "procedural", "function": "kickit.synth.procedural_kick"}

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        from kickit.hits import finish
        from kickit.synth import procedural_kicks

        for i in range(0, count, batch):
            yield finish(procedural_kicks(rng, min(batch, count - i), self.contract), self.contract)


class FolderSource:
    """Hits already written to a folder (a sample pack), loaded and post-processed like model hits."""

    def __init__(self, path: str, contract: SpectralContract = DEFAULT_CONTRACT) -> None:
        self.path = Path(path)
        self.contract = contract
        self.name = self.path.name or "folder"
        self.hits, self.skipped = load_real(self.path, contract, "MODEL")

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.path), "files": len(self.hits), "skipped": len(self.skipped)}

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        for i in range(0, min(count, len(self.hits)), batch):
            yield self.hits[i:min(i + batch, count)]


def make_source(spec: str, *, method: str | None = None, threads: int = 2) -> HitSource:
    """MODEL argument -> a hit source; EvalError/ModelError with a one-line message when unusable."""
    if spec == PROCEDURAL:
        return ProceduralSource()
    p = Path(spec)
    if p.is_dir():
        return FolderSource(spec)
    if not p.exists():
        raise EvalError(f"{spec}: no such model file (MODEL is an .onnx file, '{PROCEDURAL}' or a folder of hits)")
    return ModelSource(spec, method=method, threads=threads)


# ----- real hits -------------------------------------------------------------------------------------------
@dataclass
class RefPaths:
    heldout: Path
    train: Path | None
    dataset: Path | None  # the dataset folder when --ref named one


def is_dataset(path: Path) -> bool:
    return (path / "manifest.json").is_file() or (path / "audio" / "heldout").is_dir()


def resolve_ref(ref: str, train: str | None) -> RefPaths:
    """--ref/--train -> folders. A dataset folder gives its held-out split, and its train split by default."""
    p = Path(ref)
    if not p.exists():
        raise EvalError(f"--ref {ref}: no such folder")
    if not p.is_dir():
        raise EvalError(f"--ref {ref}: not a folder (give a folder of WAVs or a dataset folder)")
    if is_dataset(p):
        held = p / "audio" / "heldout"
        if not held.is_dir():
            raise EvalError(f"--ref {ref}: dataset folder without audio/heldout (build it with `kickit data build`)")
        default_train = p / "audio" / "train"
        t = Path(train) if train else (default_train if default_train.is_dir() else None)
        out = RefPaths(held, t, p)
    else:
        out = RefPaths(p, Path(train) if train else None, None)
    if out.train is not None:
        if not out.train.exists():
            raise EvalError(f"--train {out.train}: no such folder")
        if not out.train.is_dir():
            raise EvalError(f"--train {out.train}: not a folder")
    return out


def load_real(folder: Path, contract: SpectralContract, what: str) -> tuple[np.ndarray, list[str]]:
    """All hits of a folder, post-processed like generated hits; EvalError when none is usable."""
    from kickit.hits import finish

    try:
        loaded = load_folder(folder, contract)
    except AudioError as e:
        raise EvalError(f"{what} {e}") from None
    if not loaded.hits:
        why = f" ({len(loaded.skipped)} unreadable, first: {loaded.skipped[0]})" if loaded.skipped else ""
        raise EvalError(f"{what} {folder}: no usable audio files{why}")
    audio = finish(np.stack([a for _, a in loaded.hits]), contract)
    return audio, [str(e) for e in loaded.skipped]


# ----- the run ---------------------------------------------------------------------------------------------
def _features(hits: Iterator[np.ndarray] | np.ndarray, contract: SpectralContract, backend: DescriptorBackend,
              *, keep: int, spectra: bool, batch: int) -> FeatureAccumulator:
    acc = FeatureAccumulator(contract, backend, keep=keep, want_spectra=spectra)
    if isinstance(hits, np.ndarray):
        for i in range(0, len(hits), batch):
            acc.add(hits[i:i + batch])
    else:
        for b in hits:
            acc.add(b)
    return acc


def _hitset(acc: FeatureAccumulator, names: list[str] | None = None) -> HitSet:
    a = acc.arrays()
    return HitSet(a["descriptors"], a["checks"], a["spectra"], names or [])


def run_eval(
    source: HitSource,
    ref: RefPaths,
    out: Path,
    *,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    splits: int = DEFAULT_SPLITS,
    wavs: int = DEFAULT_WAVS,
    figures: bool = True,
    backend: DescriptorBackend | None = None,
) -> dict[str, Any]:
    """Evaluate ``source`` against the real hits; writes the report folder and returns the results dict."""
    from kickit import eval_report

    if not 2 <= count <= MAX_COUNT:
        raise EvalError(f"-n {count}: must be 2..{MAX_COUNT}")
    if batch < 1:
        raise EvalError(f"--batch {batch}: must be at least 1")
    backend = backend or default_backend()
    contract = source.contract
    seeds = np.random.SeedSequence(seed).spawn(2)
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    held_audio, held_skipped = load_real(ref.heldout, contract, "--ref")
    if len(held_audio) < MIN_REAL:
        raise EvalError(f"--ref {ref.heldout}: {len(held_audio)} usable hits, need at least {MIN_REAL}")
    train_audio, train_skipped = (load_real(ref.train, contract, "--train") if ref.train else (None, []))
    timing["load_real_s"] = time.perf_counter() - t0
    has_train = train_audio is not None
    keep = 16

    t0 = time.perf_counter()
    held = _features(held_audio, contract, backend, keep=keep, spectra=has_train, batch=batch)
    train = _features(train_audio, contract, backend, keep=0, spectra=True, batch=batch) if has_train else None
    timing["real_features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    render_s = 0.0
    gen = FeatureAccumulator(contract, backend, keep=max(keep, wavs), want_spectra=has_train)
    it = source.batches(count, np.random.default_rng(seeds[0]), batch)
    while True:
        r0 = time.perf_counter()
        b = next(it, None)
        render_s += time.perf_counter() - r0
        if b is None:
            break
        gen.add(b)
    if len(gen) < 2:
        raise EvalError(f"{source.name}: produced {len(gen)} hits, need at least 2")
    timing["generate_s"] = render_s
    timing["generated_features_s"] = time.perf_counter() - t0 - render_s

    t0 = time.perf_counter()
    results = evaluate(
        _hitset(gen), _hitset(held), _hitset(train) if train is not None else None,
        backend.names, backend.check_names, rng=np.random.default_rng(seeds[1]), splits=splits,
    )
    timing["metrics_s"] = time.perf_counter() - t0
    arrays = results.pop("_arrays")

    results["meta"] = {
        "kickit": __version__,
        "source": {"name": source.name, **source.describe()},
        "seed": seed,
        "requested": count,
        "heldout": str(ref.heldout),
        "train": str(ref.train) if ref.train else None,
        "dataset": str(ref.dataset) if ref.dataset else None,
        "skipped_files": held_skipped + train_skipped,
        "contract": contract.to_dict(),
        "standardised_by": "held-out real hits (mean and std of each descriptor)",
    }
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results["wavs"] = eval_report.write_wavs(out, gen.arrays()["audio"], contract, wavs)
    results["figures"] = (
        eval_report.write_figures(out, gen, held, train, arrays, results, contract) if figures else
        {"written": [], "note": "figures skipped (--no-figures)"}
    )
    timing["report_s"] = time.perf_counter() - t0
    results["timing"] = {k: round(v, 3) for k, v in timing.items()}
    eval_report.write_json(out / JSON_NAME, results)
    eval_report.write_markdown(out / REPORT_NAME, results)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help=f"model file (.onnx), '{PROCEDURAL}' (the procedural kick baseline) or a folder of hits")
    parser.add_argument("--ref", required=True, metavar="DIR",
                        help="held-out real hits: a folder of audio files, or a dataset folder (its heldout split; "
                             "its train split becomes --train)")
    parser.add_argument("--train", metavar="DIR", default=None,
                        help="training hits, for the memorisation check (default: the dataset's train split)")
    parser.add_argument("-n", "--count", type=int, default=DEFAULT_COUNT,
                        help=f"generated hits (default {DEFAULT_COUNT})")
    parser.add_argument("-o", "--out", default=None, metavar="OUTDIR",
                        help="report folder (default: eval-<MODEL name>)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for latents and splits (default 0)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"render batch (default {DEFAULT_BATCH})")
    parser.add_argument("--splits", type=int, default=DEFAULT_SPLITS,
                        help=f"random half splits for the real-vs-real figure (default {DEFAULT_SPLITS})")
    parser.add_argument("--wavs", type=int, default=DEFAULT_WAVS,
                        help=f"generated WAVs written beside the report (default {DEFAULT_WAVS})")
    parser.add_argument("--method", default=None, help="phase reconstruction method (default: kickit's)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--no-figures", action="store_true", help="numbers only (no PNG figures)")
    parser.add_argument("--strict", action="store_true",
                        help="exit status 1 unless every target passes (a release gate)")


def run(args: argparse.Namespace) -> int:
    from kickit.modelfile import ModelError

    try:
        ref = resolve_ref(args.ref, args.train)
        source = make_source(args.model, method=args.method, threads=args.threads)
        out = Path(args.out) if args.out else Path(f"eval-{source.name}")
        if out.exists() and not out.is_dir():
            raise EvalError(f"-o {out}: exists and is not a folder")
        results = run_eval(source, ref, out, count=args.count, seed=args.seed, batch=args.batch,
                           splits=args.splits, wavs=args.wavs, figures=not args.no_figures)
    except (EvalError, ModelError, AudioError, OSError) as e:
        print(f"kickit eval: {e}", file=sys.stderr)
        return 2
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{t['verdict']:<4}  {t['name']:<17} {value:>8}  ({t['rule']})")
    total = sum(results["timing"].values())
    print(f"{results['verdict']}: report in {out / REPORT_NAME}, numbers in {out / JSON_NAME} ({total:.1f} s)")
    return 1 if args.strict and results["verdict"] != "PASS" else 0


def load_results(path: str | Path) -> dict[str, Any]:
    """Read an eval.json back (for comparisons and docs)."""
    return json.loads(Path(path).read_text())
