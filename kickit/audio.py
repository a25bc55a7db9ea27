"""Audio files in and out: load any common format as a contract-length stereo hit, write 24-bit WAV.

Every failure on a file raises :class:`AudioError` whose one-line message names the file and what was wrong.
Loading a folder skips such files with a warning and goes on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kickit.atomic import atomic_write
from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".oga")
TRIM_THRESHOLD_DB = -50.0  # relative to the file's peak: what counts as the onset
PRE_ROLL = 16  # samples kept before the onset
FADE_SECONDS = 0.010
MAX_READ_SECONDS = 30.0  # a hit is short: longer files are read up to here only


class AudioError(ValueError):
    """A file could not be used as audio; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a file as float32 (channels, samples) at its own rate; raises AudioError on any problem."""
    p = Path(path)
    if p.is_dir():
        raise AudioError(p, "is a folder, not an audio file")
    if not p.is_file():
        raise AudioError(p, "no such file")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    try:
        with sf.SoundFile(str(p)) as fh:
            short = _truncation(fh.extra_info)
            if short:
                raise AudioError(p, short)
            rate = int(fh.samplerate)
            limit = int(MAX_READ_SECONDS * rate) if rate > 0 else -1
            data = fh.read(frames=limit, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, MemoryError) as e:
        raise AudioError(p, f"not readable as audio ({_sndfile_reason(e, p)})") from None
    if rate <= 0:
        raise AudioError(p, f"invalid sample rate {rate}")
    if data.shape[0] == 0:
        raise AudioError(p, "no audio frames (empty or truncated)")
    if data.shape[1] == 0:
        raise AudioError(p, "no channels")
    if not np.all(np.isfinite(data)):
        raise AudioError(p, "contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(rate)


_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
STREAMING_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # headers of recordings that were never finalised: not an error


def _truncation(extra_info: str) -> str | None:
    """libsndfile reads what there is of a file cut short and notes it in its log; say so instead."""
    m = _SHORT_CHUNK.search(extra_info or "")
    if m is None:
        return None
    declared, present = int(m.group(2)), int(m.group(3))
    if declared in STREAMING_SIZES or declared >= 0xFFFFFFF0 or present >= declared:
        return None
    return f"truncated: the header promises {declared} bytes of audio, the file holds {present}"


def _sndfile_reason(e: BaseException, p: Path) -> str:
    """libsndfile's message without the "Error opening 'PATH': " prefix (the path is already named)."""
    msg = str(e).splitlines()[0].strip() if str(e) else type(e).__name__
    msg = re.sub(r"^Error opening .*?: ", "", msg)
    return msg.rstrip(".") or type(e).__name__


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (channels, samples) float32 with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio.T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


def to_stereo(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Mono -> both channels; more than two channels -> the first two, with a warning."""
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    if audio.shape[0] > 2:
        log.warning("%s: %d channels, keeping the first two", name, audio.shape[0])
        return audio[:2]
    return audio


def trim_leading_silence(audio: np.ndarray, threshold_db: float = TRIM_THRESHOLD_DB) -> np.ndarray:
    """Drop what comes before the onset (first sample within ``threshold_db`` of the peak), less a pre-roll."""
    env = np.max(np.abs(audio), axis=0)
    peak = float(env.max()) if env.size else 0.0
    if peak <= 0.0:
        return audio
    onset = int(np.argmax(env >= peak * 10.0 ** (threshold_db / 20.0)))
    return audio[:, max(0, onset - PRE_ROLL) :]


def fit_length(audio: np.ndarray, n: int, rate: int, fade_seconds: float = FADE_SECONDS) -> np.ndarray:
    """Cut to ``n`` samples with a raised-cosine fade-out over the end, or zero-pad."""
    if audio.shape[1] >= n:
        out = audio[:, :n].copy()
        k = min(n, max(1, int(round(fade_seconds * rate))))
        out[:, n - k :] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, k, dtype=np.float32)))[None, :]
        return out
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def peak_normalise(audio: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    """Scale so the absolute peak is ``peak_db`` dBFS (silence is left alone)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return audio
    return audio * np.float32(10.0 ** (peak_db / 20.0) / peak)


def load_hit(
    path: str | os.PathLike[str],
    contract: SpectralContract = DEFAULT_CONTRACT,
    *,
    trim: bool = True,
    normalise: bool = False,
    length: int | None = None,
) -> np.ndarray:
    """Load one hit as float32 (2, n) at the contract rate: resampled, stereo, trimmed, cut/padded.

    ``length`` defaults to the contract's hit length; pass 0 to keep the whole file.
    """
    audio, rate = read_audio(path)
    return prepare_hit(audio, rate, contract, name=path, trim=trim, normalise=normalise, length=length)


def prepare_hit(
    audio: np.ndarray,
    rate: int,
    contract: SpectralContract = DEFAULT_CONTRACT,
    *,
    name: str | os.PathLike[str] = "audio",
    trim: bool = True,
    normalise: bool = False,
    length: int | None = None,
) -> np.ndarray:
    """What :func:`load_hit` does after reading: (channels, samples) at ``rate`` -> float32 (2, n) hit.

    Raises :class:`AudioError` naming ``name`` when the audio is silent.
    """
    audio = to_stereo(np.asarray(audio, dtype=np.float32), str(name))
    audio = resample(audio, rate, contract.sample_rate)
    if trim:
        audio = trim_leading_silence(audio)
    if audio.size == 0 or float(np.max(np.abs(audio))) == 0.0:
        raise AudioError(name, "silent (all samples are zero)")
    n = contract.n_samples if length is None else length
    if n:
        audio = fit_length(audio, n, contract.sample_rate)
    if normalise:
        audio = peak_normalise(audio)
    return np.ascontiguousarray(audio, dtype=np.float32)


def iter_audio_files(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Audio files under a folder (recursively, sorted; hidden files and folders such as macOS ``._x.wav``
    left out), or the file itself."""
    p = Path(root)
    if p.is_file():
        yield p
        return
    for f in sorted(p.rglob("*")):
        hidden = any(x.startswith(".") for x in f.relative_to(p).parts)
        if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES and not hidden:
            yield f


def iter_other_files(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Files under a folder that :func:`iter_audio_files` passes over (not hidden), sorted: other files, and
    entries that are neither files nor folders (FIFOs, sockets, devices, broken links), whatever their names."""
    p = Path(root)
    if p.is_file():
        return
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p).parts
        if any(x.startswith(".") for x in rel):
            continue
        if (f.is_file() and f.suffix.lower() not in AUDIO_SUFFIXES) or not (f.is_file() or f.is_dir()):
            yield f


@dataclass
class FolderLoad:
    hits: list[tuple[Path, np.ndarray]]
    skipped: list[AudioError]


def load_folder(
    roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    contract: SpectralContract = DEFAULT_CONTRACT,
    **kw: object,
) -> FolderLoad:
    """Load every audio file under the given folders; bad files are skipped with a warning and listed."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    hits: list[tuple[Path, np.ndarray]] = []
    skipped: list[AudioError] = []
    for root in roots:
        if not Path(root).exists():
            raise AudioError(root, "no such file or folder")
        for f in iter_audio_files(root):
            try:
                hits.append((f, load_hit(f, contract, **kw)))  # type: ignore[arg-type]
            except AudioError as e:
                log.warning("skipping %s", e)
                skipped.append(e)
    return FolderLoad(hits, skipped)


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, subtype: str = "PCM_24") -> Path:
    """Write (channels, samples) audio as a WAV file atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if not np.all(np.isfinite(data)):
        raise AudioError(p, "refusing to write NaN or infinite samples")
    with atomic_write(p) as fh:
        sf.write(fh, np.clip(data, -1.0, 1.0).T, sample_rate, subtype=subtype, format="WAV")
    return p
