"""What reconstruction needs to know about a sequence: labels, slices, TE/TR/flip, FOV.

Host-side NumPy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..constants import GAMMA_BAR
from ..sequence.events import ArbGrad, TrapGrad
from ..sequence.kspace import UNDEFINED_REFOCUS_DEG, rf_roles
from ..sequence.labels import adc_labels, labels_used, sample_adc_index
from ..sequence.sequence import Sequence

__all__ = ["AcqInfo", "acquisition_info", "sequence_fov", "sequence_matrix", "is_excitation"]


@dataclasses.dataclass
class AcqInfo:
    """Per-ADC and global acquisition facts (host side).

    Attributes:
        adc_of_sample: (n_adc_samples,) ADC event index of each sample.
        labels: {name: (n_adc_events,)} label values (see `adc_labels`).
        labels_used: names the sequence sets.
        slice_freq: (n_adc_events,) frequency offset of the last excitation [Hz].
        slice_grad: (n_adc_events, 3) gradient amplitudes in that excitation's block [T/m].
        rf_thickness: (n_adc_events,) slice thickness estimated from that pulse [m] (nan
            if not slice-selective).
        te, tr, flip_angle: [s], [s], [rad] or None.
    """

    adc_of_sample: np.ndarray
    labels: dict
    labels_used: set
    slice_freq: np.ndarray
    slice_grad: np.ndarray
    rf_thickness: np.ndarray
    te: float | tuple | None
    tr: float | None
    flip_angle: float | None
    definitions: dict


def is_excitation(rf) -> bool:
    """Whether an RF pulse excites (``use == "excitation"``, or undefined and below
    90.01°: `mritwin.sequence.kspace.rf_roles`)."""
    return rf_roles([(0, rf)])[0] == 0


def no_excitation_hint(seq: Sequence) -> str | None:
    """Why k-space is never reset, when a sequence with RF pulses has no excitation among
    them and some have undefined use (a file before Pulseq 1.5): None otherwise."""
    flips = []
    for block in seq.blocks:
        rf = block.rf
        if rf is None:
            continue
        if is_excitation(rf):
            return None
        if rf.use == "undefined":
            flips.append(np.degrees(rf.flip_angle()))
    if not flips:
        return None
    return (f"no RF pulse counts as an excitation, so k-space is integrated from the sequence "
            f"start: the {len(flips)} pulse(s) of undefined use (files before Pulseq 1.5) are "
            f"classified by flip angle as the Pulseq toolboxes do (excitation below "
            f"{UNDEFINED_REFOCUS_DEG} deg), and the smallest here is {min(flips):.3f} deg; "
            f"read the file with read_seq(path, refocusing_threshold_deg=135) if its 90 deg "
            f"pulses come out a little above 90")


def _grad_amp(g) -> float:
    if g is None:
        return 0.0
    if isinstance(g, TrapGrad):
        return float(np.asarray(g.amplitude))
    if isinstance(g, ArbGrad):
        w = np.asarray(g.amplitude * g.shape)
        return float(w[np.argmax(np.abs(w))])
    return 0.0


def _rf_bandwidth(rf) -> float:
    """Full width at half maximum of the pulse spectrum [Hz] (small-tip approximation)."""
    edges = rf.sample_edges()
    w = np.diff(edges)
    sig = np.asarray(rf.signal) * w
    if sig.size < 2:
        return 1.0 / rf.shape_duration  # hard pulse: sinc, FWHM ≈ 1.2/T; slab edge
    dt = float(np.min(w))
    n_fft = 1 << int(np.ceil(np.log2(max(64, 16 * edges[-1] / dt))))
    t = 0.5 * (edges[1:] + edges[:-1])
    # resample onto a uniform grid (hold) and FFT
    tu = (np.arange(int(np.ceil(edges[-1] / dt))) + 0.5) * dt
    su = np.asarray(rf.signal)[np.clip(np.searchsorted(edges, tu) - 1, 0, sig.size - 1)]
    del t
    spec = np.abs(np.fft.fft(su, n_fft))
    spec = np.fft.fftshift(spec)
    f = np.fft.fftshift(np.fft.fftfreq(n_fft, dt))
    above = np.nonzero(spec >= 0.5 * spec.max())[0]
    return float(f[above.max()] - f[above.min()])


def sequence_fov(seq: Sequence | None) -> np.ndarray | None:
    """(3,) FOV [m] from the ``FOV`` definition (values > 1 are taken as mm), or None."""
    if seq is None:
        return None
    v = seq.definitions.get("FOV")
    if v is None:
        return None
    a = np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel()
    if a.size == 1:
        a = np.repeat(a, 3)
    if a.size < 3:
        a = np.concatenate([a, np.full(3 - a.size, np.nan)])
    a = a[:3]
    return np.where(a > 1.0, a / 1000.0, a)


def sequence_matrix(seq: Sequence | None) -> np.ndarray | None:
    """(3,) matrix from the ``MatrixSize`` definition (x, y, z), or None."""
    if seq is None or "MatrixSize" not in seq.definitions:
        return None
    a = np.atleast_1d(np.asarray(seq.definitions["MatrixSize"], dtype=np.float64)).ravel()
    if a.size == 2:
        a = np.concatenate([a, [np.nan]])
    if a.size != 3 or np.any(a[np.isfinite(a)] < 1):
        return None
    return a


def _definition_float(defs, *names):
    for n in names:
        if n in defs:
            v = np.atleast_1d(np.asarray(defs[n], dtype=np.float64)).ravel()
            if v.size:
                return v
    return None


def acquisition_info(seq: Sequence) -> AcqInfo:
    """Collect labels, slice excitation and timing facts of ``seq``."""
    starts = seq.block_starts()
    n_events = seq.n_adc_events
    slice_freq = np.zeros(n_events)
    slice_grad = np.zeros((n_events, 3))
    thick = np.full(n_events, np.nan)
    ex_times: list[float] = []
    first_flip = None
    cur = (0.0, np.zeros(3), np.nan)
    te_est = None
    i_adc = 0
    for b_i, block in enumerate(seq.blocks):
        rf = block.rf
        if rf is not None and is_excitation(rf):
            g = np.array([_grad_amp(block.gx), _grad_amp(block.gy), _grad_amp(block.gz)])
            gmag = np.abs(g).max()
            th = np.nan
            if gmag > 0:
                try:
                    th = _rf_bandwidth(rf) / (GAMMA_BAR * gmag)
                except Exception:
                    th = np.nan
            cur = (float(rf.freq_offset), g, th)
            ex_times.append(starts[b_i] + rf.delay + rf.center)
            if first_flip is None:
                try:
                    first_flip = rf.flip_angle()
                except Exception:
                    first_flip = None
        if block.adc is not None:
            slice_freq[i_adc], slice_grad[i_adc], thick[i_adc] = cur
            i_adc += 1
    defs = dict(seq.definitions)
    te = _definition_float(defs, "TE", "EchoTime")
    tr = _definition_float(defs, "TR", "RepetitionTime")
    flip = _definition_float(defs, "FlipAngle", "flip_angle")
    if te is None and ex_times:
        te_est = _estimate_te(seq, starts, ex_times[0])
    return AcqInfo(
        adc_of_sample=sample_adc_index(seq),
        labels=adc_labels(seq),
        labels_used=labels_used(seq),
        slice_freq=slice_freq,
        slice_grad=slice_grad,
        rf_thickness=thick,
        te=(float(te[0]) if te.size == 1 else tuple(float(t) for t in te)) if te is not None else te_est,
        tr=float(tr[0]) if tr is not None else (float(ex_times[1] - ex_times[0]) if len(ex_times) > 1 else None),
        flip_angle=float(flip[0]) if flip is not None else first_flip,  # [rad], as mritwin's builders write it
        definitions=defs,
    )


def _estimate_te(seq, starts, t_ex) -> float | None:
    """Time from the first excitation to the k-space centre of the ADC that follows it."""
    try:
        k = seq.kspace()
        t = seq.adc_times()
    except Exception:
        return None
    after = np.nonzero(t > t_ex)[0]
    if after.size == 0:
        return None
    adc = sample_adc_index(seq)
    first = adc[after[0]]
    sel = np.nonzero(adc == first)[0]
    j = sel[np.argmin(np.linalg.norm(k[sel], axis=1))]
    return float(t[j] - t_ex)
