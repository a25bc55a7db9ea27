"""DAW mode: versioned, atomic hit files and their announcements (bridge/daw.py), with real files."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kickit.bridge import daw

from kickit.audio import AudioError

RATE = 44100


def hit(seed: int, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, n)) * 0.2).astype(np.float32)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, pad: int, path: str) -> None:
        with self.lock:
            self.calls.append((pad, path))


def read(path: str | Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE
    return data.T


def test_file_names_and_versions(tmp_path: Path) -> None:
    files = daw.HitFiles(tmp_path)
    files.prepare()
    a = files.write(3, hit(1), RATE)
    b = files.write(3, hit(2), RATE)
    c = files.write(12, hit(3), RATE)
    assert (a.name, b.name, c.name) == ("pad03-000001.wav", "pad03-000002.wav", "pad12-000001.wav")
    assert a.is_absolute() and a.parent == tmp_path.resolve()
    assert np.array_equal(read(b), hit(2)), "32-bit float files hold the hit exactly"
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"


def test_old_versions_deleted_after_the_next_is_announced(tmp_path: Path) -> None:
    files = daw.HitFiles(tmp_path, keep=2)
    paths = []
    for i in range(4):
        p = files.write(0, hit(i), RATE)
        files.announced(0, p)
        paths.append(p)
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert files.current(0) == paths[-1]
    files.remove_all()
    assert not any(p.exists() for p in paths)


def test_prepare_cleans_only_our_stale_files(tmp_path: Path) -> None:
    (tmp_path / "pad01-000007.wav").write_bytes(b"old")
    (tmp_path / "my-kick.wav").write_bytes(b"keep me")
    (tmp_path / "pad1-7.wav").write_bytes(b"not our pattern")
    assert daw.HitFiles(tmp_path).prepare() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-kick.wav", "pad1-7.wav"]


def test_prepare_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(AudioError, match="is a file, not a folder"):
        daw.HitFiles(f).prepare()


def test_daw_mode_writes_latest_and_announces(tmp_path: Path) -> None:
    rec = Recorder()
    with daw.DawMode(tmp_path / "hits", rec) as mode:
        mode.on_hit(0, hit(1), RATE)
        mode.on_hit(5, hit(2), RATE)
        assert mode.flush()
        mode.on_hit(0, hit(3), RATE)
        assert mode.flush()
        pads = [p for p, _ in rec.calls]
        assert sorted(pads) == [0, 0, 5]
        last0 = [path for p, path in rec.calls if p == 0][-1]
        assert np.array_equal(read(last0), hit(3))
        assert Path(last0) == mode.current(0)
        mode.resend()
        assert mode.flush()
        assert sorted(rec.calls[-2:]) == sorted([(0, last0), (5, str(mode.current(5)))])
        assert mode.status()["written"] == 3 and mode.errors == 0
    assert not any((tmp_path / "hits").iterdir()), "files are removed when the DAW mode closes"


def test_coalescing_keeps_the_latest_hit(tmp_path: Path) -> None:
    rec = Recorder()
    mode = daw.DawMode(tmp_path, rec, keep_files=True)
    for i in range(20):  # parked before the writer starts: only the latest may be written
        mode.on_hit(2, hit(i), RATE)
    mode.start()
    try:
        assert mode.flush()
    finally:
        mode.close()
    assert len(rec.calls) == 1
    assert np.array_equal(read(rec.calls[0][1]), hit(19))


def test_resampled_output(tmp_path: Path) -> None:
    rec = Recorder()
    with daw.DawMode(tmp_path, rec, rate=48000) as mode:
        mode.on_hit(1, hit(1, 44100), RATE)
        assert mode.flush()
        info = sf.info(rec.calls[0][1])
        assert info.samplerate == 48000 and info.channels == 2 and abs(info.frames - 48000) <= 2


def test_failed_notify_is_counted_and_the_writer_lives(tmp_path: Path) -> None:
    calls = []

    def flaky(pad: int, path: str) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError("network is down")

    with daw.DawMode(tmp_path, flaky) as mode:
        mode.on_hit(0, hit(1), RATE)
        assert mode.flush()
        assert mode.errors == 1 and not Path(calls[0]).exists(), "an unannounced file is discarded"
        mode.on_hit(0, hit(2), RATE)
        assert mode.flush()
        assert mode.current(0) == Path(calls[1]) and Path(calls[1]).exists()


def test_unwritable_folder_is_an_error_not_a_crash(tmp_path: Path) -> None:
    rec = Recorder()
    mode = daw.DawMode(tmp_path / "gone", rec).start()
    try:
        (tmp_path / "gone").rmdir()
        (tmp_path / "gone").write_text("now a file")
        mode.on_hit(0, hit(1), RATE)
        assert mode.flush()
        assert mode.errors == 1 and rec.calls == []
    finally:
        mode.close()


def test_make_sink_defaults_to_the_cache_folder(tmp_path: Path) -> None:
    class Ctl:
        sent: list = []

        def send(self, *a: object) -> None:
            self.sent.append(a)

        def announce(self) -> None:
            pass

    sink = daw.make_sink(object(), None, Ctl())
    assert sink.mode.folder == daw.default_folder().resolve()
    sink = daw.make_sink(object(), tmp_path / "d", Ctl())
    assert "DAW mode: hit files in" in sink.describe() and sink.counters()["daw_written"] == 0


def test_refuses_bad_audio(tmp_path: Path) -> None:
    files = daw.HitFiles(tmp_path)
    files.prepare()
    bad = hit(1)
    bad[0, 5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        files.write(0, bad, RATE)
    with pytest.raises(AudioError, match="stereo"):
        files.write(0, hit(1)[:1], RATE)
    assert not list(tmp_path.iterdir())
