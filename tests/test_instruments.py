"""Instruments beyond the kick: the dataset records its instrument, ``kickit train --instrument`` checks it,
and ``kickit eval`` applies the checks that fit the instrument (a snare has no 40-120 Hz fundamental)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kickit import descriptors
from kickit.audio import load_hit
from kickit.cli import main
from kickit.eval_features import default_backend
from kickit.evaluation import ModelSource, RefPaths, instrument_of


@pytest.fixture(scope="module")
def snare_dataset(real_snare_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kickit.training.data import build_dataset

    assert len(real_snare_paths) >= 3
    out = tmp_path_factory.mktemp("ds") / "snares"
    build_dataset([real_snare_paths[0].parent.parent], out, instrument="snare", heldout=0.34, seed=0)
    return out


def test_check_sets_per_instrument(real_snare_paths: list[Path], real_kick_paths: list[Path]) -> None:
    assert descriptors.check_names_for("kick") == descriptors.CHECK_NAMES
    assert descriptors.check_names_for(None) == descriptors.CHECK_NAMES
    snare = descriptors.check_names_for("snare")
    assert "fundamental" not in snare and "low_dominant" not in snare and set(snare) < set(descriptors.CHECK_NAMES)
    assert default_backend("snare").check_names == list(snare)
    # real snares fail the kick rules but pass the checks that apply to them
    hits = np.stack([load_hit(p) for p in real_snare_paths])
    checks = descriptors.kick_checks(hits)
    assert not checks["all"].any() and not checks["fundamental"].any()
    assert all(checks[n].all() for n in snare)
    kicks = np.stack([load_hit(p) for p in real_kick_paths])
    assert descriptors.kick_checks(kicks)["all"].mean() > 0.5  # the kick set is unchanged for kicks


def test_dataset_records_the_instrument_and_eval_picks_it(snare_dataset: Path, tiny_model_path: Path) -> None:
    from kickit.training.data_cli import check_instrument, dataset_instrument

    assert dataset_instrument(snare_dataset) == "snare"
    assert check_instrument(snare_dataset, "snare") is None
    assert "holds snare hits, not kick" in check_instrument(snare_dataset, "kick")
    assert "unknown" in check_instrument(snare_dataset, "tuba")
    src = ModelSource(str(tiny_model_path), threads=1)
    ref = RefPaths(snare_dataset / "audio" / "heldout", None, snare_dataset)
    assert instrument_of(src, ref) == "snare"  # the dataset says so
    plain = RefPaths(snare_dataset / "audio" / "heldout", None, None)
    assert instrument_of(src, plain) == "kick"  # tiny-spec's training data names none: kick
    src.model.training["data"] = {"instrument": "snare"}  # as the exporter writes a snare run's data summary
    assert instrument_of(src, plain) == "snare"


def test_train_refuses_another_instruments_dataset(snare_dataset: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    rc = main(["train", "--config", "tiny", "--data", str(snare_dataset), "--out", str(tmp_path / "run"),
               "--instrument", "kick"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds snare hits, not kick" in err[0] and str(snare_dataset) in err[0]
    assert not (tmp_path / "run").exists()
