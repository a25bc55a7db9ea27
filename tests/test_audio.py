"""kickit.audio on the committed real samples and bad files, and on files written in every supported format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kickit.audio import AudioError, load_folder, load_hit, read_audio, write_wav
from kickit.spectral import SpectralContract

BAD_REASONS = {
    "empty": "empty file (0 bytes)",
    "truncated": "not readable as audio",
    "truncated_data": "truncated: the header promises 39404 bytes of audio, the file holds 13105",
    "header_only": "no audio frames",
    "garbage": "not readable as audio (Format not recognised)",
    "nan": "contains NaN or infinite samples",
    "notes": "not readable as audio",
    "silent": "silent",
}


def test_real_kicks_load_as_contract_hits(real_kick_paths: list[Path], contract: SpectralContract) -> None:
    for p in real_kick_paths:
        a = load_hit(p, contract, normalise=True)
        assert a.shape == (2, contract.n_samples) and a.dtype == np.float32, p
        assert np.all(np.isfinite(a))
        assert np.max(np.abs(a)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
        # trimmed: the onset is at the start (within the pre-roll and attack)
        env = np.max(np.abs(a), axis=0)
        assert np.argmax(env > 0.1 * env.max()) < 0.01 * contract.sample_rate, p


@pytest.mark.parametrize("kind", sorted(BAD_REASONS))
def test_each_bad_file_gets_one_clear_error(kind: str, bad_audio_paths: dict[str, Path]) -> None:
    path = bad_audio_paths[kind]
    with pytest.raises(AudioError) as ei:
        load_hit(path)
    msg = str(ei.value)
    assert msg.startswith(str(path) + ": ") and BAD_REASONS[kind] in msg
    assert "\n" not in msg and msg.count(str(path)) == 1
    assert ei.value.path == str(path)


def test_missing_file_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a folder"):
        read_audio(tmp_path)
    with pytest.raises(AudioError, match="no such file or folder"):
        load_folder(tmp_path / "missing")


def test_folder_skips_bad_files_names_them_and_goes_on(
    tmp_path: Path, real_kick_paths: list[Path], bad_audio_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    for p in real_kick_paths[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    for name in ("empty", "garbage", "nan", "truncated"):
        (tmp_path / bad_audio_paths[name].name).write_bytes(bad_audio_paths[name].read_bytes())
    with caplog.at_level(logging.WARNING, logger="kickit.audio"):
        res = load_folder(tmp_path)
    assert len(res.hits) == 3
    assert sorted(Path(e.path).name for e in res.skipped) == ["empty.wav", "garbage.wav", "nan.wav", "truncated.wav"]
    for e in res.skipped:
        assert e.path in caplog.text


@pytest.mark.parametrize("fmt,subtype,suffix", [
    ("WAV", "PCM_16", ".wav"), ("WAV", "FLOAT", ".wav"), ("FLAC", "PCM_24", ".flac"),
    ("AIFF", "PCM_16", ".aiff"), ("OGG", "VORBIS", ".ogg"),
])
def test_formats_rates_and_channels(tmp_path: Path, contract: SpectralContract, fmt: str, subtype: str,
                                    suffix: str) -> None:
    rate = 48000
    t = np.arange(int(0.3 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.08)).astype(np.float32)
    lead = np.zeros(int(0.05 * rate), np.float32)  # 50 ms of silence before the onset
    mono = np.concatenate([lead, tone])
    path = tmp_path / f"k{suffix}"
    sf.write(str(path), mono, rate, format=fmt, subtype=subtype)
    a = load_hit(path, contract)
    assert a.shape == (2, contract.n_samples)
    np.testing.assert_array_equal(a[0], a[1])  # mono -> both channels
    env = np.abs(a[0])
    assert np.argmax(env > 0.05) < 0.005 * contract.sample_rate  # leading silence trimmed
    # resampled: the 60 Hz tone keeps its pitch at 44.1 kHz (zero crossings over the first 0.2 s)
    seg = a[0, : int(0.2 * contract.sample_rate)]
    seg = seg[np.argmax(np.abs(seg) > 1e-3):]  # from the onset (the resampler rings around zero before it)
    crossings = np.count_nonzero(np.diff(np.signbit(seg)))
    assert abs(crossings / 2 / (seg.size / contract.sample_rate) - 60) < 5


def test_more_than_two_channels_keeps_first_two_with_warning(tmp_path: Path, contract: SpectralContract,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    x = np.zeros((4410, 4), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = 0.5, -0.25, 0.9
    x[:, :3] *= np.exp(-np.arange(4410) / 800)[:, None]
    path = tmp_path / "quad.wav"
    sf.write(str(path), x, 44100, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="kickit.audio"):
        a = load_hit(path, contract, trim=False)
    assert "4 channels, keeping the first two" in caplog.text and str(path) in caplog.text
    assert a[0, 0] == pytest.approx(0.5) and a[1, 0] == pytest.approx(-0.25)


def test_cut_fades_out_and_short_is_padded(tmp_path: Path, contract: SpectralContract) -> None:
    long = np.full((2 * contract.n_samples, 2), 0.5, np.float32)
    sf.write(str(tmp_path / "long.wav"), long, contract.sample_rate, subtype="FLOAT")
    a = load_hit(tmp_path / "long.wav", contract, trim=False)
    assert a[0, 0] == pytest.approx(0.5) and abs(a[0, -1]) < 1e-3  # faded to zero at the cut
    assert np.all(np.diff(a[0, -400:]) <= 1e-7)  # monotonic fade
    short = np.full((1000, 2), 0.5, np.float32)
    sf.write(str(tmp_path / "short.wav"), short, contract.sample_rate, subtype="FLOAT")
    b = load_hit(tmp_path / "short.wav", contract, trim=False)
    assert b.shape == (2, contract.n_samples) and np.all(b[:, 1000:] == 0)
    whole = load_hit(tmp_path / "long.wav", contract, trim=False, length=0)
    assert whole.shape == (2, 2 * contract.n_samples)


def test_write_wav_is_24_bit_and_round_trips(tmp_path: Path, contract: SpectralContract) -> None:
    rng = np.random.default_rng(0)
    x = (0.5 * rng.standard_normal((2, 5000))).clip(-1, 1).astype(np.float32)
    p = write_wav(tmp_path / "sub" / "o.wav", x, contract.sample_rate)
    info = sf.info(str(p))
    assert info.subtype == "PCM_24" and info.channels == 2 and info.samplerate == contract.sample_rate
    y, _ = read_audio(p)
    assert np.max(np.abs(y - x)) < 2.0 ** -22
    assert not list(p.parent.glob("*.tmp"))  # atomic: no temp file left
    with pytest.raises(AudioError, match="NaN"):
        write_wav(tmp_path / "bad.wav", np.full((2, 10), np.nan), contract.sample_rate)
    assert not (tmp_path / "bad.wav").exists()


def test_truncation_rule() -> None:
    from kickit.audio import _truncation

    assert _truncation("data : 39404 (should be 13105)").startswith("truncated: the header promises 39404")
    assert _truncation("SSND : 5000 (should be 100)") is not None
    assert _truncation("data : 4294967295 (should be 13105)") is None  # never-finalised streaming header
    assert _truncation("data : 0 (should be 13105)") is None
    assert _truncation("*** 'data' chunk should be an even number of bytes in length.") is None
