"""Small test sequences built with the ``make_*`` builders (no Pulseq files)."""

from __future__ import annotations

import numpy as np

import mritwin as mt
from mritwin.constants import GAMMA_BAR

SC = mt.Scanner()


def _excite(flip=np.pi / 2, slice_freq=None):
    return mt.make_block_pulse(flip, 0.2e-3, use="excitation", freq_offset=0.0)


def gre(n=16, fov=0.2, *, n_z=1, fov_z=None, dwell=20e-6, tr_pad=12.0, labels=True,
        ky_lines=None, slices=None, slice_thickness=5e-3, adc_phase=0.0):
    """Cartesian GRE, 2D (``n_z=1``) or 3D; readout along x, phase along y (and z).

    ``ky_lines``: subset of line indices (partial Fourier). ``slices``: list of slice
    positions [m] for 2D multi-slice (slice-selective sinc pulses).
    """
    dk = 1.0 / fov
    gx = mt.make_trapezoid("x", flat_area=n * dk, flat_time=n * dwell)
    adc = mt.make_adc(n, dwell=dwell, delay=gx.rise_time, phase_offset=adc_phase)
    gx_pre = mt.make_trapezoid("x", area=-gx.area * GAMMA_BAR / 2 if False else -(n * dk) / 2 - 0.5 * gx.amplitude * gx.rise_time * GAMMA_BAR, duration=1e-3)
    blocks = []
    lines = range(n) if ky_lines is None else ky_lines
    zs = [None] if slices is None else list(slices)
    nz_lines = range(n_z)
    for s_i, z in enumerate(zs):
        if z is None:
            rf = _excite()
            ex_blocks = [mt.Block(rf)]
        else:
            rf, gz, gzr = mt.make_sinc_pulse(np.pi / 2, 2e-3, slice_thickness=slice_thickness,
                                             time_bw_product=4)
            freq = GAMMA_BAR * gz.amplitude * z
            rf = mt.RF(rf.amplitude, rf.shape, freq_offset=freq, delay=rf.delay, raster=rf.raster,
                       center=rf.center, use="excitation")
            ex_blocks = [mt.Block(rf, gz=gz), mt.Block(gz=gzr)]
        for iz in nz_lines:
            for iy in lines:
                ky = (iy - n // 2) * dk
                gy = mt.make_trapezoid("y", area=ky, duration=1e-3)
                gz_pe = None
                if n_z > 1:
                    kz = (iz - n_z // 2) / (fov_z or fov)
                    gz_pe = mt.make_trapezoid("z", area=kz, duration=1e-3)
                labs = []
                if labels:
                    labs = [mt.make_label("LIN", iy), mt.make_label("PAR", iz), mt.make_label("SLC", s_i)]
                blocks += [*ex_blocks, mt.Block(gx=gx_pre, gy=gy, gz=gz_pe),
                           mt.Block(gx=gx, adc=adc, labels=labs),
                           mt.Block(duration=tr_pad)]
    defs = {"FOV": [fov, fov, (fov_z or fov) if n_z > 1 else slice_thickness]}
    return mt.Sequence(blocks, defs)


def smooth_disk(n=32, fov=0.2, *, sub=3, radius=0.35, sigma_px=1.5, t1=0.5, t2=0.5,
                centre=(0.0, 0.0), z=0.0):
    """A disk twin with an erfc edge (Gaussian-blurred, ``sigma_px`` pixels wide).

    ``sub × sub`` spins per pixel on a regular sub-grid, each with ``pd = ρ(r) / sub²``, so
    a voxel's summed magnetization equals ρ at its centre. Returns ``(twin, rho)`` with
    ``rho`` (n, n) the density at the pixel centres (the expected image, before T2 decay).
    """
    from scipy.special import erfc

    dx = fov / n
    R = radius * fov
    s = sigma_px * dx

    def rho_at(x, y):
        r = np.hypot(x - centre[0], y - centre[1])
        return 0.5 * erfc((r - R) / (np.sqrt(2) * s))

    off = (np.arange(sub) + 0.5) / sub - 0.5
    c = (np.arange(n) - n // 2) * dx
    xs = (c[:, None] + off[None, :] * dx).ravel()
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    X, Y = X.ravel(), Y.ravel()
    pd = rho_at(X, Y) / sub**2
    keep = pd > 1e-6
    pos = np.stack([X[keep], Y[keep], np.full(keep.sum(), z)], 1)
    twin = mt.Twin(position=pos, pd=pd[keep], t1=np.full(keep.sum(), t1), t2=np.full(keep.sum(), t2))
    cx, cy = np.meshgrid(c, c, indexing="ij")
    return twin, rho_at(cx, cy)


def radial(n=32, fov=0.2, *, n_spokes=None, os=2, dwell=10e-6, tr_pad=12.0):
    """2D radial (full diameters over 0..π), readout oversampled ``os`` times."""
    n_spokes = n_spokes or int(np.ceil(np.pi / 2 * n))
    dk = 1.0 / fov
    n_s = n * os
    flat_time = n_s * dwell
    amp = n * dk / GAMMA_BAR / flat_time  # T/m
    blocks = []
    for i in range(n_spokes):
        phi = np.pi * i / n_spokes
        c, s = np.cos(phi), np.sin(phi)
        gxr = mt.make_trapezoid("x", amplitude=amp * c, flat_time=flat_time, rise_time=100e-6)
        gyr = mt.make_trapezoid("y", amplitude=amp * s, flat_time=flat_time, rise_time=100e-6)
        # prephase to -kmax along the spoke (minus the ramp area)
        a_pre = -(n * dk) / 2 - 0.5 * amp * 100e-6 * GAMMA_BAR
        gxp = mt.make_trapezoid("x", area=a_pre * c, duration=1e-3)
        gyp = mt.make_trapezoid("y", area=a_pre * s, duration=1e-3)
        adc = mt.make_adc(n_s, dwell=dwell, delay=100e-6)
        blocks += [mt.Block(_excite()), mt.Block(gx=gxp, gy=gyp), mt.Block(gx=gxr, gy=gyr, adc=adc),
                   mt.Block(duration=tr_pad)]
    return mt.Sequence(blocks, {"FOV": [fov, fov, 5e-3]})


def spiral(n=32, fov=0.2, *, n_interleaves=8, readout=6e-3, tr_pad=12.0):
    """2D Archimedean spiral-out, ``n_interleaves`` arms, gradients on the 10 us raster."""
    dk = 1.0 / fov
    kmax = n * dk / 2 * 1.05
    gr = 10e-6
    n_t = int(round(readout / gr))
    t = np.arange(n_t + 1) * gr
    # constant-slew-like start: theta grows as (t/T)^(1/2)... use a smooth ramp-in
    tau = t / t[-1]
    turns = kmax / (n_interleaves * dk) * 1.1
    theta_max = 2 * np.pi * turns
    shape = tau ** 1.5 * (1 - np.exp(-(tau / 0.05) ** 2)) + 0.0
    shape = shape / shape[-1]
    blocks = []
    for il in range(n_interleaves):
        th0 = 2 * np.pi * il / n_interleaves
        kr = kmax * shape
        th = theta_max * shape + th0
        kx, ky = kr * np.cos(th), kr * np.sin(th)
        gx = np.diff(kx) / gr / GAMMA_BAR
        gy = np.diff(ky) / gr / GAMMA_BAR
        # ramp down to zero over 40 samples
        ramp = np.linspace(1, 0, 41)[1:]
        gx_full = np.concatenate([gx, gx[-1] * ramp])
        gy_full = np.concatenate([gy, gy[-1] * ramp])
        ggx = mt.make_arbitrary_grad("x", gx_full, first=0.0, last=0.0)
        ggy = mt.make_arbitrary_grad("y", gy_full, first=0.0, last=0.0)
        adc = mt.make_adc(n_t, dwell=gr, delay=0.0)
        blocks += [mt.Block(_excite()), mt.Block(gx=ggx, gy=ggy, adc=adc), mt.Block(duration=tr_pad)]
    return mt.Sequence(blocks, {"FOV": [fov, fov, 5e-3]})


def epi(n=32, fov=0.2, *, dwell=10e-6, rise=100e-6, n_nav=3, adc_shift=0.0, labels=True):
    """Single-shot 2D EPI, ramp-sampled readouts along x, blips along y.

    ``n_nav`` navigator lines (no phase encoding, NAV label) come first; reversed lines
    carry REV=1. ``adc_shift`` [s] delays the ADC of reversed lines (a timing error that
    makes ghosts when the nominal trajectory is used for reconstruction).
    """
    dk = 1.0 / fov
    flat = n * dwell
    amp = n * dk / GAMMA_BAR / flat
    n_s = int(round((flat + 2 * rise) / dwell))
    area_total = amp * (flat + rise) * GAMMA_BAR  # [1/m]
    blocks = [mt.Block(_excite())]
    gx_pre = mt.make_trapezoid("x", area=-area_total / 2, duration=0.6e-3)
    blocks.append(mt.Block(gx=gx_pre))
    if n_nav == 0:
        blocks.append(mt.Block(gy=mt.make_trapezoid("y", area=-(n // 2) * dk, duration=0.4e-3)))
    sign = 1
    n_lines = n_nav + n
    for i in range(n_lines):
        gx = mt.make_trapezoid("x", amplitude=sign * amp, flat_time=flat, rise_time=rise)
        delay = 0.0 + (adc_shift if sign < 0 else 0.0)
        adc = mt.make_adc(n_s, dwell=dwell, delay=delay)
        labs = []
        if labels:
            nav = i < n_nav
            labs = [mt.make_label("NAV", int(nav)), mt.make_label("REV", int(sign < 0))]
            if not nav:
                labs.append(mt.make_label("LIN", i - n_nav))
        blocks.append(mt.Block(gx=gx, adc=adc, labels=labs, duration=gx.duration + abs(adc_shift) + 20e-6))
        if i == n_nav - 1:
            # go to -ky_max (and flip the readout direction for an even number of navs)
            gy_pre = mt.make_trapezoid("y", area=-(n // 2) * dk, duration=0.4e-3)
            blocks.append(mt.Block(gy=gy_pre))
        elif i >= n_nav and i < n_lines - 1:
            blocks.append(mt.Block(gy=mt.make_trapezoid("y", area=dk, duration=60e-6)))
        sign = -sign
    return mt.Sequence(blocks, {"FOV": [fov, fov, 5e-3]})


def nrmse(a, b):
    """||a - b|| / ||b||."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
