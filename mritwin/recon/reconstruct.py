"""`reconstruct`: signal -> `Image` (Cartesian FFT, EPI, partial Fourier, NUFFT, coils).

Conventions (see docs/recon.md):

- Signal model ``s(k) = Σ_j m_j exp(-i2π k·r_j)``; the image is its inverse,
  ``f(x) = (1/n) Σ_k s(k) exp(+i2π k·x)``, so a voxel's value is the summed transverse
  magnetization of its spins (twin ``pd`` units) and an object appears at its true
  scanner position.
- Image axes are the scanner axes x, y, z; voxel ``i`` of an encoded axis with matrix
  ``N`` and field of view ``FOV`` sits at ``(i - N//2) · FOV/N`` [m]. The affine maps
  indices to world millimetres (world = scanner frame × 1000, read as RAS+).
- The trajectory (``Signal.kspace`` or ``seq.kspace()``) places every sample; Pulseq
  labels group ADCs into slices (SLC), echoes (ECO), repetitions (REP), sets (SET),
  cardiac phases (PHS) and averages (AVG, averaged); NAV/REF lines are used for EPI
  ghost correction, NOISE lines are dropped; readout reversal (REV) follows from the
  trajectory itself.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..constants import GAMMA_BAR
from ..sequence.sequence import Sequence
from ..signal.signal import Signal
from . import partial_fourier as pf
from ._xp import add_columns, backend, set_at
from .coils import combine_rss, combine_sensitivity, estimate_sensitivities
from .image import Image
from .nufft import nufft_adjoint, pipe_dcf
from .seqinfo import AcqInfo, acquisition_info, no_excitation_hint, sequence_fov, sequence_matrix

__all__ = ["reconstruct"]

_EXTRA = ("ECO", "REP", "SET", "PHS")
_EXTRA_NAMES = {"SLC": "slab", "ECO": "echo", "REP": "rep", "SET": "set", "PHS": "phase"}
# the smallest k-space span [1/m] of an encoded axis (two phase steps with a FOV of 1 m)
ENC_MIN_SPAN = 1.0


def reconstruct(
    sig: Signal,
    seq: Sequence | None = None,
    *,
    fov=None,
    matrix=None,
    trajectory: str = "auto",
    coil_combine: str | None = "auto",
    sensitivities=None,
    partial_fourier: str = "zero",
    ghost_correction: bool = True,
    dcf=None,
    slice_thickness: float | None = None,
    b0: float | None = None,
) -> Image:
    """Reconstruct an image from a simulated (or measured) signal.

    Cartesian data (2D single/multi-slice, 3D, EPI with ramp sampling and reversed
    lines, partial Fourier) is reconstructed by FFT after placing each readout line on
    the grid ``Δk = 1/FOV``; readouts that are not on the grid (ramp sampling,
    oversampling) are regridded line by line by a non-uniform DFT with trapezoidal
    density weights. Other trajectories (radial, spiral) use a Kaiser–Bessel NUFFT with
    Pipe–Menon density compensation. The result is differentiable with respect to
    ``sig.samples``.

    Args:
        sig: the `Signal` (``samples`` (n_coils, n_adc), ``kspace`` (n_adc, 3) [1/m]).
        seq: the `Sequence` that produced it: gives labels (slices, echoes, ...),
            slice positions, FOV, TE/TR/flip. Optional for a single 2D/3D image whose
            trajectory is in ``sig.kspace``.
        fov: field of view [m], a number or (3,) along x, y, z; default: the sequence's
            ``FOV`` definition, else ``1/Δk`` from the trajectory (Cartesian only).
        matrix: image matrix, an int or (3,) along x, y, z (entries for non-encoded
            axes are ignored); default: the sequence's ``MatrixSize`` definition, else
            from the k-space extent.
        trajectory: ``"auto"``, ``"cartesian"`` or ``"noncartesian"``.
        coil_combine: ``"auto"`` (``"rss"`` for several coils), ``"rss"``,
            ``"sensitivity"`` (with ``sensitivities`` or maps estimated from the data),
            or ``None`` to keep a trailing ``"coil"`` axis.
        sensitivities: (n_coils, *spatial) complex coil maps on the image grid.
        partial_fourier: ``"zero"`` (zero-fill), ``"homodyne"`` or ``"pocs"``, applied
            along a phase-encoding axis whose sampling is asymmetric.
        ghost_correction: use NAV/REF lines (if any) to remove the odd/even phase
            difference of EPI readouts.
        dcf: optional (n_adc,) density compensation for non-Cartesian data [Δk^d units].
        slice_thickness: [m] for 2D; default: ``SliceThickness`` definition, else
            estimated from the excitation pulse and slice gradient.
        b0: main field [T] recorded in the image metadata.

    Returns:
        An `Image` with ``data`` shaped ``(nx, ny[, nz], *extra)``.

    Raises:
        ValueError: missing trajectory, too few encoded axes, an unknown option, a
            non-Cartesian trajectory without a FOV, inconsistent readout directions.
        NotImplementedError: homodyne along more than one axis.

    Example:
        >>> import numpy as np, mritwin as mt
        >>> from mritwin.recon import reconstruct
        >>> n, fov, dk = 16, 0.2, 1 / 0.2
        >>> gx = mt.make_trapezoid("x", flat_area=n * dk, flat_time=n * 20e-6)
        >>> adc = mt.make_adc(n, dwell=20e-6, delay=gx.rise_time)
        >>> pre = mt.make_trapezoid("x", area=-gx.area * mt.GAMMA_BAR / 2, duration=1e-3)
        >>> blocks = []
        >>> for i in range(n):
        ...     gy = mt.make_trapezoid("y", area=(i - n // 2) * dk, duration=1e-3)
        ...     blocks += [mt.Block(mt.make_block_pulse(np.pi / 2, 2e-4)), mt.Block(gx=pre, gy=gy),
        ...                mt.Block(gx=gx, adc=adc), mt.Block(duration=5.0)]
        >>> seq = mt.Sequence(blocks, {"FOV": [fov, fov, 5e-3]})
        >>> twin = mt.Twin(position=[[0.05, -0.025, 0.0]], pd=[1.0], t1=[0.3], t2=[0.3])
        >>> img = reconstruct(mt.simulate(twin, seq), seq)
        >>> peak = np.unravel_index(np.argmax(np.abs(img.data)), img.shape)
        >>> img.world(peak)[:2].round(3).tolist()  # [mm]: where the spin is
        [50.0, -25.0]
    """
    if not isinstance(sig, Signal):
        raise TypeError(f"sig must be a mritwin.Signal, got {type(sig).__name__}")
    if seq is not None and not isinstance(seq, Sequence):
        raise TypeError(f"seq must be a mritwin.Sequence or None, got {type(seq).__name__}")
    if trajectory not in ("auto", "cartesian", "noncartesian"):
        raise ValueError(f"trajectory must be 'auto', 'cartesian' or 'noncartesian', got {trajectory!r}")
    if partial_fourier not in ("zero", "homodyne", "pocs"):
        raise ValueError(f"partial_fourier must be 'zero', 'homodyne' or 'pocs', got {partial_fourier!r}")
    if coil_combine not in ("auto", "rss", "sensitivity", None):
        raise ValueError(f"coil_combine must be 'auto', 'rss', 'sensitivity' or None, got {coil_combine!r}")
    samples = sig.samples
    xp = backend(samples)
    samples = xp.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"sig.samples must have shape (n_coils, n_adc), got {samples.shape}")
    n_adc = samples.shape[1]
    if n_adc == 0:
        raise ValueError("the signal has no samples: nothing to reconstruct")
    if not xp.iscomplexobj(samples):
        samples = samples.astype(xp.complex64)
    if isinstance(sig.kspace, jax.core.Tracer):
        raise TypeError(
            "sig.kspace is traced (reconstruct under jax.jit, or a gradient through the trajectory): "
            "the trajectory must be concrete numbers; pass it in explicitly, e.g. "
            "eqx.tree_at(lambda s: s.kspace, sig, nominal_seq.kspace())"
        )
    k = np.asarray(sig.kspace, dtype=np.float64)
    if k.shape != (n_adc, 3) or not np.all(np.isfinite(k)):
        if seq is None:
            raise ValueError(
                "sig.kspace is missing or not finite: pass the sequence (reconstruct(sig, seq)) "
                "so the trajectory can be computed"
            )
        k = seq.kspace()
    info = acquisition_info(seq) if seq is not None else None
    hint = no_excitation_hint(seq) if seq is not None else None
    if hint is not None:
        warnings.warn(hint, stacklevel=2)
    if info is not None and info.adc_of_sample.size != n_adc:
        raise ValueError(
            f"the sequence has {info.adc_of_sample.size} ADC samples but the signal has {n_adc}"
        )
    adc = info.adc_of_sample if info is not None else _adc_from_signal(sig, k)
    n_events = int(adc.max()) + 1

    # ADC-level roles and grouping keys
    lab = info.labels if info is not None else {}
    used = info.labels_used if info is not None else set()

    def flag(name):
        return lab[name] != 0 if name in used else np.zeros(n_events, bool)

    is_ref = flag("NAV") | flag("REF")
    is_noise = flag("NOISE")
    imaging = ~(is_ref | is_noise)
    if not imaging.any():
        raise ValueError("no imaging ADC lines (all are NAV/REF/NOISE)")
    img_samples = imaging[adc]

    fov_arr = _as3(fov, "fov") if fov is not None else sequence_fov(seq)
    mat_arr = _as3(matrix, "matrix") if matrix is not None else sequence_matrix(seq)

    span = np.ptp(k[img_samples], axis=0)
    # an axis is encoded when its k span resolves something: at least ENC_MIN_SPAN (a step
    # of 1/FOV with a FOV under 1 m); smaller spans are residual moments, such as the
    # rounded slice-select refocusing of a file written with few digits
    enc = (span > 1e-6 * max(span.max(), 1e-30)) & (span >= min(ENC_MIN_SPAN, 0.5 * span.max()))
    if enc.sum() < 2:
        raise ValueError(
            f"k-space varies along {int(enc.sum())} axis (need 2 for 2D or 3 for 3D imaging): "
            "is there a readout gradient and phase encoding?"
        )
    enc_axes = [a for a in range(3) if enc[a]]
    slice_axis = None if len(enc_axes) == 3 else [a for a in range(3) if not enc[a]][0]

    # slice grouping (2D) and extra dimensions
    slice_pos, slice_of_adc = _slices(info, n_events, slice_axis, used)
    extra_keys, extra_names, extra_sizes = _extra(lab, used, n_events, slab=slice_axis is None)

    cart = _cartesian_check(k, adc, img_samples, enc_axes, fov_arr) if trajectory != "noncartesian" else None
    if trajectory == "cartesian" and cart is None:
        raise ValueError("trajectory='cartesian' but the k-space samples are not on a Cartesian grid")

    meta = _metadata(info, seq, b0)
    if cart is not None:
        data, spatial_n, vox, pe_offsets = _recon_cartesian(
            samples, k, adc, imaging, is_ref, enc_axes, slice_axis, slice_of_adc, len(slice_pos),
            extra_keys, extra_sizes, cart, fov_arr, mat_arr, partial_fourier, ghost_correction)
        method = "cartesian"
    else:
        data, spatial_n, vox = _recon_noncartesian(
            samples, k, adc, imaging, enc_axes, slice_axis, slice_of_adc, len(slice_pos),
            extra_keys, extra_sizes, fov_arr, mat_arr, dcf)
        method = "nufft"

    # geometry
    thickness = None
    if slice_axis is not None:
        thickness = _slice_thickness(slice_thickness, info, seq, slice_axis, fov_arr, vox, enc_axes)
        vox = list(vox)
        if not np.all(np.isfinite(slice_pos)):
            warnings.warn("slice positions are unknown (SLC labels without distinct RF frequency offsets): "
                          "slices are placed side by side, one thickness apart, centred on 0", stacklevel=2)
            slice_pos = (np.arange(len(slice_pos)) - (len(slice_pos) - 1) / 2) * thickness
        if len(slice_pos) > 1:
            d = np.diff(slice_pos)
            spacing = float(np.median(d))
            if np.ptp(d) > 1e-3 * abs(spacing):
                warnings.warn("slices are not equally spaced: the affine uses their median spacing",
                              stacklevel=2)
            vox[slice_axis] = spacing
        else:
            vox[slice_axis] = thickness
    affine = np.eye(4)
    for a in range(3):
        affine[a, a] = vox[a] * 1000.0
        if slice_axis is not None and a == slice_axis:
            affine[a, 3] = slice_pos[0] * 1000.0
        else:
            affine[a, 3] = -(spatial_n[a] // 2) * vox[a] * 1000.0

    # coils
    n_coils = samples.shape[0]
    n_sp = 3
    combine = ("rss" if n_coils > 1 else None) if coil_combine == "auto" else coil_combine
    if combine == "rss":
        data = combine_rss(data, axis=0)
    elif combine == "sensitivity":
        maps = sensitivities
        if maps is None:
            maps = estimate_sensitivities(data, n_sp)
        else:
            maps = xp.asarray(maps)
            if maps.ndim == 3 and slice_axis == 2:  # 2D maps for one slice
                maps = maps[..., None]
            if maps.shape[1:] != tuple(spatial_n):
                raise ValueError(
                    f"sensitivities must have shape (n_coils, {', '.join(map(str, spatial_n))}), "
                    f"got {tuple(maps.shape)}"
                )
        data = combine_sensitivity(data, maps, axis=0)
    elif combine is None:
        if n_coils == 1 and coil_combine == "auto":
            data = data[0]
        else:
            data = xp.moveaxis(data, 0, -1)
            extra_names = extra_names + ["coil"]
    # drop a single-slice z axis (2D image)
    dims = ["x", "y", "z"] + extra_names
    if slice_axis == 2 and len(slice_pos) == 1:
        data = data[:, :, 0]
        dims = ["x", "y"] + extra_names
    desc = f"{method} reconstruction; partial Fourier: {partial_fourier}" + (
        f"; coils: {combine}" if n_coils > 1 else "")
    return Image(data=jnp.asarray(data), affine=affine, dims=tuple(dims), te=meta["te"], tr=meta["tr"],
                 flip_angle=meta["flip"], b0=meta["b0"],
                 slice_thickness=thickness, description=desc)


# --------------------------------------------------------------------------- helpers
def _as3(v, name):
    a = np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel()
    if a.size == 1:
        a = np.repeat(a, 3)
    elif a.size == 2:
        a = np.concatenate([a, [np.nan]])
    if a.size != 3:
        raise ValueError(f"{name} must be a number or 2 or 3 numbers (x, y[, z]), got {v!r}")
    if np.any(np.isfinite(a) & (a <= 0)):
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return a


def _adc_from_signal(sig, k):
    """ADC events guessed without the sequence: breaks at k-space jumps and time gaps."""
    n = k.shape[0]
    if n < 3:
        return np.zeros(n, np.int64)
    step = np.linalg.norm(np.diff(k, axis=0), axis=1)
    brk = step > 3.0 * max(float(np.median(step)), 1e-12)
    t = np.asarray(sig.time)
    if t.shape == (n,) and t.dtype == np.float64:  # float32 times are too coarse for long runs
        dt = np.diff(t)
        brk |= dt > 1.5 * np.median(dt)
    return np.concatenate([[0], np.cumsum(brk)]).astype(np.int64)


def _slices(info: AcqInfo | None, n_events, slice_axis, used):
    """Slice position [m] (sorted) and slice index of every ADC."""
    if slice_axis is None or info is None:
        return np.zeros(1), np.zeros(n_events, np.int64)
    g = info.slice_grad[:, slice_axis]
    pos = np.where(np.abs(g) > 0, info.slice_freq / (GAMMA_BAR * np.where(g == 0, 1, g)), 0.0)
    if "SLC" in used:
        key = info.labels["SLC"]
        uniq = np.unique(key)
        p = np.array([pos[key == u][0] for u in uniq])
        if np.unique(np.round(p, 9)).size < uniq.size:
            # SLC labels but no distinct RF offsets: positions unknown (NaN), set from the thickness
            p = np.full(uniq.size, np.nan)
        order = np.argsort(p, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        lut = dict(zip(uniq.tolist(), rank.tolist(), strict=False))
        return p[order], np.array([lut[v] for v in key.tolist()], np.int64)
    r = np.round(pos, 9)
    uniq = np.unique(r)
    return uniq, np.searchsorted(uniq, r).astype(np.int64)


def _extra(lab, used, n_events, slab=False):
    keys = []
    names = []
    sizes = []
    for nm in (("SLC",) if slab else ()) + _EXTRA:
        if nm in used:
            v = lab[nm]
            u = np.unique(v)
            if u.size > 1:
                keys.append(np.searchsorted(u, v))
                names.append(_EXTRA_NAMES[nm])
                sizes.append(u.size)
    if keys:
        flat = np.ravel_multi_index(tuple(keys), tuple(sizes))
    else:
        flat = np.zeros(n_events, np.int64)
    return flat.astype(np.int64), names, sizes


def _metadata(info, seq, b0):
    out = {"te": None, "tr": None, "flip": None, "b0": b0}
    if info is not None:
        out.update(te=info.te, tr=info.tr, flip=info.flip_angle)
        if b0 is None and seq is not None:
            v = seq.definitions.get("B0")
            if v is not None:
                out["b0"] = float(np.atleast_1d(np.asarray(v, float))[0])
    return out


def _slice_thickness(arg, info, seq, axis, fov_arr, vox, enc_axes):
    if arg is not None:
        return float(arg)
    if seq is not None and "SliceThickness" in seq.definitions:
        v = float(np.atleast_1d(np.asarray(seq.definitions["SliceThickness"], float))[0])
        return v / 1000.0 if v > 1 else v
    if info is not None:
        th = info.rf_thickness[np.isfinite(info.rf_thickness)]
        if th.size:
            return float(np.median(th))
    if fov_arr is not None and np.isfinite(fov_arr[axis]):
        return float(fov_arr[axis])
    return float(np.mean([vox[a] for a in enc_axes]))


# --------------------------------------------------------------------------- Cartesian
def _dk_readout(ks, a_s, ro):
    """Readout Δk: the sample spacing inside the ADCs (median), robust to lines whose
    k positions differ by less than a sample (odd and even echoes, rounding)."""
    steps = []
    for e in np.unique(a_s)[:256]:
        v = ks[a_s == e, ro]
        if v.size > 1:
            steps.append(np.median(np.abs(np.diff(v))))
    steps = np.asarray(steps)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


def _dk_from_traj(vals):
    u = np.unique(np.round(vals, 6))
    if u.size < 2:
        return None
    d = np.diff(u)
    d = d[d > 1e-4 * np.ptp(u)]
    return float(np.median(d)) if d.size else None


def _cartesian_check(k, adc, img, enc_axes, fov_arr):
    """Readout axis, Δk per axis and phase-grid offsets if the data is Cartesian, else None."""
    ks = k[img]
    a_s = adc[img]
    # readout axis: the encoded axis with the largest span inside an ADC (majority vote)
    votes = np.zeros(3)
    for e in np.unique(a_s)[:64]:
        sel = ks[a_s == e]
        spans = np.ptp(sel, axis=0)
        votes[int(np.argmax(spans))] += 1
    ro = int(np.argmax(votes))
    if ro not in enc_axes:
        return None
    pe = [a for a in enc_axes if a != ro]
    dk = np.zeros(3)
    for a in enc_axes:
        if fov_arr is not None and np.isfinite(fov_arr[a]):
            dk[a] = 1.0 / fov_arr[a]
        else:
            v = _dk_readout(ks, a_s, ro) if a == ro else _dk_from_traj(ks[:, a])
            if v is None:
                return None
            dk[a] = v
    offsets = {}
    ongrid = np.ones(ks.shape[0], bool)
    for a in pe:
        u = ks[:, a] / dk[a]
        delta = float(np.angle(np.mean(np.exp(2j * np.pi * u))) / (2 * np.pi))
        if abs(delta) < 1e-6:
            delta = 0.0
        r = u - delta
        ongrid &= np.abs(r - np.round(r)) < 0.1
        offsets[a] = delta
    if ongrid.mean() < 0.5:
        return None
    # runs of identical phase indices inside ADCs must be long (Cartesian lines)
    idx = np.stack([np.round(ks[:, a] / dk[a] - offsets[a]) for a in pe], 1) if pe else np.zeros((ks.shape[0], 0))
    change = np.ones(ks.shape[0], bool)
    change[1:] = np.any(idx[1:] != idx[:-1], axis=1) | (a_s[1:] != a_s[:-1])
    n_runs = change.sum()
    if ks.shape[0] / n_runs < 4:
        return None
    return {"ro": ro, "pe": pe, "dk": dk, "offsets": offsets}


def _readout_size(lines, u):
    """Readout matrix from the k extent of the evenly spaced (flat-top) samples of the lines."""
    umax = 0.0
    seen = set()
    for sidx, _ in lines:
        v = u[sidx]
        key = (round(float(v[0]), 3), round(float(v[-1]), 3), v.size)
        if key in seen:
            continue
        seen.add(key)
        if v.size < 3:
            umax = max(umax, float(np.abs(v).max()))
            continue
        d = np.abs(np.diff(v))
        med = np.median(d)
        ok = np.abs(d - med) <= 1e-3 * med  # steps at the flat-top spacing
        flat = np.zeros(v.size, bool)
        flat[:-1] |= ok
        flat[1:] |= ok
        umax = max(umax, float(np.abs(v[flat]).max()))
    # a tenth of a sample of slack: lines shifted by a fraction of a sample (odd and even
    # echoes, rounded gradient areas) do not add two columns
    return max(2, 2 * int(math.ceil(umax - 0.1)))


def _readout_matrix(u, n):
    """(n_s, n) non-uniform DFT along the readout: Voronoi weights, 1/n scaling."""
    order = np.argsort(u)
    us = u[order]
    w_sorted = np.zeros_like(us)
    if us.size > 1:
        mid = 0.5 * (us[1:] + us[:-1])
        lo = np.concatenate([[us[0] - (mid[0] - us[0])], mid])
        hi = np.concatenate([mid, [us[-1] + (us[-1] - mid[-1])]])
        # clip cells to the grid's k range [-n/2, n/2]
        lo = np.clip(lo, -n / 2, n / 2)
        hi = np.clip(hi, -n / 2, n / 2)
        w_sorted = np.clip(hi - lo, 0, None)
    else:
        w_sorted[:] = 1.0
    w = np.empty_like(w_sorted)
    w[order] = w_sorted
    x = np.arange(n) - n // 2
    return w[:, None] * np.exp(2j * np.pi * u[:, None] * x[None, :] / n) / n


def _recon_cartesian(samples, k, adc, imaging, is_ref, enc_axes, slice_axis, slice_of_adc, n_slices,
                     extra_keys, extra_sizes, cart, fov_arr, mat_arr, pf_method, ghost):
    ro, pe, dk, offsets = cart["ro"], cart["pe"], cart["dk"], cart["offsets"]
    xp = backend(samples)
    n_coils = samples.shape[0]
    keep_img = imaging[adc]
    u_all = k / np.where(dk > 0, dk, 1.0)
    # matrix
    nsz = [1, 1, 1]
    for a in enc_axes:
        if mat_arr is not None and np.isfinite(mat_arr[a]):
            nsz[a] = int(mat_arr[a])
        elif a == ro:
            nsz[a] = -1  # from the readout lines below
        else:
            i = np.round(u_all[keep_img, a] - offsets[a])
            nsz[a] = max(2, int(max(-2 * i.min(), 2 * (i.max() + 1))))
    if slice_axis is not None:
        nsz[slice_axis] = n_slices
    vox = [0.0, 0.0, 0.0]
    for a in enc_axes:
        vox[a] = 1.0 / (dk[a] * nsz[a])

    def lines_of(sample_mask):
        """Runs of consecutive samples with the same ADC and phase indices."""
        sidx = np.nonzero(sample_mask)[0]
        if sidx.size == 0:
            return []
        pidx = np.stack([np.round(u_all[sidx, a] - offsets[a]) for a in pe], 1) if pe else np.zeros((sidx.size, 0))
        off = np.stack([np.abs(u_all[sidx, a] - offsets[a] - pidx[:, j]) for j, a in enumerate(pe)], 1) \
            if pe else np.zeros((sidx.size, 0))
        good = np.all(off < 0.1, axis=1)
        sidx, pidx = sidx[good], pidx[good]
        brk = np.ones(sidx.size, bool)
        brk[1:] = (np.any(pidx[1:] != pidx[:-1], axis=1) | (adc[sidx[1:]] != adc[sidx[:-1]])
                   | (sidx[1:] != sidx[:-1] + 1))
        starts = np.nonzero(brk)[0]
        ends = np.concatenate([starts[1:], [sidx.size]])
        out = []
        for s, e in zip(starts, ends, strict=False):
            if e - s >= 2:
                out.append((sidx[s:e], pidx[s].astype(int)))
        return out

    def profiles(lines):
        """(n_coils, n_lines, N_ro) readout profiles (image space along the readout)."""
        n_ro = nsz[ro]
        groups: dict = {}
        for li, (sidx, _) in enumerate(lines):
            key = tuple(np.round(u_all[sidx, ro], 4).tolist())
            groups.setdefault(key, []).append(li)
        out = xp.zeros((n_coils, len(lines), n_ro), samples.dtype)
        for key, lis in groups.items():
            mat = xp.asarray(_readout_matrix(np.asarray(key), n_ro), samples.dtype)
            sid = np.stack([lines[li][0] for li in lis])  # (n_l, n_s)
            block = samples[:, sid] @ mat  # (C, n_l, n_ro)
            out = set_at(xp, out, (slice(None), np.asarray(lis)), block)
        return out

    lines = lines_of(keep_img)
    if not lines:
        raise ValueError("no Cartesian readout lines found in the imaging ADCs")
    if nsz[ro] < 0:
        nsz[ro] = _readout_size(lines, u_all[:, ro])
        vox[ro] = 1.0 / (dk[ro] * nsz[ro])
    prof = profiles(lines)
    line_adc = np.array([adc[s[0]] for s, _ in lines])

    # EPI ghost correction from navigator / reference lines
    if ghost and is_ref.any():
        ref_lines = lines_of(is_ref[adc])
        if ref_lines:
            prof = _ghost_correct(prof, lines, ref_lines, profiles(ref_lines), u_all, ro, adc,
                                  slice_of_adc, nsz[ro])

    # scatter into (C, n_extra, Nx, Ny, Nz): readout in image space, phase axes in k-space
    n_extra = int(np.prod(extra_sizes)) if extra_sizes else 1
    shape = (n_extra, nsz[0], nsz[1], nsz[2])
    n_ro = nsz[ro]
    base = np.zeros((len(lines), 4), np.int64)
    base[:, 0] = extra_keys[line_adc]
    for j, a in enumerate(pe):
        base[:, 1 + a] = np.array([p[j] for _, p in lines]) + nsz[a] // 2
    if slice_axis is not None:
        base[:, 1 + slice_axis] = slice_of_adc[line_adc]
    valid = np.ones(len(lines), bool)
    for a in pe:
        valid &= (base[:, 1 + a] >= 0) & (base[:, 1 + a] < nsz[a])
    base, prof = base[valid], prof[:, np.nonzero(valid)[0]]
    cell = np.ravel_multi_index(tuple(base.T), shape)  # with readout index 0
    uniq, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    stride_ro = int(np.prod(shape[1 + ro + 1:]))
    idx = cell[:, None] + stride_ro * np.arange(n_ro)[None, :]
    flat = xp.zeros((n_coils, int(np.prod(shape))), samples.dtype)
    weight = (1.0 / counts[inv])[:, None]
    flat = add_columns(xp, flat, idx.reshape(-1),
                       (prof * xp.asarray(weight, xp.real(prof).dtype)[None]).reshape(n_coils, -1))
    h = flat.reshape((n_coils,) + shape)

    # phase axes: partial Fourier + centred inverse FFT + half-sample offsets
    sampled_cells = np.zeros(shape, bool)
    sampled_cells.reshape(-1)[uniq] = True
    pf_axes = []
    for a in pe:
        other = tuple(i for i in range(4) if i != 1 + a)
        s = sampled_cells.any(axis=other)
        h_, side, n = pf.symmetric_region(s)
        if not s.all() and (s.sum() > 0) and (h_ < 0.5 * n - 1):
            pf_axes.append((a, s))
    if pf_method != "zero" and len(pf_axes) > 1 and pf_method == "homodyne":
        raise NotImplementedError("homodyne partial Fourier along more than one axis is not implemented: "
                                  "use partial_fourier='pocs' or 'zero'")
    done = set()
    if pf_method in ("homodyne", "pocs") and pf_axes:
        a, s = pf_axes[0]
        ax = 2 + a  # (C, extra, x, y, z)
        h = pf.homodyne(h, s, ax) if pf_method == "homodyne" else pf.pocs(h, s, ax)
        done.add(a)
    for a in pe:
        ax = 2 + a
        if a not in done:
            h = pf.centred_ifft(h, ax)
        if offsets[a]:
            x = np.arange(nsz[a]) - nsz[a] // 2
            ramp = np.exp(2j * np.pi * offsets[a] * x / nsz[a])
            bs = [1] * 5
            bs[ax] = nsz[a]
            h = h * xp.asarray(ramp.reshape(bs), h.dtype)
    # (C, extra, x, y, z) -> (C, x, y, z, *extra)
    h = xp.moveaxis(h, 1, -1)
    h = h.reshape(h.shape[:4] + (tuple(extra_sizes) if extra_sizes else ()))
    return h, nsz, vox, offsets


def _ghost_correct(prof, lines, ref_lines, ref_prof, u_all, ro, adc, slice_of_adc, n_ro):
    """Remove the constant + linear phase difference between reversed and forward readouts."""
    def direction(lns):
        return np.array([np.sign(u_all[s[-1], ro] - u_all[s[0], ro]) for s, _ in lns])

    rdir = direction(ref_lines)
    if not ((rdir > 0).any() and (rdir < 0).any()):
        return prof
    x = np.arange(n_ro) - n_ro // 2
    ldir = direction(lines)
    r_slice = np.array([slice_of_adc[adc[s[0]]] for s, _ in ref_lines])
    l_slice = np.array([slice_of_adc[adc[s[0]]] for s, _ in lines])
    xp = backend(prof, ref_prof)
    rows_all = []
    phases = []
    for sl in np.unique(l_slice):
        sel = r_slice == sl
        if not ((rdir[sel] > 0).any() and (rdir[sel] < 0).any()):
            sel = np.ones_like(r_slice, bool)
        fwd = ref_prof[:, np.nonzero(sel & (rdir > 0))[0]].mean(1)
        rev = ref_prof[:, np.nonzero(sel & (rdir < 0))[0]].mean(1)
        cross = (rev * xp.conj(fwd)).sum(0)  # (n_ro,), weighted by the signal
        # linear term from the phase of neighbour products, then the constant
        slope = xp.angle(xp.sum(cross[1:] * xp.conj(cross[:-1])))
        c0 = xp.angle(xp.sum(cross * xp.exp(-1j * slope * x)))
        rows = np.nonzero((l_slice == sl) & (ldir < 0))[0]
        if rows.size:
            rows_all.append(rows)
            phases.append(xp.exp(-1j * (c0 + slope * x)))
    if not rows_all:
        return prof
    corr = xp.ones((len(lines), n_ro), prof.dtype)
    for rows, ph in zip(rows_all, phases, strict=True):
        corr = set_at(xp, corr, rows, xp.broadcast_to(ph.astype(prof.dtype), (rows.size, n_ro)))
    return prof * corr[None]


# --------------------------------------------------------------------------- NUFFT
def _recon_noncartesian(samples, k, adc, imaging, enc_axes, slice_axis, slice_of_adc, n_slices,
                        extra_keys, extra_sizes, fov_arr, mat_arr, dcf):
    if fov_arr is None or not all(np.isfinite(fov_arr[a]) for a in enc_axes):
        raise ValueError("non-Cartesian reconstruction needs the field of view: pass fov=... [m] "
                         "or give the sequence a FOV definition")
    n_coils = samples.shape[0]
    kn = k[:, enc_axes] * fov_arr[enc_axes][None, :]
    nsz = [1, 1, 1]
    for j, a in enumerate(enc_axes):
        if mat_arr is not None and np.isfinite(mat_arr[a]):
            nsz[a] = int(mat_arr[a])
        else:
            nsz[a] = max(2, 2 * int(math.ceil(np.abs(kn[imaging[adc], j]).max() - 1e-6)))
    shape = tuple(nsz[a] for a in enc_axes)
    inside = np.all(np.abs(kn) < np.array(shape)[None, :] / 2, axis=1)
    keep = imaging[adc] & inside
    if dcf is not None:
        dcf = np.asarray(dcf, dtype=np.float64)
        if dcf.shape != (k.shape[0],):
            raise ValueError(f"dcf must have shape (n_adc,) = ({k.shape[0]},), got {dcf.shape}")
    if slice_axis is not None:
        nsz[slice_axis] = n_slices
    n_extra = int(np.prod(extra_sizes)) if extra_sizes else 1
    xp = backend(samples)
    out = xp.zeros((n_coils, n_extra, nsz[0], nsz[1], nsz[2]), samples.dtype)
    slice_key = slice_of_adc[adc] if slice_axis is not None else np.zeros(adc.size, np.int64)
    ex_key = extra_keys[adc]
    for e in range(n_extra):
        for s in range(n_slices if slice_axis is not None else 1):
            sel = np.nonzero(keep & (ex_key == e) & (slice_key == s))[0]
            if sel.size == 0:
                continue
            w = dcf[sel] if dcf is not None else pipe_dcf(kn[sel], shape)
            vals = samples[:, sel] * xp.asarray(w, xp.real(samples).dtype)[None]
            img = nufft_adjoint(vals, kn[sel], shape)  # (C, *shape)
            if slice_axis is None:
                out = set_at(xp, out, (slice(None), e), img)
            else:
                img = xp.expand_dims(img, 1 + slice_axis)
                index = [slice(None)] * 3
                index[slice_axis] = slice(s, s + 1)
                out = set_at(xp, out, (slice(None), e) + tuple(index), img)
    vox = [0.0, 0.0, 0.0]
    for a in enc_axes:
        vox[a] = fov_arr[a] / nsz[a]
    h = xp.moveaxis(out, 1, -1)
    h = h.reshape(h.shape[:4] + (tuple(extra_sizes) if extra_sizes else ()))
    return h, nsz, vox
