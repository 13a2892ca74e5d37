"""Spoiled gradient echo (FLASH), 2D multi-slice and 3D, single- and multi-echo."""

from __future__ import annotations

import numpy as np

from ..scanner import Scanner
from ..sequence import Sequence
from ..timing import require_minimum
from . import _common as C

__all__ = ["gre", "multi_echo_gre"]


@C.traceable(*C.FLIPS)
def gre(
    *,
    scanner: Scanner,
    fov,
    matrix,
    te: float | None = None,
    tr: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    dims: int = 2,
    slice_thickness: float | None = None,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 260.0,
    rf_duration: float = 2e-3,
    time_bw_product: float = 4.0,
    rf_spoiling: bool = True,
    n_dummy: int = 0,
    n_averages: int = 1,
    partial_fourier: float = 1.0,
) -> Sequence:
    """Spoiled gradient echo (FLASH): 2D multi-slice or 3D, RF and gradient spoiled.

    Each excitation: slice-selective sinc (2D) or slab-selective sinc (3D; non-selective
    hard pulse when ``slice_thickness=None`` in 3D) – prephasers – readout – spoilers
    (read: 2 cycles/pixel, slice: 4 cycles/slice, phase rewound). RF spoiling uses the
    quadratic phase ``117° n(n+1)/2`` on the pulse and the same phase on the ADC.
    Loop order: 2D ``average > slice > (dummies) line``; 3D ``average > (dummies) partition > line``.

    Args:
        scanner: the system (limits, rasters, dead times).
        fov: field of view [m]: one number or (read, phase[, partition]).
        matrix: matrix size: one integer or (nx, ny[, nz]).
        te: echo time [s]; None: the minimum.
        tr: repetition time [s] between excitations; None: the minimum.
        flip_angle: flip angle [rad] (may be a JAX tracer), or ``flip_angle_deg`` [deg].
        dims: 2 (multi-slice) or 3 (slab, phase encoding along the slice axis).
        slice_thickness: slice (2D) or slab (3D) thickness [m]; in 3D ``None`` gives a
            non-selective hard pulse of ``rf_duration``.
        n_slices, slice_gap: number of slices and the gap between them [m] (2D).
        orientation: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        bandwidth_per_pixel: receiver bandwidth per pixel [Hz] (dwell = 1/(bw nx)).
        rf_duration: excitation pulse duration [s]; time_bw_product: of the sinc.
        rf_spoiling: quadratic RF spoiling (else phase 0).
        n_dummy: dummy excitations (no ADC) before each slice (2D) or the volume (3D).
        n_averages: repetitions of the whole acquisition (label AVG).
        partial_fourier: fraction of phase-encode lines acquired (0.5 to 1).

    Returns:
        The `Sequence`, with labels LIN, SLC (2D) or PAR (3D), AVG and definitions
        ``Name``, ``FOV``, ``MatrixSize``, ``TE``, ``TR``, ``FlipAngle`` [rad].

    Raises:
        ValueError: impossible TE/TR (the message gives the minimum), flip angle outside
            (0, 180°], FOV/matrix/bandwidth/slice beyond the gradient or RF limits.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.gre(scanner=mt.Scanner(), fov=0.2, matrix=32, te=4e-3, tr=10e-3,
        ...                    flip_angle_deg=15, slice_thickness=5e-3)
        >>> seq.n_adc_samples
        1024
    """
    return _gre(scanner=scanner, fov=fov, matrix=matrix, tes=None if te is None else [te],
                delta_te=None, n_echoes=1, tr=tr, flip_angle=flip_angle, flip_angle_deg=flip_angle_deg,
                dims=dims, slice_thickness=slice_thickness, n_slices=n_slices, slice_gap=slice_gap,
                orientation=orientation, bandwidth_per_pixel=bandwidth_per_pixel, rf_duration=rf_duration,
                tbw=time_bw_product, rf_spoiling=rf_spoiling, n_dummy=n_dummy, n_averages=n_averages,
                partial_fourier=partial_fourier, name="gre")


@C.traceable(*C.FLIPS)
def multi_echo_gre(
    *,
    scanner: Scanner,
    fov,
    matrix,
    n_echoes: int,
    te: float | None = None,
    delta_te: float | None = None,
    tr: float | None = None,
    flip_angle=None,
    flip_angle_deg=None,
    dims: int = 2,
    slice_thickness: float | None = None,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 400.0,
    rf_duration: float = 2e-3,
    time_bw_product: float = 4.0,
    rf_spoiling: bool = True,
    n_dummy: int = 0,
    n_averages: int = 1,
    partial_fourier: float = 1.0,
) -> Sequence:
    """Multi-echo spoiled GRE with monopolar (fly-back) readouts, label ECO per echo.

    Echo ``e`` is at ``te + e * delta_te``. Other arguments as in `gre`.

    Args:
        n_echoes: number of echoes.
        te: first echo time [s] (None: minimum).
        delta_te: echo spacing [s] (None: minimum, readout plus fly-back).

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.multi_echo_gre(scanner=mt.Scanner(), fov=0.2, matrix=16, n_echoes=3,
        ...                               flip_angle_deg=20, slice_thickness=5e-3)
        >>> seq.n_adc_events
        48
    """
    if int(n_echoes) != n_echoes or n_echoes < 1:
        raise ValueError(f"n_echoes must be a positive integer, got {n_echoes}")
    return _gre(scanner=scanner, fov=fov, matrix=matrix, tes=None if te is None else [te],
                delta_te=delta_te, n_echoes=int(n_echoes), tr=tr, flip_angle=flip_angle,
                flip_angle_deg=flip_angle_deg, dims=dims, slice_thickness=slice_thickness,
                n_slices=n_slices, slice_gap=slice_gap, orientation=orientation,
                bandwidth_per_pixel=bandwidth_per_pixel, rf_duration=rf_duration, tbw=time_bw_product,
                rf_spoiling=rf_spoiling, n_dummy=n_dummy, n_averages=n_averages,
                partial_fourier=partial_fourier, name="multi_echo_gre")


def geometry(fov, matrix, dims, slice_thickness):
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    fov = C.pair(fov, dims, "fov")
    matrix = C.pair(matrix, dims, "matrix", integer=True)
    if dims == 2:
        if slice_thickness is None:
            raise ValueError("slice_thickness [m] is required for 2D")
        C.positive(slice_thickness, "slice_thickness", "m")
    return fov, matrix


def _gre(*, scanner, fov, matrix, tes, delta_te, n_echoes, tr, flip_angle, flip_angle_deg, dims,
         slice_thickness, n_slices, slice_gap, orientation, bandwidth_per_pixel, rf_duration, tbw,
         rf_spoiling, n_dummy, n_averages, partial_fourier, name) -> Sequence:
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg)
    fov, matrix = geometry(fov, matrix, dims, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx, ny = matrix[0], matrix[1]
    nz = matrix[2] if dims == 3 else 1
    slab = slice_thickness
    exc = C.excitation(alpha, sc, thickness=slab, duration=rf_duration, tbw=tbw, ch=sl)
    ro = C.Readout(sc, fov=fov[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    lines = C.partial_lines(ny, partial_fourier)
    ky = (lines - ny // 2) / fov[1]
    parts = np.arange(nz)
    kz = (parts - nz // 2) / fov[2] if dims == 3 else np.zeros(1)
    positions = C.slice_positions(n_slices, slice_thickness, slice_gap) if dims == 2 else np.zeros(1)

    # prephase block: read prephaser, phase encode, slice rephaser (+ partition encode)
    slice_areas = exc.reph_area + kz
    amax = max(abs(ro.pre_area), float(np.abs(ky).max()), float(np.abs(slice_areas).max()))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))

    def lobe(ch, area):
        return C.trap(ch, area * a2g, rise, flat, rise)

    pre_dur = C.ceil_to(2 * rise + flat, sc.block_raster)
    # spoil block: read spoiler, phase rewinder, slice spoiler
    read_spoil = ro.post_area + 2.0 * nx / fov[0]
    slice_spoil = 4.0 / (slab if slab is not None else fov[-1])
    smax = max(abs(read_spoil), float(np.abs(ky).max()), abs(slice_spoil) + float(np.abs(kz).max()))
    srise, sflat = C.shortest_trap_timing(smax, sc)
    s2g = 1.0 / (sc.gamma_bar * (srise + sflat))

    def slobe(ch, area):
        return C.trap(ch, area * s2g, srise, sflat, srise)

    spoil_dur = C.ceil_to(2 * srise + sflat, sc.block_raster)
    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    # echo timing
    te_min = exc.tail + pre_dur + ro.t_centre
    te1 = require_minimum("te", None if tes is None else tes[0], te_min,
                          what=f"this GRE (readout {ro.bandwidth_per_pixel:.0f} Hz/pixel, matrix {nx})",
                          raster=sc.block_raster)
    fill_te = C.round_to(te1 - te_min, sc.block_raster)
    te1 = te_min + fill_te
    fb_area = -ro.area  # fly-back between echoes (monopolar)
    if n_echoes > 1:
        fb = C.area_trap(rd, fb_area, sc)
        fb_dur = C.ceil_to(fb.duration, sc.block_raster)
        dte_min = ro_dur + fb_dur
        dte = require_minimum("delta_te", delta_te, dte_min,
                              what=f"{n_echoes} monopolar echoes of {nx} samples", raster=sc.block_raster)
        fill_dte = C.round_to(dte - dte_min, sc.block_raster)
        dte = dte_min + fill_dte
    else:
        fb, fb_dur, fill_dte, dte = None, 0.0, 0.0, 0.0
    echo_dur = n_echoes * ro_dur + (n_echoes - 1) * (fb_dur + fill_dte)
    tr_min = exc.block_duration + pre_dur + fill_te + echo_dur + spoil_dur
    tr_v = require_minimum("tr", tr, tr_min, what=f"TE {te1 * 1e3:.3f} ms with {n_echoes} echo(es)",
                           raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr

    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")
    if int(n_averages) != n_averages or n_averages < 1:
        raise ValueError(f"n_averages must be a positive integer, got {n_averages}")

    counter = [0]
    blocks: list = []

    def one_tr(pos, y, p, labels, acquire):
        n = counter[0]
        counter[0] += 1
        phase = C.spoil_phase(n) if rf_spoiling else 0.0
        blocks.append(exc.block(pos, phase))
        blocks.append(C.make_block(sc, grads=[lobe(rd, ro.pre_area), lobe(ph, ky[y] if y is not None else 0.0),
                                              lobe(sl, slice_areas[p])], duration=pre_dur))
        blocks.extend(C.delay_blocks(fill_te, sc))
        for e in range(n_echoes):
            if e:
                blocks.append(C.make_block(sc, grads=[fb], duration=fb_dur))
                blocks.extend(C.delay_blocks(fill_dte, sc))
            lab = labels + (C.labels_set(ECO=e) if n_echoes > 1 else ())
            blocks.append(C.make_block(sc, grads=[ro.grad()], adc=ro.adc(phase) if acquire else None,
                                       labels=lab if acquire else (), duration=ro_dur))
        ky_end = ky[y] if y is not None else 0.0
        blocks.append(C.make_block(sc, grads=[slobe(rd, read_spoil), slobe(ph, -ky_end),
                                              slobe(sl, slice_spoil - kz[p] if dims == 3 else slice_spoil)],
                                   duration=spoil_dur))
        blocks.extend(C.delay_blocks(fill_tr, sc))

    centre_line = int(np.argmin(np.abs(ky)))
    for a in range(int(n_averages)):
        if dims == 2:
            for s, pos in enumerate(positions):
                for _ in range(int(n_dummy)):
                    one_tr(pos, centre_line, 0, (), False)
                for i, m in enumerate(lines):
                    one_tr(pos, i, 0, C.labels_set(LIN=m, SLC=s, AVG=a), True)
        else:
            for _ in range(int(n_dummy)):
                one_tr(0.0, centre_line, nz // 2, (), False)
            for p in parts:
                for i, m in enumerate(lines):
                    one_tr(0.0, i, p, C.labels_set(LIN=m, PAR=p, AVG=a), True)

    tes_all = [te1 + e * dte for e in range(n_echoes)]
    return C.finish(blocks, sc, name, fov if dims == 3 else (*fov, slice_thickness), matrix if dims == 3 else (*matrix, 1),
                    TE=tes_all if n_echoes > 1 else te1, TR=tr_v, FlipAngle=alpha,
                    ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, Dims=float(dims), Orientation=orientation,
                    NumberOfSlices=float(len(positions)), PartialFourier=float(partial_fourier))

