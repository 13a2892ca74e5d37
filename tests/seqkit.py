"""Tiny helpers to write test sequences by absolute time (SI units)."""

from __future__ import annotations

import numpy as np

import mritwin as mt

#: an ideal test system: no dead or ringdown times
IDEAL = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0, max_grad=1.0,
                   max_slew=1e6, max_b1=1.0)


def hard(flip, duration=10e-6, phase=0.0, use="excitation", freq=0.0):
    """A hard pulse with no dead/ringdown time; its centre is at duration/2."""
    return mt.make_block_pulse(flip, duration, phase_offset=phase, freq_offset=freq, delay=0.0,
                               use=use, scanner=IDEAL)


def build(items, total):
    """A Sequence from ``[(start_time [s], Block), ...]`` with delays filling the gaps.

    Blocks must not overlap. ``total`` is the sequence duration [s].
    """
    items = sorted(items, key=lambda it: it[0])
    blocks = []
    t = 0.0
    for start, blk in items:
        gap = start - t
        if gap < -1e-12:
            raise ValueError(f"blocks overlap at t={start}")
        if gap > 1e-12:
            blocks.append(mt.Block(duration=gap))
        blocks.append(blk)
        t = start + blk.duration
    if total - t > 1e-12:
        blocks.append(mt.Block(duration=total - t))
    return mt.Sequence(blocks)


def rf_at(t_center, rf, **grads):
    """(start, Block) placing the RF centre at ``t_center``."""
    return (t_center - rf.delay - rf.center, mt.Block(rf=rf, **grads))


def adc_at(t, phase=0.0):
    """(start, Block) with one ADC sample exactly at ``t``."""
    dwell = 2e-6
    return (t - dwell / 2, mt.Block(adc=mt.ADC(1, dwell, phase_offset=phase)))


def sample_times(sig):
    return np.asarray(sig.time)


def cartesian_gre(n, fov, *, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=20e-6, rf_duration=100e-6,
                  scanner=None, rf_spoil=True):
    """A 2D Cartesian spoiled GRE with a hard pulse: n x n, readout along x, phase along y.

    Sample m of line j is at k = ((m - n/2) / fov, (j - n/2) / fov). RF spoiling (117 deg)
    with matched ADC phase and a spoiler of 4 cycles per pixel along x.
    """
    sc = scanner or mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    dk = 1.0 / fov
    g_ro = dk / (mt.GAMMA_BAR * dwell)
    gx = mt.make_trapezoid("x", amplitude=g_ro, flat_time=n * dwell, scanner=sc)
    k_pre = -(n / 2 + 0.5) * dk - mt.GAMMA_BAR * g_ro * gx.rise_time / 2
    t_pre = 1e-3
    gxp = mt.make_trapezoid("x", area=k_pre, duration=t_pre, scanner=sc)
    spoil = mt.make_trapezoid("x", area=4 * n * dk, scanner=sc)
    blocks = []
    phase = inc = 0.0
    t_rf = rf_duration / 2  # RF centre from TR start
    # readout: the k-space centre (sample n/2) at TE
    t_center_in_ro = gx.rise_time + (n / 2 + 0.5) * dwell
    gap = te - t_rf - rf_duration / 2 - t_pre - t_center_in_ro
    if gap < 0:
        raise ValueError(f"TE too short: minimum {te - gap:.6f} s")
    for j in range(n):
        ph = np.radians(phase) if rf_spoil else 0.0
        rf = mt.make_block_pulse(flip, rf_duration, phase_offset=ph, delay=0.0, scanner=sc)
        gyp = mt.make_trapezoid("y", area=(j - n / 2) * dk, duration=t_pre, scanner=sc)
        gyr = mt.make_trapezoid("y", area=-(j - n / 2) * dk, duration=t_pre, scanner=sc)
        adc = mt.ADC(n, dwell, delay=gx.rise_time, phase_offset=ph)
        b = [mt.Block(rf=rf), mt.Block(gx=gxp, gy=gyp)]
        if gap > 0:
            b.append(mt.Block(duration=gap))
        b += [mt.Block(gx=gx, adc=adc), mt.Block(gx=spoil, gy=gyr)]
        used = sum(x.duration for x in b)
        if used > tr + 1e-12:
            raise ValueError(f"TR too short: minimum {used:.6f} s")
        b.append(mt.Block(duration=tr - used)) if tr - used > 1e-12 else None
        blocks += b
        inc += 117.0
        phase = (phase + inc) % 360.0
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def grid_twin(n, fov, mask=None, t1=1.0, t2=0.1, pd=1.0):
    """One spin per pixel centre of an n x n grid over fov (z = 0), optionally masked."""
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    keep = np.ones_like(x, bool) if mask is None else mask(x, y)
    x, y = x[keep], y[keep]
    m = x.size
    return mt.Twin(position=np.c_[x, y, np.zeros(m)], pd=np.full(m, pd), t1=np.full(m, t1),
                   t2=np.full(m, t2))


def fft_recon(samples, n):
    """(n, n) image indexed [x, y] from line-major samples (line j = ky index)."""
    data = np.asarray(samples).reshape(n, n).T  # [kx, ky]
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(data))) * n * n / n / n
