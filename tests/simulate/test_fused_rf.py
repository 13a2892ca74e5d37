"""Fused RF steps: runs of raster steps of a pulse played once are applied 16 at a time by
one kernel. Checked against stepping each raster sample (``Bloch(fuse_rf=1)``), against a
closed-form rotation and against finite differences."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.discretize import discretize
from mritwin.simulate.fused_rf import fuse_starts, plan_fused_rf
from tests.seqkit import IDEAL, epi_like, slab_twin as _twin

jax.config.update("jax_enable_x64", True)

STEP = mt.Bloch(fuse_rf=1, prepare_pulses=False)  # every raster step on its own: the reference


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_fuse_starts_respect_samples_spoiling_durations_and_other_steps():
    s = 4
    kind = np.zeros(40, int)
    kind[20] = 1  # a free step splits the run
    dt = np.full(40, 1e-6)
    dt[30:] = 2e-6  # another duration: a new run
    dt[5] *= 1 + 1e-12  # float rounding of raster times does not split a run
    sample = np.zeros(40, bool)
    sample[11] = True  # a step with an ADC sample is in no fused step
    spoil = np.zeros(40, bool)
    spoil[16] = True  # spoiling may start a fused step, not sit inside one
    starts = fuse_starts(kind, dt, sample, spoil, s)
    np.testing.assert_array_equal(starts, [0, 4, 12, 16, 21, 25, 30, 34])
    for a in starts:
        assert np.all(kind[a:a + s] == 0) and not sample[a:a + s].any() and not spoil[a + 1:a + s].any()


def test_a_pulse_played_once_becomes_fused_steps():
    d = discretize(epi_like(), IDEAL)
    short, table = plan_fused_rf(d, 3, 16)
    n_rf = int(np.sum(np.asarray(d.kind)[: d.n_real_steps] == 0))
    n_fused = int(np.sum(np.asarray(short.kind) == 3))
    assert n_rf >= 1999 and n_fused == n_rf // 16
    assert short.n_real_steps == d.n_real_steps - 15 * n_fused
    assert table.k.shape[1:] == (16, 3) and table.dt.shape[0] >= n_fused
    # the durations and moments add up; every ADC sample keeps its place
    np.testing.assert_allclose(np.sum(np.asarray(short.dt)[: short.n_real_steps]),
                               np.sum(np.asarray(d.dt)[: d.n_real_steps]), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(short.kstep)[: short.n_real_steps].sum(0),
                               np.asarray(d.kstep)[: d.n_real_steps].sum(0), atol=1e-9)
    assert short.n_adc == d.n_adc


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 3e-4)])
def test_fused_steps_equal_stepping(dtype, tol):
    """Slice selection, off-resonance, B1 map and relaxation during a 2 ms sinc."""
    twin = _twin(8, 0.2)
    seq = epi_like()
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP, return_magnetization=True)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=dtype, return_magnetization=True)
    assert _max_rel(got.samples, ref.samples) <= tol
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= 10 * tol


def test_fused_steps_of_two_raster_times_relax_each_with_its_own():
    """Fused steps that all last as long share their relaxation factors (computed once per
    chunk); two pulses on 1 us and 2 us rasters do not, and each relaxes with its own: both
    equal stepping."""
    from mritwin.simulate import engine

    assert engine._rows_share_dt(plan_fused_rf(discretize(epi_like(), IDEAL), 3, 16)[1])
    coarse = dataclasses.replace(IDEAL, rf_raster=2e-6)
    p1 = mt.make_sinc_pulse(np.radians(60), 1e-3, delay=0.0, scanner=IDEAL)
    p2 = mt.make_sinc_pulse(np.radians(120), 1e-3, phase_offset=0.7, delay=0.0, scanner=coarse)
    adc = mt.ADC(16, 20e-6)
    seq = mt.Sequence([mt.Block(rf=p1), mt.Block(duration=2e-3), mt.Block(adc=adc),
                       mt.Block(rf=p2), mt.Block(duration=2e-3), mt.Block(adc=adc)])
    table = plan_fused_rf(discretize(seq, IDEAL), 3, 16)[1]
    assert set(np.unique(np.asarray(table.dt)[:, 0])) - {0.0} and not engine._rows_share_dt(table)
    # short relaxation times, so that a wrong factor shows
    twin = _twin(4, 0.2, seed=3).replace(t1=np.full(16, 0.02), t2=np.full(16, 0.004))
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP, return_magnetization=True)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    assert _max_rel(got.samples, ref.samples) <= 1e-12
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= 1e-12


@pytest.mark.parametrize("size", [2, 5, 16])
def test_any_fuse_size_equals_stepping(size):
    twin = _twin(5, 0.2, seed=2)
    seq = epi_like(n=4)
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=mt.Bloch(fuse_rf=size))
    assert _max_rel(got.samples, ref.samples) <= 1e-12


@pytest.mark.slow
def test_unprepared_train_with_ideal_spoiling_and_motion_equals_stepping():
    """A train of sinc pulses with other flips each (not prepared, so fused), ideal
    spoiling at each excitation, and a translation (a phase per raster step)."""
    flips = [20.0, 35.0, 50.0, 65.0, 80.0]
    blocks = []
    for f in flips:
        rf, gz, gzr = mt.make_sinc_pulse(np.radians(f), 1e-3, slice_thickness=5e-3, scanner=IDEAL)
        gx = mt.make_trapezoid("x", amplitude=2e-3, flat_time=8 * 20e-6, scanner=IDEAL)
        blocks += [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr),
                   mt.Block(gx=gx, adc=mt.ADC(8, 20e-6, delay=gx.rise_time)), mt.Block(duration=2e-3)]
    seq = mt.Sequence(blocks)
    twin = _twin(5, 0.2, seed=3)
    motion = mt.Translation(velocity=(0.02, -0.01, 0.005))
    for kw in ({"ideal_spoiling": True}, {}):
        ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, motion=motion,
                          method=mt.Bloch(fuse_rf=1, **kw))
        got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, motion=motion, method=mt.Bloch(**kw))
        assert _max_rel(got.samples, ref.samples) <= 1e-12


def test_shaped_on_resonance_pulse_is_a_rotation_by_its_flip():
    """No relaxation and no off-resonance: a shaped pulse of any raster rotates M about its
    B1 axis by its flip angle (a Hann-windowed pulse of 999 raster steps, fused 16 at a
    time, at phase offset 30°: u = (cos φ, -sin φ, 0))."""
    flip, phase = np.radians(73.0), np.radians(30.0)
    t = (np.arange(999) + 0.5) / 999
    rf = mt.make_arbitrary_rf(np.sin(np.pi * t) ** 2, flip_angle=flip, raster=1e-6, phase_offset=phase, delay=0.0,
                              scanner=IDEAL)
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(duration=1e-4)])
    assert plan_fused_rf(discretize(seq, IDEAL), 2, 16)[1] is not None
    twin = mt.Twin(position=np.zeros((2, 3)), pd=np.ones(2), t1=np.full(2, np.inf), t2=np.full(2, np.inf))
    m = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, return_magnetization=True).magnetization[0]
    u = np.array([np.cos(phase), -np.sin(phase), 0.0])
    ez = np.array([0.0, 0.0, 1.0])
    expect = ez * np.cos(flip) - np.cross(u, ez) * np.sin(flip) + u * (u @ ez) * (1 - np.cos(flip))
    np.testing.assert_allclose(np.asarray(m), expect, atol=1e-10)


def test_fuse_rf_is_validated():
    for bad in (0, -3, 2.5, True, "16", 17):
        with pytest.raises(ValueError, match="fuse_rf"):
            mt.Bloch(fuse_rf=bad)


def test_plan_keeps_traced_values_traced():
    """Only the structure must be concrete: with a traced flip angle the fused table holds
    the traced B1, whose derivative with respect to the flip scale is the B1 itself."""

    def total_b1(scale):
        short, table = plan_fused_rf(discretize(epi_like(n=2, flip=60.0 * scale), IDEAL), 3, 16)
        assert table is not None and isinstance(table.b1dt, jax.core.Tracer)
        return jnp.sum(jnp.abs(table.b1dt))

    value, slope = jax.jvp(total_b1, (1.0,), (1.0,))
    assert float(value) > 0
    np.testing.assert_allclose(float(slope), float(value), rtol=1e-12)


# ---- fused free precession: ADC samples on a time-varying gradient ---------------------


def _spiral_like(n_read=200, dwell=4e-6, with_window=False, flip=50.0):
    """A 1 ms sinc, then an ADC on an arbitrary (spiral-like) gradient: every sample is a
    free step; optionally followed by a constant-gradient window (so the fused samples
    sit after the window samples in the engine's output)."""
    rf, gz, gzr = mt.make_sinc_pulse(flip * np.pi / 180, 1e-3, slice_thickness=5e-3, scanner=IDEAL)
    raster = 1e-5
    t = np.arange(int(n_read * dwell / raster) + 2) * raster
    wx = 8e-3 * np.sin(2 * np.pi * 900 * t) * t / t[-1]
    wy = 8e-3 * np.cos(2 * np.pi * 900 * t) * t / t[-1]
    wx[0] = wy[0] = wx[-1] = wy[-1] = 0.0
    gx = mt.make_arbitrary_grad("x", wx, raster=raster, scanner=IDEAL)
    gy = mt.make_arbitrary_grad("y", wy, raster=raster, scanner=IDEAL)
    blocks = [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr),
              mt.Block(gx=gx, gy=gy, adc=mt.ADC(n_read, dwell, delay=raster))]
    if with_window:
        g = mt.make_trapezoid("x", amplitude=3e-3, flat_time=16 * 10e-6, scanner=IDEAL)
        blocks.append(mt.Block(gx=g, adc=mt.ADC(16, 10e-6, delay=g.rise_time)))
    return mt.Sequence(blocks, {"FOV": [0.2, 0.2, 0.0]})


def test_sampled_free_steps_are_fused_with_their_samples():
    d = discretize(_spiral_like(), IDEAL)
    short, table = plan_fused_rf(d, 3, 16, step_kind=1)
    m = d.n_real_steps
    n_free = int(np.sum((np.asarray(d.kind)[:m] == 1) & np.asarray(d.sample)[:m]))
    assert n_free >= 200 and table is not None
    n_fused = int(np.sum(np.asarray(short.kind) == 3))
    assert n_fused >= 200 // 16 - 1 and short.n_adc == d.n_adc
    # every sample now reads from the fused outputs or from a step that still samples
    out = np.asarray(short.out_index)
    n_pad = short.dt.shape[0]
    per_step = out < n_pad
    assert np.all(np.asarray(short.sample)[out[per_step]])
    assert np.sum(~per_step) >= 16 * n_fused - 16


@pytest.mark.parametrize("with_window", [False, True])
@pytest.mark.slow
def test_fused_free_steps_equal_stepping(with_window):
    """Off-resonance, relaxation, three coils, and (optionally) a window in the same run."""
    twin = _twin(6, 0.2, seed=5)
    rng = np.random.default_rng(0)
    coils = rng.standard_normal((3, twin.n_spins)) + 1j * rng.standard_normal((3, twin.n_spins))
    seq = _spiral_like(with_window=with_window)
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, coils=coils, method=STEP,
                      return_magnetization=True)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, coils=coils, return_magnetization=True)
    assert _max_rel(got.samples, ref.samples) <= 1e-12
    np.testing.assert_allclose(np.asarray(got.magnetization), np.asarray(ref.magnetization), atol=1e-12)
    f32 = mt.simulate(twin, seq, scanner=IDEAL, coils=coils)
    assert _max_rel(f32.samples, ref.samples) <= 3e-4


@pytest.mark.slow
def test_fused_free_steps_with_motion_and_chunks_equal_stepping():
    twin = _twin(7, 0.2, seed=6)
    seq = _spiral_like(n_read=120)
    motion = mt.Translation(velocity=(0.05, 0.02, 0.0))
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, motion=motion, method=mt.Bloch(fuse_rf=1))
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, motion=motion, method=mt.Bloch(chunk_size=16))
    assert _max_rel(got.samples, ref.samples) <= 1e-12


@pytest.mark.slow
def test_gradients_through_fused_steps_agree_with_stepping_and_finite_differences():
    """With respect to the RF amplitude (traced sequence values: the fused plan needs only
    the concrete structure), T2 and the off-resonance, through a fused sinc and a fused
    spiral-like readout."""
    twin = _twin(4, 0.2, seed=7)

    def loss(scale, t2, df, method):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=t2, delta_f=df, b1=twin.b1)
        seq = _spiral_like(n_read=64, flip=50.0 * scale)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=IDEAL, dtype=jnp.float64, method=method).samples) ** 2)

    args = (jnp.asarray(1.0), jnp.asarray(twin.t2), jnp.asarray(twin.delta_f))
    g_ref = jax.grad(loss, argnums=(0, 1, 2))(*args, STEP)
    g = jax.grad(loss, argnums=(0, 1, 2))(*args, mt.Bloch())
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12 * float(jnp.abs(b).max()))
    h = 1e-6
    fd = (loss(1.0 + h, *args[1:], mt.Bloch()) - loss(1.0 - h, *args[1:], mt.Bloch())) / (2 * h)
    np.testing.assert_allclose(float(g[0]), float(fd), rtol=1e-6)


def _spins(n, dtype, rng, pos=0.1, df=100.0):
    from mritwin.simulate.kernels import Spins

    def arr(a):
        return jnp.asarray(a, dtype)

    return Spins(arr(rng.uniform(-pos, pos, n)), arr(rng.uniform(-pos, pos, n)), arr(rng.uniform(-pos, pos, n)),
                 arr(rng.uniform(0.5, 1, n)), arr(rng.uniform(0.5, 3, n)), arr(rng.uniform(5, 50, n)),
                 arr(rng.uniform(-df, df, n)), arr(rng.uniform(0.8, 1.2, n)), None, None)


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 2e-15), (jnp.float32, 2e-7)])
def test_small_field_rotation_matches_closed_form(dtype, tol):
    """The Taylor series of the small-field rotation against sin and cos (float64 NumPy)
    from 1e-7 cycles to the bound: every ratio to float rounding, including
    b = (1 - cos θ)/|w|², which the general form loses to cancellation at small angles, and
    cos θ - 1 to its relative precision (what a step adds: `kernels._rotate`)."""
    from mritwin.simulate import kernels

    w = np.geomspace(1e-7, kernels.SMALL_FIELD, 200)
    spins = kernels.Spins(*(jnp.zeros(200, dtype) for _ in range(7)), jnp.ones(200, dtype), None, None)
    spins = spins._replace(df=jnp.asarray(w, dtype))  # the field: Δf dt with dt = 1 s
    (_, _, wz), a, b, cm1 = kernels._rf_rotation_small(spins, 1.0, jnp.zeros(3, dtype), 0j, 0.0)
    wz = np.asarray(wz, np.float64)  # the field as rounded to the dtype
    th = 2 * np.pi * wz
    np.testing.assert_allclose(np.asarray(a), np.sin(th) / wz, rtol=tol)
    np.testing.assert_allclose(np.asarray(b), (2 * np.sin(th / 2) ** 2) / wz**2, rtol=tol)
    np.testing.assert_allclose(np.asarray(cm1), -2 * np.sin(th / 2) ** 2, rtol=tol, atol=0)


def test_small_field_bound_selects_the_series_only_within_it():
    from mritwin.simulate import kernels

    rng = np.random.default_rng(3)
    spins = _spins(50, jnp.float64, rng, df=0.0)._replace(b1=jnp.ones(50), x=jnp.linspace(-0.1, 0.1, 50))
    spins = spins._replace(y=jnp.zeros(50), z=jnp.zeros(50))
    s = 16
    dt, c0, b1dt = jnp.full(s, 1e-6), jnp.zeros(s), jnp.zeros(s, complex)

    def small(kx, df=0.0, b1=0.0):
        k = jnp.zeros((s, 3)).at[:, 0].set(kx)
        return bool(kernels.small_field(spins._replace(df=spins.df + df), dt, k, b1dt + b1, c0))

    edge = kernels.SMALL_FIELD / 0.1  # kx at which |kx| max|x| reaches the bound
    assert small(0.9 * edge) and not small(1.1 * edge)
    assert small(0.0, df=0.9 * kernels.SMALL_FIELD / 1e-6) and not small(0.0, df=1.1 * kernels.SMALL_FIELD / 1e-6)
    assert small(0.0, b1=0.9 * kernels.SMALL_FIELD) and not small(0.0, b1=1.1 * kernels.SMALL_FIELD)
    assert not small(0.0, df=jnp.where(jnp.arange(50) == 7, jnp.nan, 0.0))  # not finite: the general form


@pytest.mark.parametrize("scale,small", [(1.0, True), (1000.0, False)])
def test_fused_rf_steps_agree_with_the_general_rotation_on_both_sides_of_the_bound(scale, small):
    """A 16-step run with raster fields of ~1e-3 cycles (the series) and 1000x that
    (~1 cycle per step, far above the bound: the general rotation, where the series is
    no approximation) equals the unrolled general rotation to float64 rounding."""
    from mritwin.simulate import fused_rf, kernels
    from mritwin.simulate.kernels import State

    rng = np.random.default_rng(5)
    n, s = 300, 16
    spins = _spins(n, jnp.float64, rng, pos=4e-3)
    dt = jnp.full(s, 1e-6)
    k = jnp.asarray(rng.uniform(-0.1, 0.1, (s, 3))) * scale  # [1/m]: |k·r| <= 1.2e-3 cycles at scale 1
    b1dt = jnp.asarray(rng.uniform(-5e-4, 5e-4, s) + 1j * rng.uniform(-5e-4, 5e-4, s)) * scale
    c0 = jnp.asarray(rng.uniform(-1e-4, 1e-4, s)) * scale
    m0 = State(jnp.asarray(rng.uniform(-0.5, 0.5, n)), jnp.asarray(rng.uniform(-0.5, 0.5, n)), jnp.ones(n))
    assert bool(kernels.small_field(spins, dt, k, b1dt, c0)) is small
    got = fused_rf.fused_rf_steps(spins, m0, dt, k, b1dt, c0)
    ref = fused_rf._fused_unrolled(kernels._rf_rotation, spins, m0, dt, k, b1dt, c0)
    series = fused_rf._fused_unrolled(kernels._rf_rotation_small, spins, m0, dt, k, b1dt, c0)
    for g, r, sr in zip(got, ref, series):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-13)
        if not small:  # the series is no approximation there: the bound must keep it out
            assert np.max(np.abs(np.asarray(sr) - np.asarray(r))) > 1e-6


def test_engine_chooses_the_rotation_on_the_host():
    """`engine._rf_rotation_mode`: the series for a 15° hard pulse (0.04 cycles in its one
    step), the general rotation for 90° (0.25 cycles), per step on the device for a mix
    and for traced values."""
    from mritwin.benchmarking import cartesian_gre
    from mritwin.simulate import engine

    twin = _twin(8, 0.2)

    def mode(flip, tw=twin, scale_half=None):
        # (max_rf_dt=None: the hard pulse as one step, whose flip decides)
        d = discretize(cartesian_gre(8, 0.2, flip=np.radians(flip)), IDEAL, max_rf_dt=None)
        if scale_half is not None:
            rf = np.flatnonzero(np.asarray(d.kind)[: d.n_real_steps] == 0)
            b1 = np.array(d.b1dt)
            b1[rf[: rf.size // 2]] *= scale_half
            d = dataclasses.replace(d, b1dt=b1)
        return engine._rf_rotation_mode(tw, d, None)

    assert mode(15) == "small" and mode(90) == "general" and mode(15, scale_half=6.0) == "auto"
    assert mode(15, tw=twin.replace(delta_f=np.full(twin.n_spins, 1e9))) == "general"  # off-resonance counts
    seen = []
    jax.jit(lambda df: seen.append(mode(15, tw=twin.replace(delta_f=df))) or df)(jnp.zeros(twin.n_spins))
    assert seen == ["auto"]
    # fused RF rows (a 2 ms sinc on a 1 µs raster): the series; where the bound fails or a
    # value is traced, the general form, never a conditional between two unrolled kernels
    d = discretize(epi_like(), IDEAL)
    d, table = plan_fused_rf(d, 3, 16)
    assert engine._rf_rotation_mode(twin, d, table, fused_only=True) == "small"
    # padding rows of the table are zeros (no field): not copies of step 0 (in a real
    # sequence often a long step, whose off-resonance phase then entered the rows' bound)
    n_rows = int(np.sum(np.asarray(d.kind)[: d.n_real_steps] == 3))
    assert n_rows < table.dt.shape[0]
    for v in table:
        assert np.any(np.asarray(v)[:n_rows]) or v is table.c0
        assert not np.any(np.asarray(v)[n_rows:])
    far = twin.replace(delta_f=np.full(twin.n_spins, 1e6))
    assert engine._rf_rotation_mode(far, d, table, fused_only=True) == "general"
    jax.jit(lambda df: seen.append(engine._rf_rotation_mode(twin.replace(delta_f=df), d, table,
                                                             fused_only=True)) or df)(jnp.zeros(twin.n_spins))
    assert seen == ["auto", "general"]
    # the twin's extent as a GPU computes it (one device call) equals the host's
    pos, df, b1 = (np.asarray(v) for v in (twin.position, twin.delta_f, twin.b1))
    np.testing.assert_allclose(engine._twin_extent(twin.position, twin.delta_f, twin.b1),
                               [np.abs(b1).max(), *np.abs(pos).max(0), np.abs(df).max()], rtol=1e-15)
    np.testing.assert_allclose(engine._twin_extent(twin.position, None, None), [1.0, *np.abs(pos).max(0), 0.0])


@pytest.mark.parametrize("flip", [15, 90])
def test_every_rotation_mode_gives_the_same_signal(flip, monkeypatch):
    """The engine forced to each rotation ("small" only where it is valid) against its own
    choice, float64: equal to rounding."""
    from mritwin.benchmarking import cartesian_gre
    from mritwin.simulate import engine

    twin = _twin(8, 0.2)
    seq = cartesian_gre(8, 0.2, flip=np.radians(flip))
    own = engine._rf_rotation_mode
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64).samples
    for forced in ("auto", "general") + (("small",) if flip == 15 else ()):
        monkeypatch.setattr(engine, "_rf_rotation_mode", lambda *a, forced=forced, **kw: forced)
        engine._RUNS.clear()
        got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64).samples
        assert _max_rel(got, ref) <= 1e-13, forced
    monkeypatch.setattr(engine, "_rf_rotation_mode", own)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_one_fusion_returns_its_arrays_unchanged(dtype):
    """`kernels.one_fusion` (the outputs of one multi-output reduction on the CPU): every
    value back bit for bit, infinities and NaN included, for vectors and batches of
    states; derivatives and batching pass through."""
    from mritwin.simulate import kernels

    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 33)).astype(dtype)
    a[0, :4] = [np.inf, -np.inf, np.nan, -0.0]
    b = rng.normal(size=(4, 33)).astype(dtype)
    for args in ((a, b), (a[0],), (a[1], b[1], a[2])):
        out = jax.jit(kernels.one_fusion)(*map(jnp.asarray, args))
        assert len(out) == len(args)
        for o, x in zip(out, args):
            assert o.dtype == x.dtype and o.shape == x.shape
            np.testing.assert_array_equal(np.asarray(o), x)
    x = jnp.linspace(-1.0, 1.0, 7, dtype=dtype)

    def f(x, fuse):
        u, v = (kernels.one_fusion if fuse else lambda *z: z)(jnp.sin(x) * x, jnp.cos(x))
        return jnp.sum(u * v + 2 * u)

    np.testing.assert_allclose(jax.grad(f)(x, True), jax.grad(f)(x, False), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda r: f(r, True))(jnp.stack([x, 2 * x])),
                               [f(x, False), f(2 * x, False)], rtol=1e-6)


# ---- the fused step's derivative: the written-out tangent ---------------------------------

def _fused_inputs(scale, rng, n=40, s=16):
    """Spins, a state and a 16-step run: fields of ~1e-3 cycles per step (``scale`` 1: the
    series) or ~1 cycle (``scale`` 1000: the general rotation)."""
    from mritwin.simulate.kernels import State

    spins = _spins(n, jnp.float64, rng, pos=4e-3)
    m = State(*(jnp.asarray(rng.uniform(-0.5, 0.5, n)) for _ in range(2)), jnp.asarray(rng.uniform(0.2, 1, n)))
    steps = (jnp.full(s, 1e-6), jnp.asarray(rng.uniform(-0.1, 0.1, (s, 3))) * scale,
             jnp.asarray(rng.uniform(-5e-4, 5e-4, s) + 1j * rng.uniform(-5e-4, 5e-4, s)) * scale,
             jnp.asarray(rng.uniform(-1e-4, 1e-4, s)) * scale)
    return spins, m, steps


def _stepped(spins, m, dt, k, b1dt, c0):
    """The reference: each raster step on its own (`kernels.rf_step`, general rotation)."""
    from mritwin.simulate import kernels

    def step(m, x):
        return kernels.rf_step(spins, m, *x, rotation="general"), None

    return jax.lax.scan(step, m, (dt, k, b1dt, c0))[0]


@pytest.mark.parametrize("rotation,scale", [("small", 1.0), ("general", 1.0), ("auto", 1000.0)])
def test_fused_step_derivatives_equal_stepping_and_finite_differences(rotation, scale):
    """`fused_rf_steps`' derivative (the unrolled value, the tangent written out over its
    16 raster steps, the rotations' coefficients differentiated at once) in forward and
    reverse mode, with respect to every input (state, each spin parameter, each step's
    duration, gradient moment, complex B1 and phase): equal to JAX's derivative of
    stepping each raster step alone (`kernels.rf_step`) to float64 rounding, and to central
    differences of the fused step; under `jax.vmap` (the engine's device axis) and to
    second order (`jax.hessian`: the rule is plain JAX, differentiable again)."""
    from mritwin.simulate import fused_rf

    spins, m, (dt, k, b1dt, c0) = _fused_inputs(scale, np.random.default_rng(11))
    params = {"m": m, "x": spins.x, "z": spins.z, "r1": spins.r1, "r2": spins.r2, "df": spins.df, "b1": spins.b1,
              "pd": spins.pd, "dt": dt, "k": k, "re": jnp.real(b1dt), "im": jnp.imag(b1dt), "c0": c0}
    weights = [jnp.asarray(np.random.default_rng(j).normal(size=spins.x.shape)) for j in range(3)]

    def loss(p, fused):
        sp = spins._replace(x=p["x"], z=p["z"], r1=p["r1"], r2=p["r2"], df=p["df"], b1=p["b1"], pd=p["pd"])
        args = (sp, p["m"], p["dt"], p["k"], p["re"] + 1j * p["im"], p["c0"])
        out = fused_rf.fused_rf_steps(*args, rotation=rotation) if fused else _stepped(*args)
        return sum(jnp.sum(w * c) for w, c in zip(weights, out))

    g = jax.grad(loss)(params, True)
    g_ref = jax.grad(loss)(params, False)
    # a fused step relaxes by its first raster step's duration (its steps last equally
    # long: durations are structure, never traced by the engine): compare the derivative
    # with respect to the common duration
    g["dt"], g_ref["dt"] = jnp.sum(g["dt"]), jnp.sum(g_ref["dt"])
    for name in params:
        for a, b in zip(jax.tree_util.tree_leaves(g[name]), jax.tree_util.tree_leaves(g_ref[name])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9,
                                       atol=1e-12 * max(float(jnp.abs(b).max()), 1.0), err_msg=name)
    rng = np.random.default_rng(2)
    direction = jax.tree_util.tree_map(lambda v: jnp.asarray(rng.normal(size=v.shape)) * jnp.abs(v).mean(), params)
    direction["dt"] = jnp.full_like(dt, 1e-7)  # (one duration)
    slope = jax.jvp(lambda p: loss(p, True), (params,), (direction,))[1]
    slope_ref = jax.jvp(lambda p: loss(p, False), (params,), (direction,))[1]
    np.testing.assert_allclose(float(slope), float(slope_ref), rtol=1e-10)
    dot = sum(jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves({**g, "dt": g["dt"] * 1e-7}),
                                             jax.tree_util.tree_leaves({**direction, "dt": 1.0})))
    np.testing.assert_allclose(float(dot), float(slope), rtol=1e-10)  # the transpose is the tangent's
    h = 1e-6
    shifted = [jax.tree_util.tree_map(lambda v, d, e=e: v + e * h * d, params, direction) for e in (1, -1)]
    fd = (loss(shifted[0], True) - loss(shifted[1], True)) / (2 * h)
    np.testing.assert_allclose(float(slope), float(fd), rtol=1e-6)
    # batched (the engine's device axis) and second order
    batched = jax.vmap(jax.grad(lambda r2: loss({**params, "r2": r2}, True)))(jnp.stack([spins.r2, 2 * spins.r2]))
    np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(g["r2"]), rtol=1e-12)
    if rotation != "small":
        return
    hess = jax.hessian(lambda a: loss({**params, "re": params["re"] * a}, True))(1.0)
    hess_ref = jax.hessian(lambda a: loss({**params, "re": params["re"] * a}, False))(1.0)
    np.testing.assert_allclose(float(hess), float(hess_ref), rtol=1e-8)


def test_fused_step_float32_gradient_is_as_accurate_as_differentiating_each_step():
    """In float32 the tangent loop recomputes the states as the forward steps do (each
    step's changes summed, then added once). The gradient of 8 fused steps of a slice
    selective pulse (128 raster steps, 500 spins) with respect to each spin's B1 and R2 is
    as close to float64's as JAX's derivative of stepping each raster step alone in
    float32 (`_stepped`): measured 1.2e-6 and 6.0e-7 (stepping: 2.5e-6, 6.1e-7)."""
    from mritwin.simulate import fused_rf
    from mritwin.simulate.kernels import State

    n, s = 500, 16
    rng = np.random.default_rng(1)
    spins = _spins(n, jnp.float64, rng)._replace(z=jnp.asarray(rng.uniform(-4e-3, 4e-3, n)))
    m0 = State(*(jnp.asarray(rng.uniform(-0.5, 0.5, n)) for _ in range(2)), jnp.asarray(rng.uniform(0.2, 1, n)))
    k = np.zeros((s, 3))
    k[:, 2] = 0.2  # [1/m] per 1 us step: a 47 mT/m slice gradient
    b1dt = 2e-3 * np.exp(1j * np.linspace(0, 2, s))

    def loss(b1, r2, dtype, fused):
        real = functools.partial(jax.tree_util.tree_map, lambda v: jnp.asarray(v, dtype))
        sp, m, dt, kk, c0 = real((spins._replace(b1=b1, r2=r2), m0, np.full(s, 1e-6), k, np.zeros(s)))
        bb = jnp.asarray(b1dt, jnp.complex64 if dtype == jnp.float32 else jnp.complex128)
        for _ in range(8):
            m = fused_rf.fused_rf_steps(sp, m, dt, kk, bb, c0, rotation="small") if fused else \
                _stepped(sp, m, dt, kk, bb, c0)
        weights = [jnp.asarray(np.random.default_rng(j).normal(size=n), dtype) for j in range(3)]
        return sum(jnp.sum(w * c) for w, c in zip(weights, m))

    b1, r2 = spins.b1.astype(jnp.float32), spins.r2.astype(jnp.float32)
    ref = jax.grad(loss, argnums=(0, 1))(spins.b1, spins.r2, jnp.float64, True)
    got = jax.grad(loss, argnums=(0, 1))(b1, r2, jnp.float32, True)
    stepped = jax.grad(loss, argnums=(0, 1))(b1, r2, jnp.float32, False)
    for g, st, r in zip(got, stepped, ref):
        assert g.dtype == jnp.float32
        err, err_stepped = (np.max(np.abs(np.asarray(x, np.float64) - np.asarray(r))) / np.max(np.abs(np.asarray(r)))
                            for x in (g, st))
        assert err < 1e-5 and err <= 1.5 * err_stepped, (err, err_stepped)
