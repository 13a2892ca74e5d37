"""k-space trajectory of a sequence at its ADC samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..constants import GAMMA_BAR
from .timeline import adc_table, gradient_moments, gradient_table, rf_table

__all__ = ["kspace_at_adc", "rf_roles", "undefined_rf_use", "UNDEFINED_REFOCUS_DEG"]

_EXCITE, _REFOCUS, _NONE = 0, 1, 2
UNDEFINED_REFOCUS_DEG = 90.01
"""Flip angle [deg] from which a pulse of undefined use counts as refocusing (the Pulseq
toolboxes' threshold: 90° plus 0.01° for the rounding of very short pulses)."""


def undefined_rf_use(rf, threshold_deg: float = UNDEFINED_REFOCUS_DEG) -> str:
    """``"refocusing"`` for a pulse of nominal flip angle at least ``threshold_deg``, else
    ``"excitation"`` (traced values: excitation): what a pulse of undefined use is for."""
    traced = any(isinstance(v, jax.core.Tracer) for v in (rf.amplitude, rf.shape, rf.phase_offset))
    flip = 0.0 if traced else rf.flip_angle()
    return "refocusing" if np.degrees(flip) >= threshold_deg else "excitation"


def rf_roles(pulses) -> list[int]:
    """Role of each pulse for k-space: 0 excitation (reset), 1 refocusing (negate), 2 none.

    ``use`` decides. ``"undefined"`` pulses (every pulse of a Pulseq file older than
    1.5) are classified by nominal flip angle as the Pulseq toolboxes' RF-use detection
    does (MATLAB's and pypulseq's ``detectRFuse``): below `UNDEFINED_REFOCUS_DEG`
    (90.01°) excitation, otherwise refocusing. Inversion, saturation, preparation and
    ``"other"`` pulses do not touch k-space (as in the toolboxes' k-space calculation).
    """
    roles = []
    for _, ev in pulses:
        use = ev.use
        if use == "undefined":
            use = undefined_rf_use(ev)
        roles.append({"excitation": _EXCITE, "refocusing": _REFOCUS}.get(use, _NONE))
    return roles


def kspace_at_adc(seq, gamma_bar: float = GAMMA_BAR) -> np.ndarray:
    """(n_adc_samples, 3) k-space positions [1/m] (see `Sequence.kspace`); JAX when traced."""
    adt = adc_table(seq, 0.0, gamma_bar)
    if adt.time.size == 0:
        return np.zeros((0, 3))
    rft = rf_table(seq, 0.0, gamma_bar)
    gt = gradient_table(seq)
    starts = seq.block_starts()
    centres = np.array([starts[b] + ev.delay + ev.center for b, ev in rft.pulses])
    roles = np.array(rf_roles(rft.pulses), dtype=int)
    keep = roles != _NONE
    centres, roles = centres[keep], roles[keep]
    # events in time order: RF centres and ADC samples; integrate between consecutive ones
    t = np.concatenate([centres, adt.time])
    what = np.concatenate([roles, np.full(adt.time.size, -1)])
    order = np.argsort(t, kind="stable")
    t, what = t[order], what[order]
    edges = np.concatenate([[0.0], t])
    moments = gradient_moments(gt, edges[:-1], edges[1:])
    xp = np if isinstance(moments, np.ndarray) else jnp
    moments = moments * gamma_bar
    cum = xp.cumsum(moments, axis=0)  # k without resets, after each event
    rf_pos = np.nonzero(what >= 0)[0]
    is_adc = what < 0
    pieces = []
    k_after = xp.zeros(3)  # k right after the previous RF event
    base = xp.zeros(3)  # cum value at that RF event
    prev = 0
    for p in list(rf_pos) + [t.size]:
        idx = np.arange(prev, p)[is_adc[prev:p]]
        if idx.size:
            pieces.append(k_after + (cum[idx] - base))
        if p < t.size:
            k_here = k_after + (cum[p] - base)
            k_after = xp.zeros(3) if what[p] == _EXCITE else -k_here
            base = cum[p]
        prev = p + 1
    return xp.concatenate(pieces, axis=0)
