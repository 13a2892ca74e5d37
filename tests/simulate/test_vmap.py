"""`jax.vmap` over `mritwin.simulate`: a batch of flip angles (through a builder), of
tissue maps or of B1 scales gives what a Python loop over the batch gives, with `jax.jit`
around it too, with the NUFFT readout, and for per-example gradients; and a batch of
hard-pulse FIDs gives the closed form sin(α)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import mritwin as mt
from mritwin.benchmarking import grid_twin
from tests.seqkit import IDEAL

jax.config.update("jax_enable_x64", True)

SC = mt.Scanner()
TWIN = grid_twin(12, 0.2, t1=0.8, t2=0.08)


def _loop(f, xs):
    return np.stack([np.asarray(f(x)) for x in xs])


def _gre(flip):
    return mt.sequences.gre(scanner=SC, fov=0.2, matrix=12, flip_angle=flip, slice_thickness=5e-3)


def test_a_batch_of_hard_pulse_fids_is_sin_alpha():
    """One on-resonance spin without relaxation, a 0.1 ms block pulse of flip α, then the
    ADC: |signal| = sin(α) at every sample, α batched by `jax.vmap`."""
    spin = mt.Twin(position=np.zeros((1, 3)), pd=np.ones(1), t1=np.full(1, np.inf), t2=np.full(1, np.inf))

    def fid(alpha):
        seq = mt.Sequence([mt.Block(rf=mt.make_block_pulse(alpha, 1e-4, scanner=IDEAL)),
                           mt.Block(adc=mt.ADC(4, 1e-5))])
        return mt.simulate(spin, seq, scanner=IDEAL, dtype=jnp.float64).samples[0]

    alphas = jnp.radians(jnp.array([10.0, 45.0, 90.0, 150.0]))
    s = np.asarray(jax.vmap(fid)(alphas))
    assert s.shape == (4, 4)
    np.testing.assert_allclose(np.abs(s), np.broadcast_to(np.sin(np.asarray(alphas))[:, None], (4, 4)),
                               rtol=1e-12)


def test_a_batch_of_builder_flip_angles_equals_the_loop():
    def f(a):
        return mt.simulate(TWIN, _gre(a), dtype=jnp.float64).samples

    flips = jnp.radians(jnp.array([5.0, 20.0, 60.0]))
    ref = _loop(f, flips)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(flips)), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_jit_of_a_batch_of_t2_maps_on_an_epi_equals_the_loop():
    epi = mt.sequences.epi(scanner=SC, fov=0.2, matrix=12, slice_thickness=5e-3)

    def f(t2):
        return mt.simulate(TWIN.replace(t2=t2), epi, dtype=jnp.float64).samples

    t2s = jnp.stack([jnp.asarray(TWIN.t2) * s for s in (0.5, 1.0, 3.0)])
    ref = _loop(f, t2s)
    out = jax.jit(jax.vmap(f))(t2s)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.abs(ref[0]).max() < np.abs(ref[2]).max()  # (the batch differs: shorter T2, less signal)


def test_a_batch_of_b1_scales_on_a_spiral_with_the_nufft_readout_equals_the_loop():
    sp = mt.sequences.spiral(scanner=SC, fov=0.2, matrix=12, n_interleaves=2, flip_angle_deg=10,
                             slice_thickness=5e-3)
    method = mt.Bloch(readout=mt.NUFFTReadout())

    def f(b):
        return mt.simulate(TWIN.replace(b1=jnp.ones(TWIN.n_spins) * b), sp, dtype=jnp.float64,
                           method=method).samples

    scales = jnp.array([0.8, 1.2])
    ref = _loop(f, scales)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(scales)), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_per_example_flip_gradients_equal_the_loop():
    """`jax.vmap(jax.grad(...))` (under `jax.jit`): the flip-angle gradient of a hard-pulse
    train's signal energy for a batch of T2 scalings, each as `jax.grad` alone gives it."""
    twin = grid_twin(4, 0.2, t1=0.8, t2=0.05)
    gx = mt.make_trapezoid("x", area=40.0, duration=1e-3, scanner=IDEAL)

    def loss(a, s):
        tr = [mt.Block(rf=mt.make_block_pulse(a, 1e-4, scanner=IDEAL)), mt.Block(adc=mt.ADC(4, 1e-4)),
              mt.Block(gx=gx), mt.Block(duration=5e-3)]
        out = mt.simulate(twin.replace(t2=jnp.asarray(twin.t2) * s), mt.Sequence(tr * 3), scanner=IDEAL,
                          dtype=jnp.float64)
        return jnp.sum(jnp.abs(out.samples) ** 2)

    g = jax.jit(jax.grad(loss))  # (jitted: two compiles instead of eager's many small ones)
    scales = jnp.array([0.5, 2.0])
    batched = np.asarray(jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(0.3, scales))
    np.testing.assert_allclose(batched, [float(g(0.3, s)) for s in scales], rtol=1e-12)
