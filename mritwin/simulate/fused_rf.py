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
from .prepared_rf import _concrete, shorten_steps

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

    # padding rows are zeros (no field, no time): not copies of step 0, which would enter
    # the engine's bound on the rows' fields (`engine._rf_rotation_mode`)
    live = (np.arange(n_rows) < starts.size)[:, None]

    def fused(name, reset=False):
        """The field's table rows and the field with each fused step's first step set to
        the sum over its steps (0 with ``reset``): NumPy when concrete, one jitted call
        when traced."""
        v = getattr(dseq, name)
        if _concrete(v) is None:
            return _traced_fused(v, m, idx_pad, live, starts, idx, reset)
        v = np.asarray(v)[:m]
        rows = np.where(live.reshape(live.shape + (1,) * (v.ndim - 1)), v[idx_pad], 0)
        v = v.copy()
        v[starts] = 0 if reset else v[idx].sum(1)
        return rows, v

    new = {f: struct[f][:m].copy() for f in ("t", "kind", "sample", "count", "spoil")}
    (dt_rows, new["dt"]), (k_rows, new["kstep"]) = fused("dt"), fused("kstep")
    (b1_rows, new["b1dt"]), (c0_rows, new["cyc0"]) = fused("b1dt", reset=True), fused("cyc0", reset=True)
    new["bstep"] = fused("bstep")[1]
    table = FusedTable(dt=dt_rows, k=k_rows, b1dt=b1_rows, c0=c0_rows)
    new["kind"][starts] = kind_id
    new["count"][starts] = np.arange(starts.size)
    keep = np.ones(m, bool)
    keep[idx[:, 1:].ravel()] = False
    if step_kind == 0:
        return shorten_steps(dseq, keep, new), table
    new["sample"][starts] = False
    start_of = np.full(m, -1)
    start_of[idx.ravel()] = np.repeat(starts, size)
    pos = np.full(m, -1)
    pos[idx.ravel()] = np.tile(np.arange(size), starts.size)
    return shorten_steps(dseq, keep, new, fused=(start_of, pos, size)), table


@functools.partial(jax.jit, static_argnames=("m", "reset"))
def _traced_fused(v, m: int, idx_pad, live, starts, idx, reset: bool):
    """`plan_fused_rf`'s ``fused`` of a traced field, in one jitted call (eager, each
    gather, scatter and sum would be a program of its own, and so would their transposes
    under `jax.grad`)."""
    v = v[:m]
    rows = jnp.where(live.reshape(live.shape + (1,) * (v.ndim - 1)), v[idx_pad], 0)
    return rows, v.at[starts].set(jnp.zeros_like(v[starts]) if reset else v[idx].sum(1))


def _fused_primal(spins: Spins, m: State, dt, k, b1dt, c0, relax=None, *, rotation: str) -> State:
    """`fused_rf_steps`' value: the unrolled steps with the rotation ``rotation``."""
    if rotation == "small":
        return _fused_unrolled(kernels._rf_rotation_small, spins, m, dt, k, b1dt, c0, relax)
    if rotation == "general":
        return _fused_unrolled(kernels._rf_rotation, spins, m, dt, k, b1dt, c0, relax)
    small = kernels.small_field(spins, dt, k, b1dt, c0)
    return jax.lax.cond(small, functools.partial(_fused_unrolled, kernels._rf_rotation_small),
                        functools.partial(_fused_unrolled, kernels._rf_rotation), spins, m, dt, k, b1dt, c0, relax)


def _make_fused_rf(rotation: str, derivative: str = "explicit"):
    """`fused_rf_steps` with the rotation ``rotation``, differentiated by the written-out
    tangent (``"explicit"``, `_fused_rf_jvp_explicit`) or, as before 2026-12-07 (kept for
    `benchmarks/bench_fused_rf_gradient.py`), by JAX through the rolled loop (``"rolled"``)."""
    fused = jax.custom_jvp(functools.partial(_fused_primal, rotation=rotation))
    if derivative == "explicit":
        fused.defjvp(functools.partial(_fused_rf_jvp_explicit, rotation))
    else:
        fused.defjvp(lambda primals, tangents: jax.jvp(_fused_rf_rolled, primals, tangents))
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

    Derivatives (forward and reverse mode, and of higher order) are written out
    (`_fused_rf_jvp_explicit`): the rotations' coefficients of the S steps computed and
    differentiated at once, then a loop whose tangent step is a few products, which
    reverse mode transposes into a loop without reductions (2-3x faster gradients
    than JAX's derivative of the same steps as a rolled loop, `_fused_rf_rolled`, which
    was used before 2026-12-07; `benchmarks/bench_fused_rf_gradient.py`). Differentiating
    the unrolled kernel itself made XLA's compile of a gradient 5x slower.
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


def _step_fields(spins: Spins, m: State, dt, k, b1dt, c0, relax=None):
    """What the steps of `fused_rf_steps` depend on, per raster step and spin: the state
    after the first half-step relaxation, each step's field ``w`` (3 x (S, n)) [cycles],
    the fractions relaxed after each rotation (S, n) (a full step, a half step after the
    last) and ``M0``.

    Whatever is spread over the steps and spins is a matrix product (the fields from the
    steps' (S, 5) ``(k, dt, c0)`` and the spins' (5, n) ``(x, y, z, Δf, 1)``): its
    transpose, the cotangents of the steps' and the spins' parameters, is then a matrix
    product too, where the transpose of a broadcast would be a reduction over the steps
    (slow on XLA's CPU backend)."""
    d1, d2 = kernels.half_relaxation(spins, dt[0], relax)
    m0 = kernels._relax(spins, m, d1, d2)
    size = k.shape[0]
    dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # (no TF32 on GPUs)
    pick = np.zeros((size, 2))
    pick[:-1, 0] = pick[-1, 1] = 1  # a full step's fractions after each rotation, a half step's after the last
    pick = jnp.asarray(pick, d1.dtype)
    e1 = dot(pick, jnp.stack([_twice(d1), d1]))
    e2 = dot(pick, jnp.stack([_twice(d2), d2]))
    one = jnp.ones_like(spins.x)
    wz = dot(jnp.concatenate([k, dt[:, None], c0[:, None]], 1), jnp.stack([spins.x, spins.y, spins.z, spins.df, one]))
    wx = dot(jnp.real(b1dt)[:, None], spins.b1[None, :])
    wy = dot(jnp.imag(b1dt)[:, None], spins.b1[None, :])
    return m0, (wx, wy, wz), e1, e2, spins.pd


def _rotation_slopes(rotation: str, w, small):
    """Each step's ``(a, b, cos θ - 1)`` (`kernels._rf_rotation`) for the fields ``w`` and
    their derivatives with respect to ``|w|²`` (the series, or the general form; for
    ``"auto"`` the series where ``small``)."""
    n2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]

    def with_slopes(fn):
        return jax.jvp(fn, (n2,), (jnp.ones_like(n2),))

    if rotation == "small":
        return with_slopes(kernels._rotation_small_n2)
    if rotation == "general":
        return with_slopes(kernels._rotation_n2)
    return jax.lax.cond(small, lambda: with_slopes(kernels._rotation_small_n2),
                        lambda: with_slopes(kernels._rotation_n2))


def _cross(u, v):
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def _dot(u, v):
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def _tangent_step(spins: Spins, dpd, carry, xs):
    """One raster step of the state and of its tangent (linear in ``dm`` and the tangents
    of the step's field and relaxed fractions): ``u = M + (cos θ - 1) M - a w × M + b w
    (w·M)``, then relaxation by the fractions ``e1``, ``e2``. The tangents of ``a``, ``b``
    and ``cos θ - 1`` are their slopes in ``|w|²`` times ``2 w·dw``: in reverse mode each
    step's cotangents leave the loop as those of ``w`` and the two fractions only."""
    m, dm = carry
    (w, (a, b, cm1), (a1, b1, c1), e1, e2), (dw, de1, de2) = xs
    pd = spins.pd
    dn2 = 2 * _dot(w, dw)
    da, db, dcm1 = a1 * dn2, b1 * dn2, c1 * dn2
    # as the forward steps: the changes summed, then added to the state (one rounding per
    # step; multiplying by 1 - e, rounded alike at every step, biased float32 states)
    ch = kernels._rotate_change(m, w, a, b, cm1)
    u = kernels._plus(m, ch)
    ch = kernels._plus(ch, kernels._relax_change(spins, u, e1, e2))
    wm, cr = _dot(w, m), _cross(w, m)
    dwm = _dot(dw, m) + _dot(w, dm)
    dcr = tuple(p + q for p, q in zip(_cross(dw, m), _cross(w, dm)))
    dch = tuple(cm1 * dm[j] + dcm1 * m[j] - da * cr[j] - a * dcr[j] + (db * wm + b * dwm) * w[j] + b * wm * dw[j]
                for j in range(3))
    du = tuple(dm[j] + dch[j] for j in range(3))
    dch = (dch[0] - du[0] * e2 - u[0] * de2, dch[1] - du[1] * e2 - u[1] * de2,
           dch[2] - du[2] * e1 + (pd - u[2]) * de1 + dpd * e1)
    return (kernels._plus(m, ch), State(*(dm[j] + dch[j] for j in range(3)))), None


def _fused_rf_jvp_explicit(rotation: str, primals, tangents):
    """`fused_rf_steps`' derivative: the unrolled steps for the value; for the tangent, the
    fields of every raster step (`_step_fields`, vectorized over the steps, differentiated
    by JAX), the rotations' coefficients and their slopes (`_rotation_slopes`) and a loop
    over the steps with the tangent written out (`_tangent_step`). Reverse mode
    transposes that loop: per step a few products with the stored state, and the
    cotangents of the steps' fields leave the loop as (S, n) arrays, reduced to the spins'
    and the steps' parameters outside it (matrix products)."""
    (m0, w, e1, e2, _), (dm0, dw, de1, de2, dpd) = jax.jvp(_step_fields, primals, tangents)
    small = kernels.small_field(*primals[:1], *primals[2:6]) if rotation == "auto" else None
    rot, slopes = _rotation_slopes(rotation, w, small)
    # (checkpointed: reverse mode stores each step's state, not its ~10 intermediates, and
    # recomputes them beside the transposed step)
    step = jax.checkpoint(functools.partial(_tangent_step, primals[0], dpd))
    (_, dm), _ = jax.lax.scan(step, (m0, State(*dm0)), ((w, rot, slopes, e1, e2), (dw, de1, de2)))
    # the value from the unrolled steps: the forward pass of a gradient runs it (the loop's
    # states instead kept the compile as before but made gradients 1.3-1.5x slower)
    return _fused_primal(*primals, rotation=rotation), State(*dm)


_ROTATIONS = ("auto", "small", "general")
_FUSED_RF = {rotation: _make_fused_rf(rotation) for rotation in _ROTATIONS}
# (the derivative before 2026-12-07, for benchmarks)
_FUSED_RF_ROLLED = {rotation: _make_fused_rf(rotation, "rolled") for rotation in _ROTATIONS}


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
