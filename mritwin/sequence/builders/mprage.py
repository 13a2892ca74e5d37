"""MPRAGE: 3D magnetization-prepared rapid gradient echo."""

from __future__ import annotations

import math

import numpy as np

from ..scanner import Scanner
from ..sequence import Sequence
from ..timing import require_minimum
from . import _common as C
from .gre import geometry

__all__ = ["mprage"]


@C.traceable(*C.FLIPS)
def mprage(
    *,
    scanner: Scanner,
    fov,
    matrix,
    ti: float,
    tr: float | None = None,
    te: float | None = None,
    echo_spacing: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    orientation: str = "sagittal",
    bandwidth_per_pixel: float = 240.0,
    rf_duration: float = 100e-6,
    inversion_duration: float = 1e-3,
    rf_spoiling: bool = True,
    n_dummy: int = 1,
    partial_fourier: float = 1.0,
) -> Sequence:
    """3D MPRAGE: non-selective inversion, TI, a spoiled-GRE train over the partitions.

    One inversion ("shot") per phase-encode line ``ky``; after each inversion (hard
    180°, ``use="inversion"``) and a spoiler, the partitions ``kz`` are acquired in
    linear order by non-selective hard-pulse excitations ``echo_spacing`` apart (RF
    spoiled). TI is measured from the inversion centre to the excitation of the centre
    partition (kz = 0): `mritwin.sequence.timing.inversion_times` with
    ``at="kspace_centre"``. TR is the time between inversions.

    Args:
        scanner: the system.
        fov: [m] (read, phase, partition) or one number. matrix: (nx, ny, nz) or one integer.
        ti: inversion time [s] to the centre partition.
        tr: time between inversions [s] (None: minimum).
        te: echo time [s] of each GRE (None: minimum).
        echo_spacing: time between the train's excitations [s] (None: minimum).
        flip_angle / flip_angle_deg: readout flip angle (typically 8–10°).
        orientation: ``"sagittal"`` (default), ``"axial"`` or ``"coronal"``.
        bandwidth_per_pixel: [Hz]. rf_duration, inversion_duration: hard pulses [s].
        n_dummy: dummy shots (inversion + train without ADC) to reach the steady state.
        partial_fourier: fraction of ky lines (0.5–1).

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.mprage(scanner=mt.Scanner(), fov=(0.2, 0.2, 0.16), matrix=(16, 16, 8),
        ...                       ti=0.9, tr=2.3, flip_angle_deg=9)
        >>> round(seq.duration, 6)
        39.1
    """
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg)
    fov, matrix = geometry(fov, matrix, 3, None)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx, ny, nz = matrix
    lines = C.partial_lines(ny, partial_fourier)
    ky = (lines - ny // 2) / fov[1]
    kz = (np.arange(nz) - nz // 2) / fov[2]
    exc = C.HardPulse(alpha, sc, duration=rf_duration)
    inv = C.HardPulse(math.pi, sc, duration=inversion_duration, use="inversion", what="inversion pulse")
    ro = C.Readout(sc, fov=fov[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    amax = max(abs(ro.pre_area), float(np.abs(ky).max()), float(np.abs(kz).max()))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))
    pdur = C.ceil_to(2 * rise + flat, sc.block_raster)

    def lobe(ch, area):
        return C.trap(ch, area * a2g, rise, flat, rise)

    read_spoil = ro.post_area + 2.0 * nx / fov[0]
    smax = max(abs(read_spoil), float(np.abs(ky).max()), float(np.abs(kz).max()) + 4.0 / fov[2] * nz)
    srise, sflat = C.shortest_trap_timing(smax, sc)
    s2g = 1.0 / (sc.gamma_bar * (srise + sflat))
    sdur = C.ceil_to(2 * srise + sflat, sc.block_raster)

    def slobe(ch, area):
        return C.trap(ch, area * s2g, srise, sflat, srise)

    te_min = exc.tail + pdur + ro.t_centre
    te_v = require_minimum("te", te, te_min, what=f"this MPRAGE readout ({nx} samples)", raster=sc.block_raster)
    fill_te = C.round_to(te_v - te_min, sc.block_raster)
    te_v = te_min + fill_te
    esp_min = exc.block_duration + pdur + fill_te + ro_dur + sdur
    esp = require_minimum("echo_spacing", echo_spacing, esp_min, what=f"TE {te_v * 1e3:.3f} ms",
                          raster=sc.block_raster)
    fill_esp = C.round_to(esp - esp_min, sc.block_raster)
    esp = esp_min + fill_esp
    inv_spoil = C.area_trap(sl, 8.0 * nz / fov[2], sc)
    inv_spoil_dur = C.ceil_to(inv_spoil.duration, sc.block_raster)
    ic = nz // 2
    ti_min = inv.tail + inv_spoil_dur + ic * esp + exc.centre
    ti_v = require_minimum("ti", ti, ti_min, what=f"{ic} excitations before the centre partition at echo "
                                                  f"spacing {esp * 1e3:.3f} ms", raster=sc.block_raster)
    fill_ti = C.round_to(ti_v - ti_min, sc.block_raster)
    ti_v = ti_min + fill_ti
    tr_min = inv.block_duration + inv_spoil_dur + fill_ti + nz * esp
    tr_v = require_minimum("tr", tr, tr_min, what=f"TI {ti_v * 1e3:.1f} ms and {nz} partitions",
                           raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr
    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")
    blocks: list = []
    counter = 0
    shots = [None] * int(n_dummy) + list(range(lines.size))
    for i in shots:
        acquire = i is not None
        kyv = ky[i] if acquire else 0.0
        blocks.append(inv.block())
        blocks.append(C.make_block(sc, grads=[inv_spoil], duration=inv_spoil_dur))
        blocks.extend(C.delay_blocks(fill_ti, sc))
        for p in range(nz):
            phase = C.spoil_phase(counter) if rf_spoiling else 0.0
            counter += 1
            blocks.append(exc.block(0.0, phase))
            blocks.append(C.make_block(sc, grads=[lobe(rd, ro.pre_area), lobe(ph, kyv), lobe(sl, kz[p])],
                                       duration=pdur))
            blocks.extend(C.delay_blocks(fill_te, sc))
            blocks.append(C.make_block(sc, grads=[ro.grad()], adc=ro.adc(phase) if acquire else None,
                                       labels=C.labels_set(LIN=lines[i], PAR=p) if acquire else (),
                                       duration=ro_dur))
            blocks.append(C.make_block(sc, grads=[slobe(rd, read_spoil), slobe(ph, -kyv),
                                                  slobe(sl, -kz[p] + 4.0 / fov[2] * nz)], duration=sdur))
            blocks.extend(C.delay_blocks(fill_esp, sc))
        blocks.extend(C.delay_blocks(fill_tr, sc))
    return C.finish(blocks, sc, "mprage", fov, matrix, TE=te_v, TR=tr_v, TI=ti_v, EchoSpacing=esp,
                    FlipAngle=alpha, ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, Orientation=orientation,
                    PartialFourier=float(partial_fourier))
