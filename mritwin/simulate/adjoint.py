"""Reversible adjoint: reverse mode through the step scan without storing the states.

Every simulation step (free precession, an RF rotation with relaxation, a window's end
state, diffusion attenuation) is invertible, so the backward pass can recompute each
step's input state from its output instead of storing it. Plain inversion is
ill-conditioned over long times: undoing relaxation multiplies rounding errors by
``exp(t/T2)``. So the forward pass also stores the exact state at a few *restore points*
(the start of every segment of ``segment`` seconds, and every step whose input cannot be
recovered, such as an ideal-spoiling step), and the backward pass restarts from them:
the error amplification is bounded by ``exp(segment/T2)`` per segment.

Memory: ``n_restore`` states plus one step's intermediates, independent of the number of
steps (segment checkpointing stores ``O(sqrt(n_steps))`` states and a segment of
intermediates). Compute: the forward pass, then per step one inverse and one step's
vector-Jacobian product.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["reversible_scan", "restore_points"]


def restore_points(t, dt, n_real: int, segment: float, force=None):
    """Per-step restore flags and slots from step start times ``t`` [s].

    Args:
        t: (n_steps,) step start times [s] (concrete).
        dt: (n_steps,) step durations [s].
        n_real: steps before padding.
        segment: segment duration [s].
        force: optional (n_steps,) bool, steps that must be restore points.

    Returns:
        ``(restore (n_steps,) int32, slot (n_steps,) int32, n_slots)``: ``restore`` is 0 for
        ordinary steps, 1 at a segment start (where the recomputed state is checked
        against the stored one) and 2 at a forced point (not invertible: not checked).
    """
    t = np.asarray(t, np.float64)
    n = t.size
    seg = np.floor((t - t[0]) / segment).astype(np.int64)
    timed = np.zeros(n, bool)
    timed[0] = True
    timed[1:] = seg[1:] != seg[:-1]
    forced = np.zeros(n, bool) if force is None else np.asarray(force, bool).copy()
    timed[n_real:] = False
    forced[n_real:] = False
    restore = np.where(forced, 2, np.where(timed, 1, 0)).astype(np.int32)
    slot = np.cumsum(restore > 0) - 1
    return restore, slot.astype(np.int32), int((restore > 0).sum())


def _zeros_like_cotangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def _warn_drift(bad, rel):
    if bool(bad):
        warnings.warn(
            f"Bloch(reversible=True): the states recomputed backwards drifted by {float(rel):.2g} of the "
            "equilibrium magnetization between restore points (undoing T2 decay amplifies rounding by "
            "exp(t/T2)); the gradient is NaN. Use a shorter reversible_segment (about 4 x the shortest "
            "T2), float64, or the default checkpointed adjoint.",
            RuntimeWarning, stacklevel=2)


def reversible_scan(step_fn, inverse_fn, sp, m0, xs, restore, slot, n_slots: int, kinds=None,
                    m0_of=None, drift_tol: float = 1e-3):
    """``lax.scan(lambda m, x: step_fn(sp, m, x), m0, xs)`` with a reversible adjoint.

    Args:
        step_fn: ``(sp, m, x, kind) -> (m_next, y)``; ``kind`` is ``None`` (dispatch on the
            step's own kind) or a static step kind.
        inverse_fn: ``(sp, m_next, x, kind) -> m``, the inverse of ``step_fn``'s state map
            for a static ``kind``.
        sp: differentiable per-spin parameters (a pytree).
        m0: initial state (a pytree).
        xs: per-step inputs (a tuple of arrays; integer ones get no cotangent).
        restore: (n_steps,) int32 restore codes (see `restore_points`).
        slot: (n_steps,) int32 slot of each restore point.
        n_slots: number of restore points (static).
        kinds: ``(field, n_kinds)``: which entry of ``xs`` holds the step kind and how many
            kinds there are. The backward pass dispatches once per step on the kind, so that
            the inverse and the recomputed step share their transcendentals.
        m0_of: ``sp -> m0``-like state whose last leaf is the equilibrium magnetization (the
            scale of the drift check).
        drift_tol: largest drift of a recomputed state at a restore point, relative to the
            equilibrium magnetization, before the gradient is declared lost (NaN + warning).

    Returns:
        ``(m_final, ys)`` as `jax.lax.scan`.
    """
    kind_field, n_kinds = kinds
    m0_aval = m0
    # Closed-over tracers (constants of the enclosing jit) become explicit arguments, as
    # custom_vjp's backward pass is traced separately; they get zero cotangents.
    x0 = tuple(x[0] for x in xs)
    fns = [lambda sp, m, x: step_fn(sp, m, x, None)]
    for k in range(n_kinds):
        fns.append(lambda sp, m, x, k=k: step_fn(sp, m, x, k))
        fns.append(lambda sp, m, x, k=k: inverse_fn(sp, m, x, k))
    converted, offsets, all_consts = [], [0], []
    for f in fns:
        fc, cs = jax.closure_convert(f, sp, m0, x0)
        converted.append(fc)
        all_consts.extend(cs)
        offsets.append(len(all_consts))
    all_consts = tuple(all_consts)

    def call(i, sp, m, x, cs):
        return converted[i](sp, m, x, *cs[offsets[i]:offsets[i + 1]])

    @jax.custom_vjp
    def run(sp, m0, xs, cs, restore, slot):
        return jax.lax.scan(lambda m, x: call(0, sp, m, x, cs), m0, xs)

    def fwd(sp, m0, xs, cs, restore, slot):
        buf0 = jax.tree_util.tree_map(lambda a: jnp.zeros((n_slots,) + a.shape, a.dtype), m0)

        def body(carry, inp):
            m, buf = carry
            x, r, s = inp
            buf = jax.lax.cond(
                r > 0, lambda b: jax.tree_util.tree_map(lambda bb, mm: bb.at[s].set(mm), b, m), lambda b: b, buf)
            m, y = call(0, sp, m, x, cs)
            return (m, buf), y

        (m, buf), ys = jax.lax.scan(body, (m0, buf0), (xs, restore, slot))
        return (m, ys), (sp, xs, cs, buf, m, restore, slot)

    is_float = tuple(bool(jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)) for x in xs)

    def merge(xf, xi):
        fi, ii = iter(xf), iter(xi)
        return tuple(next(fi) if f else next(ii) for f in is_float)

    def bwd(res, g):
        sp, xs, cs, buf, m_end, restore, slot = res
        gm_end, gys = g
        gsp0 = jax.tree_util.tree_map(jnp.zeros_like, sp)
        xf = tuple(x for x, f in zip(xs, is_float) if f)
        xi = tuple(x for x, f in zip(xs, is_float) if not f)

        def back(k):
            def f(ops):
                m_next, gm, gy, xf_i, xi_i, r, s = ops
                x = merge(xf_i, xi_i)
                m_inv = call(2 + 2 * k, sp, m_next, x, cs)
                m = jax.tree_util.tree_map(lambda a, b: jnp.where(r > 0, b[s], a), m_inv, buf)
                # at a restore point, the reconstruction's drift from the exact state
                diffs = [jnp.max(jnp.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(m_inv),
                                                                  jax.tree_util.tree_leaves(m))]
                drift = jnp.where(r == 1, jnp.max(jnp.stack(diffs)), 0.0)
                _, vjp = jax.vjp(lambda sp_, m_, xf_: call(1 + 2 * k, sp_, m_, merge(xf_, xi_i), cs), sp, m, xf_i)
                gsp_i, gm_prev, gxf = vjp((gm, gy))
                return m, gm_prev, gsp_i, gxf, drift
            return f

        def body(carry, inp):
            m_next, gm, gsp, drift = carry
            xf_i, xi_i, gy, r, s = inp
            kind = merge(xf_i, xi_i)[kind_field]
            m, gm_prev, gsp_i, gxf, d = jax.lax.switch(kind, [back(k) for k in range(n_kinds)],
                                                       (m_next, gm, gy, xf_i, xi_i, r, s))
            gsp = jax.tree_util.tree_map(jnp.add, gsp, gsp_i)
            return (m, gm_prev, gsp, jnp.maximum(drift, d)), gxf

        drift0 = jnp.zeros((), jax.tree_util.tree_leaves(m0_aval)[0].dtype)
        (_, gm0, gsp, drift), gxf = jax.lax.scan(body, (m_end, gm_end, gsp0, drift0),
                                                 (xf, xi, gys, restore, slot), reverse=True)
        # Lost accuracy (the state drifted by more than `drift_tol` of the equilibrium
        # magnetization between restore points): NaN gradients and a warning, never
        # silently wrong ones.
        scale = jnp.maximum(jnp.max(jnp.abs(jax.tree_util.tree_leaves(m0_of(sp))[-1])), 1e-30)
        bad = drift > drift_tol * scale
        jax.debug.callback(_warn_drift, bad, drift / scale)
        nan_if_bad = lambda g: jnp.where(bad, jnp.nan, g)  # noqa: E731
        gsp = jax.tree_util.tree_map(nan_if_bad, gsp)
        gm0 = jax.tree_util.tree_map(nan_if_bad, gm0)
        gxf = jax.tree_util.tree_map(nan_if_bad, gxf)
        gxi = tuple(_zeros_like_cotangent(x) for x in xi)
        return (gsp, gm0, merge(gxf, gxi), tuple(_zeros_like_cotangent(c) for c in cs),
                _zeros_like_cotangent(restore), _zeros_like_cotangent(slot))

    run.defvjp(fwd, bwd)
    return run(sp, m0, xs, all_consts, restore, slot)
