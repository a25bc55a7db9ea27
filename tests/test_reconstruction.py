"""kickit.reconstruction on real kicks (tests/data/kicks): quality floor, mask, batch == single, determinism."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kickit import descriptors, reconstruction
from kickit.audio import load_hit
from kickit.recon_bench import log_spectral_distance, spectral_convergence
from kickit.spectral import DEFAULT_CONTRACT

C = DEFAULT_CONTRACT


@pytest.fixture(scope="module")
def kicks(real_kick_paths: list[Path]) -> np.ndarray:
    """Four real stereo kicks (2, n) from different kits, including the wide stereo PowR_BD_1."""
    names = ("Kick-Hard", "808_Kick_Long", "PowR_BD_1", "EE_Kick_Power")
    paths = [p for n in names for p in real_kick_paths if p.stem == n]
    assert len(paths) == len(names)
    return np.stack([load_hit(p, C) for p in paths])


@pytest.fixture(scope="module")
def mags(kicks: np.ndarray) -> np.ndarray:
    return C.decode_magnitude(C.encode(kicks))


@pytest.fixture(scope="module")
def default_out(mags: np.ndarray) -> np.ndarray:
    return reconstruction.reconstruct(mags, C)


def test_registry() -> None:
    assert reconstruction.DEFAULT_METHOD in reconstruction.METHODS
    assert {"fgla", "pghi", "pghi+fgla", "rtisi-la"} <= set(reconstruction.METHODS)
    assert reconstruction.METHODS[reconstruction.DEFAULT_METHOD].realtime


def test_default_quality_floor(mags: np.ndarray, default_out: np.ndarray) -> None:
    assert default_out.shape == (len(mags), 2, C.n_samples) and default_out.dtype == np.float32
    sc = spectral_convergence(default_out, mags, C)
    # PowR_BD_1 is wide (L/R correlation 0.78): one shared phase cannot hold its L/R phase differences.
    assert np.median(sc) < 0.08 and np.all(sc < 0.16), sc
    assert np.all(log_spectral_distance(default_out, mags, C) < 5.0)


@pytest.mark.parametrize(("method", "iterations", "limit"),
                         [("pghi", 0, 0.2), ("fgla", 16, 0.2), ("rtisi-la", 1, 0.25), ("pghi+fgla", 4, 0.09)])
def test_methods_quality_floor(mags: np.ndarray, method: str, iterations: int, limit: float) -> None:
    sub = mags[:2]
    out = reconstruction.reconstruct(sub, C, method, iterations)
    assert np.all(spectral_convergence(out, sub, C) < limit)


def test_better_than_random_phase(mags: np.ndarray, default_out: np.ndarray) -> None:
    """A random phase (FGLA with no iterations) is far worse: the floor above is not trivially met."""
    rnd = reconstruction.reconstruct(mags[:1], C, "fgla", 0)
    assert spectral_convergence(rnd, mags[:1], C)[0] > 0.5
    assert spectral_convergence(default_out[:1], mags[:1], C)[0] < 0.25 * spectral_convergence(rnd, mags[:1], C)[0]


def test_iterations_improve(mags: np.ndarray) -> None:
    sc = [spectral_convergence(reconstruction.reconstruct(mags[:1], C, "pghi+fgla", k), mags[:1], C)[0]
          for k in (0, 2, 6)]
    assert sc[0] > sc[1] > sc[2]


def test_vectorised_pghi_close_to_exact_heap(mags: np.ndarray) -> None:
    m = mags[1:2]
    fast = spectral_convergence(reconstruction.reconstruct(m, C, "pghi"), m, C)[0]
    exact = spectral_convergence(reconstruction.reconstruct(m, C, "pghi-heap"), m, C)[0]
    assert exact < 0.15
    assert fast < 2.0 * exact


def test_kick_traits_kept(kicks: np.ndarray, default_out: np.ndarray) -> None:
    orig = descriptors.describe(kicks, C)
    rec = descriptors.describe(default_out, C)
    np.testing.assert_allclose(rec.fundamental_hz, orig.fundamental_hz, rtol=0.03)
    np.testing.assert_allclose(rec.decay_s, orig.decay_s, rtol=0.10)
    assert np.all(np.abs(rec.lr_correlation - orig.lr_correlation) < 0.15)
    # At the original's level (the renderer normalises), the kicks stay kicks, PowR_BD_1's 10 ms transient
    # included: the vectorised PGHI alone lost it, the exact heap over the strongest cells keeps it.
    level = np.abs(kicks).max(axis=(-2, -1), keepdims=True) / np.abs(default_out).max(axis=(-2, -1), keepdims=True)
    before = descriptors.kick_checks(kicks, C)["all"]
    after = descriptors.kick_checks(default_out * level, C)["all"]
    assert np.all(before)
    assert np.all(after)


def test_heap_on_strong_cells_is_the_exact_heap(mags: np.ndarray) -> None:
    """The restricted heap gives the reference heap's phases on the cells above its tolerance (same cells,
    same order, same steps), i.e. it is the exact algorithm, not another approximation."""
    mid = 0.5 * (mags[0, 0] + mags[0, 1])
    f = reconstruction.active_frames(mags[0]) + 1
    mid = np.ascontiguousarray(mid[:f]).astype(np.float32)
    tol = 40.0
    plan = reconstruction._plan(C)
    wr, gr, big = reconstruction._phase_gradients(mid[None], C, plan, tol)
    floor = mid.max() * np.float32(10.0 ** (-tol / 20.0))
    cells, phase = reconstruction._heap_strong(mid, wr[0], gr[0], floor, plan, max_cells=mid.size)
    np.testing.assert_array_equal(cells, np.flatnonzero(big[0]))
    ref = reconstruction.pghi_heap_phase(mid, C, tol).ravel()[cells]
    assert cells.size > 300
    assert np.max(np.abs(np.angle(np.exp(1j * (phase - ref))))) < 1e-3


def test_heap_cell_cap(mags: np.ndarray) -> None:
    mid = np.ascontiguousarray(0.5 * (mags[1, 0] + mags[1, 1])).astype(np.float32)
    plan = reconstruction._plan(C)
    wr, gr, _ = reconstruction._phase_gradients(mid[None], C, plan, 80.0)
    cells, phase = reconstruction._heap_strong(mid, wr[0], gr[0], np.float32(0.0), plan, max_cells=200)
    assert 150 <= cells.size <= 200 and phase.shape == cells.shape
    # The strongest ones: nothing left out is louder than anything kept.
    kept = np.zeros(mid.size, bool)
    kept[cells] = True
    assert mid.ravel()[~kept].max() <= mid.ravel()[kept].min()


def test_heap_improves_the_default(real_kick_paths: list[Path], mags: np.ndarray) -> None:
    """The exact heap over the strongest cells is what takes the default under librosa's SC (bench: 0.045 vs
    0.050 on the committed kicks; 0.062 without the heap). Per hit it can lose a little (two of the four
    fixture kicks do), so this is judged like the bench: the median over every committed kick."""
    every = C.decode_magnitude(C.encode(np.stack([load_hit(p, C) for p in real_kick_paths])))
    with_heap = reconstruction.reconstruct(every, C)
    without = reconstruction.reconstruct(every, C, heap_db=0.0)
    sc_with = np.median(spectral_convergence(with_heap, every, C))
    sc_without = np.median(spectral_convergence(without, every, C))
    assert sc_with < 0.05 and sc_with < 0.85 * sc_without, (sc_with, sc_without)
    with pytest.raises(ValueError, match="heap_db must be a finite number of dB >= 0, got -1"):
        reconstruction.reconstruct(mags[0], C, heap_db=-1.0)


def test_mask_respected(mags: np.ndarray) -> None:
    """Masked cells are silent in the synthesis: frames after the last audible one give exact zeros, and a
    masked frequency region stays far under the rest."""
    m = mags[:1].copy()
    last = 60
    m[..., last:, :] = 0.0
    hi = int(6000 * C.n_fft / C.sample_rate)
    m[..., hi:] = 0.0
    out = reconstruction.reconstruct(m, C)
    end = (last - 1) * C.hop + C.n_fft // 2
    assert np.all(out[..., end:] == 0.0)
    assert np.any(out[..., : end] != 0.0)
    spec = np.abs(C.stft(out.astype(np.float64)))
    leak = np.sum(spec[..., hi + 8 :] ** 2) / np.sum(spec**2)
    assert leak < 1e-4


def test_batch_equals_single(mags: np.ndarray) -> None:
    for method in ("pghi+fgla", "pghi", "fgla"):
        batch = reconstruction.reconstruct(mags[:3], C, method, 2 if method != "pghi" else None)
        for i in range(3):
            single = reconstruction.reconstruct(mags[i], C, method, 2 if method != "pghi" else None)
            np.testing.assert_array_equal(batch[i], single)


def test_threaded_synthesis_is_bit_identical(mags: np.ndarray, default_out: np.ndarray) -> None:
    threaded = reconstruction.reconstruct(mags, C, threads=2)
    np.testing.assert_array_equal(threaded, default_out)
    one = reconstruction.reconstruct(mags[0], C, "pghi", threads=2)
    np.testing.assert_array_equal(one, reconstruction.reconstruct(mags[0], C, "pghi"))


def test_deterministic_and_leading_dims(mags: np.ndarray, default_out: np.ndarray) -> None:
    again = reconstruction.reconstruct(mags, C)
    np.testing.assert_array_equal(again, default_out)
    shaped = reconstruction.reconstruct(mags[:2].reshape(2, 1, *mags.shape[1:]), C)
    assert shaped.shape == (2, 1, 2, C.n_samples)
    np.testing.assert_array_equal(shaped[:, 0], default_out[:2])


def test_shared_phase_keeps_mono_mono(kicks: np.ndarray) -> None:
    mono = np.repeat(kicks[:1, :1], 2, axis=1)
    out = reconstruction.reconstruct(C.decode_magnitude(C.encode(mono)), C)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])


def test_reconstruct_scaled(kicks: np.ndarray, mags: np.ndarray, default_out: np.ndarray) -> None:
    np.testing.assert_array_equal(reconstruction.reconstruct_scaled(C.encode(kicks[:1]), C), default_out[:1])
    with pytest.raises(ValueError, match="expected scaled rows"):
        reconstruction.reconstruct_scaled(np.zeros((2, C.frames, C.n_bins)), C)


def test_silence_gives_zeros() -> None:
    out = reconstruction.reconstruct(np.zeros((2, 2, C.frames, C.n_bins), np.float32), C)
    assert out.shape == (2, 2, C.n_samples) and not np.any(out)


def test_bad_input_refused(mags: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected bin magnitudes \(\.\.\., 2, 256, 1025\), got shape \(2, 256, 1000\)"):
        reconstruction.reconstruct(np.zeros((2, C.frames, 1000)), C)
    bad = mags[0].copy()
    bad[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reconstruction.reconstruct(bad, C)
    with pytest.raises(ValueError, match="non-negative"):
        reconstruction.reconstruct(-mags[0], C)
    with pytest.raises(ValueError, match="unknown reconstruction method 'magic'"):
        reconstruction.reconstruct(mags[0], C, "magic")
    with pytest.raises(ValueError, match="takes no iterations"):
        reconstruction.reconstruct(mags[0], C, "pghi", 3)
    with pytest.raises(ValueError, match="iterations"):
        reconstruction.reconstruct(mags[0], C, "fgla", -1)


def test_refine_window(mags: np.ndarray) -> None:
    """pghi+fgla refines the attack by default; refine_s=inf refines every frame (and differs)."""
    m = mags[1:2]
    attack = reconstruction.reconstruct(m, C, "pghi+fgla", 2)
    every = reconstruction.reconstruct(m, C, "pghi+fgla", 2, refine_s=float("inf"))
    assert not np.array_equal(attack, every)
    sc = spectral_convergence(np.concatenate([attack, every]), np.concatenate([m, m]), C)
    assert sc[1] <= sc[0] + 1e-3 and sc[0] < 0.1


def test_bench_recon_runs(real_kick_paths: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import shutil

    from kickit import recon_bench

    for p in real_kick_paths[:2]:
        shutil.copy(p, tmp_path / p.name)
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true")
    recon_bench.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--configs", "pghi~0", "pghi+fgla:2", "fgla:2@0.05",
                              "pghi+fgla:1@0.1~30", "--repeats", "1", "--limit", "1", "--no-write", "--no-librosa"])
    assert recon_bench.run(args) == 0
    out = capsys.readouterr().out
    assert "| pghi (no heap) |" in out and "| pghi+fgla (2 it, first 120 ms, heap 40 dB) |" in out
    assert "| fgla (2 it, first 50 ms) |" in out and "| pghi+fgla (1 it, first 100 ms, heap 30 dB) |" in out
    assert "Default `pghi+fgla (2 it, first 120 ms, heap 40 dB)`" in out and "librosa" not in out
    assert re.search(r"Machine speed reference .*: \d+\.\d\d ms before, \d+\.\d\d ms after", out)
    assert recon_bench.run(parser.parse_args(["--data", str(tmp_path / "nope"), "--no-write"])) == 2
    assert "no such folder" in capsys.readouterr().out
    assert recon_bench.run(parser.parse_args(["--data", str(tmp_path), "--configs", "magic:3", "--no-write"])) == 2
    assert "unknown reconstruction method 'magic'" in capsys.readouterr().out
    assert recon_bench.run(parser.parse_args(["--data", str(tmp_path), "--configs", "pghi~-3", "--no-write"])) == 2
    assert "HEAP_DB must be a finite number >= 0" in capsys.readouterr().out


def test_librosa_reference_matches_our_stft(mags: np.ndarray) -> None:
    """The bench's librosa call uses the same STFT: its result is a real reconstruction of our magnitude."""
    pytest.importorskip("librosa")
    from kickit.recon_bench import librosa_reference

    out, ms, _ = librosa_reference(mags[1:2], C)
    assert out.shape == (1, 2, C.n_samples) and ms.shape == (1,)
    assert spectral_convergence(out, mags[1:2], C)[0] < 0.1


def test_support_boxes_are_exact(mags: np.ndarray) -> None:
    """The PGHI methods compute only the support's cells (two boxes: the attack at full width, the tail at
    its low bins); that gives the same audio, bit for bit, as the bounding box of every sounding bin, and the
    tail box is really used on these kicks (a long 808 among them)."""
    plan = reconstruction._plan(C)
    split = 0
    for hit in mags:
        f = reconstruction._work_frames(hit, C.frames)
        mid = 0.5 * (hit[0, :f] + hit[1, :f])
        sup = reconstruction._support(mid.astype(np.float32), C.n_bins, 17)
        split += sup.has_tail and sup.tail_width < sup.width // 2
        for method, heap in (("pghi+fgla", reconstruction.HEAP_DB), ("pghi", 0.0)):
            got = []
            for boxes in (True, False):
                out = np.zeros((C.channels, C.n_samples), np.float32)
                reconstruction._reconstruct_hit(hit, out, C, plan, method, 2 if method == "pghi+fgla" else 0,
                                                momentum=reconstruction.MOMENTUM, tol_db=reconstruction.PGHI_TOL_DB,
                                                lookahead=3, iter_frames=41, heap_db=heap, threads=1,
                                                two_boxes=boxes)
                got.append(out)
            np.testing.assert_array_equal(got[0], got[1])
    assert split >= 2


def _hit(mag: np.ndarray, decimate: bool) -> np.ndarray:
    out = np.zeros((C.channels, C.n_samples), np.float32)
    reconstruction._reconstruct_hit(mag, out, C, reconstruction._plan(C), "pghi+fgla", 2,
                                    momentum=reconstruction.MOMENTUM, tol_db=reconstruction.PGHI_TOL_DB,
                                    lookahead=3, iter_frames=41, heap_db=reconstruction.HEAP_DB, threads=1,
                                    decimate=decimate)
    return out


def _same_silence(fast: np.ndarray, ref: np.ndarray) -> None:
    """Exact zeros after the full-rate synthesis's last sample (the last few before it, where the window is
    under 1e-5, may round to zero at 1/d of the rate)."""
    end = np.flatnonzero(ref.any(axis=0))[-1] + 1
    assert end < ref.shape[-1] and end - 8 <= np.flatnonzero(fast.any(axis=0))[-1] + 1 <= end


def test_decimated_synthesis_is_the_full_rate_synthesis(mags: np.ndarray) -> None:
    """The runs of frames that hold only low bins are synthesised at 1/2-1/8 of the rate and interpolated back:
    on real kicks the audio is the full-rate synthesis to within -100 dB of its peak, the silence after the hit
    stays exact zeros, and every kick here really has decimated runs (a long 808 down to 1/8)."""
    used = set()
    for hit in mags:
        fast, ref = _hit(hit, True), _hit(hit, False)
        err = np.abs(fast - ref).max() / np.abs(ref).max()
        assert 20 * np.log10(max(err, 1e-30)) < -100.0, err
        _same_silence(fast, ref)
        f = reconstruction._work_frames(hit, C.frames)
        sup = reconstruction._support(0.5 * (hit[0, :f] + hit[1, :f]), C.n_bins, 17)
        used |= {d for _, _, d in reconstruction.synthesis_runs(C, sup.reach)}
    assert {2, 4, 8} <= used, used


def test_decimated_synthesis_of_a_hit_that_is_low_from_the_start() -> None:
    """A decaying 55 Hz sine (no frame at the full rate: its onset at 1/2, the rest at 1/8) and a hit with a
    single sounding frame (one run at 1/8): the same audio as at the full rate, to within -100 dB."""
    t = np.arange(C.n_samples) / C.sample_rate
    sine = (np.sin(2 * np.pi * 55.0 * t) * np.exp(-t / 0.05)).astype(np.float32)
    mag = C.decode_magnitude(C.encode(np.stack([sine, 0.7 * sine])))
    one = np.zeros_like(mag)
    one[:, 5, 3:40] = mag[:, 5, 3:40]
    for m in (mag, one):
        f = reconstruction._work_frames(m, C.frames)
        sup = reconstruction._support(0.5 * (m[0, :f] + m[1, :f]), C.n_bins, 17)
        assert reconstruction.synthesis_runs(C, sup.reach)[0][2] >= 2
        fast, ref = _hit(m, True), _hit(m, False)
        assert np.abs(fast - ref).max() < 1e-5 * np.abs(ref).max()
        _same_silence(fast, ref)
    assert reconstruction.synthesis_runs(C, sup.reach) == [(0, 7, 8)]


def test_synthesis_runs_and_decimation_factors() -> None:
    """d is the largest factor whose decimated Nyquist keeps SYNTH_MARGIN_BINS free above the width; runs follow
    the width from each frame on, and a run under MIN_RUN_FRAMES joins the one before it."""
    dec = reconstruction.synthesis_decimation
    assert reconstruction.SYNTH_MARGIN_BINS == 32 and reconstruction.MIN_RUN_FRAMES == 8
    assert [dec(C, w) for w in (2, 96, 97, 224, 225, 480, 481, 1025)] == [8, 8, 4, 4, 2, 2, 1, 1]
    reach = np.array([1025] * 10 + [400] * 30 + [200] * 5 + [60] * 100 + [30] * 3)
    assert reconstruction.synthesis_runs(C, reach) == [(0, 10, 1), (10, 45, 2), (45, 148, 8)]
    assert reconstruction.synthesis_runs(C, np.array([1025] * 3 + [50] * 20)) == [(0, 3, 1), (3, 23, 8)]
    assert reconstruction.synthesis_runs(C, np.array([90] * 12)) == [(0, 12, 8)]


@pytest.mark.parametrize("sounding", [0.0, 0.05, 0.3, 0.9])
def test_unit_phase_is_computed_where_the_mid_sounds(sounding: float) -> None:
    """PGHI's unit phases are exp(i phase) wherever the magnitude sounds, whether the box is mostly silent (only
    the sounding cells are computed, the rest stay zero) or mostly sounding (the whole box)."""
    rng = np.random.default_rng(2)
    phase = rng.uniform(-50.0, 50.0, (40, 70)).astype(np.float32)
    mag = np.where(rng.random((40, 70)) < sounding, rng.uniform(0.1, 1.0, (40, 70)), 0.0).astype(np.float32)
    full = reconstruction._cis(phase)
    wide = np.zeros((40, 90), dtype=np.float32)  # also as a tail box: the strided view of a wider grid
    wide[:, :70] = mag
    for m, out in ((mag, None), (mag, np.zeros((40, 70), dtype=np.complex64)), (wide[:, :70], None)):
        got = reconstruction._cis_sounding(phase, m, out)
        assert got.dtype == np.complex64 and (out is None or got is out)
        assert np.array_equal(got[mag > 0], full[mag > 0])
        if sounding < reconstruction.SPARSE_CIS:
            assert not got[mag == 0].any()


def test_analysis_frames_do_not_go_through_the_array_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    """The STFT of the iterative refinement frames a contiguous signal with the ndarray constructor, not
    as_strided (which reads ``__array_interface__``: CPython interns that dict's keys anew at every call, a
    churn of the interpreter's interned-string table that stepped a render process's memory up mid-session),
    and gives what as_strided's frames give; a signal that is not contiguous still takes as_strided."""
    c = DEFAULT_CONTRACT
    plan = reconstruction._plan(c)
    n_frames = 9
    signal = np.random.default_rng(0).standard_normal((2, (n_frames - 1) * c.hop + c.n_fft + 5)).astype(np.float32)
    s = signal.strides[-1]
    frames = np.lib.stride_tricks.as_strided(signal, (2, n_frames, c.n_fft), (signal.strides[0], c.hop * s, s))
    want = np.fft.rfft(np.multiply(frames, plan.window64, dtype=np.float64), axis=-1)
    calls = []
    as_strided = np.lib.stride_tricks.as_strided
    monkeypatch.setattr(np.lib.stride_tricks, "as_strided", lambda *a, **k: calls.append(1) or as_strided(*a, **k))
    assert np.array_equal(reconstruction._analyse(signal, c, plan, n_frames), want) and not calls
    wide = np.zeros((2, signal.shape[1] * 2), dtype=np.float32)
    wide[:, ::2] = signal  # a strided (not contiguous) signal: the as_strided route, the same frames
    assert np.array_equal(reconstruction._analyse(wide[:, ::2], c, plan, n_frames), want) and calls
