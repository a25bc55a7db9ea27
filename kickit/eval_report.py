"""What ``kickit eval`` writes: report.md, eval.json, figures (matplotlib, Agg) and a few generated WAVs."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kickit.audio import write_wav
from kickit.eval_features import ENVELOPE_HOPS, FeatureAccumulator
from kickit.frechet import KIT_HALVES
from kickit.spectral import SpectralContract

FIGURES = {
    "spectrograms": "spectrograms.png",
    "envelopes": "envelopes.png",
    "descriptors": "descriptors.png",
    "memorisation": "memorisation.png",
}
MATPLOTLIB_NOTE = "figures need matplotlib (in the [train] extra: pip install 'kickit[train]')"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def remove_previous(out: Path) -> None:
    """Remove the figures and WAVs an earlier run wrote into ``out``, so none of them outlives its numbers."""
    for name in FIGURES.values():
        (out / name).unlink(missing_ok=True)
    for wav in (out / "wavs").glob("generated-*.wav"):
        wav.unlink()


def write_json(path: Path, results: dict[str, Any]) -> None:
    _atomic_write(path, json.dumps(_jsonable(results), indent=1, sort_keys=False) + "\n")


def write_wavs(out: Path, audio: np.ndarray | None, contract: SpectralContract, count: int) -> list[str]:
    """The first ``count`` generated hits as out/wavs/generated-NN.wav; returns the paths relative to out."""
    names: list[str] = []
    if audio is None or count <= 0:
        return names
    for i, hit in enumerate(audio[:count]):
        rel = f"wavs/generated-{i + 1:02d}.wav"
        write_wav(out / rel, hit, contract.sample_rate)
        names.append(rel)
    return names


# ----- figures ---------------------------------------------------------------------------------------------
def write_figures(out: Path, gen: FeatureAccumulator, held: FeatureAccumulator, train: FeatureAccumulator | None,
                  arrays: dict[str, Any], results: dict[str, Any], contract: SpectralContract) -> dict[str, Any]:
    """All figures as PNGs in ``out``; without matplotlib, none and a note saying so."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return {"written": [], "note": MATPLOTLIB_NOTE}
    written = []
    g, h = gen.arrays(), held.arrays()
    for key, fn in (
        ("spectrograms", lambda: _spectrogram_grid(plt, h["mid"], g["mid"], contract)),
        ("envelopes", lambda: _envelopes(plt, h["envelopes"], g["envelopes"], contract)),
        ("descriptors", lambda: _descriptor_hists(plt, h["descriptors"], g["descriptors"],
                                                  results["frechet"]["descriptors"])),
        ("memorisation", lambda: _memorisation(plt, arrays.get("memorisation"))),
    ):
        fig = fn()
        if fig is None:
            continue
        path = out / FIGURES[key]
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(FIGURES[key])
    return {"written": written, "note": ""}


def _spectrogram_grid(plt: Any, real: np.ndarray | None, gen: np.ndarray | None, contract: SpectralContract,
                      cols: int = 6) -> Any:
    """StereoSampleGAN-style grid: two rows of real hits above two rows of generated ones (mid channel)."""
    if real is None or gen is None:
        return None
    per = 2 * cols
    fig, axes = plt.subplots(4, cols, figsize=(2.0 * cols, 7.5), squeeze=False)
    ms = contract.frames * contract.hop / contract.sample_rate * 1e3
    for block, (label, spec) in enumerate((("real", real), ("generated", gen))):
        for k in range(per):
            ax = axes[2 * block + k // cols][k % cols]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(spec):
                ax.imshow(spec[k].T, origin="lower", aspect="auto", vmin=-1.0, vmax=1.0, cmap="magma",
                          extent=(0.0, ms, 0, contract.rows))
            if k % cols == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"scaled log-magnitude (mid), {ms:.0f} ms; low rows = exact bins up to "
                 f"{contract.row_frequencies()[contract.low_bins - 1]:.0f} Hz")
    fig.tight_layout()
    return fig


def _envelopes(plt: Any, real: np.ndarray | None, gen: np.ndarray | None, contract: SpectralContract) -> Any:
    if real is None or gen is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    t = np.arange(real.shape[1]) * contract.hop / contract.sample_rate * 1e3
    for env, color, label in ((real, "tab:blue", "real (held-out)"), (gen, "tab:orange", "generated")):
        for e in env[:60]:
            ax.plot(t, e, color=color, alpha=0.12, linewidth=0.7)
        ax.plot(t, np.median(env, axis=0), color=color, linewidth=2.0, label=f"{label}, median of {len(env)}")
    ax.set_xlabel("ms")
    ax.set_ylabel(f"RMS level (~{ENVELOPE_HOPS * contract.hop / contract.sample_rate * 1e3:.0f} ms), dB re loudest")
    ax.set_ylim(-80, 3)
    ax.legend()
    ax.set_title("envelopes")
    fig.tight_layout()
    return fig


def _descriptor_hists(plt: Any, real: np.ndarray | None, gen: np.ndarray | None, names: list[str]) -> Any:
    if real is None or gen is None:
        return None
    d = len(names)
    cols = 4
    rows = max(1, math.ceil(d / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= d:
            ax.axis("off")
            continue
        both = np.concatenate([real[:, i], gen[:, i]])
        lo, hi = float(np.min(both)), float(np.max(both))
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 25)
        ax.hist(real[:, i], bins=bins, density=True, alpha=0.5, color="tab:blue", label="real")
        ax.hist(gen[:, i], bins=bins, density=True, alpha=0.5, color="tab:orange", label="generated")
        ax.set_title(names[i], fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _memorisation(plt: Any, mem: dict[str, Any] | None) -> Any:
    if not mem:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    dg, dh = mem["generated_distances"], mem["heldout_distances"]
    hi = float(max(dg.max(), dh.max()))
    bins = np.linspace(0.0, hi if hi > 0 else 1.0, 40)
    ax.hist(dh, bins=bins, density=True, alpha=0.5, color="tab:blue", label="held-out -> nearest training hit")
    ax.hist(dg, bins=bins, density=True, alpha=0.5, color="tab:orange", label="generated -> nearest training hit")
    ax.axvline(mem["threshold"], color="k", linestyle="--",
               label=f"{mem['percentile']:g}th percentile of held-out ({mem['threshold']:.3f})")
    ax.set_xlabel("cosine distance of log-spectrogram energy patterns (0 = copy)")
    ax.legend(fontsize=8)
    ax.set_title(f"memorisation: {mem['share']:.1%} of generated hits under the threshold")
    fig.tight_layout()
    return fig


# ----- markdown --------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and not math.isfinite(v):
        return "inf"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _kits(counts: dict[str, Any], meta: dict[str, Any], which: str) -> str:
    n = counts.get("kits", {}).get(which)
    return f", {n} kits by {meta['kits_from'][which]}" if n is not None else ""


def render_markdown(r: dict[str, Any]) -> str:
    meta, fr, div, mem = r["meta"], r["frechet"], r["diversity"], r["memorisation"]
    src = meta["source"]
    n = r["counts"]
    lines = [
        f"# kickit eval: {src['name']}",
        "",
        f"**Verdict: {r['verdict']}** (targets for a shipped model; method in docs/evaluation.md)",
        "",
        f"- source: {src['kind']}" + (f" `{src['path']}`" if src.get("path") else "")
        + (f" ({src['family']}, {src['output']} output, latent {src['latent_dim']}), weights sha256 "
           f"`{src['weights_sha256'][:16]}...`, reconstruction {src['method']}" if src.get("weights_sha256") else ""),
        f"- {n['generated']} generated hits (seed {meta['seed']}), {n['heldout']} held-out real hits "
        f"(`{meta['heldout']}`{_kits(n, meta, 'heldout')}), "
        + (f"{n['train']} training hits (`{meta['train']}`{_kits(n, meta, 'train')})" if meta["train"]
           else "no training set (memorisation not measured)"),
        f"- kickit {meta['kickit']}; all hits (real ones too) post-processed alike: DC removed, faded, "
        "peak-normalised",
    ]
    if meta["skipped_files"]:
        lines.append(f"- {len(meta['skipped_files'])} unreadable real files skipped (listed in eval.json)")
    lines += ["", "## Targets", "", "| target | value | rule | verdict |", "|---|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['name']} | {_f(t['value'])} | {t['rule']} | **{t['verdict']}** |")
    cmps = r.get("compare") or []
    if cmps:
        lines.append("")
        lines += [f"Compared with `{c['path']}` ({c['name']}, same real hits: {c['same_real']})" for c in cmps]
        lines += ["", "| target | " + " | ".join([src["name"], *(c["name"] for c in cmps)]) + " |",
                  "|---|" + "---|" * (1 + len(cmps))]
        for i, t in enumerate(r["targets"]):
            cells = [f"{_f(t['value'])} {t['verdict']}"] + [f"{_f(c['targets'][i][0])} {c['targets'][i][1]}"
                                                           for c in cmps]
            lines.append(f"| {t['name']} | " + " | ".join(cells) + " |")

    tr = r.get("training_reference")
    if tr:
        lines += ["", f"For scale (no target), what the training data itself scores: the training hits against the "
                      f"held-out hits score kick checks {_f(tr['pass_rate'])}, Frechet distance {_f(tr['frechet'])} "
                      f"({_f(tr['frechet_ratio'], 2)} x real-vs-real), diversity ratio "
                      f"{_f(tr['diversity_ratio'], 2)}. A model that reproduced the training set exactly would score "
                      "about this (and fail memorisation)."]

    ch = r["checks"]
    lines += ["", "## Kick checks", "", "Share of hits passing each check (and all of them); the target compares "
              "with all real hits (held-out and training).", "",
              "| check | generated | all real | held-out real |", "|---|---|---|---|",
              f"| **all** | {_f(ch['generated']['pass_rate'])} | {_f(ch['real']['pass_rate'])} | "
              f"{_f(ch['heldout']['pass_rate'])} |"]
    for name in ch["names"]:
        lines.append(f"| {name} | {_f(ch['generated']['per_check'][name])} | {_f(ch['real']['per_check'][name])} | "
                     f"{_f(ch['heldout']['per_check'][name])} |")

    lines += [
        "", "## Frechet distance", "",
        f"On {len(fr['descriptors'])} audio descriptors (logs of times and frequencies), each standardised by the "
        f"mean and standard deviation of all {fr['standardised_on']} real hits, held-out and training (floored at "
        "the smallest difference that matters: eval.json frechet.scale); covariances regularised with "
        f"{fr['ridge']:g} x I.", "",
        f"- generated vs held-out: **{_f(fr['generated_vs_heldout'])}**",
        f"- real vs real ({fr['real_vs_real_note']}, smaller half {fr['real_vs_real_half_size']} hits (median), "
        f"mean of {fr['real_vs_real_splits']} random splits): {_f(fr['real_vs_real'])} +- "
        f"{_f(fr['real_vs_real_std'])}",
        f"- ratio: {_f(fr['ratio'], 2)}",
    ]
    if fr["real_vs_real_method"] != KIT_HALVES:
        lines.append("- warning: real kicks come in kits of near-copies; random halves share kits, so this "
                     "real-vs-real figure is too small and the Frechet target too strict (docs/evaluation.md)")
    if fr.get("heldout_sized") is not None:
        lines.append(f"- for scale, not a target: whole kits of about the held-out size ({fr['heldout_sized_size']} "
                     f"hits, median) against all other real hits, {fr['real_vs_real_splits']} draws: "
                     f"{_f(fr['heldout_sized'])} +- {_f(fr['heldout_sized_std'])} (what a perfect model of the "
                     "real hits scores against a held-out set of this size)")
    if fr["real_vs_real_half_size"] < 50:
        lines.append(f"- small set: halves of {fr['real_vs_real_half_size']} hits make the real-vs-real figure "
                     "noisy; it is averaged over the random splits above")
    lines += ["", "## Diversity", "",
              "Mean pairwise distance in the standardised descriptor space; the target compares with all real hits "
              "(the held-out hits alone are a few kits).", "",
              f"- generated {_f(div['generated'])}, all real {_f(div['real'])}, ratio **{_f(div['ratio'], 2)}**",
              f"- held-out real {_f(div['heldout'])}, ratio generated / held-out {_f(div['heldout_ratio'], 2)} "
              "(no target)"]
    lines += ["", "## Memorisation", ""]
    if mem:
        lines += [
            "Each generated hit's nearest training hit (cosine distance of the log-spectrogram energy patterns: "
            "0 = a copy), against the held-out hits' nearest-training-hit distances.", "",
            f"- threshold ({mem['percentile']:g}th percentile of held-out-to-training): {_f(mem['threshold'])}",
            f"- generated hits under it: **{mem['flagged']} ({mem['share']:.1%})**",
            f"- nearest distance, generated: min {_f(mem['generated_nearest']['min'])}, median "
            f"{_f(mem['generated_nearest']['median'])}; held-out: min {_f(mem['heldout_nearest']['min'])}, "
            f"median {_f(mem['heldout_nearest']['median'])}",
            f"- the same check in the standardised descriptor space: {mem['descriptor_space_share']:.1%}",
        ]
        if mem.get("closest"):
            lines.append("- closest generated hits (number in generation order; the WAVs are the first ones): "
                         + "; ".join(f"#{c['generated']} -> `{c['train_file']}` {c['distance']:.3f}"
                                     + (" (flagged)" if c["flagged"] else "") for c in mem["closest"]))
        if mem["heldout_duplicates"]:
            lines.append(f"- warning: {mem['heldout_duplicates']} held-out hits are copies of training hits (a leak "
                         "in the split); they are left out of the threshold")
    else:
        lines.append("Not measured: no training set (pass --train DIR, or a dataset folder as --ref).")

    lines += ["", "## Descriptor means", "", "| descriptor | generated | all real | held-out real |",
              "|---|---|---|---|"]
    dm = r["descriptor_means"]
    for name in fr["descriptors"]:
        lines.append(f"| {name} | {_f(dm['generated'][name])} | {_f(dm['real'][name])} | "
                     f"{_f(dm['heldout'][name])} |")

    figs = r["figures"]
    lines += ["", "## Figures", ""]
    if figs["written"]:
        for f in figs["written"]:
            lines += [f"![{Path(f).stem}]({f})", ""]
    else:
        lines.append(figs["note"] or "none")
    if r["wavs"]:
        lines += ["", "## Listen", "", ", ".join(f"[{Path(w).name}]({w})" for w in r["wavs"])]
    t = r["timing"]
    lines += ["", "## Timing", "", ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()), ""]
    return "\n".join(lines)


def load_comparison(path: Path) -> dict[str, Any]:
    """Read another run's eval.json for ``--compare``; ValueError naming the file when it is not one."""
    try:
        other = json.loads(Path(path).read_text())
        targets = {t["name"]: (t["value"], t["verdict"]) for t in other["targets"]}
        meta = other["meta"]
        return {"path": str(path), "name": meta["source"]["name"], "heldout": meta["heldout"],
                "train": meta["train"], "targets": targets}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--compare {path}: not a kickit eval.json ({type(e).__name__}: {e})") from None


def comparison(results: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The targets of another run (:func:`load_comparison`) next to these, e.g. a model vs the baseline."""
    same = other["heldout"] == results["meta"]["heldout"] and other["train"] == results["meta"]["train"]
    return {"path": other["path"], "name": other["name"], "same_real": "yes" if same else
            "NO (numbers not comparable)",
            "targets": [other["targets"].get(t["name"], (None, "N/A")) for t in results["targets"]]}


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    _atomic_write(path, render_markdown(results))
