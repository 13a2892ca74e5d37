"""Spins that the whole sequence cannot tell apart, simulated once (`Bloch.group_spins`).

The Bloch equation is linear and homogeneous in the magnetization and its equilibrium
``(0, 0, PD)``. Two spins with the same Δf, B1+, T1, T2 (and diffusion coefficient with
analytic diffusion) and the same coordinates along every axis on which the sequence ever
plays a gradient therefore have magnetizations ``PD_j · m(t)`` with one unit trajectory
``m(t)``: a sequence without gradients (FID, spectroscopy, inversion recovery) cannot
tell a tissue's spins apart, and a 1D sequence (gradients on x only, such as an MR
fingerprinting train) sees one trajectory per column and tissue. `simulate` then runs
one representative per group with PD 1 and receive weights ``Σ_j PD_j c_j`` over the
group (``c_j`` the coil sensitivity, 1 without coils): the same signal to float
rounding, for ``groups / spins`` of the work. The weights are ordinary JAX arithmetic,
so derivatives with respect to PD and coil sensitivities are kept.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
import numpy as np

from ..sequence.discretize import DiscreteSequence
from ..twin.twin import Twin

__all__ = ["SequenceGroups", "gradient_axes", "plan_sequence_groups", "group_weights", "expand_magnetization",
           "unique_rows", "number_codes"]

_PLANS: dict = {}  # (id(twin), axes, diffusion, dtype) -> (twin ref, SequenceGroups or None)
_MAX_PLANS = 8


class SequenceGroups:
    """A twin reduced to one spin per group.

    Attributes:
        twin: the reduced `Twin` (n_groups spins; PD 1, no coils, the representatives'
            other values).
        inverse: (n_spins,) int32 group of each spin of the original twin.
        n_groups: number of groups.
    """

    def __init__(self, twin: Twin, inverse: np.ndarray):
        self.twin = twin
        self.inverse = inverse
        self.n_groups = twin.n_spins


def gradient_axes(dseq: DiscreteSequence) -> tuple[bool, bool, bool]:
    """Axes (x, y, z) on which ``dseq`` plays any gradient (RF, free, window or general
    window steps)."""
    n = dseq.n_real_steps
    used = np.any(np.asarray(dseq.kstep)[:n] != 0, axis=0)
    if dseq.wk is not None:
        used = used | np.any(np.asarray(dseq.wk) != 0, axis=(0, 1))
    return tuple(bool(u) for u in used)


def unique_rows(cols, limit: int | None = None):
    """The distinct rows of a table given by its columns, factorized column by column.

    Sorting each column on its own is several times faster on the host than
    ``np.unique(table, axis=0)``, which sorts rows as records. The columns' codes combine
    in mixed radix (renumbered only when the radix product nears int64's range), and the
    final codes are numbered by a dense table when their range is small (a few times the
    rows: no sort), else by one sort.

    Args:
        cols: the columns, each (n,) (any dtype ``np.unique`` sorts).
        limit: give up (return None) when there are more distinct rows than this.

    Returns:
        ``(inverse, first)``: (n,) int32 row id of each row (ids in sorted order of the
        rows), and (G,) the index of the first row of each id; or None past ``limit``.
    """
    n = np.shape(cols[0])[0]
    code = np.zeros(n, np.int64)
    size = 1  # codes are in [0, size)
    for c in cols:
        values, inv = np.unique(np.asarray(c), return_inverse=True)
        if limit is not None and values.size > limit:
            return None
        if size * values.size >= 1 << 62:  # renumber 0..G-1 first: no overflow
            _, code = np.unique(code, return_inverse=True)
            code = code.reshape(-1)
            size = int(code.max()) + 1 if n else 1
            if limit is not None and size > limit:
                return None
        code = code * values.size + inv.reshape(-1)
        size *= values.size
    inverse, first = number_codes(code, size)
    if limit is not None and first.size > limit:
        return None
    return inverse, first


def number_codes(code, size: int):
    """``(inverse, first)`` of integer codes in ``[0, size)``: ids 0..G-1 in code order."""
    n = code.shape[0]
    if size <= max(4 * n, 1 << 16):  # a dense table: O(n + size), no sort
        first_of = np.full(size, n, np.int64)
        np.minimum.at(first_of, code, np.arange(n))
        present = first_of < n
        ids = np.cumsum(present) - 1
        return ids[code].astype(np.int32), first_of[present]
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32), first


def _concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def plan_sequence_groups(twin: Twin, dseq: DiscreteSequence, *, diffusion: bool, dtype) -> SequenceGroups | None:
    """Group the spins of ``twin`` that ``dseq`` cannot tell apart.

    Args:
        twin: the twin; its position, Δf, B1+, T1, T2 (and diffusion) must be concrete.
        dseq: the discretized sequence; its gradients must be concrete.
        diffusion: whether analytic diffusion is simulated (the diffusion coefficient then
            joins the key).
        dtype: the simulation's float dtype: values are compared as the engine sees them.

    Returns:
        The groups, or None when a value is traced, the sequence plays gradients on all
        three axes (spins at distinct positions are then never alike; not checked), or the
        groups would not halve the spins. Remembered for the last few twins: the check
        sorts the twin on the host, O(n log n).
    """
    extra = twin.diffusion if diffusion else None
    if not _concrete(twin.position, twin.t1, twin.t2, twin.delta_f, twin.b1, extra, dseq.kstep, dseq.wk):
        return None
    axes = gradient_axes(dseq)
    if all(axes) or twin.n_spins < 2:
        return None
    pos = np.asarray(twin.position)
    if all(np.ptp(pos[:, i]) == 0 for i in range(3) if not axes[i]):
        # the spins do not spread along the axes without gradients (a 2D slice): only exact
        # duplicates would group, never half of the spins in a real twin; skip the sort
        return None
    npd = np.dtype(jnp.dtype(dtype).name)
    key = (id(twin), axes, bool(diffusion), npd.name)
    hit = _PLANS.get(key)
    if hit is not None and hit[0]() is twin:
        return hit[1]
    out = _compute(twin, axes, extra, npd)
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(out)):
        return out  # (planned inside a jit trace: not remembered beyond it)
    while len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[key] = (weakref.ref(twin), out)
    return out


def _compute(twin: Twin, axes, extra, npd) -> SequenceGroups | None:
    n = twin.n_spins
    pos = np.asarray(twin.position)
    cols = [pos[:, i].astype(npd) for i in range(3) if axes[i]]
    cols += [np.asarray(v).astype(npd) for v in (twin.t1, twin.t2, twin.delta_f, twin.b1, extra) if v is not None]
    perm = np.lexsort(cols[::-1])
    new = np.zeros(n, bool)  # a group starts where any key changes (column by column: no
    new[0] = True  # stacked copy of the keys, 7x faster at 10M spins)
    for c in cols:
        cp = c[perm]
        new[1:] |= cp[1:] != cp[:-1]
    n_groups = int(new.sum())
    if 2 * n_groups > n:
        return None
    inverse = np.empty(n, np.int32)
    inverse[perm] = np.cumsum(new, dtype=np.int32) - 1
    rep = perm[new]

    def take(v):
        return None if v is None else np.asarray(v)[rep]

    # (concrete arrays even when planned inside a jit trace: the plan is remembered with the
    # twin and reused by other traces, where a tracer of this one would have leaked)
    with jax.ensure_compile_time_eval():
        reduced = Twin(position=pos[rep], pd=np.ones(n_groups, pos.dtype), t1=take(twin.t1),
                       t2=take(twin.t2), delta_f=take(twin.delta_f), diffusion=take(twin.diffusion),
                       b1=take(twin.b1))
    return SequenceGroups(reduced, inverse)


def group_weights(groups: SequenceGroups, pd, sens) -> jax.Array:
    """Receive weights of the groups: (n_coils, n_groups) complex ``Σ_j PD_j c_j``.

    Args:
        groups: the plan.
        pd: (n_spins,) proton density of the original twin (may be traced).
        sens: (n_coils, n_spins) complex coil sensitivities, or None (one uniform coil).
    """
    pd = jnp.asarray(pd)
    w = pd[None, :].astype(jnp.result_type(pd.dtype, jnp.complex64)) if sens is None else jnp.asarray(sens) * pd[None, :]
    return jax.ops.segment_sum(w.T, jnp.asarray(groups.inverse), num_segments=groups.n_groups,
                               indices_are_sorted=False).T


def expand_magnetization(groups: SequenceGroups, mag, pd) -> jax.Array:
    """(n_spins, 3) magnetization of the original spins from the groups' unit ones
    (n_groups, 3): ``PD_j · m_group(j)``."""
    return mag[jnp.asarray(groups.inverse)] * jnp.asarray(pd, mag.dtype)[:, None]
