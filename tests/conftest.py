"""Shared pytest fixtures: the spectral contract, the committed real samples, the bad files, a JACK server.

Keep this small; fixtures that only one test file needs belong in that file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jackserver import jack_server  # noqa: F401 - registers the fixture (tests/jackserver.py)

from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def contract() -> SpectralContract:
    """The default spectral contract (what shipped models use)."""
    return DEFAULT_CONTRACT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data (committed samples; see tests/data/README.md for sources and licences)."""
    return DATA


@pytest.fixture(scope="session")
def real_kicks_dir() -> Path:
    """tests/data/kicks: one sub-folder per kit, plus sources.json (kit, licence, origin of each file)."""
    return DATA / "kicks"


@pytest.fixture(scope="session")
def real_kick_paths(real_kicks_dir: Path) -> list[Path]:
    """The committed real kick WAVs (11 hits from 9 kits), sorted."""
    paths = sorted(real_kicks_dir.rglob("*.wav"))
    assert len(paths) >= 8, "tests/data/kicks is missing its samples"
    return paths


@pytest.fixture(scope="session")
def real_snare_paths() -> list[Path]:
    """The committed real snare WAVs (3 hits from 3 kits), sorted."""
    return sorted((DATA / "snares").rglob("*.wav"))


@pytest.fixture(scope="session")
def bad_audio_paths() -> dict[str, Path]:
    """Bad files by kind: empty, truncated, truncated_data, header_only, garbage, nan, notes (text), silent."""
    return {p.stem: p for p in sorted((DATA / "bad").iterdir()) if p.is_file()}


# ----- model files (export engineer) ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """tests/data/models/tiny-spec.onnx: a small real kickit model file (regenerate: tests/data/models/make_tiny.py)."""
    path = DATA / "models" / "tiny-spec.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing; regenerate it with .venv/bin/python tests/data/models/make_tiny.py")
    return path
