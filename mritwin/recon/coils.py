"""Coil combination: root-sum-of-squares and sensitivity-weighted (Roemer) combination."""

from __future__ import annotations

import numpy as np

from ._xp import backend

__all__ = ["combine_rss", "combine_sensitivity", "estimate_sensitivities"]


def combine_rss(coil_images, axis: int = 0):
    """Root-sum-of-squares ``sqrt(Σ_c |x_c|²)`` along ``axis`` (real, returned as complex).

    Args:
        coil_images: complex array with a coil axis.
        axis: the coil axis.
    """
    xp = backend(coil_images)
    x = xp.asarray(coil_images)
    return xp.sqrt(xp.sum(xp.abs(x) ** 2, axis=axis)).astype(x.dtype)


def combine_sensitivity(coil_images, sensitivities, axis: int = 0, eps: float = 1e-12):
    """Sensitivity-weighted combination ``Σ_c conj(S_c) x_c / Σ_c |S_c|²``.

    With exact sensitivities this recovers the (complex) image of a uniform coil.

    Args:
        coil_images: complex array with a coil axis at ``axis``, spatial axes after it.
        sensitivities: (n_coils, *spatial) complex maps on the image grid, broadcastable
            against ``coil_images``.
        axis: the coil axis of ``coil_images`` (the maps' first axis is the coil axis).
        eps: floor of the denominator (relative to its maximum) outside the coils' reach.

    Raises:
        ValueError: the numbers of coils differ.
    """
    xp = backend(coil_images, sensitivities)
    x = xp.moveaxis(xp.asarray(coil_images), axis, 0)
    s = xp.asarray(sensitivities)
    if s.shape[0] != x.shape[0]:
        raise ValueError(f"sensitivities have {s.shape[0]} coils but the images have {x.shape[0]}")
    s = s.reshape(s.shape + (1,) * (x.ndim - s.ndim))
    num = xp.sum(xp.conj(s) * x, axis=0)
    den = xp.sum(xp.abs(s) ** 2, axis=0)
    den = xp.maximum(den, eps * xp.max(den))
    return num / den


def estimate_sensitivities(coil_images, n_spatial: int, *, fraction: float = 0.25):
    """Smooth sensitivity estimates from the coil images themselves.

    Each coil image is low-pass filtered (a Hann window over the central ``fraction`` of
    k-space), then ``S_c = L_c · exp(-i∠L_0) / sqrt(Σ|L_c|²)`` (phase relative to coil 0).

    Args:
        coil_images: (n_coils, *spatial, ...) complex images.
        n_spatial: number of spatial axes after the coil axis.
        fraction: width of the low-pass window as a fraction of k-space per axis.

    Returns:
        (n_coils, *spatial) complex maps (the first extra index is used for the estimate).
    """
    xp = backend(coil_images)
    x = xp.asarray(coil_images)
    x = x.reshape(x.shape[: 1 + n_spatial] + (-1,))[..., 0]
    axes = tuple(range(1, 1 + n_spatial))
    k = xp.fft.fftshift(xp.fft.fftn(xp.fft.ifftshift(x, axes), axes=axes), axes)
    for ax in axes:
        n = x.shape[ax]
        f = np.arange(n) - n // 2
        half = max(1.0, fraction * n / 2)
        win = np.where(np.abs(f) < half, 0.5 * (1 + np.cos(np.pi * f / half)), 0.0)
        shape = [1] * x.ndim
        shape[ax] = n
        k = k * xp.asarray(win.reshape(shape))
    low = xp.fft.fftshift(xp.fft.ifftn(xp.fft.ifftshift(k, axes), axes=axes), axes)
    rss = xp.sqrt(xp.sum(xp.abs(low) ** 2, axis=0))
    rss = xp.maximum(rss, 1e-6 * xp.max(rss))
    ref = xp.exp(-1j * xp.angle(low[0]))
    return low * ref[None] / rss[None]
