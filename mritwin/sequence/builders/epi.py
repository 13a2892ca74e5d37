"""Single-shot echo-planar imaging (GRE- and SE-EPI) and PGSE diffusion-weighted SE-EPI."""

from __future__ import annotations

import math

import numpy as np

from ...constants import GAMMA_BAR
from ..scanner import Scanner
from ..sequence import Sequence
from ..timeline import gradient_moments, gradient_table
from ..timing import excitation_centres, kspace_centre_samples, require_minimum, rf_centres
from . import _common as C
from .gre import geometry

__all__ = ["epi", "dwi", "b_values", "stejskal_tanner_b"]


@C.traceable(*C.FLIPS)
def epi(
    *,
    scanner: Scanner,
    fov,
    matrix,
    te: float | None = None,
    tr: float | None = None,
    spin_echo: bool = False,
    slice_thickness: float,
    flip_angle=None,
    flip_angle_deg=None,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 1500.0,
    rf_duration: float = 2e-3,
    refocusing_duration: float = 3e-3,
    time_bw_product: float = 4.0,
    partial_fourier: float = 1.0,
    n_repetitions: int = 1,
) -> Sequence:
    """Single-shot blipped EPI, gradient echo or spin echo (``spin_echo=True``).

    Lines alternate in readout polarity (the ADC only on the flat tops; label ``REV``
    set on reversed lines, whose samples run from +k to -k); phase blips of Δk = 1/FOV
    between lines. TE is measured to the k-space centre sample of the ky = 0 line.
    Slices interleaved within TR; ``n_repetitions`` volumes (label REP).

    Args:
        scanner: the system.
        fov: [m]; matrix: (nx, ny) or one integer.
        te: [s] (None: minimum). tr: [s] between excitations of one slice (None: minimum).
        spin_echo: add a 180° refocusing pulse with crushers (SE-EPI).
        slice_thickness: [m]. flip_angle / flip_angle_deg: default 90°.
        bandwidth_per_pixel: readout bandwidth [Hz/pixel].
        partial_fourier: fraction of lines (0.5–1; the first lines are skipped).
        n_repetitions: volumes.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.epi(scanner=mt.Scanner(), fov=0.2, matrix=32, slice_thickness=5e-3)
        >>> seq.n_adc_events
        32
    """
    return _epi(scanner=scanner, fov=fov, matrix=matrix, te=te, tr=tr, spin_echo=spin_echo,
                slice_thickness=slice_thickness, flip_angle=flip_angle, flip_angle_deg=flip_angle_deg,
                n_slices=n_slices, slice_gap=slice_gap, orientation=orientation,
                bandwidth_per_pixel=bandwidth_per_pixel, rf_duration=rf_duration,
                refocusing_duration=refocusing_duration, tbw=time_bw_product, partial_fourier=partial_fourier,
                n_repetitions=n_repetitions, diffusion=None, name="epi" if not spin_echo else "se_epi")


def stejskal_tanner_b(amplitude: float, delta: float, big_delta: float, ramp: float = 0.0,
                      gamma_bar: float = 42.577478518e6) -> float:
    """b-value [s/m²] of a pair of trapezoidal diffusion lobes (PHYSICS.md item 10).

    ``b = (2π γ̄)² G² [δ² (Δ − δ/3) + ε³/30 − δ ε²/6]``.

    Args:
        amplitude: lobe amplitude G [T/m].
        delta: δ, lobe duration from the start of the ramp-up to the start of the ramp-down [s].
        big_delta: Δ, time between the starts of the two lobes [s].
        ramp: ε, ramp time [s].
    """
    g = 2 * math.pi * gamma_bar * amplitude
    return g * g * (delta ** 2 * (big_delta - delta / 3) + ramp ** 3 / 30 - delta * ramp ** 2 / 6)


@C.traceable()
def dwi(
    *,
    scanner: Scanner,
    fov,
    matrix,
    b_values=(0.0, 1e9),
    directions=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    te: float | None = None,
    tr: float | None = None,
    slice_thickness: float,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 1500.0,
    rf_duration: float = 2e-3,
    refocusing_duration: float = 3e-3,
    time_bw_product: float = 4.0,
    partial_fourier: float = 1.0,
) -> Sequence:
    """Pulsed-gradient spin-echo (Stejskal–Tanner) diffusion-weighted single-shot SE-EPI.

    Two identical trapezoidal lobes along each (physical-frame) ``direction`` sit right
    before and right after the refocusing pulse (Δ is as short as the pulse allows);
    their timing is set for the largest b-value at the full ``max_grad`` on one axis and
    the amplitude is scaled for each volume so that the Stejskal–Tanner b of the lobes
    equals the requested b. One volume per b = 0 and per (b > 0, direction); label REP
    counts volumes, SET the direction. ``definitions`` hold the lobe parameters
    (``DiffusionDelta``, ``DiffusionBigDelta``, ``DiffusionRamp``) and the b-values.

    Args:
        b_values: b-values [s/m²] (1000 s/mm² = 1e9 s/m²).
        directions: unit vectors (x, y, z) of the diffusion gradients (normalised here).
        te: [s] (None: minimum for the largest b). tr: [s] (None: minimum).
        Other arguments as in `epi`.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.dwi(scanner=mt.Scanner(), fov=0.2, matrix=16, b_values=(0, 1e9),
        ...                    directions=[(0, 0, 1)], slice_thickness=5e-3)
        >>> seq.n_adc_events
        32
    """
    bv = np.atleast_1d(np.asarray(b_values, dtype=float))
    if bv.size == 0 or np.any(bv < 0) or not np.all(np.isfinite(bv)):
        raise ValueError(f"b_values must be finite and >= 0 [s/m^2], got {b_values}")
    if bv.max() > 0 and bv.max() < 1e6:
        raise ValueError(f"b_values are in s/m^2 (1000 s/mm^2 = 1e9 s/m^2), got {b_values}")
    dirs = np.asarray(directions, dtype=float).reshape(-1, 3)
    norms = np.linalg.norm(dirs, axis=1)
    if np.any(norms == 0):
        raise ValueError("diffusion directions must be non-zero vectors")
    dirs = dirs / norms[:, None]
    volumes = []
    for b in bv:
        if b == 0:
            volumes.append((0.0, np.zeros(3), -1))
        else:
            volumes.extend((float(b), d, j) for j, d in enumerate(dirs))
    return _epi(scanner=scanner, fov=fov, matrix=matrix, te=te, tr=tr, spin_echo=True,
                slice_thickness=slice_thickness, flip_angle=None, flip_angle_deg=None, n_slices=n_slices,
                slice_gap=slice_gap, orientation=orientation, bandwidth_per_pixel=bandwidth_per_pixel,
                rf_duration=rf_duration, refocusing_duration=refocusing_duration, tbw=time_bw_product,
                partial_fourier=partial_fourier, n_repetitions=1, diffusion=volumes, name="dwi")


def _diffusion_timing(b_max: float, gap: float, sc: Scanner):
    """(ramp, flat, b per (T/m)²) of the shortest lobes reaching ``b_max`` at max_grad."""
    g = sc.max_grad
    eps = max(sc.grad_raster, C.ceil_to(g / sc.max_slew, sc.grad_raster))
    gr = sc.grad_raster

    def b_of(flat, amp):
        delta = flat + eps
        dur = C.ceil_to(2 * eps + flat, sc.block_raster)
        return stejskal_tanner_b(amp, delta, dur + gap, eps, sc.gamma_bar)

    if b_max <= 0:
        return eps, 0.0, b_of(0.0, 1.0)
    lo, hi = 0, 1
    while b_of(hi * gr, g) < b_max:
        hi *= 2
        if hi > 10 ** 6:
            raise ValueError(f"b = {b_max:.4g} s/m^2 is out of reach of this scanner")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if b_of(mid * gr, g) >= b_max:
            hi = mid
        else:
            lo = mid
    flat = hi * gr
    return eps, flat, b_of(flat, 1.0)


def _epi(*, scanner, fov, matrix, te, tr, spin_echo, slice_thickness, flip_angle, flip_angle_deg, n_slices,
         slice_gap, orientation, bandwidth_per_pixel, rf_duration, refocusing_duration, tbw, partial_fourier,
         n_repetitions, diffusion, name) -> Sequence:
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg, default=math.pi / 2)
    fov, matrix = geometry(fov, matrix, 2, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx, ny = matrix
    if int(n_repetitions) != n_repetitions or n_repetitions < 1:
        raise ValueError(f"n_repetitions must be a positive integer, got {n_repetitions}")
    lines = C.partial_lines(ny, partial_fourier)
    exc = C.SlicePulse(alpha, sc, thickness=slice_thickness, duration=rf_duration, tbw=tbw, ch=sl)
    ro = C.Readout(sc, fov=fov[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    dky = 1.0 / fov[1]
    blip = C.area_trap(ph, dky, sc)
    blip_dur = C.ceil_to(blip.duration, sc.block_raster)
    ky0 = (lines[0] - ny // 2) * dky
    ic = int(np.nonzero(lines == ny // 2)[0][0])
    t_to_centre = ic * (ro_dur + blip_dur) + ro.t_centre - (ro.dwell if ic % 2 else 0.0)
    crush = 4.0 / slice_thickness
    what = f"this EPI ({lines.size} lines of {nx} samples at {ro.bandwidth_per_pixel:.0f} Hz/pixel)"
    if spin_echo:
        ref = C.SlicePulse(math.pi, sc, thickness=slice_thickness, duration=refocusing_duration, tbw=tbw, ch=sl,
                           use="refocusing", what="refocusing pulse")
        # timing fits both the rephaser + crusher and the rephaser alone (DWI volumes)
        b0_area = max(exc.reph_area + crush, exc.reph_area, key=abs)
        b0 = C.area_trap(sl, b0_area, sc)
        amax = max(crush, abs(ro.pre_area), abs(ky0))
    else:
        ref = None
        amax = max(abs(exc.reph_area), abs(ro.pre_area), abs(ky0))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))
    pdur = C.ceil_to(2 * rise + flat, sc.block_raster)

    def lobe(ch, area):
        return C.trap(ch, area * a2g, rise, flat, rise)

    # diffusion lobes
    d_dur = 0.0
    if diffusion is not None:
        b_max = max(v[0] for v in diffusion)
        eps, dflat, b_unit = _diffusion_timing(b_max, ref.block_duration, sc)
        d_dur = C.ceil_to(2 * eps + dflat, sc.block_raster) if b_max > 0 else 0.0
    if spin_echo:
        b0_dur = C.ceil_to(b0.duration, sc.block_raster)
        h0 = exc.tail + b0_dur + d_dur + ref.centre
        ha = ref.tail + d_dur + pdur + t_to_centre
        te_min = 2 * C.ceil_to(max(h0, ha), sc.block_raster)
        te_v = require_minimum("te", te, te_min, what=what + (" with diffusion lobes" if d_dur else ""),
                               raster=sc.block_raster)
        half = C.round_to(te_v / 2, sc.block_raster)
        fill0 = C.round_to(half - h0, sc.block_raster)
        filla = C.round_to(half - ha, sc.block_raster)
        te_v = 2 * half
        pre_part = exc.block_duration + b0_dur + fill0 + 2 * d_dur + ref.block_duration + pdur + filla
    else:
        te_min = exc.tail + pdur + t_to_centre
        te_v = require_minimum("te", te, te_min, what=what, raster=sc.block_raster)
        filla = C.round_to(te_v - te_min, sc.block_raster)
        te_v = te_min + filla
        pre_part = exc.block_duration + pdur + filla
    train = lines.size * ro_dur + (lines.size - 1) * blip_dur
    spoil = C.area_trap(sl, crush, sc)
    read_end = ro.post_area if lines.size % 2 == 1 else -ro.post_area
    rspoil = C.area_trap(rd, read_end + (2 * nx / fov[0]) * np.sign(read_end or 1.0), sc)
    spoil_dur = C.ceil_to(max(spoil.duration, rspoil.duration), sc.block_raster)
    slice_dur = pre_part + train + spoil_dur
    positions = C.slice_positions(n_slices, slice_thickness, slice_gap)
    tr_min = len(positions) * slice_dur
    tr_v = require_minimum("tr", tr, tr_min, what=f"{len(positions)} slice(s) at TE {te_v * 1e3:.2f} ms",
                           raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr

    vols = diffusion if diffusion is not None else [None] * int(n_repetitions)
    blocks: list = []
    for r, vol in enumerate(vols):
        for s, pos in enumerate(positions):
            blocks.append(exc.block(pos, 0.0 if not spin_echo else math.pi / 2))
            if spin_echo:
                # diffusion-weighted volumes: the diffusion lobes crush; no extra crushers
                # (their cross terms with the lobes would change b)
                cr = 0.0 if (vol is not None and vol[0] > 0) else crush
                b0v = C.trap(sl, (exc.reph_area + cr) / (sc.gamma_bar * (b0.rise_time + b0.flat_time)),
                             b0.rise_time, b0.flat_time, b0.fall_time)
                blocks.append(C.make_block(sc, grads=[b0v], duration=b0_dur))
                blocks.extend(C.delay_blocks(fill0, sc))
                dgr = []
                if d_dur:
                    b, d, _ = vol
                    amp = math.sqrt(b / b_unit) if b > 0 else 0.0
                    dgr = [C.trap(ch, amp * d[i], eps, dflat, eps) for i, ch in enumerate("xyz")
                           if amp * d[i] != 0.0]
                    blocks.append(C.make_block(sc, grads=dgr, duration=d_dur))
                blocks.append(ref.block(pos, 0.0))
                if d_dur:
                    blocks.append(C.make_block(sc, grads=dgr, duration=d_dur))
                blocks.append(C.make_block(sc, grads=[lobe(sl, cr), lobe(rd, ro.pre_area), lobe(ph, ky0)],
                                           duration=pdur))
            else:
                blocks.append(C.make_block(sc, grads=[lobe(sl, exc.reph_area), lobe(rd, ro.pre_area),
                                                      lobe(ph, ky0)], duration=pdur))
            blocks.extend(C.delay_blocks(filla, sc))
            for i, m in enumerate(lines):
                sign = 1.0 if i % 2 == 0 else -1.0
                lab = C.labels_set(LIN=m, SLC=s, REP=r, REV=int(sign < 0))
                if vol is not None:
                    lab = lab + C.labels_set(SET=max(vol[2], 0))
                blocks.append(C.make_block(sc, grads=[ro.grad(sign)], adc=ro.adc(0.0), labels=lab,
                                           duration=ro_dur))
                if i < lines.size - 1:
                    blocks.append(C.make_block(sc, grads=[blip], duration=blip_dur))
            blocks.append(C.make_block(sc, grads=[spoil, rspoil], duration=spoil_dur))
        blocks.extend(C.delay_blocks(fill_tr, sc))
    extra = {}
    if diffusion is not None:
        extra = dict(BValues=[v[0] for v in diffusion], DiffusionDirections=[x for v in diffusion for x in v[1]],
                     DiffusionDelta=(dflat + eps) if d_dur else 0.0,
                     DiffusionBigDelta=(d_dur + ref.block_duration) if d_dur else 0.0,
                     DiffusionRamp=eps if d_dur else 0.0)
    return C.finish(blocks, sc, name, (*fov, slice_thickness), (*matrix, 1), TE=te_v, TR=tr_v, FlipAngle=alpha,
                    ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, EchoSpacing=ro_dur + blip_dur,
                    Orientation=orientation, NumberOfSlices=float(len(positions)),
                    PartialFourier=float(partial_fourier), **extra)


def b_values(seq: Sequence, *, dt: float = 2e-6, tol: float = 0.5) -> np.ndarray:
    """b-value [s/m²] of every echo, computed from the gradient waveform.

    For each ADC event that samples the k-space centre, ``b = (2π)² ∫ |k(t)|² dt`` from
    the centre of the preceding excitation to that sample, with ``k = γ̄ ∫ G dt`` reset at
    the excitation and negated at the centre of each refocusing pulse. All gradients
    count (imaging and crusher gradients too), as they do for the spins.

    Args:
        seq: the sequence.
        dt: integration step [s] (the integrand is piecewise smooth; 2 µs is ample).
        tol: |k| tolerance [1/m] for the k-space centre sample.

    Returns:
        (n_echoes,) b-values [s/m²].
    """
    exc = excitation_centres(seq)
    refs = rf_centres(seq, "refocusing")
    _, tc = kspace_centre_samples(seq, tol=tol)
    table = gradient_table(seq)
    out = []
    for t_echo in tc:
        j = np.searchsorted(exc, t_echo, side="right") - 1
        if j < 0:
            continue
        t0 = exc[j]
        n = max(1, int(math.ceil((t_echo - t0) / dt)))
        edges = np.linspace(t0, t_echo, n + 1)
        # add refocusing centres as edges so the sign flip happens exactly there
        r_in = refs[(refs > t0) & (refs < t_echo)]
        edges = np.unique(np.concatenate([edges, r_in]))
        m = np.asarray(gradient_moments(table, edges[:-1], edges[1:])) * GAMMA_BAR
        # k at the start of each interval, with sign flips at refocusing centres
        flip_at = np.searchsorted(edges, r_in)  # interval index where each flip happens
        k = np.zeros(3)
        b = 0.0
        bounds = [0, *flip_at.tolist(), edges.size - 1]
        for seg in range(len(bounds) - 1):
            if seg:
                k = -k
            lo, hi = bounds[seg], bounds[seg + 1]
            if hi <= lo:
                continue
            kk = k + np.concatenate([np.zeros((1, 3)), np.cumsum(m[lo:hi], axis=0)])
            w = np.diff(edges[lo:hi + 1])
            ka, kb = kk[:-1], kk[1:]
            # ∫ |k|² dt with k linear over each interval
            b += float(np.sum(w * np.sum(ka * ka + ka * kb + kb * kb, axis=1)) / 3.0)
            k = kk[-1]
        out.append((2 * math.pi) ** 2 * b)
    return np.asarray(out)
