"""k-space trajectory of a sequence at its ADC samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..constants import GAMMA_BAR
from .timeline import gradient_moments, gradient_table

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
    adc_time = seq.adc_times()
    if adc_time.size == 0:
        return np.zeros((0, 3))
    gt = gradient_table(seq)
    starts = seq.block_starts()
    pulses = [(i, b.rf) for i, b in enumerate(seq.blocks) if b.rf is not None]
    centres = np.array([starts[b] + ev.delay + ev.center for b, ev in pulses]).reshape(-1)
    roles = np.array(rf_roles(pulses), dtype=int)
    keep = roles != _NONE
    centres, roles = centres[keep], roles[keep]
    # events in time order: RF centres and ADC samples; integrate between consecutive ones
    t = np.concatenate([centres, adc_time])
    what = np.concatenate([roles, np.full(adc_time.size, -1)])
    order = np.argsort(t, kind="stable")
    t, what = t[order], what[order]
    edges = np.concatenate([[0.0], t])
    moments = gradient_moments(gt, edges[:-1], edges[1:])
    rf_pos = np.nonzero(what >= 0)[0]
    adc_pos = np.nonzero(what < 0)[0]
    seg = np.searchsorted(rf_pos, adc_pos)  # the RF events before each sample (0: none)
    sign = np.where(what[rf_pos] == _EXCITE, 0.0, -1.0)  # k after the RF event: 0 or -k before
    if isinstance(moments, np.ndarray):
        return _k_at_samples(np, moments * gamma_bar, sign, rf_pos, adc_pos, seg)
    return _traced_k_at_samples(moments, gamma_bar, sign, rf_pos, adc_pos, seg)


def _k_at_samples(xp, moments, sign, rf_pos, adc_pos, seg):
    """(n_samples, 3) k at the ADC events from the (n_events, 3) gradient moments between
    consecutive events [1/m]: k accumulates from the last RF event (at the events
    ``rf_pos``), where it is 0 after an excitation (``sign`` 0) and the negative of its
    value before a refocusing pulse (``sign`` -1): ``K_j = s_j (K_{j-1} + cum[p_j] -
    cum[p_{j-1}])``, a `jax.lax.scan` when traced. ``seg``: per sample at the events
    ``adc_pos``, the number of RF events before it."""
    cum = xp.cumsum(moments, axis=0)  # k without resets, after each event
    zero = xp.zeros((1, 3), cum.dtype)
    at_rf = cum[rf_pos]
    steps = at_rf - xp.concatenate([zero, at_rf])[:-1]
    if xp is np:
        after = np.zeros((rf_pos.size, 3))
        k = np.zeros(3)
        for j in range(rf_pos.size):
            k = after[j] = sign[j] * (k + steps[j])
    else:
        def one(k, x):
            k = x[0] * (k + x[1])
            return k, k

        after = jax.lax.scan(one, jnp.zeros(3, cum.dtype), (sign.astype(cum.dtype), steps))[1]
    after = xp.concatenate([zero, after])  # k right after each RF event (row 0: none yet)
    base = xp.concatenate([zero, at_rf])
    return after[seg] + cum[adc_pos] - base[seg]


@jax.jit
def _traced_k_at_samples(moments, gamma_bar, sign, rf_pos, adc_pos, seg):
    """`_k_at_samples` of traced moments in one jitted call (eager, its gathers and
    concatenations would each be a program of its own, and so would their transposes
    under `jax.grad`)."""
    return _k_at_samples(jnp, moments * gamma_bar, sign, rf_pos, adc_pos, seg)
