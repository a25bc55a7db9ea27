"""kickit never lets onnxruntime collect or upload usage telemetry: not in the bridge, not in its render processes.

Pip builds of onnxruntime create a telemetry store (a device id and an event database) under the user's cache
folder as soon as they are imported, and start a thread that tries to upload it. These tests run real
interpreters with a private home and cache folder and look for that store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# onnxruntime keeps quiet by itself where one of these says it runs in CI; the tests run as on a producer's machine
_CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TEAMCITY_VERSION", "TRAVIS",
               "CIRCLECI", "BUILDKITE", "APPVEYOR", "CODEBUILD_BUILD_ID")


def _run(code: str, home: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY" and k not in _CI_MARKERS}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def _store(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if "Microsoft" in p.parts)


def test_onnxruntime_alone_writes_a_telemetry_store(tmp_path: Path) -> None:
    """The control: what the tests below guard against happens with this onnxruntime (else they prove nothing)."""
    r = _run("import onnxruntime", tmp_path)
    assert r.returncode == 0, r.stderr
    if not _store(tmp_path):
        pytest.skip("this onnxruntime build writes no telemetry store")


def test_loading_and_running_a_model_sends_no_telemetry(tmp_path: Path, tiny_model_path: Path) -> None:
    code = (
        "import os, numpy as np\n"
        "from kickit.modelfile import load_model\n"
        f"m = load_model({str(tiny_model_path)!r})\n"
        "m.run(np.zeros((1, m.latent_dim), np.float32))\n"
        "print(os.environ['ORT_DISABLE_TELEMETRY'])\n"
    )
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    assert _store(tmp_path) == []


@pytest.mark.slow
def test_render_processes_send_no_telemetry(tmp_path: Path, tiny_model_path: Path) -> None:
    code = (
        "import numpy as np\n"
        "from kickit.bridge.renderpool import ProcessSource\n"
        "if __name__ == '__main__':\n"
        f"    ps = ProcessSource.open({str(tiny_model_path)!r}, 44100, processes=1)\n"
        "    try:\n"
        "        hit = ps.render(np.zeros((1, ps.latent_dim), np.float32))\n"
        "        assert hit.shape[0] == 1 and np.isfinite(hit).all()\n"
        "    finally:\n"
        "        ps.close()\n"
    )
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert _store(tmp_path) == []


def test_a_users_own_choice_is_kept(tmp_path: Path) -> None:
    r = _run("import kickit, os; print(os.environ['ORT_DISABLE_TELEMETRY'])", tmp_path, ORT_DISABLE_TELEMETRY="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
