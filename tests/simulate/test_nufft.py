"""NUFFT readout: the transforms against direct sums, the expansion bound against the
interpolation error it bounds, and whole simulations against exact stepping."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.discretize import GENERAL_WINDOW_STEP, WINDOW_STEP, discretize
from mritwin.simulate import nufft as nf
from tests.seqkit import cartesian_gre

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from pulseq_corpus import corpus_path  # noqa: E402

RNG = np.random.default_rng(7)


def _strengths(n, b=2):
    return jnp.asarray(RNG.standard_normal((b, n)) + 1j * RNG.standard_normal((b, n)))


# ---- transforms --------------------------------------------------------------------


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-10])
def test_periodic_transform_matches_direct_sum(tol):
    n, modes = 2000, 301
    theta = jnp.asarray(RNG.uniform(-5, 5, n))
    v = _strengths(n)
    ref = v @ jnp.exp(-2j * jnp.pi * theta[:, None] * jnp.arange(modes)[None, :])
    got = nf.nufft_periodic(theta, v, modes, nf.kernel_spec(tol))
    err = jnp.max(jnp.abs(got - ref), axis=1) / jnp.sum(jnp.abs(v), axis=1)
    assert float(err.max()) <= tol


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_type3_transform_matches_direct_sum(dim, tol):
    n, m = 1000, 200
    half_x, half_s = 0.12, 90.0 if dim < 3 else 30.0
    xi = jnp.asarray(RNG.uniform(-half_x, half_x, (dim, n)))
    zeta = jnp.asarray(RNG.uniform(-half_s, half_s, (dim, m)))
    v = _strengths(n)
    ref = v @ jnp.exp(-2j * jnp.pi * (xi.T @ zeta))
    spec = nf.kernel_spec(tol)
    got = nf.nufft_type3(xi, zeta, v, nf.type3_grid((half_x,) * dim, (half_s,) * dim, spec), spec)
    err = jnp.max(jnp.abs(got - ref), axis=1) / jnp.sum(jnp.abs(v), axis=1)
    assert float(err.max()) <= tol


@pytest.mark.parametrize("x", [0.3, 2.0, 9.0])
def test_expansion_bound_bounds_the_interpolation_error(x):
    """The Chebyshev interpolant of exp(-λt), |λ|T = x, Re λ >= 0, stays within the bound."""
    t = np.linspace(0.0, 1.0, 2001)
    for order in (2, 4, 8, 12):
        bound = nf.expansion_bound(x, order)
        nodes = nf.chebyshev_nodes(0.0, 1.0, order)
        basis = nf.lagrange_basis(nodes, t)
        for angle in (0.0, 0.7, np.pi / 2):
            lam = x * np.exp(1j * angle)
            err = np.max(np.abs(np.exp(-lam * nodes) @ basis - np.exp(-lam * t)))
            assert err <= bound * (1 + 1e-9) + 1e-14
    order, bound = nf.expansion_order(x, 1e-6)
    assert bound <= 1e-6 and nf.expansion_bound(x, order - 1) > 1e-6 if order > 1 else True


def test_expansion_order_reports_what_is_reached():
    with pytest.raises(ValueError, match=r"needs more than 8 expansion terms.*8 terms reach"):
        nf.expansion_order(100.0, 1e-6, max_order=8)


# ---- engine -------------------------------------------------------------------------


def _rich_twin(n_side, fov, seed=0, off_resonance=80.0):
    """Spins off the grid, spread T2 and an off-resonance map."""
    rng = np.random.default_rng(seed)
    c = (np.arange(n_side) - n_side / 2) * fov / n_side
    x, y = np.meshgrid(c, c, indexing="ij")
    keep = x ** 2 + y ** 2 < (0.4 * fov) ** 2
    m = int(keep.sum())
    pos = np.c_[x[keep], y[keep], np.zeros(m)] + rng.uniform(-0.4, 0.4, (m, 3)) * [fov / n_side, fov / n_side, 0]
    return mt.Twin(position=pos, pd=rng.uniform(0.5, 1.0, m), t1=rng.uniform(0.5, 1.5, m),
                   t2=rng.uniform(0.02, 0.2, m), delta_f=rng.uniform(-off_resonance, off_resonance, m))


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _compare(twin, seq, tol, **kw):
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(windows=False), **kw).samples
    got = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(readout=mt.NUFFTReadout(tol)), **kw).samples
    return _rel_err(got, ref)


@pytest.fixture(scope="module")
def gre():
    return cartesian_gre(24, 0.2)


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_cartesian_gre_matches_exact_stepping(gre, tol):
    twin = _rich_twin(24, 0.2)
    d = discretize(gre, general_windows=True)
    assert np.sum(np.asarray(d.kind) == WINDOW_STEP) == 24  # every line is one NUFFT window
    assert _compare(twin, gre, tol) <= tol


def test_multicoil_weights_are_folded_in(gre):
    twin = _rich_twin(24, 0.2, seed=1)
    pos = np.asarray(twin.position)
    coils = np.stack([np.exp(-((pos[:, 0] - cx) ** 2 + pos[:, 1] ** 2) / 0.01) * np.exp(1j * 3 * cx)
                      for cx in (-0.05, 0.0, 0.07)])
    assert _compare(twin, gre, 1e-6, coils=coils) <= 1e-6


def test_uniform_t2_needs_one_term_and_off_resonance_is_exact(gre):
    """With one T2 the decay expansion is exact (L = 1) and off-resonance is part of the
    transform's phase, so only the kernel error remains."""
    from mritwin.simulate.readout import plan_readout

    twin = _rich_twin(24, 0.2, seed=2, off_resonance=400.0)
    twin = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=np.full(twin.n_spins, 0.05),
                   delta_f=twin.delta_f)
    plan = plan_readout(mt.NUFFTReadout(1e-6), twin, discretize(gre, general_windows=True), jnp.float64)
    assert len(plan.window.nodes) == 1 and plan.window.bound == 0.0
    assert _compare(twin, gre, 1e-6) <= 1e-6


CORPUS = {
    "epi_ramp": "pulseqmatlab_epi_rs_v151.seq",  # EPI with ramp sampling: general windows
    "radial": "pypulseq_radial_gre.seq",  # radial spokes on flat tops: 1D windows
    "spiral": "pypulseq_spiral.seq",  # spiral: 2D type-3 windows
}


@pytest.fixture(scope="module")
def corpus_twin():
    return _rich_twin(14, 0.22, seed=3, off_resonance=50.0)


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.slow
def test_corpus_readouts_match_exact_stepping(name, corpus_twin):
    seq = mt.read_seq(corpus_path(CORPUS[name]))
    kinds = np.asarray(discretize(seq, general_windows=True).kind)
    expected = WINDOW_STEP if name == "radial" else GENERAL_WINDOW_STEP
    assert np.any(kinds == expected)
    ref = mt.simulate(corpus_twin, seq, dtype=jnp.float64, method=mt.Bloch(windows=False)).samples
    for tol in (1e-4, 1e-6):
        method = mt.Bloch(readout=mt.NUFFTReadout(tol))
        got = mt.simulate(corpus_twin, seq, dtype=jnp.float64, method=method).samples
        assert _rel_err(got, ref) <= tol


@pytest.mark.slow
def test_gradients_agree_with_exact_stepping(gre):
    """d/dT2, d/dΔf and d/dflip through the NUFFT readout equal the exact ones."""
    twin = _rich_twin(16, 0.2, seed=4)
    seq = cartesian_gre(16, 0.2)
    readout = mt.NUFFTReadout(1e-8, t2_min=0.01, max_off_resonance=100.0)

    def loss(t2, df, method):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=t2, delta_f=df)
        s = mt.simulate(tw, seq, dtype=jnp.float64, method=method).samples
        return jnp.sum(jnp.abs(s) ** 2)

    args = (jnp.asarray(twin.t2), jnp.asarray(twin.delta_f))
    g_ref = jax.grad(loss, argnums=(0, 1))(*args, mt.Bloch(windows=False))
    g_nu = jax.grad(loss, argnums=(0, 1))(*args, mt.Bloch(readout=readout))
    for a, b in zip(g_nu, g_ref):
        assert _rel_err(a, b) < 1e-6


@pytest.mark.slow
def test_gradient_through_the_transform_geometry():
    """d/d(position): through each spin's phase per sample, i.e. the spreading kernel."""
    twin = _rich_twin(12, 0.2, seed=5)
    seq = cartesian_gre(12, 0.2)

    def loss(pos, method):
        tw = mt.Twin(position=pos, pd=twin.pd, t1=twin.t1, t2=twin.t2, delta_f=twin.delta_f)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, dtype=jnp.float64, method=method).samples) ** 2)

    pos = jnp.asarray(twin.position)
    g_ref = jax.grad(loss)(pos, mt.Bloch(windows=False))
    g_nu = jax.grad(loss)(pos, mt.Bloch(readout=mt.NUFFTReadout(1e-8)))
    assert _rel_err(g_nu[:, :2], g_ref[:, :2]) < 1e-6


# ---- bad input ------------------------------------------------------------------------


def test_unreachable_tolerance_in_float32_says_what_is_reachable(gre):
    twin = _rich_twin(8, 0.2)
    with pytest.raises(ValueError, match=r"cannot be met in float32.*about 1e-06"):
        mt.simulate(twin, gre, method=mt.Bloch(readout=mt.NUFFTReadout(1e-9)))


def test_traced_rates_need_a_bound(gre):
    twin = _rich_twin(8, 0.2)

    def loss(t2):
        tw = mt.Twin(position=twin.position, pd=twin.pd, t1=twin.t1, t2=t2)
        return jnp.sum(jnp.abs(mt.simulate(tw, gre, method=mt.Bloch(readout=mt.NUFFTReadout(1e-4))).samples))

    with pytest.raises(ValueError, match="t2_min"):
        jax.grad(loss)(jnp.asarray(twin.t2, jnp.float32))


def test_invalid_readout_options():
    with pytest.raises(ValueError, match="tol must be in"):
        mt.NUFFTReadout(0.0)
    with pytest.raises(ValueError, match="t2_min"):
        mt.NUFFTReadout(1e-4, t2_min=-1.0)
    with pytest.raises(ValueError, match="needs windows=True"):
        mt.Bloch(windows=False, readout=mt.NUFFTReadout())
    with pytest.raises(TypeError, match="NUFFTReadout"):
        mt.Bloch(readout="nufft")


def test_general_windows_without_the_nufft_readout_are_refused():
    seq = mt.read_seq(corpus_path(CORPUS["spiral"]))
    d = discretize(seq, general_windows=True)
    twin = _rich_twin(8, 0.2)
    with pytest.raises(ValueError, match="only Bloch\\(readout=NUFFTReadout"):
        mt.simulate(twin, d)


def test_motion_and_dynamics_fall_back_to_stepping(gre):
    """Rotating or individually moving spins do not evolve linearly with fixed positions:
    their windows are stepped, so the NUFFT readout gives exactly the stepped result. (A
    pure translation keeps its windows: tests/simulate/test_motion.py.)"""
    from mritwin.twin.dynamics import Flow

    twin = _rich_twin(10, 0.2, seed=6)
    nufft = mt.Bloch(readout=mt.NUFFTReadout(1e-4))
    motion = mt.RigidPath(times=[0.0, 1.0], translations=[[0.0, 0.0, 0.0], [0.01, 0.02, 0.0]],
                          rotations=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.2]])
    a = mt.simulate(twin, gre, dtype=jnp.float64, method=nufft, motion=motion).samples
    b = mt.simulate(twin, gre, dtype=jnp.float64, method=mt.Bloch(windows=False), motion=motion).samples
    assert _rel_err(a, b) < 1e-12
    flow = Flow(velocity=(0.0, 0.05, 0.0))
    a = mt.simulate(twin, gre, dtype=jnp.float64, method=nufft, dynamics=flow).samples
    b = mt.simulate(twin, gre, dtype=jnp.float64, method=mt.Bloch(windows=False), dynamics=flow).samples
    assert _rel_err(a, b) < 1e-12
