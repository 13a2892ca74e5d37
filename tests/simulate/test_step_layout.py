"""Periodic step layouts (`mritwin.simulate.layout`): macro steps of static kinds give the
generic scan's result to float rounding, values and gradients, with heads, pads, masks
and per-step flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin
from mritwin.simulate import engine
from mritwin.simulate.layout import plan_step_layout
from tests.seqkit import IDEAL, hard, slab_twin

jax.config.update("jax_enable_x64", True)


def _fields(kinds, sample=None, spoil=None):
    kind = np.array([int(c) for c in kinds])
    zero = np.zeros_like(kind)

    def flags(s):
        return zero if s is None else np.array([int(c) for c in s])

    return {"kind": kind, "sample": flags(sample), "spoil": flags(spoil), "geo": zero - 1, "pulse": zero - 1}


# ---- the host planner ------------------------------------------------------------------

def test_a_periodic_train_is_one_pattern_without_pads():
    layout, steps = plan_step_layout(_fields("0121" * 64, "0100" * 64))
    assert layout.period == 4 and layout.n_macro == layout.n_live == 64
    assert layout.n_macro % layout.seg == 0
    assert [s.kind for s in layout.slots] == [0, 1, 2, 1]
    assert [s.sample for s in layout.slots] == [False, True, False, False]
    assert not any(s.masked for s in layout.slots)
    np.testing.assert_array_equal(steps.slot_of, np.arange(256))
    assert steps.active.all()


def test_a_head_runs_before_the_scan_with_its_own_flags():
    # an inversion pulse and its delay (no sample) before the TRs: the pulse runs before
    # the scan; the delay is like the spoiler delay of a TR (the pattern starts there)
    layout, steps = plan_step_layout(_fields("01" + "0121" * 20, "00" + "0100" * 20))
    assert layout.period == 4 and not any(s.masked for s in layout.slots)
    assert [(s.kind, s.sample, s.direct) for s in layout.head] == [(0, False, True)]
    assert [s.kind for s in layout.slots] == [1, 0, 1, 2]
    assert len(layout.head) + steps.slot_of.size + len(layout.tail) == 82
    np.testing.assert_array_equal(steps.slot_of, np.arange(steps.slot_of.size))
    np.testing.assert_array_equal(steps.index[:8], 1 + np.arange(8))
    # a step outside the pattern (a single-shot EPI's excitation) in the head
    layout, steps = plan_step_layout(_fields("13" + "12" * 40 + "1"))
    assert layout.period == 2 and [s.kind for s in layout.head] == [1, 3]
    assert [s.kind for s in layout.slots] == [1, 2] and [s.kind for s in layout.tail] == [1]


def test_an_irregular_step_inside_takes_pads_masked_at_their_positions():
    # a second inversion (pulse and delay) between two trains: two pads after it
    layout, steps = plan_step_layout(_fields("0121" * 10 + "01" + "0121" * 10, "0100" * 10 + "00" + "0100" * 10))
    assert layout.period == 4 and not layout.head and not layout.tail
    assert [s.masked for s in layout.slots] == [False, True, True, False]
    np.testing.assert_array_equal(steps.slot_of[40:44], [40, 43, 44, 45])
    assert not steps.active[41] and not steps.active[42]
    # a pad copies the inputs of a real step at the same position
    pads = np.flatnonzero(~steps.active)
    assert np.all(steps.slot_of[steps.index[pads]] % 4 == pads % 4)
    assert [s.sample for s in layout.slots] == [False, True, False, False]


def test_a_flag_that_differs_between_periods_stays_per_step():
    # samples on every other TR only: the sample flag of position 1 is not static
    layout, _ = plan_step_layout(_fields("01" * 40, "01" * 20 + "00" * 20))
    assert layout.period == 2
    assert layout.slots[0].sample is False and layout.slots[1].sample is None


def test_no_layout_for_steps_that_do_not_repeat_or_a_kind_outside_the_pattern():
    rng = np.random.default_rng(0)
    assert plan_step_layout(_fields("".join(map(str, rng.integers(0, 3, 200))))) is None
    assert plan_step_layout(_fields("12" * 20 + "3" + "12" * 20)) is None  # a pulse inside, played once
    assert plan_step_layout(_fields("0")) is None


def test_a_slot_whose_durations_repeat_is_marked_same_dt():
    # durations as the discretization makes them: differences of a time grid, so equal
    # durations differ in their last bits; position 3 (the delay) alternates two values
    t = np.cumsum(np.tile([1e-4, 4.58e-3, 1e-5, 6.69e-3], 40))
    dt = np.diff(np.r_[0.0, t])
    dt[3::8] += 2e-3
    assert np.unique(dt[1::4]).size > 1  # (not bit-equal)
    layout, _ = plan_step_layout(_fields("0121" * 40), dt=dt)
    assert [s.same_dt for s in layout.slots] == [True, True, True, False]
    # without durations (traced ones) no slot is
    layout, _ = plan_step_layout(_fields("0121" * 40))
    assert not any(s.same_dt for s in layout.slots)
    # a difference of 1e-12 s is a different duration
    dt = np.tile([1e-4, 4.58e-3, 1e-5, 6.69e-3], 40)
    dt[5] += 1e-12
    layout, _ = plan_step_layout(_fields("0121" * 40), dt=dt)
    assert [s.same_dt for s in layout.slots] == [True, False, True, True]


def test_segments_are_whole_macro_steps_and_filler_steps_are_skipped():
    layout, steps = plan_step_layout(_fields("0121" * 67))  # 67: prime
    assert layout.n_macro % layout.seg == 0 and layout.n_live == 67
    assert layout.n_macro > 67 and not steps.active[67 * 4:].any()
    assert not any(s.masked for s in layout.slots)  # (the filler is skipped, not masked)
    one, _ = plan_step_layout(_fields("0121" * 67), checkpoint=False)
    assert one.seg == one.n_macro == 67


# ---- the engine: the same signal as the generic scan -----------------------------------

def _both(twin, seq, monkeypatch, **kw):
    """(with the layout, generic) results of `simulate` in float64."""
    kw.setdefault("dtype", jnp.float64)
    a = mt.simulate(twin, seq, **kw)
    monkeypatch.setattr(engine, "MAX_STEP_PERIOD", 0)
    b = mt.simulate(twin, seq, **kw)
    monkeypatch.undo()
    return a, b


def _layout_of(twin, seq, method=mt.Bloch()):
    run = engine._plan(twin, seq, mt.Scanner(), None, method, jnp.float64, False, None, ())
    return run.call.keywords.get("layout")


def _close(a, b, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.fixture
def gre():
    return cartesian_gre(12, 0.2, tr=8e-3, te=3e-3), grid_twin(12, 0.2, t1=0.9, t2=0.07)


def test_spoiled_gre_with_the_layout_equals_the_generic_scan(gre, monkeypatch):
    seq, twin = gre
    layout = _layout_of(twin, seq)
    assert layout is not None and layout.period == 4 and not any(s.masked for s in layout.slots)
    # the RF and free steps' relaxation factors are computed once, before the scan
    assert all(s.same_dt for s in layout.slots)
    a, b = _both(twin, seq, monkeypatch, return_magnetization=True)
    _close(a.samples, b.samples)
    _close(a.magnetization, b.magnetization)


def test_a_prepared_head_and_ideal_spoiling(gre, monkeypatch):
    seq, twin = gre
    head = [mt.Block(rf=hard(np.pi, use="inversion")), mt.Block(duration=0.3)]
    prepped = mt.Sequence(head + list(seq.blocks))
    method = mt.Bloch(ideal_spoiling=True)
    layout = _layout_of(twin, prepped, method)
    assert layout is not None and layout.head  # (the inversion runs before the scan)
    a, b = _both(twin, prepped, monkeypatch, method=method, return_magnetization=True)
    _close(a.samples, b.samples)
    _close(a.magnetization, b.magnetization)
    # the inversion shows: the first line differs from the plain GRE's
    c = mt.simulate(twin, seq, method=method)
    assert np.abs(np.asarray(a.samples[:12]) - np.asarray(c.samples[:12])).max() > 1e-3


def test_durations_that_vary_between_periods_relax_per_step(monkeypatch):
    # a GRE whose delay after the readout alternates (two TRs) and whose RF pulse lasts
    # 0.2 ms in every TR: the delay's slot relaxes per step, the pulse's once per chunk;
    # both give the generic scan's result and the closed form
    adc = mt.ADC(8, 20e-6)
    blocks = []
    for i in range(24):
        blocks += [mt.Block(rf=hard(np.radians(40), duration=2e-4, phase=0.0)), mt.Block(duration=2e-3),
                   mt.Block(adc=adc), mt.Block(duration=(2e-3, 30e-3)[i % 2])]
    seq = mt.Sequence(blocks)
    twin = mt.Twin(position=np.zeros((3, 3)), pd=np.ones(3), t1=np.array([0.3, 0.8, 1.5]),
                   t2=np.array([0.02, 0.05, 0.1]))
    # (the pulse as one RF step: not prepared, not cut into 10 us steps)
    method = mt.Bloch(ideal_spoiling=True, prepare_pulses=False, max_rf_dt=None)
    layout = _layout_of(twin, seq, method)
    assert layout is not None and [s.kind for s in layout.slots] == [0, 1, 2, 1]
    assert [s.same_dt for s in layout.slots] == [True, True, True, False]
    a, b = _both(twin, seq, monkeypatch, method=method, return_magnetization=True)
    _close(a.samples, b.samples)
    _close(a.magnetization, b.magnetization)
    # closed form (ideal spoiling; an RF step relaxes dt/2, rotates, relaxes dt/2: an
    # instant rotation at the pulse's centre): Mz before pulse i+1 is
    # Mz_i cos(a) E1(TR_i) + 1 - E1(TR_i), with TR_i = 4.36 or 32.36 ms centre to centre;
    # the first sample 2.11 ms after the centre shows Mz_i sin(a) E2(2.11 ms)
    alpha, t1, t2 = np.radians(40), np.asarray(twin.t1), np.asarray(twin.t2)
    mz, want = np.ones(3), []
    for i in range(24):
        want.append(np.sum(mz * np.sin(alpha) * np.exp(-2.11e-3 / t2)))
        e1 = np.exp(-(4.36e-3, 32.36e-3)[i % 2] / t1)
        mz = mz * np.cos(alpha) * e1 + 1 - e1
    got = np.abs(np.asarray(a.samples)).reshape(24, 8)[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_repeated_shaped_pulses_are_static_in_the_layout(monkeypatch):
    # a slice-selective sinc pulse prepared once and applied per TR (the pulse kind)
    sc = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    rf, gz, gzr = mt.make_sinc_pulse(np.radians(20), 1e-3, slice_thickness=5e-3, scanner=sc)
    adc = mt.ADC(8, 20e-6)
    blocks = []
    for _ in range(10):
        blocks += [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr), mt.Block(adc=adc), mt.Block(duration=4e-3)]
    seq = mt.Sequence(blocks)
    twin = mt.Twin(position=np.c_[np.zeros(9), np.zeros(9), np.linspace(-4e-3, 4e-3, 9)],
                   pd=np.ones(9), t1=np.full(9, 0.8), t2=np.full(9, 0.06))
    layout = _layout_of(twin, seq)
    assert layout is not None
    assert any(s.pulse is not None and s.pulse >= 0 for s in layout.slots)
    a, b = _both(twin, seq, monkeypatch)
    _close(a.samples, b.samples)


@pytest.mark.slow
def test_gradients_through_the_layout_equal_the_generic_scan(gre, monkeypatch):
    seq, twin = gre

    def loss(t1, pd):
        sig = mt.simulate(twin.replace(t1=t1, pd=pd), seq, dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(sig) ** 2)

    args = (jnp.asarray(twin.t1, jnp.float64), jnp.asarray(twin.pd, jnp.float64))
    ga = jax.grad(loss, argnums=(0, 1))(*args)
    monkeypatch.setattr(engine, "MAX_STEP_PERIOD", 0)
    gb = jax.grad(loss, argnums=(0, 1))(*args)
    for x, y in zip(ga, gb):
        _close(x, y, rtol=1e-9)
        assert np.abs(np.asarray(y)).max() > 0


@pytest.mark.slow
def test_windows_of_irregular_polarity_an_inner_preparation_and_a_window_in_the_tail(monkeypatch):
    """Readouts of both polarities in no periodic order: the window position's table row
    (and so its deferral) stays per step. An inversion between two trains takes pads
    (masked); a 90° pulse and two readouts before the train run before the scan, and give
    their samples at once (not deferred)."""
    sc = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    n, dwell, fov = 8, 20e-6, 0.2
    dk = 1 / fov
    rng = np.random.default_rng(3)

    def readout(sign):
        gx = mt.make_trapezoid("x", flat_area=sign * n * dk, flat_time=n * dwell, scanner=sc)
        pre = mt.make_trapezoid("x", area=-gx.area / 2, duration=4e-4, scanner=sc)
        return [mt.Block(gx=pre), mt.Block(gx=gx, adc=mt.ADC(n, dwell, delay=gx.rise_time))]

    def tr(sign):
        return [mt.Block(rf=hard(np.radians(25)))] + readout(sign) + [mt.Block(duration=3e-3)]

    blocks = [mt.Block(rf=hard(np.pi / 2))] + readout(1.0) + readout(-1.0) + [mt.Block(duration=5e-3)]
    for i, sign in enumerate(rng.choice([-1.0, 1.0], 24)):
        if i == 12:
            blocks += [mt.Block(rf=hard(np.pi, use="inversion")), mt.Block(duration=0.05)]
        blocks += tr(sign)
    seq = mt.Sequence(blocks)
    twin = grid_twin(8, fov, t1=0.8, t2=0.05)
    layout = _layout_of(twin, seq)
    assert layout is not None
    windows = [s for s in layout.slots if s.kind == 2]
    assert windows and all(s.geo is None for s in windows)
    assert any(s.masked for s in layout.slots)
    assert any(s.kind == 2 and s.direct for s in layout.head)
    a, b = _both(twin, seq, monkeypatch, return_magnetization=True)
    _close(a.samples, b.samples)
    _close(a.magnetization, b.magnetization)
    assert np.abs(np.asarray(a.samples[:2 * n])).min() > 1e-3 * np.abs(np.asarray(a.samples)).max()
    # several chunks and two coils: the step inputs are laid out per chunk
    coils = np.stack([np.ones(twin.n_spins), np.linspace(0.5, 1.5, twin.n_spins)])
    method = mt.Bloch(chunk_size=16)
    a, b = _both(twin.replace(coil_sensitivity=coils), seq, monkeypatch, method=method)
    _close(a.samples, b.samples)


def test_macro_steps_that_fill_the_last_segment_are_skipped(monkeypatch):
    # a count of TRs whose macro steps have no divisor near the segment length: the last
    # segment is filled with macro steps that are skipped
    twin = grid_twin(8, 0.2, t1=0.9, t2=0.07)
    for n_tr in (67, 71, 73, 79, 83, 89):
        seq = cartesian_gre(n_tr, 0.2, tr=8e-3, te=3e-3)
        layout = _layout_of(twin, seq)
        if layout.n_live < layout.n_macro:
            break
    assert layout.n_live < layout.n_macro
    a, b = _both(twin, seq, monkeypatch, return_magnetization=True)
    _close(a.samples, b.samples)
    _close(a.magnetization, b.magnetization)


def test_fused_steps_get_no_layout():
    # a 1000-sample pulse stepped sample by sample runs as fused steps of 16 (`fused_rf`);
    # their periodic runs laid out as macro steps put one unrolled kernel per slot in the
    # program (compilation 5 s -> 38 s in float64): the generic scan runs them. (A ramp: a
    # constant shape's equal steps would be one held step, `held_rf`.)
    rf = mt.make_arbitrary_rf(np.linspace(0.5, 1.0, 1000), flip_angle=np.pi / 2, raster=1e-6, delay=0.0,
                              scanner=mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0))
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-6))])
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[0.005], t2=[0.002], delta_f=[300.0])
    method = mt.Bloch(rf_dt=1e-6)
    run = engine._plan(twin, seq, mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0), None, method,
                       jnp.float64, False, None, ())
    assert run.call.keywords["fuse_kind"] is not None
    assert run.call.keywords.get("layout") is None
    # without the fused steps the same pulse's steps repeat with period 1: laid out
    run = engine._plan(twin, seq, mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0), None,
                       mt.Bloch(rf_dt=1e-6, fuse_rf=1), jnp.float64, False, None, ())
    assert run.call.keywords["fuse_kind"] is None and run.call.keywords.get("layout") is not None


def test_traced_held_steps_repeated_in_the_layout_get_the_generic_scan(monkeypatch):
    # a flip-angle gradient of block pulses (held steps, `held_rf`, with a traced table,
    # more rows than engine.HELD_PREMAP_ROWS) whose layout would hold more than
    # HELD_LAYOUT_COPIES copies of the held step (the dummy TRs before the readout period
    # land in the head) runs the generic scan, one copy, instead: each copy is a power of
    # affine maps differentiated on its own (notebook 04's flip gradient: compile 0.48x,
    # bench_held_gradient.py). The value equals the laid-out program's, and the gradient
    # central differences of the concrete forward model.
    twin = slab_twin(4)
    method = mt.Bloch(ideal_spoiling=True)

    def signal(flip):
        blocks = []
        for acq in (False, True):
            for _ in range(4):
                blocks.append(mt.Block(rf=hard(flip, 100e-6)))
                blocks.append(mt.Block(adc=mt.ADC(2, 20e-6, delay=4e-3) if acq else None, duration=6e-3))
            blocks.append(mt.Block(duration=20e-3))
        seq = mt.Sequence(blocks)
        plans.append(engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ()).call.keywords)
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples) ** 2)

    monkeypatch.setattr(engine, "HELD_PREMAP_ROWS", 0)  # (few rows: their maps would be premapped)
    plans = []
    flip = jnp.asarray(0.4)
    v, g = jax.value_and_grad(signal)(flip)
    assert plans[-1]["held"] is not None and plans[-1]["layout"] is None
    monkeypatch.setattr(engine, "HELD_LAYOUT_COPIES", 1000)
    v_laid = jax.jit(signal)(flip)  # (the forward pass: its gradient is what compiles slowly)
    kw = plans[-1]
    assert kw["layout"] is not None and engine._slot_copies(kw["layout"], kw["held"].kind) > 2
    np.testing.assert_allclose(v, v_laid, rtol=1e-12)
    h = 1e-5
    fd = (signal(0.4 + h) - signal(0.4 - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7)
