"""Thermal receiver noise (mritwin.signal.noise)."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.signal.noise import ReceiverNoise, add_noise, image_snr_to_sigma, sample_dwell

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "recon"))
from recon_helpers import gre, smooth_disk  # noqa: E402

from mritwin.recon import reconstruct  # noqa: E402


def _flat_signal(n_coils=1, n=20000, value=1.0 + 0.0j):
    return mt.Signal(samples=jnp.full((n_coils, n), value, jnp.complex64), kspace=jnp.zeros((n, 3)),
                     time=jnp.arange(n) * 1e-5)


def test_complex_gaussian_with_the_given_std():
    sig = _flat_signal()
    out = add_noise(sig, key=jax.random.key(0), sigma=0.3)
    d = np.asarray(out.samples - sig.samples)[0]
    assert np.mean(np.abs(d) ** 2) == pytest.approx(0.09, rel=0.03)  # E|n|² = σ²
    assert np.std(d.real) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)
    assert np.std(d.imag) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)
    assert abs(np.mean(d)) < 0.01
    assert abs(np.mean(d.real * d.imag)) < 0.002  # circular
    # the rest of the signal is untouched
    assert out.kspace is sig.kspace and out.time is sig.time


def test_seeded_by_the_key():
    sig = _flat_signal(n=100)
    a = add_noise(sig, key=jax.random.key(1), sigma=1.0).samples
    b = add_noise(sig, key=jax.random.key(1), sigma=1.0).samples
    c = add_noise(sig, key=jax.random.key(2), sigma=1.0).samples
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_std_follows_the_receiver_bandwidth():
    n = 20000
    sig = _flat_signal(n=2 * n)
    dwell = np.concatenate([np.full(n, 20e-6), np.full(n, 5e-6)])  # 4x the bandwidth
    d = np.asarray(add_noise(sig, key=jax.random.key(3), sigma=0.2, dwell=dwell).samples - sig.samples)[0]
    s_slow, s_fast = np.sqrt(np.mean(np.abs(d[:n]) ** 2)), np.sqrt(np.mean(np.abs(d[n:]) ** 2))
    assert s_slow == pytest.approx(0.2, rel=0.03)  # sigma holds at the longest dwell
    assert s_fast / s_slow == pytest.approx(2.0, rel=0.03)  # sqrt(20 / 5)
    # an explicit reference dwell
    d2 = np.asarray(add_noise(sig, key=jax.random.key(3), sigma=0.2, dwell=dwell, reference_dwell=5e-6).samples
                    - sig.samples)[0]
    assert np.sqrt(np.mean(np.abs(d2[n:]) ** 2)) == pytest.approx(0.2, rel=0.03)


def test_coil_noise_covariance():
    cov = np.array([[1.0, 0.5 + 0.2j, 0.0], [0.5 - 0.2j, 2.0, 0.3], [0.0, 0.3, 0.5]])
    sig = _flat_signal(n_coils=3, n=40000)
    d = np.asarray(add_noise(sig, key=jax.random.key(4), sigma=0.5, covariance=cov).samples - sig.samples)
    emp = d @ d.conj().T / d.shape[1]
    np.testing.assert_allclose(emp, 0.25 * cov, atol=0.01)


def test_snr_relative_to_the_peak():
    sig = _flat_signal(n=20000, value=3.0)
    d = np.asarray(add_noise(sig, key=jax.random.key(5), snr=10.0).samples - sig.samples)[0]
    assert np.sqrt(np.mean(np.abs(d) ** 2)) == pytest.approx(0.3, rel=0.03)
    d = np.asarray(add_noise(sig, key=jax.random.key(5), snr=10.0, reference=1.0).samples - sig.samples)[0]
    assert np.sqrt(np.mean(np.abs(d) ** 2)) == pytest.approx(0.1, rel=0.03)


def test_differentiable_with_respect_to_the_signal():
    sig = _flat_signal(n=50)

    def f(a):
        s = mt.Signal(samples=sig.samples * a, kspace=sig.kspace, time=sig.time)
        return jnp.sum(jnp.real(add_noise(s, key=jax.random.key(0), snr=5.0).samples))

    assert float(jax.grad(f)(2.0)) == pytest.approx(50.0, rel=1e-5)  # noise level held constant
    noise = ReceiverNoise(sigma=0.1)
    out = noise(sig, key=jax.random.key(0))
    assert out.samples.shape == sig.samples.shape


def test_measured_image_snr_matches_the_configured_snr():
    twin, rho = smooth_disk(32, 0.2, sub=2)
    seq = gre(32, 0.2)
    clean = mt.simulate(twin, seq)
    img0 = reconstruct(clean, seq)
    roi = rho > 0.95
    m = float(np.mean(np.abs(np.asarray(img0.data))[roi]))
    target = 20.0
    sigma = image_snr_to_sigma(target, m, 32 * 32)
    ratios = []
    for seed in range(3):
        noisy = add_noise(clean, key=jax.random.key(seed), sigma=sigma, dwell=sample_dwell(seq))
        img = reconstruct(noisy, seq)
        noise = np.asarray(img.data) - np.asarray(img0.data)
        measured = np.mean(np.abs(np.asarray(img.data))[roi]) / np.sqrt(np.mean(np.abs(noise) ** 2))
        ratios.append(measured / target)
    print("measured / configured image SNR:", np.round(ratios, 3))
    assert all(abs(r - 1) < 0.1 for r in ratios)


def test_bad_input():
    sig = _flat_signal(n_coils=2, n=10)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        add_noise(sig, key=None, sigma=1.0)
    with pytest.raises(ValueError, match="exactly one of sigma"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, snr=3.0)
    with pytest.raises(ValueError, match="exactly one of sigma"):
        add_noise(sig, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        add_noise(sig, key=jax.random.key(0), sigma=-1.0)
    with pytest.raises(ValueError, match="snr must be a finite number > 0"):
        add_noise(sig, key=jax.random.key(0), snr=0.0)
    with pytest.raises(ValueError, match="reference must be 'peak'"):
        add_noise(sig, key=jax.random.key(0), snr=1.0, reference="max")
    with pytest.raises(ValueError, match=r"covariance must have shape \(n_coils, n_coils\) = \(2, 2\)"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, covariance=np.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, covariance=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="Hermitian"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, covariance=[[1.0, 0.5], [0.1, 1.0]])
    with pytest.raises(ValueError, match=r"dwell must be a scalar or have shape \(n_adc,\)"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, dwell=np.ones(3))
    with pytest.raises(ValueError, match="dwell must be > 0"):
        add_noise(sig, key=jax.random.key(0), sigma=1.0, dwell=0.0)
    with pytest.raises(TypeError, match="mritwin.Signal"):
        add_noise(np.zeros((1, 3)), key=jax.random.key(0), sigma=1.0)
    with pytest.raises(ValueError, match="snr must be > 0"):
        image_snr_to_sigma(0.0, 1.0, 10)
