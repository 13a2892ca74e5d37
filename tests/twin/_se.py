"""A 2D Cartesian spin-echo sequence written with the make_* builders (test helper)."""

from __future__ import annotations

import numpy as np

import mritwin as mt

RASTER = 10e-6


def _r(t):
    return round(t / RASTER) * RASTER


def spin_echo_2d(n: int, fov: float, te: float, tr: float, *, dwell: float = 20e-6):
    """Hard 90x – TE/2 – 180y – TE/2 echo, Cartesian (kx readout, ky phase encode).

    Idealisation: short hard pulses (0.2 ms, no slice selection). One spin per pixel
    cannot dephase within a voxel, so transverse magnetization left from earlier TRs
    is suppressed by a large x spoiler after each readout (moving it outside the
    sampled k-space window) plus quadratic RF spoiling (117°, phase-matched ADC),
    which scrambles the pathways that the spoiler and the 180s bring back in.
    """
    rf90 = mt.make_block_pulse(np.pi / 2, 0.2e-3, use="excitation")
    rf180 = mt.make_block_pulse(np.pi, 0.2e-3, phase_offset=np.pi / 2, use="refocusing")
    gx = mt.make_trapezoid("x", flat_area=n / fov, flat_time=_r(n * dwell))
    adc = mt.make_adc(n, dwell=dwell, delay=gx.rise_time)
    gx_area_k = float(gx.area) * mt.GAMMA_BAR  # [1/m]
    pre_dur = 1.0e-3
    gx_pre = mt.make_trapezoid("x", area=-gx_area_k / 2, duration=pre_dur)
    spoil = mt.make_trapezoid("x", area=12 * n / fov, duration=3e-3)
    b90 = mt.Block(rf=rf90)
    b180 = mt.Block(rf=rf180)
    t90 = rf90.delay + 0.1e-3  # pulse centre within its block
    t180 = rf180.delay + 0.1e-3
    d1 = _r(te / 2 - (b90.duration - t90) - t180)
    d2 = _r(te / 2 - (b180.duration - t180) - pre_dur - (gx.rise_time + gx.flat_time / 2))
    if d1 <= 0 or d2 < 0:
        raise ValueError("TE too short for this helper")
    blocks = []
    for j in range(n):
        phi = np.deg2rad(117.0) * j * (j + 1) / 2
        b90 = mt.Block(rf=mt.make_block_pulse(np.pi / 2, 0.2e-3, phase_offset=phi, use="excitation"))
        b180 = mt.Block(rf=mt.make_block_pulse(np.pi, 0.2e-3, phase_offset=phi + np.pi / 2,
                                               use="refocusing"))
        adc = mt.make_adc(n, dwell=dwell, delay=gx.rise_time, phase_offset=phi)
        ky = (j - n // 2) / fov
        gy = mt.make_trapezoid("y", area=ky if ky else 1e-9, duration=pre_dur)
        read = mt.Block(gx=gx, adc=adc)
        used = b90.duration + d1 + b180.duration + pre_dur + d2 + read.duration + 3e-3
        blocks += [
            b90,
            mt.Block(delay=mt.make_delay(d1)),
            b180,
            mt.Block(gx=gx_pre, gy=gy),
            *([mt.Block(delay=mt.make_delay(d2))] if d2 > 0 else []),
            read,
            mt.Block(gx=spoil),
            mt.Block(delay=mt.make_delay(_r(tr - used))),
        ]
    return mt.Sequence(blocks)


def reconstruct(samples: np.ndarray, n: int) -> np.ndarray:
    """Magnitude image [x, y] from (n_ky * n_kx) samples, Hann-filtered against ringing."""
    k = np.asarray(samples).reshape(n, n)  # [ky, kx]
    w = np.hanning(n + 2)[1:-1]
    k = k * w[:, None] * w[None, :]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k)))
    return np.abs(img).T  # [x, y]
