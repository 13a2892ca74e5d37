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


def epi_like(n=8, fov=0.2, flip=90.0):
    """One slice-selective 2 ms sinc of ``flip`` degrees (1 999 raster steps, played once),
    then ``n`` constant-gradient readout lines of ``n`` samples and alternating polarity
    (a single-shot EPI without blips), on the `IDEAL` system."""
    rf, gz, gzr = mt.make_sinc_pulse(flip * np.pi / 180, 2e-3, slice_thickness=5e-3, scanner=IDEAL)
    dwell = 20e-6
    amp = (1 / fov) / (dwell * IDEAL.gamma_bar)
    blocks = [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr)]
    for j in range(n):
        gx = mt.make_trapezoid("x", amplitude=amp * (-1) ** j, flat_time=n * dwell, scanner=IDEAL)
        blocks.append(mt.Block(gx=gx, adc=mt.ADC(n, dwell, delay=gx.rise_time)))
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def random_twin(n=1001, seed=0, n_coils=2):
    """``n`` spins at random positions in a 20 cm square (z = 0) with random PD, T1, T2,
    off-resonance and ``n_coils`` random complex coil sensitivities."""
    rng = np.random.default_rng(seed)
    return mt.Twin(position=rng.uniform(-0.1, 0.1, (n, 3)) * [1, 1, 0], pd=rng.uniform(0.5, 1, n),
                   t1=rng.uniform(0.3, 2, n), t2=rng.uniform(0.02, 0.2, n), delta_f=rng.normal(0, 30, n),
                   coil_sensitivity=rng.normal(size=(n_coils, n)) + 1j * rng.normal(size=(n_coils, n)))


def slab_twin(n, fov=0.2, seed=0):
    """An ``n`` x ``n`` grid over ``fov`` [m] with random z within ±4 mm (a slab), PD, T1,
    T2, off-resonance (±80 Hz) and B1 (0.8-1.2): what RF stepping tests vary."""
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    m = x.size
    return mt.Twin(position=np.c_[x.ravel(), y.ravel(), rng.uniform(-4e-3, 4e-3, m)],
                   pd=rng.uniform(0.5, 1.0, m), t1=rng.uniform(0.3, 1.5, m), t2=rng.uniform(0.01, 0.2, m),
                   delta_f=rng.uniform(-80, 80, m), b1=rng.uniform(0.8, 1.2, m))


def sample_times(sig):
    return np.asarray(sig.time)


from mritwin.benchmarking import cartesian_gre, exact_constant_pulse, fft_recon, grid_twin  # noqa: E402,F401


def csf_sinc_gre(n=16, seed=0):
    """``(twin, seq, scanner)``: ``n`` CSF-like spins (T1 4 s, T2 2 s) in a 20 cm slice
    under the library's GRE (32 × 32, 15°, a 2 ms sinc on its 1 us raster per TR, RF
    spoiling): where float32 stepping of shaped pulses is hardest (slow relaxation, 32
    pulses of 2 000 raster steps)."""
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=32, flip_angle_deg=15, slice_thickness=5e-3)
    rng = np.random.default_rng(seed)
    twin = mt.Twin(position=np.c_[rng.uniform(-0.08, 0.08, (n, 2)), np.zeros(n)], pd=np.ones(n),
                   t1=np.full(n, 4.0), t2=np.full(n, 2.0))
    return twin, seq, scanner
