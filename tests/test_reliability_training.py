"""Reliability of training and its data (issue #10):

* ``kill -9`` while a checkpoint is being written (the write is paused half way, then the process is killed):
  the last good checkpoint is intact, and ``kickit train --resume`` continues from it to the same weights as
  an uninterrupted run;
* odd entries in a data folder (a FIFO and a broken link named .wav, a folder named .wav, corrupt and text
  files) are skipped and listed with a reason, and never hang the build.

The injected NaN (the run stops, the last good checkpoint is kept, resume continues) is
tests/test_training.py::test_nan_stops_and_keeps_last_good_checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kickit.training import checkpoint as ck  # noqa: E402

pytestmark = pytest.mark.torch

# the child: `kickit train`, with torch.save paused half way through the checkpoint of step KILL_AT
CHILD = r"""
import io, os, sys, time
import torch
real_save = torch.save
marker, kill_at = sys.argv[1], int(sys.argv[2])

def paused_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("step") == kill_at:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        with open(marker, "w") as m:
            m.write(str(len(data)))
        time.sleep(600)  # killed here
    return real_save(obj, f, *args, **kwargs)

torch.save = paused_save
torch.set_num_threads(1)
from kickit.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, real_kicks_dir: Path, contract) -> Path:  # noqa: ANN001
    from kickit.training.data import build_dataset

    out = tmp_path_factory.mktemp("ds") / "kicks"
    build_dataset([real_kicks_dir], out, contract)
    return out


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_kill_9_while_checkpointing_then_resume_continues_from_the_last_good_one(dataset: Path,
                                                                                tmp_path: Path) -> None:
    run, straight, marker = tmp_path / "run", tmp_path / "straight", tmp_path / "paused"
    args = ["train", "--config", "tiny", "--data", str(dataset), "--max-steps", "4"]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), "4", *args, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"training ended before the paused checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the checkpoint of step 4 was never written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # kill -9, half way through writing the checkpoint
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # what the crash left: the last good checkpoint untouched, the half-written one only as a temp file
    last = ck.load_checkpoint(run / ck.LAST)
    assert last["step"] == 2
    partial = [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < int(marker.read_text())
    with pytest.raises(ck.CheckpointError, match="not a readable checkpoint"):
        ck.load_checkpoint(partial[0])  # it really is a broken half file: had it been renamed, resume would fail

    from kickit.cli import main

    assert main([*args, "--out", str(run), "--resume"]) == 0
    assert not partial[0].exists()  # resume cleaned up the half-written file
    assert main([*args, "--out", str(straight)]) == 0
    resumed, uninterrupted = _weights(run / ck.LAST), _weights(straight / ck.LAST)
    assert resumed["step"] == uninterrupted["step"] == 4
    for key in ("generator", "generator_ema", "discriminator"):
        for name, t in uninterrupted[key].items():
            assert torch.equal(resumed[key][name], t), f"{key}.{name} differs after kill -9 + resume"
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_odd_entries_in_a_data_folder_are_skipped_and_listed(real_kick_paths: list[Path], data_dir: Path,
                                                             tmp_path: Path, contract) -> None:  # noqa: ANN001
    from kickit.training.data import build_dataset

    src = tmp_path / "src" / "kit"
    src.mkdir(parents=True)
    for p in real_kick_paths[:4]:
        shutil.copy(p, src / p.name)
    shutil.copy(data_dir / "bad" / "garbage.wav", src / "garbage.wav")
    shutil.copy(data_dir / "bad" / "truncated.wav", src / "truncated.wav")
    (src / "readme.txt").write_text("not audio\n")
    (src / "folder.wav").mkdir()  # a folder with an audio name
    (src / "folder.wav" / "inner.txt").write_text("x")
    os.symlink(tmp_path / "nowhere.wav", src / "dangling.wav")
    os.mkfifo(src / "pipe.wav")  # reading it would block forever
    os.symlink(src, src / "loop")  # a link back to its own folder
    ds = build_dataset([tmp_path / "src"], tmp_path / "ds", contract)
    skipped = {Path(s["path"]).name: s["reason"] for s in ds.manifest["skipped"]}
    assert skipped["garbage.wav"].startswith("not readable as audio")
    assert skipped["truncated.wav"].startswith("not readable as audio")
    assert skipped["readme.txt"].startswith("not an audio file")
    assert skipped["inner.txt"].startswith("not an audio file")
    assert skipped["dangling.wav"].startswith("not a regular file")
    assert skipped["pipe.wav"].startswith("not a regular file")
    kept = [Path(i["source"]).name for i in ds.manifest["items"]]
    assert sorted(kept) == sorted(p.name for p in real_kick_paths[:4])
