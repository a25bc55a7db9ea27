"""Phase reconstruction: raw STFT bin magnitudes -> stereo audio, in numpy, vectorised over a batch of hits.

Every method estimates **one phase per time-frequency cell from the mid magnitude** (the mean of the channel
magnitudes) and applies it to every channel: ``channel_c = istft(|X_c| * exp(i * phase))``. Estimating a phase
per channel would decorrelate left and right and smear the fundamental; one shared phase keeps the stereo
image in the magnitudes, where the model put it, and halves the FFTs of the iterative methods.

Methods (``METHODS``; ``DEFAULT_METHOD`` is the one chosen by the figures in docs/reconstruction.md):

* ``fgla``: Fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013), momentum ``MOMENTUM`` (0.99), started
  from a fixed pseudo-random phase (seeded: the same input always gives the same output).
* ``pghi``: phase-gradient heap integration (Prusa, Balazs & Sondergaard 2017), non-iterative. The phase
  derivatives come from the log-magnitude through the Gaussian relations (a Hann window of length L acts like
  a Gaussian with ``lambda = 0.25645 L^2``); cells more than ``PGHI_TOL_DB`` under the hit's peak are left out.
  The heap integration itself is sequential; ``pghi`` uses a vectorised spanning-tree version of it: the
  phase is integrated along time within every bin, adjacent bins are tied together at the frame where both
  are strongest (the edge a heap would take first for a kick's ridges), and each bin is phase-locked to the
  spectral peak whose lobe it sits on (every bin over the onset, the low bins after). The strongest cells
  (within ``HEAP_DB`` of the peak, at most ``HEAP_MAX_CELLS``) are then integrated by the exact heap, which is
  cheap on so few cells (1-2 ms) and is where the approximation loses most. ``pghi-heap`` is the exact heap
  algorithm over every cell in plain Python: the reference (slow, offline).
* ``pghi+fgla`` (default): PGHI, then FGLA iterations over the attack only (the first ``ATTACK_S``), where
  PGHI leaves most of its error (an onset tick on tonal kicks); the rest keeps the PGHI phase.
* ``rtisi-la``: Real-Time Iterative Spectrogram Inversion with Look-Ahead (Zhu, Beauregard & Wyse 2007):
  frames are committed one at a time, each after ``iterations`` refinements of the frames in the look-ahead.

The time-frequency mask (StereoSampleGAN) is respected: cells that ``SpectralContract.decode_magnitude``
zeroed are zero in every synthesis spectrum, and frames after the last non-silent one are never computed.
Frames that hold only low bins (a kick's body and tail) are synthesised at 1/2, 1/4 or 1/8 of the sample rate
and interpolated back (:func:`synthesis_runs`, :func:`_decimated_sum`): within -100 dB of the full rate.
All heavy arrays are float32 / complex64 (the forward FFT runs in float64, which numpy computes faster).
"""

from __future__ import annotations

import heapq
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

MOMENTUM = 0.99
PGHI_TOL_DB = 80.0
HANN_GAUSS_LAMBDA = 0.25645  # lambda / L^2 of the Gaussian window equivalent to a Hann window (Prusa 2017)
RTISI_LOOKAHEAD = 3  # frames of look-ahead in RTISI-LA
RANDOM_PHASE_SEED = 0
ONSET_LOCK_S = 0.05  # s: over the onset every bin is phase-locked (transients are vertical ridges)
ATTACK_S = 0.12  # s: what pghi+fgla refines (where PGHI leaves most of its error; docs/reconstruction.md)
HEAP_DB = 40.0  # dB under the hit's peak: cells above it are integrated by the exact heap (docs/reconstruction.md)
HEAP_MAX_CELLS = 600  # at most this many (the strongest) cells go through the heap: bounds its time per hit
SYNTH_DECIMATIONS = (8, 4, 2)  # the rates (1/d) a run of low-bin frames may be synthesised at (docs/reconstruction.md)
MIN_RUN_FRAMES = 8  # a decimated run shorter than this is synthesised with the run before it
SYNTH_MARGIN_BINS = 32  # bins kept free between a run's width and its decimated Nyquist: what the frames'
# window leaks past its band falls under -100 dB there, so the band-limited interpolation is exact to that
_TINY = np.float32(1e-30)


# ----- plans (tables cached per contract) -----------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    window: np.ndarray  # float32 (n_fft,)
    window64: np.ndarray  # float64 (n_fft,): analysis window, so framing and the cast to float64 are one pass
    norm: np.ndarray  # float32 (n_samples + n_fft,): least-squares OLA normalisation in padded coordinates
    random_phase: np.ndarray  # complex64 (frames, n_bins), unit modulus, seeded
    bin_index: np.ndarray  # int64 (n_bins,)
    bin_advance: np.ndarray  # float32 (n_bins,): 2 pi m hop / n_fft mod 2 pi, a bin's phase advance per frame
    lam: float  # Gaussian lambda of the window, in samples^2
    windows: dict[int, np.ndarray]  # float32 synthesis window sampled every d-th sample, per tail decimation d


@lru_cache(maxsize=8)
def _plan(c: SpectralContract) -> _Plan:
    window = c.window_array().astype(np.float32)
    half = c.n_fft // 2
    norm = np.zeros(c.n_samples + c.n_fft, dtype=np.float32)
    norm[half : half + c.n_samples] = c.ola_normalisation()
    rng = np.random.default_rng(RANDOM_PHASE_SEED)
    random_phase = np.exp(2j * np.pi * rng.random((c.frames, c.n_bins))).astype(np.complex64)
    bins = np.arange(c.n_bins)
    advance = (2.0 * np.pi / c.n_fft * np.remainder(bins * c.hop, c.n_fft)).astype(np.float32)
    window64 = c.window_array().astype(np.float64)
    windows = {d: np.ascontiguousarray(window[::d]) for d in SYNTH_DECIMATIONS}
    for a in (window, window64, norm, random_phase, bins, advance, *windows.values()):
        a.setflags(write=False)
    return _Plan(window, window64, norm, random_phase, bins, advance, HANN_GAUSS_LAMBDA * c.n_fft**2, windows)


# ----- STFT on the active frames (padded coordinates) ---------------------------------------------------
def _ola_sum(frames_td: np.ndarray, window: np.ndarray, hop: int) -> np.ndarray:
    """Windowed overlap-add, not normalised: frames (..., F, L) at ``hop`` -> (..., (F - 1) * hop + L). The
    frames (float32, owned by the caller) are windowed in place."""
    length = frames_td.shape[-1]
    r = length // hop
    f = frames_td.shape[-2]
    y = np.multiply(frames_td, window, out=frames_td)
    y = y.reshape(*frames_td.shape[:-2], f, r, hop)
    out = np.zeros((*frames_td.shape[:-2], f + r - 1, hop), dtype=np.float32)
    for k in range(r):  # r = n_fft / hop blocks, never a loop over frames
        out[..., k : k + f, :] += y[..., :, k, :]
    return out.reshape(*frames_td.shape[:-2], -1)


def _spectra_sum(spec: np.ndarray, c: SpectralContract, plan: _Plan) -> np.ndarray:
    """Full-rate spectra (..., F, n_bins) -> their windowed overlap-add, not normalised (:func:`_ola_sum`)."""
    frames_td = np.fft.irfft(spec, n=c.n_fft, axis=-1).astype(np.float32, copy=False)  # new: windowed in place
    return _ola_sum(frames_td, plan.window, c.hop)


def _analyse(padded: np.ndarray, c: SpectralContract, plan: _Plan, n_frames: int) -> np.ndarray:
    """Signal in padded coordinates (..., >= (F - 1) * hop + n_fft) -> complex128 STFT (..., F, n_bins)."""
    if padded.shape[-1] < (n_frames - 1) * c.hop + c.n_fft:
        raise ValueError("_analyse: signal too short for its frames")
    s = padded.strides[-1]  # frames as a strided view (what sliding_window_view makes, without its overhead)
    shape, strides = (*padded.shape[:-1], n_frames, c.n_fft), (*padded.strides[:-1], c.hop * s, s)
    if padded.flags.c_contiguous:
        # made by the ndarray constructor, not as_strided: as_strided reads ``__array_interface__``, a dict whose
        # keys CPython interns anew on every call, and that churn of the interpreter's table of interned strings
        # made a render process's memory step up by ~0.9 MiB once, mid-session (docs/reliability.md)
        view = np.ndarray(shape, padded.dtype, buffer=padded, strides=strides)
        view.flags.writeable = False
    else:
        view = np.lib.stride_tricks.as_strided(padded, shape, strides, writeable=False)
    return np.fft.rfft(np.multiply(view, plan.window64, dtype=np.float64), axis=-1)


def _integrate_frames(w: np.ndarray, w0: np.ndarray, start: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoidal time integration of the phase advance ``w`` (F, B), in place on ``w``: t[n] = sum_{j < n}
    (w[j] + w[j + 1]) / 2 = cumsum(w)[n] - (w0 + w[n]) / 2, with ``w0`` the hit's first frame and ``start``
    the running sum carried in from earlier frames. Returns t and the running sum after the last frame."""
    t = _cumsum_frames(w, start)
    carry = t[-1].copy()
    w += w0
    w *= np.float32(0.5)
    t -= w
    return t, carry


def _cumsum_frames(w: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Cumulative sum along the frame axis (-2) of float32 ``(..., F, B)``, plus ``start`` (a row carried in
    from earlier frames): a loop over frames of contiguous rows, twice as fast as ``np.cumsum(axis=-2)``
    (which strides across rows) and the same sequential sums."""
    t = w.copy()
    if start is not None:
        t[..., 0, :] += start
    if t.shape[-1] <= 64:  # narrow rows (a tail box): numpy's own loop, the same sequential sums
        return np.cumsum(t, axis=-2, out=t)
    for i in range(1, t.shape[-2]):
        np.add(t[..., i, :], t[..., i - 1, :], out=t[..., i, :])
    return t


# ----- where a hit sounds: the cells worth computing -------------------------------------------------------
@dataclass(frozen=True)
class _Support:
    """The part of one hit's (frames, bins) grid that holds anything above the mask, as two boxes.

    Frames ``[0, split)`` keep bins ``[0, width)``; frames ``[split, frames)`` keep bins ``[0, tail_width)``.
    Every cell outside is silent (masked), so its phase is never needed. A kick's tail holds only its low
    bins (often 20-150 of 1025) for most of its frames: the tail box is what makes long hits cheap.
    Each width includes one silent bin past the last sounding one, so the frequency differences at the last
    sounding bin are the same as over the full grid.
    """

    frames: int
    split: int
    width: int
    tail_width: int
    # (frames,) int: the width (one silent bin past the last sounding one) over frames [k, frames), for each k;
    # what the synthesis decimates by (None: not known, no decimation)
    reach: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_tail(self) -> bool:
        return self.split < self.frames


# Cost of a second box, in cells: the per-call overhead of the numpy passes over it (a tail box under it
# does not pay for itself).
_TAIL_BOX_COST = 8192


def _support(mid: np.ndarray, n_bins: int, min_split: int, two_boxes: bool = True) -> _Support:
    """The two boxes covering the sounding cells of ``mid`` (F, B) with the fewest cells (the split is
    searched over every frame from ``min_split``); ``two_boxes=False``: one box (the bounding width)."""
    f = mid.shape[0]
    sounding = mid > 0
    last = mid.shape[1] - 1 - np.argmax(sounding[:, ::-1], axis=1)  # last sounding bin per frame
    last[~sounding[np.arange(f), last]] = -1  # silent frames
    width = int(min(n_bins, max(2, int(last.max()) + 2)))
    tails = np.minimum(width, np.maximum(2, np.maximum.accumulate(last[::-1])[::-1] + 2))  # box width from frame k
    lo = min(f, max(1, min_split))
    if not two_boxes or lo >= f:
        return _Support(f, f, width, width, tails)
    splits = np.arange(lo, f)
    cost = splits * width + (f - splits) * tails[lo:] + _TAIL_BOX_COST
    k = int(np.argmin(cost))
    if cost[k] >= f * width:
        return _Support(f, f, width, width, tails)
    return _Support(f, int(splits[k]), width, int(tails[lo + k]), tails)


def _run_sums(mag: np.ndarray, unit: np.ndarray, sup: _Support, runs: list[tuple[int, int, int]],
              c: SpectralContract, plan: _Plan) -> list[np.ndarray]:
    """The overlap-add (not normalised) of every channel over each run ``(a, b, d)`` of frames: magnitudes
    (C, F, B) with the shared phase ``unit`` (frames, width) -> [(C, (b - a - 1) * hop + n_fft)]. Only the
    support's cells are multiplied; the rest of each spectrum stays zero. A run with d > 1 holds only low bins
    and is synthesised at 1/d of the sample rate (:func:`_decimated_sum`)."""
    w, fa, bt = sup.width, sup.split, sup.tail_width
    parts = []
    for a, b, d in runs:
        if d == 1:  # the support's boxes over frames [a, b), at the full rate; padded by hand (irfft pads
            spec = np.zeros((*mag.shape[:-2], b - a, c.n_bins), dtype=np.complex64)  # short rows slowly)
            if a < fa:
                e = min(b, fa)
                np.multiply(mag[..., a:e, :w], unit[a:e], out=spec[..., : e - a, :w])
            if b > fa:
                s = max(a, fa)
                np.multiply(mag[..., s:b, :bt], unit[s:b, :bt], out=spec[..., s - a :, :bt])
            parts.append(_spectra_sum(spec, c, plan))
        else:
            width = int(sup.reach[a])  # type: ignore[index]
            parts.append(_decimated_sum(mag[..., a:b, :width], unit[a:b, :width], d, c, plan))
    return parts


def _assemble(parts: list[np.ndarray], runs: list[tuple[int, int, int]], f: int, c: SpectralContract,
              plan: _Plan, out: np.ndarray) -> None:
    """The runs' sums, added in run order (the same bits however they were computed), normalised -> ``out``."""
    y = np.zeros((*out.shape[:-1], (f - 1) * c.hop + c.n_fft), dtype=np.float32)
    for (a, _, _), part in zip(runs, parts, strict=True):
        y[..., a * c.hop : a * c.hop + part.shape[-1]] += part
    y *= plan.norm[: y.shape[-1]]
    half = c.n_fft // 2
    n = min(c.n_samples, y.shape[-1] - half)
    out[..., :n] = y[..., half : half + n]


def synthesis_decimation(c: SpectralContract, width: int) -> int:
    """The largest factor d of ``SYNTH_DECIMATIONS`` at which frames whose bins [width, n_bins) are silent can be
    synthesised: ``width + SYNTH_MARGIN_BINS`` bins fit under the decimated Nyquist (n_fft / 2d) and d divides
    the hop. 1: no decimation."""
    for d in SYNTH_DECIMATIONS:
        if c.hop % d == 0 and c.n_fft % (2 * d) == 0 and width + SYNTH_MARGIN_BINS <= c.n_fft // (2 * d):
            return d
    return 1


def synthesis_runs(c: SpectralContract, reach: np.ndarray, cut: int | None = None) -> list[tuple[int, int, int]]:
    """Frames [0, F) as runs ``(start, stop, d)``, each synthesised at 1/d of the rate: d is what the width
    from ``start`` on allows (``reach``, which never grows, so d never falls), and a run shorter than
    ``MIN_RUN_FRAMES`` joins the one before it (its interpolation would cost more than it saves). ``cut``: a
    run across that frame is split there (the frames FGLA refines end there; the runs after it can be
    synthesised while it works)."""
    f = len(reach)
    runs: list[list[int]] = []
    for s in np.r_[0, np.flatnonzero(np.diff(reach)) + 1].tolist():  # where the width changes
        d = synthesis_decimation(c, int(reach[s]))
        if runs and runs[-1][2] == d:
            continue
        if runs:
            runs[-1][1] = s
        runs.append([s, f, d])
    merged: list[list[int]] = []
    for r in runs:
        if merged and r[1] - r[0] < MIN_RUN_FRAMES:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    if cut:
        split = []
        for a, b, d in merged:
            split += [(a, cut, d), (cut, b, d)] if a < cut < b else [(a, b, d)]
        return split
    return [(a, b, d) for a, b, d in merged]


def _decimated_sum(mag: np.ndarray, unit: np.ndarray, d: int, c: SpectralContract, plan: _Plan) -> np.ndarray:
    """The overlap-add (not normalised) of frames whose spectra hold bins [0, B) only: (..., F, B) magnitudes
    and unit phases (F, B) -> (..., (F - 1) * hop + n_fft) at the full rate.

    A frame whose bins from n_fft / 2d up are zero is, sampled every d-th sample, exactly the inverse FFT of
    its first n_fft / 2d + 1 bins over n_fft / d points (times 1/d). The windowed frames are overlap-added at
    that rate (hop / d) and the sum is brought back to the full rate by band-limited (FFT) interpolation,
    which is exact for a signal under the decimated Nyquist: the frames' content is, up to what the window
    leaks past ``SYNTH_MARGIN_BINS`` bins (under -100 dB). The 1/d of the short inverse FFT and the d of the
    interpolation cancel, so neither is applied. Outside the span of the frames that sound, the sum is zero,
    exactly, as the full-rate synthesis gives it (the interpolation would leave its rounding there)."""
    nd = c.n_fft // d
    spec = np.zeros((*mag.shape[:-2], mag.shape[-2], nd // 2 + 1), dtype=np.complex64)
    np.multiply(mag, unit, out=spec[..., : mag.shape[-1]])
    frames_td = np.fft.irfft(spec, n=nd, axis=-1).astype(np.float32, copy=False)
    low = _ola_sum(frames_td, plan.windows[d], c.hop // d)
    size = _fast_len(low.shape[-1])
    # numpy's forward FFT is faster in float64 (even with the cast), its inverse in complex64
    band = np.fft.rfft(low.astype(np.float64), n=size, axis=-1).astype(np.complex64)
    if size % 2 == 0:  # the short signal's Nyquist bin is shared by +/- fs / 2d in the long one
        band[..., -1] *= np.float32(0.5)
    up = np.fft.irfft(band, n=size * d, axis=-1)[..., : low.shape[-1] * d]
    sounding = np.flatnonzero(mag.reshape(-1, *mag.shape[-2:]).any(axis=(0, 2)))
    if sounding.size:
        up[..., : sounding[0] * c.hop] = 0.0
        up[..., sounding[-1] * c.hop + c.n_fft :] = 0.0
    else:
        up[...] = 0.0
    return up


@lru_cache(maxsize=256)
def _fast_len(n: int) -> int:
    """The smallest m * 2^a >= n with m in 1, 3, 5, 9, 15: sizes whose FFT is mostly radix 2 (numpy's FFT was
    2x slower on 15 000 = 2^3 3 5^4 than on 15 360 = 2^10 3 5)."""
    best = 1 << max(0, (n - 1).bit_length())
    for m in (3, 5, 9, 15):
        p = m
        while p < n:
            p *= 2
        best = min(best, p)
    return best


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    """Threads that synthesise what a hit's later frames need while its attack is refined (``threads`` > 1)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="kickit-synth")


def _unit(z: np.ndarray) -> np.ndarray:
    """z / |z| as complex64 (0 -> 0)."""
    z = z.astype(np.complex64, copy=False)
    return z * (np.float32(1.0) / np.maximum(np.abs(z), _TINY))


def active_frames(mag: np.ndarray) -> int:
    """Number of leading frames that hold anything above the mask: 1 + the last non-silent frame (0 if none).
    Searched from the end a block of frames at a time: a kick mostly sounds to near its end, so one block
    usually decides (a pass over the whole array cost 0.3 ms a hit)."""
    m = mag.reshape(-1, mag.shape[-2], mag.shape[-1])
    for hi in range(m.shape[1], 0, -_ACTIVE_BLOCK):
        lo = max(0, hi - _ACTIVE_BLOCK)
        idx = np.flatnonzero((m[:, lo:hi] > 0).any(axis=(0, 2)))
        if idx.size:
            return lo + int(idx[-1]) + 1
    return 0


_ACTIVE_BLOCK = 16


def _work_frames(mag: np.ndarray, frames: int) -> int:
    """Frames to process: the active ones plus one silent frame (the phase-gradient differences at the last
    active frame then see the silence after it, as over the full grid)."""
    f = active_frames(mag)
    return min(frames, f + 1) if f else 0


# ----- phase estimators: mid magnitude -> unit phase complex64 ------------------------------------------
def _fgla(mid: np.ndarray, c: SpectralContract, plan: _Plan, iterations: int, start: np.ndarray,
          momentum: float = MOMENTUM, frames: int | None = None) -> np.ndarray:
    """Fast Griffin-Lim on the mid magnitude (H, F, W) from a unit phase ``start``; returns the final unit
    phase. ``W`` may be less than n_bins: the bins above are silent (the support's width).

    With ``frames``, only the phases of the first ``frames`` frames are refined (the attack, where a
    non-iterative start leaves most of its error); the following n_fft / hop - 1 frames keep their start phase
    and take part in the synthesis so the refined frames see the whole signal under them (their share of it is
    synthesised once, not at every iteration).
    """
    start = np.broadcast_to(start, mid.shape)
    if not iterations:
        return start
    f, w = mid.shape[-2:]
    k = f if frames is None else max(1, min(frames, f))
    ctx = min(f, k + c.n_fft // c.hop - 1)
    span = (k - 1) * c.hop + c.n_fft  # the samples the refined frames read
    fixed = None  # the context frames keep their phase: their overlap-add under the refined ones, once
    if ctx > k:
        spec = np.zeros((mid.shape[0], ctx - k, c.n_bins), dtype=np.complex64)
        np.multiply(mid[:, k:ctx], start[:, k:ctx], out=spec[..., :w])
        fixed = _spectra_sum(spec, c, plan)[..., : span - k * c.hop]
    full = np.zeros((mid.shape[0], k, c.n_bins), dtype=np.complex64)  # padded spectrum, reused
    cur = mid[:, :k] * start[:, :k]
    prev = cur
    alpha = np.float32(momentum)
    for _ in range(iterations):
        full[:, :, :w] = cur
        y = _spectra_sum(full, c, plan)
        if fixed is not None:
            y[..., k * c.hop :] += fixed
        y *= plan.norm[:span]
        spec = _analyse(y, c, plan, k)
        proj = mid[:, :k] * _unit(spec[..., :w])
        cur = proj + alpha * (proj - prev)
        prev = proj
    out = _unit(cur)
    return out if k == f else np.concatenate([out, start[:, k:]], axis=1)


def _phase_gradients(mid: np.ndarray, c: SpectralContract, plan: _Plan, tol_db: float,
                     peak: np.ndarray | None = None, with_big: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """PGHI phase derivatives of the mid magnitude, residual parts (float32, (H, F, B)) and the tolerance mask.

    Returned: ``wr`` = phase advance per frame minus ``2 pi m hop / n_fft`` (the bin's own frequency) and
    ``gr`` = phase advance per bin minus ``pi`` (kickit frames start, rather than centre, at the analysis
    time: a factor (-1)^m), both in radians, and ``big`` (cells within ``tol_db`` of each hit's peak).
    ``peak`` (H,): each hit's peak, when ``mid`` is only part of the hit; ``with_big=False``: no mask (None).
    """
    a, m_fft = c.hop, c.n_fft
    if peak is None:
        peak = mid.reshape(mid.shape[0], -1).max(axis=1)
    floor = (peak * np.float32(10.0 ** (-tol_db / 20.0))).astype(np.float32)[:, None, None]
    big = mid > floor if with_big else None
    s = np.log(np.maximum(mid, np.maximum(floor, _TINY)))
    ds_dm = _gradient(s, -1)
    ds_dn = _gradient(s, -2)
    ds_dm *= np.float32(a * m_fft / plan.lam)
    ds_dn *= np.float32(-plan.lam / (a * m_fft))
    return ds_dm, ds_dn, big


def _gradient(s: np.ndarray, axis: int) -> np.ndarray:
    """Central differences along ``axis`` (one-sided at the ends; zero for a single sample), float32."""
    s = np.moveaxis(s, axis, -1)
    out = np.zeros_like(s)
    n = s.shape[-1]
    if n > 1:
        np.subtract(s[..., 2:], s[..., :-2], out=out[..., 1:-1])
        out[..., 1:-1] *= np.float32(0.5)
        out[..., 0] = s[..., 1] - s[..., 0]
        out[..., -1] = s[..., -1] - s[..., -2]
    return np.moveaxis(out, -1, axis)


def _onset_frames(c: SpectralContract) -> int:
    """Frames of the onset, where every bin is phase-locked (``ONSET_LOCK_S``)."""
    return int(round(ONSET_LOCK_S * c.sample_rate / c.hop)) if ONSET_LOCK_S else 0


def _pghi(mid: np.ndarray, sup: _Support, c: SpectralContract, plan: _Plan, tol_db: float = PGHI_TOL_DB,
          heap_db: float = HEAP_DB) -> np.ndarray:
    """Vectorised PGHI of one hit: mid (frames, width) -> unit phase (frames, width) complex64, computed on
    the support's two boxes only (a spanning tree of the heap's integration paths, in numpy; module doc).

    1. Time integration of the phase advance within every bin (trapezoid, float32 cumulative sum; the tail
       box carries on from the last frame of the first).
    2. Adjacent bins tied together at the frame where the weaker of the two is strongest.
    3. Phase locking (:func:`_lock`) over every bin in the onset (the first ``ONSET_LOCK_S``, where a click is
       a vertical ridge) and over the exact low bins after it (where a kick's fundamental and body live):
       within each frame, a bin takes the phase of the spectral peak whose lobe it sits on plus the frequency
       integral of the phase gradient from that peak, as the heap does when it spreads from a ridge across
       its lobe.
    4. With ``heap_db`` > 0, the strongest cells (within ``heap_db`` of the hit's peak, at most
       ``HEAP_MAX_CELLS``) take the exact heap's phase instead (:func:`_heap_cells`): that is where the
       approximation's error costs most (spectral convergence 0.062 -> 0.045 after pghi+fgla's refinement).
    """
    f, w = mid.shape
    fa, bt = sup.split, sup.tail_width
    head = mid[:fa]
    tail = mid[fa:, :bt]
    peak = head.max()
    if sup.has_tail:
        peak = max(peak, tail.max())
    peaks = np.array([peak], dtype=np.float32)
    # Box 1 with the first frame of the tail (box 2 with the last frame of box 1) for the time differences.
    wr, gr, _ = _phase_gradients(mid[None, : min(f, fa + 1)], c, plan, tol_db, peaks, with_big=False)
    wr, gr = wr[0, :fa], gr[0, :fa]
    wh = wr + plan.bin_advance[:w]
    w0 = wh[0].copy()
    th, carry = _integrate_frames(wh, w0)
    # Tie adjacent bins at the frame where the weaker of the two is strongest.
    pair = np.minimum(head[:, 1:], head[:, :-1])
    link = np.argmax(pair, axis=0)
    mi = np.arange(w - 1)
    t0, t1 = th[link, mi].astype(np.float64), th[link, mi + 1]
    g0, g1 = gr[link, mi], gr[link, mi + 1]
    if sup.has_tail:
        wrt, grt, _ = _phase_gradients(mid[None, fa - 1 :, :bt], c, plan, tol_db, peaks, with_big=False)
        wrt, grt = wrt[0, 1:], grt[0, 1:]
        tt, _ = _integrate_frames(wrt + plan.bin_advance[:bt], w0[:bt], carry[:bt])
        pair_t = np.minimum(tail[:, 1:], tail[:, :-1])
        link_t = np.argmax(pair_t, axis=0)
        mt = mi[: bt - 1]
        later = pair_t[link_t, mt] > pair[link[: bt - 1], mt]  # ties: the earlier frame, as one argmax
        if later.any():
            lt, m = link_t[later], mt[later]
            t0[m], t1[m] = tt[lt, m], tt[lt, m + 1]
            g0[m], g1[m] = grt[lt, m], grt[lt, m + 1]
    d = (t0 - t1) + 0.5 * (g0 + g1)
    d += np.pi  # (-1)^m: kickit frames start at t * hop - n_fft / 2
    offset = np.zeros(w)
    np.cumsum(d, out=offset[1:])
    offset32 = np.remainder(offset, 2.0 * np.pi).astype(np.float32)
    ph = th
    ph += offset32
    # Lock every bin over the onset, the low bins over the rest.
    n_attack = min(fa, _onset_frames(c))
    if n_attack:
        _lock(ph[None, :n_attack], head[None, :n_attack], gr[None, :n_attack], w)
    if sup.has_tail:
        pt = tt
        pt += offset32[:bt]
    if not heap_db:  # with the heap, locking the low bins after the onset adds nothing
        if n_attack < fa:
            _lock(ph[None, n_attack:], head[None, n_attack:], gr[None, n_attack:], min(c.low_bins, w))
        if sup.has_tail:
            _lock(pt[None], tail[None], grt[None], min(c.low_bins, bt))
    if heap_db:
        floor = peak * np.float32(10.0 ** (-min(heap_db, tol_db) / 20.0))
        cells = np.flatnonzero(head > floor)
        cw, cg = wr.ravel()[cells], gr.ravel()[cells]
        if sup.has_tail:
            tcells = np.flatnonzero(tail > floor)
            r, col = np.divmod(tcells, bt)
            cells = np.concatenate([cells, (r + fa) * w + col])
            cw, cg = np.concatenate([cw, wrt[r, col]]), np.concatenate([cg, grt[r, col]])
        sel, hp = _heap_cells(cells, mid.ravel()[cells], cw, cg, (f, w), plan, HEAP_MAX_CELLS)
        hp = np.remainder(hp, 2.0 * np.pi)
        in_head = sel < fa * w
        ph.ravel()[sel[in_head]] = hp[in_head]
        if sup.has_tail:
            r, col = np.divmod(sel[~in_head], w)
            pt[r - fa, col] = hp[~in_head]
    unit = np.zeros((f, w), dtype=np.complex64)
    _cis_sounding(ph, head, unit[:fa])
    if sup.has_tail:
        unit[fa:, :bt] = _cis_sounding(pt, tail)  # contiguous first: sin/cos into strided rows are slow
    return unit


def _heap_strong(mid: np.ndarray, wr: np.ndarray, gr: np.ndarray, floor: float, plan: _Plan,
                 max_cells: int = HEAP_MAX_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """Exact heap integration (Prusa 2017, algorithm 1) restricted to the cells of one hit above ``floor``
    (at most the ``max_cells`` strongest). mid, wr, gr: (F, B) of one hit. Returns the flat indices of those
    cells and their phases (float64)."""
    cells = np.flatnonzero(mid > floor)
    return _heap_cells(cells, mid.ravel()[cells], wr.ravel()[cells], gr.ravel()[cells], mid.shape, plan,
                       max_cells)


def _heap_cells(flat: np.ndarray, mags: np.ndarray, wr: np.ndarray, gr: np.ndarray, shape: tuple[int, int],
                plan: _Plan, max_cells: int = HEAP_MAX_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """The exact heap over the given cells of a (F, B) grid: ``flat`` ascending flat indices, their
    magnitudes and residual phase derivatives. At most the ``max_cells`` strongest are kept (ties at the
    cut: all of them or none). Returns the kept cells and their phases (float64).

    Everything the heap needs per cell (its four neighbours among the cells and the trapezoidal phase steps
    to them) is computed vectorised first; the Python loop then only pops and pushes (a few hundred to
    a few thousand cells: 1-3 ms). Ties are broken by cell index, so the result is deterministic.
    """
    f, b = shape
    if flat.size > max_cells:
        cut = np.partition(mags, flat.size - max_cells)[flat.size - max_cells]
        keep = mags > cut
        flat, mags, wr, gr = flat[keep], mags[keep], wr[keep], gr[keep]
    n = flat.size
    if n == 0:
        return flat, np.zeros(0)
    fr, bn = np.divmod(flat, b)
    w = wr.astype(np.float64) + plan.bin_advance[bn]
    g = gr.astype(np.float64) + np.pi

    def neighbour(target: np.ndarray, inside: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(flat, target), n - 1)
        return np.where(inside & (flat[pos] == target), pos, -1)

    nbrs = np.stack([neighbour(flat + b, fr + 1 < f), neighbour(flat - b, fr > 0),
                     neighbour(flat + 1, bn + 1 < b), neighbour(flat - 1, bn > 0)], axis=1)
    grad = np.stack([w, w, g, g], axis=1)
    sign = np.array([0.5, -0.5, 0.5, -0.5])
    steps = np.where(nbrs >= 0, sign * (grad + grad[np.maximum(nbrs, 0), np.arange(4)]), 0.0)
    # The heap orders cells by magnitude, ties by index: that is their rank in a stable sort, so the loop works
    # on ranks (plain ints: no tuples to compare, nothing for the garbage collector) over flat neighbour lists.
    order = np.argsort(-mags, kind="stable")
    rank = np.empty(n + 1, dtype=np.int64)
    rank[order] = np.arange(n)
    rank[n] = n  # a missing neighbour (-1) -> n, whose ``todo`` is False
    nb = rank[np.where(nbrs >= 0, nbrs, n)[order]].ravel().tolist()
    st = steps[order].ravel().tolist()
    todo = [True] * n + [False]
    phase = [0.0] * n
    pop, push = heapq.heappop, heapq.heappush
    for s in range(n):
        if not todo[s]:
            continue
        todo[s] = False
        heap = [s]
        while heap:
            i = pop(heap)
            p = phase[i]
            k = 4 * i  # up, down, right, left: unrolled (a loop over the four is 20 % slower: 1.16 vs 0.95 ms)
            j = nb[k]
            if todo[j]:
                todo[j] = False
                phase[j] = p + st[k]
                push(heap, j)
            j = nb[k + 1]
            if todo[j]:
                todo[j] = False
                phase[j] = p + st[k + 1]
                push(heap, j)
            j = nb[k + 2]
            if todo[j]:
                todo[j] = False
                phase[j] = p + st[k + 2]
                push(heap, j)
            j = nb[k + 3]
            if todo[j]:
                todo[j] = False
                phase[j] = p + st[k + 3]
                push(heap, j)
    out = np.empty(n)
    out[order] = phase
    return flat, out


def _lock(phase: np.ndarray, mid: np.ndarray, gr: np.ndarray, k: int) -> None:
    """Phase locking in place over bins [0, k) of each frame: a bin takes the phase of the spectral peak whose
    lobe it sits on (found by climbing towards the louder neighbour) plus the frequency integral of the phase
    gradient from that peak."""
    if k <= 2:
        return
    h, f = mid.shape[:2]
    mk = mid[:, :, :k]
    g = np.zeros((h, f, k), dtype=np.float32)
    np.cumsum(np.float32(0.5) * (gr[:, :, 1:k] + gr[:, :, : k - 1]) + np.float32(np.pi), axis=2, out=g[:, :, 1:])
    idx = np.arange(k, dtype=np.int32)
    ge_left = np.ones(mk.shape, dtype=bool)
    ge_left[:, :, 1:] = mk[:, :, 1:] >= mk[:, :, :-1]
    ge_right = np.ones(mk.shape, dtype=bool)
    ge_right[:, :, :-1] = mk[:, :, :-1] >= mk[:, :, 1:]
    peak = ge_left & ge_right
    left_peak = np.maximum.accumulate(np.where(peak, idx, 0), axis=2)
    right_peak = np.minimum.accumulate(np.where(peak, idx, k - 1)[:, :, ::-1], axis=2)[:, :, ::-1]
    climb_right = np.zeros(mk.shape, dtype=bool)
    climb_right[:, :, 1:-1] = mk[:, :, 2:] > mk[:, :, :-2]
    climb_right[:, :, 0] = True
    src = np.where(peak, idx, np.where(climb_right, right_peak, left_peak))
    phase[:, :, :k] = np.take_along_axis(phase[:, :, :k] - g, src, axis=2) + g


def _cis(phase: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """exp(i * phase) as complex64, from float32 phases (into ``out`` when given)."""
    if out is None:
        out = np.empty(phase.shape, dtype=np.complex64)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    return out


def _cis_sounding(phase: np.ndarray, mag: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """exp(i * phase) where ``mag`` > 0 (into ``out``, zero on entry, when given; C-contiguous); elsewhere zero
    or exp(i * phase), whichever was cheaper.

    A silent cell's phase is never used: every use multiplies it by a magnitude that is zero there (the mid's,
    or a channel's, which is zero wherever the mid is). A box of the support is often mostly silent cells (a
    long hit whose few late high bins widen its tail box: 20 % sounding), so where under ``SPARSE_CIS`` of
    the cells sound, only theirs are computed (gathered, sin/cos, scattered)."""
    if out is None:
        out = np.zeros(phase.shape, dtype=np.complex64)
    sounding = np.flatnonzero(mag > 0)
    if sounding.size >= SPARSE_CIS * mag.size:
        return _cis(phase, out)
    flat = out.reshape(-1)  # a view: ``out`` is contiguous
    flat[sounding] = _cis(phase.reshape(-1)[sounding])
    return out


SPARSE_CIS = 0.5  # fraction of sounding cells under which _cis_sounding computes only theirs


def pghi_heap_phase(mid: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT,
                    tol_db: float = PGHI_TOL_DB) -> np.ndarray:
    """Exact phase-gradient heap integration of one magnitude (F, B) -> phase in radians (F, B), float64.

    Plain-Python heap (Prusa 2017, algorithm 1): start at the strongest cell, always extend from the strongest
    cell reached so far to its four neighbours by trapezoidal integration of the phase gradient; a new start
    is taken when the heap empties. Cells under the tolerance keep phase 0. Slow (seconds): the reference.
    """
    plan = _plan(contract)
    mid = np.asarray(mid, dtype=np.float32)
    if mid.ndim != 2:
        raise ValueError(f"pghi_heap_phase: expected (frames, bins), got shape {mid.shape}")
    wr, gr, big = (x[0].astype(np.float64) for x in _phase_gradients(mid[None], contract, plan, tol_db))
    f, b = mid.shape
    w = wr + 2.0 * np.pi * plan.bin_index[None, :b] * contract.hop / contract.n_fft
    g = gr + np.pi
    phase = np.zeros((f, b))
    todo = big.copy()
    mag = mid.astype(np.float64)
    order = np.argsort(-mag, axis=None)
    heap: list[tuple[float, int, int]] = []
    for flat in order:
        n0, m0 = divmod(int(flat), b)
        if not todo[n0, m0]:
            continue
        todo[n0, m0] = False
        heap.append((-mag[n0, m0], n0, m0))
        while heap:
            _, n, m = heapq.heappop(heap)
            p = phase[n, m]
            for nn, mm, step in ((n + 1, m, 0.5 * (w[n, m] + w[min(n + 1, f - 1), m])),
                                 (n - 1, m, -0.5 * (w[n, m] + w[max(n - 1, 0), m])),
                                 (n, m + 1, 0.5 * (g[n, m] + g[n, min(m + 1, b - 1)])),
                                 (n, m - 1, -0.5 * (g[n, m] + g[n, max(m - 1, 0)]))):
                if 0 <= nn < f and 0 <= mm < b and todo[nn, mm]:
                    todo[nn, mm] = False
                    phase[nn, mm] = p + step
                    heapq.heappush(heap, (-mag[nn, mm], nn, mm))
        if mag[n0, m0] <= 0.0:
            break
    return np.remainder(phase, 2.0 * np.pi)


def _pghi_heap(mid: np.ndarray, c: SpectralContract, plan: _Plan, tol_db: float = PGHI_TOL_DB) -> np.ndarray:
    phase = np.stack([pghi_heap_phase(x, c, tol_db) for x in mid])
    return np.exp(1j * phase).astype(np.complex64)


def _rtisi_la(mid: np.ndarray, c: SpectralContract, plan: _Plan, iterations: int,
              lookahead: int = RTISI_LOOKAHEAD) -> np.ndarray:
    """RTISI-LA on the mid magnitude: returns the unit phase each frame had when it was committed.

    At step n the frames n .. n + lookahead are refined ``iterations`` times against the partial
    reconstruction (committed frames + current estimates, least-squares normalised); frame n is then
    committed with its final phase. A frame entering the look-ahead starts from the phase of what is already
    reconstructed under it. The loop over frames is inherent to the method (it is what makes it streamable).
    """
    h, f, _ = mid.shape
    a, n_fft = c.hop, c.n_fft
    length = (f - 1) * a + n_fft
    committed = np.zeros((h, length), dtype=np.float32)
    est = np.zeros((h, f, n_fft), dtype=np.float32)  # windowed time-domain estimate of each frame
    units = np.zeros(mid.shape, dtype=np.complex64)
    win = plan.window

    def analyse(lo: int, hi: int, with_est: tuple[int, int]) -> np.ndarray:
        """Unit phase of frames [lo, hi) of committed + est[with_est] (normalised)."""
        start, stop = lo * a, (hi - 1) * a + n_fft
        e0, e1 = with_est
        s0, s1 = min(start, e0 * a), max(stop, (e1 - 1) * a + n_fft) if e1 > e0 else stop
        local = committed[:, s0:s1].copy()
        for j in range(e0, e1):
            local[:, j * a - s0 : j * a - s0 + n_fft] += est[:, j]
        local *= plan.norm[s0:s1]
        view = np.lib.stride_tricks.sliding_window_view(local[:, start - s0 : stop - s0], n_fft, axis=-1)[:, ::a]
        spec = np.fft.rfft((view * win).astype(np.float64), axis=-1).astype(np.complex64)
        mag = np.abs(spec)
        # Nothing reconstructed under a frame yet (the very first one): start it at zero phase.
        return np.where(mag > _TINY, spec / np.maximum(mag, _TINY), np.complex64(1.0))

    def set_est(lo: int, hi: int, u: np.ndarray) -> None:
        est[:, lo:hi] = np.fft.irfft(mid[:, lo:hi] * u, n=n_fft, axis=-1) * win

    for n in range(f):
        hi = min(n + lookahead + 1, f)
        for new in range(n if n == 0 else hi - 1, hi):
            if n == 0 or new == n + lookahead:
                set_est(new, new + 1, analyse(new, new + 1, (n, new)))
        for _ in range(iterations):
            set_est(n, hi, analyse(n, hi, (n, hi)))
        units[:, n] = analyse(n, n + 1, (n, hi))[:, 0]
        set_est(n, n + 1, units[:, n : n + 1])
        committed[:, n * a : n * a + n_fft] += est[:, n]
    return units


# ----- registry and public API ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    description: str
    default_iterations: int  # 0: not iterative
    iterative: bool
    realtime: bool  # meant for live use (bounded, fast); False: offline/reference
    refine_s: float | None = None  # FGLA refines the first refine_s seconds only (None: all frames)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("pghi+fgla", "PGHI, then Fast Griffin-Lim (momentum 0.99) over the attack", 2, True, True,
               ATTACK_S),
        Method("pghi", "phase-gradient heap integration, vectorised (non-iterative)", 0, False, True),
        Method("fgla", "Fast Griffin-Lim (momentum 0.99) from a seeded random phase", 32, True, False),
        Method("rtisi-la", "real-time iterative spectrogram inversion with look-ahead (3 frames)", 2, True, False),
        Method("pghi-heap", "exact phase-gradient heap integration (pure Python, reference)", 0, False, False),
    )
}
DEFAULT_METHOD = "pghi+fgla"


def _check(mag: np.ndarray, contract: SpectralContract, values: bool = True) -> np.ndarray:
    mag = np.asarray(mag)
    want = (contract.channels, contract.frames, contract.n_bins)
    if mag.ndim < 3 or tuple(mag.shape[-3:]) != want:
        raise ValueError(f"reconstruct: expected bin magnitudes (..., {', '.join(map(str, want))}), "
                         f"got shape {tuple(mag.shape)}")
    mag = mag.astype(np.float32, copy=False)
    if not values:
        return mag
    if mag.size and not np.isfinite(mag.max()):  # max propagates NaN; +inf is the max; -inf fails below
        raise ValueError("reconstruct: magnitudes contain NaN or infinite values")
    if mag.size and mag.min() < 0:
        raise ValueError("reconstruct: magnitudes must be non-negative (raw |STFT| from decode_magnitude)")
    return mag


def reconstruct(
    mag: np.ndarray,
    contract: SpectralContract = DEFAULT_CONTRACT,
    method: str = DEFAULT_METHOD,
    iterations: int | None = None,
    *,
    momentum: float = MOMENTUM,
    tol_db: float = PGHI_TOL_DB,
    lookahead: int = RTISI_LOOKAHEAD,
    refine_s: float | None = None,
    heap_db: float = HEAP_DB,
    threads: int = 1,
    validate: bool = True,
) -> np.ndarray:
    """Raw bin magnitudes (..., channels, frames, n_bins) -> float32 audio (..., channels, n_samples).

    ``iterations`` defaults to the method's own (``METHODS[method].default_iterations``); for ``pghi`` and
    ``pghi-heap`` it must be 0 or None. ``refine_s``: FGLA refines only the phases of the first ``refine_s``
    seconds (None: the method's own, ``inf``: every frame). ``heap_db`` (``pghi`` and ``pghi+fgla``): the
    cells within ``heap_db`` of the hit's peak (at most ``HEAP_MAX_CELLS``) are integrated by the exact heap,
    the rest by the vectorised approximation (0: no heap). ``threads`` > 1 (``pghi+fgla``): the frames after
    the ones FGLA refines are synthesised on a second thread while FGLA works (numpy's FFTs and large ufuncs
    release the GIL); bit-identical to 1, worth it on an idle second core. Deterministic: the same input always gives the
    same output. ``validate=False`` skips the scan for NaN and negative values (for magnitudes straight
    from ``decode_magnitude``, which are finite and non-negative by construction).
    """
    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r} (known: {', '.join(METHODS)})")
    spec = METHODS[method]
    its = spec.default_iterations if iterations is None else int(iterations)
    if its < 0 or (its and not spec.iterative):
        raise ValueError(f"reconstruct: method {method!r} takes {'no' if not spec.iterative else '>= 0'} "
                         f"iterations, got {iterations}")
    if not (np.isfinite(heap_db) and heap_db >= 0):
        raise ValueError(f"reconstruct: heap_db must be a finite number of dB >= 0, got {heap_db}")
    mag = _check(mag, contract, validate)
    lead = mag.shape[:-3]
    mag = mag.reshape(-1, *mag.shape[-3:])
    out = np.zeros((mag.shape[0], contract.channels, contract.n_samples), dtype=np.float32)
    if mag.shape[0]:
        plan = _plan(contract)
        window_s = spec.refine_s if refine_s is None else refine_s
        iter_frames = None if window_s is None or not np.isfinite(window_s) else max(
            1, int(round(window_s * contract.sample_rate / contract.hop)))
        for hit, dst in zip(mag, out, strict=True):  # one hit at a time: batch == single, bit for bit
            _reconstruct_hit(hit, dst, contract, plan, method, its, momentum=momentum, tol_db=tol_db,
                             lookahead=lookahead, iter_frames=iter_frames, heap_db=heap_db, threads=threads)
    return out.reshape(*lead, contract.channels, contract.n_samples)


def _reconstruct_hit(mag: np.ndarray, out: np.ndarray, c: SpectralContract, plan: _Plan, method: str, its: int, *,
                     momentum: float, tol_db: float, lookahead: int, iter_frames: int | None, heap_db: float,
                     threads: int, two_boxes: bool = True, decimate: bool = True) -> None:
    """One hit's magnitudes (channels, frames, n_bins) -> audio written into ``out`` (channels, n_samples),
    which is zero on entry. The PGHI methods work on the support's cells only (``two_boxes=False``: on the
    bounding box of the sounding bins, the reference the boxes are tested against; ``decimate=False``: the tail
    box synthesised at the full rate, the reference the decimated synthesis is tested against)."""
    f = _work_frames(mag, c.frames)
    if f == 0:
        return
    mid = (mag[0, :f] + mag[1, :f]) * np.float32(0.5) if mag.shape[0] == 2 else mag[:, :f].mean(axis=0)
    late: Future[list[np.ndarray]] | list[np.ndarray] = []
    if method in ("pghi", "pghi+fgla"):
        sup = _support(mid, c.n_bins, _onset_frames(c), two_boxes)  # the onset lock needs the full width
        mid = np.ascontiguousarray(mid[:, : sup.width])
        unit = _pghi(mid, sup, c, plan, tol_db, heap_db)
        refined = f if method == "pghi" or not its or iter_frames is None else min(f, max(1, iter_frames))
        runs = synthesis_runs(c, sup.reach, refined) if decimate else [(0, f, 1)]
        if refined < f:  # the frames FGLA leaves alone keep PGHI's phase: synthesised meanwhile with threads
            split = next((i for i, r in enumerate(runs) if r[0] >= refined), len(runs))
            if threads > 1:
                late = _pool(1).submit(_run_sums, mag, unit, sup, runs[split:], c, plan)
            else:
                late = _run_sums(mag, unit, sup, runs[split:], c, plan)
            runs_now = runs[:split]
        else:
            runs_now = runs
        if method == "pghi+fgla":
            unit = _fgla(mid[None], c, plan, its, unit[None], momentum, iter_frames)[0]
    else:
        sup = _Support(f, f, c.n_bins, c.n_bins)
        runs = runs_now = [(0, f, 1)]
        if method == "fgla":
            unit = _fgla(mid[None], c, plan, its, plan.random_phase[:f], momentum, iter_frames)[0]
        elif method == "rtisi-la":
            unit = _rtisi_la(mid[None], c, plan, its, lookahead)[0]
        else:  # pghi-heap
            unit = _pghi_heap(mid[None], c, plan, tol_db)[0]
    parts = _run_sums(mag, unit, sup, runs_now, c, plan)
    parts += late.result() if isinstance(late, Future) else late
    _assemble(parts, runs, f, c, plan, out)


def reconstruct_scaled(scaled: np.ndarray, contract: SpectralContract = DEFAULT_CONTRACT, **kwargs: object
                       ) -> np.ndarray:
    """Scaled model rows (..., channels, frames, rows) -> audio: ``decode_magnitude`` then :func:`reconstruct`."""
    scaled = np.asarray(scaled, dtype=np.float32)
    if scaled.ndim < 3 or tuple(scaled.shape[-3:]) != contract.shape:
        raise ValueError(f"reconstruct_scaled: expected scaled rows (..., {', '.join(map(str, contract.shape))}), "
                         f"got shape {tuple(scaled.shape)}")
    return reconstruct(contract.decode_magnitude(scaled), contract, **kwargs)  # type: ignore[arg-type]

