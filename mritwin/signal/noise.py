"""Thermal receiver noise.

Receiver noise is white, complex Gaussian and circularly symmetric: for a sample taken
with dwell time ``dwell`` its variance grows with the receiver bandwidth ``1/dwell``,
so its standard deviation is

    σ(dwell) = σ_ref · sqrt(dwell_ref / dwell)

where ``σ_ref`` is the standard deviation of one complex sample (``E|n|² = σ²``; real and
imaginary parts each have ``σ²/2``) at the reference dwell time ``dwell_ref``. Between
coils the noise is correlated by a covariance matrix ``C`` (``E[n nᴴ] = σ² C``), applied
through its Cholesky factor ``n = σ L w`` with ``C = L Lᴴ`` and ``w`` white.

``σ_ref`` is given directly (``sigma``) or as an SNR of one k-space sample relative to a
reference signal magnitude (``snr``: ``σ_ref = reference / snr``; ``reference="peak"``
uses the largest noiseless sample magnitude, i.e. the k-space centre). For a fully
sampled Cartesian image of ``n`` k-space samples reconstructed by `mritwin.reconstruct`
(which scales the inverse DFT by ``1/n``), the image-domain noise is ``σ / sqrt(n)`` and
a voxel of magnetization ``m`` has SNR ``m · sqrt(n) / σ``; `image_snr_to_sigma` converts.

Everything here is pure JAX: noise is drawn from an explicit ``key`` and the noisy
signal is differentiable with respect to the noiseless one (the noise level itself is
held constant under differentiation).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .signal import Signal

__all__ = ["ReceiverNoise", "add_noise", "sample_dwell", "image_snr_to_sigma"]


def sample_dwell(seq) -> np.ndarray:
    """(n_adc_samples,) dwell time of the ADC event each sample belongs to [s].

    Args:
        seq: a `mritwin.Sequence`.
    """
    d = [np.full(b.adc.num_samples, b.adc.dwell) for b in seq.blocks if b.adc is not None]
    return np.concatenate(d) if d else np.zeros(0)


def image_snr_to_sigma(snr: float, magnetization: float, n_samples: int) -> float:
    """Per-sample noise σ giving image SNR ``snr`` for a voxel of ``magnetization``.

    For a Cartesian image reconstructed from ``n_samples`` k-space samples (inverse DFT
    scaled by ``1/n_samples``, as `mritwin.reconstruct` does), image noise is
    ``σ / sqrt(n_samples)``, so ``σ = magnetization · sqrt(n_samples) / snr``.

    Args:
        snr: wanted image SNR (mean / std of the complex noise) [1], > 0.
        magnetization: the voxel's image value (sum of its spins' magnetization) [a.u.].
        n_samples: k-space samples per image (e.g. ``nx * ny``).
    """
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    return float(magnetization) * math.sqrt(n_samples) / float(snr)


class ReceiverNoise(eqx.Module):
    """Receiver noise settings, applied with ``noise(signal, key=key, dwell=...)``.

    Give exactly one of ``sigma`` and ``snr``.

    Args:
        sigma: standard deviation of one complex sample at ``reference_dwell`` [a.u.,
            the units of `Signal.samples`], >= 0.
        snr: SNR of one sample relative to ``reference`` (``σ_ref = reference / snr``), > 0.
        reference: ``"peak"`` (largest noiseless sample magnitude over all coils) or a
            signal magnitude [a.u.].
        covariance: optional (n_coils, n_coils) Hermitian positive-definite coil noise
            covariance (relative: diagonal 1 means every coil has ``σ``).
        reference_dwell: dwell time at which ``sigma``/``snr`` hold [s]; default: the
            longest dwell of the signal (so with a single dwell the level is exact).

    Example:
        >>> import jax, mritwin as mt
        >>> from mritwin.signal.noise import ReceiverNoise
        >>> noise = ReceiverNoise(snr=50.0)
        >>> # noisy = noise(sig, key=jax.random.key(0), dwell=sample_dwell(seq))
    """

    sigma: float | None = eqx.field(default=None, static=True)
    snr: float | None = eqx.field(default=None, static=True)
    reference: str | float = eqx.field(default="peak", static=True)
    covariance: np.ndarray | None = None
    reference_dwell: float | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if (self.sigma is None) == (self.snr is None):
            raise ValueError("give exactly one of sigma (noise level) and snr (reference SNR)")
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        if self.snr is not None and not (math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"snr must be a finite number > 0, got {self.snr}")
        if isinstance(self.reference, str):
            if self.reference != "peak":
                raise ValueError(f"reference must be 'peak' or a signal magnitude, got {self.reference!r}")
        elif not (float(self.reference) > 0):
            raise ValueError(f"reference must be > 0, got {self.reference}")
        if self.reference_dwell is not None and not self.reference_dwell > 0:
            raise ValueError(f"reference_dwell must be > 0 [s], got {self.reference_dwell}")

    def __call__(self, signal: Signal, *, key, dwell=None) -> Signal:
        return add_noise(signal, key=key, sigma=self.sigma, snr=self.snr, reference=self.reference,
                         covariance=self.covariance, dwell=dwell, reference_dwell=self.reference_dwell)


def add_noise(
    signal: Signal,
    *,
    key,
    sigma: float | None = None,
    snr: float | None = None,
    reference: str | float = "peak",
    covariance=None,
    dwell=None,
    reference_dwell: float | None = None,
) -> Signal:
    """Add thermal receiver noise to a signal.

    Args:
        signal: the noiseless `Signal`, ``samples`` (n_coils, n_adc).
        key: a JAX PRNG key (``jax.random.key(seed)``); required.
        sigma: std of one complex sample at ``reference_dwell`` [a.u.], >= 0.
        snr: SNR of one sample relative to ``reference`` (``σ_ref = reference / snr``).
            Give exactly one of ``sigma`` and ``snr``.
        reference: ``"peak"`` (max ``|samples|`` of the noiseless signal, held constant
            under differentiation) or a magnitude [a.u.].
        covariance: optional (n_coils, n_coils) Hermitian positive-definite coil noise
            covariance, relative (``E[n nᴴ] = σ² C``).
        dwell: dwell time [s], a scalar or (n_adc,) per sample (see `sample_dwell`);
            ``None`` applies ``σ_ref`` to every sample.
        reference_dwell: dwell at which ``sigma``/``snr`` is specified [s]; default: the
            longest ``dwell``.

    Returns:
        A `Signal` with noise added to ``samples`` (other fields unchanged).

    Raises:
        ValueError: missing key, both or neither of ``sigma``/``snr``, a covariance of
            the wrong shape or not positive definite, a dwell of the wrong shape or <= 0.

    Example:
        >>> import jax, jax.numpy as jnp, mritwin as mt
        >>> sig = mt.Signal(samples=jnp.ones((2, 1000), jnp.complex64), kspace=jnp.zeros((1000, 3)),
        ...                 time=jnp.zeros(1000))
        >>> noisy = add_noise(sig, key=jax.random.key(0), sigma=0.1,
        ...                   covariance=[[1.0, 0.3], [0.3, 1.0]])
        >>> noisy.samples.shape
        (2, 1000)
    """
    if key is None:
        raise ValueError("add_noise needs an explicit PRNG key: key=jax.random.key(seed)")
    if not isinstance(signal, Signal):
        raise TypeError(f"signal must be a mritwin.Signal, got {type(signal).__name__}")
    # validate the settings once, in one place
    ReceiverNoise(sigma=sigma, snr=snr, reference=reference, reference_dwell=reference_dwell)
    samples = signal.samples
    n_coils, n_adc = samples.shape
    rdt = jnp.real(samples).dtype
    if sigma is not None:
        sigma_ref = jnp.asarray(sigma, rdt)
    else:
        if isinstance(reference, str):
            ref = jax.lax.stop_gradient(jnp.max(jnp.abs(samples)))
        else:
            ref = jnp.asarray(reference, rdt)
        sigma_ref = ref / snr
    scale = jnp.ones((n_adc,), rdt)
    if dwell is not None:
        d = np.asarray(dwell, dtype=np.float64)
        if d.ndim == 0:
            d = np.full(n_adc, float(d))
        if d.shape != (n_adc,):
            raise ValueError(f"dwell must be a scalar or have shape (n_adc,) = ({n_adc},), got {d.shape}")
        if not np.all(d > 0):
            raise ValueError("dwell must be > 0 [s]")
        ref_d = float(d.max()) if reference_dwell is None else float(reference_dwell)
        scale = jnp.asarray(np.sqrt(ref_d / d), rdt)
    k_re, k_im = jax.random.split(key)
    w = (jax.random.normal(k_re, (n_coils, n_adc), rdt)
         + 1j * jax.random.normal(k_im, (n_coils, n_adc), rdt)) / jnp.sqrt(2.0).astype(rdt)
    if covariance is not None:
        c = np.asarray(covariance)
        if c.shape != (n_coils, n_coils):
            raise ValueError(
                f"covariance must have shape (n_coils, n_coils) = ({n_coils}, {n_coils}), got {c.shape}"
            )
        if not np.allclose(c, np.conj(c.T), rtol=1e-6, atol=1e-9 * max(1.0, np.abs(c).max())):
            raise ValueError("covariance must be Hermitian")
        try:
            chol = np.linalg.cholesky(c)
        except np.linalg.LinAlgError as e:
            raise ValueError("covariance must be positive definite (its Cholesky factorization failed)") from e
        w = jnp.asarray(chol, w.dtype) @ w
    noisy = samples + (sigma_ref * scale)[None, :] * w
    return eqx.tree_at(lambda s: s.samples, signal, noisy.astype(samples.dtype))
