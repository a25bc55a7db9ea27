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
from kickit.eval_bench import split_by_kit

KICKS = Path(__file__).resolve().parent / "data" / "kicks"
BAD = Path(__file__).resolve().parent / "data" / "bad"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The committed real kicks split by kit into held-out and training folders (balanced hit counts)."""
    ref = split_by_kit(KICKS, tmp_path_factory.mktemp("kicks"))
    assert ref.train is not None
    n_held, n_train = len(list(ref.heldout.rglob("*.wav"))), len(list(ref.train.rglob("*.wav")))
    assert n_held >= 4 and n_train >= 4, f"tests/data/kicks split into {n_held} held-out / {n_train} train hits"
    return ref.heldout, ref.train


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
    # same seed, same numbers (with one thread as with the default two)
    out2 = tmp_path / "proc2"
    assert _run("procedural", "--ref", str(held), "--train", str(train), "-n", "48", "-o", str(out2),
                "--wavs", "0", "--seed", "5", "--no-figures", "--workers", "1") == 0
    again = json.loads((out2 / "eval.json").read_text())
    assert again["frechet"] == data["frechet"] and again["diversity"] == data["diversity"]
    assert again["memorisation"]["closest"] == data["memorisation"]["closest"]
    # a re-run into the same folder leaves no figure or WAV of the earlier run behind
    assert _run("procedural", "--ref", str(held), "-n", "8", "-o", str(out), "--wavs", "1", "--no-figures") == 0
    assert not list(out.glob("*.png")) and [p.name for p in (out / "wavs").iterdir()] == ["generated-01.wav"]


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
    # the training-set reference is exactly what this "generator" scores
    ref = data["training_reference"]
    assert ref["frechet"] == pytest.approx(data["frechet"]["generated_vs_heldout"], rel=1e-9)
    assert ref["diversity_ratio"] == pytest.approx(data["diversity"]["ratio"], rel=1e-9)
    assert ref["pass_rate"] == data["checks"]["generated"]["pass_rate"]
    closest = mem["closest"]
    train_files = {str(p.relative_to(train)) for p in train.rglob("*.wav")}
    assert len(closest) == min(ev.MAX_LISTED, len(train_files))
    assert all(c["flagged"] and c["distance"] < 1e-5 for c in closest)
    listed = {c["train_file"] for c in closest}
    assert listed == train_files if len(train_files) <= ev.MAX_LISTED else listed < train_files


def test_tiny_model_end_to_end(tiny_model_path: Path, split: tuple[Path, Path], tmp_path: Path) -> None:
    held, train = split
    out = tmp_path / "tiny"
    assert _run(str(tiny_model_path), "--ref", str(held), "--train", str(train), "-n", "24", "--batch", "8",
                "-o", str(out), "--wavs", "2", "--threads", "1") == 0
    data = _outputs(out)
    src = data["meta"]["source"]
    assert src["kind"] == "model" and src["output"] == "spec" and len(src["weights_sha256"]) == 64
    n_held, n_train = len(list(held.rglob("*.wav"))), len(list(train.rglob("*.wav")))
    kits_held, kits_train = len({p.parent for p in held.rglob("*.wav")}), len({p.parent for p in train.rglob("*.wav")})
    assert data["counts"] == {"generated": 24, "heldout": n_held, "train": n_train, "real": n_held + n_train,
                              "kits": {"heldout": kits_held, "train": kits_train, "real": kits_held + kits_train}}
    # a folder per kit (tests/data/kicks): the kits are the parent folders, and real-vs-real respects them
    assert data["meta"]["kits_from"] == {"heldout": ev.KITS_FROM_FOLDERS, "train": ev.KITS_FROM_FOLDERS}
    assert data["frechet"]["real_vs_real_method"] == "kit-disjoint halves"
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
    assert _run(str(KICKS.parent / "models" / "tiny-spec.onnx"), "--ref", str(held), "--method", "magic") == 2
    assert "--method magic: unknown reconstruction method" in capsys.readouterr().err
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
    assert _run("procedural", "--ref", str(held), "--splits", "0", "-o", str(tmp_path / "o")) == 2
    assert "--splits 0" in capsys.readouterr().err
    assert _run("procedural", "--ref", str(held), "--seed", "-3", "-o", str(tmp_path / "o")) == 2
    assert "--seed -3" in capsys.readouterr().err


def test_bench_eval_runs_and_reports_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "eval", "--model", "procedural", "-n", "8", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| **total** |" in out and "generated features" in out and "Target:" in out


def test_compare_sets_an_earlier_run_beside_the_targets(split: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    held, train = split
    base = tmp_path / "base"
    common = ["--ref", str(held), "--train", str(train), "-n", "8", "--no-figures", "--wavs", "0"]
    assert _run("procedural", *common, "-o", str(base)) == 0
    out = tmp_path / "copycat"
    assert _run(str(train), *common, "-o", str(out), "--compare", str(base / "eval.json")) == 0
    data = json.loads((out / "eval.json").read_text())
    [cmp_] = data["compare"]
    assert cmp_["name"] == "procedural" and cmp_["same_real"] == "yes"
    base_data = json.loads((base / "eval.json").read_text())
    assert [v for v, _ in cmp_["targets"]] == [t["value"] for t in base_data["targets"]]
    report = (out / "report.md").read_text()
    assert f"Compared with `{base / 'eval.json'}`" in report and "| memorisation | 1.000 FAIL | 0.000 PASS |" in report
    # several baselines: one column each, in the order given
    assert _run(str(train), *common, "-o", str(tmp_path / "two"), "--compare", str(base / "eval.json"),
                "--compare", str(out / "eval.json")) == 0
    two = json.loads((tmp_path / "two" / "eval.json").read_text())["compare"]
    assert [c["name"] for c in two] == ["procedural", data["meta"]["source"]["name"]]
    assert "| memorisation | 1.000 FAIL | 0.000 PASS | 1.000 FAIL |" in (tmp_path / "two" / "report.md").read_text()
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert _run("procedural", *common, "-o", str(tmp_path / "x"), "--compare", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"--compare {bad}: not a kickit eval.json" in err and len(err.strip().splitlines()) == 1
    assert _run("procedural", *common, "-o", str(tmp_path / "x"), "--compare", str(tmp_path / "none.json")) == 2
    assert "no such file" in capsys.readouterr().err


def test_inference_failure_is_one_clear_line(tiny_model_path: Path, split: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # an onnxruntime failure mid-run (e.g. out of memory on a big batch) cannot be provoked on demand here
    from kickit.hits import HitRenderer

    held, _ = split
    monkeypatch.setattr(HitRenderer, "render", lambda self, z: (_ for _ in ()).throw(RuntimeError("bad alloc\nmore")))
    assert _run(str(tiny_model_path), "--ref", str(held), "-n", "8", "--batch", "4", "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kickit eval: {tiny_model_path}: rendering hits 1-4 failed (bad alloc)"


def _flat_dataset(root: Path, manifest: object | None) -> dict[str, str]:
    """tests/data/kicks as a dataset folder with flat split folders (like `kickit data build`): the first four
    kits held out. Returns file -> kit."""
    kits = {}
    for i, kit in enumerate(sorted(p for p in KICKS.iterdir() if p.is_dir())):
        split = "heldout" if i < 4 else "train"
        for wav in sorted(kit.glob("*.wav")):
            rel = f"audio/{split}/{kit.name}-{wav.name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(wav, root / rel)
            kits[rel] = kit.name
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest) if not isinstance(manifest, str) else manifest)
    return kits


def test_kits_come_from_the_dataset_manifest(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    kits = _flat_dataset(ds, None)
    (ds / "manifest.json").write_text(json.dumps(
        {"items": [{"file": f, "kit": k, "split": f.split("/")[1]} for f, k in kits.items()]}))
    out = tmp_path / "out"
    assert _run("procedural", "--ref", str(ds), "-n", "8", "-o", str(out), "--no-figures", "--wavs", "0") == 0
    data = json.loads((out / "eval.json").read_text())
    n_held_kits = len({k for f, k in kits.items() if "/heldout/" in f})
    assert data["counts"]["kits"] == {"heldout": n_held_kits, "train": len(set(kits.values())) - n_held_kits,
                                      "real": len(set(kits.values()))}
    assert data["meta"]["kits_from"] == {"heldout": ev.KITS_FROM_MANIFEST, "train": ev.KITS_FROM_MANIFEST}
    fr = data["frechet"]
    assert fr["real_vs_real_method"] == "kit-disjoint halves" and fr["standardised_on"] == len(kits)
    assert fr["real_vs_real_splits"] == ev.DEFAULT_SPLITS
    report = (out / "report.md").read_text()
    assert "kit-disjoint halves of all 11 real hits (9 kits)" in report and "by dataset manifest" in report


def test_without_kit_labels_real_vs_real_falls_back_and_says_so(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    _flat_dataset(ds, None)  # no manifest: kits are the parent folders, i.e. just "heldout" and "train"
    out = tmp_path / "out"
    assert _run("procedural", "--ref", str(ds), "-n", "8", "-o", str(out), "--no-figures", "--wavs", "0") == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["meta"]["kits_from"] == {"heldout": ev.KITS_FROM_FOLDERS, "train": ev.KITS_FROM_FOLDERS}
    assert data["frechet"]["real_vs_real_method"] == "random halves"
    assert "only 2 kits" in data["frechet"]["real_vs_real_note"]
    assert "warning: real kicks come in kits" in (out / "report.md").read_text()


@pytest.mark.parametrize("manifest, want", [("{not json", "unreadable manifest"),
                                            ({"items": {"a": 1}}, "'items' must be a list"),
                                            ({"items": [{"file": "audio/heldout/x.wav"}]}, "item 0 has no")])
def test_bad_manifest_gives_one_clear_line(manifest: object, want: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    _flat_dataset(ds, manifest)
    assert _run("procedural", "--ref", str(ds), "-n", "4", "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ds / "manifest.json") in err and want in err, err


def test_kit_labels_from_folders() -> None:
    labels, how = ev.kit_labels(Path("/r"), ["kitA/1.wav", "kitA/2.wav", "kitB/x/3.wav", "4.wav"], None, {})
    assert labels == ["kitA", "kitA", "x", "r"] and how == ev.KITS_FROM_FOLDERS
