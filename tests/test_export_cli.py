"""`kickit inspect` and `kickit generate` on the tiny test model (numpy + onnxruntime path, no torch)."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kickit.cli import main
from kickit.png import encode_png, preview_grid


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _png_pixels(data: bytes) -> np.ndarray:
    w, h = _png_size(data)
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(h, w, 3)


def test_png_encoder_round_trip() -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    assert np.array_equal(_png_pixels(encode_png(img)), img)
    with pytest.raises(ValueError, match="expected an"):
        encode_png(np.zeros((4, 4)))


def test_inspect_text(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_model_path), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    for word in ("contract", "44100 Hz", "parity", "max |onnxruntime - torch|", ": ok", "render",
                 "ms median", "knobs      8", "KiB", "sha256"):
        assert word in out, out
    assert out.count("range -") >= 8


def test_inspect_json(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_model_path), "--json", "--runs", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == 1 and info["output"] == "spec" and len(info["knobs"]) == 8
    assert info["size_bytes"] == tiny_model_path.stat().st_size
    assert info["parity"]["ok"] is True
    assert info["render_one_hit"]["total"]["median_ms"] > 0
    assert info["contract"]["sample_rate"] == 44100


def test_inspect_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 40)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.onnx" in err and err.count("\n") == 1


def test_generate_pack(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pack"
    assert main(["generate", "--count", "5", "-o", str(out), "--seed", "11", "--model", str(tiny_model_path)]) == 0
    assert "wrote 5 kicks" in capsys.readouterr().out
    wavs = sorted(out.glob("kick-*.wav"))
    assert [p.name for p in wavs] == [f"kick-{i:03d}.wav" for i in range(1, 6)]
    for p in wavs:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
        data, _ = sf.read(str(p))
        assert 0.5 < np.abs(data).max() <= 1.0
    pack = json.loads((out / "pack.json").read_text())
    assert pack["seed"] == 11 and len(pack["hits"]) == 5 and len(pack["hits"][0]["z"]) > 0
    w, h = _png_size((out / "preview.png").read_bytes())
    assert w > 100 and h > 100
    assert _png_pixels((out / "preview.png").read_bytes()).std() > 5  # not a blank picture
    # the same seed gives the same kicks, bit for bit
    again = tmp_path / "again"
    assert main(["generate", "-n", "5", "-o", str(again), "--seed", "11", "--model", str(tiny_model_path),
                 "--no-preview"]) == 0
    assert all((again / p.name).read_bytes() == p.read_bytes() for p in wavs)
    assert not (again / "preview.png").exists()
    # an existing pack is not overwritten without --force
    assert main(["generate", "-n", "2", "-o", str(out), "--model", str(tiny_model_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["generate", "-n", "2", "-o", str(out), "--model", str(tiny_model_path), "--force"]) == 0


def test_generate_knobs_and_errors(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.modelfile import load_model

    first = load_model(tiny_model_path).knobs[0].name
    base = ["generate", "-n", "1", "--seed", "3", "--model", str(tiny_model_path), "--no-preview"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    assert main([*base, "-o", str(tmp_path / "b"), "--knob", f"{first}=1"]) == 0
    a = (tmp_path / "a" / "kick-001.wav").read_bytes()
    assert a != (tmp_path / "b" / "kick-001.wav").read_bytes()
    assert json.loads((tmp_path / "b" / "pack.json").read_text())["knobs"][first] == 1.0
    capsys.readouterr()
    for bad, msg in (("nosuch=0.5", "no knob 'nosuch'"), (f"{first}=2", "must be in -1..1"),
                     (f"{first}=x", "not a number"), ("novalue", "expected NAME=VALUE")):
        assert main([*base, "-o", str(tmp_path / "c"), "--knob", bad]) == 2
        assert msg in capsys.readouterr().err
    assert main(["generate", "-n", "0", "-o", str(tmp_path / "d"), "--model", str(tiny_model_path)]) == 2
    assert "--count 0" in capsys.readouterr().err
    missing = tmp_path / "missing.onnx"
    assert main(["generate", "-n", "1", "-o", str(tmp_path / "e"), "--model", str(missing)]) == 2
    assert "missing.onnx: cannot read" in capsys.readouterr().err


def test_preview_grid_layout(tiny_model_path: Path) -> None:
    from kickit.hits import HitRenderer
    from kickit.modelfile import load_model

    m = load_model(tiny_model_path)
    hits = HitRenderer(m).render(np.random.default_rng(0).standard_normal((5, m.latent_dim)))
    img = preview_grid(hits, m.contract, columns=4, size=64)
    tile_h = 64 // 3 + 64
    assert img.shape == (2 * tile_h + 3 * 4, 4 * 64 + 5 * 4, 3)


def test_bench_render_runs(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from kickit.export import bench

    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true")
    bench.add_arguments(parser)
    args = parser.parse_args(["--no-write", "--model", str(tiny_model_path), "--runs", "2", "--no-variants"])
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "| fp32, full graph optimisation | 1 |" in out and "Targets: one hit <= 20 ms p95" in out
    assert "Machine speed reference" in out and " ms before the rounds, " in out
    assert re.search(r"the fastest of 4 renders of each of the 2 hits.*median \d+\.\d ms, p95 \d+\.\d ms", out)


def test_machine_speed_reference_times_a_fixed_workload() -> None:
    """The benches' reference: the fixed workload runs and gives a time in milliseconds (what it reads is the
    machine's state, so no bound on it is asserted beyond sanity)."""
    from kickit.benchdoc import reference_ms

    a, b = reference_ms(3), reference_ms(3)
    assert 0.0 < a < 1000.0 and 0.0 < b < 1000.0


def test_generate_only_kicks(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.descriptors import is_kick
    from kickit.generate import generate_pack
    from kickit.modelfile import load_model

    out = tmp_path / "kicks"
    args = ["generate", "-n", "3", "-o", str(out), "--seed", "2", "--model", str(tiny_model_path), "--only-kicks"]
    assert main(args) == 0
    pack = json.loads((out / "pack.json").read_text())
    assert pack["only_kicks"] is True and len(pack["hits"]) == 3
    hits = np.stack([sf.read(str(out / h["file"]), always_2d=True)[0].T for h in pack["hits"]]).astype(np.float32)
    m = load_model(tiny_model_path)
    assert np.all(is_kick(hits, m.contract))
    # rejection: an acceptor that refuses every other hit -> the kept hits are the accepted ones, in order
    seen: list[int] = []

    def every_other(audio: np.ndarray, contract: object) -> np.ndarray:
        flags = (np.arange(len(audio)) + len(seen)) % 2 == 0
        seen.extend(range(len(audio)))
        return flags

    paths = generate_pack(m, tmp_path / "half", 5, 9, accept=every_other, preview=False)
    pack = json.loads((tmp_path / "half" / "pack.json").read_text())
    assert len(paths) == 5 and pack["tried"] == 16
    all_z = np.random.default_rng(9).standard_normal((16, m.latent_dim)).astype(np.float32)
    np.testing.assert_allclose([h["z"] for h in pack["hits"]], all_z[[0, 2, 4, 6, 8]], atol=1e-6)
    # an acceptor that refuses everything gives up with a clear message
    with pytest.raises(ValueError, match=r"only 0 of 10 generated hits passed the kick checks"):
        generate_pack(m, tmp_path / "none", 1, 1, accept=lambda a, c: np.zeros(len(a), bool), preview=False)


def test_inspect_sweeps(tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kickit.hits import HitRenderer
    from kickit.inspect import SWEEP_GAP_S, SWEEP_VALUES
    from kickit.modelfile import load_model

    m = load_model(tiny_model_path)
    assert main(["inspect", str(tiny_model_path), "--runs", "1", "--sweep", str(tmp_path / "sw")]) == 0
    assert "sweeps     8 WAVs" in capsys.readouterr().out
    wavs = sorted((tmp_path / "sw").glob("knob-*.wav"))
    assert len(wavs) == 8 and wavs[0].name.startswith("knob-1-")
    data, rate = sf.read(str(wavs[0]), always_2d=True)
    hop = m.contract.n_samples + int(SWEEP_GAP_S * rate)
    assert data.shape == (len(SWEEP_VALUES) * hop, 2)
    parts = [data[i * hop:i * hop + m.contract.n_samples] for i in range(len(SWEEP_VALUES))]
    assert not np.allclose(parts[0], parts[-1], atol=1e-3)  # the knob changes the hit ...
    z = np.random.default_rng(0).standard_normal((1, m.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(parts[2].T, HitRenderer(m).render(z)[0], atol=1e-4)  # ... centre: the plain hit
