"""Inspect a `Sequence`: TE/TR estimates measured from its events, and a summary.

The definitions follow `mritwin.sequence.timing`: TE is the time from the centre of an
excitation pulse to the ADC sample at the k-space centre (smallest ``|k|``) after it;
TR is the time between the centres of consecutive excitation pulses. Unlike
`timing.excitation_centres`, pulses of files that do not store the RF use (Pulseq
< 1.5, ``use="undefined"``) are classified by flip angle as the k-space calculation
does (below 90.01° excitation, as the Pulseq toolboxes detect it), so estimates exist
for old files too.
"""

from __future__ import annotations

import numpy as np

from .kspace import rf_roles
from .sequence import Sequence

__all__ = ["estimate_te_tr", "summary"]


def _excitation_centres(seq: Sequence) -> np.ndarray:
    starts = seq.block_starts()
    pulses = [(i, b.rf) for i, b in enumerate(seq.blocks) if b.rf is not None]
    if not pulses:
        return np.zeros(0)
    roles = rf_roles(pulses)
    return np.asarray([starts[i] + rf.delay + rf.center for (i, rf), r in zip(pulses, roles)
                       if r == 0], dtype=np.float64)


def estimate_te_tr(seq: Sequence, *, tol: float = 0.5) -> dict:
    """Echo and repetition times measured from the events, where they exist.

    Args:
        seq: the sequence.
        tol: largest ``|k|`` [1/m] of a sample that counts as the k-space centre; when
            no sample of an excitation comes that close (e.g. a partial-Fourier or
            off-centre readout), no echo is counted for it.

    Returns:
        dict with ``te`` [s] (median first echo time per excitation, or None),
        ``echo_times`` [s] (sorted distinct echo times after an excitation, rounded to
        1 µs, at most 16), ``tr`` [s] (median interval between excitation centres, or
        None with fewer than two excitations) and ``n_excitations``.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence.inspect import estimate_te_tr
        >>> estimate_te_tr(mt.read_seq("gre.seq"))["tr"]  # doctest: +SKIP
        0.012
    """
    exc = _excitation_centres(seq)
    out = {"te": None, "echo_times": [], "tr": None, "n_excitations": int(exc.size)}
    if exc.size >= 2:
        out["tr"] = float(np.median(np.diff(exc)))
    if exc.size == 0 or seq.n_adc_samples == 0:
        return out
    k = np.asarray(seq.kspace())
    t = seq.adc_times()
    r = np.linalg.norm(k, axis=1)
    # per ADC event: the sample closest to the k-space centre
    firsts, counts = [], []
    n0 = 0
    for b in seq.blocks:
        if b.adc is not None:
            firsts.append(n0)
            counts.append(b.adc.num_samples)
            n0 += b.adc.num_samples
    firsts = np.asarray(firsts)
    counts = np.asarray(counts)
    event = np.repeat(np.arange(firsts.size), counts)
    order = np.lexsort((r, event))  # per event, samples by |k|
    best = order[np.searchsorted(event[order], np.arange(firsts.size))]
    # a readout that misses k = 0 by half a sample still crosses the centre: accept
    # samples within one sample spacing (or ``tol``) of it
    dk = np.linalg.norm(np.diff(k, axis=0), axis=1)
    same = event[1:] == event[:-1]
    spacing = float(np.median(dk[same])) if np.any(same) else 0.0
    best = best[r[best] <= max(tol, spacing)]
    if best.size == 0:
        return out
    tc = t[best].copy()
    # refine to the time the readout passes closest to k = 0 (linear in k between samples)
    nxt = np.minimum(best + 1, t.size - 1)
    inner = (nxt > best) & (event[nxt] == event[best])
    v = k[nxt] - k[best]
    vv = np.einsum("ij,ij->i", v, v)
    frac = np.where(inner & (vv > 0), -np.einsum("ij,ij->i", k[best], v) / np.where(vv > 0, vv, 1), 0.0)
    frac = np.clip(frac, -1.0, 1.0)
    tc = tc + frac * (t[nxt] - t[best])
    j = np.searchsorted(exc, tc, side="right") - 1
    ok = j >= 0
    te = tc[ok] - exc[j[ok]]
    if te.size == 0:
        return out
    jj = j[ok]
    first_per_exc = te[np.r_[True, jj[1:] != jj[:-1]]]
    out["te"] = float(np.median(first_per_exc))
    out["echo_times"] = sorted(set(np.round(te, 6).tolist()))[:16]
    return out


def summary(seq: Sequence) -> dict:
    """A dict of the numbers `mritwin seq-info` prints (SI units)."""
    s = {
        "duration": float(seq.duration),
        "n_blocks": int(seq.n_blocks),
        "n_adc_samples": int(seq.n_adc_samples),
        "n_adc_events": int(seq.n_adc_events),
        "n_rf": int(seq.n_rf),
    }
    s.update(estimate_te_tr(seq))
    s["definitions"] = dict(seq.definitions)
    return s
