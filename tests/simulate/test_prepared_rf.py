"""Prepared RF pulses: a pulse that repeats is stepped once per chunk into a per-spin
affine map and applied whole. Checked against stepping every raster sample and against
closed-form rotations."""

from __future__ import annotations

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.discretize import discretize
from mritwin.simulate.prepared_rf import plan_prepared_rf
from tests.seqkit import IDEAL, csf_sinc_gre

jax.config.update("jax_enable_x64", True)


def _twin(n, fov, seed=0, relax=True):
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    m = x.size
    return mt.Twin(position=np.c_[x.ravel(), y.ravel(), rng.uniform(-3e-3, 3e-3, m)],
                   pd=rng.uniform(0.5, 1.0, m),
                   t1=rng.uniform(0.5, 1.5, m) if relax else np.full(m, np.inf),
                   t2=rng.uniform(0.03, 0.2, m) if relax else np.full(m, np.inf),
                   delta_f=rng.uniform(-50, 50, m), b1=rng.uniform(0.8, 1.2, m))


def _sinc_gre(n, fov, flips=None):
    """A 2D GRE with a 1 ms slice-selective sinc pulse (1000 raster steps) per TR and RF
    spoiling; ``flips`` (per TR, degrees) default to 30."""
    dk = 1 / fov
    dwell = 20e-6
    amp = dk / (dwell * IDEAL.gamma_bar)
    blocks = []
    phase = inc = 0.0
    for j in range(n):
        flip = 30.0 if flips is None else flips[j]
        rf, gz, gzr = mt.make_sinc_pulse(np.radians(flip), 1e-3, slice_thickness=5e-3,
                                         phase_offset=np.radians(phase), scanner=IDEAL)
        gx = mt.make_trapezoid("x", amplitude=amp, flat_time=n * dwell, scanner=IDEAL)
        pre = mt.make_trapezoid("x", area=-gx.area / 2, duration=0.5e-3, scanner=IDEAL)
        gy = mt.make_trapezoid("y", area=(j - n / 2) * dk, duration=0.5e-3, scanner=IDEAL)
        adc = mt.ADC(n, dwell, delay=gx.rise_time, phase_offset=np.radians(phase))
        blocks += [mt.Block(rf=rf, gz=gz), mt.Block(gx=pre, gy=gy, gz=gzr), mt.Block(gx=gx, adc=adc),
                   mt.Block(duration=3e-3)]
        inc += 117.0
        phase = (phase + inc) % 360.0
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def test_a_repeated_pulse_becomes_one_step_per_play():
    seq = _sinc_gre(12, 0.2)
    d = discretize(seq)
    short, table = plan_prepared_rf(d, 3)
    assert table.dt.shape[0] == 1  # one pulse shape, phase offsets apart
    steps = table.dt.shape[1]
    assert steps > 900  # the sinc's raster
    assert short.n_real_steps == d.n_real_steps - 12 * (steps - 1)
    assert np.sum(np.asarray(short.kind) == 3) == 12


def test_the_grouped_plan_equals_the_plain_one_when_the_plain_one_leaves_no_rf_step():
    """The engine skips the grouped plan (``min_repeats=1``) where the plain one prepared
    every RF step (`engine._steps_rf`): then both prepare the same pulses. A pulse played
    once (an inversion) is left as RF steps by the plain plan and prepared by the grouped one."""
    engine = importlib.import_module("mritwin.simulate.engine")
    d = discretize(_sinc_gre(12, 0.2))
    plain, grouped = plan_prepared_rf(d, 3), plan_prepared_rf(d, 3, min_repeats=1)
    assert not engine._steps_rf(plain[0])
    for a, b in ((plain[0], grouped[0]), (plain[1], grouped[1])):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    inv = mt.make_block_pulse(np.pi, duration=1e-3, use="inversion")
    seq = mt.Sequence([mt.Block(rf=inv), mt.Block(duration=5e-3)] + list(_sinc_gre(12, 0.2).blocks),
                      {"FOV": [0.2, 0.2, 0.0]})
    d = discretize(seq, rf_dt=10e-6)
    plain, grouped = plan_prepared_rf(d, 3), plan_prepared_rf(d, 3, min_repeats=1)
    assert engine._steps_rf(plain[0]) and not engine._steps_rf(grouped[0])
    assert (plain[1].dt.shape[0], grouped[1].dt.shape[0]) == (1, 2)


def test_late_plays_of_a_pulse_are_still_the_same_pulse():
    """A step's B1 integral is taken between absolute times, so a 1 us raster step 2.5 s
    into a sequence carries ~5e-10 of relative rounding, and plays differ by that much in
    a few of their ~2 000 values: every play is still prepared as the one pulse (before,
    plays whose values straddled a hash bucket's edge, or passed a fixed 1e-10, were left
    as steps: 6 of these 16, 89 of a 256-line GRE's 256), and the simulation equals
    stepping."""
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=16, flip_angle_deg=20, slice_thickness=5e-3, tr=0.16)
    assert seq.duration > 2.5
    d = discretize(seq, scanner)
    short, table = plan_prepared_rf(d, 3)
    assert table.dt.shape[0] == 1
    assert np.sum(np.asarray(short.kind) == 3) == 16
    rng = np.random.default_rng(4)
    n = 30
    twin = mt.Twin(position=np.c_[rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(-3e-3, 3e-3, n)], pd=np.ones(n),
                   t1=rng.uniform(0.5, 1.5, n), t2=rng.uniform(0.03, 0.2, n), delta_f=rng.normal(0, 10, n))
    ref = mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64, method=mt.Bloch(prepare_pulses=False))
    got = mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64)
    scale = np.max(np.abs(np.asarray(ref.samples)))
    assert np.max(np.abs(np.asarray(got.samples) - np.asarray(ref.samples))) <= 1e-9 * scale


def test_pulses_with_other_flip_angles_are_not_grouped():
    flips = [10.0, 20.0, 30.0, 40.0] * 3  # each shape 3 times: below the 4 repeats needed
    _, table = plan_prepared_rf(discretize(_sinc_gre(12, 0.2, flips=flips)), 3)
    assert table is None
    flips = [10.0, 20.0] * 6
    _, table = plan_prepared_rf(discretize(_sinc_gre(12, 0.2, flips=flips)), 3)
    assert table.dt.shape[0] == 2


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-11), (jnp.float32, 3e-4)])
def test_prepared_pulses_equal_stepping(dtype, tol):
    """Slice selection, off-resonance, B1 map, relaxation during the pulse, RF spoiling."""
    twin = _twin(10, 0.2)
    seq = _sinc_gre(10, 0.2)
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(prepare_pulses=False, fuse_rf=1),
                      return_magnetization=True)
    got = mt.simulate(twin, seq, dtype=dtype, method=mt.Bloch(), return_magnetization=True)
    scale = np.max(np.abs(np.asarray(ref.samples)))
    assert np.max(np.abs(np.asarray(got.samples) - np.asarray(ref.samples))) <= tol * scale
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= 10 * tol
    # and with the NUFFT readout (windows prepared too)
    nu = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(readout=mt.NUFFTReadout(1e-8)))
    assert np.max(np.abs(np.asarray(nu.samples) - np.asarray(ref.samples))) <= 1e-8 * twin.pd.sum()


# the hard pulses as one RF step each (by default discretize cuts a held sample into 10 us
# steps, and a 0.2 ms pulse of 20 steps is prepared as any multi-step pulse)
ONE_STEP = dict(max_rf_dt=None)


def _hard_gre(n, fov, flip=25.0, n_tr=None):
    """A 2D GRE with a 0.2 ms hard pulse (one RF step with ``ONE_STEP``) per TR and RF
    spoiling."""
    dk, dwell = 1 / fov, 20e-6
    amp = dk / (dwell * IDEAL.gamma_bar)
    blocks, phase, inc = [], 0.0, 0.0
    for j in range(n if n_tr is None else n_tr):
        rf = mt.make_block_pulse(np.radians(flip), 2e-4, phase_offset=np.radians(phase), delay=0.0, scanner=IDEAL)
        gx = mt.make_trapezoid("x", amplitude=amp, flat_time=n * dwell, scanner=IDEAL)
        pre = mt.make_trapezoid("x", area=-gx.area / 2, duration=0.5e-3, scanner=IDEAL)
        gy = mt.make_trapezoid("y", area=(j % n - n / 2) * dk, duration=0.5e-3, scanner=IDEAL)
        adc = mt.ADC(n, dwell, delay=gx.rise_time, phase_offset=np.radians(phase))
        blocks += [mt.Block(rf=rf), mt.Block(gx=pre, gy=gy), mt.Block(gx=gx, adc=adc), mt.Block(duration=3e-3)]
        inc += 117.0
        phase = (phase + inc) % 360.0
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def test_one_step_pulses_are_prepared_only_when_asked_and_repeated():
    d = discretize(_hard_gre(8, 0.2), **ONE_STEP)
    assert np.sum(np.asarray(d.kind)[:d.n_real_steps] == 0) == 8  # one RF step per play
    assert plan_prepared_rf(d, 3)[1] is None  # (too short by default)
    short, table = plan_prepared_rf(d, 3, single_steps=True)
    assert table.dt.shape == (1, 1) and np.sum(np.asarray(short.kind) == 3) == 8
    assert not np.any(np.asarray(short.kind)[:short.n_real_steps] == 0)
    # played three times: not prepared, even where every pulse may be (min_repeats=1)
    d3 = discretize(_hard_gre(8, 0.2, n_tr=3), **ONE_STEP)
    assert plan_prepared_rf(d3, 3, min_repeats=1, single_steps=True)[1] is None
    # all one-step pulses or none: an inversion played once between the TRs keeps every
    # hard pulse a step (else it would be a kind outside the steps' period)
    gre = _hard_gre(8, 0.2)
    blocks = list(gre.blocks)
    inv = mt.make_block_pulse(np.pi, 2e-4, delay=0.0, use="inversion", scanner=IDEAL)
    blocks[16:16] = [mt.Block(rf=inv), mt.Block(duration=0.05)]
    assert plan_prepared_rf(discretize(mt.Sequence(blocks), **ONE_STEP), 3, single_steps=True)[1] is None


@pytest.mark.parametrize("chunk", [None, 64])
def test_one_step_pulses_prepared_on_the_cpu_equal_stepping(chunk, monkeypatch):
    """A GRE's hard pulses (RF spoiling, off-resonance, a B1 map, relaxation during the
    pulse) prepared per chunk on the CPU (small chunks) give the stepped result."""
    from mritwin.simulate import engine

    twin, seq = _twin(10, 0.2), _hard_gre(10, 0.2)
    method = mt.Bloch(chunk_size=chunk, **ONE_STEP)
    run = engine._plan(twin, seq, mt.Scanner(), None, method, jnp.float64, False, None, ())
    assert run.call.keywords["rftab"] is not None  # prepared (the chunk is small)
    got = mt.simulate(twin, seq, dtype=jnp.float64, method=method, return_magnetization=True)
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(prepare_pulses=False, chunk_size=chunk, **ONE_STEP),
                      return_magnetization=True)
    scale = np.max(np.abs(np.asarray(ref.samples)))
    assert np.max(np.abs(np.asarray(got.samples) - np.asarray(ref.samples))) <= 1e-12 * scale
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= 1e-12
    # chunks above SINGLE_STEP_PULSE_CHUNK step them
    monkeypatch.setattr(engine, "SINGLE_STEP_PULSE_CHUNK", 32)
    run = engine._plan(twin, seq, mt.Scanner(), None, method, jnp.float64, False, None, ())
    assert run.call.keywords["rftab"] is None


def _rotation(axis_phase, angle):
    """The engine's left-handed rotation ``M cos θ - (u × M) sin θ + u (u·M)(1 - cos θ)``
    by ``angle`` about the axis of a B1 at phase offset φ: ``b1dt = γ̄ conj(∫B1 dt)``, so
    ``u = (cos φ, -sin φ, 0)`` (DESIGN.md's conventions)."""
    u = np.array([np.cos(axis_phase), -np.sin(axis_phase), 0.0])
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])  # cross @ M = u × M
    return np.eye(3) * np.cos(angle) - cross * np.sin(angle) + np.outer(u, u) * (1 - np.cos(angle))


def test_on_resonance_pulses_compose_to_closed_form_rotations():
    """No relaxation, no off-resonance, spins in the slice centre: each played sinc is a
    rotation by its flip about the axis of its phase offset; four plays with different
    phases give the product of the four rotations."""
    phases = np.radians([0.0, 117.0, 351.0, 225.0])
    blocks = []
    for ph in phases:
        rf = mt.make_sinc_pulse(np.radians(40), 1e-3, phase_offset=ph, delay=0.0, scanner=IDEAL)
        blocks += [mt.Block(rf=rf), mt.Block(duration=1e-3)]
    seq = mt.Sequence(blocks)
    twin = mt.Twin(position=np.zeros((3, 3)), pd=np.ones(3), t1=np.full(3, np.inf), t2=np.full(3, np.inf))
    short, table = plan_prepared_rf(discretize(seq), 2)
    assert table is not None and table.dt.shape[0] == 1
    got = mt.simulate(twin, seq, dtype=jnp.float64, return_magnetization=True).magnetization[0]
    m = np.array([0.0, 0.0, 1.0])
    for ph in phases:
        m = _rotation(ph, np.radians(40)) @ m
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(prepare_pulses=False, fuse_rf=1),
                      return_magnetization=True).magnetization[0]
    np.testing.assert_allclose(np.asarray(ref), m, atol=1e-9)  # the convention of _rotation
    np.testing.assert_allclose(np.asarray(got), m, atol=1e-9)


@pytest.mark.slow
def test_gradients_through_prepared_pulses_agree_with_stepping():
    twin = _twin(6, 0.2, seed=1)
    seq = _sinc_gre(6, 0.2)

    def loss(t2, b1, method):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=t2, delta_f=twin.delta_f, b1=b1)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, dtype=jnp.float64, method=method).samples) ** 2)

    args = (jnp.asarray(twin.t2), jnp.asarray(twin.b1))
    g_ref = jax.grad(loss, argnums=(0, 1))(*args, mt.Bloch(prepare_pulses=False, fuse_rf=1))
    g = jax.grad(loss, argnums=(0, 1))(*args, mt.Bloch())
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("velocity", [(0.03, -0.02, 0.0), (0.02, 0.0, 0.01)])
def test_pulses_of_a_translating_twin_equal_stepping(velocity):
    """A translation puts a phase common to all spins into every step (``cyc0``); it is part
    of the prepared pulse. In-plane motion leaves the slice pulses alike (prepared once);
    through-plane motion makes each play another pulse (prepared on RF groups: a voxel grid
    in one slice with three tissues and no field map)."""
    n = 8
    c = (np.arange(n) - n / 2) * 0.2 / n
    x, y = np.meshgrid(c, c, indexing="ij")
    tissue = np.arange(n * n) % 3
    twin = mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(n * n)], pd=np.linspace(0.5, 1, n * n),
                   t1=np.array([0.8, 1.2, 2.0])[tissue], t2=np.array([0.05, 0.08, 0.2])[tissue])
    seq = _sinc_gre(n, 0.2)
    motion = mt.Translation(velocity=velocity)
    d = discretize(seq, IDEAL, motion=motion)
    kind = np.asarray(d.kind)[: d.n_real_steps]
    moving = np.abs(np.asarray(d.cyc0)[: d.n_real_steps][kind == 0]).max() > 0
    assert moving == (velocity[2] != 0)
    ref = mt.simulate(twin, seq, scanner=IDEAL, motion=motion, dtype=jnp.float64, return_magnetization=True,
                      method=mt.Bloch(prepare_pulses=False, fuse_rf=1, group_spins=False))
    for method in (mt.Bloch(), mt.Bloch(group_spins=False)):
        got = mt.simulate(twin, seq, scanner=IDEAL, motion=motion, dtype=jnp.float64, return_magnetization=True,
                          method=method)
        scale = np.abs(np.asarray(ref.samples)).max()
        assert np.abs(np.asarray(got.samples) - np.asarray(ref.samples)).max() <= 1e-11 * scale
        assert np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization)).max() <= 1e-11
    # the pulses were prepared: one shape in-plane (phase offsets apart), one per play through-plane
    short, table = plan_prepared_rf(d, 3, min_repeats=1)
    assert table.dt.shape[0] == (min(n, 8) if moving else 1)
    assert np.abs(table.c0).max() > 0 if moving else np.all(table.c0 == 0)


def _constant_pulse_map(b1_rate, df, r1, r2, duration):
    """(A, b) of a constant-field pulse with relaxation, from the 4x4 generator's matrix
    exponential: ``b1_rate`` [Hz] complex, ``df`` [Hz]; left-handed, ``dM/dt = -2π w x M``
    minus relaxation towards M0 = 1."""
    from scipy.linalg import expm

    w = 2 * np.pi * np.array([b1_rate.real, b1_rate.imag, df])
    g = np.zeros((4, 4))
    g[:3, :3] = [[-r2, w[2], -w[1]], [-w[2], -r2, w[0]], [w[1], -w[0], -r1]]
    g[2, 3] = r1
    e = expm(g * duration)
    return e[:3, :3], e[:3, 3]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_prepared_pulse_equals_the_matrix_exponential(dtype):
    """A 2 ms constant 30° pulse on a 1 us raster (2 000 steps), spins off resonance with
    T1 up to 4 s: the prepared map equals the exact one (the 4x4 generator's expm; the
    steps' Strang splitting adds ~6e-10) to float64 and float32 rounding. Float32 used to
    step the map's columns: ``exp(-dt/2T1)`` is 1 - 5e-7 for a 1 us step and T1 = 1 s, a
    few ulps of 1, and its rounding repeated 4 000 times the same way: A was 6e-5 and the
    recovery b 2-9e-5 (up to 5 % of it) off; now 1e-7 and 3e-10."""
    from mritwin.simulate.kernels import Spins
    from mritwin.simulate.prepared_rf import prepare_pulse

    n_steps, dt, flip = 2000, 1e-6, np.radians(30)
    rate = flip / (2 * np.pi * n_steps * dt) * np.exp(0.7j)  # the B1 [Hz], a phase 0.7 rad
    df = np.array([0.0, 37.0, -180.0, 600.0])
    r1 = 1 / np.array([4.0, 1.0, 0.3, 4.0])
    r2 = 1 / np.array([2.0, 0.08, 0.05, 0.1])
    cdt = jnp.complex128 if dtype == jnp.float64 else jnp.complex64

    def f(v):
        return jnp.asarray(v, dtype)

    zero, one = np.zeros(4), np.ones(4)
    spins = Spins(x=f(zero), y=f(zero), z=f(zero), pd=f(one), r1=f(r1), r2=f(r2), df=f(df), b1=f(one),
                  coil_re=None, coil_im=None)
    p = prepare_pulse(spins, f(np.full(n_steps, dt)), f(np.zeros((n_steps, 3))), jnp.full((n_steps,), rate * dt, cdt))
    a = np.array([[np.asarray(p.a[i][j], float) for j in range(3)] for i in range(3)])
    b = np.array([np.asarray(p.b[i], float) for i in range(3)])
    for j in range(4):
        a_ref, b_ref = _constant_pulse_map(rate, df[j], r1[j], r2[j], n_steps * dt)
        tol_a, tol_b = (2e-9, 5e-10) if dtype == jnp.float64 else (5e-7, 2e-9)
        np.testing.assert_allclose(a[:, :, j], a_ref, rtol=0, atol=tol_a)
        np.testing.assert_allclose(b[:, j], b_ref, rtol=0, atol=tol_b)
        assert b_ref[2] > 4e-4  # (the recovery checked is there: 5e-4 to 6e-3)


def test_float32_gre_with_a_shaped_pulse_matches_float64():
    """The library's GRE (a 2 ms sinc on its 1 us raster, 32 TRs of 7 ms, RF spoiling) on
    CSF-like spins (T1 4 s, T2 2 s): the default float32 simulation, which prepares the
    pulse, equals float64 to 1e-4 of the peak (measured 3.3e-5; 5.9e-4 when the map's
    columns were stepped). Stepping the pulse in fused runs of raster steps instead, or
    one raster step at a time, 1.5e-4 (measured 6.3e-5 and 6.8e-5: each raster step's
    changes, rotation with ``cos θ - 1`` from the half angle and relaxation, are summed
    and added to the state once; 1.9e-4 and 7.0e-4 while the state was rounded after each
    half step and rotated by multiplying with ``cos θ``; 6.4e-4 fused while a step relaxed
    by multiplying with ``exp(-dt/2T)``, see `kernels.relaxation`)."""
    twin, seq, scanner = csf_sinc_gre()
    s64 = np.asarray(mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64).samples)
    s32 = np.asarray(mt.simulate(twin, seq, scanner=scanner).samples)
    assert np.abs(s32 - s64).max() < 1e-4 * np.abs(s64).max()
    fused = np.asarray(mt.simulate(twin, seq, scanner=scanner, method=mt.Bloch(prepare_pulses=False)).samples)
    assert np.abs(fused - s64).max() < 1.5e-4 * np.abs(s64).max()
    exact = np.asarray(mt.simulate(twin, seq, scanner=scanner, method=mt.Bloch(prepare_pulses=False, fuse_rf=1)).samples)
    assert np.abs(exact - s64).max() < 1.5e-4 * np.abs(s64).max()


def test_block_pulses_in_10_us_steps_late_in_a_long_sequence_are_one_prepared_pulse():
    """Block starts are sums of block durations, which drift from the 1 ps grid that step
    boundaries are rounded to (0.38 ps after 1 000 TRs of 12 ms): the last 10 us step of a
    1 ms block pulse then overlaps its sample up to 1 ps less (4e-8 of the step). Those
    plays are still the same pulse: all 1 024 prepared as one (before, 66 of them were left
    as RF steps, the engine fused them and lost its periodic step layout: 3.5x slower)."""
    from mritwin.benchmarking import cartesian_gre

    seq = mt.Sequence(list(cartesian_gre(64, 0.2, rf_duration=1e-3, tr=12e-3).blocks) * 16)
    d = discretize(seq)
    kind = np.asarray(d.kind)[:d.n_real_steps]
    assert np.sum(kind == 0) == 1024 * 100  # (1 ms in 10 us steps)
    short, table = plan_prepared_rf(d, 3)
    assert table is not None and table.dt.shape == (1, 100)
    k = np.asarray(short.kind)[:short.n_real_steps]
    assert np.sum(k == 3) == 1024 and not np.any(k == 0)


def _shared_flip_gre(flips, n_tr=8, n=6, fov=0.2):
    """A 2D GRE whose TR ``j`` plays the sinc pulse of ``flips[j % len(flips)]`` [rad] (may
    be traced): one pulse object per flip, played at each TR's RF-spoiling phase as the
    builders do (the same amplitude object), after a concrete 180 degree block pulse."""
    dk, dwell = 1 / fov, 20e-6
    pulses = [mt.make_sinc_pulse(f, 0.4e-3, slice_thickness=5e-3, scanner=IDEAL) for f in flips]
    gx = mt.make_trapezoid("x", amplitude=dk / (dwell * IDEAL.gamma_bar), flat_time=n * dwell, scanner=IDEAL)
    pre = mt.make_trapezoid("x", area=-gx.area / 2, duration=0.5e-3, scanner=IDEAL)
    blocks = [mt.Block(rf=mt.make_block_pulse(np.pi, 0.5e-3, delay=0.0, scanner=IDEAL)), mt.Block(duration=5e-3)]
    for j in range(n_tr):
        rf, gz, gzr = pulses[j % len(flips)]
        phase = np.radians(58.5 * j * (j + 1))
        gy = mt.make_trapezoid("y", area=(j % n - n / 2) * dk, duration=0.5e-3, scanner=IDEAL)
        blocks += [mt.Block(rf=eqx.tree_at(lambda r: r.phase_offset, rf, np.asarray(phase)), gz=gz),
                   mt.Block(gx=pre, gy=gy, gz=gzr),
                   mt.Block(gx=gx, adc=mt.ADC(n, dwell, delay=gx.rise_time, phase_offset=phase)),
                   mt.Block(duration=3e-3)]
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def test_traced_amplitudes_factor_into_concrete_shapes_per_step():
    # under a trace each RF step's B1 integral is a concrete shape times the traced
    # amplitude of its pulse (`DiscreteSequence.b1unit`, `b1src`): checked against the
    # integrals of the same sequence with concrete flips, amplitude by amplitude
    flips = np.radians([20.0, 35.0])
    seen = {}

    def discrete(f):
        d = discretize(_shared_flip_gre(f))
        seen.update(unit=d.b1unit, src=d.b1src, m=d.n_real_steps)
        return d.b1dt

    jax.jit(discrete)(jnp.asarray(flips))
    d_ref = discretize(_shared_flip_gre(flips))
    ref, t = np.asarray(d_ref.b1dt), np.asarray(d_ref.t)
    unit, src, m = seen["unit"], seen["src"], seen["m"]
    assert isinstance(unit, np.ndarray) and set(np.unique(src[:m])) == {-1, 0, 1}
    rf = np.abs(ref) > 0
    np.testing.assert_array_equal(rf, np.abs(unit) > 0)
    # the 180 degree pulse (the first 0.5 ms) is concrete: its steps are their own integrals
    assert np.all(src[rf & (t < 0.5e-3)] == -1) and np.all(src[rf & (t > 0.5e-3)] >= 0)
    np.testing.assert_allclose(unit[src == -1], ref[src == -1], rtol=1e-14)
    for s, f in enumerate(flips):  # b1dt = b1unit * conj(amplitude): one factor per flip
        amp = mt.make_sinc_pulse(f, 0.4e-3, slice_thickness=5e-3, scanner=IDEAL)[0].amplitude
        np.testing.assert_allclose(unit[src == s] * np.conj(amp), ref[src == s], rtol=1e-12)
    assert np.sum(src == 0) == np.sum(src == 1) and np.sum(src == 0) % 4 == 0  # 4 plays each

    # a traced phase offset does not factor: the integrals stay traced, without b1unit
    def traced_phase(ph):
        rf = mt.make_block_pulse(0.3, 0.5e-3, phase_offset=ph, delay=0.0, scanner=IDEAL)
        d = discretize(mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(4, 1e-5), duration=2e-3)]))
        seen.update(unit=d.b1unit)
        return d.b1dt

    jax.jit(traced_phase)(jnp.asarray(0.2))
    assert seen["unit"] is None


def test_plays_sharing_a_traced_amplitude_are_prepared_once_and_equal_stepping():
    # a pulse whose flip is traced but whose plays share that one amplitude (a builder's
    # flip under jax.grad) is prepared once per chunk with the traced amplitude: its 8
    # plays (two flips, 4 plays each, each flip its own prepared pulse) are 8 prepared
    # steps instead of 25 fused steps each. Values equal stepping every play (an
    # independent path) on RF groups and per spin, and the gradient equals central
    # differences of the stepped simulation.
    from mritwin.simulate import engine

    twin = _twin(3, 0.2, seed=2)
    flips = jnp.radians(jnp.asarray([20.0, 35.0]))
    stepped = mt.Bloch(prepare_pulses=False)
    plans = []

    def loss(f, method=mt.Bloch()):
        seq = _shared_flip_gre(f)
        if isinstance(f, jax.core.Tracer):
            run = engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ())
            d, kw = run.call.args[1], run.call.keywords
            plans.append((kw["rftab"].dt.shape[0], int(np.sum(np.asarray(d.kind) == kw["rf_kind"]))))
        s = mt.simulate(twin, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(s) ** 2)

    v, g = jax.jit(jax.value_and_grad(loss))(flips)
    v_ref = loss(flips, stepped)
    np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-11)
    per_spin = jax.jit(lambda f: loss(f, mt.Bloch(group_spins=False)))(flips)
    np.testing.assert_allclose(float(per_spin), float(v_ref), rtol=1e-11)
    # two prepared sinc pulses played 4 times each, on RF groups and per spin (the 180
    # degree block pulse is a held step)
    assert plans == [(2, 8), (2, 8)]
    h = 1e-5
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        fd = (loss(flips + e, stepped) - loss(flips - e, stepped)) / (2 * h)
        np.testing.assert_allclose(float(g[i]), float(fd), rtol=1e-7)


def test_a_concrete_pulse_prepared_beside_a_traced_one_keeps_its_own_amplitude():
    # one flip traced, the other a constant: both sinc pulses are prepared (the table's
    # rows: one scaled by the traced amplitude, one by 1); eager jax.grad (the planning's
    # traced steps in jitted calls) gives the value of stepping every play and the
    # gradient of central differences
    from mritwin.simulate import engine

    twin = _twin(3, 0.2, seed=2)
    stepped = mt.Bloch(prepare_pulses=False)
    prepared = []

    def loss(f, method=mt.Bloch()):
        seq = _shared_flip_gre([f, np.radians(35.0)])
        if isinstance(f, jax.core.Tracer):
            run = engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ())
            prepared.append(run.call.keywords["rftab"].dt.shape[0])
        s = mt.simulate(twin, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(s) ** 2)

    f = jnp.radians(20.0)
    v, g = jax.value_and_grad(loss)(f)
    assert prepared == [2]
    np.testing.assert_allclose(float(v), float(loss(f, stepped)), rtol=1e-11)
    h = 1e-5
    fd = (loss(f + h, stepped) - loss(f - h, stepped)) / (2 * h)
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-7)


def test_a_builders_traced_hard_pulse_is_prepared_as_the_power_of_its_step():
    # the 3D GRE builder's non-selective excitation (a block pulse in 10 us steps) with a
    # traced flip: prepared with the traced amplitude, as the power of its one held step
    # (`held_rf.prepare_held_pulse`); value equal to stepping every play, flip gradient to
    # central differences
    from mritwin.simulate import engine

    rng = np.random.default_rng(5)
    n = 12
    twin = mt.Twin(position=rng.uniform(-0.1, 0.1, (n, 3)), pd=np.ones(n), t1=rng.uniform(0.5, 1.5, n),
                   t2=rng.uniform(0.03, 0.2, n), delta_f=rng.normal(0, 20, n))
    method = mt.Bloch(ideal_spoiling=True)
    held = []

    def loss(f, method=method):
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=(4, 4, 2), dims=3, te=4e-3, tr=12e-3,
                               flip_angle=f)
        if isinstance(f, jax.core.Tracer):
            held.append(engine._plan(twin, seq, mt.Scanner(), None, method, jnp.float64, False, None,
                                     ()).call.keywords["rf_held"])
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, method=method, dtype=jnp.float64).samples) ** 2)

    x = jnp.asarray(0.25)
    v, g = jax.jit(jax.value_and_grad(loss))(x)
    assert len(held) == 1 and len(held[0]) == 1 and held[0][0] > 1  # one pulse, n held steps
    stepped = mt.Bloch(ideal_spoiling=True, prepare_pulses=False)
    np.testing.assert_allclose(float(v), float(loss(x, stepped)), rtol=1e-11)
    h = 1e-5
    np.testing.assert_allclose(float(g), float((loss(x + h, stepped) - loss(x - h, stepped)) / (2 * h)), rtol=1e-7)


def test_the_preparations_rotation_is_chosen_on_the_host_and_equals_stepping():
    # every raster step of the sinc within `kernels.SMALL_FIELD` for every spin: the
    # preparation uses the small-angle series throughout (no conditional per step); with
    # a spin 20 cm off the slice (0.8 cycles/m per 1 us step of the slice gradient) no step
    # is: the general rotation throughout. Both equal stepping every play.
    from mritwin.simulate import engine

    seq = _sinc_gre(4, 0.2)
    near = _twin(4, 0.2, seed=3)
    pos = np.asarray(near.position).copy()
    pos[0, 2] = 0.2
    far = mt.Twin(position=pos, pd=near.pd, t1=near.t1, t2=near.t2, delta_f=near.delta_f, b1=near.b1)
    for twin, mode in ((near, "small"), (far, "general")):
        method = mt.Bloch(group_spins=False)
        run = engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ())
        assert run.call.keywords["rf_rotation"][2] == mode
        ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=mt.Bloch(prepare_pulses=False))
        got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=method)
        scale = np.max(np.abs(np.asarray(ref.samples)))
        assert np.max(np.abs(np.asarray(got.samples) - np.asarray(ref.samples))) <= 1e-11 * scale
