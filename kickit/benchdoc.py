"""Writes benchmark results into docs/benchmarks.md, one section per benchmark, with machine and date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {cores} cores{mem}, Python {platform.python_version()}"


def reference_ms(repeats: int = 15) -> float:
    """Median time in ms of a fixed numpy workload shaped like a render's (inverse and forward FFTs, an
    exponential, a small matrix product; one thread): how fast this machine runs *now*. On a shared VM the
    same code's timings move by 20 % and more within an hour; figures measured beside this reference can be
    compared across runs."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    spec = (rng.standard_normal((256, 1025)) + 1j * rng.standard_normal((256, 1025))).astype(np.complex64)
    frames = rng.standard_normal((64, 2048))
    db = rng.standard_normal((256, 900)).astype(np.float32)
    a = rng.standard_normal((256, 128)).astype(np.float32)
    b = rng.standard_normal((128, 900)).astype(np.float32)
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        np.fft.irfft(spec, n=2048, axis=-1)
        np.fft.rfft(frames, axis=-1)
        np.exp(db)
        np.dot(a, b)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def default_path() -> Path:
    """docs/benchmarks.md of the source checkout when run from one, else ./docs/benchmarks.md."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "docs").is_dir():
        return repo / "docs" / "benchmarks.md"
    return Path.cwd() / "docs" / "benchmarks.md"


HEADER = (
    "# Benchmarks\n\n"
    "Written by `kickit bench ...`; each section records the machine and the date it was measured on.\n"
    "Targets are checked here, never as timed assertions in the tests.\n"
)


def write_section(key: str, title: str, body: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Replace (or append) the section ``key`` of the benchmarks file with ``body`` (markdown)."""
    p = Path(path) if path else default_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    text = p.read_text() if p.exists() else HEADER
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = (
        f"<!-- bench:{key} -->\n## {title}\n\n"
        f"Measured {stamp} on {machine_description()}.\n\n{body.strip()}\n<!-- /bench:{key} -->\n"
    )
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->\n?", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    p.write_text(text)
    return p
