"""Balanced steady-state free precession (bSSFP / TrueFISP) with an α/2 preparation."""

from __future__ import annotations

import math

import numpy as np

from ..scanner import Scanner
from ..sequence import Sequence
from ..timing import require_minimum
from . import _common as C
from .gre import geometry

__all__ = ["bssfp"]


@C.traceable(*C.FLIPS)
def bssfp(
    *,
    scanner: Scanner,
    fov,
    matrix,
    tr: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    slice_thickness: float,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 800.0,
    rf_duration: float = 1e-3,
    time_bw_product: float = 2.0,
    alpha_half_prep: bool = True,
    n_dummy: int = 0,
    partial_fourier: float = 1.0,
) -> Sequence:
    """2D bSSFP: fully balanced gradients per TR, RF phase alternating 0, π, TE = TR/2.

    Each slice starts with an α/2 pulse (phase π, ``use="preparation"``) TR/2 before the
    first α (phase 0), which takes the magnetization smoothly to the steady state
    (PHYSICS.md item 6). The ADC phase follows the RF phase. Slices are acquired one
    after another (``n_dummy`` dummy TRs before each).

    Args:
        scanner: the system.
        fov: [m]; matrix: (nx, ny) or one integer.
        tr: repetition time [s] (None: minimum); TE is TR/2 by construction.
        flip_angle / flip_angle_deg: α [rad] / [deg] (may be traced).
        slice_thickness: [m]. n_slices, slice_gap [m], orientation.
        bandwidth_per_pixel: [Hz]. rf_duration: [s]. time_bw_product: of the sinc.
        alpha_half_prep: play the α/2 preparation.
        n_dummy: dummy TRs (no ADC) after the preparation.
        partial_fourier: fraction of lines (0.5–1).

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.bssfp(scanner=mt.Scanner(), fov=0.2, matrix=16, flip_angle_deg=40,
        ...                      slice_thickness=5e-3)
        >>> abs(seq.definitions["TE"] - seq.definitions["TR"] / 2) < 1e-9
        True
    """
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg)
    fov, matrix = geometry(fov, matrix, 2, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx, ny = matrix
    lines = C.partial_lines(ny, partial_fourier)
    ky = (lines - ny // 2) / fov[1]
    exc = C.SlicePulse(alpha, sc, thickness=slice_thickness, duration=rf_duration, tbw=time_bw_product, ch=sl)
    prep = C.SlicePulse(alpha / 2, sc, thickness=slice_thickness, duration=rf_duration, tbw=time_bw_product,
                        ch=sl, use="preparation", what="alpha/2 preparation pulse")
    ro = C.Readout(sc, fov=fov[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    g = exc.gz
    ss_total = float(g.amplitude) * (g.flat_time + 0.5 * (g.rise_time + g.fall_time)) * sc.gamma_bar
    pre_slice = exc.reph_area
    post_slice = -ss_total - exc.reph_area
    amax = max(abs(pre_slice), abs(post_slice), abs(ro.pre_area), abs(ro.post_area), float(np.abs(ky).max()))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))
    pdur = C.ceil_to(2 * rise + flat, sc.block_raster)

    def lobe(ch, area):
        return C.trap(ch, area * a2g, rise, flat, rise)

    # α/2 preparation: prep centre to first α centre = TR/2, gradient moment -ss_total between
    lrise, lflat = C.shortest_trap_timing(abs(ss_total), sc)
    prep_lobe = C.trap(sl, -ss_total / (sc.gamma_bar * (lrise + lflat)), lrise, lflat, lrise)
    prep_lobe_dur = C.ceil_to(prep_lobe.duration, sc.block_raster)
    hp = prep.tail + prep_lobe_dur + exc.centre
    ha = exc.tail + pdur + ro.t_centre
    hb = ro_dur - ro.t_centre + pdur + exc.centre
    tr_min = 2 * C.ceil_to(max(ha, hb, hp if alpha_half_prep else 0.0), sc.block_raster)
    tr_v = require_minimum("tr", tr, tr_min, what=f"this bSSFP ({nx} samples at {ro.bandwidth_per_pixel:.0f} "
                                                  "Hz/pixel)", raster=2 * sc.block_raster)
    half = C.round_to(tr_v / 2, sc.block_raster)
    tr_v = 2 * half
    filla = C.round_to(half - ha, sc.block_raster)
    fillb = C.round_to(half - hb, sc.block_raster)
    fillp = C.round_to(half - hp, sc.block_raster)
    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")
    positions = C.slice_positions(n_slices, slice_thickness, slice_gap)
    blocks: list = []
    for s, pos in enumerate(positions):
        if alpha_half_prep:
            blocks.append(prep.block(pos, math.pi))
            blocks.append(C.make_block(sc, grads=[prep_lobe], duration=prep_lobe_dur))
            blocks.extend(C.delay_blocks(fillp, sc))
        n = 0
        todo = [(None, None)] * int(n_dummy) + list(zip(range(lines.size), lines, strict=True))
        for i, m in todo:
            phase = math.pi * (n % 2)
            n += 1
            kyv = ky[i] if i is not None else 0.0
            blocks.append(exc.block(pos, phase))
            blocks.append(C.make_block(sc, grads=[lobe(sl, pre_slice), lobe(rd, ro.pre_area), lobe(ph, kyv)],
                                       duration=pdur))
            blocks.extend(C.delay_blocks(filla, sc))
            acquire = i is not None
            blocks.append(C.make_block(sc, grads=[ro.grad()], adc=ro.adc(phase) if acquire else None,
                                       labels=C.labels_set(LIN=m, SLC=s) if acquire else (), duration=ro_dur))
            blocks.extend(C.delay_blocks(fillb, sc))
            blocks.append(C.make_block(sc, grads=[lobe(sl, post_slice), lobe(rd, ro.post_area), lobe(ph, -kyv)],
                                       duration=pdur))
    return C.finish(blocks, sc, "bssfp", (*fov, slice_thickness), (*matrix, 1), TE=tr_v / 2, TR=tr_v,
                    FlipAngle=alpha, ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, Orientation=orientation,
                    NumberOfSlices=float(len(positions)), PartialFourier=float(partial_fourier))
