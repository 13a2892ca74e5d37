"""Held RF steps: a block pulse played once is cut into 10 us steps and applied as one step,
the n-th power of one step's affine map (`mritwin.simulate.held_rf`). Checked against
stepping every step (``Bloch(fuse_rf=1)``), forward and reverse mode, against the closed
form of a constant field, and for what must not count as held."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import exact_constant_pulse
from mritwin.sequence.discretize import discretize
from mritwin.simulate import engine, kernels
from mritwin.simulate.held_rf import held_pulse_counts, held_rf_step, held_runs, plan_held_rf
from mritwin.simulate.kernels import Spins, State
from mritwin.simulate.prepared_rf import plan_prepared_rf
from tests.seqkit import IDEAL, hard, slab_twin

jax.config.update("jax_enable_x64", True)

STEP = mt.Bloch(fuse_rf=1, prepare_pulses=False)  # every 10 us step on its own: the reference
HELD = mt.Bloch(prepare_pulses=False)  # (no pulse repeats below; prepared pulses stay out of the way)


def _train(flips=(20.0, 35.0, 50.0, 15.0, 60.0), n_read=8, fov=0.2):
    """Block pulses of different flips, each played once (phase and frequency offsets,
    one on a slice-select gradient), each followed by a readout line and a spoiler."""
    dwell = 20e-6
    amp = (1 / fov) / (dwell * IDEAL.gamma_bar)
    gx = mt.make_trapezoid("x", amplitude=amp, flat_time=n_read * dwell, scanner=IDEAL)
    pre = mt.make_trapezoid("x", area=-gx.area / 2, duration=0.3e-3, scanner=IDEAL)
    spoil = mt.make_trapezoid("x", area=4 * n_read / fov, duration=0.6e-3, scanner=IDEAL)
    blocks = []
    for i, f in enumerate(flips):
        rf = hard(jnp.radians(f), 0.2e-3 + 0.05e-3 * i, phase=0.3 * i, freq=40.0 * (i - 2))
        if i == 2:  # on a slice-select gradient: the steps' moments are equal and nonzero
            gz = mt.make_trapezoid("z", amplitude=2e-3, flat_time=rf.duration, scanner=IDEAL)
            rf = mt.make_block_pulse(jnp.radians(f), 0.3e-3, delay=gz.rise_time, scanner=IDEAL)
            blocks.append(mt.Block(rf=rf, gz=gz))
        else:
            blocks.append(mt.Block(rf=rf))
        blocks += [mt.Block(gx=pre), mt.Block(gx=gx, adc=mt.ADC(n_read, dwell, delay=gx.rise_time)),
                   mt.Block(gx=spoil)]
    return mt.Sequence(blocks)


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_each_block_pulse_becomes_one_held_step():
    d = discretize(_train(), IDEAL)
    m = d.n_real_steps
    n_rf = int(np.sum(np.asarray(d.kind)[:m] == 0))
    short, table = plan_held_rf(d, 3)
    kind = np.asarray(short.kind)[: short.n_real_steps]
    assert np.sum(kind == 0) == 0 and np.sum(kind == 3) == 5
    n = np.asarray(table.n)[:5]
    # 0.2, 0.25, 0.3, 0.35, 0.4 ms in 10 us steps
    np.testing.assert_array_equal(n, [20, 25, 30, 35, 40])
    assert n.sum() == n_rf and short.n_real_steps == m - (n_rf - 5)
    np.testing.assert_allclose(np.asarray(table.dt)[:5], 10e-6, rtol=1e-9)
    # a row times its count is the run: durations, moments and B1 integrals add up
    held = np.asarray(short.count)[: short.n_real_steps][kind == 3]
    np.testing.assert_allclose(np.asarray(short.dt)[: short.n_real_steps][kind == 3],
                               np.asarray(table.dt)[held] * n, rtol=1e-12)
    np.testing.assert_allclose(np.sum(np.asarray(table.b1dt)[:5] * n),
                               np.sum(np.asarray(d.b1dt)[:m][np.asarray(d.kind)[:m] == 0]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(table.k)[2, 2] * 30, 2e-3 * IDEAL.gamma_bar * 0.3e-3, rtol=1e-9)
    assert short.n_adc == d.n_adc
    # padding rows are the identity
    assert np.all(np.asarray(table.n)[5:] == 0)


def test_what_is_not_held():
    # a slow ramp (each step within rounding of its neighbour, not of the first), a sampled
    # step, a spoiled step and a run shorter than HELD_MIN_STEPS stay steps
    ramp = mt.make_arbitrary_rf(1 + 1e-8 * np.arange(400), flip_angle=np.pi / 2, raster=1e-6, delay=0.0,
                                scanner=IDEAL)
    seq = mt.Sequence([mt.Block(rf=ramp), mt.Block(adc=mt.ADC(1, 1e-6))])
    d = discretize(seq, IDEAL, rf_dt=1e-6)
    assert held_runs(d) is None
    short = hard(0.3, 30e-6)  # 3 steps of 10 us
    d = discretize(mt.Sequence([mt.Block(rf=short), mt.Block(adc=mt.ADC(1, 1e-6))]), IDEAL)
    assert held_runs(d) is None
    # an ADC sample during a block pulse splits its run where it is taken
    rf = hard(0.5, 0.2e-3)
    seq = mt.Sequence([mt.Block(rf=rf, adc=mt.ADC(1, 2e-6, delay=0.1e-3 - 1e-6))])
    d = discretize(seq, IDEAL)
    a, b = held_runs(d)
    sampled = np.nonzero(np.asarray(d.sample)[: d.n_real_steps])[0]
    assert sampled.size == 1 and not np.any((a <= sampled[0]) & (sampled[0] < b))
    assert a.size == 2


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-4)])
def test_held_steps_equal_stepping(dtype, tol):
    """Off-resonance, B1 map, frequency and phase offsets, a slice-select gradient."""
    twin, seq = slab_twin(6), _train()
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP, return_magnetization=True)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=dtype, method=HELD, return_magnetization=True)
    run = engine._plan(twin, seq, IDEAL, None, HELD, dtype, False, None, ())
    assert run.call.keywords["held"] is not None  # (it ran held steps)
    assert _max_rel(got.samples, ref.samples) <= tol
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= tol


def _pulses_and_lines(pulses, n_read=8, dwell=20e-6):
    gx = mt.make_trapezoid("x", amplitude=(1 / 0.2) / (dwell * IDEAL.gamma_bar), flat_time=n_read * dwell,
                           scanner=IDEAL)
    blocks = []
    for rf in pulses:
        blocks += [mt.Block(rf=rf), mt.Block(gx=gx, adc=mt.ADC(n_read, dwell, delay=gx.rise_time))]
    return mt.Sequence(blocks)


@pytest.mark.parametrize("recurring", ["block", "sinc"])
def test_held_steps_and_recurring_pulses_together(recurring):
    # a pulse played four times between block pulses played once (held steps). A recurring
    # shaped pulse is prepared; a recurring block pulse becomes held steps too (one kind
    # fewer: the periodic step layout of a fingerprinting train whose flips recur stays)
    again = (hard(np.radians(30.0), 0.2e-3) if recurring == "block"
             else mt.make_sinc_pulse(np.radians(30.0), 0.2e-3, delay=0.0, scanner=IDEAL))
    seq = _pulses_and_lines([hard(np.radians(20.0), 0.2e-3), again, again, hard(np.radians(45.0), 0.25e-3), again,
                             again])
    twin = slab_twin(6)
    run = engine._plan(twin, seq, IDEAL, None, mt.Bloch(), jnp.float64, False, None, ())
    kw = run.call.keywords
    assert kw["held"] is not None
    if recurring == "block":
        assert kw["rf_kind"] is None and np.sum(np.asarray(kw["htab"].n) > 0) == 6
    else:
        assert kw["rf_kind"] is not None and kw["rf_held"] == (0,)
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64)
    assert _max_rel(got.samples, ref.samples) <= 1e-12


def test_held_step_is_the_power_of_a_step():
    rng = np.random.default_rng(3)
    n = 50
    sp = Spins(x=jnp.asarray(rng.uniform(-0.1, 0.1, n)), y=jnp.zeros(n), z=jnp.zeros(n), pd=jnp.ones(n),
               r1=jnp.asarray(rng.uniform(0.5, 3, n)), r2=jnp.asarray(rng.uniform(5, 80, n)),
               df=jnp.asarray(rng.normal(0, 50, n)), b1=jnp.asarray(rng.uniform(0.8, 1.2, n)),
               coil_re=None, coil_im=None)
    m0 = State(*(jnp.asarray(rng.uniform(-0.6, 0.6, n)) for _ in range(3)))
    dt, k, b1dt, c0 = 10e-6, jnp.array([30.0, 0.0, 0.0]), 0.004 + 0.002j, 0.01
    for count in (0, 1, 2, 7, 20, 33):
        m = m0
        for _ in range(count):
            m = kernels.rf_step(sp, m, dt, k, b1dt, c0, rotation="general")
        got = held_rf_step(sp, m0, dt, k, b1dt, c0, jnp.int32(count), 6, rotation="general")
        np.testing.assert_allclose(np.stack(got), np.stack(m), rtol=0, atol=1e-14)


def test_block_pulse_matches_the_closed_form_as_one_held_step():
    # what the held step is for: a block pulse in 10 us steps, one engine step
    for flip, dur, t1, t2 in ((90, 1e-3, 1.0, 0.01), (180, 0.47e-3, 0.5, 0.01)):
        rf = mt.make_block_pulse(np.radians(flip), dur, delay=0.0, scanner=IDEAL)
        seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-9))])
        twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2], delta_f=[30.0])
        run = engine._plan(twin, seq, IDEAL, None, HELD, jnp.float64, True, None, ())
        assert run.call.keywords["held"] is not None and run.dseq.n_real_steps <= 3
        sig = mt.simulate(twin, seq, scanner=IDEAL, method=HELD, dtype=jnp.float64, return_magnetization=True)
        ref = exact_constant_pulse(complex(np.conj(rf.signal[0])), 30.0, t1, t2, dur)
        assert np.max(np.abs(np.asarray(sig.magnetization[0]) - ref)) < 3e-6


def test_gradients_through_held_steps_equal_stepping():
    twin, seq = slab_twin(4), _train(flips=(30.0, 50.0, 20.0))

    def loss(method):
        def f(t1, t2, b1):
            tw = mt.Twin(position=twin.position, pd=twin.pd, t1=t1, t2=t2, delta_f=twin.delta_f, b1=b1)
            s = mt.simulate(tw, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples
            return jnp.sum(jnp.abs(s) ** 2)
        return jax.value_and_grad(f, argnums=(0, 1, 2))(jnp.asarray(twin.t1), jnp.asarray(twin.t2),
                                                         jnp.asarray(twin.b1))

    (v_ref, g_ref), (v, g) = loss(STEP), loss(HELD)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12 * np.max(np.abs(b)))


def test_held_maps_premapped_once_per_chunk_equal_the_power_at_each_step(monkeypatch):
    # a table of few rows (`engine._premapped_rows`): the maps of its rows computed once
    # per chunk and gathered at each held step; with HELD_PREMAP_ROWS = 0 the power is
    # computed at each step. Same arithmetic: forward, gradients with respect to the B1
    # map and to traced flips (a traced table) agree to float64 rounding.
    twin = slab_twin(4)
    flips0 = jnp.asarray([30.0, 50.0])

    def seq_of(flips):  # two block pulses (phase and frequency offsets), each with a sample
        return mt.Sequence([b for i, f in enumerate(flips) for b in (
            mt.Block(rf=hard(jnp.radians(f), 0.2e-3, phase=0.3 * i, freq=40.0 * i)),
            mt.Block(adc=mt.ADC(2, 20e-6, delay=1e-3), duration=5e-3))])

    def loss(b1, flips):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=twin.t2, delta_f=twin.delta_f, b1=b1)
        s = mt.simulate(tw, seq_of(flips), scanner=IDEAL, method=HELD, dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(s) ** 2)

    def run():
        held = engine._plan(twin, seq_of((30.0, 50.0)), IDEAL, None, HELD, jnp.float64, False, None,
                            ()).call.keywords["held"]
        out = jax.value_and_grad(loss, argnums=(0, 1))(jnp.asarray(twin.b1), flips0)
        return held, out

    held, (v, g) = run()
    assert held.premapped == 2
    monkeypatch.setattr(engine, "HELD_PREMAP_ROWS", 0)
    held_ref, (v_ref, g_ref) = run()
    assert held_ref.premapped == 0
    np.testing.assert_allclose(v, v_ref, rtol=1e-13)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-13 * np.max(np.abs(b)))


def test_jit_takes_the_same_held_steps():
    twin, seq = slab_twin(4), _train(flips=(25.0, 40.0, 10.0))
    eager = mt.simulate(twin, seq, scanner=IDEAL, method=HELD, dtype=jnp.float64).samples

    @jax.jit
    def run(t2):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=t2, delta_f=twin.delta_f, b1=twin.b1)
        return mt.simulate(tw, seq, scanner=IDEAL, method=HELD, dtype=jnp.float64).samples

    assert _max_rel(run(jnp.asarray(twin.t2)), eager) <= 1e-13


def _gre(n_tr=8, flip=25.0, dur=0.2e-3, n_read=8, fov=0.2):
    """A spoiled GRE with a repeated block pulse (prepared) and RF spoiling."""
    dwell = 20e-6
    gx = mt.make_trapezoid("x", amplitude=(1 / fov) / (dwell * IDEAL.gamma_bar), flat_time=n_read * dwell,
                           scanner=IDEAL)
    gy = [mt.make_trapezoid("y", area=(i - n_tr / 2) / fov, duration=0.3e-3, scanner=IDEAL) for i in range(n_tr)]
    spoil = mt.make_trapezoid("x", area=4 * n_read / fov, duration=0.6e-3, scanner=IDEAL)
    blocks = []
    for i in range(n_tr):
        phase = np.radians(117.0) * i * (i + 1) / 2
        blocks += [mt.Block(rf=hard(np.radians(flip), dur, phase=phase)), mt.Block(gy=gy[i]),
                   mt.Block(gx=gx, adc=mt.ADC(n_read, dwell, delay=gx.rise_time, phase_offset=phase)),
                   mt.Block(gx=spoil)]
    return mt.Sequence(blocks)


def test_prepared_block_pulse_is_the_power_of_its_step():
    seq, twin = _gre(), slab_twin(6)
    d = discretize(seq, IDEAL)
    short, table = plan_prepared_rf(d, 3)
    assert held_pulse_counts(table) == (20,)
    run = engine._plan(twin, seq, IDEAL, None, mt.Bloch(), jnp.float64, False, None, ())
    assert run.call.keywords["rf_held"] == (20,)
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP, return_magnetization=True)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    assert _max_rel(got.samples, ref.samples) <= 1e-12
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) <= 1e-12
    # float32 as close as stepping itself
    f32 = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float32)
    f32_step = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float32, method=STEP)
    assert _max_rel(f32.samples, ref.samples) <= max(2 * _max_rel(f32_step.samples, ref.samples), 1e-6)


def test_prepared_block_pulse_on_rf_groups():
    # a twin whose spins form few RF groups (no field map, two tissues, the pulse without
    # gradients): a block pulse of 20 steps is prepared on the groups
    c = (np.arange(16) - 8) * 0.2 / 16
    x, y = np.meshgrid(c, c, indexing="ij")
    tissue = (x.ravel() > 0).astype(int)
    twin = mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(x.size)], pd=np.where(tissue, 0.8, 1.0),
                   t1=np.where(tissue, 0.9, 1.4), t2=np.where(tissue, 0.05, 0.1))
    seq = _gre(n_tr=6)
    run = engine._plan(twin, seq, IDEAL, None, mt.Bloch(), jnp.float64, False, None, ())
    assert run.call.keywords["rf_held"] == (20,) and run.call.args[0].rf_group is not None
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=STEP)
    got = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64)
    assert _max_rel(got.samples, ref.samples) <= 1e-12


def test_held_pulse_counts_only_for_equal_steps():
    sinc = mt.make_sinc_pulse(0.5, 0.2e-3, delay=0.0, scanner=IDEAL)
    d = discretize(mt.Sequence([mt.Block(rf=sinc), mt.Block(duration=1e-3)] * 4 + [mt.Block(adc=mt.ADC(1, 1e-6))]),
                   IDEAL)
    _, table = plan_prepared_rf(d, 3)
    assert held_pulse_counts(table) == (0,)  # a shaped pulse is stepped when prepared


def test_held_pulse_counts_ignore_the_rounding_of_a_zero_moment():
    # the last 10 us step of a block pulse carries a moment of 2e-23 /m from the rounding
    # of a gradient integral (as in the fingerprinting train): zero next to the sequence's
    # readout moments, so the pulse is still one held run
    seq = _gre()
    d = discretize(seq, IDEAL)
    _, table = plan_prepared_rf(d, 3)
    k = np.array(table.k)
    k[0, 19, 0] = -2e-23
    rounded = table._replace(k=k)
    assert held_pulse_counts(rounded, d) == (20,)
    k[0, 19, 0] = 1e-3  # a real moment: not held
    assert held_pulse_counts(table._replace(k=k), d) == (0,)


def test_gradients_with_respect_to_the_flip_angles_go_through_held_steps():
    # traced B1 (optimizing a flip train): the runs come from the steps' RF samples
    # (`DiscreteSequence.rf_sample`), the table's B1 stays traced; value and gradient equal
    # stepping's
    twin = slab_twin(4)

    def seq_of(flips):
        return _train(flips=flips)

    flips0 = jnp.asarray([30.0, 50.0, 20.0, 45.0, 10.0])
    seen = []

    def loss(flips, method):
        seq = seq_of(flips)
        d = discretize(seq, IDEAL)
        if isinstance(flips, jax.core.Tracer):  # (the finite differences below: concrete)
            assert isinstance(d.b1dt, jax.core.Tracer) and not isinstance(d.kstep, jax.core.Tracer)
        seen.append(engine._plan(twin, d, IDEAL, None, method, jnp.float64, False, None, ()).call.keywords["held"])
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples) ** 2)

    v, g = jax.value_and_grad(loss)(flips0, HELD)
    assert seen[-1] is not None and seen[-1][0] >= 2  # held steps were planned in the trace
    v_ref, g_ref = jax.value_and_grad(loss)(flips0, STEP)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-9)
    # and against central differences of the (held) forward model
    h = 1e-4
    fd = [(loss(flips0.at[i].add(h), HELD) - loss(flips0.at[i].add(-h), HELD)) / (2 * h) for i in (0, 3)]
    np.testing.assert_allclose(np.asarray(g)[[0, 3]], np.asarray(fd), rtol=1e-6)


def test_rf_sample_marks_the_steps_of_one_sample():
    d = discretize(_train(flips=(20.0, 30.0)), IDEAL)
    m = d.n_real_steps
    sid, kind = np.asarray(d.rf_sample)[:m], np.asarray(d.kind)[:m]
    assert np.all(sid[kind != 0] == -1) and np.all(sid[kind == 0] >= 0)
    # each block pulse is one sample: 20 and 25 steps of 10 us
    _, counts = np.unique(sid[kind == 0], return_counts=True)
    np.testing.assert_array_equal(counts, [20, 25])
    # a shaped pulse on its raster: one step per sample, each its own
    sinc = mt.make_sinc_pulse(0.5, 0.2e-3, delay=0.0, scanner=IDEAL)
    d = discretize(mt.Sequence([mt.Block(rf=sinc), mt.Block(adc=mt.ADC(1, 1e-6))]), IDEAL)
    sid = np.asarray(d.rf_sample)[: d.n_real_steps][np.asarray(d.kind)[: d.n_real_steps] == 0]
    assert sid.size > 100 and np.unique(sid).size == sid.size
