"""Kick-drum descriptors and kick checks of stereo hits, vectorised over a batch.

Input everywhere: float audio ``(..., 2, n)`` (or ``(..., 1, n)``) at ``contract.sample_rate``, a hit starting
at its onset (as :func:`kickit.audio.load_hit` and the generator give it). Mono analysis uses the mid signal
``(L + R) / 2``. Descriptors (:func:`describe`, one value per hit):

=================  ===========================================================================================
``attack_s``       onset (5 ms RMS envelope first above 10 % of its peak) to that envelope's peak, seconds
``decay_s``        peak of the smoothed (20 ms RMS) envelope to its first fall ``DECAY_DB`` (20 dB) under the
                   peak, seconds (interpolated; the hit length if it never gets there)
``fundamental_hz`` frequency of the strongest spectral peak between ``F0_RANGE`` over the body (20-150 ms
                   after the onset, Hann-windowed, zero-padded to 0.25 Hz bins, parabolic interpolation): the
                   energy-weighted centre of a pitch sweep, robust to the click
``centroid_hz``    spectral centroid (magnitude-weighted, cells within 60 dB of the peak) of the contract
                   STFT frames centred in the first 50 ms (the early brightness)
``sub_share`` ...  share of the hit's energy in the bands of ``BANDS``: sub < 60 Hz, low 60-250 Hz,
                   mid 250-2000 Hz, high >= 2 kHz (the four add up to 1)
``flatness``       spectral flatness (geometric / arithmetic mean of the power spectrum, 20 Hz - 16 kHz,
                   first 100 ms): 0 = tonal, 1 = white noise
``width``          side energy / (mid + side energy): 0 = mono, 0.5 = uncorrelated, 1 = out of phase
``lr_correlation`` Pearson correlation of left and right over the whole hit (1 for a mono hit)
``crest_db``       peak / RMS over the first 100 ms, dB
``peak``           absolute sample peak; ``dc`` mean of the mid signal / its peak
=================  ===========================================================================================

Kick checks (:func:`kick_checks`): a transient in the first 10 ms (the first 10 ms reach within 6 dB of the
peak), fundamental in 40-120 Hz, low band dominant (sub + low >= half the energy), a decaying envelope (the
smoothed envelope peaks in the first 100 ms and the last quarter of the hit sits 12 dB under that peak), and
clean samples (finite, no clipping run, no DC).

:func:`descriptor_vector` gives a fixed, documented vector (``VECTOR_NAMES``, logs where the scale is
multiplicative) for a Frechet distance between sets of hits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

F0_RANGE = (25.0, 250.0)  # Hz searched for the fundamental
F0_BODY = (0.020, 0.150)  # s after the onset: the body the fundamental is measured over
KICK_F0 = (40.0, 120.0)  # Hz: a kick's fundamental
EARLY_S = 0.050  # s: the early spectral centroid window
CENTROID_FLOOR_DB = 60.0  # cells this far under the early peak do not count (noise floor, codec mask)
SHORT_S = 0.100  # s: window of flatness and crest factor
TRANSIENT_S = 0.010  # s: the transient must come within this
TRANSIENT_DB = 6.0  # ... reaching within this many dB of the hit's peak
DECAY_DB = 20.0  # decay time: envelope peak to this many dB under it
ENV_SMOOTH_S = 0.020  # RMS window of the decay envelope (longer than a 50 Hz period)
ENV_ATTACK_S = 0.005  # RMS window of the attack envelope
ENV_STEP_S = 0.001  # envelope resolution
BANDS = (("sub", 0.0, 60.0), ("low", 60.0, 250.0), ("mid", 250.0, 2000.0), ("high", 2000.0, np.inf))
LOW_SHARE_MIN = 0.5
DECAY_PEAK_BY_S = 0.100
DECAY_TAIL_DB = 12.0
CLIP_LEVEL = 0.999
CLIP_RUN = 4  # this many consecutive samples at the clip level count as clipping
DC_MAX = 0.02  # |mean| / peak

VECTOR_NAMES: tuple[str, ...] = (
    "log_attack_s", "log_decay_s", "log_fundamental_hz", "log_centroid_hz",
    "sub_share", "low_share", "mid_share", "high_share",
    "log_flatness", "width", "lr_correlation", "crest_db",
)
CHECK_NAMES: tuple[str, ...] = ("transient", "fundamental", "low_dominant", "decaying", "clean")
# The checks that apply to other instruments' hits (snare, hat, ...): the fundamental and low-band rules are
# a kick's; a drum hit of any kind still starts with a transient, decays and is clean.
DRUM_CHECK_NAMES: tuple[str, ...] = ("transient", "decaying", "clean")


def check_names_for(instrument: str | None) -> tuple[str, ...]:
    """The check names that apply to ``instrument``'s hits (None or "kick": every kick check)."""
    return CHECK_NAMES if instrument in (None, "kick") else DRUM_CHECK_NAMES


@dataclass
class Descriptors:
    """One array per descriptor, shape = the batch shape of the audio (see module doc for definitions)."""

    attack_s: np.ndarray
    decay_s: np.ndarray
    fundamental_hz: np.ndarray
    centroid_hz: np.ndarray
    sub_share: np.ndarray
    low_share: np.ndarray
    mid_share: np.ndarray
    high_share: np.ndarray
    flatness: np.ndarray
    width: np.ndarray
    lr_correlation: np.ndarray
    crest_db: np.ndarray
    peak: np.ndarray
    dc: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _as_batch(audio: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim < 2 or audio.shape[-2] not in (1, 2) or audio.shape[-1] < 16:
        raise ValueError(f"descriptors: expected audio (..., 2, n) with n >= 16, got shape {audio.shape}")
    lead = audio.shape[:-2]
    return audio.reshape(-1, *audio.shape[-2:]), lead


def _rms_envelope(x: np.ndarray, rate: int, window_s: float, step_s: float = ENV_STEP_S) -> tuple[np.ndarray, float]:
    """Centred moving RMS of (B, n) sampled every ``step_s``: (B, steps), and the step in seconds."""
    step = max(1, int(round(step_s * rate)))
    half = max(1, int(round(window_s * rate / 2)))
    power = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x * x, axis=1)], axis=1)
    centres = np.arange(0, x.shape[1], step)
    lo = np.clip(centres - half, 0, x.shape[1])
    hi = np.clip(centres + half, 0, x.shape[1])
    env = np.sqrt(np.maximum(power[:, hi] - power[:, lo], 0.0) / (2 * half))
    return env, step / rate


def _segment_spectrum(x: np.ndarray, rate: int, start_s: float, stop_s: float, n_fft: int | None = None,
                      window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """|rfft| of x[:, start:stop] (Hann-windowed when asked), and its frequencies."""
    a = min(int(round(start_s * rate)), x.shape[1] - 1)
    b = max(a + 2, min(int(round(stop_s * rate)), x.shape[1]))
    seg = x[:, a:b]
    if window:
        seg = seg * np.hanning(seg.shape[1] + 2)[1:-1]
    n = n_fft or seg.shape[1]
    return np.abs(np.fft.rfft(seg, n=max(n, seg.shape[1]), axis=1)), np.fft.rfftfreq(max(n, seg.shape[1]), 1.0 / rate)


def fundamental(mid: np.ndarray, rate: int, f_range: tuple[float, float] = F0_RANGE,
                body: tuple[float, float] = F0_BODY) -> np.ndarray:
    """Fundamental of the body of (B, n) mono hits in Hz (spectral peak, parabolic interpolation)."""
    n_fft = 1 << int(np.ceil(np.log2(4.0 * rate)))  # <= 0.25 Hz bins
    spec, freqs = _segment_spectrum(mid, rate, body[0], body[1], n_fft)
    sel = np.flatnonzero((freqs >= f_range[0]) & (freqs <= f_range[1]))
    band = spec[:, sel]
    k = np.argmax(band, axis=1)
    i = sel[k]
    ym, y0, yp = (np.log(spec[np.arange(len(i)), j] + 1e-20) for j in (i - 1, i, i + 1))
    denom = ym - 2.0 * y0 + yp
    delta = np.where(np.abs(denom) > 1e-12, 0.5 * (ym - yp) / np.where(denom == 0, 1.0, denom), 0.0)
    f0 = (i + np.clip(delta, -0.5, 0.5)) * (freqs[1] - freqs[0])
    return np.where(band.max(axis=1) > 0, f0, np.nan)


def early_centroid(mid: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT, early_s: float = EARLY_S
                   ) -> np.ndarray:
    """Spectral centroid (Hz) of the contract STFT frames centred in the first ``early_s`` of (B, n) hits.

    Magnitude-weighted over all those frames' bins, i.e. the centroid of the early spectrogram (as
    ``librosa.feature.spectral_centroid``, pooled over frames by their level). Cells more than
    ``CENTROID_FLOOR_DB`` under the early peak are left out: with hundreds of quiet high bins, a noise floor
    at -90 dB would otherwise move the centroid of a tonal kick by a factor of several.
    """
    n_frames = max(1, min(contract.frames, int(early_s * contract.sample_rate / contract.hop) + 1))
    n = contract.n_samples
    x = mid[:, :n] if mid.shape[1] >= n else np.pad(mid, ((0, 0), (0, n - mid.shape[1])))
    half = contract.n_fft // 2
    padded = np.pad(x[:, : (n_frames - 1) * contract.hop + half], ((0, 0), (half, 0)))
    padded = np.pad(padded, ((0, 0), (0, max(0, (n_frames - 1) * contract.hop + contract.n_fft - padded.shape[1]))))
    view = np.lib.stride_tricks.sliding_window_view(padded, contract.n_fft, axis=1)[:, :: contract.hop][:, :n_frames]
    spec = np.abs(np.fft.rfft(view * contract.window_array(), axis=-1))
    floor = spec.max(axis=(1, 2), keepdims=True) * 10.0 ** (-CENTROID_FLOOR_DB / 20.0)
    spec = np.where(spec >= floor, spec, 0.0)
    freqs = np.arange(contract.n_bins) * (contract.sample_rate / contract.n_fft)
    return (spec * freqs).sum(axis=(1, 2)) / np.maximum(spec.sum(axis=(1, 2)), 1e-20)


def describe(audio: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT) -> Descriptors:
    """All descriptors of hits (..., 2, n) at the contract's rate; each field has the batch shape."""
    x, lead = _as_batch(audio)
    rate = contract.sample_rate
    stereo = x if x.shape[1] == 2 else np.repeat(x, 2, axis=1)
    left, right = stereo[:, 0], stereo[:, 1]
    mid = 0.5 * (left + right)
    side = 0.5 * (left - right)
    n = x.shape[-1]

    # attack: short RMS envelope, onset (10 % of peak) to peak
    env_a, step = _rms_envelope(mid, rate, ENV_ATTACK_S)
    pk_a = np.argmax(env_a, axis=1)
    onset = np.argmax(env_a >= 0.1 * env_a.max(axis=1, keepdims=True), axis=1)
    attack = (pk_a - onset) * step

    # decay: smoothed envelope, peak to DECAY_DB under it (linear interpolation in dB)
    env, step = _rms_envelope(mid, rate, ENV_SMOOTH_S)
    decay = _decay_time(env, step, DECAY_DB, n / rate)

    f0 = fundamental(mid, rate)
    centroid = early_centroid(mid, contract)

    power = np.abs(np.fft.rfft(mid, axis=1)) ** 2
    pf = np.fft.rfftfreq(n, 1.0 / rate)
    total = np.maximum(power.sum(axis=1), 1e-30)
    shares = [power[:, (pf >= lo) & (pf < hi)].sum(axis=1) / total for _, lo, hi in BANDS]

    spec_s, fs = _segment_spectrum(mid, rate, 0.0, SHORT_S)
    p = spec_s[:, (fs >= 20.0) & (fs <= 16000.0)] ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)

    e_mid = (mid * mid).sum(axis=1)
    e_side = (side * side).sum(axis=1)
    width = e_side / np.maximum(e_mid + e_side, 1e-30)
    lc = left - left.mean(axis=1, keepdims=True)
    rc = right - right.mean(axis=1, keepdims=True)
    den = np.sqrt((lc * lc).sum(axis=1) * (rc * rc).sum(axis=1))
    corr = np.where(den > 1e-30, (lc * rc).sum(axis=1) / np.maximum(den, 1e-30), 1.0)

    short = mid[:, : max(1, int(round(SHORT_S * rate)))]
    crest = 20.0 * np.log10(np.maximum(np.abs(short).max(axis=1), 1e-20)
                            / np.maximum(np.sqrt(np.mean(short * short, axis=1)), 1e-20))
    peak = np.abs(stereo).max(axis=(1, 2))
    dc = mid.mean(axis=1) / np.maximum(np.abs(mid).max(axis=1), 1e-20)

    vals = dict(attack_s=attack, decay_s=decay, fundamental_hz=f0, centroid_hz=centroid,
                sub_share=shares[0], low_share=shares[1], mid_share=shares[2], high_share=shares[3],
                flatness=flatness, width=width, lr_correlation=corr, crest_db=crest, peak=peak, dc=dc)
    return Descriptors(**{k: np.asarray(v, dtype=np.float64).reshape(lead) for k, v in vals.items()})


def _decay_time(env: np.ndarray, step: float, drop_db: float, length_s: float) -> np.ndarray:
    """Time from each envelope's peak to its first fall ``drop_db`` under the peak (interpolated in dB)."""
    db = 20.0 * np.log10(np.maximum(env, 1e-20))
    pk = np.argmax(db, axis=1)
    target = db[np.arange(len(db)), pk] - drop_db
    idx = np.arange(db.shape[1])[None, :]
    below = (db < target[:, None]) & (idx > pk[:, None])
    has = below.any(axis=1)
    j = np.argmax(below, axis=1)
    rows = np.arange(len(db))
    d0 = db[rows, np.maximum(j - 1, 0)]
    d1 = db[rows, j]
    frac = np.clip((d0 - target) / np.maximum(d0 - d1, 1e-12), 0.0, 1.0)
    t = (j - 1 + frac - pk) * step
    return np.where(has, t, length_s - pk * step)


def kick_checks(audio: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT,
                desc: Descriptors | None = None) -> dict[str, np.ndarray]:
    """Boolean kick checks per hit (``CHECK_NAMES``) plus ``all`` (every check passed)."""
    x, lead = _as_batch(audio)
    d = describe(x, contract) if desc is None else desc
    rate = contract.sample_rate
    a = np.abs(x).max(axis=1)  # (B, n) channel-wise peak envelope
    finite = np.all(np.isfinite(x), axis=(1, 2))
    x = np.nan_to_num(x)
    a = np.nan_to_num(a)
    peak = a.max(axis=1)
    first = a[:, : max(1, int(round(TRANSIENT_S * rate)))].max(axis=1)
    transient = (peak > 0) & (first >= peak * 10.0 ** (-TRANSIENT_DB / 20.0))
    f0 = np.asarray(d.fundamental_hz).reshape(-1)
    fundamental_ok = (f0 >= KICK_F0[0]) & (f0 <= KICK_F0[1])
    low_ok = (np.asarray(d.sub_share) + np.asarray(d.low_share)).reshape(-1) >= LOW_SHARE_MIN
    env, step = _rms_envelope(x.mean(axis=1), rate, ENV_SMOOTH_S)
    pk = np.argmax(env, axis=1)
    tail = env[:, int(env.shape[1] * 0.75) :].max(axis=1)
    decaying = (pk * step <= DECAY_PEAK_BY_S) & (tail <= env.max(axis=1) * 10.0 ** (-DECAY_TAIL_DB / 20.0))
    clipped = _has_run(a >= CLIP_LEVEL, CLIP_RUN) | (peak > 1.0 + 1e-6)
    clean = finite & ~clipped & (np.abs(np.asarray(d.dc).reshape(-1)) <= DC_MAX)
    out = dict(transient=transient, fundamental=fundamental_ok, low_dominant=low_ok, decaying=decaying, clean=clean)
    out["all"] = np.logical_and.reduce([out[k] for k in CHECK_NAMES])
    return {k: np.asarray(v, dtype=bool).reshape(lead) for k, v in out.items()}


def _has_run(mask: np.ndarray, run: int) -> np.ndarray:
    """Whether each row of a boolean (B, n) array has ``run`` consecutive True values."""
    if run <= 1:
        return mask.any(axis=1)
    c = np.concatenate([np.zeros((mask.shape[0], 1), dtype=np.int64), np.cumsum(mask, axis=1)], axis=1)
    return ((c[:, run:] - c[:, :-run]) >= run).any(axis=1)


def is_kick(audio: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT) -> np.ndarray:
    """True per hit where every kick check passes."""
    return kick_checks(audio, contract)["all"]


def descriptor_vector(audio: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT,
                      desc: Descriptors | None = None) -> np.ndarray:
    """Descriptor vectors (..., len(VECTOR_NAMES)) in the order and units of ``VECTOR_NAMES``.

    ``desc``: the hits' :func:`describe` result when the caller already has it (saves computing it twice).
    """
    d = describe(audio, contract) if desc is None else desc
    eps = 1e-6
    cols = [
        np.log(np.maximum(d.attack_s, 1e-4)), np.log(np.maximum(d.decay_s, 1e-3)),
        np.log(np.nan_to_num(d.fundamental_hz, nan=F0_RANGE[0])), np.log(np.maximum(d.centroid_hz, 1.0)),
        d.sub_share, d.low_share, d.mid_share, d.high_share,
        np.log(d.flatness + eps), d.width, d.lr_correlation, d.crest_db,
    ]
    return np.stack(cols, axis=-1)


def knob_descriptors(audio: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT) -> dict[str, np.ndarray]:
    """The descriptors the knob namer (kickit.export.knobs) correlates with knob values, per hit.

    Band energies are absolute (dB re full scale), so turning a "sub" knob up reads as more sub.
    """
    x, lead = _as_batch(audio)
    d = describe(x, contract)
    mid = x.mean(axis=1)
    energy_db = 10.0 * np.log10(np.maximum((mid * mid).sum(axis=1), 1e-20))
    out = {
        "fundamental_hz": d.fundamental_hz, "decay_s": d.decay_s, "attack_s": d.attack_s,
        "centroid_hz": d.centroid_hz, "width": d.width,
        "sub_energy": energy_db + 10.0 * np.log10(np.maximum(d.sub_share, 1e-12)),
        "low_energy": energy_db + 10.0 * np.log10(np.maximum(d.low_share, 1e-12)),
        "high_energy": energy_db + 10.0 * np.log10(np.maximum(d.high_share, 1e-12)),
        "flatness": d.flatness, "crest": d.crest_db,
    }
    return {k: np.asarray(v, dtype=np.float64).reshape(lead) for k, v in out.items()}
