"""Data-parallel training: two CPU processes on the gloo backend through torchrun, tiny config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kickit.training import checkpoint as ck  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, real_kicks_dir, contract) -> Path:
    from kickit.training.data import build_dataset

    out = tmp_path_factory.mktemp("ds") / "kicks"
    build_dataset([real_kicks_dir], out, contract)
    return out


def test_two_gloo_processes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kickit.cli", "train", "--config", "tiny", "--data", str(dataset), "--out", str(out),
           "--max-steps", "3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    last = ck.load_checkpoint(out / "last.pt")
    assert last["step"] == 3
    assert len(last["rng"]) == 2  # one RNG state per rank, so a resumed run continues each rank exactly
    assert not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])  # ranks draw different batches
    assert all(torch.isfinite(t).all() for t in last["generator"].values())
    # the trainer compares the ranks' weight checksums before every checkpoint; resuming also works
    proc = subprocess.run(cmd[:-1] + ["4", "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ck.load_checkpoint(out / "last.pt")["step"] == 4
