"""Repeated exact windows (`engine._exact_window_table`, `kernels.prepare_exact_window`):
windows with the same moment, interval and length share per-spin factors computed once
per chunk. Checked against the engine that computes every window anew (no table) in
float64: samples, magnetization, coils, window groups, a translation, a partial table and
derivatives."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre
from mritwin.simulate import engine
from tests.seqkit import IDEAL, epi_like, random_twin

jax.config.update("jax_enable_x64", True)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _no_table(monkeypatch):
    monkeypatch.setattr(engine, "MAX_EXACT_GEOMETRIES", 0)


def test_the_table_finds_the_repeated_geometries():
    gre = mt.discretize(cartesian_gre(16, 0.2), mt.Scanner())
    tab, all_cached = engine._exact_window_table(gre, 1024, 1024, jnp.float32)
    kind = np.asarray(gre.kind)[: gre.n_real_steps]
    assert tab.dt.shape == (1,) and all_cached  # every line of a Cartesian readout alike
    np.testing.assert_array_equal(tab.step[: gre.n_real_steps][kind == 2], 0)
    assert np.all(tab.step[: gre.n_real_steps][kind != 2] == 1)
    # in float64 the lines' timing differs by rounding (~1e-13): windows alike only bit for bit
    tab, all_cached = engine._exact_window_table(gre, 1024, 1024, jnp.float64)
    assert 1 < tab.dt.shape[0] <= 4  # (a window that occurs once is computed anew)
    assert np.unique(tab.dt).size == tab.dt.shape[0]
    epi = mt.discretize(epi_like(), IDEAL)
    tab, all_cached = engine._exact_window_table(epi, 1024, 1024, jnp.float64)
    assert tab.dt.shape == (2,) and all_cached  # the two read directions
    np.testing.assert_allclose(tab.k[0, 0], -tab.k[1, 0])
    # the memory budget bounds the geometries kept
    per = ((engine.kernels._bsgs(epi.n_window)[0] + engine.kernels._bsgs(epi.n_window)[1]) * 1024 + 2048) * 16
    old = engine.EXACT_TABLE_BYTES
    try:
        engine.EXACT_TABLE_BYTES = per
        tab, all_cached = engine._exact_window_table(epi, 1024, 1024, jnp.float64)
        assert tab.dt.shape == (1,) and not all_cached
        engine.EXACT_TABLE_BYTES = per - 1
        assert engine._exact_window_table(epi, 1024, 1024, jnp.float64) == (None, False)
    finally:
        engine.EXACT_TABLE_BYTES = old


def test_deferred_windows_get_one_slot_each():
    """Each tabled window keeps its start weights in one slot of its segment's buffer; the
    samples come from one product per geometry after the scan. Only the segments from the
    first to the last with a window keep buffers (the excitation's segments do not)."""
    epi = mt.discretize(epi_like(n=40), IDEAL)
    tab, _ = engine._exact_window_table(epi, 512, 512, jnp.float32)
    out, k, (s0, s1) = engine._defer_windows(tab, epi.n_window, 2, 512, jnp.float32)
    n_steps = epi.dt.shape[0]
    seg, n_seg = engine._segments(n_steps)
    windows = np.flatnonzero(np.asarray(tab.step) < 2)
    assert windows.size == 40 and k >= 1
    assert (s0, s1) == (windows[0] // seg, windows[-1] // seg + 1) and s0 > 0  # (the sinc: 2 000 steps)
    # slots: distinct within a segment, K (none) elsewhere
    assert np.all(out.slot[np.asarray(tab.step) >= 2] == k)
    pairs = {(w // seg, int(out.slot[w])) for w in windows}
    assert len(pairs) == 40 and max(p[1] for p in pairs) == k - 1
    # per geometry: every window once, with its step; the padding points nowhere (one past
    # the buffers of segments s0..s1-1)
    n_buf = (s1 - s0) * k
    assert np.all((out.slot_idx < n_buf) | (out.slot_idx == n_buf))
    idx, steps = out.slot_idx[out.slot_idx < n_buf], out.slot_step[out.slot_step < n_steps]
    np.testing.assert_array_equal(np.sort(steps), windows)
    np.testing.assert_array_equal(np.sort(idx), np.sort([(w // seg - s0) * k + out.slot[w] for w in windows]))
    for g in range(2):
        live = out.slot_step[g] < n_steps
        assert np.all(np.asarray(tab.step)[out.slot_step[g][live]] == g)
    # over the memory budget: not deferred
    old = engine.DEFER_BYTES
    try:
        engine.DEFER_BYTES = 1000
        assert engine._defer_windows(tab, epi.n_window, 2, 512, jnp.float32)[1:] == (0, None)
    finally:
        engine.DEFER_BYTES = old


def test_segmented_scan_returns_the_buffers_of_the_buffered_segments():
    """`engine._segmented_scan` with ``buffered=(s0, s1)``: the same state and outputs as
    without, and the buffers of segments s0..s1-1 only, as the scan writes them."""

    def body(carry, step):
        (m, buf), (x,) = carry, step
        buf = jnp.where(x % 3 == 0, buf.at[(x // 3).astype(int) % 2].set(m), buf)  # write at some steps
        return (m * 0.5 + x, buf), m

    xs = (jnp.arange(37.0),)
    fresh = jnp.zeros((2,))
    m_all, (ys_all, bufs_all) = engine._segmented_scan(body, 1.0, xs, fresh=fresh, seg=5)
    assert bufs_all.shape == (8, 2)
    m, (ys, bufs) = engine._segmented_scan(body, 1.0, xs, fresh=fresh, seg=5, buffered=(2, 6))
    assert float(m) == float(m_all)
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(ys_all))
    np.testing.assert_array_equal(np.asarray(bufs), np.asarray(bufs_all)[2:6])
    for buffered in ((0, 3), (5, 8), (0, 8)):
        m, (ys, bufs) = engine._segmented_scan(body, 1.0, xs, fresh=fresh, seg=5, buffered=buffered)
        np.testing.assert_array_equal(np.asarray(ys), np.asarray(ys_all))
        np.testing.assert_array_equal(np.asarray(bufs), np.asarray(bufs_all)[buffered[0]:buffered[1]])


def test_window_products_equal_the_complex_product():
    """The deferred windows' product as real matrix products of stacked real and imaginary
    parts, in blocks of samples, against the complex einsum."""
    rng = np.random.default_rng(3)

    def c(*shape):
        return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))

    for k, n_coils, width, n_s in [(7, 2, 300, 250), (3, 1, 50, 5), (1, 1, 8, 112), (2, 3, 40, 113)]:
        rows, table = c(k, n_coils, width), c(n_s, width)
        out = engine._window_products(rows, table)
        assert out.shape == (k, n_coils, n_s)
        np.testing.assert_allclose(np.asarray(out), np.asarray(jnp.einsum("kcw,sw->kcs", rows, table)),
                                   rtol=0, atol=1e-12 * np.sqrt(width))


def test_deferred_sample_counts():
    """Samples per geometry: a window's intervals, rounded up to a multiple of 8, at most the
    window outputs' length."""
    assert engine._deferred_sample_counts(np.array([99, 64, 3, 127]), 128) == (104, 64, 8, 128)
    assert engine._deferred_sample_counts(np.array([9]), 16) == (16,)


@pytest.mark.parametrize("chunk, n_lines", [(None, 18), (256, 10)])
@pytest.mark.slow
def test_deferred_samples_equal_samples_in_the_scan(chunk, n_lines, monkeypatch):
    """Windows sampled after the scan (default, with checkpointing) against windows sampled
    in it (``checkpoint=False`` keeps them in the scan); coils, two read directions, three
    chunks, windows of 17 intervals (24 samples computed of the outputs' 32); and the
    derivatives."""
    twin = random_twin(n=700, n_coils=2)
    seq = epi_like(n=n_lines)
    kw = dict(scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)
    traced = []
    original = engine._deferred_samples
    monkeypatch.setattr(engine, "_deferred_samples", lambda *a: traced.append(a[4:]) or original(*a))
    out = mt.simulate(twin, seq, method=mt.Bloch(chunk_size=chunk), **kw)
    assert traced  # (the deferred path was compiled: this is not the in-scan path twice)
    n_window, _, n_use = traced[0]
    # (float64: the lines' timing rounds into a few geometries, all of 17 or 9 intervals)
    assert (n_window, set(n_use)) == ((32, {24}) if n_lines == 18 else (16, {16}))
    ref = mt.simulate(twin, seq, method=mt.Bloch(chunk_size=chunk, checkpoint=False), **kw)
    assert _rel(out.samples, ref.samples) < 1e-12
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-12)

    def loss(t2, method):
        s = mt.simulate(twin.replace(t2=t2), seq, scanner=IDEAL, dtype=jnp.float64, method=method).samples
        return jnp.sum(jnp.abs(s) ** 2)

    t2 = jnp.asarray(twin.t2)
    g = jax.grad(loss)(t2, mt.Bloch(chunk_size=chunk))
    g_ref = jax.grad(loss)(t2, mt.Bloch(chunk_size=chunk, checkpoint=False))
    assert _rel(g, g_ref) < 1e-10


@pytest.mark.parametrize("case", ["coils", "groups", "partial", "translation"])
@pytest.mark.slow
def test_tabled_windows_equal_windows_computed_anew(case, monkeypatch):
    seq, scanner, motion = epi_like(), IDEAL, None
    twin = random_twin(n=700, n_coils=2)
    if case == "groups":  # one spin per voxel, no field map: windows on (x, tissue) groups
        seq, scanner = cartesian_gre(20, 0.2, tr=8e-3, te=3e-3), mt.Scanner()
        c = (np.arange(20) - 10) * 0.01
        x, y = np.meshgrid(c, c, indexing="ij")
        tissue = np.arange(400) % 3
        twin = mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(400)], pd=np.linspace(0.5, 1, 400),
                       t1=np.array([0.8, 1.2, 2.0])[tissue], t2=np.array([0.05, 0.08, 0.2])[tissue])
    if case == "partial":  # one geometry tabled, the other computed anew (a cond per window)
        monkeypatch.setattr(engine, "MAX_EXACT_GEOMETRIES", 1)
    if case == "translation":
        motion = mt.Translation(velocity=(0.02, -0.01, 0.0))
    kw = dict(scanner=scanner, dtype=jnp.float64, return_magnetization=True, motion=motion)
    out = mt.simulate(twin, seq, **kw)
    with monkeypatch.context() as mp:
        _no_table(mp)
        ref = mt.simulate(twin, seq, **kw)
    assert _rel(out.samples, ref.samples) < 1e-12
    np.testing.assert_allclose(np.asarray(out.magnetization), np.asarray(ref.magnetization), atol=1e-12)


@pytest.mark.slow
def test_derivatives_through_tabled_windows(monkeypatch):
    twin = random_twin(n=300, n_coils=1)
    seq = epi_like(n=6)

    def loss(t2, pos):
        tw = twin.replace(t2=t2, position=pos)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=IDEAL, dtype=jnp.float64).samples) ** 2)

    args = (jnp.asarray(twin.t2), jnp.asarray(twin.position))
    g = jax.grad(loss, argnums=(0, 1))(*args)
    _no_table(monkeypatch)
    g_ref = jax.grad(loss, argnums=(0, 1))(*args)
    assert _rel(g[0], g_ref[0]) < 1e-10
    assert _rel(g[1], g_ref[1]) < 1e-10
