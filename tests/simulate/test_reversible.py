"""Reversible adjoint: gradients equal the stored-state (checkpointed) ones, with less memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.simulate.adjoint import restore_points
from tests.seqkit import cartesian_gre, csf_sinc_gre

RNG = np.random.default_rng(11)


def _twin(n=8, fov=0.2, t2=(0.03, 0.2)):
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    m = x.size
    return mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(m)] + RNG.uniform(-1e-3, 1e-3, (m, 3)),
                   pd=RNG.uniform(0.5, 1.0, m), t1=RNG.uniform(0.5, 1.5, m), t2=RNG.uniform(*t2, m),
                   delta_f=RNG.uniform(-30, 30, m), diffusion=np.full(m, 1e-9))


def _grads(twin, seq, method, dtype=jnp.float64, wrt=("t1", "t2", "pd", "delta_f")):
    def loss(p):
        tw = twin.replace(**dict(zip(wrt, p)))
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, dtype=dtype, method=method).samples) ** 2)

    p = tuple(jnp.asarray(getattr(twin, f), dtype) for f in wrt)
    return jax.grad(loss)(p)


def _rel(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(np.asarray(y))))
               for x, y in zip(a, b))


@pytest.mark.parametrize("options", [
    {"windows": False},
    {},  # exact ADC windows
    {"readout": mt.NUFFTReadout(1e-10, t2_min=0.03, max_off_resonance=30.0)},
    {"rf_dt": 20e-6, "analytic_diffusion": True},
    {"ideal_spoiling": True, "reversible_segment": 10.0},  # restore points at every spoil
], ids=["stepped", "windows", "nufft", "diffusion", "ideal-spoiling"])
@pytest.mark.slow
def test_reversible_gradient_equals_checkpointed(options):
    twin = _twin()
    seq = cartesian_gre(8, 0.2)
    ref = _grads(twin, seq, mt.Bloch(**{k: v for k, v in options.items() if k != "reversible_segment"}))
    rev = _grads(twin, seq, mt.Bloch(reversible=True, **options))
    assert _rel(rev, ref) < 1e-9


def test_gradient_with_respect_to_sequence_values():
    """Flip angle and RF phase (per-step sequence inputs) get the same gradient."""
    twin = _twin(6)

    def loss(flip, method):
        seq = cartesian_gre(6, 0.2, flip=flip)
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, dtype=jnp.float64, method=method).samples) ** 2)

    g_ref = jax.grad(loss)(0.3, mt.Bloch(windows=False))
    g_rev = jax.grad(loss)(0.3, mt.Bloch(windows=False, reversible=True))
    assert abs(float(g_rev) - float(g_ref)) < 1e-9 * abs(float(g_ref))


@pytest.mark.slow
def test_short_t2_in_float32_stays_accurate_or_says_so():
    """Undoing relaxation amplifies rounding by exp(t/T2). With concrete T2 the restore
    spacing follows T2 (T2_min ln 100 in float32) and float32 gradients of a 2–4 ms T2
    species stay close to float64; when T2 is traced the default 0.1 s spacing is far too
    long for it, and the drift check turns the gradient into NaN with a warning."""
    twin = _twin(6, t2=(0.002, 0.004))
    seq = cartesian_gre(6, 0.2)
    ref = _grads(twin, seq, mt.Bloch(windows=False), jnp.float64, wrt=("pd", "t1"))
    rev = _grads(twin, seq, mt.Bloch(windows=False, reversible=True), jnp.float32, wrt=("pd", "t1"))
    assert _rel(rev, ref) < 1e-4
    ref = _grads(twin, seq, mt.Bloch(windows=False), jnp.float64, wrt=("t2",))
    with pytest.warns(RuntimeWarning, match="drifted"):
        lost = _grads(twin, seq, mt.Bloch(windows=False, reversible=True), jnp.float32, wrt=("t2",))
    assert np.all(np.isnan(np.asarray(lost[0])))
    ok = _grads(twin, seq, mt.Bloch(windows=False, reversible=True, reversible_segment=0.008), jnp.float32,
                wrt=("t2",))
    assert _rel(ok, ref) < 1e-4


def test_float32_gradient_through_a_stepped_shaped_pulse():
    """The library's sinc GRE (2 ms sinc on a 1 us raster, 32 TRs: 65 000 steps recomputed
    backwards) on CSF-like spins (T1 4 s, T2 2 s), gradient with respect to T2 in float32
    against float64: within 5e-4 of the largest entry (measured 9.9e-5). The inverse steps
    add each step's change once (``exp(t/T) - 1`` from ``expm1``, ``cos θ - 1`` from the
    half angle); dividing out ``1 - exp(-dt/T1)`` and multiplying by ``exp(dt/T2)``, within
    ulps of 1 for a raster step, made the recomputed states drift by 2e-3 of M0, past the
    drift check: the gradient was NaN."""
    twin, seq, scanner = csf_sinc_gre()
    t2 = np.asarray(twin.t2) * np.random.default_rng(1).uniform(0.5, 1.5, twin.n_spins)

    def grad(dtype):
        def loss(t2):
            tw = twin.replace(t2=t2)
            return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=scanner, dtype=dtype,
                                               method=mt.Bloch(reversible=True)).samples) ** 2)

        return np.asarray(jax.grad(loss)(jnp.asarray(t2, dtype)), float)

    g64, g32 = grad(jnp.float64), grad(jnp.float32)
    assert np.all(np.isfinite(g32))
    assert np.abs(g32 - g64).max() < 5e-4 * np.abs(g64).max()


def test_memory_does_not_grow_with_the_steps():
    """Compiled temporary memory: the reversible gradient needs far less than segment
    checkpointing, and about what the forward pass needs."""
    twin = _twin(16)
    seq = cartesian_gre(16, 0.2)
    p = (jnp.asarray(twin.t2, jnp.float32),)

    def loss(p, method):
        return jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=p[0]), seq, method=method).samples) ** 2)

    def temp(f):
        return f.lower(p).compile().memory_analysis().temp_size_in_bytes

    fwd = temp(jax.jit(lambda p: loss(p, mt.Bloch(windows=False))))
    ck = temp(jax.jit(jax.grad(lambda p: loss(p, mt.Bloch(windows=False)))))
    rev = temp(jax.jit(jax.grad(lambda p: loss(p, mt.Bloch(windows=False, reversible=True)))))
    assert rev < ck / 4
    assert rev < 8 * fwd


def test_restore_points():
    t = np.array([0.0, 0.05, 0.12, 0.19, 0.21, 0.35, 9.0])
    r, slot, n = restore_points(t, np.diff(t, append=9.0), 6, 0.1)
    assert r.tolist() == [1, 0, 1, 0, 1, 1, 0]
    assert n == 4 and slot[r > 0].tolist() == [0, 1, 2, 3]
    r, _, n = restore_points(t, np.diff(t, append=9.0), 6, 0.1, force=[False, True] + [False] * 5)
    assert r[1] == 2 and n == 5
    with pytest.raises(ValueError, match="reversible_segment"):
        mt.Bloch(reversible=True, reversible_segment=0.0)
