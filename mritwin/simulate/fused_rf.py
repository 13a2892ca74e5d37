"""Fused steps: runs of RF raster steps, or of sampled free-precession steps, several at a time.

A shaped pulse that plays only once, such as the excitation of a single-shot EPI or
spiral, or each pulse of a fingerprinting train with its own flip angle, cannot be
prepared (`mritwin.simulate.prepared_rf`). The engine therefore steps it raster sample by
raster sample: 1 999 steps for a 2 ms sinc. Likewise, ADC samples on a time-varying
gradient (a spiral, ramp sampling) are one free-precession step each. Each step of the
engine's loop pays for dispatch (the switch over step kinds, the ADC and spoiling
conditionals, and a copy of the magnetization out of the switch) and for its relaxation
factors.

`plan_fused_rf` groups runs of ``S`` consecutive steps of one kind into one step of their
own kind. The steps of a run have the same duration and no ideal spoiling inside; RF runs
take no ADC sample, free-precession runs may sample after every step.

- `fused_rf_steps` applies ``S`` RF steps in one unrolled kernel: the fractions relaxed
  per half step, ``1 - exp(-dt/2T)``, are computed once, the half-step relaxations of
  neighbouring steps merged (relaxing for ``dt/2`` and again for ``dt/2`` is relaxing
  for ``dt``: ``d (2 - d)``), and the magnetization stays in registers between the steps.
- `fused_free_steps` applies ``S`` free-precession steps in a loop without dispatch, each
  followed by its ADC sample, with the relaxation factors computed once; the samples
  leave the engine as a third output block (see `prepared_rf.shorten_steps`).

The arithmetic is the same as stepping, so the result equals it to float rounding. Every
value (B1, gradients, motion phases) stays differentiable: only the structure of the
sequence (step kinds, durations, ADC flags) has to be concrete.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..sequence.discretize import DiscreteSequence, _bucket, fuse_starts  # noqa: F401  (fuse_starts: here too)
from . import kernels
from .kernels import Spins, State
from .prepared_rf import STEP_FIELDS, _concrete, shorten_steps

__all__ = ["FusedTable", "plan_fused_rf", "fused_rf_steps", "fused_free_steps", "DEFAULT_FUSE"]

DEFAULT_FUSE = 16  # steps per fused step: the fastest on XLA's CPU backend (8-32 tried)


class FusedTable(NamedTuple):
    """The steps of every fused step (rows past the last fused step are padding).

    Attributes:
        dt: (B, S) duration of each raster step [s] (equal to 1e-9 relative within a row;
            the relaxation factors use the first).
        k: (B, S, 3) gradient moment of each raster step [1/m].
        b1dt: (B, S) complex B1 integral of each raster step [cycles].
        c0: (B, S) phase common to all spins in each raster step [cycles] (rigid motion).
    """

    dt: jax.Array
    k: jax.Array
    b1dt: jax.Array
    c0: jax.Array


def plan_fused_rf(dseq: DiscreteSequence, kind_id: int, size: int = DEFAULT_FUSE, step_kind: int = 0):
    """Replace runs of ``size`` consecutive RF (or free-precession) steps by one fused step
    each (host side).

    Args:
        dseq: a discretized sequence. Its structure (``kind``, ``dt``, ``t``, ``sample``,
            ``spoil``, ``count``, ``out_index``) must be concrete; its values (B1,
            gradients, motion phases) may be traced.
        kind_id: the step kind the engine gives the fused steps.
        size: raster steps per fused step (at least 2).
        step_kind: 0 to fuse RF steps (`fused_rf_steps`), 1 free-precession steps
            (`fused_free_steps`), whose ADC samples then come out of the fused step: the
            ``out_index`` of a sample taken after step ``i`` of a fused step points at the
            fused outputs (see `shorten_steps`).

    Returns:
        ``(dseq, table)``: the sequence with each run as one step of kind ``kind_id``
        (``count`` = its row in the table, ``dt`` and ``kstep`` the run's total), and the
        `FusedTable` (its number of rows padded to a length bucket); or ``(dseq, None)``
        when no run qualifies or the structure is traced.
    """
    if size < 2:
        return dseq, None
    m = dseq.n_real_steps
    struct = {f: _concrete(getattr(dseq, f)) for f in ("kind", "dt", "t", "sample", "spoil", "count", "out_index")}
    if any(v is None for v in struct.values()):
        return dseq, None
    kind, dt = struct["kind"][:m], struct["dt"][:m]
    starts = fuse_starts(kind, dt, struct["sample"][:m].astype(bool), struct["spoil"][:m].astype(bool), size,
                         step_kind)
    if not starts.size:
        return dseq, None
    idx = starts[:, None] + np.arange(size)[None, :]  # (B, S) steps of each fused step
    n_rows = _bucket(starts.size)
    idx_pad = np.concatenate([idx, np.zeros((n_rows - starts.size, size), idx.dtype)])

    def values(name):  # a value field, NumPy when concrete, JAX when traced
        v = getattr(dseq, name)
        return np.asarray(v)[:m] if _concrete(v) is not None else jnp.asarray(v)[:m]

    kst, b1, c0 = values("kstep"), values("b1dt"), values("cyc0")
    # padding rows are zeros (no field, no time): not copies of step 0, which would enter
    # the engine's bound on the rows' fields (`engine._rf_rotation_mode`)
    live = (np.arange(n_rows) < starts.size)[:, None]

    def rows(v):
        mask = live.reshape(live.shape + (1,) * (v.ndim - 1))
        return np.where(mask, v[idx_pad], 0) if isinstance(v, np.ndarray) else jnp.where(mask, v[idx_pad], 0)

    table = FusedTable(dt=rows(dt), k=rows(kst), b1dt=rows(b1), c0=rows(c0))

    keep = np.ones(m, bool)
    keep[idx[:, 1:].ravel()] = False
    new = {f: values(f) if f in ("kstep", "b1dt", "cyc0", "bstep") else struct.get(f, None) for f in STEP_FIELDS}
    new = {f: (v[:m].copy() if isinstance(v, np.ndarray) else v) for f, v in new.items()}

    def put(name, value):
        v = new[name]
        if isinstance(v, np.ndarray):
            v[starts] = value
        else:
            new[name] = v.at[starts].set(value)

    put("kind", kind_id)
    put("count", np.arange(starts.size))
    put("dt", dt[idx].sum(1))
    put("kstep", kst[idx].sum(1))
    put("b1dt", 0)
    put("cyc0", 0)
    put("bstep", new["bstep"][idx].sum(1))
    if step_kind == 0:
        return shorten_steps(dseq, keep, new), table
    put("sample", False)
    start_of = np.full(m, -1)
    start_of[idx.ravel()] = np.repeat(starts, size)
    pos = np.full(m, -1)
    pos[idx.ravel()] = np.tile(np.arange(size), starts.size)
    return shorten_steps(dseq, keep, new, fused=(start_of, pos, size)), table


def _make_fused_rf(rotation: str):
    @jax.custom_jvp
    def fused(spins: Spins, m: State, dt, k, b1dt, c0, relax=None) -> State:
        if rotation == "small":
            return _fused_unrolled(kernels._rf_rotation_small, spins, m, dt, k, b1dt, c0, relax)
        if rotation == "general":
            return _fused_unrolled(kernels._rf_rotation, spins, m, dt, k, b1dt, c0, relax)
        small = kernels.small_field(spins, dt, k, b1dt, c0)
        return jax.lax.cond(small, functools.partial(_fused_unrolled, kernels._rf_rotation_small),
                            functools.partial(_fused_unrolled, kernels._rf_rotation), spins, m, dt, k, b1dt, c0,
                            relax)

    fused.defjvp(_fused_rf_jvp)
    return fused


def fused_rf_steps(spins: Spins, m: State, dt, k, b1dt, c0, rotation: str = "auto", relax=None) -> State:
    """``S`` RF steps (`kernels.rf_step`), unrolled: ``dt`` (S,) [s], ``k`` (S, 3) [1/m],
    ``b1dt`` (S,) [cycles], ``c0`` (S,) [cycles]. The steps last equally long, so the
    relaxation factors are computed once, and the half steps of neighbouring steps merged:
    relax ``dt/2``, then rotate and relax ``dt`` for each step but the last, which relaxes
    ``dt/2``. ``rotation`` as in `kernels.rf_step`: ``"small"`` (every spin's field within
    `kernels.SMALL_FIELD` cycles per step, as on a 1 µs raster of a typical shaped pulse:
    Taylor series, less arithmetic), ``"general"``, or ``"auto"`` (`kernels.small_field`
    decides once for the S steps). ``relax``: the half-step fractions
    ``kernels.relaxation(spins, dt[0] / 2)`` when computed already (the engine does so once
    per chunk when every fused step's raster steps last as long).

    Derivatives (forward and reverse mode) are those of the same steps as a rolled loop
    (`_fused_rf_rolled`): differentiating the unrolled kernel made XLA's compile of a
    gradient 5x slower (20 s instead of 4 s for a small test sequence), the rolled loop's
    derivative compiles as fast as stepping.
    """
    return _FUSED_RF[rotation](spins, m, dt, k, b1dt, c0, relax)


def _twice(d):
    """The fraction relaxed over two half steps that relax by ``d`` each: ``1 - (1 - d)²``."""
    return d * (2.0 - d)


def _fused_unrolled(rotation, spins: Spins, m: State, dt, k, b1dt, c0, relax=None) -> State:
    """The unrolled steps of `fused_rf_steps` with the rotation ``rotation``
    (`kernels._rf_rotation` or, for small fields, `kernels._rf_rotation_small`)."""
    d1, d2 = kernels.half_relaxation(spins, dt[0], relax)
    d1_full, d2_full = _twice(d1), _twice(d2)
    # each raster step's changes (rotation, relaxation) summed, then added to the state:
    # one rounding of the state per raster step
    m = kernels._relax(spins, m, d1, d2)
    size = k.shape[0]
    for i in range(size):
        w, a, b, cm1 = rotation(spins, dt[i], k[i], b1dt[i], c0[i])
        ch = kernels._rotate_change(m, w, a, b, cm1)
        ch = kernels._plus(ch, kernels._relax_change(spins, kernels._plus(m, ch), *(
            (d1_full, d2_full) if i < size - 1 else (d1, d2))))
        m = kernels._plus(m, ch)
    return State(*kernels.one_fusion(*m))


def _fused_rf_rolled(spins: Spins, m: State, dt, k, b1dt, c0, relax=None) -> State:
    """`fused_rf_steps` as a `lax.scan` over the steps (the same arithmetic)."""
    d1, d2 = kernels.half_relaxation(spins, dt[0], relax)
    d1_full, d2_full = _twice(d1), _twice(d2)
    m = kernels._relax(spins, m, d1, d2)
    last = jnp.arange(k.shape[0]) == k.shape[0] - 1

    def body(m, step):
        dti, ki, bi, ci, is_last = step
        w, a, b, cm1 = kernels._rf_rotation(spins, dti, ki, bi, ci)
        ch = kernels._rotate_change(m, w, a, b, cm1)
        ch = kernels._plus(ch, kernels._relax_change(spins, kernels._plus(m, ch), jnp.where(is_last, d1, d1_full),
                                                    jnp.where(is_last, d2, d2_full)))
        return kernels._plus(m, ch), None

    return jax.lax.scan(body, m, (dt, k, b1dt, c0, last))[0]


def _fused_rf_jvp(primals, tangents):
    return jax.jvp(_fused_rf_rolled, primals, tangents)


_FUSED_RF = {rotation: _make_fused_rf(rotation) for rotation in ("auto", "small", "general")}


def fused_free_steps(spins: Spins, m: State, dt, k, c0):
    """``S`` free-precession steps of equal duration, each followed by an ADC sample:
    ``dt`` (S,) [s], ``k`` (S, 3) [1/m], ``c0`` (S,) [cycles]. Returns the state and the
    (n_coils, S) samples after each step (`kernels.free_step`, `kernels.receive`).

    A loop without dispatch (its body is one fused pass over the spins and the signal
    sum), with the relaxation factors computed once; the longitudinal magnetization
    relaxes once over the whole run (exact: relaxation commutes with precession).
    """
    e2 = jnp.exp(-spins.r2 * dt[0])

    def body(mxy, step):  # mx + i my: one array, so that XLA evaluates the rotation once
        dti, ki, ci = step
        sn, c = kernels.sincos_cycles(kernels._cycles(spins, ki, dti, ci))
        mxy = mxy * jax.lax.complex(e2 * c, -e2 * sn)
        return mxy, kernels.receive(spins, State(jnp.real(mxy), jnp.imag(mxy), None))

    mxy, sig = jax.lax.scan(body, jax.lax.complex(m.mx, m.my), (dt, k, c0))
    e1 = jnp.exp(-spins.r1 * jnp.sum(dt))
    return State(jnp.real(mxy), jnp.imag(mxy), m.mz * e1 + spins.pd * (1.0 - e1)), sig.T
