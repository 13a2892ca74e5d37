"""Spin-echo family: spin echo, turbo spin echo (CPMG), inversion recovery, FLAIR."""

from __future__ import annotations

import math

import numpy as np

from ..scanner import Scanner
from ..sequence import Sequence
from ..timing import require_minimum
from . import _common as C
from .gre import geometry

__all__ = ["spin_echo", "tse", "inversion_recovery", "flair", "flair_null_ti"]

REFOCUSING = ("refocusing_angle", "refocusing_angle_deg")


@C.traceable(*C.FLIPS + REFOCUSING)
def spin_echo(
    *,
    scanner: Scanner,
    fov,
    matrix,
    te: float | None = None,
    tr: float | None = None,
    slice_thickness: float,
    flip_angle=None,
    flip_angle_deg=None,
    refocusing_angle=None,
    refocusing_angle_deg=None,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 200.0,
    rf_duration: float = 2e-3,
    refocusing_duration: float = 3e-3,
    time_bw_product: float = 4.0,
    n_dummy: int = 0,
    n_averages: int = 1,
    partial_fourier: float = 1.0,
) -> Sequence:
    """2D multi-slice spin echo: 90° – TE/2 – 180° – TE/2 – readout, one line per TR.

    Slices are interleaved within each TR. The refocusing pulse is flanked by slice
    crushers (4 cycles/slice); read prephaser and phase encoding follow the 180°.
    A `tse` with ``etl=1``; arguments as in `tse`.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.spin_echo(scanner=mt.Scanner(), fov=0.2, matrix=16, te=20e-3, tr=0.5,
        ...                          slice_thickness=5e-3)
        >>> round(seq.duration, 3)
        8.0
    """
    return tse(scanner=scanner, fov=fov, matrix=matrix, te=te, tr=tr, etl=1, slice_thickness=slice_thickness,
               flip_angle=flip_angle, flip_angle_deg=flip_angle_deg, refocusing_angle=refocusing_angle,
               refocusing_angle_deg=refocusing_angle_deg, n_slices=n_slices, slice_gap=slice_gap,
               orientation=orientation, bandwidth_per_pixel=bandwidth_per_pixel, rf_duration=rf_duration,
               refocusing_duration=refocusing_duration, time_bw_product=time_bw_product, n_dummy=n_dummy,
               n_averages=n_averages, partial_fourier=partial_fourier, _name="spin_echo")


@C.traceable(*C.FLIPS + REFOCUSING)
def tse(
    *,
    scanner: Scanner,
    fov,
    matrix,
    etl: int,
    te: float | None = None,
    tr: float | None = None,
    echo_spacing: float | None = None,
    slice_thickness: float,
    flip_angle=None,
    flip_angle_deg=None,
    refocusing_angle=None,
    refocusing_angle_deg=None,
    n_slices: int = 1,
    slice_gap: float = 0.0,
    orientation: str = "axial",
    bandwidth_per_pixel: float = 200.0,
    rf_duration: float = 2e-3,
    refocusing_duration: float = 3e-3,
    time_bw_product: float = 4.0,
    n_dummy: int = 0,
    n_averages: int = 1,
    partial_fourier: float = 1.0,
    _inversion: dict | None = None,
    _name: str = "tse",
) -> Sequence:
    """2D multi-slice turbo spin echo (fast spin echo) with CPMG phases.

    Excitation at phase 90°, refocusing pulses at 0° (CPMG); crushers of 4 cycles/slice
    around every refocusing pulse; spoilers after the train (4 cycles/slice, 2 cycles/pixel); each echo has its own read prephaser / rewinder and
    phase encode / rewind, so every half echo spacing is gradient-balanced (CPMG
    condition). Phase ordering: the acquired lines sorted by ky are cut into ``etl``
    groups of ``n_shots`` lines; the group holding ky = 0 is played at the echo at
    ``te`` and the others follow cyclically ("linear" ordering). Slices interleaved
    within each TR.

    Args:
        scanner: the system.
        fov: [m] one number or (read, phase). matrix: one integer or (nx, ny).
        etl: echo train length (echoes per excitation); the number of acquired lines
            must be a multiple of it.
        te: effective echo time [s] (the echo at the k-space centre), a multiple of the
            echo spacing; None: the first echo at the minimum echo spacing.
        tr: repetition time [s] (between excitations of the same slice); None: minimum.
        echo_spacing: [s]; None: the shortest, or ``te / n`` for the largest whole ``n``
            when ``te`` is given.
        slice_thickness: [m].
        flip_angle / flip_angle_deg: excitation [rad] / [deg] (default 90°; may be traced).
        refocusing_angle / refocusing_angle_deg: refocusing [rad] / [deg] (default 180°).
        n_slices, slice_gap [m], orientation: slice geometry.
        bandwidth_per_pixel: [Hz]. rf_duration, refocusing_duration: [s].
        time_bw_product: of the sinc pulses.
        n_dummy: dummy TRs (no ADC) before the acquisition.
        n_averages: repetitions (label AVG). partial_fourier: fraction of lines (0.5–1).

    Returns:
        The `Sequence` with labels LIN, SLC, SEG (echo index in the train), AVG and
        definitions ``TE`` (effective), ``TR``, ``EchoSpacing``, ``EchoTrainLength``.

    Raises:
        ValueError: impossible TE/TR/echo spacing (the message gives the minimum and
            the possible TEs), flip angles out of range, gradient or B1 limits.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.tse(scanner=mt.Scanner(), fov=0.2, matrix=16, etl=4, te=40e-3, tr=2.0,
        ...                    slice_thickness=5e-3)
        >>> seq.n_adc_events
        16
    """
    sc = C.check_scanner(scanner)
    alpha = C.flip(flip_angle, flip_angle_deg, default=math.pi / 2)
    beta = C.flip(refocusing_angle, refocusing_angle_deg, name="refocusing_angle", default=math.pi)
    fov, matrix = geometry(fov, matrix, 2, slice_thickness)
    if orientation not in C.ORIENTATIONS:
        raise ValueError(f"orientation must be one of {tuple(C.ORIENTATIONS)}, got {orientation!r}")
    rd, ph, sl = C.ORIENTATIONS[orientation]
    nx, ny = matrix
    if int(etl) != etl or etl < 1:
        raise ValueError(f"etl must be a positive integer, got {etl}")
    etl = int(etl)
    lines = C.partial_lines(ny, partial_fourier)
    if lines.size % etl:
        ok = [e for e in range(1, lines.size + 1) if lines.size % e == 0]
        raise ValueError(f"etl = {etl} does not divide the {lines.size} acquired lines; possible: {ok}")
    n_shots = lines.size // etl
    exc = C.SlicePulse(alpha, sc, thickness=slice_thickness, duration=rf_duration, tbw=time_bw_product,
                       ch=sl, what="excitation pulse")
    ref = C.SlicePulse(beta, sc, thickness=slice_thickness, duration=refocusing_duration, tbw=time_bw_product,
                       ch=sl, use="refocusing", what="refocusing pulse")
    ro = C.Readout(sc, fov=fov[0], n=nx, bandwidth_per_pixel=bandwidth_per_pixel, ch=rd)
    ky_all = (lines - ny // 2) / fov[1]
    crush = 4.0 / slice_thickness
    # block after the excitation: slice rephaser + first crusher
    b0 = C.area_trap(sl, exc.reph_area + crush, sc)
    b0_dur = C.ceil_to(b0.duration, sc.block_raster)
    # after each refocusing pulse: crusher + read prephaser + phase encode (common timing)
    amax = max(crush, abs(ro.pre_area), abs(ro.post_area), float(np.abs(ky_all).max()))
    rise, flat = C.shortest_trap_timing(amax, sc)
    a2g = 1.0 / (sc.gamma_bar * (rise + flat))
    pdur = C.ceil_to(2 * rise + flat, sc.block_raster)

    def lobe(ch, area):
        return C.trap(ch, area * a2g, rise, flat, rise)

    ro_dur = C.ceil_to(ro.duration, sc.block_raster)
    h0 = exc.tail + b0_dur + ref.centre
    ha = ref.tail + pdur + ro.t_centre
    hb = ro_dur - ro.t_centre + pdur + ref.centre
    half_min = max(h0, ha, hb)
    esp_min = 2 * C.ceil_to(half_min, sc.block_raster)
    what = f"this {'spin echo' if etl == 1 else 'TSE'} ({nx} samples at {ro.bandwidth_per_pixel:.0f} Hz/pixel)"
    if etl == 1:
        te_v = require_minimum("te", te if te is not None else echo_spacing, esp_min, what=what,
                               raster=sc.block_raster)
        esp = 2 * C.round_to(te_v / 2, sc.block_raster)
        k_eff = 1
    else:
        if echo_spacing is not None:
            esp = require_minimum("echo_spacing", echo_spacing, esp_min, what=what, raster=sc.block_raster)
            esp = 2 * C.round_to(esp / 2, sc.block_raster)
            if te is None:
                k_eff = 1
            else:
                k_eff = int(round(te / esp))
                if not (1 <= k_eff <= etl) or abs(k_eff * esp - te) > 0.5 * sc.block_raster * k_eff + 1e-9:
                    possible = ", ".join(f"{(j + 1) * esp * 1e3:.2f}" for j in range(etl))
                    raise ValueError(
                        f"te = {te * 1e3:.3f} ms is impossible with echo_spacing {esp * 1e3:.3f} ms and "
                        f"etl {etl}: possible TEs are [{possible}] ms"
                    )
        else:
            te_v = require_minimum("te", te, esp_min, what=what, raster=sc.block_raster)
            k_eff = max(1, min(etl, int(math.floor(te_v / esp_min + 1e-9))))
            esp = 2 * C.round_to(te_v / k_eff / 2, sc.block_raster)
            if esp < esp_min - 1e-12:
                esp += 2 * sc.block_raster
    half = esp / 2
    fill0 = C.round_to(half - h0, sc.block_raster)
    filla = C.round_to(half - ha, sc.block_raster)
    fillb = C.round_to(half - hb, sc.block_raster)
    te_eff = k_eff * esp

    # phase ordering: groups of n_shots lines (sorted by ky); group with ky=0 at echo k_eff-1
    order = lines[np.argsort(ky_all, kind="stable")]
    groups = order.reshape(etl, n_shots)
    gc = int(np.nonzero(groups == ny // 2)[0][0]) if (groups == ny // 2).any() else etl // 2
    echo_group = [(e - (k_eff - 1) + gc) % etl for e in range(etl)]

    # optional inversion (IR): slice-selective inversion, spoiler, TI delay
    inv = None
    if _inversion is not None:
        inv = C.SlicePulse(_inversion["angle"], sc, thickness=_inversion["thickness"],
                           duration=_inversion["duration"], tbw=time_bw_product, ch=sl, use="inversion",
                           what="inversion pulse")
        inv_spoil = C.area_trap(sl, 8.0 / slice_thickness, sc)
        inv_spoil_dur = C.ceil_to(inv_spoil.duration, sc.block_raster)
        ti_min = inv.tail + inv_spoil_dur + exc.centre
    # end of train: spoil on the slice axis (4 cycles/slice) and the read axis (2 cycles/pixel)
    spoil = C.area_trap(sl, crush, sc)
    rspoil = C.area_trap(rd, 2.0 * nx / fov[0], sc)
    spoil_dur = C.ceil_to(max(spoil.duration, rspoil.duration), sc.block_raster)
    train_dur = exc.block_duration + b0_dur + fill0 + etl * (ref.block_duration + pdur + filla + ro_dur + fillb
                                                                + pdur) + spoil_dur
    if inv is not None:
        ti_fn = _inversion.get("ti_fn")
        ti_req = _inversion["ti"]
        if ti_req is None and ti_fn is not None:
            # FLAIR: TI nulls T1 = t1_null given TR (iterate when TR is the minimum)
            d = train_dur - exc.centre
            ti_req = max(ti_min, ti_fn(tr if tr is not None else 10.0, d))
            if tr is None:
                for _ in range(50):
                    tr_guess = len(C.slice_positions(n_slices, slice_thickness, slice_gap)) * (
                        inv.centre + ti_req + train_dur - exc.centre)
                    ti_req = max(ti_min, ti_fn(tr_guess, d))
        ti_v = require_minimum("ti", ti_req, ti_min, what="this inversion pulse and spoiler",
                               raster=sc.block_raster)
        fill_ti = C.round_to(ti_v - ti_min, sc.block_raster)
        ti_v = ti_min + fill_ti
        slice_dur = inv.block_duration + inv_spoil_dur + fill_ti + train_dur
    else:
        slice_dur = train_dur
        ti_v = None
    positions = C.slice_positions(n_slices, slice_thickness, slice_gap)
    tr_min = len(positions) * slice_dur
    tr_v = require_minimum("tr", tr, tr_min,
                           what=f"{len(positions)} slice(s) with echo train length {etl} and echo spacing "
                                f"{esp * 1e3:.3f} ms" + (f" and TI {ti_v * 1e3:.1f} ms" if ti_v else ""),
                           raster=sc.block_raster)
    fill_tr = C.round_to(tr_v - tr_min, sc.block_raster)
    tr_v = tr_min + fill_tr
    if int(n_dummy) != n_dummy or n_dummy < 0:
        raise ValueError(f"n_dummy must be an integer >= 0, got {n_dummy}")

    blocks: list = []

    def one_slice(s, pos, shot, labels, acquire):
        if inv is not None:
            blocks.append(inv.block(pos))
            blocks.append(C.make_block(sc, grads=[inv_spoil], duration=inv_spoil_dur))
            blocks.extend(C.delay_blocks(fill_ti, sc))
        blocks.append(exc.block(pos, math.pi / 2))
        blocks.append(C.make_block(sc, grads=[b0], duration=b0_dur))
        blocks.extend(C.delay_blocks(fill0, sc))
        for e in range(etl):
            m = groups[echo_group[e], shot]
            kyv = (m - ny // 2) / fov[1]
            blocks.append(ref.block(pos, 0.0))
            blocks.append(C.make_block(sc, grads=[lobe(sl, crush), lobe(rd, ro.pre_area), lobe(ph, kyv)],
                                       duration=pdur))
            blocks.extend(C.delay_blocks(filla, sc))
            lab = labels + C.labels_set(LIN=m, SEG=e) if acquire else ()
            blocks.append(C.make_block(sc, grads=[ro.grad()], adc=ro.adc(0.0) if acquire else None,
                                       labels=lab, duration=ro_dur))
            blocks.extend(C.delay_blocks(fillb, sc))
            blocks.append(C.make_block(sc, grads=[lobe(sl, crush), lobe(rd, ro.post_area), lobe(ph, -kyv)],
                                       duration=pdur))
        blocks.append(C.make_block(sc, grads=[spoil, rspoil], duration=spoil_dur))

    for _ in range(int(n_dummy)):
        for s, pos in enumerate(positions):
            one_slice(s, pos, n_shots // 2, (), False)
        blocks.extend(C.delay_blocks(fill_tr, sc))
    for a in range(int(n_averages)):
        for shot in range(n_shots):
            for s, pos in enumerate(positions):
                one_slice(s, pos, shot, C.labels_set(SLC=s, AVG=a), True)
            blocks.extend(C.delay_blocks(fill_tr, sc))
    name = _name if _inversion is None else _inversion["name"]
    return C.finish(blocks, sc, name, (*fov, slice_thickness), (*matrix, 1), TE=te_eff, TR=tr_v, TI=ti_v,
                    EchoSpacing=esp, EchoTrainLength=float(etl), FlipAngle=alpha, RefocusingAngle=beta,
                    ReadoutBandwidthPerPixel=ro.bandwidth_per_pixel, Orientation=orientation,
                    NumberOfSlices=float(len(positions)), PartialFourier=float(partial_fourier))


@C.traceable()
def inversion_recovery(
    *,
    scanner: Scanner,
    fov,
    matrix,
    ti: float | None,
    te: float | None = None,
    tr: float | None = None,
    slice_thickness: float,
    etl: int = 1,
    echo_spacing: float | None = None,
    inversion_duration: float = 4e-3,
    inversion_thickness: float | None = None,
    _ti_fn=None,
    _name: str = "inversion_recovery",
    **kwargs,
) -> Sequence:
    """Inversion recovery spin echo (IR-SE; IR-TSE with ``etl > 1``).

    Per slice and TR: slice-selective 180° inversion (sinc, ``use="inversion"``) –
    spoiler – TI – the spin-echo (or TSE) train of `tse`. Slices are played one after
    another within TR (each slice has its own inversion, TI exactly as requested).

    Args:
        ti: inversion time [s]: inversion centre to excitation centre; None: minimum.
        te, tr, etl, echo_spacing: as in `tse` (TR between inversions of a slice).
        inversion_duration: [s]. inversion_thickness: [m] (default the slice thickness).
        **kwargs: the other arguments of `tse` (``fov``, ``matrix``, ``slice_thickness``, ...).

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.inversion_recovery(scanner=mt.Scanner(), fov=0.2, matrix=16, ti=0.4,
        ...                                   te=15e-3, tr=2.0, slice_thickness=5e-3)
        >>> seq.n_rf
        48
    """
    inv = {"angle": math.pi, "thickness": inversion_thickness or slice_thickness,
           "duration": inversion_duration, "ti": ti, "ti_fn": _ti_fn, "name": _name}
    return tse(scanner=scanner, fov=fov, matrix=matrix, etl=etl, te=te, tr=tr, echo_spacing=echo_spacing,
               slice_thickness=slice_thickness, _inversion=inv, **kwargs)


def flair_null_ti(t1: float, tr: float, readout_time: float = 0.0) -> float:
    """TI [s] that nulls tissue with ``t1`` [s] in an IR sequence of repetition ``tr`` [s].

    Assumes Mz = 0 at the end of the readout train, ``readout_time`` [s] after the
    excitation: ``Mz(TI) = 1 - 2 e^{-TI/T1} + e^{-(TR - d)/T1} = 0`` gives
    ``TI = T1 ln(2 / (1 + e^{-(TR - d)/T1}))`` (PHYSICS.md item 4 with ``d = 0``).
    """
    return t1 * math.log(2.0 / (1.0 + math.exp(-(tr - readout_time) / t1)))


@C.traceable()
def flair(
    *,
    scanner: Scanner,
    fov,
    matrix,
    te: float | None = None,
    tr: float | None = None,
    ti: float | None = None,
    t1_null: float = 4.0,
    etl: int = 8,
    slice_thickness: float,
    **kwargs,
) -> Sequence:
    """FLAIR: inversion-recovery TSE with TI chosen to null fluid.

    Args:
        ti: inversion time [s]; None: the TI nulling ``t1_null`` given this TR and
            readout (`flair_null_ti`, assuming Mz = 0 after the echo train).
        t1_null: T1 to null [s] (CSF ≈ 4.0 s at 3 T, ≈ 3.6 s at 1.5 T).
        etl: echo train length (default 8).
        **kwargs: as in `inversion_recovery` / `tse`.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders
        >>> seq = builders.flair(scanner=mt.Scanner(), fov=0.2, matrix=16, te=80e-3, tr=9.0,
        ...                      slice_thickness=5e-3)
        >>> 2.3 < seq.definitions["TI"] < 2.4
        True
    """
    C.positive(t1_null, "t1_null")
    return inversion_recovery(scanner=scanner, fov=fov, matrix=matrix, ti=ti, te=te, tr=tr, etl=etl,
                              slice_thickness=slice_thickness,
                              _ti_fn=lambda tr_, d: flair_null_ti(t1_null, tr_, d), _name="flair", **kwargs)
