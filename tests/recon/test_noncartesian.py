"""Non-Cartesian reconstruction: Kaiser–Bessel NUFFT, density compensation, radial, spiral."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from recon_helpers import gre, nrmse, radial, smooth_disk, spiral

import mritwin as mt
from mritwin.recon import nufft_adjoint, pipe_dcf, reconstruct


def _ndft_adjoint(v, k, shape):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    out = np.zeros(shape, complex)
    for kk, vv in zip(k, v, strict=True):
        ph = sum(kk[d] * grids[d] / shape[d] for d in range(len(shape)))
        out += vv * np.exp(2j * np.pi * ph)
    return out / np.prod(shape)


@pytest.mark.parametrize("shape", [(16, 12), (8, 8, 6)])
def test_nufft_adjoint_matches_the_exact_sum(shape):
    rng = np.random.default_rng(0)
    k = rng.uniform(-0.5, 0.5, size=(300, len(shape))) * np.array(shape)
    v = rng.normal(size=300) + 1j * rng.normal(size=300)
    got = np.asarray(nufft_adjoint(v, k, shape))
    ref = _ndft_adjoint(v, k, shape)
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    # batched leading axes
    got2 = np.asarray(nufft_adjoint(np.stack([v, 2 * v]), k, shape))
    np.testing.assert_allclose(got2[1], 2 * got, rtol=1e-5, atol=1e-8)


def test_pipe_dcf_is_the_sample_area():
    # uniform grids: area per sample in units of Δk² is 1 (spacing Δk) or 1/4 (spacing Δk/2)
    m = np.arange(32) / 2 - 8
    kx, ky = np.meshgrid(m, m, indexing="ij")
    w = pipe_dcf(np.stack([kx.ravel(), ky.ravel()], 1), (16, 16))
    np.testing.assert_allclose(w, 0.25, rtol=0.01)


@pytest.fixture(scope="module")
def disk_and_cartesian():
    twin, rho = smooth_disk(32, 0.2, centre=(0.01, -0.015))
    seq = gre(32, 0.2)
    cart = np.abs(np.asarray(reconstruct(mt.simulate(twin, seq), seq).data))
    return twin, rho, cart


@pytest.mark.parametrize("kind", ["radial", "spiral"])
def test_noncartesian_matches_cartesian(disk_and_cartesian, kind):
    twin, rho, cart = disk_and_cartesian
    seq = radial(32, 0.2) if kind == "radial" else spiral(32, 0.2)
    sig = mt.simulate(twin, seq)
    img = reconstruct(sig, seq, matrix=32)
    assert img.shape == (32, 32) and "nufft" in img.description
    a = np.abs(np.asarray(img.data))
    err = nrmse(a, cart)
    print(f"{kind} vs Cartesian NRMSE: {err:.4f}; vs PD map: {nrmse(a, rho):.4f}")
    assert err < 0.05
    np.testing.assert_allclose(img.affine, np.diag([6.25, 6.25, 5.0, 1.0]) + np.array(
        [[0, 0, 0, -100], [0, 0, 0, -100], [0, 0, 0, 0], [0, 0, 0, 0]]))


def test_radial_point_position_and_errors():
    r = np.array([0.05, -0.025, 0.0])
    twin = mt.Twin(position=r[None], pd=[1.0], t1=[0.5], t2=[0.5])
    seq = radial(16, 0.2)
    sig = mt.simulate(twin, seq)
    img = reconstruct(sig, seq)
    a = np.abs(np.asarray(img.data))
    i = np.unravel_index(np.argmax(a), a.shape)
    np.testing.assert_allclose(img.world(i)[:2], r[:2] * 1e3, atol=1e-6)
    # without a FOV (no sequence, no fov=) the grid is unknown
    with pytest.raises(ValueError, match="needs the field of view"):
        reconstruct(sig, trajectory="noncartesian")
    with pytest.raises(ValueError, match="not on a Cartesian grid"):
        reconstruct(sig, seq, trajectory="cartesian")
    with pytest.raises(ValueError, match="dcf must have shape"):
        reconstruct(sig, seq, dcf=np.ones(3))
    # an explicit FOV and DCF work without the sequence
    w = pipe_dcf(np.asarray(sig.kspace)[:, :2] * 0.2, (16, 16))
    img2 = reconstruct(dataclasses.replace(sig, samples=jnp.asarray(sig.samples)), fov=0.2, matrix=16, dcf=w)
    b = np.abs(np.asarray(img2.data))
    assert nrmse(b, a) < 0.02
