"""Training datasets: build one from folders of samples, load one for training (numpy only, no torch).

Dataset folder (format ``kickit-dataset-1``)::

    manifest.json      {"format", "contract", "instrument", "heldout_fraction", "seed",
                        "items": [{"id", "file", "source", "kit", "licence", "sha256", "duration", "split"}],
                        "skipped": [{"path", "reason"}]}
    audio/train/*.wav  contract-length stereo 24-bit hits at the contract rate, trimmed, peaked at -1 dBFS
    audio/heldout/*.wav
    spec_train.npy     (N, 2, frames, rows) float32 = contract.encode(the train WAVs), in manifest order
    spec_heldout.npy

``file`` is relative to the dataset folder; ``sha256`` is that of the source's decoded audio (samples as float32,
channels, rate), which is also what exact duplicates are detected by; ``duration`` is the source's length in
seconds. Train and held-out are split by kit (no kit in both), deterministically for a seed; held-out hits are
never trained on (the trainer only reads ``train_*``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kickit.audio import (
    AUDIO_SUFFIXES,
    AudioError,
    iter_audio_files,
    iter_other_files,
    peak_normalise,
    prepare_hit,
    read_audio,
    write_wav,
)
from kickit.descriptors import descriptor_vector
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

log = logging.getLogger(__name__)

DATASET_FORMAT = "kickit-dataset-1"
MANIFEST = "manifest.json"
SOURCES_FILE = "sources.json"  # written by `kickit data fetch` (kickit.training.fetch)
SPLITS = ("train", "heldout")
PEAK_DB = -1.0
ENCODE_CHUNK = 64


class DatasetError(ValueError):
    """A dataset could not be built or loaded; the one-line message names the folder/file and the problem."""


@dataclass
class Dataset:
    root: Path
    contract: SpectralContract
    manifest: dict[str, Any]
    train_audio: np.ndarray  # (N, 2, n) float32
    heldout_audio: np.ndarray  # (M, 2, n) float32
    train_spec: np.ndarray  # (N, 2, frames, rows) float32
    heldout_spec: np.ndarray  # (M, 2, frames, rows) float32

    def items(self, split: str) -> list[dict[str, Any]]:
        return [i for i in self.manifest["items"] if i["split"] == split]

    @property
    def train_items(self) -> list[dict[str, Any]]:
        return self.items("train")

    @property
    def heldout_items(self) -> list[dict[str, Any]]:
        return self.items("heldout")

    def kits(self, split: str | None = None) -> list[str]:
        return sorted({i["kit"] for i in self.manifest["items"] if split in (None, i["split"])})

    def summary(self) -> dict[str, Any]:
        """Counts for logs and checkpoints' ``data_summary``."""
        return {
            "root": str(self.root), "instrument": self.manifest.get("instrument"),
            "train": len(self.train_items), "heldout": len(self.heldout_items),
            "kits_train": len(self.kits("train")), "kits_heldout": len(self.kits("heldout")),
            "skipped": len(self.manifest.get("skipped", [])),
        }


# ----- loading -----------------------------------------------------------------------------------------------
def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (a dataset is a folder with {MANIFEST})")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise DatasetError(f"{root}: not a kickit dataset (no {MANIFEST}); build one with `kickit data build`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{mpath}: format {got!r} is not {DATASET_FORMAT!r}")
    items = manifest.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DatasetError(f"{mpath}: 'items' must be a list of objects")
    for k, i in enumerate(items):
        missing = [f for f in ("id", "file", "kit", "sha256", "split") if f not in i]
        if missing:
            raise DatasetError(f"{mpath}: item {k} lacks {', '.join(missing)}")
        if i["split"] not in SPLITS:
            raise DatasetError(f"{mpath}: item {i['id']!r} has split {i['split']!r} (not train/heldout)")
    return manifest


def _load_split_audio(root: Path, items: list[dict[str, Any]], contract: SpectralContract) -> np.ndarray:
    out = np.zeros((len(items), contract.channels, contract.n_samples), dtype=np.float32)
    for k, item in enumerate(items):
        path = root / item["file"]
        try:
            audio, rate = read_audio(path)
        except AudioError as e:
            raise DatasetError(f"{root}: corrupt dataset: {e}") from None
        if rate != contract.sample_rate or audio.shape != (contract.channels, contract.n_samples):
            raise DatasetError(f"{path}: {audio.shape[0]} ch x {audio.shape[1]} samples at {rate} Hz, the contract "
                               f"wants {contract.channels} x {contract.n_samples} at {contract.sample_rate} Hz")
        out[k] = audio
    return out


def _load_spec(root: Path, split: str, count: int, contract: SpectralContract) -> np.ndarray:
    path = root / f"spec_{split}.npy"
    try:
        spec = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: missing or unreadable spectrogram cache ({e})") from None
    want = (count, *contract.shape)
    if spec.shape != want or spec.dtype != np.float32:
        raise DatasetError(f"{path}: shape {spec.shape} {spec.dtype}, expected {want} float32 "
                           "(rebuild the dataset with `kickit data build`)")
    if not np.all(np.isfinite(spec)):
        raise DatasetError(f"{path}: contains NaN or infinite values")
    return spec


def load_dataset(path: str | os.PathLike[str], contract: SpectralContract | None = None) -> Dataset:
    """Load a dataset folder; raises :class:`DatasetError` when it is missing, corrupt, or was built for another
    contract than ``contract`` (when given)."""
    root = Path(path)
    manifest = _read_manifest(root)
    try:
        stored = SpectralContract.from_dict(manifest["contract"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{root / MANIFEST}: bad or missing contract ({e})") from None
    if contract is not None and stored != contract:
        diff = ", ".join(f"{k} {v} (wanted {contract.to_dict()[k]})" for k, v in stored.to_dict().items()
                         if contract.to_dict().get(k) != v)
        raise DatasetError(f"{root}: built for another spectral contract: {diff}; rebuild it with `kickit data build`")
    audio = {}
    spec = {}
    for split in SPLITS:
        items = [i for i in manifest["items"] if i["split"] == split]
        audio[split] = _load_split_audio(root, items, stored)
        spec[split] = _load_spec(root, split, len(items), stored)
    return Dataset(root, stored, manifest, audio["train"], audio["heldout"], spec["train"], spec["heldout"])


# ----- building ----------------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    path: Path
    kit: str
    licence: str | None
    source: str
    sha256: str = ""
    duration: float = 0.0
    audio: np.ndarray | None = None


@dataclass
class _Scan:
    candidates: list[_Candidate] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    fetch_skipped: list[dict[str, str]] = field(default_factory=list)  # listed in the manifest, not logged


def audio_sha256(audio: np.ndarray, rate: int) -> str:
    """sha256 of decoded audio: float32 samples (channels, n), the channel count and the rate."""
    h = hashlib.sha256()
    h.update(f"{audio.shape[0]}ch {rate}Hz ".encode())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return h.hexdigest()


def _read_sources(root: Path, instrument: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Per-file metadata from ``root/sources.json`` (keyed by path relative to root) and what the fetch
    skipped; ({}, []) when there is no such file."""
    spath = root / SOURCES_FILE
    if not spath.is_file():
        return {}, []
    try:
        data = json.loads(spath.read_text(encoding="utf-8"))
        meta = {str(Path(i["file"])): i for i in data["items"]}
        skipped = [{"path": str(s["path"]), "reason": f"at fetch: {s['reason']}"} for s in data.get("skipped", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"{spath}: unreadable sources file ({type(e).__name__}: {e})") from None
    got = data.get("instrument")
    if got and got != instrument:
        raise DatasetError(f"{spath}: this collection holds {got} samples, not {instrument} "
                           f"(pass --instrument {got} or another folder)")
    return meta, skipped


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _scan(sources: Sequence[str | os.PathLike[str]], instrument: str, exclude: Path) -> _Scan:
    """Candidates and non-audio files under the sources, leaving out anything inside ``exclude`` (the dataset
    being written, should it sit inside a source folder)."""
    scan = _Scan()
    for src in sources:
        root = Path(src).expanduser()
        if not root.exists():
            raise DatasetError(f"{root}: no such file or folder")
        base = root if root.is_dir() else root.parent
        meta, fetch_skipped = _read_sources(base, instrument) if root.is_dir() else ({}, [])
        scan.fetch_skipped.extend(fetch_skipped)
        for f in iter_audio_files(root):
            if _inside(f, exclude):
                continue
            m = meta.get(str(f.relative_to(base)))
            if m is not None:
                scan.candidates.append(_Candidate(f, str(m["kit"]), m.get("licence"), str(m.get("source", f))))
            else:
                scan.candidates.append(_Candidate(f, f.parent.name, None, str(f)))
        for f in iter_other_files(root):
            if (f.name == SOURCES_FILE and f.parent == base) or _inside(f, exclude):
                continue
            if not f.is_file():
                scan.skipped.append({"path": str(f), "reason": "not a regular file (FIFO, socket, device or broken "
                                                              "link)"})
                continue
            scan.skipped.append({"path": str(f), "reason": f"not an audio file (suffix {f.suffix or 'none'!r}; "
                                                          f"reads {', '.join(AUDIO_SUFFIXES)})"})
    return scan


def _order_by_sound(kits: list[str], kit_features: dict[str, np.ndarray]) -> list[str]:
    """Kits sorted along the first principal axis of their mean (standardised) descriptor vectors."""
    feats = np.stack([np.asarray(kit_features[k], dtype=np.float64) for k in kits])
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-9)
    _, _, vt = np.linalg.svd(feats, full_matrices=False)
    axis = feats @ vt[0]
    return [kits[i] for i in np.argsort(axis, kind="stable")]


def split_by_kit(kit_sizes: dict[str, int], heldout: float, seed: int,
                 kit_features: dict[str, np.ndarray] | None = None) -> set[str]:
    """The held-out kits, taken towards ``heldout`` of the hits. Every kit is wholly in one split.

    With ``kit_features`` (a descriptor vector per kit) the kits are ordered by sound (first principal axis) and
    held-out kits are spread evenly along that order, so the held-out hits span the same range of kicks as the
    training hits (a plain random choice of a few kits can hold out, say, only acoustic kits). Without features,
    a seeded shuffle. With two or more kits and ``heldout > 0`` both splits get at least one kit.
    """
    if not 0.0 <= heldout < 1.0:
        raise DatasetError(f"held-out fraction must be in [0, 1), got {heldout}")
    kits = sorted(kit_sizes)
    if heldout == 0.0 or len(kits) < 2:
        return set()
    rng = np.random.default_rng(seed)
    total = sum(kit_sizes.values())
    if kit_features is not None and len(kits) >= 3:
        order = _order_by_sound(kits, kit_features)
        # Error diffusion along the sound axis: hold out a kit whenever the held-out count falls behind
        # ``heldout`` of the hits seen so far (a seeded phase decides where the first one falls).
        chosen = set()
        seen, count, phase = 0, 0, float(rng.uniform(0.0, 1.0))
        for kit in order:
            seen += kit_sizes[kit]
            if count + kit_sizes[kit] / 2 < heldout * seen + (phase - 0.5) * kit_sizes[kit] and \
                    len(chosen) < len(kits) - 1:
                chosen.add(kit)
                count += kit_sizes[kit]
        if chosen:
            return chosen
    order = [kits[i] for i in rng.permutation(len(kits))]
    target = heldout * total
    chosen: set[str] = set()
    count = 0
    for kit in order:
        size = kit_sizes[kit]
        if abs(count + size - target) < abs(count - target) and len(chosen) < len(kits) - 1:
            chosen.add(kit)
            count += size
    if not chosen:  # every kit is bigger than the target: hold out the smallest one
        chosen.add(min(order, key=lambda k: (kit_sizes[k], order.index(k))))
    return chosen


def _encode(contract: SpectralContract, audio: np.ndarray) -> np.ndarray:
    out = np.zeros((audio.shape[0], *contract.shape), dtype=np.float32)
    for s in range(0, audio.shape[0], ENCODE_CHUNK):
        out[s:s + ENCODE_CHUNK] = contract.encode(audio[s:s + ENCODE_CHUNK].astype(np.float32))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "x"


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise DatasetError(f"{out}: exists, is not empty and is not a kickit dataset; pick another -o")


def build_dataset(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    contract: SpectralContract = DEFAULT_CONTRACT,
    instrument: str = "kick",
    heldout: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Build a dataset folder from sample folders/files (see the module docstring) and return it loaded.

    Unreadable, empty, truncated, NaN-filled, silent and non-audio files are skipped, listed in the manifest and
    logged (``kickit.training.data`` warnings, on stderr from the CLI); exact duplicates keep their first copy.
    """
    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not srcs:
        raise DatasetError("no sources given")
    out = Path(out).expanduser()
    _prepare_out(out)
    if not 0.0 <= heldout < 1.0:
        raise DatasetError(f"held-out fraction must be in [0, 1), got {heldout}")
    scan = _scan(srcs, instrument, exclude=out)

    kept: list[_Candidate] = []
    first_of: dict[str, Path] = {}
    for c in scan.candidates:
        try:
            raw, rate = read_audio(c.path)
            c.sha256 = audio_sha256(raw, rate)
            c.duration = raw.shape[1] / rate
            if c.sha256 in first_of:
                scan.skipped.append({"path": str(c.path), "reason": f"duplicate of {first_of[c.sha256]}"})
                continue
            c.audio = peak_normalise(prepare_hit(raw, rate, contract, name=c.path), PEAK_DB)
        except AudioError as e:
            scan.skipped.append({"path": str(c.path), "reason": e.reason})
            continue
        first_of[c.sha256] = c.path
        kept.append(c)
    for s in scan.skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    if not kept:
        raise DatasetError(f"no usable {instrument} samples in {', '.join(map(str, srcs))} "
                           f"({len(scan.skipped)} files skipped)")

    kit_sizes: dict[str, int] = {}
    for c in kept:
        kit_sizes[c.kit] = kit_sizes.get(c.kit, 0) + 1
    kit_vectors: dict[str, list[np.ndarray]] = {}
    for c in kept:
        kit_vectors.setdefault(c.kit, []).append(descriptor_vector(c.audio[None], contract)[0])
    kit_features = {k: np.mean(v, axis=0) for k, v in kit_vectors.items()}
    held = split_by_kit(kit_sizes, heldout, seed, kit_features)
    if heldout > 0 and not held:
        log.warning("only one kit (%s): cannot split by kit, every hit goes to train", next(iter(kit_sizes)))
    kept.sort(key=lambda c: (c.kit in held, c.kit, str(c.path)))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        items: list[dict[str, Any]] = []
        audio: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        for k, c in enumerate(kept):
            split = "heldout" if c.kit in held else "train"
            hid = f"{k:05d}-{_safe(c.kit)}-{_safe(c.path.stem)}"
            rel = f"audio/{split}/{hid}.wav"
            write_wav(tmp / rel, c.audio, contract.sample_rate)
            back, _ = read_audio(tmp / rel)  # the spectrogram cache matches the 24-bit files exactly
            audio[split].append(back)
            items.append({"id": hid, "file": rel, "source": c.source, "kit": c.kit, "licence": c.licence,
                          "sha256": c.sha256, "duration": round(c.duration, 6), "split": split})
            c.audio = None
        for split in SPLITS:
            (tmp / "audio" / split).mkdir(parents=True, exist_ok=True)
            arr = (np.stack(audio[split]) if audio[split]
                   else np.zeros((0, contract.channels, contract.n_samples), np.float32))
            np.save(tmp / f"spec_{split}.npy", _encode(contract, arr))
        manifest = {"format": DATASET_FORMAT, "contract": contract.to_dict(), "instrument": instrument,
                    "heldout_fraction": heldout, "seed": seed, "sources": [str(s) for s in srcs],
                    "items": items, "skipped": scan.skipped + scan.fetch_skipped}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_dataset(out, contract)

