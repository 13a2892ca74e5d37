"""Held RF steps: a run of equal RF steps applied as one step, by repeated squaring.

A block pulse is one RF sample held, cut into equal steps of at most ``Bloch.max_rf_dt``
(10 us) so that relaxation during it stays accurate (`mritwin.sequence.discretize`). A
pulse played many times with the same shape is prepared once per chunk of spins
(`mritwin.simulate.prepared_rf`), but a pulse played once, such as each pulse of a
fingerprinting train with its own flip angle, would be stepped: 20 steps for a 200 us
hard pulse, each paying the engine loop's dispatch.

Every step of such a run is the same affine map of each spin's magnetization,
``M -> (I + D) M + PD u`` (`prepared_rf._step_map`: relax dt/2, rotate, relax dt/2), so
the run of ``n`` steps is that map's ``n``-th power, ``ceil(log2 n)`` squarings and at most
as many products of 3 x 3 affine maps per spin (`step_power`), then one application:
one engine step instead of ``n``. The maps are kept as their *changes* ``D`` and ``u`` (the
square of ``I + D`` is ``I + 2D + D²``), so that the small changes of a 10 us step keep
their relative precision. The result is that of stepping the run to float rounding; every
value stays differentiable (the power's exponent is part of the sequence's structure).

`plan_held_rf` finds the runs on the host (consecutive RF steps of the same duration, B1,
gradient moment and common phase, to the rounding of their integrals; with traced B1, steps
of one raster sample, ``DiscreteSequence.rf_sample``) and replaces each by one step of its
own kind with a row in a `HeldTable`. A prepared pulse that is one held run is prepared as
such a power too (`held_pulse_counts`, `prepare_held_pulse`). The engine's planning
(`engine._plan`) decides where each is used.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..sequence.discretize import DiscreteSequence, _bucket
from . import kernels
from .kernels import Spins, State
from .prepared_rf import STEP_FIELDS, _concrete, _match_tol, _step_map, shorten_steps

__all__ = ["HeldTable", "HELD_MIN_STEPS", "held_runs", "plan_held_rf", "step_power", "held_rf_step",
           "held_pulse_counts", "prepare_held_pulse"]

HELD_MIN_STEPS = 4  # shorter runs of equal steps are stepped (or fused: `fused_rf`)


class HeldTable(NamedTuple):
    """One row per held step (rows past the last are padding, ``n = 0``: the identity).

    Attributes:
        dt: (B,) duration of one of the run's equal steps [s].
        k: (B, 3) gradient moment of one step [1/m].
        b1dt: (B,) complex B1 integral of one step [cycles].
        c0: (B,) phase common to all spins in one step [cycles].
        n: (B,) int32, steps in the run.
    """

    dt: jax.Array
    k: jax.Array
    b1dt: jax.Array
    c0: jax.Array
    n: jax.Array


def held_runs(dseq: DiscreteSequence, min_steps: int = HELD_MIN_STEPS):
    """``(start, stop)`` arrays of the runs of at least ``min_steps`` consecutive RF steps
    that are equal (host side), or None when there are none or the sequence's structure,
    gradients or common phases are traced.

    Steps are equal when their durations, B1 integrals, gradient moments and common phases
    differ by no more than the rounding of integrals taken between absolute times
    (`prepared_rf._match_tol`, at most 1e-7 relative) plus 1e-10 of each field's largest
    value over the sequence (a moment of 1e-23 /m left by the rounding of a gradient
    integral is zero); a run takes no ADC sample, has no ideal spoiling after its first step and no
    diffusion weighting. Each step is compared with the run's first (not only with its
    neighbour), so a slow ramp does not count as held. B1 integrals that are traced (you
    differentiate with respect to the RF) are equal when the steps lie in the same RF
    sample (``dseq.rf_sample``, concrete) and last as long.
    """
    m = dseq.n_real_steps
    names = ("kind", "dt", "t", "kstep", "b1dt", "cyc0", "sample", "spoil", "bstep")
    f = {name: _concrete(getattr(dseq, name)) for name in names}
    same_sample = None
    if f["b1dt"] is None and _concrete(dseq.rf_sample) is not None:  # traced B1: by the samples
        sid = np.asarray(dseq.rf_sample)[:m]
        same_sample = (sid[1:] == sid[:-1]) & (sid[1:] >= 0)
        f["b1dt"] = np.zeros(m)
    if any(v is None for v in f.values()) or m < min_steps:
        return None
    f = {name: v[:m] for name, v in f.items()}
    kind, dt, kst, b1, cyc = f["kind"], f["dt"], f["kstep"], f["b1dt"], f["cyc0"]
    rf = (kind == 0) & ~f["sample"].astype(bool) & np.all(np.reshape(f["bstep"], (m, -1)) == 0, axis=1)
    if rf.sum() < min_steps:
        return None
    tol = _match_tol(f["t"], dt, kind)
    vals = (dt, b1, cyc, kst)
    scales = [max(float(np.abs(v).max(initial=0.0)), 1e-300) for v in vals]  # (over all steps)

    def close(v, w, sc):  # (per step; a moment is close when all three components are)
        ok = np.abs(v - w) <= 1e-10 * sc + tol * np.abs(w)
        return ok.all(axis=1) if ok.ndim > 1 else ok

    cont = np.zeros(m, bool)
    cont[1:] = rf[1:] & rf[:-1] & ~f["spoil"][1:].astype(bool)
    if same_sample is not None:
        cont[1:] &= same_sample
    for v, sc in zip(vals, scales):
        cont[1:] &= close(v[1:], v[:-1], sc)
    seg_a = np.nonzero(~cont)[0]
    seg_b = np.r_[seg_a[1:], m]
    long = (seg_b - seg_a >= min_steps) & rf[seg_a]
    seg_a, seg_b = seg_a[long], seg_b[long]
    if not seg_a.size:
        return None
    first = np.repeat(seg_a, seg_b - seg_a)  # each step of a segment with its first step
    steps = np.concatenate([np.arange(a, b) for a, b in zip(seg_a, seg_b)])
    ok = np.ones(steps.size, bool)
    for v, sc in zip(vals, scales):
        ok &= close(v[steps], v[first], sc)
    bad = np.unique(first[~ok])  # a slow drift: left to stepping (rare)
    keep = ~np.isin(seg_a, bad)
    if not keep.any():
        return None
    return seg_a[keep], seg_b[keep]


def plan_held_rf(dseq: DiscreteSequence, kind_id: int, min_steps: int = HELD_MIN_STEPS):
    """Replace each run of equal RF steps (`held_runs`) by one step of kind ``kind_id``
    (host side).

    Returns:
        ``(dseq, table)``: the sequence with each run as one step (``count`` = its row of
        the `HeldTable`, ``dt`` and ``kstep`` the run's totals, ``b1dt`` and ``cyc0`` zero),
        and the table, whose rows hold the run's mean step (the run's integrals over its
        count: exact, where the steps differ by the rounding of their bounds) and its
        count, padded to a length bucket; or ``(dseq, None)`` when no run qualifies or
        the sequence's structure is traced. Traced B1 integrals stay traced (the table's
        ``b1dt``, a JAX array then: gradients flow through the runs' sums).
    """
    runs = held_runs(dseq, min_steps)
    if runs is None:
        return dseq, None
    starts, stops = runs
    m = dseq.n_real_steps
    n_run = stops - starts
    fields = {name: np.asarray(getattr(dseq, name))[:m] for name in STEP_FIELDS if name != "b1dt"}
    b1 = dseq.b1dt
    fields["b1dt"] = np.asarray(b1)[:m] if _concrete(b1) is not None else jnp.asarray(b1)[:m]
    seg = np.repeat(np.arange(starts.size), n_run)
    steps = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])

    def total(v):
        if not isinstance(v, np.ndarray):  # (traced B1)
            return jnp.zeros((starts.size,) + v.shape[1:], v.dtype).at[seg].add(v[steps])
        out = np.zeros((starts.size,) + v.shape[1:], v.dtype)
        np.add.at(out, seg, v[steps])
        return out

    n_rows = _bucket(starts.size)

    def pad(v):
        xp = np if isinstance(v, np.ndarray) else jnp
        return xp.concatenate([v, xp.zeros((n_rows - v.shape[0],) + v.shape[1:], v.dtype)])

    per = n_run.astype(np.float64)
    table = HeldTable(dt=pad(total(fields["dt"]) / per), k=pad(total(fields["kstep"]) / per[:, None]),
                      b1dt=pad(total(fields["b1dt"]) / per), c0=pad(total(fields["cyc0"]) / per),
                      n=pad(n_run.astype(np.int32)))
    keep = np.ones(m, bool)
    keep[steps] = False
    keep[starts] = True
    new = {name: v.copy() if isinstance(v, np.ndarray) else v for name, v in fields.items()}
    new["kind"][starts] = kind_id
    new["count"][starts] = np.arange(starts.size)
    new["dt"][starts] = total(fields["dt"])
    new["kstep"][starts] = total(fields["kstep"])
    if isinstance(new["b1dt"], np.ndarray):
        new["b1dt"][starts] = 0
    else:
        new["b1dt"] = new["b1dt"].at[starts].set(0)
    new["cyc0"][starts] = 0
    return shorten_steps(dseq, keep, new), table


def _compose(p, q):
    """The affine map ``p`` after ``q``, both as changes ``(D, u)`` (``M -> (I + D) M + u``,
    D 3 x 3 nested tuples, u 3): ``D = D1 + D2 + D1 D2``, ``u = u1 + u2 + D1 u2``."""
    d1, u1 = p
    d2, u2 = q
    d = tuple(tuple(d1[i][j] + d2[i][j] + (d1[i][0] * d2[0][j] + d1[i][1] * d2[1][j] + d1[i][2] * d2[2][j])
                    for j in range(3)) for i in range(3))
    u = tuple(u1[i] + u2[i] + (d1[i][0] * u2[0] + d1[i][1] * u2[1] + d1[i][2] * u2[2]) for i in range(3))
    return d, u


def _power(rotation, spins: Spins, dt, k, b1dt, c0, n, n_bits: int, relax=None):
    base = _step_map(rotation, spins, dt, k, b1dt, c0, relax)
    result = None
    for i in range(n_bits):  # the bits of n, lowest first: result = base^(n mod 2^(i+1))
        bit = ((n >> i) & 1) == 1
        if isinstance(n, int):  # a count known when tracing: no selects
            if bit:
                result = base if result is None else _compose(base, result)
        elif result is None:
            result = jax.tree_util.tree_map(lambda b, bit=bit: jnp.where(bit, b, jnp.zeros_like(b)), base)
        else:
            result = jax.tree_util.tree_map(functools.partial(jnp.where, bit), _compose(base, result), result)
        if i < n_bits - 1:
            base = _compose(base, base)
    return result


def _power_rolled(rotation, spins: Spins, dt, k, b1dt, c0, n, n_bits: int, relax=None):
    """`_power` as a `lax.scan` over the bits of ``n`` (the same arithmetic): a smaller
    program, for maps computed once per chunk (`prepare_held_pulse`)."""
    base = _step_map(rotation, spins, dt, k, b1dt, c0, relax)
    zero = jax.tree_util.tree_map(jnp.zeros_like, base)

    def body(carry, bit):
        base, result = carry
        result = jax.tree_util.tree_map(functools.partial(jnp.where, bit), _compose(base, result), result)
        return (_compose(base, base), result), None

    bits = (jnp.asarray(n) >> jnp.arange(n_bits)) & 1 == 1
    return jax.lax.scan(body, (base, zero), bits)[0][1]


def step_power(spins: Spins, dt, k, b1dt, c0, n, n_bits: int, rotation: str = "auto", relax=None):
    """The map of ``n`` equal RF steps (`kernels.rf_step`) per spin, as its change ``(D, u)``:
    ``M -> (I + D) M + PD u`` (D 3 x 3 nested tuples of (n_spins,), u 3 of them, per unit
    PD). ``dt`` [s], ``k`` (3,) [1/m], ``b1dt`` and ``c0`` [cycles]: one step's; ``n`` (int,
    may be traced, ``0 <= n < 2**n_bits``; 0 gives the identity); ``rotation`` as in
    `kernels.rf_step`; ``relax``: ``kernels.relaxation(spins, dt / 2)`` when computed
    already. Cost: ``n_bits`` squarings and products of affine maps (~80 FLOP each)."""
    if rotation == "small":
        return _power(kernels._rf_rotation_small, spins, dt, k, b1dt, c0, n, n_bits, relax)
    if rotation == "general":
        return _power(kernels._rf_rotation, spins, dt, k, b1dt, c0, n, n_bits, relax)
    return jax.lax.cond(kernels.small_field(spins, dt, k, b1dt, c0),
                        lambda: _power(kernels._rf_rotation_small, spins, dt, k, b1dt, c0, n, n_bits, relax),
                        lambda: _power(kernels._rf_rotation, spins, dt, k, b1dt, c0, n, n_bits, relax))


def held_pulse_counts(table, dseq: DiscreteSequence | None = None, tol: float = 1e-7) -> tuple:
    """Per row of a prepared-pulse table (`prepared_rf.PulseTable`, NumPy): its number of
    steps when they are all equal (one held sample: a block pulse cut into ``max_rf_dt``
    steps), else 0 (host side). Equal: durations, B1 integrals, common phases and moments
    within ``tol`` relative (the rounding of step bounds, as in `held_runs`) plus 1e-10 of
    each field's largest value in the sequence ``dseq`` (its steps with the table's: a
    pulse's moments of 1e-23 /m, the rounding of a gradient integral, are zero next to a
    readout's), or in the table without it."""
    fields = ("dt", "b1dt", "c0", "k")
    scales = [float(np.abs(np.asarray(getattr(table, f))).max(initial=0.0)) for f in fields]
    if dseq is not None:
        m = dseq.n_real_steps
        scales = [sc if isinstance(getattr(dseq, f), jax.core.Tracer)  # (traced B1 of a scaled table)
                  else max(sc, float(np.abs(np.asarray(getattr(dseq, f))[:m]).max(initial=0.0)))
                  for sc, f in zip(scales, ("dt", "b1dt", "cyc0", "kstep"))]
    counts = []
    for p in range(np.shape(table.dt)[0]):
        dt = np.asarray(table.dt[p])
        n = int(np.sum(dt > 0))
        if n < 2 or np.any(dt[n:] != 0):
            counts.append(0)
            continue
        same = True
        for f, sc in zip(fields, scales):
            v = np.asarray(getattr(table, f)[p])[:n]
            same &= bool(np.all(np.abs(v - v[0]) <= 1e-10 * sc + tol * np.abs(v[0])))
        counts.append(n if same else 0)
    return tuple(counts)


def prepare_held_pulse(spins: Spins, dt, k, b1dt, c0, n: int):
    """A prepared pulse (`prepared_rf.PreparedPulse`, ``M -> A M + b``) whose table row
    (``dt`` (L,), ``k`` (L, 3), ``b1dt``, ``c0`` (L,); zero padded) is ``n`` equal steps:
    the ``n``-th power of its mean step (as `step_power` does), instead of stepping the
    row. Once per chunk, so as a rolled loop over the squarings with the general rotation
    (unrolled, the eight block pulses of a fingerprinting train added 1.7 s to its compile;
    a conditional between the small-angle series and it would compile both)."""
    from .prepared_rf import PreparedPulse

    inv = 1.0 / n
    d, u = _power_rolled(kernels._rf_rotation, spins, jnp.sum(dt) * inv, jnp.sum(k, axis=0) * inv,
                         jnp.sum(b1dt) * inv, jnp.sum(c0) * inv, int(n), int(n).bit_length())
    return PreparedPulse(tuple(tuple(d[i][j] + 1.0 if i == j else d[i][j] for j in range(3)) for i in range(3)),
                         tuple(u[i] * spins.pd for i in range(3)))


def held_rf_step(spins: Spins, m: State, dt, k, b1dt, c0, n, n_bits: int, rotation: str = "auto",
                 relax=None) -> State:
    """``n`` equal RF steps applied to ``m`` as one (`step_power`): ``M + D M + PD u``, one
    rounding of the state."""
    return apply_held_map(spins, m, *step_power(spins, dt, k, b1dt, c0, n, n_bits, rotation, relax))


def apply_held_map(spins: Spins, m: State, d, u) -> State:
    """``M + D M + PD u``: a map ``(D, u)`` of `step_power` (or a row of `held_maps`)
    applied to ``m``, one rounding of the state."""
    comp = (m.mx, m.my, m.mz)
    out = [comp[i] + (d[i][0] * comp[0] + d[i][1] * comp[1] + d[i][2] * comp[2] + u[i] * spins.pd)
           for i in range(3)]
    return State(*kernels.one_fusion(*out))


def held_maps(spins: Spins, table, rows: int, n_bits: int, rotation: str = "auto", relax=None):
    """The maps of the first ``rows`` rows of a held-step table (`plan_held_rf`; ``dt``,
    ``b1dt``, ``c0``, ``n`` (R,), ``k`` (R, 3)) per spin, computed together (a `jax.vmap`
    of `step_power`): ``(D, u)`` as in `step_power` with leaves (rows, n_spins).

    The engine computes them once per chunk for a table of few rows and gathers its row
    at each held step (`apply_held_map`), instead of a power at each step: the same
    arithmetic, but one copy of the squarings in the program however many times the
    step appears in it (a periodic step layout holds a copy per slot and per step of its
    head; each copy is differentiated on its own in a gradient). Memory: 12 ``rows``
    values per spin."""
    return jax.vmap(lambda dt, k, b1dt, c0, n: step_power(spins, dt, k, b1dt, c0, n, n_bits, rotation, relax))(
        table.dt[:rows], table.k[:rows], table.b1dt[:rows], table.c0[:rows], table.n[:rows])
