"""Spin groups (`Bloch(group_spins=True)`, the default): exact ADC windows evaluated on
groups of spins that share their per-sample factor, and RF pulses (also those played once)
prepared on groups of spins that see the same pulse. Checked against per-spin windows and
stepped pulses (``group_spins=False``) in float64, for the samples, the final
magnetization, coils, several chunks, derivatives and the cases where no grouping applies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre
from mritwin.simulate import engine
from tests.seqkit import IDEAL, epi_like

jax.config.update("jax_enable_x64", True)

PLAIN = mt.Bloch(group_spins=False)


def _grid_twin(n=24, fov=0.2, coils=0, seed=0):
    """A voxel grid with three tissues and a chemical-shift species: few distinct
    (x, Δf, T2) per chunk, so the readout along x groups the spins."""
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    m = x.size
    tissue = rng.integers(0, 3, m)
    kw = {}
    if coils:
        kw["coil_sensitivity"] = rng.normal(size=(coils, m)) + 1j * rng.normal(size=(coils, m))
    return mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(m)], pd=rng.uniform(0.5, 1.0, m),
                   t1=np.array([0.8, 1.2, 2.0])[tissue], t2=np.array([0.05, 0.08, 0.2])[tissue],
                   delta_f=np.where(rng.uniform(size=m) < 0.2, -220.0, 0.0), **kw)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("coils,chunk,gather", [(0, None, True), (3, 256, True), (0, None, False)])
def test_grouped_windows_equal_per_spin_windows(coils, chunk, gather, monkeypatch):
    """Groups summed by gathers of their padded member lists, or by a segment sum."""
    # (the padding limit decides which; here both are forced)
    monkeypatch.setattr(engine, "GROUP_GATHER_PADDING", 10 ** 6 if gather else 0)
    twin = _grid_twin(coils=coils)
    seq = cartesian_gre(24, 0.2, tr=8e-3, te=3e-3)
    kw = dict(dtype=jnp.float64, return_magnetization=True)
    dseq = mt.discretize(seq, mt.Scanner())
    n_chunks = engine._n_chunks(twin.n_spins, chunk or engine._default_chunk(twin.n_spins), 1)
    plan = engine._group_plan(twin, dseq, chunk or engine._default_chunk(twin.n_spins), n_chunks, jnp.float64)
    assert plan is not None  # the groups do apply here
    assert (plan[3] is not None) == gather
    ref = mt.simulate(twin, seq, method=mt.Bloch(group_spins=False, chunk_size=chunk), **kw)
    out = mt.simulate(twin, seq, method=mt.Bloch(chunk_size=chunk), **kw)
    assert _rel(out.samples, ref.samples) < 1e-12
    # the final magnetization comes back in the twin's spin order
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-12)


def test_the_plan_groups_a_grid_and_declines_a_field_map(monkeypatch):
    monkeypatch.setattr(engine, "GROUP_GATHER_PADDING", 10 ** 6)  # (padded member lists always)
    seq = cartesian_gre(24, 0.2)
    dseq = mt.discretize(seq, mt.Scanner())
    twin = _grid_twin()
    plan = engine._group_plan(twin, dseq, 1024, 1, jnp.float64)
    assert plan is not None
    perm, group, first, members = plan
    # readout along x: one group per column, tissue and species (24 x 3 x 2 at most)
    assert first.shape[1] <= 24 * 3 * 2
    assert np.all(np.diff(group[0]) >= 0)  # sorted within the chunk
    xs = np.asarray(twin.position)[perm, 0]
    for g in range(first.shape[1]):  # every member of a group shares x, Δf and T2
        these = np.flatnonzero(group[0, : twin.n_spins] == g)
        assert np.ptp(xs[these]) == 0
        # its padded member list: the same spins, then the index of the zero (the chunk size)
        listed = members[0, g]
        np.testing.assert_array_equal(np.sort(listed[listed < 1024]), np.flatnonzero(group[0] == g))
        assert np.all(listed[listed >= 1024] == 1024)
    rng = np.random.default_rng(1)
    mapped = twin.replace(delta_f=rng.normal(0, 30, twin.n_spins))  # a field map: every spin its own
    assert engine._group_plan(mapped, dseq, 1024, 1, jnp.float64) is None


@pytest.mark.slow
def test_derivatives_through_grouped_windows():
    twin = _grid_twin(n=16)
    seq = cartesian_gre(16, 0.2, tr=8e-3, te=3e-3)

    def loss(pd, t2, method):
        tw = twin.replace(pd=pd, t2=t2)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, method=method, dtype=jnp.float64).samples) ** 2)

    pd, t2 = jnp.asarray(twin.pd), jnp.asarray(twin.t2)
    # w.r.t. PD the groups apply (T2 concrete); w.r.t. T2 they cannot (traced) and fall back
    g = jax.grad(loss, argnums=(0, 1))(pd, t2, mt.Bloch())
    g_ref = jax.grad(loss, argnums=(0, 1))(pd, t2, PLAIN)
    assert _rel(g[0], g_ref[0]) < 1e-10
    assert _rel(g[1], g_ref[1]) < 1e-10
    gp = jax.grad(lambda pd: loss(pd, t2, mt.Bloch()))(pd)
    assert _rel(gp, g_ref[0]) < 1e-10


@pytest.mark.parametrize("coils", [0, 2])
def test_a_pulse_played_once_is_prepared_on_rf_groups(coils):
    # three slices' worth of z, three tissues, a B1 map of two values and a fat species:
    # few (z, Δf, B1, T1, T2) groups, so the sinc is prepared on them instead of stepped
    seq, scanner = epi_like(), IDEAL
    rng = np.random.default_rng(3)
    base = _grid_twin(n=20, coils=coils)
    z = rng.choice([-2e-3, 0.0, 1.5e-3], base.n_spins)
    twin = base.replace(position=np.c_[np.asarray(base.position)[:, :2], z],
                        b1=rng.choice([0.9, 1.05], base.n_spins))
    dseq = mt.discretize(seq, scanner)
    assert engine._rf_group_axes(twin, dseq, mt.Bloch(), 512, jnp.float64) == (False, False, True)
    kw = dict(scanner=scanner, dtype=jnp.float64, return_magnetization=True)
    ref = mt.simulate(twin, seq, method=mt.Bloch(group_spins=False, chunk_size=512), **kw)
    out = mt.simulate(twin, seq, method=mt.Bloch(chunk_size=512), **kw)
    assert _rel(out.samples, ref.samples) < 1e-11
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-11)
    # a B1 map that differs per spin: a group per spin, so the pulse is stepped as before
    mapped = twin.replace(b1=rng.uniform(0.8, 1.2, twin.n_spins))
    assert engine._rf_group_axes(mapped, dseq, mt.Bloch(), 512, jnp.float64) is None


def test_repeated_pulses_are_prepared_on_rf_groups_on_the_cpu():
    """A 2D multi-slice GRE (two off-centre slices, a 2 ms sinc per slice played 8 times
    each): on the CPU its repeated pulses are prepared on RF groups instead of per spin
    (enough steps: `engine.RF_GROUP_MIN_STEPS`); same samples and magnetization as the
    per-spin preparation and as no grouping at all, with several chunks."""
    from mritwin.simulate.prepared_rf import plan_prepared_rf

    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3,
                           n_slices=2, slice_gap=2e-3, dims=2)
    rng = np.random.default_rng(5)
    base = _grid_twin(n=16)
    twin = base.replace(position=np.c_[np.asarray(base.position)[:, :2],
                                       rng.choice([-4e-3, -3e-3, 3.5e-3, 0.0], base.n_spins)])
    dseq = mt.discretize(seq, scanner, rf_dt=20e-6)
    _, table = plan_prepared_rf(dseq, engine.rf_kind_id(dseq), 4)
    assert table is not None and table.dt.shape[0] == 2  # repeated: prepared per spin before
    assert engine._groups_for_preparing(table) == (jax.default_backend() == "cpu")
    run = engine._plan(twin, dseq, scanner, None, mt.Bloch(rf_dt=20e-6, chunk_size=128), jnp.float64, True, None, ())
    assert run.call.args[0].rf_group is not None
    kw = dict(scanner=scanner, dtype=jnp.float64, return_magnetization=True)
    out = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=20e-6, chunk_size=128), **kw)
    for ref_method in (mt.Bloch(rf_dt=20e-6, chunk_size=128, group_spins=False),
                       mt.Bloch(rf_dt=20e-6, chunk_size=128, group_spins=False, prepare_pulses=False)):
        ref = mt.simulate(twin, seq, method=ref_method, **kw)
        assert _rel(out.samples, ref.samples) < 1e-11
        np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-11)


def test_rf_groups_with_the_nufft_readout():
    """The NUFFT readout sorts the spins by grid cell; its pulses are still prepared on RF
    groups (numbered in that order, per chunk): the same samples and magnetization as the
    NUFFT readout without grouping, and within its tolerance of exact stepping. (Without
    the groups a 2 ms sinc per TR is prepared per spin: 14x slower at 64 x 64.)"""
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3,
                           n_slices=2, slice_gap=2e-3, dims=2)
    rng = np.random.default_rng(7)
    base = _grid_twin(n=15)  # 225 spins: two chunks of 128, the second padded
    twin = base.replace(position=np.c_[np.asarray(base.position)[:, :2],
                                       rng.choice([-4e-3, -3e-3, 3.5e-3, 0.0], base.n_spins)])
    nufft = mt.NUFFTReadout(1e-8)
    method = mt.Bloch(rf_dt=20e-6, chunk_size=128, readout=nufft)
    dseq = mt.discretize(seq, scanner, rf_dt=20e-6, general_windows=True)
    run = engine._plan(twin, dseq, scanner, None, method, jnp.float64, True, None, ())
    assert run.call.args[0].rf_group is not None
    kw = dict(scanner=scanner, dtype=jnp.float64, return_magnetization=True)
    out = mt.simulate(twin, seq, method=method, **kw)
    ref = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=20e-6, chunk_size=128, readout=nufft, group_spins=False),
                      **kw)
    assert _rel(out.samples, ref.samples) < 1e-11
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-11)
    exact = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=20e-6, windows=False, group_spins=False), **kw)
    assert _rel(out.samples, exact.samples) < 1e-7


@pytest.mark.slow
def test_gradient_through_a_pulse_prepared_on_rf_groups():
    # w.r.t. PD the RF groups apply; the RF amplitude stays concrete
    seq, scanner = epi_like(), IDEAL
    twin = _grid_twin(n=12)

    def loss(pd, method):
        out = mt.simulate(twin.replace(pd=pd), seq, scanner=scanner, method=method, dtype=jnp.float64)
        return jnp.sum(jnp.abs(out.samples) ** 2)

    pd = jnp.asarray(twin.pd)
    assert _rel(jax.grad(loss)(pd, mt.Bloch()), jax.grad(loss)(pd, PLAIN)) < 1e-10


def test_a_uniform_grid_sums_its_groups_by_gathers():
    """One tissue on a grid: every readout column is a group of equal size, so the padded
    member lists cost nothing extra and are used by default."""
    from mritwin.benchmarking import grid_twin

    twin = grid_twin(32, 0.2, t1=1.0, t2=0.08)
    dseq = mt.discretize(cartesian_gre(32, 0.2), mt.Scanner())
    perm, group, first, members = engine._group_plan(twin, dseq, 1024, 1, jnp.float32)
    assert members.shape == (1, 32, 32)  # 32 columns of 32 spins: no padding
    assert np.all(members < 1024)
    np.testing.assert_array_equal(np.sort(members.ravel()), np.arange(1024))


def test_complex_segment_sum_as_float_parts_matches_jax_and_its_derivative():
    """`kernels.segment_sum_complex` (real and imaginary parts scattered as floats: XLA's
    GPU compiler crashes on a sorted complex scatter-add in a loop) is jax.ops.segment_sum."""
    from mritwin.simulate.kernels import segment_sum_complex

    rng = np.random.default_rng(3)
    ids = jnp.asarray(np.sort(rng.integers(0, 7, 50)))
    v = jnp.asarray(rng.normal(size=50) + 1j * rng.normal(size=50), jnp.complex64)
    ref = jax.ops.segment_sum(v, ids, 9, indices_are_sorted=True)
    got = segment_sum_complex(v, ids, 9, indices_are_sorted=True)
    assert got.dtype == jnp.complex64 and got.shape == (9,)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(got)[7:] == 0)  # empty segments

    def loss(f, x):
        return jnp.sum(jnp.abs(f(x * (1 + 0.5j), ids, 9)) ** 2)

    g_ref = jax.grad(lambda x: loss(lambda *a: jax.ops.segment_sum(*a), x))(jnp.real(v))
    g_got = jax.grad(lambda x: loss(segment_sum_complex, x))(jnp.real(v))
    np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["dense", "sorted", "renumbered"])
def test_unique_rows_matches_numpy_unique_rows(case):
    """`seqgroups.unique_rows` against ``np.unique(table, axis=0)``: ids in sorted row
    order, a first occurrence per id, and None past ``limit``; through its three paths:
    codes numbered by a dense table (few distinct values), by a sort (a code range far
    above the rows), and renumbered on the way (a radix product past 2**62)."""
    from mritwin.simulate.seqgroups import unique_rows

    rng = np.random.default_rng(7)
    n = 3000
    if case == "dense":
        cols = [rng.choice([0.1, -2.0, 3.5], n), rng.integers(0, 4, n).astype(np.float32), rng.choice([1.0, 2.0], n)]
    elif case == "sorted":
        cols = [rng.integers(0, 60, n), rng.integers(0, 70, n), rng.integers(0, 2, n)]
        cols.append(rng.integers(0, 50, n))  # 420 000 possible codes > max(4 n, 65 536)
    else:
        cols = [rng.normal(size=n) for _ in range(6)]  # 3000**6 > 2**62: renumbered
    table = np.stack([np.asarray(c, np.float64) for c in cols], 1)
    ref_rows, ref_first, ref_inv = np.unique(table, axis=0, return_index=True, return_inverse=True)
    inverse, first = unique_rows(cols)
    np.testing.assert_array_equal(inverse, ref_inv.reshape(-1))
    np.testing.assert_array_equal(first, ref_first)
    np.testing.assert_array_equal(table[first], ref_rows)
    assert unique_rows(cols, limit=ref_rows.shape[0]) is not None
    assert unique_rows(cols, limit=ref_rows.shape[0] - 1) is None
