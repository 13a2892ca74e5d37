"""Non-Cartesian spoiled GRE: golden-angle radial and Archimedean spiral."""

from __future__ import annotations

import math

import numpy as np

from ..events import ADC, ArbGrad
from ..scanner import Scanner
from ..sequence import Sequence
from ..timing import require_minimum
from . import _common as C
from .gre import geometry

__all__ = ["radial", "spiral", "spiral_waveform"]


@C.traceable(*C.FLIPS)
def radial(
    *,
    scanner: Scanner,
    fov: float,
    matrix: int,
    n_spokes: int,
    te: float | None = None,
    tr: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    slice_thickness: float,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 400.0,
    rf_duration: float = 2e-3,
    time_bw_product: float = 4.0,
    golden_angle: bool = True,
    rf_spoiling: bool = True,
    n_dummy: int = 0,
) -> Sequence:
    """2D radial spoiled GRE: full spokes through the k-space centre.

    Spoke ``n`` is at angle ``n · 111.246°`` (golden angle for full spokes, Winkelmann
    2007) or ``n π / n_spokes`` (``golden_angle=False``); ``matrix`` samples per spoke
    with Δk = 1/FOV, sample ``matrix/2`` at k = 0. Label ``LIN`` = spoke index.

    Args:
        fov: [m] (in-plane, isotropic). matrix: samples per spoke (image matrix).
        n_spokes: number of spokes.
        te, tr: [s] (None: minimum). Other arguments as in `gre`.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.radial(scanner=mt.Scanner(), fov=0.2, matrix=32, n_spokes=21,
        ...                       flip_angle_deg=10, slice_thickness=5e-3)
        >>> seq.n_adc_events
        21
    """
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg)
    fov_t, mat = geometry(fov, matrix, 2, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    if int(n_spokes) != n_spokes or n_spokes < 1:
        raise ValueError(f"n_spokes must be a positive integer, got {n_spokes}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx = mat[0]
    exc = C.SlicePulse(alpha, sc, thickness=slice_thickness, duration=rf_duration, tbw=time_bw_product, ch=sl)
    ro = C.Readout(sc, fov=fov_t[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    amax = max(abs(ro.pre_area), abs(exc.reph_area))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))
    pdur = C.ceil_to(2 * rise + flat, sc.block_raster)
    read_spoil = ro.post_area + 2.0 * nx / fov_t[0]
    slice_spoil = 4.0 / slice_thickness
    srise, sflat = C.shortest_trap_timing(max(abs(read_spoil), slice_spoil), sc)
    s2g = 1.0 / (sc.gamma_bar * (srise + sflat))
    sdur = C.ceil_to(2 * srise + sflat, sc.block_raster)
    te_min = exc.tail + pdur + ro.t_centre
    te_v = require_minimum("te", te, te_min, what=f"this radial GRE ({nx} samples)", raster=sc.block_raster)
    fill_te = C.round_to(te_v - te_min, sc.block_raster)
    te_v = te_min + fill_te
    tr_min = exc.block_duration + pdur + fill_te + ro_dur + sdur
    tr_v = require_minimum("tr", tr, tr_min, what=f"TE {te_v * 1e3:.3f} ms", raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr
    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")
    blocks: list = []
    angles = []
    for n in range(int(n_dummy) + int(n_spokes)):
        i = n - int(n_dummy)
        acquire = i >= 0
        phi = (i * C.GOLDEN_ANGLE if golden_angle else i * math.pi / n_spokes) if acquire else 0.0
        if acquire:
            angles.append(phi % (2 * math.pi))
        c, s = math.cos(phi), math.sin(phi)
        phase = C.spoil_phase(n) if rf_spoiling else 0.0
        blocks.append(exc.block(0.0, phase))
        blocks.append(C.make_block(sc, grads=[C.trap(rd, c * ro.pre_area * a2g, rise, flat, rise),
                                              C.trap(ph, s * ro.pre_area * a2g, rise, flat, rise),
                                              C.trap(sl, exc.reph_area * a2g, rise, flat, rise)], duration=pdur))
        blocks.extend(C.delay_blocks(fill_te, sc))
        blocks.append(C.make_block(sc, grads=[ro.grad(scale=c), ro.grad(scale=s, ch=ph)],
                                   adc=ro.adc(phase) if acquire else None,
                                   labels=C.labels_set(LIN=i) if acquire else (), duration=ro_dur))
        blocks.append(C.make_block(sc, grads=[C.trap(rd, c * read_spoil * s2g, srise, sflat, srise),
                                              C.trap(ph, s * read_spoil * s2g, srise, sflat, srise),
                                              C.trap(sl, slice_spoil * s2g, srise, sflat, srise)], duration=sdur))
        blocks.extend(C.delay_blocks(fill_tr, sc))
    return C.finish(blocks, sc, "radial", (*fov_t, slice_thickness), (*mat, 1), TE=te_v, TR=tr_v,
                    FlipAngle=alpha, ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, Trajectory="radial",
                    NumberOfSpokes=float(n_spokes), SpokeAngles=angles, Orientation=orientation)


def spiral_waveform(fov: float, matrix: int, n_interleaves: int, sc: Scanner, *, margin: float = 0.9):
    """Archimedean spiral-out gradient waveform within the scanner limits.

    ``k(θ) = λ θ e^{iθ}`` with ``λ = n_interleaves / (2π FOV)`` up to
    ``k_max = matrix / (2 FOV)``; θ(t) is integrated with the slew limit
    ``|k''| θ'² + |k'| θ'' ≤ γ̄ S`` and the amplitude limit ``|k'| θ' ≤ γ̄ G`` (both at
    ``margin`` of the scanner's), then a linear ramp to zero.

    Returns:
        ``(g, n_spiral)``: (n,) complex gradient samples [T/m] (x + i y) at
        ``(j + 1/2) · grad_raster`` and the number of samples before the ramp-down.
    """
    lam = n_interleaves / (2 * math.pi * fov)
    kmax = matrix / (2 * fov)
    theta_max = kmax / lam
    gb = sc.gamma_bar
    gmax, smax = margin * sc.max_grad, margin * sc.max_slew
    gr = sc.grad_raster
    sub = 20
    dt = gr / sub
    th, w = 0.0, 0.0
    ths = [0.0]
    while th < theta_max:
        for _ in range(sub):
            k1 = lam * math.sqrt(1 + th * th)
            k2 = lam * math.sqrt(4 + th * th)
            acc = (gb * smax - k2 * w * w) / k1
            w = min(max(w + acc * dt, 0.0), gb * gmax / k1)
            th += w * dt
        ths.append(th)
        if len(ths) > 10 ** 6:  # pragma: no cover
            raise ValueError("spiral design did not converge")
    ths = np.asarray(ths)  # the last step may overshoot k_max by less than one raster step
    k = lam * ths * np.exp(1j * ths)
    g = np.diff(k) / (gb * gr)
    n_sp = g.size
    last = g[-1]
    n_down = max(1, int(math.ceil(abs(last) / (smax * gr))))
    ramp = last * (1 - (np.arange(n_down) + 1) / n_down)
    return np.concatenate([g, ramp]), n_sp


@C.traceable(*C.FLIPS)
def spiral(
    *,
    scanner: Scanner,
    fov: float,
    matrix: int,
    n_interleaves: int = 1,
    te: float | None = None,
    tr: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    slice_thickness: float,
    orientation: str = "axial",
    dwell: float = 2e-6,
    rf_duration: float = 2e-3,
    time_bw_product: float = 4.0,
    rf_spoiling: bool = True,
    n_dummy: int = 0,
) -> Sequence:
    """2D spiral-out spoiled GRE with ``n_interleaves`` interleaves rotated by 2π/n.

    The ADC samples the spiral part (not the ramp-down) with ``dwell``; the first
    sample is at k ≈ 0, so TE is the time from the excitation centre to the start of
    the spiral. After the readout the in-plane moment is rewound and the slice axis
    spoiled (4 cycles/slice). Label ``LIN`` = interleave.

    Args:
        fov: [m]; matrix: image matrix (k_max = matrix / (2 FOV)).
        n_interleaves: interleaves (each covers the full k-space radius).
        dwell: ADC dwell [s] (must keep the sample spacing along the trajectory below 1/FOV).
        te, tr: [s] (None: minimum). Other arguments as in `gre`.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.spiral(scanner=mt.Scanner(), fov=0.2, matrix=32, n_interleaves=4,
        ...                       flip_angle_deg=20, slice_thickness=5e-3)
        >>> seq.n_adc_events
        4
    """
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg)
    fov_t, mat = geometry(fov, matrix, 2, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    if int(n_interleaves) != n_interleaves or n_interleaves < 1:
        raise ValueError(f"n_interleaves must be a positive integer, got {n_interleaves}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx = mat[0]
    dwell = C.positive(dwell, "dwell")
    if abs(dwell / sc.adc_raster - round(dwell / sc.adc_raster)) > 1e-6:
        raise ValueError(f"dwell must be a multiple of the ADC raster {sc.adc_raster * 1e9:.0f} ns, got {dwell}")
    step_max = sc.gamma_bar * sc.max_grad * dwell
    if step_max > 1.0 / fov_t[0]:
        raise ValueError(
            f"dwell {dwell * 1e6:.2f} us is too long: at max_grad the samples would be {step_max:.3g} 1/m apart "
            f"> 1/FOV = {1 / fov_t[0]:.3g} 1/m; use dwell <= {1 / (fov_t[0] * sc.gamma_bar * sc.max_grad) * 1e6:.2f} us"
        )
    exc = C.SlicePulse(alpha, sc, thickness=slice_thickness, duration=rf_duration, tbw=time_bw_product, ch=sl)
    g, n_sp = spiral_waveform(fov_t[0], nx, int(n_interleaves), sc)
    gr = sc.grad_raster
    g_delay = C.ceil_to(sc.adc_dead_time, gr)
    n_adc = int(math.floor(n_sp * gr / dwell))
    reph = C.area_trap(sl, exc.reph_area, sc)
    reph_dur = C.ceil_to(reph.duration, sc.block_raster)
    ro_dur = C.ceil_to(g_delay + g.size * gr + sc.adc_dead_time, sc.block_raster)
    te_min = exc.tail + reph_dur + g_delay + 0.5 * dwell
    te_v = require_minimum("te", te, te_min, what="this spiral", raster=sc.block_raster)
    fill_te = C.round_to(te_v - te_min, sc.block_raster)
    te_v = te_min + fill_te
    # k at the end of the waveform (for the rewinder), trapezoidal rule on the samples
    t = np.concatenate([[0.0], (np.arange(g.size) + 0.5) * gr, [g.size * gr]])
    w = np.concatenate([[0.0], g, [0.0]])
    k_end = sc.gamma_bar * np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(t))
    smax_area = max(abs(k_end.real), abs(k_end.imag), 4.0 / slice_thickness) * 1.5
    srise, sflat = C.shortest_trap_timing(smax_area, sc)
    s2g = 1.0 / (sc.gamma_bar * (srise + sflat))
    sdur = C.ceil_to(2 * srise + sflat, sc.block_raster)
    tr_min = exc.block_duration + reph_dur + fill_te + ro_dur + sdur
    tr_v = require_minimum("tr", tr, tr_min, what=f"TE {te_v * 1e3:.3f} ms and a spiral of "
                                                  f"{g.size * gr * 1e3:.2f} ms", raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr
    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")
    blocks: list = []
    for n in range(int(n_dummy) + int(n_interleaves)):
        i = n - int(n_dummy)
        acquire = i >= 0
        rot = np.exp(2j * math.pi * max(i, 0) / n_interleaves)
        gi = g * rot
        ke = k_end * rot
        phase = C.spoil_phase(n) if rf_spoiling else 0.0
        blocks.append(exc.block(0.0, phase))
        blocks.append(C.make_block(sc, grads=[reph], duration=reph_dur))
        blocks.extend(C.delay_blocks(fill_te, sc))
        gx = ArbGrad(rd, 1.0, gi.real, raster=gr, delay=g_delay, first=0.0, last=0.0)
        gy = ArbGrad(ph, 1.0, gi.imag, raster=gr, delay=g_delay, first=0.0, last=0.0)
        adc = ADC(n_adc, dwell, delay=g_delay, phase_offset=phase, dead_time=sc.adc_dead_time) if acquire else None
        blocks.append(C.make_block(sc, grads=[gx, gy], adc=adc, labels=C.labels_set(LIN=i) if acquire else (),
                                   duration=ro_dur))
        blocks.append(C.make_block(sc, grads=[C.trap(rd, -ke.real * s2g, srise, sflat, srise),
                                              C.trap(ph, -ke.imag * s2g, srise, sflat, srise),
                                              C.trap(sl, 4.0 / slice_thickness * s2g, srise, sflat, srise)],
                                   duration=sdur))
        blocks.extend(C.delay_blocks(fill_tr, sc))
    return C.finish(blocks, sc, "spiral", (*fov_t, slice_thickness), (*mat, 1), TE=te_v, TR=tr_v,
                    FlipAngle=alpha, Trajectory="spiral", NumberOfInterleaves=float(n_interleaves),
                    Orientation=orientation)
