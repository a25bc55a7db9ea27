"""`kickit eval` end to end: real kicks (tests/data/kicks), the procedural baseline, the tiny model, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kickit import evaluation as ev
from kickit.cli import main

KICKS = Path(__file__).resolve().parent / "data" / "kicks"
BAD = Path(__file__).resolve().parent / "data" / "bad"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The committed real kicks split by kit into held-out and training folders (alternate kits)."""
    root = tmp_path_factory.mktemp("kicks")
    kits = sorted(p for p in KICKS.iterdir() if p.is_dir())
    assert len(kits) >= 6, "tests/data/kicks should hold kicks from several kits"
    for i, kit in enumerate(kits):
        dest = root / ("heldout" if i % 2 == 0 else "train") / kit.name
        shutil.copytree(kit, dest)
    held, train = root / "heldout", root / "train"
    assert len(list(held.rglob("*.wav"))) >= 4 and len(list(train.rglob("*.wav"))) >= 4
    return held, train


def _run(*argv: str) -> int:
    return main(["eval", *argv])


def _outputs(out: Path) -> dict:
    assert (out / "report.md").is_file()
    data = json.loads((out / "eval.json").read_text())
    for name in data["figures"]["written"]:
        assert (out / name).stat().st_size > 1000, name
    for wav in data["wavs"]:
        audio, rate = sf.read(out / wav, always_2d=True)
        assert audio.shape[1] == 2 and rate == 44100 and np.abs(audio).max() > 0.5
    return data


def test_procedural_baseline_end_to_end(split: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    held, train = split
    out = tmp_path / "proc"
    rc = _run("procedural", "--ref", str(held), "--train", str(train), "-n", "48", "-o", str(out),
              "--wavs", "3", "--seed", "5")
    assert rc == 0, capsys.readouterr().err
    data = _outputs(out)
    assert data["counts"]["generated"] == 48
    assert set(data["figures"]["written"]) == {"spectrograms.png", "envelopes.png", "descriptors.png",
                                                "memorisation.png"}
    assert len(data["wavs"]) == 3
    assert [t["name"] for t in data["targets"]] == ["kick checks", "frechet distance", "diversity",
                                                    "memorisation"]
    assert all(t["verdict"] in {"PASS", "FAIL"} for t in data["targets"])
    # procedural kicks are new sounds, not copies of the training kicks
    mem = data["memorisation"]
    assert mem["share"] < 0.05, mem
    assert mem["generated_nearest"]["min"] > 0.01
    # the procedural synth makes kicks: most pass the kick checks
    assert data["checks"]["generated"]["pass_rate"] >= 0.8
    assert data["frechet"]["real_vs_real_splits"] == ev.DEFAULT_SPLITS
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "memorisation" in report and "![spectrograms](spectrograms.png)" in report
    printed = capsys.readouterr().out
    assert "report in" in printed and "frechet distance" in printed
    # same seed, same numbers
    out2 = tmp_path / "proc2"
    assert _run("procedural", "--ref", str(held), "--train", str(train), "-n", "48", "-o", str(out2),
                "--wavs", "0", "--seed", "5", "--no-figures") == 0
    again = json.loads((out2 / "eval.json").read_text())
    assert again["frechet"] == data["frechet"] and again["diversity"] == data["diversity"]


def test_memorisation_flags_a_generator_that_returns_training_hits(split: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    held, train = split
    out = tmp_path / "copycat"
    # MODEL as a folder: "generated" hits that are the training hits verbatim
    rc = _run(str(train), "--ref", str(held), "--train", str(train), "-o", str(out), "--no-figures", "--strict")
    assert rc == 1  # --strict: a failed target is a failed run
    data = json.loads((out / "eval.json").read_text())
    mem = data["memorisation"]
    assert mem["share"] == 1.0
    assert mem["generated_nearest"]["median"] == pytest.approx(0.0, abs=1e-5)
    verdicts = {t["name"]: t["verdict"] for t in data["targets"]}
    assert verdicts["memorisation"] == "FAIL" and data["verdict"] == "FAIL"
    assert data["meta"]["source"]["kind"] == "folder"


def test_tiny_model_end_to_end(tiny_model_path: Path, split: tuple[Path, Path], tmp_path: Path) -> None:
    held, train = split
    out = tmp_path / "tiny"
    assert _run(str(tiny_model_path), "--ref", str(held), "--train", str(train), "-n", "24", "--batch", "8",
                "-o", str(out), "--wavs", "2", "--threads", "1") == 0
    data = _outputs(out)
    src = data["meta"]["source"]
    assert src["kind"] == "model" and src["output"] == "spec" and len(src["weights_sha256"]) == 64
    assert data["counts"] == {"generated": 24, "heldout": len(list(held.rglob("*.wav"))),
                              "train": len(list(train.rglob("*.wav")))}
    assert len(data["figures"]["written"]) == 4 and len(data["wavs"]) == 2
    assert data["verdict"] in {"PASS", "FAIL"}


def test_dataset_folder_uses_its_splits(split: tuple[Path, Path], tmp_path: Path) -> None:
    held, train = split
    ds = tmp_path / "ds"
    shutil.copytree(held, ds / "audio" / "heldout")
    shutil.copytree(train, ds / "audio" / "train")
    (ds / "manifest.json").write_text("{}")
    ref = ev.resolve_ref(str(ds), None)
    assert ref.heldout == ds / "audio" / "heldout" and ref.train == ds / "audio" / "train" and ref.dataset == ds
    assert ev.resolve_ref(str(ds), str(held)).train == held  # --train overrides the dataset's split
    plain = ev.resolve_ref(str(held), None)
    assert plain.heldout == held and plain.train is None
    out = tmp_path / "out"
    assert _run("procedural", "--ref", str(ds), "-n", "8", "-o", str(out), "--no-figures", "--wavs", "0") == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["meta"]["train"] == str(ds / "audio" / "train") and data["memorisation"] is not None


def test_without_training_set_memorisation_is_not_measured(split: tuple[Path, Path], tmp_path: Path) -> None:
    held, _ = split
    out = tmp_path / "notrain"
    assert _run("procedural", "--ref", str(held), "-n", "8", "-o", str(out), "--no-figures", "--wavs", "0") == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["memorisation"] is None
    assert {t["name"]: t["verdict"] for t in data["targets"]}["memorisation"] == "N/A"
    assert data["verdict"] in {"FAIL", "INCOMPLETE"}
    assert "Not measured" in (out / "report.md").read_text()


def test_without_matplotlib_numbers_are_written_and_figures_explained(
        split: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held, _ = split
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "nompl"
    assert _run("procedural", "--ref", str(held), "-n", "8", "-o", str(out), "--wavs", "1") == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["figures"]["written"] == [] and "matplotlib" in data["figures"]["note"]
    assert not list(out.glob("*.png"))
    assert "figures need matplotlib" in (out / "report.md").read_text()
    assert len(data["wavs"]) == 1


@pytest.mark.parametrize("case", ["missing", "empty", "file", "bad-only", "too-few"])
def test_bad_ref_gives_one_clear_line(case: str, split: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    held, _ = split
    ref = tmp_path / "ref"
    want = {"missing": "no such folder", "empty": "no usable audio files", "file": "not a folder",
            "bad-only": "no usable audio files", "too-few": "need at least 4"}[case]
    if case == "empty":
        ref.mkdir()
    elif case == "file":
        ref.write_text("not a folder")
    elif case == "bad-only":
        shutil.copytree(BAD, ref)
    elif case == "too-few":
        ref.mkdir()
        for wav in sorted(held.rglob("*.wav"))[:2]:
            shutil.copy(wav, ref / wav.name)
    rc = _run("procedural", "--ref", str(ref), "-n", "4", "-o", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kickit eval: ") and str(ref) in err and want in err, err
    assert not (tmp_path / "out" / "report.md").exists()


def test_bad_model_and_train_arguments(split: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    held, _ = split
    assert _run(str(tmp_path / "nope.onnx"), "--ref", str(held)) == 2
    assert "nope.onnx: no such model file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx at all" * 10)
    assert _run(str(garbage), "--ref", str(held)) == 2
    assert str(garbage) in capsys.readouterr().err
    assert _run("procedural", "--ref", str(held), "--train", str(tmp_path / "none")) == 2
    assert "--train" in capsys.readouterr().err
    assert _run("procedural", "--ref", str(held), "-n", "1", "-o", str(tmp_path / "o")) == 2
    assert "-n 1" in capsys.readouterr().err
