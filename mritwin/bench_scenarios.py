"""Named benchmark scenarios for `mritwin bench` and `benchmarks/bench_suite.py`.

Each scenario builds a twin, a sequence, a simulation method and (optionally) a motion
model, in a *full* size (the published or issue-stated size) and a *quick* size (small,
for smoke runs on a laptop CPU). The timing harness lives in `mritwin.benchmarking`
(`run_scenario`); this module only says *what* is simulated.

Published cases (KomaMRI-vs-JEMRIS and KomaMRI-vs-MRiLab comparisons, Castillo-Passi et
al., Magn. Reson. Med. 2023) are reproduced as closely as the library allows; every
difference is stated in the scenario's ``note`` (copied into each JSON record).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

import mritwin as mt

from .benchmarking import cartesian_gre, grid_twin, readout_gradients

__all__ = ["Case", "Scenario", "SCENARIOS", "scenario_names", "build_case", "mrf_train", "column_twin",
           "disk_twin", "brain_slice", "susceptibility_map"]

#: fat–water chemical shift [ppm] (PHYSICS.md 2: about -3.4 ppm)
FAT_PPM = -3.4

_KOMA_SRC = ("Castillo-Passi et al., KomaMRI.jl, Magn. Reson. Med. 2023: comparisons with JEMRIS; "
             "figure as quoted in mritwin issue 8")
_KOMA_BRAIN_ANCHOR = {"run_s": [0.24, 0.27], "hardware": "NVIDIA RTX 2080 Ti (GPU)", "software": "KomaMRI.jl",
                      "source": _KOMA_SRC}
_MRILAB_ANCHOR = {"run_s": 0.15, "hardware": "GPU (as quoted in the issue)", "software": "MRiLab",
                  "source": "Castillo-Passi et al., Magn. Reson. Med. 2023: KomaMRI-vs-MRiLab spiral case; "
                            "figure as quoted in mritwin issue 8"}


@dataclasses.dataclass(frozen=True)
class Case:
    """Everything one scenario simulates.

    Attributes:
        twin: the spins.
        seq: the sequence.
        scanner: the system used to discretize and simulate.
        method: the simulation method (`mritwin.Bloch`).
        motion: optional rigid motion passed to `mritwin.simulate`.
        note: what differs from the published / requested case ("" when nothing does).
        anchor: a published figure to print beside ours (``run_s``, ``hardware``,
            ``software``, ``source``), or None.
        params: scenario parameters worth recording (sizes, TE, ...), JSON-ready.
    """

    twin: mt.Twin
    seq: mt.Sequence
    scanner: mt.Scanner
    method: mt.Bloch
    motion: mt.AbstractMotion | None = None
    note: str = ""
    anchor: dict | None = None
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named scenario: ``build(quick)`` returns its `Case`."""

    name: str
    description: str
    build: Callable[[bool], Case]


# ---------------------------------------------------------------------------------------
# twins
# ---------------------------------------------------------------------------------------
def column_twin(n: int = 200, length: float = 0.2) -> mt.Twin:
    """A 1D column of ``n`` spins along x over ``length`` [m] (JEMRIS "1D column" sample).

    Two halves with different tissue values, as in JEMRIS' column phantom (two values per
    parameter): x < 0 white-matter-like (T1 0.83 s, T2 0.07 s, PD 0.7), x >= 0
    grey-matter-like (T1 1.33 s, T2 0.083 s, PD 0.8).
    """
    x = (np.arange(n) - (n - 1) / 2) * (length / n)
    left = x < 0
    return mt.Twin(position=np.c_[x, np.zeros(n), np.zeros(n)], pd=np.where(left, 0.7, 0.8),
                   t1=np.where(left, 0.83, 1.33), t2=np.where(left, 0.07, 0.083))


def disk_twin(radius_spins: int, spacing: float, *, delta_f: float) -> mt.Twin:
    """A uniform disk (a 2D slice of a sphere, z = 0) on a square grid, with one frequency offset.

    Args:
        radius_spins: radius in grid spacings (50 gives ~7.85k spins).
        spacing: grid spacing [m].
        delta_f: chemical shift of every spin [Hz].
    """
    c = np.arange(-radius_spins, radius_spins + 1) * spacing
    x, y = np.meshgrid(c, c, indexing="ij")
    keep = x ** 2 + y ** 2 <= (radius_spins * spacing) ** 2
    m = int(keep.sum())
    return mt.Twin(position=np.c_[x[keep], y[keep], np.zeros(m)], pd=np.ones(m), t1=np.full(m, 0.25),
                   t2=np.full(m, 0.06), delta_f=np.full(m, delta_f))


def brain_slice(matrix: int, fov: float = 0.22) -> mt.Twin:
    """The built-in 2D brain slice (one spin per voxel; fat carries its chemical shift)."""
    return mt.phantoms.brain(2, matrix=matrix, fov=fov, t2_prime=False)


def susceptibility_map(position, *, peak_hz: float = 150.0, gradient_hz_per_m: float = 500.0):
    """A synthetic susceptibility off-resonance map [Hz] at ``position`` (n, 3) [m].

    A Gaussian bump of ``peak_hz`` (sigma 2 cm) centred at y = +7 cm (a frontal-sinus-like
    air/tissue field) plus a linear term of ``gradient_hz_per_m`` along y.
    """
    p = np.asarray(position)
    r2 = p[:, 0] ** 2 + (p[:, 1] - 0.07) ** 2
    return peak_hz * np.exp(-r2 / (2 * 0.02 ** 2)) + gradient_hz_per_m * p[:, 1]


# ---------------------------------------------------------------------------------------
# sequences
# ---------------------------------------------------------------------------------------
def mrf_train(n_tr: int = 1000, *, tr: float = 10e-3, te: float = 3e-3, n_read: int = 64, fov: float = 0.22,
              ti: float = 20e-3, scanner: mt.Scanner | None = None, flips=None,
              pulse_train: bool = True) -> tuple[mt.Sequence, np.ndarray]:
    """An MR-fingerprinting-like FISP train: inversion, then ``n_tr`` TRs of varying flip.

    Inversion (1 ms hard 180°, spoiler), TI, then per TR: hard pulse (200 µs) of flip
    ``10° + 50° |sin(π i / 250)|`` (phase 0, no RF spoiling, as in FISP-MRF), one
    Cartesian readout line through the k-space centre (``n_read`` samples) whose
    centre is at ``te``, and a read-axis spoiler of 4 cycles per pixel (unbalanced, FISP).

    Args:
        n_tr: number of TRs.
        tr, te, ti: [s].
        n_read: samples per readout; fov: [m].
        scanner: the system (default: ideal, no dead times).
        flips: (n_tr,) flip angles [rad] instead of the default pattern; may be traced
            (differentiate the signal with respect to them).
        pulse_train: the TRs' pulses as the plays of one pulse train (`RF.play`; traced
            flips are then read as one vector); False: one pulse per TR made from the
            scalar ``flips[i]`` (the same sequence; to compare compile times).

    Returns:
        ``(seq, flips)``: the sequence and the (n_tr,) flip angles [rad].
    """
    sc = scanner or mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    if int(n_tr) != n_tr or n_tr < 1:
        raise ValueError(f"n_tr must be a positive integer, got {n_tr}")
    if flips is None:
        flips = np.radians(10.0 + 50.0 * np.abs(np.sin(np.pi * np.arange(n_tr) / 250.0)))
    elif np.shape(flips) != (n_tr,):
        raise ValueError(f"flips must have shape (n_tr,) = ({n_tr},), got {np.shape(flips)}")
    dwell = 10e-6
    t_pre = 0.6e-3
    _, gx, gxp, spoil = readout_gradients(n_read, fov, dwell, t_pre, sc)
    rf_dur = 200e-6
    t_centre = gx.rise_time + (n_read / 2 + 0.5) * dwell
    gap = te - rf_dur / 2 - t_pre - t_centre
    if gap < 0:
        raise ValueError(f"te too short: minimum {te - gap:.6f} s")
    inv = mt.make_block_pulse(math.pi, 1e-3, delay=0.0, use="inversion", scanner=sc)
    blocks = [mt.Block(rf=inv), mt.Block(gx=spoil)]
    used = inv.duration + spoil.duration
    if ti - used > 1e-12:
        blocks.append(mt.Block(duration=ti - used))
    # one pulse train, a play per TR: traced flips are then read as one vector
    train = mt.make_block_pulse(flips, rf_dur, delay=0.0, scanner=sc) if pulse_train else None
    for i in range(int(n_tr)):
        rf = train.play(i) if pulse_train else mt.make_block_pulse(flips[i], rf_dur, delay=0.0, scanner=sc)
        b = [mt.Block(rf=rf), mt.Block(gx=gxp)]
        if gap > 1e-12:
            b.append(mt.Block(duration=gap))
        b += [mt.Block(gx=gx, adc=mt.ADC(n_read, dwell, delay=gx.rise_time)), mt.Block(gx=spoil)]
        used = sum(x.duration for x in b)
        if used > tr + 1e-12:
            raise ValueError(f"tr too short: minimum {used:.6f} s")
        if tr - used > 1e-12:
            b.append(mt.Block(duration=tr - used))
        blocks += b
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0], "Name": "mrf_fisp"}), flips


def _koma_epi(matrix: int, scanner: mt.Scanner) -> mt.Sequence:
    """The EPI of the KomaMRI-vs-JEMRIS cases: FOV 230 mm, TE 100 ms, 90° 2 ms sinc, 5 mm."""
    return mt.sequences.epi(scanner=scanner, fov=0.23, matrix=matrix, te=0.1, slice_thickness=5e-3)


_EPI_NOTE = ("single-shot GRE-EPI from mt.sequences.epi (2 ms sinc 90 deg, TBW 4, 5 mm slice, 1500 Hz/pixel, "
             "trapezoid readouts with ramps; flat-top sampling only): the JEMRIS/Koma EPI timing and "
             "RF shape may differ")


# ---------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------
def _koma_column(quick: bool) -> Case:
    sc = mt.Scanner()
    m = 32 if quick else 100
    return Case(column_twin(200), _koma_epi(m, sc), sc, mt.Bloch(),
                note=f"1D column of 200 spins along x (20 cm, two tissue halves); EPI {m}x{m}. " + _EPI_NOTE,
                params={"matrix": m, "fov_m": 0.23, "te_s": 0.1})


def _koma_sphere(quick: bool) -> Case:
    sc = mt.Scanner()
    m = 32 if quick else 100
    r = 15 if quick else 50
    cs = FAT_PPM * 1e-6 * mt.GAMMA_BAR * sc.b0
    tw = disk_twin(r, 0.2 / (2 * r), delta_f=cs)  # 20 cm diameter
    return Case(tw, _koma_epi(m, sc), sc, mt.Bloch(),
                note=(f"2D slice of a sphere (disk, 20 cm, {tw.n_spins} spins on a grid) with a uniform "
                      f"fat-like chemical shift {cs:.0f} Hz (-3.4 ppm at {sc.b0:g} T); EPI {m}x{m}. " + _EPI_NOTE),
                params={"matrix": m, "chemical_shift_hz": cs})


def _brain_case(quick: bool, *, suscept=False, motion=False, spiral=False) -> tuple:
    sc = mt.Scanner()
    mat = 48 if quick else 176  # 176: ~25.6k spins (the published slice has ~26k)
    tw = brain_slice(mat, fov=0.22)
    if suscept:
        tw = mt.with_b0_map(tw, susceptibility_map(tw.position), unit="Hz", add=True)
    m = 32 if quick else 100
    if spiral:
        seq = mt.sequences.spiral(scanner=sc, fov=0.23, matrix=m, n_interleaves=1, flip_angle_deg=90,
                                  slice_thickness=5e-3)
    else:
        seq = _koma_epi(m, sc)
    return tw, seq, sc, m


def _koma_brain_suscept(quick: bool) -> Case:
    tw, seq, sc, m = _brain_case(quick, suscept=True)
    return Case(tw, seq, sc, mt.Bloch(), anchor=None if quick else _KOMA_BRAIN_ANCHOR,
                note=(f"built-in brain slice ({tw.n_spins} spins, 1 per voxel; fat chemical shift) plus a synthetic "
                      "susceptibility map (150 Hz Gaussian bump + 500 Hz/m along y), not JEMRIS' brain and field "
                      f"model; EPI {m}x{m}. " + _EPI_NOTE),
                params={"matrix": m})


def _koma_brain_motion(quick: bool) -> Case:
    tw, seq, sc, m = _brain_case(quick)
    mo = mt.Translation(velocity=(0.0, 0.02, 0.0))
    return Case(tw, seq, sc, mt.Bloch(), motion=mo, anchor=None if quick else _KOMA_BRAIN_ANCHOR,
                note=(f"built-in brain slice ({tw.n_spins} spins) translating at 2 cm/s along y (rigid; the "
                      f"published motion pattern may differ); a translation keeps ADC windows as windows, each "
                      f"sample with a phase common to all spins. EPI {m}x{m}. "
                      + _EPI_NOTE),
                params={"matrix": m, "velocity_m_s": [0.0, 0.02, 0.0]})


def _koma_brain_spiral(quick: bool) -> Case:
    tw, seq, sc, m = _brain_case(quick, spiral=True)
    return Case(tw, seq, sc, mt.Bloch(), anchor=None if quick else _KOMA_BRAIN_ANCHOR,
                note=(f"built-in brain slice ({tw.n_spins} spins); single-shot Archimedean spiral-out "
                      f"(mt.sequences.spiral, FOV 230 mm, matrix {m}, 2 us dwell, 90 deg 2 ms sinc, minimum TE); "
                      "the published spiral design may differ"),
                params={"matrix": m, "n_interleaves": 1})


def _koma_epi_case(quick: bool) -> Case:
    tw, seq, sc, m = _brain_case(quick)
    return Case(tw, seq, sc, mt.Bloch(), anchor=None if quick else _KOMA_BRAIN_ANCHOR,
                note=f"built-in brain slice ({tw.n_spins} spins), no field map; EPI {m}x{m}. " + _EPI_NOTE,
                params={"matrix": m, "fov_m": 0.23, "te_s": 0.1})


def _mrilab_spiral(quick: bool) -> Case:
    # 90 deg in 1 ms with a TBW-4 sinc needs ~23 uT: above the default 20 uT B1 limit
    sc = mt.Scanner(max_b1=30e-6)
    mat = 48 if quick else 176
    tw = brain_slice(mat, fov=0.22)
    m = 40 if quick else 80
    seq = mt.sequences.spiral(scanner=sc, fov=0.2, matrix=m, n_interleaves=8, te=0.05, flip_angle_deg=90,
                              rf_duration=1e-3, slice_thickness=5e-3)
    return Case(tw, seq, sc, mt.Bloch(), anchor=None if quick else _MRILAB_ANCHOR,
                note=(f"8-interleave spiral-out (mt.sequences.spiral), FOV 20 cm, matrix {m}, 1 ms sinc 90 deg "
                      f"(TBW 4; scanner max_b1 raised to 30 uT), TE 50 ms, minimum TR; twin = built-in brain slice "
                      f"({tw.n_spins} spins): the MRiLab phantom and spiral design may differ"),
                params={"matrix": m, "n_interleaves": 8, "fov_m": 0.2, "te_s": 0.05})


def _gre(n_full: int) -> Callable[[bool], Case]:
    def build(quick: bool) -> Case:
        n = n_full // 4 if quick else n_full
        fov = 0.22
        seq = cartesian_gre(n, fov, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=10e-6)
        return Case(grid_twin(n, fov, t1=1.0, t2=0.08), seq, mt.Scanner(), mt.Bloch(),
                    note="issue-2 GRE (benchmarking.cartesian_gre: hard pulse, RF spoiling, one spin per pixel)"
                    + (f"; quick size {n}x{n}" if quick else ""),
                    params={"matrix": n, "tr_s": 12e-3, "te_s": 5e-3, "flip_deg": 15})
    return build


def _gre_sinc(quick: bool) -> Case:
    n = 64 if quick else 256
    fov, sc = 0.22, mt.Scanner()
    seq = mt.sequences.gre(scanner=sc, fov=fov, matrix=n, flip_angle_deg=15, slice_thickness=5e-3)
    return Case(grid_twin(n, fov, t1=1.0, t2=0.08), seq, sc, mt.Bloch(),
                note="the library's clinical GRE (mt.sequences.gre: 2 ms sinc slice selection on its 1 us "
                     "raster, minimum TR/TE, RF spoiling), one spin per pixel on the slice"
                     + (f"; quick size {n}x{n}" if quick else ""),
                params={"matrix": n, "flip_deg": 15, "slice_thickness_m": 5e-3, "tr_s": float(seq.duration) / n})


def _brain3d_twin(quick: bool) -> tuple[mt.Scanner, int, mt.Twin]:
    """The 3D-brain scenarios' scanner, twin matrix and twin."""
    mat = 32 if quick else 147  # 147: 1.50 mm isotropic over 22 cm, ~1.68M spins
    return mt.Scanner(), mat, mt.phantoms.brain(3, matrix=mat, fov=0.22, t2_prime=False)


def _brain3d(quick: bool) -> Case:
    sc, mat, tw = _brain3d_twin(quick)
    m = 16 if quick else 32
    seq = mt.sequences.gre(scanner=sc, fov=0.22, matrix=m, flip_angle_deg=15, slice_thickness=5e-3, dims=2)
    rf_dt = 50e-6
    return Case(tw, seq, sc, mt.Bloch(rf_dt=rf_dt),
                note=(f"3D built-in brain at {220 / mat:.2f} mm ({tw.n_spins} spins), one axial slice of a 2D "
                      f"spoiled GRE {m}x{m} (2 ms sinc, RF grouped into {rf_dt * 1e6:g} us steps: "
                      "Bloch(rf_dt=50e-6)); the whole volume is simulated"),
                params={"twin_matrix": mat, "voxel_mm": 220 / mat, "matrix": m, "rf_dt_s": rf_dt})


def _brain3d_multislice(quick: bool) -> Case:
    sc, mat, tw = _brain3d_twin(quick)
    m = 16 if quick else 32
    n_slices, thick, gap = 4, 5e-3, 5e-3
    seq = mt.sequences.gre(scanner=sc, fov=0.22, matrix=m, flip_angle_deg=15, slice_thickness=thick,
                           n_slices=n_slices, slice_gap=gap, dims=2)
    rf_dt = 50e-6
    return Case(tw, seq, sc, mt.Bloch(rf_dt=rf_dt),
                note=(f"3D built-in brain at {220 / mat:.2f} mm ({tw.n_spins} spins), 2D multi-slice spoiled GRE "
                      f"{m}x{m}, {n_slices} axial slices of {thick * 1e3:g} mm with {gap * 1e3:g} mm gaps (2 ms sinc "
                      f"per slice, RF grouped into {rf_dt * 1e6:g} us steps in the frame that follows each pulse's "
                      "frequency offset); the whole volume is simulated"),
                params={"twin_matrix": mat, "voxel_mm": 220 / mat, "matrix": m, "n_slices": n_slices,
                        "slice_thickness_m": thick, "slice_gap_m": gap, "rf_dt_s": rf_dt})


def _brain3d_slab(quick: bool) -> Case:
    sc, mat, tw = _brain3d_twin(quick)
    m, n_par = (16, 4) if quick else (32, 8)
    slab = 0.04
    seq = mt.sequences.gre(scanner=sc, fov=(0.22, 0.22, slab), matrix=(m, m, n_par), flip_angle_deg=15,
                           slice_thickness=slab, dims=3)
    rf_dt = 50e-6
    return Case(tw, seq, sc, mt.Bloch(rf_dt=rf_dt),
                note=(f"3D built-in brain at {220 / mat:.2f} mm ({tw.n_spins} spins), 3D spoiled GRE "
                      f"{m}x{m}x{n_par} over a {slab * 1e3:g} mm axial slab (slab-selective 2 ms sinc, RF grouped "
                      f"into {rf_dt * 1e6:g} us steps; partition encoding); the whole volume is simulated"),
                params={"twin_matrix": mat, "voxel_mm": 220 / mat, "matrix": [m, m, n_par], "slab_m": slab,
                        "rf_dt_s": rf_dt})


def _mrf(quick: bool) -> Case:
    mat = 48 if quick else 176
    tw = brain_slice(mat, fov=0.22)
    seq, _ = mrf_train(1000)
    return Case(tw, seq, mt.Scanner(), mt.Bloch(),
                note=(f"FISP-MRF-like train (benchmarks only): inversion, 1000 TRs of 10 ms, flip 10-60 deg, "
                      f"200 us hard pulses, one 64-sample line per TR; built-in brain slice ({tw.n_spins} spins)"),
                params={"n_tr": 1000, "tr_s": 10e-3})


def scale_twin(n_spins: int, fov: float = 0.22) -> mt.Twin:
    """``n_spins`` spins on a cubic grid over ``fov`` [m] (the first n of ceil(n^(1/3))^3)."""
    side = int(math.ceil(n_spins ** (1 / 3) - 1e-9))
    c = (np.arange(side, dtype=np.float32) - side / 2) * (fov / side)
    idx = np.arange(n_spins)
    pos = np.stack([c[idx // (side * side)], c[(idx // side) % side], c[idx % side]], axis=1)
    return mt.Twin(position=pos, pd=np.ones(n_spins, np.float32), t1=np.full(n_spins, 1.0, np.float32),
                   t2=np.full(n_spins, 0.08, np.float32))


def _scale(quick: bool, n_spins: int | None = None) -> Case:
    n = n_spins or (100_000 if quick else 10_000_000)
    fov = 0.22
    seq = cartesian_gre(32, fov, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=10e-6)
    return Case(scale_twin(n, fov), seq, mt.Scanner(), mt.Bloch(),
                note="scale test: a 3D grid of spins under the 32x32 issue-2 GRE (hard pulse, windows)",
                params={"matrix": 32})


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("koma-column", "KomaMRI-vs-JEMRIS: 1D column of 200 spins, EPI 100x100, TE 100 ms, FOV 230 mm",
             _koma_column),
    Scenario("koma-sphere-cs", "KomaMRI-vs-JEMRIS: sphere slice (~7.8k spins) with chemical shift, EPI",
             _koma_sphere),
    Scenario("koma-brain-suscept", "KomaMRI-vs-JEMRIS: 2D brain slice (~26k spins) with susceptibility, EPI",
             _koma_brain_suscept),
    Scenario("koma-brain-motion", "KomaMRI-vs-JEMRIS: 2D brain slice (~26k spins) with rigid motion, EPI",
             _koma_brain_motion),
    Scenario("koma-brain-spiral", "KomaMRI-vs-JEMRIS: 2D brain slice (~26k spins), spiral readout",
             _koma_brain_spiral),
    Scenario("koma-epi", "KomaMRI-vs-JEMRIS: 2D brain slice (~26k spins), EPI 100x100, TE 100 ms, FOV 230 mm",
             _koma_epi_case),
    Scenario("mrilab-spiral", "KomaMRI-vs-MRiLab: 8-interleave spiral 80x80, FOV 20 cm, 1 ms sinc 90, TE 50 ms",
             _mrilab_spiral),
    Scenario("gre-64", "2D Cartesian spoiled GRE 64x64 (issue 2)", _gre(64)),
    Scenario("gre-128", "2D Cartesian spoiled GRE 128x128 (issue 2)", _gre(128)),
    Scenario("gre-256", "2D Cartesian spoiled GRE 256x256 (issue 2)", _gre(256)),
    Scenario("gre-sinc-256", "2D spoiled GRE 256x256 with a 2 ms sinc per TR (mt.sequences.gre)", _gre_sinc),
    Scenario("brain3d-gre", "3D brain at 1.5 mm (~1.7M spins), one slice of a 2D GRE 32x32", _brain3d),
    Scenario("brain3d-ms", "3D brain at 1.5 mm (~1.7M spins), 2D multi-slice GRE 32x32, 4 slices", _brain3d_multislice),
    Scenario("brain3d-slab", "3D brain at 1.5 mm (~1.7M spins), 3D GRE 32x32x8 over a 40 mm slab", _brain3d_slab),
    Scenario("mrf-train", "MR-fingerprinting-like train: 1000 TRs, varying flip", _mrf),
    Scenario("scale-10m", "10M spins on the CPU, short GRE", _scale),
]}


def scenario_names() -> list[str]:
    """Names of all scenarios, in suite order."""
    return list(SCENARIOS)


def build_case(name: str, quick: bool = False) -> Case:
    """Build scenario ``name`` (quick or full size).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name].build(bool(quick))
