"""The fused Pallas kernel (``Bloch(kernel="pallas")``): checked against closed forms
(Ernst, FID decay and precession), against the XLA engine and the kernel's own XLA
reference, for derivatives, and lowered for CUDA (Triton). On the CPU the kernel runs in
Pallas's interpreter, which executes the same kernel program."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre
from mritwin.simulate import pallas_kernel as pk
from mritwin.simulate.kernels import Spins
from tests.seqkit import IDEAL, adc_at, build, csf_sinc_gre, hard, rf_at

PALLAS = mt.Bloch(kernel="pallas")


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _twin(n=300, seed=0, coils=False):
    rng = np.random.default_rng(seed)
    kw = {}
    if coils:
        kw["coil_sensitivity"] = rng.normal(size=(3, n)) + 1j * rng.normal(size=(3, n))
    return mt.Twin(position=rng.uniform(-0.1, 0.1, (n, 3)) * [1, 1, 0.02], pd=rng.uniform(0.5, 1, n),
                   t1=rng.uniform(0.3, 2, n), t2=rng.uniform(0.02, 0.2, n), delta_f=rng.normal(0, 30, n),
                   b1=rng.uniform(0.8, 1.2, n), **kw)


def _random_steps(n_steps=300, seed=1):
    rng = np.random.default_rng(seed)
    kind = np.ones(n_steps, np.int32)
    kind[:20] = 0
    kind[150:160] = 0
    dt = np.full(n_steps, 1e-5, np.float32)
    k = rng.normal(0, 5, (n_steps, 3)).astype(np.float32)
    b1dt = np.where(kind == 0, 0.0125 * np.exp(1j * rng.uniform(0, 6, n_steps)), 0).astype(np.complex64)
    sample = (kind == 1) & (np.arange(n_steps) % 3 == 0)
    slot = np.where(sample, np.cumsum(sample) - 1, -1)
    spoil = np.zeros(n_steps, np.int32)
    spoil[150] = 1
    c0 = rng.normal(0, 0.1, n_steps).astype(np.float32)
    return pk._step_arrays(dt, k, b1dt, kind, slot, spoil, c0), int(sample.sum())


def _with_prepared(steps, length=24, seed=2):
    """``(steps, pulse)``: `_random_steps`' steps with six free steps without a sample
    turned into plays of two random pulses (kind PREPARED, ``dt`` the pulse's row: 0, 1,
    0, 1, 1, 0, random phase offsets) of ``length`` and ``length - 5`` raster steps (the
    shorter row zero padded), and the pulses' rasters (2, length)."""
    rng = np.random.default_rng(seed)
    st = [np.asarray(a).copy() for a in steps]
    at = np.arange(41, 290, 42)  # the plays
    assert np.all(st[8][at] < 0) and np.all(st[7][at] == pk.FREE)
    st[7][at] = pk.PREPARED
    st[0][at] = [0, 1, 0, 1, 1, 0]  # the pulses' rows
    ph = rng.uniform(0, 2 * np.pi, at.size)
    st[4][at], st[5][at] = np.cos(ph), np.sin(ph)
    b1 = 0.01 * np.sinc(np.linspace(-2, 2, length)) * np.exp([[0.3j], [1.1j]]) * [[1.0], [0.7]]
    dt = np.full((2, length), 1e-5)
    dt[1, length - 5:] = 0.0
    b1[1, length - 5:] = 0.0
    pulse = (dt, np.zeros((2, length)), np.zeros((2, length)),
             rng.normal(0, 20, (2, length)) * (dt > 0), b1.real, b1.imag, rng.normal(0, 0.01, (2, length)) * (dt > 0))
    return tuple(jnp.asarray(a) for a in st), tuple(jnp.asarray(a, jnp.float32) for a in pulse)


def _spins(n=512, seed=0, n_coils=0):
    rng = np.random.default_rng(seed)

    def f(a):
        return jnp.asarray(a, jnp.float32)

    cre = cim = None
    if n_coils:
        cre, cim = f(rng.normal(size=(n_coils, n))), f(rng.normal(size=(n_coils, n)))
    return Spins(x=f(rng.uniform(-0.1, 0.1, n)), y=f(rng.uniform(-0.1, 0.1, n)), z=f(rng.uniform(-0.01, 0.01, n)),
                 pd=f(rng.uniform(0, 1, n)), r1=f(1 / rng.uniform(0.3, 2, n)), r2=f(1 / rng.uniform(0.02, 0.2, n)),
                 df=f(rng.normal(0, 20, n)), b1=f(rng.uniform(0.8, 1.2, n)), coil_re=cre, coil_im=cim)


@pytest.mark.parametrize("n_coils,sincos,prepared", [(0, "reduced", False), (2, "libdevice", False),
                                                     (2, "poly", False), (2, "reduced", True)])
def test_kernel_matches_its_xla_reference(n_coils, sincos, prepared):
    # random RF and free steps with B1 phases, gradients, a spoiling step and a common
    # phase per step; several blocks of spins; both sine/cosine variants; plays of a
    # prepared pulse with phase offsets (the reference: prepared_rf's map)
    steps, n_slots = _random_steps()
    pulse = None
    if prepared:
        steps, pulse = _with_prepared(steps)
    sp = _spins(n_coils=n_coils)
    sig, mag = pk.pallas_signal(sp, steps, pulse, n_slots=n_slots, block=128, interpret=True, sincos=sincos)
    ref, mag_ref = pk.stepped_xla(sp, steps, pulse, n_slots=n_slots)
    assert sig.shape == ref.shape == (max(n_coils, 1), n_slots)
    assert _rel(sig, ref) < 1e-5
    assert float(jnp.max(jnp.abs(mag - mag_ref))) < 1e-5


def test_prepared_maps_are_prepared_rf_maps():
    # the preparing kernel's maps against the XLA engine's (`prepared_rf.prepare_pulse`),
    # for each of two pulses of different lengths and every spin of two blocks, in the
    # layout the stepping kernel reads: column c of pulse p of block b at
    # maps[c][b, p * block:(p + 1) * block], columns A e_x, A e_y, A e_z, b
    from mritwin.simulate import kernels
    from mritwin.simulate.prepared_rf import prepare_pulse

    block = 128
    _, pulse = _with_prepared(_random_steps()[0])
    sp = _spins(n=2 * block)
    maps = pk._prepare_maps([getattr(sp, f) for f in pk._SPIN_FIELDS], pulse, block=block, interpret=True,
                            sincos="libdevice")
    assert len(maps) == 12 and all(m.shape == (2, 2 * block) for m in maps)
    sp_ext = sp._replace(extent=kernels.spin_extent(sp))
    for p in range(2):
        dt, kx, ky, kz, bre, bim, c0 = (np.asarray(a)[p] for a in pulse)
        ref = prepare_pulse(sp_ext, jnp.asarray(dt), jnp.asarray(np.stack([kx, ky, kz], -1)),
                            jnp.asarray(bre + 1j * bim, jnp.complex64), jnp.asarray(c0))
        want = [ref.a[i][j] for j in range(3) for i in range(3)] + list(ref.b)
        for c in range(12):
            got = np.asarray(maps[c])[:, p * block:(p + 1) * block].reshape(-1)
            # (float32, two orders of operations: 1.6e-6 at most, on entries up to ~2)
            np.testing.assert_allclose(got, np.asarray(want[c]), rtol=0, atol=3e-6)
    # the pulses rotate far (A - I reaches 1.8 in these random pulses: a test of the layout)
    assert float(jnp.max(jnp.abs(maps[0][:, :block] - 1.0))) > 0.5


def _repeating_steps():
    """Steps whose factors repeat in stretches: `_random_steps` with one gradient and phase
    over steps 200-399 (a readout), dt changed over 300-349 and on some RF steps."""
    steps, n_slots = _random_steps(600)
    st = [np.asarray(a).copy() for a in steps]
    for j in (1, 2, 3, 6):  # kx, ky, kz, c0
        st[j][200:400] = st[j][200]
    st[0][300:350] = 2e-5
    st[0][5:10] = 3e-6
    return tuple(jnp.asarray(a) for a in st), n_slots


def test_free_step_factors_are_the_closed_form():
    """A free step's change of ``mx + i my`` (`_SpinArithmetic.transverse_factors`, from
    ``sin θ``, ``cos θ - 1`` and ``exp(-dt/T2) - 1``) is ``(cos θ e^{-dt/T2} - 1, sin θ
    e^{-dt/T2})``, and `free_change` precesses and relaxes as the closed form does."""
    rng = np.random.default_rng(4)
    th = rng.uniform(-np.pi, np.pi, 64)
    r2, r1, dt = rng.uniform(1, 50, 64), rng.uniform(0.2, 5, 64), rng.uniform(1e-6, 0.05, 64)
    e2, e1 = np.expm1(-dt * r2), np.expm1(-dt * r1)
    a, b = pk._SpinArithmetic.transverse_factors(np.sin(th), -2 * np.sin(th / 2) ** 2, e2)
    np.testing.assert_allclose(a, np.cos(th) * np.exp(-dt * r2) - 1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b, np.sin(th) * np.exp(-dt * r2), rtol=1e-12, atol=1e-15)
    pd = rng.uniform(0.5, 1, 64)
    ops = pk._SpinArithmetic(*(np.zeros(64),) * 3, pd, r1, r2, np.zeros(64), np.ones(64), "libdevice")
    m = rng.normal(size=(3, 64))
    d = ops.free_change(tuple(m), a, b, e1)
    mxy = (m[0] + 1j * m[1]) * np.exp(-1j * th) * np.exp(-dt * r2)  # left-handed precession
    np.testing.assert_allclose(m[0] + d[0] + 1j * (m[1] + d[1]), mxy, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m[2] + d[2], pd + (m[2] - pd) * np.exp(-dt * r1), rtol=1e-12, atol=1e-14)


def test_reduced_sincos_is_as_accurate_as_libm():
    """`sincos_reduced` (the kernel's default sine/cosine): within 1e-7 of float64 over
    the half cycle it is given, and no further from it than float32 ``sin``/``cos`` of the
    rounded angle; its folds (at 1/8, 1/4 and 1/2 cycle) keep the signs and are
    continuous."""
    y = np.linspace(-0.5, 0.5, 200001).astype(np.float32)
    s, c = (np.asarray(a, np.float64) for a in jax.jit(pk.sincos_reduced)(jnp.asarray(y)))
    ts, tc = np.sin(2 * np.pi * y.astype(np.float64)), np.cos(2 * np.pi * y.astype(np.float64))
    x = np.float32(2 * np.pi) * y
    ref_s = np.abs(np.sin(x).astype(np.float64) - ts).max()
    ref_c = np.abs(np.cos(x).astype(np.float64) - tc).max()
    assert np.abs(s - ts).max() <= min(1e-7, ref_s) and np.abs(c - tc).max() <= min(1e-7, ref_c)
    assert np.sqrt(np.mean((s - ts) ** 2)) < 3e-8 and np.sqrt(np.mean((c - tc) ** 2)) < 3e-8
    for edge in (0.125, 0.25, 0.5):  # both sides of each fold
        e = np.array([np.nextafter(np.float32(edge), np.float32(0)), np.float32(edge)], np.float32)
        for v in (e, -e):
            s, c = (np.asarray(a, np.float64) for a in pk.sincos_reduced(jnp.asarray(v)))
            np.testing.assert_allclose(s, np.sin(2 * np.pi * v.astype(np.float64)), atol=1e-7)
            np.testing.assert_allclose(c, np.cos(2 * np.pi * v.astype(np.float64)), atol=1e-7)


def test_fresh_marks_the_factors_that_change():
    # `_fresh` against a loop over the steps: a free step's relaxation is computed when its
    # dt differs from the previous free step's, its rotation when dt, k or c0 does, an RF
    # step's relaxation when its dt differs from the previous RF step's
    steps, _ = _repeating_steps()
    fresh = np.asarray(pk._fresh(steps))
    dt, kx, ky, kz, _, _, c0, kind = (np.asarray(a) for a in steps[:8])
    want = np.zeros_like(fresh)
    last_free = last_rf = None
    for i in range(dt.size):
        if kind[i] == 0:
            want[i] = pk._RF_RELAX if last_rf is None or dt[i] != dt[last_rf] else 0
            last_rf = i
        else:
            key = (dt[i], kx[i], ky[i], kz[i], c0[i])
            old = None if last_free is None else (dt[last_free], kx[last_free], ky[last_free], kz[last_free],
                                                  c0[last_free])
            want[i] = (pk._FREE_RELAX if old is None or dt[i] != old[0] else 0) | (pk._FREE_ROT if key != old else 0)
            last_free = i
    np.testing.assert_array_equal(fresh, want)
    # the stretch's rotation is reused, and both kinds' relaxation nearly everywhere
    assert ((fresh & pk._FREE_ROT) != 0).sum() < 400
    assert ((fresh & (pk._FREE_RELAX | pk._RF_RELAX)) != 0).sum() == 6


def test_reused_factors_equal_recomputed_ones(monkeypatch):
    # reusing a step's factors gives the result of computing them at every step: bit for
    # bit against the same program with every factor marked fresh, and to float rounding
    # against the kernel without reuse (another program: XLA compiles it differently)
    steps, n_slots = _repeating_steps()
    sp = _spins(n=256, n_coils=2)
    run = functools.partial(pk.pallas_signal, sp, steps, n_slots=n_slots, block=128, interpret=True)
    sig, mag = run()
    plain, plain_mag = run(reuse=False)
    monkeypatch.setattr(pk, "_fresh", lambda st: jnp.full(st[0].shape, 7, jnp.int32))
    every, every_mag = run()
    np.testing.assert_array_equal(np.asarray(sig), np.asarray(every))
    np.testing.assert_array_equal(np.asarray(mag), np.asarray(every_mag))
    assert _rel(sig, plain) < 2e-6
    assert float(jnp.max(jnp.abs(mag - plain_mag))) < 2e-6


def _slab_twin(n=256, seed=3):
    """Spins over 4 cm in z (several slices), with B1+ and off-resonance."""
    rng = np.random.default_rng(seed)
    return mt.Twin(position=np.c_[rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(-0.02, 0.02, n)],
                   pd=rng.uniform(0.5, 1, n), t1=rng.uniform(0.3, 2, n), t2=rng.uniform(0.02, 0.2, n),
                   delta_f=rng.normal(0, 20, n), b1=rng.uniform(0.9, 1.1, n))


def test_sequential_slices_prepare_each_pulse_once():
    # a 2D multi-slice GRE plays all TRs of one slice, then the next: each slice's sinc (its
    # own frequency offset) is one prepared pulse, and no RF raster step is left; against
    # float64 it is as close as stepping every pulse and as the XLA engine in float32 (all
    # three 2.8e-5 of the peak: rounding)
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3,
                           n_slices=3, slice_gap=5e-3, dims=2)
    steps, pulse, _, _ = pk.kernel_steps(mt.discretize(seq, scanner, windows=False))
    kind = np.asarray(steps[7])
    assert pulse[0].shape[0] == 3
    assert (kind == pk.PREPARED).sum() == 24 and (kind == pk.RF).sum() == 0
    np.testing.assert_array_equal(np.asarray(steps[0])[kind == pk.PREPARED], np.repeat([0, 1, 2], 8))
    twin = _slab_twin()
    out = mt.simulate(twin, seq, scanner=scanner, method=PALLAS)
    stepped = mt.simulate(twin, seq, scanner=scanner, method=mt.Bloch(kernel="pallas", prepare_pulses=False))
    ref = mt.simulate(twin, seq, scanner=scanner)
    exact = mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64)
    for sig in (out, stepped, ref):
        assert _rel(sig.samples, exact.samples) < 5e-5
    assert _rel(out.samples, stepped.samples) < 5e-5


def test_alternating_pulses_are_all_prepared():
    # pulses whose plays alternate -- a 30 deg and a 60 deg sinc TR by TR (like the
    # excitation and refocusing of a spin echo, or interleaved slices) -- are each prepared
    # once, before the steps: no RF raster step is left, and the result equals the XLA
    # engine's and, to float32 rounding, float64's
    scanner = IDEAL
    blocks = []
    for i in range(8):
        rf, gz, gzr = mt.make_sinc_pulse(np.radians(30 if i % 2 == 0 else 60), 1e-3, slice_thickness=5e-3,
                                         scanner=scanner)
        gx = mt.make_trapezoid("x", area=8 / 0.2, flat_time=8 * 20e-6, scanner=scanner)
        blocks += [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr), mt.Block(gx=gx, adc=mt.ADC(8, 20e-6, delay=gx.rise_time)),
                   mt.Block(delay=5e-3)]
    seq = mt.Sequence(blocks)
    dseq = mt.discretize(seq, scanner, windows=False)
    steps, pulse, _, _ = pk.kernel_steps(dseq)
    kind = np.asarray(steps[7])
    assert pulse[0].shape[0] == 2 and (kind == pk.PREPARED).sum() == 8 and (kind == pk.RF).sum() == 0
    assert sorted(np.asarray(steps[0])[kind == pk.PREPARED].tolist()) == [0] * 4 + [1] * 4
    twin = _slab_twin()
    out = mt.simulate(twin, seq, scanner=scanner, method=PALLAS)
    ref = mt.simulate(twin, seq, scanner=scanner)
    exact = mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64)
    assert _rel(out.samples, ref.samples) < 2e-5
    assert _rel(out.samples, exact.samples) < 2e-5


def test_chunks_leave_room_for_the_prepared_maps():
    # a chunk's partial signals and prepared maps (48 bytes per spin and pulse, pulses
    # rounded up to a power of two) stay under 256 MB; chunks stay multiples of the block
    for n_pulses in (0, 1, 3, 8):
        for n_slots in (100, 40_000):
            chunk = pk.pallas_chunk(50_000_000, 2, n_slots, 64, n_pulses)
            width = pk._next_pow2(n_slots)
            maps = 48 * pk._next_pow2(n_pulses) * chunk if n_pulses else 0
            assert chunk % 64 == 0 and chunk > 0
            assert (chunk // 64) * 2 * width * 8 + maps <= 1 << 28
    assert pk.pallas_chunk(50_000_000, 1, 100, 64, 8) < pk.pallas_chunk(50_000_000, 1, 100, 64, 0)
    assert pk.pallas_chunk(1000, 1, 100, 64, 8) == 1024  # small chunks: only rounded up to the block


def test_a_spin_echo_from_pypulseq_prepares_both_pulses(seq_dir):
    # pypulseq's spin echo (a 90 and a 180 deg sinc, alternating at every TR: the first
    # kernel design prepared only one of them and stepped the other's 2 499-step raster
    # 32 times): both are prepared, no RF raster step is left (the loop 145 025 stepped
    # steps -> 1 153), and the echoes equal the XLA engine's and float64's
    seq = mt.read_seq(seq_dir / "pypulseq_se.seq")
    scanner = mt.Scanner()
    dseq = mt.discretize(seq, scanner, windows=False)
    steps, pulse, _, _ = pk.kernel_steps(dseq)
    kind = np.asarray(steps[7])
    rows = np.asarray(steps[0])[kind == pk.PREPARED]
    assert pulse[0].shape[0] == 2 and (kind == pk.RF).sum() == 0
    assert np.count_nonzero(rows[1:] != rows[:-1]) == rows.size - 1  # they alternate
    rng = np.random.default_rng(5)
    n = 256
    twin = mt.Twin(position=np.c_[rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(-4e-3, 4e-3, n)],
                   pd=rng.uniform(0.5, 1, n), t1=rng.uniform(0.3, 2, n), t2=rng.uniform(0.02, 0.2, n),
                   delta_f=rng.normal(0, 20, n))
    out = mt.simulate(twin, seq, scanner=scanner, method=PALLAS)
    ref = mt.simulate(twin, seq, scanner=scanner)
    exact = mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64)
    # (measured: the kernel 1.7e-6 of the peak, the XLA engine 1.4e-6, the kernel with
    # both pulses stepped 2.3e-6)
    assert _rel(out.samples, exact.samples) < 1e-5
    assert _rel(ref.samples, exact.samples) < 1e-5


def test_the_loop_stops_before_the_padding(monkeypatch):
    # a DiscreteSequence is padded to its length bucket with free steps of 0 s, which
    # change nothing: the kernel's loop ends at the last real step, with the same result
    # bit for bit as looping over the padding
    scanner = mt.Scanner()
    seq = cartesian_gre(12, 0.2, tr=8e-3, te=3e-3)  # 168 steps in a bucket of 176
    dseq = mt.discretize(seq, scanner, windows=False, max_rf_dt=None)  # (hard pulses as one step)
    steps, pulse, slot_of_sample, n_slots = pk.kernel_steps(dseq)
    n_real = int(dseq.n_real_steps)
    assert steps[0].shape[0] > n_real  # (this sequence is padded)
    assert int(pk._loop_length(steps)[0]) == n_real
    sp = _spins(n=256)
    run = functools.partial(pk.pallas_signal, sp, steps, pulse, n_slots=n_slots, block=128, interpret=True)
    sig, mag = run()
    monkeypatch.setattr(pk, "_loop_length", lambda st: jnp.full((1,), st[0].shape[0], jnp.int32))
    every, every_mag = run()
    np.testing.assert_array_equal(np.asarray(sig), np.asarray(every))
    np.testing.assert_array_equal(np.asarray(mag), np.asarray(every_mag))


@pytest.mark.parametrize("compensate", [False, True])
def test_float32_relaxation_in_microsecond_steps(compensate):
    # a 90 deg RF step, then 20 000 free steps of 1 us in float32: Mz recovers as
    # 1 - exp(-t/T1) and |Mxy| decays as exp(-t/T2), to 1e-4 of the change. The kernel
    # adds each step's change, relaxation from expm1, as the XLA engine does
    # (tests/physics/test_free_precession.py); multiplying by exp(-dt/T1) = 1 - 1e-6, a few
    # ulps of 1 in float32, recovered Mz 4.6 % wrong at T1 = 4 s (the kernel before 2026-12-05)
    t1 = np.tile([0.3, 1.0, 2.0, 4.0], 8)
    t2 = np.tile([0.05, 0.1, 0.05, 0.08], 8)
    n, dt, n_free = t1.size, 1e-6, 20000
    zero = jnp.zeros(n, jnp.float32)
    sp = Spins(x=zero, y=zero, z=zero, pd=zero + 1, r1=jnp.asarray(1 / t1, jnp.float32),
               r2=jnp.asarray(1 / t2, jnp.float32), df=zero, b1=zero + 1, coil_re=None, coil_im=None)
    kind = np.ones(n_free + 1, np.int32)
    kind[0] = 0
    dts = np.full(n_free + 1, dt, np.float32)
    dts[0] = 0.0  # the RF step: a rotation of 1/4 cycle, no relaxation
    b1dt = np.zeros(n_free + 1, np.complex64)
    b1dt[0] = 0.25
    slot = np.full(n_free + 1, -1)
    slot[-1] = 0
    steps = pk._step_arrays(dts, np.zeros((n_free + 1, 3), np.float32), b1dt, kind, slot,
                            np.zeros(n_free + 1, np.int32), np.zeros(n_free + 1, np.float32))
    _, mag = pk.pallas_signal(sp, steps, n_slots=1, block=32, interpret=True, compensate=compensate)
    mag = np.asarray(mag, float)
    t = n_free * dt
    np.testing.assert_allclose(mag[:, 2], 1 - np.exp(-t / t1), rtol=1e-4, atol=0)
    np.testing.assert_allclose(1 - np.hypot(mag[:, 0], mag[:, 1]), 1 - np.exp(-t / t2), rtol=1e-4, atol=0)


@pytest.mark.parametrize("compensate,prepare", [(False, False), (True, False), (False, True)])
def test_float32_gre_with_a_shaped_pulse_matches_float64(compensate, prepare):
    """The library's GRE (a 2 ms sinc on its 1 us raster, 32 TRs, RF spoiling: 65 025
    stepped steps) on CSF-like spins (T1 4 s, T2 2 s), the kernel in float32 against the
    XLA engine in float64: within 1.5e-4 of the peak (measured 8.1e-5; 4.1e-5 with
    ``compensate``; 4.0e-5 with the pulse prepared, 1 152 steps). While the kernel
    multiplied by ``cos θ`` and ``exp(-dt/T)`` (both within ulps of 1 for a raster step,
    rounded alike at every step) it was 6.1e-4 off."""
    twin, seq, scanner = csf_sinc_gre()
    s64 = np.asarray(mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64).samples)
    stepped = mt.discretize(seq, scanner, windows=False)
    steps, pulse, slot_of_sample, n_slots = pk.kernel_steps(stepped, spoiling=False, prepare=prepare)
    assert (pulse is not None) == prepare
    from mritwin.simulate.engine import _pack_spins
    spins, _ = _pack_spins(twin, None, 32, jnp.float32, 1)
    s32, _ = pk.pallas_core(spins, steps, jnp.asarray(slot_of_sample), jnp.asarray(stepped.demod, jnp.complex64),
                            pulse, n_slots=n_slots, block=32, interpret=True, want_mag=False, compensate=compensate)
    err = np.abs(np.asarray(s32)[0] - s64[0]).max() / np.abs(s64).max()
    assert err < (1e-4 if compensate or prepare else 1.5e-4)


def test_prepared_pulse_equals_stepping_it():
    # the library's GRE (a 2 ms sinc per TR, RF spoiling: every play another phase offset)
    # on spins spread across the 5 mm slice with B1+, off-resonance and coil maps: the
    # kernel steps the sinc once per program into each spin's affine map and applies it at
    # the 16 plays; the result equals stepping every raster step (the kernel with
    # prepare_pulses=False) and the XLA engine (its own prepared pulses) to float rounding.
    # The state at the end: each float32 result is ~4.6e-5 off the float64 engine (the
    # rounding of ~32 000 raster steps); preparing adds none of its own. (The two float32
    # states agreed to 9e-6 with LLVM at -O1 and to 2.4e-5 at -O0, tests/conftest.py:
    # rounding that two float32 paths share depends on the compiler, so each is compared
    # with float64.)
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=16, flip_angle_deg=30, slice_thickness=5e-3)
    twin = _twin(n=256, coils=True)
    steps, pulse, _, _ = pk.kernel_steps(mt.discretize(seq, scanner, windows=False))
    kind = np.asarray(steps[7])
    assert pulse is not None and pulse[0].size >= 1000  # the sinc's raster steps
    assert (kind == pk.PREPARED).sum() == 16 and (kind == pk.RF).sum() == 0
    kw = dict(scanner=scanner, return_magnetization=True)
    out = mt.simulate(twin, seq, method=PALLAS, **kw)
    stepped = mt.simulate(twin, seq, method=mt.Bloch(kernel="pallas", prepare_pulses=False), **kw)
    ref = mt.simulate(twin, seq, **kw)
    assert _rel(out.samples, stepped.samples) < 2e-5
    assert _rel(out.samples, ref.samples) < 2e-5
    exact = np.asarray(mt.simulate(twin, seq, dtype=jnp.float64, **kw).magnetization)
    err_prepared = float(np.max(np.abs(np.asarray(out.magnetization) - exact)))
    err_stepped = float(np.max(np.abs(np.asarray(stepped.magnetization) - exact)))
    assert err_stepped < 1e-4  # float32 rounding of the stepped pulses (|M| <= 1)
    assert err_prepared <= 1.1 * err_stepped


def test_ernst_steady_state_with_ideal_spoiling():
    # PHYSICS.md 5: S = sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2), exact with ideal spoiling
    t1, t2, tr, te, a = 1.0, 0.1, 0.02, 0.003, np.radians(20)
    one_tr = build([rf_at(1e-6, hard(a, 2e-6)), adc_at(1e-6 + te)], total=tr)
    seq = one_tr
    for _ in range(199):
        seq = seq + one_tr
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2])
    sig = mt.simulate(twin, seq, scanner=IDEAL, method=mt.Bloch(kernel="pallas", ideal_spoiling=True))
    e1 = np.exp(-tr / t1)
    ernst = np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te / t2)
    np.testing.assert_allclose(abs(complex(sig.samples[0, -1])), ernst, rtol=1e-4)


def test_fid_decays_and_precesses_in_closed_form():
    # a 90 deg hard pulse, then an FID: |s(t)| = pd exp(-t/T2), phase advancing by
    # -2 pi df dwell per sample (left-handed frame, kernels.py)
    t2, df, dwell, n = 0.05, 40.0, 1e-4, 64
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[0.7], t1=[1.0], t2=[t2], delta_f=[df])
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, 1e-6)), mt.Block(adc=mt.ADC(n, dwell))])
    sig = mt.simulate(twin, seq, scanner=IDEAL, method=PALLAS)
    s = np.asarray(sig.samples[0])
    t = np.asarray(sig.time) - 0.5e-6  # from the centre of the pulse
    np.testing.assert_allclose(np.abs(s), 0.7 * np.exp(-t / t2), rtol=1e-5)
    dphi = np.angle(s[1:] / s[:-1])
    np.testing.assert_allclose(dphi, -2 * np.pi * df * dwell, atol=1e-5)


@pytest.mark.parametrize("case", ["coils-b1", "motion", "rotation", "shaped-rf"])
def test_simulate_matches_the_xla_engine(case):
    twin = _twin(coils=case == "coils-b1")
    motion = None
    if case == "shaped-rf":  # a slice-selective sinc stepped raster sample by raster sample
        rf, gz, gzr = mt.make_sinc_pulse(np.pi / 2, 2e-3, slice_thickness=5e-3, scanner=IDEAL)
        gx = mt.make_trapezoid("x", area=32 / 0.2, flat_time=32 * 20e-6, scanner=IDEAL)
        seq = mt.Sequence([mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr),
                           mt.Block(gx=gx, adc=mt.ADC(32, 20e-6, delay=gx.rise_time))])
        scanner = IDEAL
    else:
        seq = cartesian_gre(16, 0.2, tr=8e-3, te=3e-3)
        scanner = mt.Scanner()
        if case == "motion":
            motion = mt.Translation(velocity=(0.02, -0.01, 0.0))
        if case == "rotation":  # rotations turn the gradients in the twin's frame, step by step
            motion = mt.RigidPath(times=[0.0, 0.2], translations=np.zeros((2, 3)),
                                  rotations=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]))
    kw = dict(scanner=scanner, motion=motion, return_magnetization=True)
    ref = mt.simulate(twin, seq, **kw)
    out = mt.simulate(twin, seq, method=PALLAS, **kw)
    assert out.samples.shape == ref.samples.shape
    assert _rel(out.samples, ref.samples) < 1e-4
    assert float(np.max(np.abs(np.asarray(out.magnetization) - np.asarray(ref.magnetization)))) < 1e-4
    np.testing.assert_array_equal(out.time, ref.time)


def test_several_chunks_and_padding():
    # 1000 spins in chunks of 256: four kernel launches, the last one padded
    twin = _twin(n=1000)
    seq = cartesian_gre(8, 0.2, tr=8e-3, te=3e-3)
    ref = mt.simulate(twin, seq)
    out = mt.simulate(twin, seq, method=mt.Bloch(kernel="pallas", chunk_size=256), return_magnetization=True)
    assert _rel(out.samples, ref.samples) < 1e-4
    assert out.magnetization.shape == (1000, 3)


@pytest.mark.slow
@pytest.mark.parametrize("pulse", ["hard", "prepared-sinc"])
def test_derivatives_are_the_xla_engines(pulse):
    # the kernel's tangents come from its XLA reference: grad through kernel='pallas'
    # equals grad through the XLA engine (both float32), and float64 central differences;
    # also through a prepared pulse (the library's GRE: a sinc played at every TR)
    twin = _twin(n=256)
    if pulse == "hard":
        seq = cartesian_gre(8, 0.2, tr=8e-3, te=3e-3)
    else:
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3)
        assert pk.kernel_steps(mt.discretize(seq, mt.Scanner(), windows=False))[1] is not None

    def loss(t2, method, dtype=jnp.float32):
        return jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=t2), seq, method=method, dtype=dtype).samples) ** 2)

    t2 = jnp.asarray(twin.t2, jnp.float32)
    g_pallas = jax.grad(loss)(t2, PALLAS)
    g_xla = jax.grad(loss)(t2, mt.Bloch(windows=False))
    assert _rel(g_pallas, g_xla) < 1e-3
    t2_64 = jnp.asarray(twin.t2, jnp.float64)
    e = jnp.zeros_like(t2_64).at[7].set(1e-5)
    stepped = mt.Bloch(windows=False)
    fd = (loss(t2_64 + e, stepped, jnp.float64) - loss(t2_64 - e, stepped, jnp.float64)) / 2e-5
    np.testing.assert_allclose(float(g_pallas[7]), float(fd), rtol=1e-3)


@pytest.mark.parametrize("config", [(256, 4, "libdevice", False, True, True),
                                    (*pk.launch_config(interpret=False), pk.DEFAULT_SINCOS, False, True, True),
                                    (64, 1, "poly", False, True, False), (64, 1, "libdevice", True, True, True),
                                    (64, 1, "libdevice", False, False, False)])
def test_lowers_to_a_triton_kernel_for_cuda(config):
    # the GPU program (also with the launch configuration simulate uses on a GPU): lowered
    # here without a GPU (jaxlib carries the Triton dialect); compiling it to PTX needs the
    # CUDA plugin, so that part is checked on a GPU only (benchmarks/gpu_check.sh)
    block, warps, sincos, compensate, reuse, prepared = config
    steps, n_slots = _repeating_steps()
    pulse = None
    if prepared:
        steps, pulse = _with_prepared(steps)
    sp = _spins(n=512, n_coils=2)
    fn = jax.jit(lambda sp, st, pulse: pk._pallas_forward(sp, st, pulse, n_slots=n_slots, block=block,
                                                          interpret=False, num_warps=warps, sincos=sincos,
                                                          compensate=compensate, reuse=reuse))
    try:
        text = fn.trace(sp, steps, pulse).lower(lowering_platforms=("cuda",)).as_text()
    except ImportError as e:  # a jaxlib build without the Triton dialect; any other error fails
        pytest.skip(f"this jaxlib has no Triton dialect to lower Pallas for CUDA: {e}")
    assert "triton" in text  # one custom call holding the Triton module
    # the relaxation's libdevice call, named in the module (Triton links CUDA's libdevice):
    # 1 - exp(-dt/T) from expm1, no exp
    assert "__nv_expm1f" in text and "__nv_expf" not in text


def test_bad_options_are_refused():
    steps, n_slots = _random_steps(200)
    with pytest.raises(ValueError, match="sincos must be one of"):
        pk.pallas_signal(_spins(n=64), steps, n_slots=n_slots, block=64, sincos="fast")
    with pytest.raises(ValueError, match="kernel must be"):
        mt.Bloch(kernel="cuda")
    with pytest.raises(ValueError, match="reversible"):
        mt.Bloch(kernel="pallas", reversible=True)
    with pytest.raises(ValueError, match="readout"):
        mt.Bloch(kernel="pallas", readout=mt.NUFFTReadout(1e-4))
    twin = _twin(n=16)
    seq = cartesian_gre(4, 0.2)
    with pytest.raises(ValueError, match="float32"):
        mt.simulate(twin, seq, method=PALLAS, dtype=jnp.float64)
    windowed = mt.discretize(seq, mt.Scanner())  # ADC windows: not a stepped sequence
    with pytest.raises(ValueError, match="stepped sequence"):
        mt.simulate(twin, windowed, method=PALLAS)
    flow = mt.twin.dynamics.Flow(velocity=np.zeros((16, 3)))
    with pytest.raises(NotImplementedError, match="dynamics"):
        mt.simulate(twin, seq, method=PALLAS, dynamics=flow)


def test_sharded_over_four_devices_equals_one():
    script = pathlib.Path(__file__).with_name("_pallas_sharding_check.py")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=root,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(line.split("=", 1) for line in r.stdout.split())
    assert float(out["rel_diff"]) < 1e-5
    assert float(out["mag_diff"]) < 1e-5
    assert out["all_reduce"] == "True"  # the signal is summed across the devices
    assert out["n_devices"] == "4"


def test_auto_kernel_choice():
    # Bloch()'s default kernel="auto": the fused kernel only for a concrete float32 forward
    # run on one GPU with options it covers; the XLA engine everywhere else
    auto = mt.Bloch()
    assert auto.kernel == "auto"
    base = dict(dtype=jnp.float32, traced=False, dynamics=False, n_devices=1)
    assert auto.resolve_kernel(backend="gpu", **base).kernel == "pallas"
    assert auto.resolve_kernel(backend="cpu", **base).kernel == "xla"
    assert auto.resolve_kernel(backend="rocm", **base).kernel == "xla"
    assert auto.resolve_kernel(backend="tpu", **base).kernel == "xla"
    from mritwin.simulate.methods import PALLAS_AUTO_MAX_OUTPUTS

    assert auto.resolve_kernel(backend="gpu", n_outputs=PALLAS_AUTO_MAX_OUTPUTS, **base).kernel == "pallas"
    for change in (dict(dtype=jnp.float64), dict(traced=True), dict(dynamics=True), dict(n_devices=4),
                   dict(windowed=True), dict(n_outputs=PALLAS_AUTO_MAX_OUTPUTS + 1)):
        assert auto.resolve_kernel(backend="gpu", **{**base, **change}).kernel == "xla", change
    for method in (mt.Bloch(reversible=True), mt.Bloch(analytic_diffusion=True),
                   mt.Bloch(readout=mt.NUFFTReadout(1e-6)), mt.Bloch(rf_interpolation=1e-6), mt.Bloch(kernel="xla")):
        assert method.resolve_kernel(backend="gpu", **base).kernel == "xla", method
    assert PALLAS.resolve_kernel(backend="cpu", **base) is PALLAS  # explicit choices stay
    # the resolved method is remembered (no new module per call), and is the method with
    # that kernel, also for an equal method object and for options with other values
    xla = auto.resolve_kernel(backend="cpu", **base)
    assert xla is auto.resolve_kernel(backend="cpu", **base) is mt.Bloch().resolve_kernel(backend="cpu", **base)
    assert xla == dataclasses.replace(auto, kernel="xla")
    fine = mt.Bloch(rf_dt=2e-6).resolve_kernel(backend="cpu", **base)
    assert fine.rf_dt == 2e-6 and fine.kernel == "xla"


def test_auto_kernel_in_simulate(monkeypatch):
    # on a CPU "auto" is the XLA engine, bit for bit
    twin = _twin(n=64)
    seq = cartesian_gre(8, 0.2, tr=8e-3, te=3e-3)
    ref = mt.simulate(twin, seq, method=mt.Bloch(kernel="xla"))
    np.testing.assert_array_equal(np.asarray(mt.simulate(twin, seq).samples), np.asarray(ref.samples))

    # as if on a GPU: a concrete forward run goes to the kernel; traced runs (grad) and
    # windowed DiscreteSequences to the XLA engine
    from mritwin.simulate import engine

    class Chosen(Exception):
        pass

    def pallas_chosen(*args, **kwargs):
        raise Chosen

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(engine, "_plan_pallas", pallas_chosen)
    with pytest.raises(Chosen):
        mt.simulate(twin, seq)
    many = twin.replace(coil_sensitivity=np.ones((600, twin.n_spins), np.complex64))  # 600 x 64 samples
    np.testing.assert_allclose(np.asarray(mt.simulate(many, seq).samples[0]), np.asarray(ref.samples[0]),
                               rtol=1e-5, atol=1e-6)
    windowed = mt.discretize(seq, mt.Scanner())
    np.testing.assert_allclose(np.asarray(mt.simulate(twin, windowed).samples), np.asarray(ref.samples),
                               rtol=1e-5, atol=1e-6)

    def loss(t2):
        return jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=t2), seq).samples) ** 2)

    g = jax.grad(loss)(jnp.asarray(twin.t2))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0


def test_kernel_benchmark_times_both_summations(capsys):
    # benchmarks/bench_pallas.py (gpu_check.sh's stage 4b) on a CPU, where only --quick is
    # allowed (the interpreter): one record for the XLA engine, one per summation (plain,
    # compensated), each naming it and agreeing with the XLA engine's signal
    import runpy

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pallas.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--quick", "--scenario", "gre-64", "--repeats", "1", "--compensate", "no", "yes"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-3:]]
    assert [r["kernel"] for r in recs] == ["xla", "pallas", "pallas"]
    assert [r["compensate"] for r in recs[1:]] == [False, True]
    assert all(r["max_rel_diff_vs_xla"] < 1e-4 for r in recs[1:])
    assert main(["--scenario", "gre-64"]) == 2  # full size in the interpreter: refused
