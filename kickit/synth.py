"""Procedural kick drums: a pitch-swept sine body, a click and a little noise, randomised.

Used by the tests (a kick that exists without any sample), by augmentation (a share of synthetic hits) and as
the evaluation baseline a trained model must beat. The sound is built like an analogue kick:

* body: sine whose frequency falls exponentially from ``f_start`` to the fundamental ``f_end`` (40-120 Hz),
  fast attack (0.3-3 ms), exponential amplitude decay, optional soft saturation;
* click: a few milliseconds of high-passed noise plus a short high sine blip at the onset;
* noise: low-level decaying noise;
* stereo: the body is centred; click and noise differ slightly per channel (separate noise, a sub-millisecond
  delay and a small gain offset), so the channels are highly but not perfectly correlated.

:func:`random_params` draws the parameters from an ``np.random.Generator``; :func:`render_kick` is a pure
function of the parameters and the contract, so a given generator state always makes the same kick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kickit.spectral import DEFAULT_CONTRACT, SpectralContract

FUNDAMENTAL_RANGE = (40.0, 120.0)  # Hz, where a kick's fundamental lives
DC_CUTOFF_HZ = 20.0
END_FADE_SECONDS = 0.010


@dataclass(frozen=True)
class KickParams:
    f_end: float  # fundamental the sweep settles on, Hz
    f_start: float  # sweep start, Hz
    sweep_tau: float  # pitch-sweep time constant, s
    attack: float  # attack time, s
    decay_tau: float  # amplitude decay time constant, s
    drive: float  # soft-saturation drive (1 = almost clean)
    click_level: float
    click_tau: float  # s
    click_freq: float  # Hz of the onset blip
    noise_level: float
    noise_tau: float  # s
    width: float  # 0..1, how different the channels' click/noise are
    delay: float  # s, inter-channel delay of click and noise
    balance_db: float  # channel level offset of click and noise, dB
    peak_db: float  # output peak, dBFS
    noise_seed: int  # seeds the click/noise realisation

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def random_params(rng: np.random.Generator, contract: SpectralContract = DEFAULT_CONTRACT) -> KickParams:
    """Draw kick parameters; the decay is bounded so the hit dies away within the contract's length."""
    dur = contract.duration
    f_end = float(rng.uniform(42.0, 90.0))
    return KickParams(
        f_end=f_end,
        f_start=float(min(f_end * rng.uniform(2.0, 4.5), 380.0)),
        sweep_tau=float(rng.uniform(0.006, 0.03)),
        attack=float(rng.uniform(0.0003, 0.003)),
        decay_tau=float(rng.uniform(0.06, 0.22) * min(1.0, dur / 0.74)),
        drive=float(rng.uniform(1.0, 3.0)),
        click_level=float(rng.uniform(0.05, 0.35)),
        click_tau=float(rng.uniform(0.001, 0.005)),
        click_freq=float(rng.uniform(1500.0, 4000.0)),
        noise_level=float(rng.uniform(0.0, 0.06)),
        noise_tau=float(rng.uniform(0.015, 0.06)),
        width=float(rng.uniform(0.1, 0.6)),
        delay=float(rng.uniform(0.0, 0.0004)),
        balance_db=float(rng.uniform(-1.5, 1.5)),
        peak_db=float(rng.uniform(-3.0, -1.0)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _highpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    """One-pole high-pass along the last axis (removes DC and subsonic drift)."""
    a = float(np.exp(-2.0 * np.pi * cutoff / rate))
    # y[n] = a * (y[n-1] + x[n] - x[n-1]), applied in the frequency domain (numpy only). Zero-padding to at
    # least twice the length keeps the circular wrap of the causal impulse response (it decays as a**n) far
    # below float precision.
    n = x.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    zinv = np.exp(-2j * np.pi * np.fft.rfftfreq(size))
    h = a * (1.0 - zinv) / (1.0 - a * zinv)
    return np.fft.irfft(np.fft.rfft(x, size, axis=-1) * h, size, axis=-1)[..., :n]


def render_kick(params: KickParams, contract: SpectralContract = DEFAULT_CONTRACT) -> np.ndarray:
    """Render one kick as float32 (2, n) at the contract's rate and length."""
    sr, n = contract.sample_rate, contract.n_samples
    t = np.arange(n, dtype=np.float64) / sr
    p = params

    # body: exponential pitch sweep; phase is the running integral of the frequency (closed form)
    df = p.f_start - p.f_end
    phase = 2.0 * np.pi * (p.f_end * t + df * p.sweep_tau * (1.0 - np.exp(-t / p.sweep_tau)))
    attack = np.clip(t / p.attack, 0.0, 1.0)
    attack = 0.5 - 0.5 * np.cos(np.pi * attack)
    env = attack * np.exp(-t / p.decay_tau)
    body = np.sin(phase) * env
    body = np.tanh(p.drive * body) / np.tanh(p.drive)

    # click and noise: one shared part, one per channel, mixed by the width
    nrng = np.random.default_rng(p.noise_seed)
    shared = nrng.standard_normal(n)
    own = nrng.standard_normal((2, n))
    mix = np.sqrt(1.0 - p.width**2) * shared[None, :] + p.width * own
    hp = np.diff(mix, axis=1, prepend=0.0) / 2.0  # first difference: bright
    click_env = np.exp(-t / p.click_tau)
    blip = np.sin(2.0 * np.pi * p.click_freq * t) * np.exp(-t / (0.5 * p.click_tau))
    click = p.click_level * (0.7 * hp + 0.3 * blip[None, :]) * click_env[None, :]
    noise = p.noise_level * mix * (attack * np.exp(-t / p.noise_tau))[None, :]
    side = click + noise

    lag = int(round(p.delay * sr))
    if lag:
        side[1] = np.concatenate([np.zeros(lag), side[1, :-lag]])
    gain = 10.0 ** (p.balance_db / 40.0)
    side[0] *= gain
    side[1] /= gain

    out = body[None, :] + side
    out = _highpass(out, sr, DC_CUTOFF_HZ)
    k = max(1, int(round(END_FADE_SECONDS * sr)))
    out[:, n - k :] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, k))
    peak = float(np.max(np.abs(out)))
    if peak > 0.0:
        out *= 10.0 ** (p.peak_db / 20.0) / peak
    return np.ascontiguousarray(out, dtype=np.float32)


def procedural_kick(rng: np.random.Generator, contract: SpectralContract = DEFAULT_CONTRACT) -> np.ndarray:
    """One random kick, float32 (2, n); the same generator state gives the same kick."""
    return render_kick(random_params(rng, contract), contract)


def procedural_kicks(
    rng: np.random.Generator, count: int, contract: SpectralContract = DEFAULT_CONTRACT
) -> np.ndarray:
    """``count`` random kicks, float32 (count, 2, n)."""
    if count < 0:
        raise ValueError(f"procedural_kicks: count must be >= 0, got {count}")
    out = np.empty((count, contract.channels, contract.n_samples), dtype=np.float32)
    for i in range(count):
        out[i] = procedural_kick(rng, contract)
    return out
