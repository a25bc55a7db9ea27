"""``kickit eval MODEL --ref DIR``: does a model sound like kicks? Writes report.md, eval.json, figures, WAVs.

MODEL is a model file (``.onnx``), the word ``procedural`` (the procedural kick synth, the baseline) or a
folder of hits (a sample pack written by ``kickit generate`` or any other generator). The method and the
targets are documented in docs/evaluation.md; the numbers come from :mod:`kickit.eval_metrics`, the report
and figures from :mod:`kickit.eval_report`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kickit import __version__
from kickit.audio import AudioError, load_folder
from kickit.eval_features import DescriptorBackend, FeatureAccumulator, default_backend
from kickit.eval_metrics import HitSet, evaluate
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

PROCEDURAL = "procedural"
DEFAULT_COUNT = 500
MAX_COUNT = 20000
DEFAULT_BATCH = 32
DEFAULT_SPLITS = 50  # kit-disjoint splits vary a lot with few kits: average many
DEFAULT_WAVS = 8
DEFAULT_WORKERS = 2  # an offline run may use both cores of a 2-core machine
JSON_NAME = "eval.json"
REPORT_NAME = "report.md"
MIN_REAL = 4
MAX_LISTED = 5  # closest generated/training pairs listed in the report


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

    def __init__(self, path: str, *, method: str | None = None, threads: int = 2, workers: int = 1) -> None:
        from kickit.hits import HitRenderer
        from kickit.modelfile import load_model

        self.model = load_model(path, threads=threads)
        try:
            self.renderer = HitRenderer(self.model, **({"method": method} if method else {}), workers=workers)
        except ValueError as e:
            raise EvalError(f"--method {method}: {e}") from None
        self.contract = self.model.contract
        self.name = Path(path).stem

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"kind": "model", "path": str(m.path), "family": m.family, "output": m.output,
                "latent_dim": m.latent_dim, "weights_sha256": m.weights_hash, "method": self.renderer.method}

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        z = rng.standard_normal((count, self.model.latent_dim)).astype(np.float32)
        try:
            for i in range(0, count, batch):
                try:
                    hits = self.renderer.render(z[i:i + batch])
                except RuntimeError as e:  # onnxruntime's errors derive from RuntimeError
                    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise EvalError(f"{self.model.path}: rendering hits {i + 1}-{min(i + batch, count)} failed "
                                    f"({msg})") from None
                yield hits
        finally:
            self.renderer.close()  # its reconstruction threads, when workers > 1


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
        self.hits, self.skipped, _ = load_real(self.path, contract, "MODEL")

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.path), "files": len(self.hits), "skipped": len(self.skipped)}

    def batches(self, count: int, rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
        for i in range(0, min(count, len(self.hits)), batch):
            yield self.hits[i:min(i + batch, count)]


def make_source(spec: str, *, method: str | None = None, threads: int = 2, workers: int = 1) -> HitSource:
    """MODEL argument -> a hit source; EvalError/ModelError with a one-line message when unusable."""
    if spec == PROCEDURAL:
        return ProceduralSource()
    p = Path(spec)
    if p.is_dir():
        return FolderSource(spec)
    if not p.exists():
        raise EvalError(f"{spec}: no such model file (MODEL is an .onnx file, '{PROCEDURAL}' or a folder of hits)")
    return ModelSource(spec, method=method, threads=threads, workers=workers)


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


def load_real(folder: Path, contract: SpectralContract, what: str) -> tuple[np.ndarray, list[str], list[str]]:
    """All hits of a folder, post-processed like generated hits: (hits, skipped files' errors, file paths
    relative to the folder). EvalError when none is usable."""
    from kickit.hits import finish

    try:
        loaded = load_folder(folder, contract)
    except AudioError as e:
        raise EvalError(f"{what} {e}") from None
    if not loaded.hits:
        why = f" ({len(loaded.skipped)} unreadable, first: {loaded.skipped[0]})" if loaded.skipped else ""
        raise EvalError(f"{what} {folder}: no usable audio files{why}")
    audio = finish(np.stack([a for _, a in loaded.hits]), contract)
    names = [str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p, _ in loaded.hits]
    return audio, [str(e) for e in loaded.skipped], names


MANIFEST = "manifest.json"
KITS_FROM_MANIFEST = "dataset manifest"
KITS_FROM_FOLDERS = "parent folder names"


def manifest_kits(dataset: Path) -> dict[str, str]:
    """``file`` (relative to the dataset folder) -> ``kit`` of each item of the dataset's manifest.json; empty
    when there is no manifest or it lists no items. EvalError naming the file when it is unreadable or an item
    lacks its file or kit."""
    path = dataset / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvalError(f"--ref {path}: unreadable manifest ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    items = manifest.get("items", []) if isinstance(manifest, dict) else None
    if not isinstance(items, list):
        raise EvalError(f"--ref {path}: 'items' must be a list of items")
    kits: dict[str, str] = {}
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("kit"), str)):
            raise EvalError(f"--ref {path}: item {i} has no 'file' and 'kit' strings")
        kits[Path(item["file"]).as_posix()] = item["kit"]
    return kits


def kit_labels(folder: Path, names: list[str], dataset: Path | None,
               known: dict[str, str]) -> tuple[list[str], str]:
    """The kit of each real hit (``names`` relative to ``folder``) and where the labels came from: the
    dataset manifest's kit when the file is listed there (``known``: :func:`manifest_kits`), else the name of
    the file's immediate parent folder (a folder per kit, as in tests/data/kicks; a flat folder is one kit)."""
    labels, listed = [], 0
    for name in names:
        path = folder / name
        kit = None
        if dataset is not None and known:
            try:
                kit = known.get(path.resolve().relative_to(dataset.resolve()).as_posix())
            except ValueError:  # not inside the dataset folder (e.g. --train elsewhere)
                kit = None
        if kit is None:
            kit = path.parent.name
        else:
            listed += 1
        labels.append(kit)
    if listed == len(names):
        how = KITS_FROM_MANIFEST
    elif listed == 0:
        how = KITS_FROM_FOLDERS
    else:
        how = f"{KITS_FROM_MANIFEST} ({listed} hits), {KITS_FROM_FOLDERS} ({len(names) - listed} hits)"
    return labels, how


# ----- the run ---------------------------------------------------------------------------------------------
def instrument_of(source: HitSource, ref: RefPaths) -> str:
    """Which instrument the checks are for: the reference dataset's manifest, else the model's training data
    (model metadata), else kick."""
    if ref.dataset is not None:
        try:
            got = json.loads((ref.dataset / MANIFEST).read_text(encoding="utf-8")).get("instrument")
        except (OSError, ValueError, AttributeError):
            got = None
        if isinstance(got, str) and got:
            return got
    model = getattr(source, "model", None)
    data = (getattr(model, "training", None) or {}).get("data") if model is not None else None
    got = data.get("instrument") if isinstance(data, dict) else None
    return got if isinstance(got, str) and got else "kick"


def _features(hits: np.ndarray, contract: SpectralContract, backend: DescriptorBackend, *, keep: int,
              spectra: bool, batch: int, pool: Executor | None) -> FeatureAccumulator:
    acc = FeatureAccumulator(contract, backend, keep=keep, want_spectra=spectra)
    for i in range(0, len(hits), batch):
        acc.add(hits[i:i + batch], pool)
    return acc


def _hitset(acc: FeatureAccumulator, kits: list[str] | None = None) -> HitSet:
    a = acc.arrays()
    return HitSet(a["descriptors"], a["checks"], a["spectra"], None if kits is None else np.asarray(kits))


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
    workers: int = 1,
    compare: Path | Sequence[Path] | None = None,
) -> dict[str, Any]:
    """Evaluate ``source`` against the real hits; writes the report folder and returns the results dict.

    ``workers`` > 1 computes the features on that many threads (the model source has its own ``workers``).
    """
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="kickit-eval") as pool:
            return _run_eval(source, ref, out, count=count, seed=seed, batch=batch, splits=splits, wavs=wavs,
                             figures=figures, backend=backend, pool=pool, compare=compare)
    return _run_eval(source, ref, out, count=count, seed=seed, batch=batch, splits=splits, wavs=wavs,
                     figures=figures, backend=backend, pool=None, compare=compare)


def _run_eval(source: HitSource, ref: RefPaths, out: Path, *, count: int, seed: int, batch: int, splits: int,
              wavs: int, figures: bool, backend: DescriptorBackend | None, pool: Executor | None,
              compare: Path | Sequence[Path] | None) -> dict[str, Any]:
    from kickit import eval_report

    if not 2 <= count <= MAX_COUNT:
        raise EvalError(f"-n {count}: must be 2..{MAX_COUNT}")
    if batch < 1:
        raise EvalError(f"--batch {batch}: must be at least 1")
    if seed < 0:
        raise EvalError(f"--seed {seed}: must be 0 or more")
    if splits < 1:
        raise EvalError(f"--splits {splits}: must be at least 1")
    if wavs < 0:
        raise EvalError(f"--wavs {wavs}: must be 0 or more")
    others = []
    for c in [] if compare is None else [compare] if isinstance(compare, (str, Path)) else list(compare):
        if not Path(c).is_file():
            raise EvalError(f"--compare {c}: no such file (give an eval.json of an earlier run)")
        try:
            others.append(eval_report.load_comparison(Path(c)))
        except ValueError as e:
            raise EvalError(str(e)) from None
    instrument = instrument_of(source, ref)
    backend = backend or default_backend(instrument)
    contract = source.contract
    seeds = np.random.SeedSequence(seed).spawn(2)
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    held_audio, held_skipped, held_names = load_real(ref.heldout, contract, "--ref")
    if len(held_audio) < MIN_REAL:
        raise EvalError(f"--ref {ref.heldout}: {len(held_audio)} usable hits, need at least {MIN_REAL}")
    train_audio, train_skipped, train_names = (load_real(ref.train, contract, "--train") if ref.train
                                               else (None, [], []))
    known = manifest_kits(ref.dataset) if ref.dataset else {}
    held_kits, held_kits_from = kit_labels(ref.heldout, held_names, ref.dataset, known)
    train_kits, train_kits_from = (kit_labels(ref.train, train_names, ref.dataset, known) if ref.train
                                   else (None, None))
    timing["load_real_s"] = time.perf_counter() - t0
    has_train = train_audio is not None
    keep = 16

    t0 = time.perf_counter()
    held = _features(held_audio, contract, backend, keep=keep, spectra=has_train, batch=batch, pool=pool)
    train = (_features(train_audio, contract, backend, keep=0, spectra=True, batch=batch, pool=pool)
             if has_train else None)
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
        gen.add(b, pool)
    if len(gen) < 2:
        raise EvalError(f"{source.name}: produced {len(gen)} hits, need at least 2")
    timing["generate_s"] = render_s
    timing["generated_features_s"] = time.perf_counter() - t0 - render_s

    t0 = time.perf_counter()
    results = evaluate(
        _hitset(gen), _hitset(held, held_kits), _hitset(train, train_kits) if train is not None else None,
        backend.names, backend.check_names, rng=np.random.default_rng(seeds[1]), splits=splits,
    )
    timing["metrics_s"] = time.perf_counter() - t0
    arrays = results.pop("_arrays")
    mem = arrays["memorisation"]
    if mem is not None:  # the closest generated hits and the training files they are nearest to
        order = np.argsort(mem["generated_distances"])[:MAX_LISTED]
        results["memorisation"]["closest"] = [
            {"generated": int(i) + 1, "train_file": train_names[int(mem["nearest_index"][i])],
             "distance": float(mem["generated_distances"][i]),
             "flagged": bool(mem["flagged_mask"][i])}
            for i in order]

    results["meta"] = {
        "kickit": __version__,
        "source": {"name": source.name, **source.describe()},
        "seed": seed,
        "requested": count,
        "heldout": str(ref.heldout),
        "train": str(ref.train) if ref.train else None,
        "dataset": str(ref.dataset) if ref.dataset else None,
        "instrument": instrument,
        "checks": list(backend.check_names),
        "skipped_files": held_skipped + train_skipped,
        "contract": contract.to_dict(),
        "kits_from": {"heldout": held_kits_from, "train": train_kits_from},
        "standardised_by": "all real hits, held-out and training (mean and std of each descriptor, std floored: "
                           "frechet.scale)",
    }
    if others:
        results["compare"] = [eval_report.comparison(results, o) for o in others]
    out.mkdir(parents=True, exist_ok=True)
    eval_report.remove_previous(out)
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
                             "its train split becomes --train). Kits: the dataset manifest's, else each file's "
                             "parent folder name")
    parser.add_argument("--train", metavar="DIR", default=None,
                        help="training hits, for the memorisation check (default: the dataset's train split)")
    parser.add_argument("-n", "--count", type=int, default=DEFAULT_COUNT,
                        help=f"generated hits (default {DEFAULT_COUNT})")
    parser.add_argument("-o", "--out", default=None, metavar="OUTDIR",
                        help="report folder (default: eval-<MODEL name>)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for latents and splits (default 0)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"render batch (default {DEFAULT_BATCH})")
    parser.add_argument("--splits", type=int, default=DEFAULT_SPLITS,
                        help=f"random (kit-disjoint) half splits for the real-vs-real figure (default {DEFAULT_SPLITS})")
    parser.add_argument("--wavs", type=int, default=DEFAULT_WAVS,
                        help=f"generated WAVs written beside the report (default {DEFAULT_WAVS})")
    parser.add_argument("--method", default=None, help="phase reconstruction method (default: kickit's)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"threads for phase reconstruction and features (default {DEFAULT_WORKERS})")
    parser.add_argument("--no-figures", action="store_true", help="numbers only (no PNG figures)")
    parser.add_argument("--compare", metavar="EVAL_JSON", action="append", default=None,
                        help="an earlier run's eval.json (e.g. a baseline) to set beside the targets; repeat for "
                        "several")
    parser.add_argument("--strict", action="store_true",
                        help="exit status 1 unless every target passes (a release gate)")


def run(args: argparse.Namespace) -> int:
    from kickit.modelfile import ModelError

    try:
        ref = resolve_ref(args.ref, args.train)
        if args.workers < 1:
            raise EvalError(f"--workers {args.workers}: must be at least 1")
        source = make_source(args.model, method=args.method, threads=args.threads, workers=args.workers)
        out = Path(args.out) if args.out else Path(f"eval-{source.name}")
        if out.exists() and not out.is_dir():
            raise EvalError(f"-o {out}: exists and is not a folder")
        results = run_eval(source, ref, out, count=args.count, seed=args.seed, batch=args.batch,
                           splits=args.splits, wavs=args.wavs, figures=not args.no_figures, workers=args.workers,
                           compare=[Path(c) for c in args.compare or []])
    except (EvalError, ModelError, AudioError, OSError) as e:
        print(f"kickit eval: {e}", file=sys.stderr)
        return 2
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{t['verdict']:<4}  {t['name']:<17} {value:>8}  ({t['rule']})")
    total = sum(results["timing"].values())
    print(f"{results['verdict']}: report in {out / REPORT_NAME}, numbers in {out / JSON_NAME} ({total:.1f} s)")
    return 1 if args.strict and results["verdict"] != "PASS" else 0

