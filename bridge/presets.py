"""Presets: a JSON file with the model hash, the seed and every pad's latent, mode, knobs and spread.

Latents are stored as the exact float32 values (JSON numbers round-trip them bit for bit), so loading a
preset with the same model renders exactly the same kicks. A preset made for another model (weights hash)
still loads when the latent size matches, with a warning: the kicks will differ.

Pad groups (one model per group of pads, docs/bridge.md) are saved as ``"groups"``: for each group beyond the
main one its name, model (name, weights hash, path) and pads. The bridge opens those models when it loads the
preset; each pad's latent must fit its group's model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kickit.bridge.pads import KNOB_COUNT, MAX_SPREAD, MODES, PAD_COUNT, Pad

from kickit.atomic import atomic_write

PRESET_FORMAT = 1


class PresetError(ValueError):
    """A preset file cannot be used; the one-line message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {reason}")


@dataclass
class PresetGroup:
    name: str
    model_name: str
    model_hash: str
    model_path: str | None
    pads: list[int]


@dataclass
class Preset:
    model_hash: str
    model_name: str
    seed: int
    selected: int
    pads: list[Pad]
    groups: list[PresetGroup] = field(default_factory=list)  # pad groups beyond the main one


def to_dict(preset: Preset) -> dict[str, Any]:
    return {
        "format": PRESET_FORMAT,
        "kind": "kickit-preset",
        "model": {"name": preset.model_name, "weights_sha256": preset.model_hash},
        "seed": preset.seed,
        "selected": preset.selected,
        "pads": [
            {"latent": [float(x) for x in p.latent.astype(np.float32)], "mode": p.mode,
             "knobs": [float(v) for v in p.knobs], "spread": float(p.spread), "new_count": p.new_count,
             "fresh_count": p.fresh_count}
            for p in preset.pads
        ],
        "groups": [
            {"name": g.name, "model": {"name": g.model_name, "weights_sha256": g.model_hash, "path": g.model_path},
             "pads": list(g.pads)}
            for g in preset.groups
        ],
    }


def save_preset(path: str | os.PathLike[str], preset: Preset) -> Path:
    """Write atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_dict(preset), indent=1)
    with atomic_write(p, "w") as fh:
        fh.write(text + "\n")
    return p


def _num(path: Path, where: str, x: Any, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not lo <= x <= hi:
        raise PresetError(path, f"{where}: {x!r} is not a number in [{lo}, {hi}]")
    return float(x)


def _int(path: Path, where: str, x: Any, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise PresetError(path, f"{where}: {x!r} is not an integer in {lo}..{hi}")
    return x


def _groups(path: Path, raw: Any) -> list[PresetGroup]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PresetError(path, "groups must be a list")
    out: list[PresetGroup] = []
    taken: set[int] = set()
    for i, g in enumerate(raw):
        where = f"group {i}"
        if not isinstance(g, dict) or not isinstance(g.get("name"), str) or not g["name"]:
            raise PresetError(path, f"{where}: needs a non-empty name")
        model = g.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("weights_sha256"), str):
            raise PresetError(path, f"{where} ({g['name']}): model.weights_sha256 missing")
        mpath = model.get("path")
        if mpath is not None and not isinstance(mpath, str):
            raise PresetError(path, f"{where} ({g['name']}): model.path must be a string")
        pads = g.get("pads")
        if not isinstance(pads, list) or not pads:
            raise PresetError(path, f"{where} ({g['name']}): pads must be a non-empty list")
        idx = [_int(path, f"{where} ({g['name']}) pad", x, 0, PAD_COUNT - 1) for x in pads]
        if taken & set(idx) or len(set(idx)) != len(idx):
            raise PresetError(path, f"{where} ({g['name']}): a pad is in two groups")
        taken |= set(idx)
        if g["name"] == "main" or any(o.name == g["name"] for o in out):
            raise PresetError(path, f"{where}: group name {g['name']!r} is used twice (or is 'main')")
        out.append(PresetGroup(g["name"], str(model.get("name", "")), model["weights_sha256"], mpath, idx))
    return out


def load_preset(path: str | os.PathLike[str], latent_dim: int | Sequence[int] | None) -> Preset:
    """Read and validate a preset (raises :class:`PresetError`). ``latent_dim``: the latent size every pad
    needs, or one per pad (pad groups with different models), or None to accept any (all finite numbers)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise PresetError(p, f"cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(p, f"not a JSON preset ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != "kickit-preset":
        raise PresetError(p, "not a kickit preset (no \"kind\": \"kickit-preset\")")
    if data.get("format") != PRESET_FORMAT:
        raise PresetError(p, f"unknown preset format {data.get('format')!r} (this kickit reads {PRESET_FORMAT})")
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("weights_sha256"), str):
        raise PresetError(p, "model.weights_sha256 missing")
    pads_raw = data.get("pads")
    if not isinstance(pads_raw, list) or len(pads_raw) != PAD_COUNT:
        raise PresetError(p, f"needs a list of {PAD_COUNT} pads")
    pads: list[Pad] = []
    for i, d in enumerate(pads_raw):
        where = f"pad {i}"
        if not isinstance(d, dict):
            raise PresetError(p, f"{where}: not an object")
        lat = d.get("latent")
        need = latent_dim if latent_dim is None or isinstance(latent_dim, int) else latent_dim[i]
        if not isinstance(lat, list) or not lat or (need is not None and len(lat) != need):
            n = len(lat) if isinstance(lat, list) else "no"
            raise PresetError(p, f"{where}: latent has {n} values; the model needs {need or 'some'} "
                                 "(preset made for another model?)")
        z = np.array([_num(p, f"{where} latent", x, -1e3, 1e3) for x in lat], dtype=np.float32)
        mode = d.get("mode", "hold")
        if mode not in MODES:
            raise PresetError(p, f"{where}: unknown mode {mode!r} (modes: {', '.join(MODES)})")
        knobs = d.get("knobs", [0.0] * KNOB_COUNT)
        if not isinstance(knobs, list) or len(knobs) != KNOB_COUNT:
            raise PresetError(p, f"{where}: knobs must be {KNOB_COUNT} numbers")
        kv = [_num(p, f"{where} knob", v, -1.0, 1.0) for v in knobs]
        spread = _num(p, f"{where} spread", d.get("spread", 0.35), 0.0, MAX_SPREAD)
        pads.append(Pad(z, mode, kv, spread, _int(p, f"{where} new_count", d.get("new_count", 1), 0, 2**31),
                        _int(p, f"{where} fresh_count", d.get("fresh_count", 0), 0, 2**62)))
    return Preset(model["weights_sha256"], str(model.get("name", "")),
                  _int(p, "seed", data.get("seed", 0), 0, 2**32 - 1),
                  _int(p, "selected", data.get("selected", 0), 0, PAD_COUNT - 1), pads,
                  _groups(p, data.get("groups")))
