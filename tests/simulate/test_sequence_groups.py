"""Sequence groups (`Bloch(group_spins=True)`, `mritwin.simulate.seqgroups`): spins that no
gradient of the sequence tells apart are simulated once, with PD 1, and received with the
weights ``Σ PD_j c_j`` of their group. Checked against the per-spin engine
(``group_spins=False``) in float64 for samples, final magnetization, coils and
derivatives, against the closed-form FID, and for the cases where the plan must decline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.bench_scenarios import mrf_train
from mritwin.simulate import engine, seqgroups
from tests.seqkit import IDEAL, adc_at, build, epi_like, exact_constant_pulse, hard, rf_at

jax.config.update("jax_enable_x64", True)

PLAIN = mt.Bloch(group_spins=False)


def _tissue_twin(n=400, coils=0, seed=0, fov=0.2, columns=12):
    """Spins at random (y, z) but on ``columns`` x values, three tissues and a fat species:
    a sequence with gradients on x only sees at most ``columns × 3 × 2`` kinds of spin."""
    rng = np.random.default_rng(seed)
    tissue = rng.integers(0, 3, n)
    x = rng.integers(0, columns, n) * fov / columns - fov / 2
    kw = {}
    if coils:
        kw["coil_sensitivity"] = rng.normal(size=(coils, n)) + 1j * rng.normal(size=(coils, n))
    return mt.Twin(position=np.c_[x, rng.uniform(-0.1, 0.1, (n, 2))], pd=rng.uniform(0.3, 1.0, n),
                   t1=np.array([0.8, 1.2, 2.0])[tissue], t2=np.array([0.05, 0.08, 0.2])[tissue],
                   delta_f=np.where(rng.uniform(size=n) < 0.2, -220.0, 0.0), **kw)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _fid(n_samples=40, dwell=0.5e-3):
    items = [rf_at(20e-6, hard(np.pi / 2, 20e-6))]
    items += [adc_at(1e-3 + i * dwell) for i in range(n_samples)]
    return build(items, 1e-3 + n_samples * dwell + 1e-3)


@pytest.mark.parametrize("coils", [0, 3])
def test_a_sequence_without_gradients_runs_one_spin_per_tissue(coils):
    twin = _tissue_twin(coils=coils)
    seq = _fid()
    dseq = mt.discretize(seq, IDEAL)
    assert seqgroups.gradient_axes(dseq) == (False, False, False)
    plan = seqgroups.plan_sequence_groups(twin, dseq, diffusion=False, dtype=jnp.float64)
    assert plan is not None and plan.n_groups == 6  # three tissues, with and without fat
    kw = dict(scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    ref = mt.simulate(twin, seq, method=PLAIN, **kw)
    out = mt.simulate(twin, seq, **kw)
    assert out.samples.shape == ref.samples.shape == (max(coils, 1), 40)
    assert _rel(out.samples, ref.samples) < 1e-12
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-12)


def test_grouped_fid_follows_the_closed_form():
    # one tissue with a chemical shift: after the pulse s(t) ∝ exp(-t/T2) exp(∓i 2π Δf t)
    n, t2, df = 300, 0.04, 37.0
    rng = np.random.default_rng(5)
    twin = mt.Twin(position=rng.uniform(-0.1, 0.1, (n, 3)), pd=rng.uniform(0.2, 1.0, n), t1=np.full(n, 0.9),
                   t2=np.full(n, t2), delta_f=np.full(n, df))
    seq = _fid()
    # (the 20 us 90° pulse in 1 us steps: its splitting error, ~ (flip per step)² dt/T2, is
    # then below 1e-7 of the closed form's)
    method = mt.Bloch(max_rf_dt=1e-6)
    assert engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ()).seq_groups is not None
    sig = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=method)
    s, t = np.asarray(sig.samples[0]), np.asarray(sig.time)
    ratio = s[1:] / s[:-1]
    np.testing.assert_allclose(np.abs(ratio), np.exp(-np.diff(t) / t2), rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.angle(ratio)), 2 * np.pi * df * np.diff(t), rtol=1e-9)
    # 90° excitation (10-30 us): the first sample holds every spin's PD times the
    # transverse magnetization at the pulse's end (closed form, 4x4 expm), decayed since
    rf = seq.blocks[1].rf if seq.blocks[0].rf is None else seq.blocks[0].rf
    m_end = exact_constant_pulse(complex(np.conj(rf.signal[0])), df, 0.9, t2, 20e-6)
    ref = twin.pd.sum() * np.hypot(m_end[0], m_end[1]) * np.exp(-(t[0] - 30e-6) / t2)
    np.testing.assert_allclose(np.abs(s[0]), ref, rtol=1e-6)


def test_a_one_dimensional_train_groups_columns_and_tissues():
    twin = _tissue_twin(n=600, coils=2)
    seq, _ = mrf_train(12, scanner=IDEAL)
    dseq = mt.discretize(seq, IDEAL)
    assert seqgroups.gradient_axes(dseq) == (True, False, False)
    plan = seqgroups.plan_sequence_groups(twin, dseq, diffusion=False, dtype=jnp.float64)
    assert plan is not None and plan.n_groups <= 12 * 3 * 2
    # every member of a group has the group's x, T1, T2 and Δf
    x = np.asarray(twin.position)[:, 0]
    for name, v in (("x", x), ("t1", twin.t1), ("t2", twin.t2), ("df", twin.delta_f)):
        rep = np.asarray(plan.twin.position)[:, 0] if name == "x" else np.asarray(getattr(
            plan.twin, {"df": "delta_f"}.get(name, name)))
        np.testing.assert_array_equal(np.asarray(v), rep[plan.inverse], err_msg=name)
    kw = dict(scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    ref = mt.simulate(twin, seq, method=PLAIN, **kw)
    out = mt.simulate(twin, seq, **kw)
    assert _rel(out.samples, ref.samples) < 1e-11
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-11)


def test_groups_planned_inside_one_trace_serve_the_next():
    # a sequence traced (flip angles differentiated), the same twin in two jitted functions:
    # the groups planned in the first trace are remembered with the twin and reused by the
    # second (they had held a tracer of the first: UnexpectedTracerError)
    twin = _tissue_twin(n=200)
    method = mt.Bloch(max_rf_dt=None)  # (one step per pulse: quick to compile; the plan is what matters)

    def loss(flips):
        seq, _ = mrf_train(3, scanner=IDEAL, flips=flips)
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples) ** 2)

    flips = jnp.radians(jnp.array([10.0, 30.0, 20.0]))
    a = jax.jit(jax.grad(loss))(flips)
    b = jax.jit(jax.grad(lambda f: 2.0 * loss(f)))(flips)
    assert np.all(np.isfinite(np.asarray(a))) and np.max(np.abs(np.asarray(a))) > 0
    np.testing.assert_allclose(np.asarray(b), 2.0 * np.asarray(a), rtol=1e-12)


@pytest.mark.slow
def test_derivatives_wrt_pd_and_coils_keep_the_groups():
    twin = _tissue_twin(n=200, coils=2)
    seq, _ = mrf_train(6, scanner=IDEAL)

    def loss(pd, coils, method):
        tw = twin.replace(pd=pd, coil_sensitivity=coils)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=IDEAL, method=method, dtype=jnp.float64).samples) ** 2)

    args = (jnp.asarray(twin.pd), jnp.asarray(twin.coil_sensitivity))
    g = jax.grad(loss, argnums=(0, 1))(*args, mt.Bloch())
    g_ref = jax.grad(loss, argnums=(0, 1))(*args, PLAIN)
    assert _rel(g[0], g_ref[0]) < 1e-10
    assert _rel(g[1], g_ref[1]) < 1e-10


def test_the_plan_declines_where_it_cannot_help_or_cannot_see():
    twin = _tissue_twin()
    dseq = mt.discretize(mrf_train(4, scanner=IDEAL)[0], IDEAL)
    # gradients on all three axes: not checked (distinct positions are never alike)
    assert seqgroups.gradient_axes(mt.discretize(epi_like(), IDEAL)) == (True, False, True)
    full = mt.discretize(mt.sequences.gre(fov=0.2, matrix=8, flip_angle_deg=15, slice_thickness=5e-3, dims=2, scanner=IDEAL), IDEAL)
    assert seqgroups.gradient_axes(full) == (True, True, True)
    assert seqgroups.plan_sequence_groups(twin, full, diffusion=False, dtype=jnp.float64) is None
    # every spin its own T1: fewer than half the spins would be saved
    rng = np.random.default_rng(2)
    own = twin.replace(t1=rng.uniform(0.5, 2.0, twin.n_spins))
    assert seqgroups.plan_sequence_groups(own, dseq, diffusion=False, dtype=jnp.float64) is None
    # a traced T1 (differentiating w.r.t. it): the values are unknown, nothing is grouped
    seen = []

    def probe(t1):
        seen.append(seqgroups.plan_sequence_groups(twin.replace(t1=t1), dseq, diffusion=False,
                                                   dtype=jnp.float64))
        return t1.sum()

    jax.grad(probe)(jnp.asarray(twin.t1))
    assert seen == [None]
    # analytic diffusion: the coefficient joins the key
    dif = twin.replace(diffusion=rng.choice([1e-9, 2e-9], twin.n_spins))
    a = seqgroups.plan_sequence_groups(dif, dseq, diffusion=False, dtype=jnp.float64)
    b = seqgroups.plan_sequence_groups(dif, dseq, diffusion=True, dtype=jnp.float64)
    assert a is not None and b is not None and b.n_groups > a.n_groups


def test_values_equal_in_float32_collapse_as_the_engine_sees_them():
    # T1 values that differ only below float32 resolution form one group in float32
    twin = _tissue_twin(n=200)
    t1 = np.asarray(twin.t1) * (1 + 1e-12 * np.arange(twin.n_spins))
    dseq = mt.discretize(_fid(), IDEAL)
    tw = twin.replace(t1=t1)
    assert seqgroups.plan_sequence_groups(tw, dseq, diffusion=False, dtype=jnp.float32).n_groups == 6
    assert seqgroups.plan_sequence_groups(tw, dseq, diffusion=False, dtype=jnp.float64) is None


MOTIONS = {
    "translation": mt.Translation(velocity=(0.03, -0.02, 0.01), offset=(2e-3, 0, 0)),
    "periodic": mt.PeriodicTranslation(amplitude=(4e-3, 2e-3, 0), period=0.05, phase=0.3),
    "path": mt.RigidPath(times=(0.0, 0.02, 0.06), translations=[[0, 0, 0], [3e-3, 1e-3, 0], [-2e-3, 0, 1e-3]]),
}


@pytest.mark.parametrize("name", sorted(MOTIONS))
def test_a_translation_moves_the_spins_of_a_group_alike(name):
    """A translation adds ``k·d(t)`` to every spin's phase, whatever its position: spins the
    sequence cannot tell apart stay so, and the groups give every spin's signal (1e-11
    against the per-spin engine, coils and final magnetization too); the motion matters
    (the signal moves by >10% of its size)."""
    twin = _tissue_twin(n=300, coils=2)
    seq, _ = mrf_train(8, scanner=IDEAL)
    motion = MOTIONS[name]
    assert engine._plan(twin, seq, IDEAL, None, mt.Bloch(), jnp.float64, False, motion, ()).seq_groups is not None
    kw = dict(scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    ref = mt.simulate(twin, seq, method=PLAIN, motion=motion, **kw)
    out = mt.simulate(twin, seq, motion=motion, **kw)
    assert _rel(out.samples, ref.samples) < 1e-11
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-11)
    assert _rel(mt.simulate(twin, seq, **kw).samples, ref.samples) > 0.1


def test_derivatives_wrt_a_translation_keep_the_groups():
    twin = _tissue_twin(n=200)
    seq, _ = mrf_train(4, scanner=IDEAL)

    def loss(v, method):
        motion = mt.Translation(velocity=v)
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL, method=method, motion=motion,
                                           dtype=jnp.float64).samples) ** 2)

    v = jnp.array([0.03, -0.02, 0.01])
    # (one step per pulse: quick to compile)
    g = jax.jit(jax.grad(loss), static_argnums=1)(v, mt.Bloch(max_rf_dt=None))
    g_ref = jax.jit(jax.grad(loss), static_argnums=1)(v, mt.Bloch(max_rf_dt=None, group_spins=False))
    assert abs(float(g[0])) > 0 and _rel(g, g_ref) < 1e-10


def test_a_rotation_keeps_every_spin():
    # a rotation turns the gradient axes in the twin's frame: spins along y that an x
    # gradient could not tell apart now see it
    twin = _tissue_twin(n=100)
    seq, _ = mrf_train(4, scanner=IDEAL)
    rot = mt.RigidPath(times=(0.0, 0.05), translations=np.zeros((2, 3)), rotations=[[0, 0, 0], [0, 0, 0.2]])
    assert engine._plan(twin, seq, IDEAL, None, mt.Bloch(), jnp.float64, False, rot, ()).seq_groups is None
    moved = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, motion=rot)
    ref = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, method=PLAIN, motion=rot)
    assert _rel(moved.samples, ref.samples) < 1e-12


def test_chunk_size_bounds_the_chunk_of_a_folded_twin():
    """``Bloch(chunk_size=...)`` is an upper bound: the 6 kinds of spin a FID sees run in a
    chunk of their own bucketed size (256), not padded to 4096; a smaller bound still
    splits them; the signal is the same."""
    assert engine._default_chunk(2097) == 2176  # a reduced twin is not padded to a power of two
    twin, seq = _tissue_twin(), _fid()
    kw = dict(scanner=IDEAL, dtype=jnp.float64)

    def chunk_of(method):
        run = engine._plan(twin, seq, IDEAL, None, method, jnp.float64, False, None, ())
        return run.call.keywords["chunk"], run.call.keywords["n_chunks"]

    assert chunk_of(mt.Bloch(chunk_size=4096)) == (256, 1)
    assert chunk_of(mt.Bloch(chunk_size=4)) == (4, 2)
    assert chunk_of(mt.Bloch(chunk_size=4096, group_spins=False)) == (512, 1)  # 400 spins
    ref = mt.simulate(twin, seq, method=PLAIN, **kw)
    for c in (4096, 4):
        assert _rel(mt.simulate(twin, seq, method=mt.Bloch(chunk_size=c), **kw).samples, ref.samples) < 1e-12
