"""Discretization: exact gradient moments, rotations, ADC samples inside RF, windows, buckets."""

import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.timeline import adc_table, gradient_moments, gradient_table, rf_table, tables_shared
from tests.seqkit import IDEAL


def dense_integral(seq, a, b, n=200001):
    """Brute-force ∫G dt and ∫G (t - mid) dt on a fine grid holding every breakpoint and
    interval end (trapezoids are then exact for the piecewise-linear G; independent of the
    sparse maps)."""
    starts = seq.block_starts()
    corners = [starts[i] + np.asarray(ev.waveform()[0]) for i, blk in enumerate(seq.blocks)
               for ev in blk.gradients if ev is not None]
    t = np.unique(np.concatenate([np.linspace(0, seq.duration, n), a, b, *corners]))
    g = np.zeros((t.size, 3))
    for i, blk in enumerate(seq.blocks):
        for ax, ev in enumerate(blk.gradients):
            if ev is None:
                continue
            tt, w = ev.waveform()
            g[:, ax] += np.interp(t, starts[i] + np.asarray(tt), np.asarray(w), left=0, right=0)
    out0, out1 = [], []
    for lo, hi in zip(a, b):
        m = (t >= lo) & (t <= hi)
        mid = 0.5 * (lo + hi)
        out0.append(np.trapezoid(g[m], t[m], axis=0))
        out1.append(np.trapezoid(g[m] * (t[m] - mid)[:, None], t[m], axis=0))
    return np.array(out0), np.array(out1)


def test_gradient_moments_are_exact():
    rng = np.random.default_rng(0)
    arb = mt.ArbGrad("y", 1.0, rng.normal(size=37) * 1e-3, raster=10e-6, delay=20e-6, first=0.0, last=0.0)
    trap = mt.TrapGrad("x", 7e-3, 90e-6, 230e-6, 50e-6, delay=30e-6)
    ext = mt.make_extended_trapezoid("z", [0, 1e-4, 3e-4, 4e-4], [0, 5e-3, -2e-3, 0])
    seq = mt.Sequence([mt.Block(gx=trap, gy=arb, gz=ext), mt.Block(gx=trap, duration=5e-4)])
    a = np.array([0.0, 37e-6, 151e-6, 402e-6, 600e-6])
    b = np.array([37e-6, 151e-6, 402e-6, 600e-6, seq.duration])
    m0, m1 = gradient_moments(gradient_table(seq), a, b, first_moment=True)
    r0, r1 = dense_integral(seq, a, b)
    np.testing.assert_allclose(m0, r0, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(m1, r1, rtol=1e-6, atol=1e-18)  # trapezoids on t*G: O(dt^2)


def test_tables_are_built_once_per_sequence_inside_tables_shared_and_afresh_outside():
    seq = mt.sequences.gre(scanner=IDEAL, fov=0.2, matrix=8, flip_angle_deg=15.0, slice_thickness=5e-3)
    other = mt.Sequence(seq.blocks, seq.definitions)  # equal blocks, another object
    assert gradient_table(seq) is not gradient_table(seq)  # no scope: built each call
    with tables_shared():
        gt = gradient_table(seq)
        assert gradient_table(seq) is gt
        assert gradient_table(other) is not gt
        rt = rf_table(seq, 3.0, IDEAL.gamma_bar)
        assert rf_table(seq, 3.0, IDEAL.gamma_bar) is rt
        assert rf_table(seq, 1.5, IDEAL.gamma_bar) is not rt  # other arguments, other table
        assert adc_table(seq, 3.0, IDEAL.gamma_bar) is adc_table(seq, 3.0, IDEAL.gamma_bar)
        with tables_shared():  # a nested scope shares the outer one's tables
            assert gradient_table(seq) is gt
        b0 = jnp.asarray(3.0)  # not a plain number: not remembered
        assert rf_table(seq, b0, IDEAL.gamma_bar) is not rf_table(seq, b0, IDEAL.gamma_bar)
    fresh = gradient_table(seq)
    assert fresh is not gt
    for f in ("t0", "t1", "i0", "i1", "direction", "flat", "values", "block"):
        np.testing.assert_array_equal(getattr(fresh, f), getattr(gt, f))


def test_rotation_extension_rotates_gradients():
    # 90 degrees about z maps a logical x gradient onto physical y
    q = (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))
    gx = mt.TrapGrad("x", 5e-3, 50e-6, 400e-6, 50e-6)
    rf = mt.make_block_pulse(np.pi / 2, 1e-5, delay=0.0, scanner=IDEAL)
    adc = mt.ADC(16, 25e-6, delay=50e-6)
    rotated = mt.Sequence([mt.Block(rf=rf), mt.Block(gx=gx, adc=adc, extensions=(mt.Rotation(q),))])
    explicit = mt.Sequence([mt.Block(rf=rf),
                            mt.Block(gy=mt.TrapGrad("y", 5e-3, 50e-6, 400e-6, 50e-6), adc=adc)])
    np.testing.assert_allclose(rotated.kspace(), explicit.kspace(), atol=1e-9)
    twin = mt.Twin(position=[[0.01, 0.02, 0.0], [-0.03, 0.01, 0.0]], pd=[1, 1], t1=[1, 1], t2=[0.1, 0.1])
    a = mt.simulate(twin, rotated, dtype=jnp.float64, scanner=IDEAL).samples
    b = mt.simulate(twin, explicit, dtype=jnp.float64, scanner=IDEAL).samples
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


def test_adc_sample_inside_an_rf_pulse():
    # a 90-degree block pulse sampled half way: the spin has turned 45 degrees
    rf = mt.make_block_pulse(np.pi / 2, 1e-3, delay=0.0, scanner=IDEAL)
    adc = mt.ADC(1, 2e-6, delay=0.5e-3 - 1e-6)
    seq = mt.Sequence([mt.Block(rf=rf, adc=adc)])
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf])
    s = complex(mt.simulate(twin, seq, dtype=jnp.float64, scanner=IDEAL).samples[0, 0])
    np.testing.assert_allclose(s, 1j * np.sin(np.pi / 4), atol=1e-12)
    d = mt.discretize(seq, IDEAL, max_rf_dt=None)
    assert int((np.asarray(d.kind)[: d.n_real_steps] == 0).sum()) == 2  # the pulse is split there
    # by default the held sample is cut into 10 us steps, the sample on one of their edges
    d = mt.discretize(seq, IDEAL)
    kind = np.asarray(d.kind)[: d.n_real_steps]
    assert int((kind == 0).sum()) == 100 and np.asarray(d.dt)[: d.n_real_steps][kind == 0].max() <= 10e-6 + 1e-15
    end = (np.asarray(d.t) + np.asarray(d.dt))[: d.n_real_steps]
    np.testing.assert_allclose(end[np.asarray(d.sample)[: d.n_real_steps]], [0.5e-3], rtol=0, atol=1e-15)


def test_windows_buckets_and_step_counts():
    gx = mt.TrapGrad("x", 5e-3, 50e-6, 640e-6, 50e-6)
    adc = mt.ADC(64, 10e-6, delay=50e-6)
    rf = mt.make_block_pulse(0.2, 1e-4, delay=0.0, scanner=IDEAL)
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(gx=gx, adc=adc)] * 3)
    d = mt.discretize(seq, IDEAL, max_rf_dt=None)
    kinds = np.asarray(d.kind)[: d.n_real_steps]
    # per TR: 1 RF step, a free step up to the first sample, one window, the tail after it
    assert list(np.bincount(kinds, minlength=3)) == [3, 6, 3]
    assert d.n_window == 64 and np.asarray(d.count)[: d.n_real_steps][kinds == 2].tolist() == [63] * 3
    assert d.n_steps == 16 and d.n_steps >= d.n_real_steps  # padded to a bucket
    stepped = mt.discretize(seq, IDEAL, windows=False, max_rf_dt=None)
    assert stepped.n_window == 0 and stepped.n_real_steps == 3 * (1 + 64 + 1)
    # by default the 100 us pulse is 10 steps of 10 us
    d10 = mt.discretize(seq, IDEAL)
    assert list(np.bincount(np.asarray(d10.kind)[: d10.n_real_steps], minlength=3)) == [30, 6, 3]
    assert mt.discretize(seq, IDEAL, windows=False).n_real_steps == 3 * (10 + 64 + 1)
    np.testing.assert_allclose(np.asarray(d.dt).sum(), seq.duration - 3 * 63 * 10e-6 + 3 * 10e-6, rtol=1e-12)


def test_frequency_offsets_are_followed_by_the_frame():
    """Steps of a pulse with offset f carry -f dt as common phase and its envelope (not the
    modulated samples) as B1; the frame's phase Φ (f times each pulse's duration, summed)
    enters later pulses' B1, the demodulation and `frame_end`; pulses without offset
    leave everything as in the scanner's frame."""
    f1, f2, T = 1250.0, -400.0, 0.4e-3
    shape = np.hanning(42)[1:-1]  # 40 samples of 10 us: a smooth envelope
    rf1 = mt.make_arbitrary_rf(shape, flip_angle=0.3, raster=10e-6, delay=0.0, freq_offset=f1, scanner=IDEAL)
    rf2 = mt.make_arbitrary_rf(shape, flip_angle=0.3, raster=10e-6, delay=0.0, freq_offset=f2,
                               phase_offset=0.7, scanner=IDEAL)
    rf0 = mt.make_arbitrary_rf(shape, flip_angle=0.3, raster=10e-6, delay=0.0, scanner=IDEAL)
    adc = mt.ADC(4, 10e-6)
    seq = mt.Sequence([mt.Block(rf=rf1), mt.Block(adc=adc), mt.Block(rf=rf2), mt.Block(rf=rf0), mt.Block(adc=adc)])
    d = mt.discretize(seq, IDEAL, rf_dt=40e-6)
    n = d.n_real_steps
    kind, dt, t = np.asarray(d.kind)[:n], np.asarray(d.dt)[:n], np.asarray(d.t)[:n]
    cyc0, b1 = np.asarray(d.cyc0)[:n], np.asarray(d.b1dt)[:n]
    starts = seq.block_starts()
    in1, in2, in0 = ((kind == 0) & (t >= starts[i]) & (t < starts[i] + T - 1e-12) for i in (0, 2, 3))
    assert in1.sum() == in2.sum() == in0.sum() >= 10  # (groups of >= 40 us of the 400 us pulses)
    np.testing.assert_allclose(cyc0[in1], -f1 * dt[in1], rtol=1e-12)
    np.testing.assert_allclose(cyc0[in2], -f2 * dt[in2], rtol=1e-12)
    assert not cyc0[~(in1 | in2)].any()
    # B1: the envelope's 40 us averages, times exp(i(frame phase before the pulse - offset)) (conjugated)
    edges = np.round((t[in0] - starts[3]) / 10e-6).astype(int)  # each step's first sample
    env = mt.GAMMA_BAR * np.add.reduceat(np.abs(np.asarray(rf0.signal)), edges) * 10e-6
    phi1 = f1 * T  # the frame's phase after pulse 1 [cycles]
    np.testing.assert_allclose(b1[in1], env, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b1[in2], env * np.exp(-0.7j + 2j * np.pi * phi1), rtol=1e-12)
    np.testing.assert_allclose(b1[in0], env * np.exp(2j * np.pi * (phi1 + f2 * T)), rtol=1e-12)
    demod = np.asarray(d.demod)
    np.testing.assert_allclose(demod[:4], np.exp(-2j * np.pi * phi1), rtol=1e-12)
    np.testing.assert_allclose(demod[4:], np.exp(-2j * np.pi * (phi1 + f2 * T)), rtol=1e-12)
    assert abs(float(d.frame_end) - (phi1 + f2 * T) % 1.0) < 1e-12
    # no offset anywhere: the scanner's frame
    d0 = mt.discretize(mt.Sequence([mt.Block(rf=rf0), mt.Block(adc=adc)]), IDEAL, rf_dt=40e-6)
    assert float(d0.frame_end) == 0.0 and not np.asarray(d0.cyc0).any()
    np.testing.assert_allclose(np.asarray(d0.demod), 1.0)


def test_every_step_of_a_multislice_pulse_gets_its_own_slice_offset():
    """4 slices, RF grouped: each RF step's common phase is -f dt with the offset of the pulse
    it lies in, its first step included (whose start can sit a rounding below the pulse's),
    so the plays of each slice's pulse are identical and prepare as 4 pulses of 4 plays."""
    from mritwin.simulate.prepared_rf import plan_prepared_rf

    seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.22, matrix=16, flip_angle_deg=15, slice_thickness=5e-3,
                           n_slices=4, slice_gap=5e-3, dims=2)  # (the quick brain3d-ms scenario's)
    d = mt.discretize(seq, mt.Scanner(), rf_dt=50e-6)
    n = d.n_real_steps
    kind, dt, t = np.asarray(d.kind)[:n], np.asarray(d.dt)[:n], np.asarray(d.t)[:n]
    starts = seq.block_starts()
    rf_blocks = [(starts[i] + b.rf.delay, b.rf) for i, b in enumerate(seq.blocks) if b.rf is not None]
    assert len(rf_blocks) == 64 and len({round(rf.freq_offset, 6) for _, rf in rf_blocks}) == 4
    for s0, rf in rf_blocks:
        inside = (kind == 0) & (t >= s0 - 1e-9) & (t < s0 + rf.shape_duration - 1e-9)
        assert inside.sum() >= 40  # (2 ms in groups of >= 50 us)
        np.testing.assert_allclose(np.asarray(d.cyc0)[:n][inside], -rf.freq_offset * dt[inside], rtol=1e-12)
    _, table = plan_prepared_rf(d, kind_id=4, min_repeats=1)
    assert table is not None and table.dt.shape[0] == 4


def test_window_buffer_counts_the_engines_fused_rf_steps(monkeypatch):
    """Windows fall back to stepping when their output buffer (one row per simulator step)
    would pass `_MAX_WINDOW_BUFFER` entries. A shaped pulse's raster steps are applied 16 at
    a time by the engine (`Bloch.fuse_rf`), so they count as 16 times fewer rows: a GRE with
    a 2 ms sinc (2 000 raster steps per TR) keeps its windows at 128 x 128 (it was stepped
    sample by sample, 16x slower), and the engine's windows give stepping's samples."""
    import importlib

    import jax

    from mritwin.sequence.discretize import fuse_starts
    from mritwin.simulate import engine

    disc = importlib.import_module("mritwin.sequence.discretize")  # (the package exports the function)
    seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=20, slice_thickness=5e-3)
    plain = mt.discretize(seq, windows=False)
    m = plain.n_real_steps
    kind, dt = np.asarray(plain.kind)[:m], np.asarray(plain.dt)[:m]
    # the estimate removes what the engine's fusion removes (no samples or spoiling inside pulses here)
    sample, spoil = np.asarray(plain.sample)[:m].astype(bool), np.asarray(plain.spoil)[:m].astype(bool)
    for size in (2, 5, 16):
        fused = fuse_starts(kind, dt, sample, spoil, size)
        assert fused.size > 0
        assert disc._fused_away(kind == 0, dt, size) == fused.size * (size - 1)
    assert disc._fused_away(kind == 0, dt, 1) == 0
    n_rf = int((kind == 0).sum())

    # a bound between the fused and the raster-step buffers
    with_windows = mt.discretize(seq, rf_per_step=16)
    bound = (with_windows.n_real_steps - n_rf + n_rf // 16) * 8 * 2
    assert bound < m * 8
    monkeypatch.setattr(disc, "_MAX_WINDOW_BUFFER", bound)
    assert mt.discretize(seq).n_window == 0
    assert mt.discretize(seq, rf_per_step=16).n_window == 8
    assert engine._prepare(seq, mt.Scanner(), mt.Bloch())[0].n_window == 8
    assert engine._prepare(seq, mt.Scanner(), mt.Bloch(fuse_rf=1))[0].n_window == 0

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(2)
    n = 40
    twin = mt.Twin(position=np.c_[rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(-3e-3, 3e-3, n)],
                   pd=np.ones(n), t1=rng.uniform(0.5, 1.5, n), t2=rng.uniform(0.03, 0.2, n),
                   delta_f=rng.normal(0, 10, n))
    out = mt.simulate(twin, seq, dtype=jnp.float64)
    ref = mt.simulate(twin, seq, method=mt.Bloch(windows=False), dtype=jnp.float64)
    err = np.max(np.abs(np.asarray(out.samples) - np.asarray(ref.samples))) / np.max(np.abs(np.asarray(ref.samples)))
    assert err < 1e-10


def test_rf_dt_steps_last_rf_dt_from_the_shape_start():
    """``rf_dt`` groups raster samples into steps of rf_dt from the pulse's shape start
    (before 2026-12-06 the first step was one sample short and a 1-sample step was left)."""
    rf = mt.make_arbitrary_rf(np.hanning(100), flip_angle=np.pi / 2, raster=1e-6, delay=0.0,
                              use="excitation", scanner=IDEAL)
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 2e-6))])
    for rf_dt, want in ((10e-6, [10e-6] * 10), (20e-6, [20e-6] * 5), (30e-6, [30e-6] * 3 + [10e-6])):
        d = mt.discretize(seq, IDEAL, rf_dt=rf_dt, windows=False)
        n = d.n_real_steps
        kind = np.asarray(d.kind)[:n]
        np.testing.assert_allclose(np.asarray(d.dt)[:n][kind != 1], want, rtol=1e-9, err_msg=str(rf_dt))


def test_rf_shape_duration_cannot_cut_its_samples():
    """A shape period shorter than the samples would drop the samples past its end (a 90
    degree pulse played as ~25 degrees): a clear error instead. Equal, longer, and the
    rounding of n * raster are fine."""
    with pytest.raises(ValueError, match=r"RF.shape_duration 3e-05 s is shorter than 40 samples of 1e-06 s"):
        mt.RF(1e-6, np.ones(40), raster=1e-6, shape_duration=30e-6)
    with pytest.raises(ValueError, match=r"shorter than the last sample time 8e-05 s"):
        mt.RF(1e-6, np.ones(3), time=(20e-6, 50e-6, 80e-6), shape_duration=70e-6)
    for sd in (40 * 1e-6, 4e-5, 50e-6):
        assert mt.RF(1e-6, np.ones(40), raster=1e-6, shape_duration=sd).shape_duration == sd


def test_a_held_sample_is_cut_into_equal_steps():
    # 1.003 ms into 101 steps of 9.93 us, late in a sequence: equal to the rounding of the
    # absolute times (the cuts are not rounded to 1 ps, which would make them differ by
    # 1e-7 and break the runs of equal steps that the engine fuses)
    rf = mt.make_block_pulse(np.pi / 2, 1.003e-3, delay=0.0, scanner=IDEAL)
    seq = mt.Sequence([mt.Block(duration=7.3), mt.Block(rf=rf)])
    d = mt.discretize(seq, IDEAL)
    kind = np.asarray(d.kind)[: d.n_real_steps]
    dt = np.asarray(d.dt)[: d.n_real_steps][kind == 0]
    assert dt.size == 101 and np.ptp(dt) <= 16 * np.finfo(float).eps * 7.4
    np.testing.assert_allclose(dt.sum(), 1.003e-3, rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.asarray(d.b1dt)[: d.n_real_steps][kind == 0]).sum(), 0.25, rtol=1e-9)
