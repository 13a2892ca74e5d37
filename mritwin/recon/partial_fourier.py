"""Partial-Fourier reconstruction along one k-space axis: zero-fill, homodyne, POCS.

All functions take centred k-space (index ``N//2`` is ``k = 0``) on the axis ``axis``
with a boolean ``sampled`` mask along that axis, and return centred k-space (zero-fill)
or a complex image (homodyne and POCS return images after the centred inverse FFT on
``axis`` only, scaled ``1/N``). Other axes are untouched (they may be image or k-space).
"""

from __future__ import annotations

import numpy as np

from ._xp import backend

__all__ = ["symmetric_region", "homodyne", "pocs", "centred_ifft"]


def centred_ifft(x, axis):
    """Centred inverse FFT along ``axis`` with ``1/N`` scaling (numpy convention)."""
    xp = backend(x)
    return xp.fft.fftshift(xp.fft.ifft(xp.fft.ifftshift(x, axis), axis=axis), axis)


def centred_fft(x, axis):
    """Centred forward FFT along ``axis`` (no scaling)."""
    xp = backend(x)
    return xp.fft.fftshift(xp.fft.fft(xp.fft.ifftshift(x, axis), axis=axis), axis)


def symmetric_region(sampled: np.ndarray) -> tuple[int, int, int]:
    """Half-width ``h`` of the symmetric sampled centre and the side that is full.

    Returns ``(h, side, n)``: indices ``N//2 - h .. N//2 + h - 1`` are sampled; ``side`` is
    +1 when the high-k half is complete (low-k half missing), -1 otherwise.
    """
    n = sampled.size
    c = n // 2
    idx = np.nonzero(sampled)[0]
    lo, hi = idx.min() - c, idx.max() - c
    h = int(min(-lo, hi + 1))
    side = 1 if (hi + 1) > -lo else -1
    return max(h, 0), side, n


def _bshape(ndim, axis, n):
    s = [1] * ndim
    s[axis] = n
    return s


def _lowres_phase(k, sampled, axis):
    h, _, n = symmetric_region(sampled)
    f = np.arange(n) - n // 2
    win = np.where(np.abs(f) < h, 0.5 * (1 + np.cos(np.pi * f / max(h, 1))), 0.0)
    xp = backend(k)
    low = centred_ifft(k * xp.asarray(win.reshape(_bshape(k.ndim, axis, n))), axis)
    return xp.exp(1j * xp.angle(low))


def homodyne(k, sampled: np.ndarray, axis: int):
    """Homodyne detection (Noll et al., IEEE TMI 10:154, 1991) along ``axis``.

    The acquired asymmetric half gets weight 2 (with a linear ramp over the symmetric
    centre), the result is demodulated by the low-resolution phase and its real part
    kept, then the phase is put back so the output stays complex.
    """
    h, side, n = symmetric_region(sampled)
    f = np.arange(n) - n // 2
    ramp = np.clip(0.5 + side * f / (2 * max(h, 1)), 0.0, 1.0) * 2.0  # w(k) + w(-k) = 2
    w = np.where(sampled, ramp, 0.0)
    phase = _lowres_phase(k, sampled, axis)
    xp = backend(k)
    img = centred_ifft(k * xp.asarray(w.reshape(_bshape(k.ndim, axis, n))), axis)
    return xp.real(img * xp.conj(phase)) * phase


def pocs(k, sampled: np.ndarray, axis: int, n_iter: int = 20):
    """Projection onto convex sets (Haacke et al., JMR 92:126, 1991) along ``axis``.

    Alternates between imposing the low-resolution phase on the image and restoring the
    measured samples in k-space.
    """
    n = sampled.size
    phase = _lowres_phase(k, sampled, axis)
    xp = backend(k)
    mask = xp.asarray(sampled.reshape(_bshape(k.ndim, axis, n)))
    est = k
    for _ in range(n_iter):
        img = centred_ifft(est, axis)
        img = xp.abs(img) * phase
        est = xp.where(mask, k, centred_fft(img, axis))
    return centred_ifft(est, axis)
