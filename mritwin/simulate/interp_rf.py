"""Interpolated RF pulses: a pulse's affine map as a Chebyshev series in the resonance offset.

Opt-in with ``Bloch(rf_interpolation=tol)``. A pulse played on a constant gradient ``G``
(each raster step's moment ``k_i = g dt_i`` with one rate ``g = γ̄ G`` [1/(m s)]) rotates a
spin at position ``r`` with off-resonance ``Δf`` exactly as it rotates a spin at the origin
with off-resonance ``v = g·r + Δf`` [Hz]: its whole affine map ``M -> A M + b``
(`mritwin.simulate.prepared_rf`) depends on the spin only through ``v`` and the spin's
tissue (B1+, T1, T2; ``b`` is proportional to PD). Spins with a field map or a chemical
shift otherwise each need their own stepping of every raster sample of the pulse — 2 000
rotations per spin for a 2 ms sinc — even when the pulse is played once.

With interpolation, the host steps the pulse (in float64) only at Chebyshev–Lobatto nodes
of ``v`` spanning the twin's offsets, per tissue, and fits the 12 entries of ``(A, b)`` by
a Chebyshev series. The number of terms is chosen per pulse: the series on ``N`` nodes is
compared with stepping at the ``N`` points halfway between them (where its error
peaks), and the series on the ``2N`` nodes (which include those points) is used once that
comparison is within ``tol``. The engine then evaluates per spin ``2N`` Chebyshev
polynomials and one matrix product. ``tol`` bounds the error of each entry of ``A`` and of
``b / PD`` (magnetization relative to M0): 1e-6 is below the rounding of stepping a
2 000-sample pulse in float32.

Where a pulse's gradient is not constant, the twin has more than `MAX_TISSUES` tissues,
or the series would need more terms than stepping costs, the pulse is stepped exactly as
without the option. The plan needs concrete twin and sequence values: under a JAX
transformation that traces them (e.g. `jax.grad` with respect to T2 or RF amplitudes) the
engine steps the pulses exactly, so derivatives never miss the pulse's dependence.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .kernels import Spins
from .prepared_rf import PreparedPulse, PulseTable, prepare_pulse
from .seqgroups import unique_rows

__all__ = ["PulseInterpolation", "InterpolationPlan", "plan_pulse_interpolation", "interpolated_pulse", "MAX_TISSUES",
           "LEVELS"]

MAX_TISSUES = 32  # distinct (B1+, T1, T2) rows of the twin
LEVELS = (32, 128, 512)  # Lobatto grids stepped on the host, coarse first: series of up to M + 1 terms
_STEP_FLOPS = 40.0  # rough cost of one raster rotation with relaxation, per state
_PLANS: dict = {}


class PulseInterpolation(NamedTuple):
    """The engine's tables for the interpolated pulses of a `PulseTable`.

    Attributes:
        coef: (P, N, 12 Q) Chebyshev coefficients: column ``12 q + e`` is entry ``e`` of
            tissue ``q``: ``A`` row-major (e = 0..8), then ``b`` for PD 1 (e = 9..11).
            Pulses stepped exactly have zeros.
        rate: (P, 3) gradient moment per second during the pulse [1/(m s)].
        centre: (P,) centre of the interpolated offsets [Hz].
        half: (P,) half-width of the interpolated offsets [Hz].
    """

    coef: np.ndarray
    rate: np.ndarray
    centre: np.ndarray
    half: np.ndarray


class InterpolationPlan(NamedTuple):
    """What `plan_pulse_interpolation` found (host arrays).

    Attributes:
        tables: the `PulseInterpolation`.
        tissue: (n_spins,) int32 tissue of each spin (row of the ``(B1+, T1, T2)`` table).
        use: (P,) bool, the pulses that are interpolated (the others are stepped).
        n_terms: (P,) series length per pulse (0 where stepped).
        error: (P,) max error of the coarser series at the check points (NaN where stepped).
        reason: (P,) why a pulse is stepped ("" where interpolated).
    """

    tables: PulseInterpolation
    tissue: np.ndarray
    use: np.ndarray
    n_terms: np.ndarray
    error: np.ndarray
    reason: tuple


def _col(v, n, default):
    return np.full(n, default, np.float64) if v is None else np.broadcast_to(np.asarray(v, np.float64), (n,))


def _rate_of(t):
    """1/T with 1/inf = 0."""
    with np.errstate(divide="ignore"):
        return np.where(np.isinf(t), 0.0, 1.0 / t)


def _lobatto(m: int) -> np.ndarray:
    """The m + 1 Chebyshev–Lobatto points cos(πk/m), k = 0..m."""
    return np.cos(np.pi * np.arange(m + 1) / m)


def _coefficients(f: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients (m + 1, ...) of the interpolant of values ``f`` (m + 1, ...)
    at the Lobatto points (a DCT-I)."""
    m = f.shape[0] - 1
    k = np.arange(m + 1)
    w = np.ones(m + 1)
    w[0] = w[-1] = 0.5
    c = (2.0 / m) * np.cos(np.pi * np.outer(k, k) / m) @ (w[:, None] * f.reshape(m + 1, -1))
    c[0] *= 0.5
    c[-1] *= 0.5
    return c.reshape(f.shape)


def _evaluate(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_j c_j T_j(x) for coefficients (N, ...) at points x (p,): (p, ...)."""
    t = np.cos(np.outer(np.arccos(np.clip(x, -1, 1)), np.arange(c.shape[0])))
    return (t @ c.reshape(c.shape[0], -1)).reshape((x.size,) + c.shape[1:])


@jax.jit
def _step_nodes(spins: Spins, dt, k, b1dt, c0):
    return prepare_pulse(spins, dt, k, b1dt, c0, unroll=4)  # (few spins: loop overhead matters)


def _node_maps(v: np.ndarray, tissues: np.ndarray, dt, b1dt, c0) -> np.ndarray:
    """(len(v), Q, 12) pulse maps stepped in float64 at offsets ``v`` [Hz] for the tissue
    rows ``tissues`` (Q, 3) = (B1+, R1, R2): the engine's own RF steps at the origin."""
    n_v, n_q = v.size, tissues.shape[0]
    n = n_v * n_q
    size = -(-n // 128) * 128  # padded: few distinct shapes to compile
    vv = np.zeros(size)
    vv[:n] = np.repeat(v, n_q)
    tq = np.ones((size, 3))
    tq[:n] = np.tile(tissues, (n_v, 1))
    # host work on concrete values: eager even when simulate is called inside a jit trace
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        f = lambda a: jnp.asarray(a, jnp.float64)  # noqa: E731
        zero = f(np.zeros(size))
        sp = Spins(x=zero, y=zero, z=zero, pd=f(np.ones(size)), r1=f(tq[:, 1]), r2=f(tq[:, 2]), df=f(vv),
                   b1=f(tq[:, 0]), coil_re=None, coil_im=None)
        p = _step_nodes(sp, f(dt), f(np.zeros((dt.size, 3))), jnp.asarray(b1dt, jnp.complex128), f(c0))
        out = np.stack([np.asarray(p.a[i][j]) for i in range(3) for j in range(3)]
                       + [np.asarray(p.b[i]) for i in range(3)], -1)
    return out[:n].reshape(n_v, n_q, 12)


def _fit(dt, b1dt, c0, tissues, centre, half, tol, max_terms):
    """Coefficients (N, Q, 12), the coarser series' error at the check points, or a reason."""
    n = 4
    for m in LEVELS:
        x = _lobatto(m)
        vals = _node_maps(centre + half * x, tissues, dt, b1dt, c0)
        while 2 * n <= m:
            if 2 * n > max_terms:
                return None, np.nan, f"needs more than {max_terms} terms to be cheaper than stepping"
            coarse = _coefficients(vals[:: m // n])
            check = vals[m // (2 * n):: m // n]  # the points halfway (in angle) between the coarse nodes
            err = float(np.abs(_evaluate(coarse, x[m // (2 * n):: m // n]) - check).max())
            if err <= tol:
                return _coefficients(vals[:: m // (2 * n)]), err, ""
            n *= 2
    return None, np.nan, f"not within tol with {LEVELS[-1]} terms"


def plan_pulse_interpolation(twin, table: PulseTable, tol: float, dtype, repeats=None) -> InterpolationPlan | None:
    """Chebyshev tables for the pulses of ``table`` (host side, cached by content).

    Args:
        twin: the `Twin` (concrete position, Δf, B1+, T1, T2).
        table: the prepared pulses (`prepared_rf.plan_prepared_rf`), NumPy arrays.
        tol: max error of each entry of the pulse map (relative to M0).
        dtype: the engine's float dtype (tissues equal in it are merged).
        repeats: (P,) times each pulse is played (scales the cost of stepping it); default 1.

    Returns:
        The `InterpolationPlan`, or None when the twin has more than `MAX_TISSUES`
        tissues or a traced value.
    """
    fields = (twin.position, twin.delta_f, twin.b1, twin.t1, twin.t2)
    if any(isinstance(f, jax.core.Tracer) for f in fields):
        return None
    n = twin.n_spins
    npd = np.dtype(jnp.dtype(dtype).name)
    keys = np.stack([_col(twin.b1, n, 1.0), _col(twin.t1, n, np.inf), _col(twin.t2, n, np.inf)], 1).astype(npd)
    found = unique_rows(keys.T, limit=MAX_TISSUES)
    if found is None:
        return None
    tissue, first = found
    rows = keys[first]
    tissues = np.stack([rows[:, 0], _rate_of(rows[:, 1].astype(np.float64)), _rate_of(rows[:, 2].astype(np.float64))],
                       1).astype(np.float64)
    pos = np.asarray(twin.position, np.float64)
    df = _col(twin.delta_f, n, 0.0)
    dts, ks, b1s, c0s = (np.asarray(a) for a in (table.dt, table.k, table.b1dt, table.c0))
    n_p = dts.shape[0]
    repeats = np.ones(n_p) if repeats is None else np.asarray(repeats, np.float64)
    digest = hashlib.sha1()
    for a in (dts, ks, b1s, c0s, tissues, np.float64(tol), repeats):
        digest.update(np.ascontiguousarray(a).tobytes())
    rates, centres, halves = np.zeros((n_p, 3)), np.zeros(n_p), np.ones(n_p)
    for p in range(n_p):
        dt, k = dts[p], ks[p]
        live = dt > 0
        g = k[live].sum(0) / dt[live].sum()
        scale = max(float(np.abs(k).max()), 1e-300)
        if np.abs(k[live] - g * dt[live, None]).max() <= 1e-9 * scale:
            rates[p] = g
        else:
            rates[p] = np.nan  # a gradient that changes during the pulse: stepped
        v = pos @ np.nan_to_num(rates[p]) + df
        lo, hi = float(v.min()), float(v.max())
        centres[p] = 0.5 * (lo + hi)
        halves[p] = max(0.5 * (hi - lo) * (1 + 1e-6), 1e-6 * max(abs(lo), abs(hi), 1.0))
        digest.update(np.array([centres[p], halves[p]]).tobytes())
    key = (digest.hexdigest(), npd.name)
    hit = _PLANS.get(key)
    if hit is None:
        n_q = rows.shape[0]
        q_pad = 1 << int(np.ceil(np.log2(max(n_q, 1))))
        fits, errors, reasons = [], np.full(n_p, np.nan), []
        for p in range(n_p):
            length = int(np.count_nonzero(dts[p]))
            # per chunk: the series costs ~24 flops per term and tissue and spin, stepping
            # the pulse ~_STEP_FLOPS per raster step and spin (4 states when prepared)
            budget = 0.5 * _STEP_FLOPS * length * min(repeats[p], 4.0) / (24.0 * q_pad)
            if not np.isfinite(rates[p]).all():
                fits.append(None)
                reasons.append("the gradient changes during the pulse")
                continue
            c, err, why = _fit(dts[p], b1s[p], c0s[p], tissues, centres[p], halves[p], tol, budget)
            fits.append(c)
            errors[p] = err
            reasons.append(why)
        use = np.array([c is not None for c in fits])
        n_terms = np.array([0 if c is None else c.shape[0] for c in fits])
        width = max(int(n_terms.max()), 1)
        coef = np.zeros((n_p, width, q_pad, 12))
        for p, c in enumerate(fits):
            if c is not None:
                coef[p, : c.shape[0], :n_q] = c
        hit = (PulseInterpolation(coef.reshape(n_p, width, q_pad * 12), np.nan_to_num(rates), centres, halves),
               use, n_terms, errors, tuple(reasons))
        while len(_PLANS) >= 16:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = hit
    tables, use, n_terms, errors, reasons = hit
    return InterpolationPlan(tables, tissue, use, n_terms, errors, reasons)


def interpolated_pulse(spins: Spins, coef, rate, centre, half) -> PreparedPulse:
    """The pulse map of every spin of a chunk from its Chebyshev series (engine side).

    Args:
        spins: the chunk; ``spins.tissue`` (n,) int32 selects each spin's tissue.
        coef: (N, 12 Q) coefficients (`PulseInterpolation.coef` of one pulse).
        rate: (3,) gradient moment per second [1/(m s)]; centre, half: the offsets' range [Hz].

    Returns:
        The `PreparedPulse` (``b`` scaled by PD), as `prepare_pulse` would step it.
    """
    v = rate[0] * spins.x + rate[1] * spins.y + rate[2] * spins.z + spins.df
    x = jnp.clip((v - centre) / half, -1.0, 1.0)  # (spins outside: chunk padding only)
    n_terms = coef.shape[0]
    polys = [jnp.ones_like(x), x]
    for _ in range(2, n_terms):
        polys.append(2.0 * x * polys[-1] - polys[-2])
    t = jnp.stack(polys[:n_terms], 1)  # (n, N)
    vals = (t @ coef).reshape(x.shape[0], -1, 12)  # (n, Q, 12)
    e = jnp.take_along_axis(vals, spins.tissue[:, None, None], axis=1)[:, 0]
    a = tuple(tuple(e[:, 3 * i + j] for j in range(3)) for i in range(3))
    return PreparedPulse(a, tuple(e[:, 9 + i] * spins.pd for i in range(3)))
