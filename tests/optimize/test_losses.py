"""Losses of mritwin.optimize: values and gradients against central finite differences (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
import mritwin.optimize as mo
from mritwin.sequence.safety import b1_rms
from tests.optimize._common import IDEAL, METHOD, flash_train, flip_contrast, two_tissue_twin

SIM = dict(method=METHOD, scanner=IDEAL, dtype=jnp.float64)


def assert_grad_matches_fd(f, x0, rel=1e-6, seed=0, h=1e-5):
    """Directional derivative along a random direction: autodiff vs central differences."""
    x0 = jnp.asarray(x0, jnp.float64)
    v = jnp.asarray(np.random.default_rng(seed).normal(size=x0.shape))
    ad = float(jnp.sum(jax.grad(f)(x0) * v))
    fd = (float(f(x0 + h * v)) - float(f(x0 - h * v))) / (2 * h)
    assert abs(ad - fd) <= rel * max(abs(fd), 1e-10), (ad, fd)
    return ad


FLIPS = jnp.array([0.3, 0.5, 0.2, 0.4])


def test_contrast_gradient_wrt_flips():
    tw = two_tissue_twin()
    assert_grad_matches_fd(lambda f: flip_contrast(f, tw), FLIPS)


def test_contrast_value_first_pulse():
    # one pulse from equilibrium: |s| = pd sin(flip) exp(-TE/T2) per spin; per unit time
    tw = two_tissue_twin()
    seq = flash_train(jnp.array([0.4]), n_adc=1)
    c = mo.contrast(tw, seq, "gray_matter", "white_matter", per_unit_time=False, **SIM)
    te = 2e-3  # ADC centre, from the pulse centre

    def s(p):
        return p[2] * np.sin(0.4) * np.exp(-te / p[1])

    want = s((1.33, 0.110, 0.80)) - s((0.83, 0.080, 0.69))
    assert abs(float(c) - want) < 2e-3 * abs(want)
    cu = mo.contrast(tw, seq, "gray_matter", "white_matter", **SIM)
    assert np.isclose(float(cu), float(c) / np.sqrt(seq.duration))


def test_cnr_gradient_wrt_twin_t2():
    tw = two_tissue_twin()
    seq = flash_train(FLIPS)

    def f(t2):
        return mo.cnr(tw.replace(t2=t2), seq, "gray_matter", "white_matter", noise_std=0.01, **SIM)

    assert_grad_matches_fd(f, tw.t2)


def test_signal_mse_and_magnitude_gradients_wrt_t1_and_flips():
    tw = two_tissue_twin()
    target = mt.simulate(tw, flash_train(FLIPS), **SIM)

    def f(t1):
        return mo.signal_mse(mt.simulate(tw.replace(t1=t1), flash_train(FLIPS), **SIM), target)

    assert float(f(tw.t1)) == 0.0
    assert_grad_matches_fd(f, tw.t1 * 1.2, h=1e-6)
    assert_grad_matches_fd(lambda fl: mo.signal_magnitude(mt.simulate(tw, flash_train(fl), **SIM)), FLIPS)


def test_image_mse_gradient_wrt_pd():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    mask = np.ones((4, 4))
    mask[0] = 0

    def f(pd):
        img = jnp.fft.ifft2(jnp.reshape(pd, (4, 4)) * jnp.exp(0.3j))
        return mo.image_mse(img, target, mask=mask)

    assert_grad_matches_fd(f, rng.uniform(0.5, 1, 16))
    assert float(mo.image_mse(target, target)) == 0.0
    assert np.isclose(float(mo.image_mse(jnp.zeros((4, 4)), target)), 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        mo.image_mse(jnp.zeros((3, 4)), target)


def test_sar_penalty_hinge_and_gradient():
    seq_fn = flash_train
    limit = float(b1_rms(seq_fn(FLIPS)))
    # inside the limit: exactly zero with zero gradient
    assert float(mo.sar_penalty(seq_fn(FLIPS * 0.9), max_b1_rms=limit)) == 0.0
    g = jax.grad(lambda f: mo.sar_penalty(seq_fn(f), max_b1_rms=limit))(FLIPS * 0.9)
    assert np.all(np.asarray(g) == 0)
    # above: (b/limit - 1)^2, gradient vs FD
    assert np.isclose(float(mo.sar_penalty(seq_fn(FLIPS * 1.5), max_b1_rms=limit)), 0.25)
    assert_grad_matches_fd(lambda f: mo.sar_penalty(seq_fn(f), max_b1_rms=limit), FLIPS * 1.5)
    with pytest.raises(ValueError, match="max_b1_rms must be > 0"):
        mo.sar_penalty(seq_fn(FLIPS), max_b1_rms=0.0)


def test_duration_penalty_and_region_errors():
    seq = flash_train(FLIPS)  # 80 ms
    assert float(mo.duration_penalty(seq, max_duration=0.1)) == 0.0
    assert np.isclose(float(mo.duration_penalty(seq, max_duration=0.04)), 1.0)
    with pytest.raises(ValueError, match="max_duration must be > 0"):
        mo.duration_penalty(seq, max_duration=-1)
    tw = two_tissue_twin()
    with pytest.raises(ValueError, match="unknown region 'csf'"):
        mo.region_mask(tw, "csf")
    with pytest.raises(ValueError, match="shape"):
        mo.region_mask(tw, np.ones(3, bool))
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        mo.cnr(tw, seq, 1, 2, noise_std=0.0, **SIM)
    assert mo.region_mask(tw, "white_matter").tolist() == [True, True, False, False]
