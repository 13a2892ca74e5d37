"""Planned runs remembered per (twin, sequence) object, and plans made inside jit traces."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin
from mritwin.sequence.discretize import discretize
from mritwin.simulate import engine
from tests.seqkit import IDEAL, hard


@pytest.fixture
def gre():
    return cartesian_gre(12, 0.2, tr=8e-3, te=3e-3), grid_twin(12, 0.2, t1=0.9, t2=0.07)


def _entry(twin, seq):
    return [v for v in engine._RUNS.values() if v[0]() is twin and v[1]() is seq]


def test_a_repeated_call_reuses_its_plan_and_gives_the_same_signal(gre):
    seq, twin = gre
    first = mt.simulate(twin, seq).samples
    (entry,) = _entry(twin, seq)
    again = mt.simulate(twin, seq).samples
    assert _entry(twin, seq)[0][2] is entry[2]  # the same planned run
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    # another twin object with other values: planned anew, and the signal follows the values
    half = mt.simulate(twin.replace(pd=twin.pd * 0.5), seq).samples
    np.testing.assert_allclose(np.asarray(half), 0.5 * np.asarray(first), rtol=1e-5, atol=1e-6)


def test_a_fixed_twin_keeps_its_plan_between_calls_with_new_twins(gre):
    """Least recently used first out: alternating a fixed twin with new ones (a reference
    image between fit iterations) keeps the fixed twin's plan."""
    seq, twin = gre
    mt.simulate(twin, seq)
    (kept,) = _entry(twin, seq)
    for scale in (0.9, 0.8, 0.7):
        mt.simulate(twin.replace(t1=twin.t1 * scale), seq)
        assert _entry(twin, seq)[0][2] is kept[2]
        mt.simulate(twin, seq)


def test_the_plan_goes_when_the_twin_goes():
    seq, twin = cartesian_gre(12, 0.2, tr=8e-3, te=3e-3), grid_twin(12, 0.2, t1=0.9, t2=0.07)
    mt.simulate(twin, seq)
    assert _entry(twin, seq)
    keys = [k for k, v in engine._RUNS.items() if v[0]() is twin]
    assert len(keys) == 1
    del twin
    gc.collect()
    # (by key: an earlier test's twin may go in the same collection)
    assert keys[0] not in engine._RUNS  # (the packed spins are released with it)


def test_planning_limits_are_part_of_the_key(gre, monkeypatch):
    seq, twin = gre
    tabled = mt.simulate(twin, seq, return_magnetization=True)
    monkeypatch.setattr(engine, "MAX_EXACT_GEOMETRIES", 0)  # windows computed anew
    anew = mt.simulate(twin, seq, return_magnetization=True)
    assert len(_entry(twin, seq)) == 2
    np.testing.assert_allclose(np.asarray(anew.samples), np.asarray(tabled.samples), rtol=1e-4, atol=1e-5)


def test_traced_values_and_explicit_coils_are_not_remembered(gre):
    seq, twin = gre
    engine._RUNS.clear()

    def loss(pd):
        return jnp.sum(jnp.abs(mt.simulate(twin.replace(pd=pd), seq).samples) ** 2)

    g = jax.grad(loss)(twin.pd)
    assert np.all(np.isfinite(np.asarray(g))) and not engine._RUNS
    coils = jnp.ones((1, twin.n_spins), jnp.complex64)
    mt.simulate(twin, seq, coils=coils)
    assert not engine._RUNS


@pytest.mark.parametrize("method", [mt.Bloch(), mt.Bloch(rf_interpolation=1e-6)])
def test_a_simulation_inside_jit_then_outside(method):
    """Called inside ``jax.jit`` with the twin and sequence closed over, the host plans are
    made inside the trace: none of them may be remembered (they hold the trace's values),
    and the call outside gives the same signal."""
    seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=20, slice_thickness=5e-3,
                           dims=2)
    twin = mt.phantoms.brain(2, matrix=16, fov=0.2, t2_prime=False)
    inside = jax.jit(lambda: mt.simulate(twin, seq, method=method).samples)()
    outside = mt.simulate(twin, seq, method=method).samples
    scale = float(jnp.abs(outside).max())
    assert float(jnp.abs(inside - outside).max()) < 1e-5 * scale


@pytest.mark.slow
def test_a_sequence_with_a_traced_flip_angle_is_known_as_traced_and_not_remembered(gre):
    """Whether a sequence holds tracers is remembered with the object (walking a few hundred
    blocks per call cost ~3 ms): a sequence built from a traced flip angle is never
    remembered, and the gradient matches a finite difference."""
    _, twin = gre
    engine._RUNS.clear()

    def seq_of(flip):
        return mt.Sequence([mt.Block(rf=hard(flip)), mt.Block(adc=mt.ADC(4, 1e-4)), mt.Block(duration=5e-3)] * 3)

    def signal(flip):
        return jnp.sum(jnp.abs(mt.simulate(twin, seq_of(flip), scanner=IDEAL).samples) ** 2)

    seen = []

    def traced(flip):
        seq = seq_of(flip)
        seen.append(engine._holds_tracer(seq))
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL).samples) ** 2)

    g = jax.grad(traced)(0.3)
    assert seen == [True] and not engine._RUNS
    fd = (signal(0.3 + 1e-3) - signal(0.3 - 1e-3)) / 2e-3
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-2)
    plain = seq_of(0.3)
    assert engine._holds_tracer(plain) is False and engine._holds_tracer(plain) is False


@pytest.mark.parametrize("dynamics", [False, True])
def test_a_motion_object_keeps_its_discretization(gre, monkeypatch, dynamics):
    """A concrete motion is remembered with the sequence by identity (with dynamics too): a
    second call with the same motion object discretizes nothing (a 64-line GRE's call took
    ~0.08 s with it) and, without dynamics, reuses the planned run; another object with
    other values is discretized anew and moves the signal, the entries go with the motion
    object, and a traced motion is not remembered."""
    from mritwin.twin import dynamics as dyn

    seq, twin = gre
    store = engine._PREPARED_DYN if dynamics else engine._PREPARED
    kw = dict(dynamics=dyn.DisplacementField((0.0, 2e-3, 0.0), dyn.RespiratoryWaveform(rate=0.25))) if dynamics else {}
    calls = []
    monkeypatch.setattr(engine, "discretize", lambda *a, **k: calls.append(1) or discretize(*a, **k))
    mo = mt.Translation(velocity=(0.02, -0.05, 0.0))
    first = mt.simulate(twin, seq, motion=mo, **kw).samples
    runs = [v[2] for v in engine._RUNS.values() if v[3] is not None and v[3]() is mo]
    again = mt.simulate(twin, seq, motion=mo, **kw).samples
    assert len(calls) == 1
    # (the whole planned run too, without dynamics: the same run object)
    assert len(runs) == (0 if dynamics else 1)
    assert runs == [v[2] for v in engine._RUNS.values() if v[3] is not None and v[3]() is mo]
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    still = mt.simulate(twin, seq, motion=mt.Translation(), **kw).samples  # (another object: anew)
    assert len(calls) == 2
    assert float(jnp.abs(still - first).max()) > 1e-2 * float(jnp.abs(first).max())
    n = len(store[seq])
    del mo, runs
    gc.collect()
    assert len(store[seq]) == n - 1
    assert all(v[3] is None or v[3]() is not None for v in engine._RUNS.values())

    def loss(v):
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, motion=mt.Translation(velocity=v), **kw).samples) ** 2)

    jax.jit(loss)(jnp.asarray([0.02, -0.05, 0.0]))
    assert len(store[seq]) == n - 1
