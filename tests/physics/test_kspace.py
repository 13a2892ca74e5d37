"""k-space: the signal of an object is the Fourier transform of its density (PHYSICS.md 12),
and a tiny 2D Cartesian GRE image shows a disk at the right place and size."""

import jax.numpy as jnp
import numpy as np

import mritwin as mt
from tests.seqkit import IDEAL, cartesian_gre, fft_recon, grid_twin, hard


def test_signal_is_fourier_transform_of_density():
    # after a 90, a readout with ramps (stepped) and a flat top (window): s(k) = i sum rho e^{-i2pi k.r}
    rng = np.random.default_rng(1)
    n = 50
    pos = rng.uniform(-0.05, 0.05, (n, 3))
    rho = rng.uniform(0.2, 1.0, n)
    twin = mt.Twin(position=pos, pd=rho, t1=np.full(n, np.inf), t2=np.full(n, np.inf))
    gx = mt.TrapGrad("x", 10e-3, 200e-6, 1e-3, 200e-6)
    gy = mt.TrapGrad("y", -4e-3, 100e-6, 1e-3, 300e-6)
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, 2e-6)),
                       mt.Block(gx=gx, gy=gy, adc=mt.ADC(140, 10e-6, delay=0.0))])
    sig = mt.simulate(twin, seq, dtype=jnp.float64, scanner=IDEAL)
    k = np.asarray(sig.kspace)
    expected = 1j * (rho[None, :] * np.exp(-2j * np.pi * k @ pos.T)).sum(1)
    # pulse of 2 us: the spins' k at the pulse centre is 0 by definition; gradients are off
    np.testing.assert_allclose(np.asarray(sig.samples[0]), expected, rtol=1e-6, atol=1e-9)
    # k is gamma_bar times the exact gradient integral (ramp and flat top)
    t = np.asarray(sig.time) - seq.block_starts()[1]
    kx_flat = mt.GAMMA_BAR * 10e-3 * (t - 200e-6 + 100e-6)
    flat = (t > 200e-6) & (t < 1.2e-3)
    np.testing.assert_allclose(k[flat, 0], kx_flat[flat], rtol=1e-9)


def test_gre_image_shows_disk_at_right_place_and_size():
    n, fov = 32, 0.2
    x0, y0, r = 0.03, -0.02, 0.04
    # one spin per pixel cannot be RF/gradient spoiled, so transverse coherence is removed
    # physically: T2 = 10 ms << TR = 100 ms
    twin = grid_twin(n, fov, mask=lambda x, y: (x - x0) ** 2 + (y - y0) ** 2 < r ** 2, t2=0.01)
    seq = cartesian_gre(n, fov, tr=0.1, te=3e-3, rf_spoil=False)
    sig = mt.simulate(twin, seq)
    np.testing.assert_allclose(np.asarray(sig.kspace)[:, 0].reshape(n, n)[0],
                               (np.arange(n) - n / 2) / fov, rtol=1e-5, atol=1e-6)
    img = np.abs(fft_recon(sig.samples[0], n))
    c = (np.arange(n) - n / 2) * fov / n
    xg, yg = np.meshgrid(c, c, indexing="ij")
    mask = img > img.max() / 2
    np.testing.assert_allclose(xg[mask].mean(), x0, atol=fov / n / 2)
    np.testing.assert_allclose(yg[mask].mean(), y0, atol=fov / n / 2)
    true_area = ((xg - x0) ** 2 + (yg - y0) ** 2 < r ** 2).sum()
    np.testing.assert_allclose(mask.sum(), true_area, rtol=0.05)
