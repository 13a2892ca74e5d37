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


from mritwin.benchmarking import cartesian_gre, fft_recon, grid_twin  # noqa: E402,F401
