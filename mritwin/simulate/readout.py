"""Planning the NUFFT readout: expansion orders, kernels and grids, from concrete values.

A plan is static (hashable) and chosen on the host before compilation, from the
tolerance, the window lengths and sample positions in k-space, and the spread of the
spins' relaxation rates, off-resonances and positions. See `NUFFTReadout`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from . import nufft
from .methods import NUFFTReadout

__all__ = ["WindowPlan", "GeneralPlan", "ReadoutPlan", "WindowCacheSpec", "WindowTable", "plan_readout",
           "plan_window_cache"]

MAX_GEOMETRIES = 8  # window geometries prepared once per chunk (the most frequent ones)
BLOCKS = (64, 128, 256)  # candidate spins per block of the prepared spreading


class WindowCacheSpec(NamedTuple):
    """Static shape of the prepared windows (see `plan_window_cache`)."""

    size: int  # periodic grid size
    block: int  # spins per block
    span: int  # grid points one block spreads onto (max over blocks and geometries)
    n_geometries: int  # prepared geometries
    all_cached: bool  # every constant-gradient window has a prepared geometry


class WindowTable(NamedTuple):
    """Traced data of the prepared windows: one row per geometry, one index per step."""

    k: np.ndarray  # (G, 3) moment per sample [1/m]
    dt: np.ndarray  # (G,) dwell [s]
    count: np.ndarray  # (G,) samples' intervals per window
    step: np.ndarray  # (n_steps,) geometry of each step (G for any other step)


class WindowPlan(NamedTuple):
    """Constant-gradient windows: Chebyshev nodes in sample index, basis, centre rate."""

    spec: nufft.KernelSpec
    nodes: tuple  # (L,) sample-index nodes on [0, n_window]
    basis: tuple  # (L, n_window) Lagrange basis at n = 1..n_window
    r2c: float  # centre of the spins' 1/T2 [1/s]
    bound: float  # expansion error bound (relative)
    cache: WindowCacheSpec | None = None  # prepared geometries (static spins only)


class GeneralPlan(NamedTuple):
    """Time-varying-gradient windows: type-3 geometry and Chebyshev nodes in time."""

    spec: nufft.KernelSpec
    dims: tuple  # axes (0..2) along which k varies
    x_center: tuple  # spin position centre along those axes [m]
    s_center: tuple  # k-space centre [1/m]
    grid: nufft.Type3Grid
    nodes: tuple  # (L,) times [s]
    r2c: float
    dfc: float
    bound: float


class ReadoutPlan(NamedTuple):
    window: WindowPlan | None
    general: GeneralPlan | None


def _concrete(x):
    if x is None:
        return None
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x, np.float64)


def _lebesgue(basis: np.ndarray) -> float:
    return float(np.abs(basis).sum(0).max()) if basis.size else 1.0


def _rate_range(readout: NUFFTReadout, t2, what="T2"):
    """(min, max) of 1/T2 over the spins [1/s]."""
    if t2 is None:
        if readout.t2_min is None:
            raise ValueError(
                f"NUFFTReadout: the twin's {what} values are traced (you differentiate with respect "
                "to them), so the expansion order cannot be read from them: give a bound, "
                "NUFFTReadout(tol, t2_min=...) [s]")
        return 0.0, 1.0 / readout.t2_min
    r2 = np.where(np.isinf(t2), 0.0, 1.0 / t2)
    return float(r2.min()), float(r2.max())


def _df_range(readout: NUFFTReadout, df, traced: bool):
    if traced:
        if readout.max_off_resonance is None:
            raise ValueError(
                "NUFFTReadout: the twin's off-resonance is traced (you differentiate with respect to "
                "it), so the expansion order cannot be read from it: give a bound, "
                "NUFFTReadout(tol, max_off_resonance=...) [Hz]")
        return -readout.max_off_resonance, readout.max_off_resonance
    if df is None:
        return 0.0, 0.0
    return float(df.min()), float(df.max())


def _check_tol(readout: NUFFTReadout, dtype):
    lo = nufft.MIN_TOL[np.dtype(dtype)]
    if readout.tol < lo:
        name = np.dtype(dtype).name
        raise ValueError(
            f"NUFFTReadout(tol={readout.tol:g}) cannot be met in {name}: the smallest reachable "
            f"tolerance is about {lo:g}" + (" (use dtype=float64 for tighter ones)" if name == "float32" else ""))


def plan_readout(readout: NUFFTReadout, twin, dseq, dtype) -> ReadoutPlan:
    """The static plan of the NUFFT readout for ``twin`` under the discretized ``dseq``."""
    _check_tol(readout, dtype)
    tol = readout.tol
    kind = np.asarray(dseq.kind)
    t2 = _concrete(twin.t2)
    r2_lo, r2_hi = _rate_range(readout, t2)
    window = general = None
    n_window = dseq.n_window
    if np.any(kind == 2):
        dt = np.asarray(dseq.dt)[kind == 2]
        spread = 0.5 * (r2_hi - r2_lo) * float(dt.max()) * n_window
        order, bound = nufft.expansion_order(spread, 0.5 * tol)
        nodes = nufft.chebyshev_nodes(0.0, float(n_window), order) if order > 1 else np.array([0.0])
        basis = (nufft.lagrange_basis(nodes, np.arange(1, n_window + 1)) if order > 1
                 else np.ones((1, n_window)))
        spec = nufft.kernel_spec(0.5 * tol / _lebesgue(basis))
        window = WindowPlan(spec, tuple(nodes.tolist()), tuple(map(tuple, basis.tolist())),
                            0.5 * (r2_lo + r2_hi), bound)
    if dseq.n_general:
        general = _plan_general(readout, twin, dseq, r2_lo, r2_hi, tol)
    return ReadoutPlan(window, general)


def _plan_general(readout, twin, dseq, r2_lo, r2_hi, tol) -> GeneralPlan:
    pos = _concrete(twin.position)
    if pos is None:
        raise ValueError(
            "NUFFTReadout: the twin's positions are traced, so the NUFFT grid cannot be sized; "
            "use the exact readout (Bloch() without readout=) to differentiate with respect to positions")
    wk = np.asarray(dseq.wk, np.float64)
    wt = np.asarray(dseq.wt, np.float64)
    # k extents over all general windows (padding entries are 0, inside the range anyway)
    k_lo = np.minimum(wk.min(axis=(0, 1)), 0.0)
    k_hi = np.maximum(wk.max(axis=(0, 1)), 0.0)
    scale = max(float(np.abs(wk).max()), 1e-300)
    dims = tuple(d for d in range(3) if k_hi[d] - k_lo[d] > 1e-9 * scale)
    if not dims:
        dims = (0,)
    x_lo, x_hi = pos.min(0), pos.max(0)
    x_center = tuple(float(0.5 * (x_lo[d] + x_hi[d])) for d in dims)
    s_center = tuple(float(0.5 * (k_lo[d] + k_hi[d])) for d in dims)
    # (zero-PD padding spins sit at the origin, possibly outside: the grid is periodic and
    # their strength is 0, so they add nothing)
    x_half = tuple(max(float(0.5 * (x_hi[d] - x_lo[d])), 1e-9) for d in dims)
    s_half = tuple(max(float(0.5 * (k_hi[d] - k_lo[d])), 1e-9) for d in dims)
    # time expansion of exp(-(λ_j - λ_c) t), λ = 1/T2 + i2πΔf
    df = _concrete(twin.delta_f)
    traced_df = twin.delta_f is not None and df is None
    f_lo, f_hi = _df_range(readout, df, traced_df)
    spread = math.hypot(0.5 * (r2_hi - r2_lo), math.pi * (f_hi - f_lo))
    t_max = float(wt.max())
    order, bound = nufft.expansion_order(spread * t_max, 0.5 * tol)
    nodes = nufft.chebyshev_nodes(0.0, t_max, order) if order > 1 else np.array([0.0])
    basis = nufft.lagrange_basis(nodes, np.linspace(0.0, t_max, 257)) if order > 1 else np.ones((1, 1))
    spec = nufft.kernel_spec(0.5 * tol / _lebesgue(basis))
    grid = nufft.type3_grid(x_half, s_half, spec)
    return GeneralPlan(spec, dims, x_center, s_center, grid, tuple(nodes.tolist()),
                       0.5 * (r2_lo + r2_hi), 0.5 * (f_lo + f_hi), bound)


def best_block(thetas, size: int, spec: nufft.KernelSpec, chunk: int):
    """The block size (among `BLOCKS` dividing ``chunk``) of the cheapest prepared spreading
    of phases ``thetas`` (a list of (n,) arrays in spin order, n a multiple of ``chunk``),
    and each one's span (+2 grid points for float32 rounding)."""
    best = None
    for block in BLOCKS:
        if chunk % block:
            continue
        spans = [nufft.block_span(t, size, block, spec) + 2 for t in thetas]
        total = thetas[0].size
        cost = sum(spans) * (total + 16 * total // block)  # weighting + one row per block
        if best is None or cost < best[0]:
            best = (cost, block, spans)
    return best[1], best[2]


def plan_window_cache(plan: ReadoutPlan, twin, dseq, chunk: int, n_chunks: int, tol: float):
    """Prepare the constant-gradient windows that repeat (issue 10's speed-up).

    A window's spreading weights depend only on the spins' phase per sample
    ``θ_j = k·r_j + Δf_j dt``, so windows with the same moment per sample, dwell and length
    (every line of a Cartesian readout) share them. For the most frequent such
    geometries (up to `MAX_GEOMETRIES`), the engine computes the weights and the window's
    end-state rotation once per chunk (`kernels.prepare_window`), and the spins are
    sorted by grid cell (``perm``) so that blocks of spins spread onto a few grid points.

    Windows whose timing differs only by float rounding share a geometry when the phase
    this neglects stays below ``tol / 10``.

    Needs concrete positions, off-resonance and sequence timing (not traced); otherwise,
    or when no geometry repeats, the plan is returned unchanged with no table.

    Returns:
        ``(plan, table, perm)``: the plan with ``window.cache`` set, the `WindowTable`, and
        the (n_spins,) permutation to apply to the spins (``None`` without a cache).
    """
    window = plan.window
    if window is None:
        return plan, None, None
    pos = _concrete(twin.position)
    df = np.zeros(twin.n_spins) if twin.delta_f is None else _concrete(twin.delta_f)
    arrays = [_concrete(getattr(dseq, f)) for f in ("kind", "kstep", "dt", "count")]
    if pos is None or df is None or any(a is None for a in arrays):
        return plan, None, None
    kind, kstep, dt, count = arrays
    win = np.nonzero(kind == 2)[0]
    # windows whose moments and dwell times differ by float rounding (1e-11 relative) share
    # a geometry; each is kept only if the phase it then misses stays within tol / 10
    keys = np.c_[kstep[win], dt[win], count[win]]
    scale = np.maximum(np.abs(keys).max(axis=0), 1e-300) * 1e-11
    _, first_of, inverse, counts = np.unique(np.round(keys / scale), axis=0, return_index=True,
                                             return_inverse=True, return_counts=True)
    uniq = keys[first_of]
    inverse = inverse.reshape(-1)
    r_max = float(np.abs(pos).max(initial=0.0))
    f_max = float(np.abs(df).max(initial=0.0))
    rep = uniq[inverse]
    missed = 2 * np.pi * keys[:, 4] * (np.abs(keys[:, :3] - rep[:, :3]).sum(1) * r_max
                                       + np.abs(keys[:, 3] - rep[:, 3]) * f_max)
    inverse = np.where(missed <= 0.1 * tol, inverse, -1)
    counts = np.bincount(inverse[inverse >= 0], minlength=len(uniq))
    order = [g for g in np.argsort(-counts, kind="stable") if counts[g] >= 2][:MAX_GEOMETRIES]
    if not order:
        return plan, None, None
    spec = window.spec
    size = nufft.periodic_grid_size(dseq.n_window + 1, spec)
    total = n_chunks * chunk
    n = twin.n_spins
    if chunk % BLOCKS[0]:
        return plan, None, None

    def theta(row, p):  # the spins' phases per sample, padded like the engine's chunks
        t = np.zeros(total)
        t[:n] = (pos[p] @ row[:3] + df[p] * row[3]) if p is not None else pos @ row[:3] + df * row[3]
        return t

    first = nufft.first_grid_index(theta(uniq[order[0]], None)[:n], size, spec)
    perm = np.argsort(first, kind="stable")
    thetas = [theta(uniq[g], perm) for g in order]
    block, spans = best_block(thetas, size, spec, chunk)
    keep = [i for i, s in enumerate(spans) if s <= 4 * spec.width + 16]  # else the scatter is cheaper
    if not keep:
        return plan, None, None
    geoms = [order[i] for i in keep]
    span = max(spans[i] for i in keep)
    step = np.full(kind.shape, len(geoms), np.int32)
    for i, g in enumerate(geoms):
        step[win[inverse == g]] = i
    rows = uniq[geoms]
    table = WindowTable(rows[:, :3], rows[:, 3], rows[:, 4].astype(np.int32), step)
    spec_c = WindowCacheSpec(size, block, span, len(geoms), bool(np.all(step[win] < len(geoms))))
    return plan._replace(window=window._replace(cache=spec_c)), table, perm
