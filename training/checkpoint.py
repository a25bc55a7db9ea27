"""Training checkpoints: one ``torch.save`` dict, written atomically; ``last.pt`` and ``best.pt`` per run.

Keys: ``format`` (``kickit-checkpoint-1``), ``config`` (TrainConfig as a dict), ``contract``
(``contract.to_dict()``), ``step``, ``generator``, ``generator_ema``, ``discriminator``, ``opt_g``, ``opt_d``,
``rng`` (python, numpy and torch states, plus the batch sampler's generator), ``data_summary`` (dataset path,
counts, kits, skipped files), ``metrics`` (latest losses and the validation metric; ``best_val``).

Only plain containers, numbers, strings and tensors are stored, so checkpoints load with
``torch.load(weights_only=True)`` (no arbitrary code runs when a checkpoint is opened).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kickit.atomic import atomic_write

FORMAT = "kickit-checkpoint-1"
LAST = "last.pt"
BEST = "best.pt"
REQUIRED = ("format", "config", "contract", "step", "generator", "generator_ema")


class CheckpointError(ValueError):
    """A checkpoint file is missing or unusable; the message names the file."""


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write atomically: temp file in the same folder, fsync, rename (a crash never leaves half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(p, fsync_dir=True) as f:
        torch.save(ckpt, f)
    return p


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; raises :class:`CheckpointError` naming the file on any problem."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint ({msg[:200]})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a kickit checkpoint (top level is {type(ckpt).__name__}, not a dict)")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a kickit checkpoint (format {ckpt.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: checkpoint is missing {missing}")
    return ckpt


def remove_partial(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (a run killed while saving: the
    atomic write's ``.last.pt.*.tmp``); the finished ``last.pt``/``best.pt`` are untouched. Returns them."""
    gone = []
    for name in (LAST, BEST):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                gone.append(tmp)
            except OSError:
                pass
    return gone


def find_checkpoint(run_dir_or_file: str | os.PathLike[str], which: str = "best") -> Path:
    """A checkpoint file as given, or ``best.pt``/``last.pt`` of a run folder (best falls back to last)."""
    p = Path(run_dir_or_file)
    if which not in ("best", "last"):
        raise CheckpointError(f"{p}: which checkpoint must be 'best' or 'last', not {which!r}")
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such run folder or checkpoint file")
    order = [BEST, LAST] if which == "best" else [LAST]
    for name in order:
        if (p / name).is_file():
            return p / name
    raise CheckpointError(f"{p}: run folder has no {' or '.join(order)}")


# ----- RNG state (plain containers only) --------------------------------------------------------------
def rng_state(sampler: np.random.Generator | None = None) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": str(np_state[0]), "keys": [int(k) for k in np_state[1]], "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if sampler is not None:
        state["sampler"] = sampler.bit_generator.state
    return state


def set_rng_state(state: dict[str, Any], sampler: np.random.Generator | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if sampler is not None and "sampler" in state:
        sampler.bit_generator.state = state["sampler"]
