"""A small gradient-descent driver over optax, with projections as constraints.

Non-finite policy (documented contract): constraints are *projections* applied to the
initial parameters and after every update, so parameters that would make a sequence
invalid (negative or too large flips, RF over the SAR limit, negative T1) are projected
back before the loss ever sees them. If the loss or its gradient is nevertheless NaN/inf,
`optimize` raises `NonFiniteError` (a `ValueError`) naming the step and the offending
quantity — or, with ``on_nonfinite="stop"``, stops and returns the last finite state with
``status="nonfinite"``. It never continues with NaN parameters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..sequence.safety import b1_rms

__all__ = ["Box", "NonFiniteError", "OptimizeResult", "SARLimit", "optimize"]


class NonFiniteError(ValueError):
    """The loss or its gradient became NaN/inf during `optimize`."""


def _finite(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return all(bool(jnp.all(jnp.isfinite(jnp.asarray(x)))) for x in leaves)


@dataclass(frozen=True)
class Box:
    """Projection onto ``lo <= params <= hi`` (element-wise clipping), e.g. hardware limits.

    ``lo``/``hi`` are scalars or pytrees matching (a prefix of) the parameters; ``None``
    means unbounded on that side. With ``where``, only the sub-tree ``where(params)`` is
    clipped (``lo``/``hi`` then match that sub-tree).

    Example:
        >>> Box(0.0, np.pi / 2)({"flips": jnp.array([-0.1, 0.3, 2.0])})["flips"]
        Array([0.       , 0.3      , 1.5707964], dtype=float32)
    """

    lo: Any = None
    hi: Any = None
    where: Callable | None = None

    def __post_init__(self):
        if self.lo is None and self.hi is None:
            raise ValueError("Box needs at least one of lo, hi")
        if self.lo is not None and self.hi is not None:
            bad = jax.tree_util.tree_map(
                lambda a, b: bool(np.any(np.asarray(a) > np.asarray(b))), self.lo, self.hi
            )
            if any(jax.tree_util.tree_leaves(bad)):
                raise ValueError(f"Box lower bound above upper bound: lo={self.lo}, hi={self.hi}")

    def _clip(self, p):
        def bound(b):
            if b is None:
                return jax.tree_util.tree_map(lambda _: None, p)
            if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(b)):
                return jax.tree_util.tree_map(lambda _: b, p)
            return b

        lo, hi = bound(self.lo), bound(self.hi)
        return jax.tree_util.tree_map(
            lambda x, a, b: jnp.clip(x, a, b), p, lo, hi, is_leaf=lambda x: x is None
        )

    def __call__(self, params):
        if self.where is None:
            return self._clip(params)
        return eqx.tree_at(self.where, params, self._clip(self.where(params)))


@dataclass(frozen=True)
class SARLimit:
    """Projection that scales RF amplitudes down so B1+rms stays at or below a limit.

    The RF energy is quadratic in the RF amplitude, ``B1rms² = B_fixed² + s² B_var²``,
    where ``B_var`` comes from the RF sub-tree ``where(params)`` (flip angles [rad] or RF
    samples [T]) and ``B_fixed`` from any RF the parameters do not control (e.g. a fixed
    90° excitation before an optimized refocusing train; separated by a second evaluation
    with the sub-tree halved).
    When ``b1_rms(seq_fn(params))`` exceeds ``max_b1_rms`` the sub-tree is multiplied by
    ``s = sqrt((max_b1_rms² - B_fixed²) / B_var²) * (1 - margin)``, which lands exactly on
    the limit; otherwise parameters pass unchanged. The scaling leaves pulse shapes and
    relative flips as they are.

    Args:
        seq_fn: params -> `Sequence`.
        max_b1_rms: the limit [T] (for a SAR limit: B1+rms scales as sqrt(SAR)).
        where: params -> the RF-amplitude sub-tree (default: all parameters).
        margin: relative safety margin below the limit (default 1e-6).

    Raises:
        ValueError: ``max_b1_rms <= 0``; or, when projecting, the RF the parameters do not
            control is alone at or over the limit (no scaling can meet it).
        NonFiniteError: the sequence's B1+rms is NaN/inf.
    """

    seq_fn: Callable
    max_b1_rms: float
    where: Callable | None = None
    margin: float = 1e-6

    def __post_init__(self):
        if not self.max_b1_rms > 0:
            raise ValueError(f"max_b1_rms must be > 0 [T], got {self.max_b1_rms}")

    def _scaled(self, params, scale):
        if self.where is None:
            return jax.tree_util.tree_map(lambda x: x * scale, params)
        return eqx.tree_at(
            self.where, params, jax.tree_util.tree_map(lambda x: x * scale, self.where(params))
        )

    def __call__(self, params):
        b = float(b1_rms(self.seq_fn(params)))
        if not np.isfinite(b):
            raise NonFiniteError(f"B1+rms of the sequence is {b}; cannot project onto the SAR limit")
        if b <= self.max_b1_rms:
            return params
        # B1rms(s)² = F + s² V: a second evaluation at s = 1/2 separates the fixed part F
        # (s = 1/2 rather than 0 keeps builder range checks, e.g. flip > 0, satisfied)
        b_half = float(b1_rms(self.seq_fn(self._scaled(params, 0.5))))
        var = (b**2 - b_half**2) / 0.75
        fixed = b**2 - var
        if fixed <= 1e-6 * b**2:  # all RF is in the parameters (up to rounding): plain scaling
            fixed, var = 0.0, b**2
        if fixed >= self.max_b1_rms**2 or not var > 0:
            raise ValueError(
                f"the RF not controlled by the parameters alone has B1+rms {np.sqrt(fixed) * 1e6:.4g} uT, "
                f"at or above max_b1_rms = {self.max_b1_rms * 1e6:.4g} uT: no scaling of the "
                "parameters can meet the SAR limit (lengthen TR or lower the fixed pulses)"
            )
        scale = np.sqrt((self.max_b1_rms**2 - fixed) / var) * (1.0 - self.margin)
        return self._scaled(params, float(scale))


@dataclass(frozen=True)
class OptimizeResult:
    """What `optimize` returns.

    Attributes:
        params: the final parameters (after the last update and projection).
        loss: the loss at ``params``.
        best_params, best_loss: the parameters with the lowest loss seen (all feasible).
        history: (n_evaluated,) loss of every evaluated iterate, ``history[0]`` at the
            projected initial parameters, ``history[-1] == loss``.
        params_history: the parameters of every evaluated iterate (list, same length),
            or None with ``keep_params=False``.
        n_steps: optimizer updates done.
        status: ``"max_steps"``, ``"converged"`` (relative change below ``rtol``) or
            ``"nonfinite"`` (stopped at a NaN/inf with ``on_nonfinite="stop"``).
        elapsed: wall time [s].
    """

    params: Any
    loss: float
    best_params: Any
    best_loss: float
    history: np.ndarray
    params_history: list | None
    n_steps: int
    status: str
    elapsed: float
    message: str = field(default="")


def optimize(
    loss_fn: Callable,
    params,
    *,
    steps: int,
    optimizer: optax.GradientTransformation | None = None,
    constraints: Sequence[Callable] | Callable = (),
    rtol: float | None = None,
    on_nonfinite: str = "raise",
    keep_params: bool = True,
    callback: Callable | None = None,
    progress: bool | int = False,
    progress_file=None,
    jit: bool = False,
) -> OptimizeResult:
    """Minimize ``loss_fn(params)`` by gradient descent with optax and projections.

    Each step: ``loss, grad = value_and_grad(loss_fn)(params)``; check both are finite;
    ``params = project(optax.apply_updates(params, optimizer.update(grad)))``, where
    ``project`` applies the ``constraints`` in order (e.g. `Box`, `SARLimit`). The initial
    parameters are projected too. ``loss_fn`` runs eagerly by default (it may build a
    `Sequence` on the host from traced values and call `mritwin.simulate`, which is
    jit-compiled inside); with ``jit=True``, ``value_and_grad(loss_fn)`` and the optax
    update are each compiled once, as a training loop would (the constraints still run
    eagerly).

    Args:
        loss_fn: params (pytree of float arrays) -> scalar loss.
        params: initial parameters.
        steps: maximum number of updates, >= 0.
        optimizer: an optax transformation; default ``optax.adam(1e-2)``.
        constraints: projections ``params -> params`` (a callable or a sequence).
        rtol: stop (``status="converged"``) when ``|Δloss| <= rtol * |loss|``.
        on_nonfinite: ``"raise"`` (default: `NonFiniteError`) or ``"stop"`` (return the
            last finite iterate with ``status="nonfinite"``).
        keep_params: keep every iterate in ``params_history``.
        callback: called as ``callback(step, loss, params)`` after every evaluation.
        progress: False (silent, default), True (a line every 10 steps) or an int N
            (every N steps), written to ``progress_file`` (default ``sys.stderr``).
        progress_file: a text stream for the progress lines.
        jit: compile ``value_and_grad(loss_fn)`` and the update with `jax.jit`, each once
            (the constraints still run eagerly). Any loss that `optimize` can
            differentiate eagerly can be compiled (mritwin treats the tracers of both
            alike); side effects in ``loss_fn`` (prints, appends) then happen once, when
            it is traced. Same iterates to rounding; each step's host work (the trace of
            ``loss_fn`` and its gradient, the update's per-leaf dispatch) is done once.
            Notebook 05's calibration (199 voxels, 60 Adam steps, float64, 2 CPU cores,
            compiles included): 0.71x the eager fit's time
            (``benchmarks/bench_optimize_jit.py``).

    Returns:
        `OptimizeResult`.

    Raises:
        ValueError: bad ``steps``/``on_nonfinite``, a non-scalar loss.
        NonFiniteError: NaN/inf loss or gradient (with ``on_nonfinite="raise"``), or
            non-finite initial parameters.

    Example:
        >>> res = optimize(lambda p: jnp.sum((p - 3.0) ** 2), jnp.zeros(2), steps=200,
        ...                optimizer=optax.adam(0.1), constraints=Box(0.0, 2.0))
        >>> np.round(np.asarray(res.params), 3)
        array([2., 2.], dtype=float32)
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'stop', got {on_nonfinite!r}")
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    cons = (constraints,) if callable(constraints) else tuple(constraints)
    every = 0 if progress is False else (10 if progress is True else int(progress))
    out = sys.stderr if progress_file is None else progress_file

    def project(p):
        for c in cons:
            p = c(p)
        return p

    if not _finite(params):
        raise NonFiniteError("initial parameters contain NaN/inf")
    # strongly typed, as every update returns them (``jnp.full(n, 0.0)`` is weakly typed:
    # with ``jit=True`` the second step would compile anew)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), params)
    params = project(params)
    if not _finite(params):
        raise NonFiniteError("a constraint produced NaN/inf parameters from the initial parameters")
    vg = jax.value_and_grad(loss_fn)

    def update(grad, opt_state, params):
        updates, opt_state = optimizer.update(grad, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    if jit:
        vg, update = jax.jit(vg), jax.jit(update)
    opt_state = optimizer.init(params)
    losses, plist = [], []
    best = (np.inf, params)
    status, message = "max_steps", ""
    t0 = time.perf_counter()
    step = 0
    last = None  # (params, loss) of the last finite evaluation
    while True:
        loss, grad = vg(params)
        if jnp.ndim(loss) != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {jnp.shape(loss)}")
        loss_f = float(loss)
        bad = None
        if not np.isfinite(loss_f):
            bad = f"loss is {loss_f}"
        elif not _finite(grad):
            bad = "gradient contains NaN/inf"
        if bad is not None:
            message = f"step {step}: {bad} (parameters were finite and projected)"
            if on_nonfinite == "raise":
                raise NonFiniteError(message + "; check the loss or add constraints")
            status = "nonfinite"
            break
        last = (params, loss_f)
        losses.append(loss_f)
        if keep_params:
            plist.append(params)
        if loss_f < best[0]:
            best = (loss_f, params)
        if callback is not None:
            callback(step, loss_f, params)
        if every and (step % every == 0 or step == steps):
            print(
                f"optimize step {step:5d}/{steps}  loss {loss_f:.6g}  ({time.perf_counter() - t0:.1f} s)",
                file=out,
                flush=True,
            )
        if rtol is not None and len(losses) > 1 and abs(losses[-1] - losses[-2]) <= rtol * abs(losses[-1]):
            status = "converged"
            break
        if step >= steps:
            break
        new, opt_state = update(grad, opt_state, params)
        new = project(new)
        if not _finite(new):
            message = f"step {step}: the update produced NaN/inf parameters"
            if on_nonfinite == "raise":
                raise NonFiniteError(message)
            status = "nonfinite"
            break
        params = new
        step += 1
    if last is None:
        raise NonFiniteError(message + " at the initial parameters")
    return OptimizeResult(
        params=last[0],
        loss=last[1],
        best_params=best[1],
        best_loss=best[0],
        history=np.asarray(losses),
        params_history=plist if keep_params else None,
        n_steps=step,
        status=status,
        elapsed=time.perf_counter() - t0,
        message=message,
    )
