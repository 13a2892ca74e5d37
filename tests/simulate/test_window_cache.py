"""Prepared windows of the NUFFT readout: windows that repeat (same moment per sample,
dwell and length) share spreading weights computed once per chunk, with the spins sorted
by grid cell. Checked against direct sums and exact stepping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.discretize import discretize
from mritwin.simulate import nufft as nf
from mritwin.simulate.readout import plan_readout, plan_window_cache
from tests.seqkit import IDEAL, cartesian_gre, hard

jax.config.update("jax_enable_x64", True)


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("block", [64, 256])
@pytest.mark.slow
def test_block_spreading_matches_the_direct_sum(block):
    rng = np.random.default_rng(0)
    n, modes = 4096, 90
    spec = nf.kernel_spec(1e-9)
    size = nf.periodic_grid_size(modes, spec)
    theta = rng.uniform(-4.0, 4.0, n)
    theta = theta[np.argsort(nf.first_grid_index(theta, size, spec), kind="stable")]
    v = rng.normal(size=(2, n)) + 1j * rng.normal(size=(2, n))
    span = nf.block_span(theta, size, block, spec)
    weights, lo = nf.block_weights(jnp.asarray(theta), size, block, span, spec)
    got = nf.periodic_modes(nf.spread_blocks(weights, lo, jnp.asarray(v), size), modes, spec)
    ref = v @ np.exp(-2j * np.pi * np.outer(theta, np.arange(modes)))
    assert np.max(np.abs(np.asarray(got) - ref)) / np.abs(v).sum(1).max() < 1e-9
    # the same as the scattering transform
    direct = nf.nufft_periodic(jnp.asarray(theta), jnp.asarray(v), modes, spec)
    assert _rel_err(got, direct) < 1e-10


def test_a_block_that_does_not_fit_its_span_gives_nan_not_a_wrong_sum():
    rng = np.random.default_rng(1)
    spec = nf.kernel_spec(1e-6)
    theta = rng.uniform(0, 1, 512)  # unsorted: blocks cover the whole grid
    weights, _ = nf.block_weights(jnp.asarray(theta), 200, 64, spec.width + 2, spec)
    assert bool(jnp.isnan(weights).all())


def _twin(n_side, fov, seed=0, off_resonance=60.0):
    rng = np.random.default_rng(seed)
    c = (np.arange(n_side) - n_side / 2) * fov / n_side
    x, y = np.meshgrid(c, c, indexing="ij")
    m = x.size
    pos = np.c_[x.ravel(), y.ravel(), np.zeros(m)] + rng.uniform(-0.3, 0.3, (m, 3)) * [fov / n_side] * 2 + [0]
    return mt.Twin(position=pos, pd=rng.uniform(0.5, 1.0, m), t1=rng.uniform(0.5, 1.5, m),
                   t2=rng.uniform(0.03, 0.2, m), delta_f=rng.uniform(-off_resonance, off_resonance, m))


def _bipolar(n, fov, extra_window=True):
    """Lines read alternately with +gx and -gx (two repeating geometries), optionally one
    more window with its own dwell time (a geometry that does not repeat)."""
    dk = 1.0 / fov
    dwell = 20e-6
    amp = dk / (dwell * IDEAL.gamma_bar)
    blocks = []
    for j in range(n):
        sign = 1.0 if j % 2 == 0 else -1.0
        gx = mt.make_trapezoid("x", amplitude=sign * amp, flat_time=n * dwell, scanner=IDEAL)
        pre = mt.make_trapezoid("x", area=-sign * (gx.area / 2), duration=0.5e-3, scanner=IDEAL)
        gy = mt.make_trapezoid("y", area=(j - n / 2) * dk, duration=0.5e-3, scanner=IDEAL)
        blocks += [mt.Block(rf=hard(np.radians(20), phase=np.radians(117.0 * j * (j + 1) / 2))),
                   mt.Block(gx=pre, gy=gy),
                   mt.Block(gx=gx, adc=mt.ADC(n, dwell, delay=gx.rise_time)),
                   mt.Block(duration=4e-3)]
    if extra_window:
        gx = mt.make_trapezoid("x", amplitude=amp / 2, flat_time=n * 2 * dwell, scanner=IDEAL)
        blocks += [mt.Block(rf=hard(np.radians(20))), mt.Block(gx=gx, adc=mt.ADC(n, 2 * dwell, delay=gx.rise_time))]
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def _plan(twin, seq, tol=1e-6, chunk=512):
    d = discretize(seq, general_windows=True)
    plan = plan_readout(mt.NUFFTReadout(tol), twin, d, jnp.float64)
    n_chunks = -(-twin.n_spins // chunk)
    return plan_window_cache(plan, twin, d, chunk, n_chunks, tol)


def test_cartesian_lines_share_one_prepared_geometry():
    twin = _twin(20, 0.2)
    seq = cartesian_gre(20, 0.2)
    plan, table, perm = _plan(twin, seq)
    cache = plan.window.cache
    assert cache.n_geometries == 1 and cache.all_cached
    assert sorted(perm.tolist()) == list(range(twin.n_spins))
    # every spin sorted into blocks that spread onto a few grid points only
    assert cache.span <= 4 * plan.window.spec.width + 16
    assert np.sum(np.asarray(table.step) == 0) == 20


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_prepared_windows_match_exact_stepping_and_keep_the_spin_order(tol):
    twin = _twin(20, 0.2, seed=1)
    seq = _bipolar(20, 0.2)
    plan, table, _ = _plan(twin, seq, tol)
    assert plan.window.cache.n_geometries == 2 and not plan.window.cache.all_cached  # + the odd window
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(windows=False), return_magnetization=True)
    got = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(readout=mt.NUFFTReadout(tol)),
                      return_magnetization=True)
    assert _rel_err(got.samples, ref.samples) <= tol
    # the engine sorted the spins; the returned magnetization is in the twin's order
    assert np.max(np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization))) < 1e-10


def test_prepared_windows_with_coils_and_several_chunks():
    twin = _twin(24, 0.2, seed=2)
    seq = cartesian_gre(24, 0.2)
    pos = np.asarray(twin.position)
    coils = np.stack([np.exp(-((pos[:, 0] - cx) ** 2 + pos[:, 1] ** 2) / 0.01) * np.exp(1j * 2 * cx)
                      for cx in (-0.05, 0.06)])
    ref = mt.simulate(twin, seq, coils=coils, dtype=jnp.float64, method=mt.Bloch(windows=False)).samples
    method = mt.Bloch(readout=mt.NUFFTReadout(1e-6), chunk_size=256)  # 3 chunks, the last one padded
    got = mt.simulate(twin, seq, coils=coils, dtype=jnp.float64, method=method).samples
    assert _rel_err(got, ref) <= 1e-6


@pytest.mark.parametrize("reversible", [False, True])
@pytest.mark.slow
def test_gradients_through_prepared_windows_agree_with_exact_stepping(reversible):
    """Positions and off-resonance are concrete (so the windows are prepared); T1, T2 and
    PD are differentiated."""
    twin = _twin(12, 0.2, seed=3)
    seq = cartesian_gre(12, 0.2)
    readout = mt.NUFFTReadout(1e-8, t2_min=0.02)

    def loss(t1, t2, pd, method):
        tw = mt.Twin(position=twin.position, pd=pd, t1=t1, t2=t2, delta_f=twin.delta_f)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, dtype=jnp.float64, method=method).samples) ** 2)

    args = tuple(jnp.asarray(a) for a in (twin.t1, twin.t2, twin.pd))
    g_ref = jax.grad(loss, argnums=(0, 1, 2))(*args, mt.Bloch(windows=False))
    g = jax.grad(loss, argnums=(0, 1, 2))(*args, mt.Bloch(readout=readout, reversible=reversible))
    for a, b in zip(g, g_ref):
        assert _rel_err(a, b) < 1e-6


@pytest.mark.slow
def test_windows_are_not_prepared_when_positions_are_traced():
    twin = _twin(8, 0.2, seed=4)
    seq = cartesian_gre(8, 0.2)
    seen = []

    def loss(pos):
        tw = mt.Twin(position=pos, pd=twin.pd, t1=twin.t1, t2=twin.t2, delta_f=twin.delta_f)
        seen.append(_plan(tw, seq)[0].window.cache)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, dtype=jnp.float64,
                                           method=mt.Bloch(readout=mt.NUFFTReadout(1e-6))).samples) ** 2)

    jax.grad(loss)(jnp.asarray(twin.position))
    assert seen == [None]
