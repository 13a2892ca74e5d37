"""Non-uniform fast Fourier transforms in JAX, for evaluating ADC windows.

Two transforms, both JAX-native (jit, vmap, grad and GPU work everywhere, no extra
dependency), built from the "exponential of semicircle" (ES) spreading kernel of
FINUFFT (Barnett, Magland & af Klinteberg, SIAM J. Sci. Comput. 41, C479, 2019):

- `nufft_periodic`: ``s[n] = Σ_j v_j exp(-i 2π n θ_j)`` for integer ``n = 0..N-1`` and
  arbitrary real ``θ_j`` (a type-1 transform on the unit circle). This is the exact
  shape of an ADC window on a constant gradient, where ``θ_j = k·r_j + Δf_j dt`` is a
  spin's phase advance per sample in cycles.
- `nufft_type3`: ``F(ζ_n) = Σ_j v_j exp(-i 2π ζ_n·ξ_j)`` for arbitrary points
  ``ξ_j ∈ R^D`` and frequencies ``ζ_n ∈ R^D`` (D = 1..3), as spread to a grid, a type-2
  transform (FFT + interpolation) and a deconvolution. This covers ADC windows on
  time-varying gradients (ramp sampling, spirals).

Both cost ``O(n_points · w^D + n_grid log n_grid + n_freq · w^D)`` with a kernel width
``w ≈ log10(1/tol) + 1`` on a grid oversampled by ``σ = 2``; the error relative to
``Σ_j |v_j|`` is about ``tol`` (the width rule is FINUFFT's).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KernelSpec", "kernel_spec", "nufft_periodic", "nufft_type3", "type3_grid",
           "chebyshev_nodes", "lagrange_basis", "expansion_order", "MIN_TOL", "periodic_grid_size",
           "first_grid_index", "block_weights", "spread_blocks", "periodic_modes"]

SIGMA = 2.0
MAX_WIDTH = 16
MIN_TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-14}


class KernelSpec(NamedTuple):
    """ES kernel ``exp(β(sqrt(1 - z²) - 1))`` on ``|z| < 1``, ``w`` grid points wide."""

    width: int
    beta: float


def kernel_spec(tol: float) -> KernelSpec:
    """The kernel for a relative tolerance ``tol`` (FINUFFT's rule for σ = 2)."""
    w = int(math.ceil(math.log10(1.0 / tol))) + 1
    w = max(2, min(w, MAX_WIDTH))
    return KernelSpec(w, 2.30 * w)


def _es(z, beta):
    inside = jnp.abs(z) < 1.0
    arg = jnp.where(inside, 1.0 - z * z, 0.0)
    return jnp.where(inside, jnp.exp(beta * (jnp.sqrt(arg) - 1.0)), 0.0)


def _kernel_ft(nu, spec: KernelSpec):
    """Fourier transform ``∫ ψ(x) exp(-i2π ν x) dx`` of the kernel ``ψ(x) = es(2x/w)`` (x in
    grid points), at ``nu`` [cycles per grid point]; real and even. Gauss–Legendre
    quadrature on the half support (the kernel is smooth inside it)."""
    z, wq = np.polynomial.legendre.leggauss(4 * spec.width + 16)
    z = 0.5 * (z + 1.0)  # [0, 1]
    wq = 0.5 * wq
    half = 0.5 * spec.width
    ker = np.exp(spec.beta * (np.sqrt(1.0 - z * z) - 1.0))
    nu = jnp.asarray(nu)
    phase = 2.0 * jnp.pi * half * nu[..., None] * jnp.asarray(z, nu.dtype)
    return 2.0 * half * jnp.sum(jnp.asarray(wq * ker, nu.dtype) * jnp.cos(phase), axis=-1)


@functools.cache
def _horner_coefficients(spec: KernelSpec) -> np.ndarray:
    """(degree + 1, w) coefficients, highest first, of polynomials in ``x' ∈ [-1, 1]`` that
    approximate the kernel at the ``w`` grid points of a point whose offset from its first
    grid point is ``x = (x' + 1)/2`` (FINUFFT's piecewise-polynomial kernel evaluation:
    multiply-adds instead of an ``exp`` and a ``sqrt`` per grid point)."""
    w = spec.width
    degree = w + 4
    xp = np.cos(np.pi * (np.arange(4 * degree) + 0.5) / (4 * degree))  # Chebyshev points
    x = 0.5 * (xp + 1.0)
    coef = np.empty((degree + 1, w))
    for i in range(w):
        z = (x + i - 0.5 * w) / (0.5 * w)
        ker = np.where(np.abs(z) < 1, np.exp(spec.beta * (np.sqrt(np.clip(1 - z * z, 0, None)) - 1)), 0.0)
        cheb = np.polynomial.chebyshev.Chebyshev.fit(xp, ker, degree, domain=[-1, 1])
        c = cheb.convert(kind=np.polynomial.Polynomial).coef  # (newer NumPy trims trailing zeros)
        coef[:, i] = np.pad(c, (0, degree + 1 - c.size))[::-1]
    return coef


def _spread_indices(u, size: int, spec: KernelSpec):
    """Grid indices (n, w) (periodic) and kernel weights (n, w) of points at grid coordinate u."""
    w = spec.width
    i0 = jnp.ceil(u - 0.5 * w)
    xp = 2.0 * (i0 - (u - 0.5 * w)) - 1.0  # in [-1, 1]
    coef = _horner_coefficients(spec)
    ker = jnp.broadcast_to(jnp.asarray(coef[0], u.dtype), (u.shape[0], w))
    for c in coef[1:]:
        ker = ker * xp[:, None] + jnp.asarray(c, u.dtype)[None, :]
    idx = i0.astype(jnp.int32)[:, None] + jnp.arange(w, dtype=jnp.int32)[None, :]
    return jnp.mod(idx, size), ker


def _stencil(u, sizes, spec: KernelSpec):
    """Flat periodic grid indices (n * w^D,) and tensor-product kernel weights (n, w^D) of
    points at grid coordinates ``u`` (D, n) on a grid of shape ``sizes``."""
    d = len(sizes)
    flat = None
    weight = None
    stride = 1
    for ax in reversed(range(d)):
        idx, ker = _spread_indices(u[ax], sizes[ax], spec)
        shape = [idx.shape[0]] + [1] * d
        shape[1 + ax] = spec.width
        idx = idx.reshape(shape) * stride
        ker = ker.reshape(shape)
        flat = idx if flat is None else flat + idx
        weight = ker if weight is None else weight * ker
        stride *= sizes[ax]
    n = u.shape[1]
    return flat.reshape(-1), weight.reshape(n, -1)


def _spread(u, v, sizes, spec: KernelSpec):
    """Spread strengths ``v`` (B, n) of points at grid coordinates ``u`` (D, n) onto a
    periodic grid (B, *sizes).

    Scatters one *row* per point and stencil position of the other axes: the ``w`` kernel
    values along the last axis land in a ``(…, size, w)`` buffer at the point's first grid
    index, and a shifted sum folds the buffer onto the grid (a row scatter costs ~3x
    less than scattering every element on XLA's CPU backend).
    """
    d = len(sizes)
    w = spec.width
    n = u.shape[1]
    b = v.shape[0]
    idx_l, ker_l = _spread_indices(u[-1], sizes[-1], spec)  # (n, w)
    first = idx_l[:, 0]
    if d > 1:
        flat_o, w_o = _stencil(u[:-1], sizes[:-1], spec)
        rows_at = flat_o.reshape(n, -1) * sizes[-1] + first[:, None]  # (n, w^(d-1))
    else:
        w_o = jnp.ones((n, 1), u.dtype)
        rows_at = first[:, None]
    vr = jnp.concatenate([jnp.real(v), jnp.imag(v)], 0).T  # (n, 2B)
    rows = w_o[:, :, None, None] * vr[:, None, :, None] * ker_l[:, None, None, :]  # (n, w^(d-1), 2B, w)
    n_rows = math.prod(sizes)
    g2 = jnp.zeros((n_rows, 2 * b, w), u.dtype).at[rows_at.reshape(-1)].add(
        rows.reshape(-1, 2 * b, w), mode="promise_in_bounds")
    g2 = g2.reshape(-1, sizes[-1], 2 * b, w)
    grid = g2[..., 0]
    for q in range(1, w):
        grid = grid + jnp.roll(g2[..., q], q, axis=1)
    grid = jax.lax.complex(grid[..., :b], grid[..., b:])  # (others, size_last, B)
    grid = jnp.moveaxis(grid, -1, 0)
    return grid.reshape((b,) + tuple(sizes))


def _interp(grid, u, spec: KernelSpec):
    """Interpolate a periodic grid (B, *sizes) at grid coordinates ``u`` (D, n): (B, n)."""
    flat, weight = _stencil(u, grid.shape[1:], spec)
    g = grid.reshape(grid.shape[0], -1)[:, flat].reshape(grid.shape[0], u.shape[1], -1)
    return jnp.sum(g * weight[None].astype(grid.dtype), axis=-1)


def _grid_size(n: float) -> int:
    """Smallest even 2^a 3^b 5^c >= n (fast FFT sizes)."""
    n = max(2, int(math.ceil(n)))
    best = None
    p2 = 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < 2 * n:
                if p5 >= n and p5 % 2 == 0 and (best is None or p5 < best):
                    best = p5
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


def periodic_grid_size(n_modes: int, spec: KernelSpec) -> int:
    """Size of the oversampled periodic grid of `nufft_periodic` for ``n_modes`` modes.

    Modes 0..N-1 need N / size <= 1 / (2σ) for the deconvolution to be accurate, so the
    grid is 2σN (a larger FFT, but no per-point phase shift to centre the modes)."""
    return _grid_size(max(2.0 * SIGMA * n_modes, 2 * spec.width))


def periodic_modes(grid, n_modes: int, spec: KernelSpec):
    """Modes ``0 .. n_modes - 1`` of a spread periodic grid (B, size): FFT and deconvolution."""
    size = grid.shape[-1]
    f = jnp.fft.fft(grid, axis=-1)[:, :n_modes]
    real = jnp.finfo(grid.dtype).dtype
    corr = _kernel_ft(jnp.asarray(np.arange(n_modes) / size, real), spec)
    return f / corr[None, :].astype(f.dtype)


def nufft_periodic(theta, v, n_modes: int, spec: KernelSpec):
    """``s[b, n] = Σ_j v[b, j] exp(-i 2π n θ_j)`` for ``n = 0 .. n_modes - 1``.

    Args:
        theta: (n,) real phases per unit mode [cycles]; any real value (used modulo 1).
        v: (B, n) complex strengths.
        n_modes: number of output modes (static).
        spec: the spreading kernel (`kernel_spec`).

    Returns:
        (B, n_modes) complex.
    """
    frac = theta - jnp.floor(theta)
    size = periodic_grid_size(n_modes, spec)
    grid = _spread((frac * size)[None, :], v, (size,), spec)
    return periodic_modes(grid, n_modes, spec)


# ---- cached spreading for points that do not move (the same θ in many windows) --------
#
# When the points' phases θ_j are the same in many transforms (spins at fixed positions
# read out by many windows on the same gradient, as in Cartesian imaging), the spreading
# can be prepared once: with the points sorted by grid cell, each block of ``block``
# consecutive points covers a short arc of ``span`` grid points, and spreading becomes one
# dense (n, span) weighting and a sum over each block (a matrix-vector product, which
# XLA's CPU backend runs far faster than a scatter), then a scatter of one row per block.


def first_grid_index(theta, size: int, spec: KernelSpec):
    """First periodic grid index (n,) of each point's stencil (NumPy or JAX, float64 or 32)."""
    xp = jnp if isinstance(theta, jax.Array) else np
    frac = theta - xp.floor(theta)
    return xp.mod(xp.ceil(frac * size - 0.5 * spec.width), size).astype(xp.int32)


def _block_offsets(first, size: int, block: int, xp):
    """Per block of ``block`` points: its first grid index ``lo`` (nb,) and each point's
    offset from it (nb, block), taking the shortest arc on the periodic grid."""
    f = first.reshape(-1, block)
    ref = f[:, :1]
    d = xp.mod(f - ref + size // 2, size) - size // 2
    dmin = d.min(axis=1, keepdims=True)
    return xp.mod(ref[:, 0] + dmin[:, 0], size), d - dmin


def block_span(theta, size: int, block: int, spec: KernelSpec) -> int:
    """The largest number of grid points one block of points spreads onto (host, NumPy)."""
    _, off = _block_offsets(first_grid_index(np.asarray(theta), size, spec), size, block, np)
    return int(off.max()) + spec.width


def block_weights(theta, size: int, block: int, span: int, spec: KernelSpec):
    """Prepared spreading of points with phases ``theta`` (n,) [cycles] onto a periodic
    grid of ``size``: weights (n / block, span, block) and block starts ``lo`` (n / block,).

    The points should be sorted by grid cell so that every block's stencils fit in
    ``span`` grid points (see `block_span`); if one does not, the weights are NaN (the
    transform is never silently wrong).
    """
    frac = theta - jnp.floor(theta)
    idx, ker = _spread_indices(frac * size, size, spec)  # (n, w)
    lo, off = _block_offsets(idx[:, 0], size, block, jnp)  # (nb,), (nb, block)
    nb = off.shape[0]
    s = jnp.arange(span, dtype=off.dtype)[None, :, None]
    weights = jnp.zeros((nb, span, block), theta.dtype)
    for q in range(spec.width):
        weights = weights + jnp.where(off[:, None, :] + q == s, ker[:, q].reshape(nb, 1, block), 0.0)
    bad = jnp.any(off > span - spec.width)
    return jnp.where(bad, jnp.nan, weights), lo


def spread_blocks(weights, lo, v, size: int):
    """Spread strengths ``v`` (B, n) with prepared `block_weights`: the grid (B, size)."""
    nb, span, block = weights.shape
    b = v.shape[0]
    vv = jnp.concatenate([jnp.real(v), jnp.imag(v)], 0).reshape(2 * b, nb, 1, block)
    ones = jnp.ones((block,), weights.dtype)
    rows = ((weights[None] * vv).reshape(-1, block) @ ones).reshape(2 * b, nb, span)
    g2 = jnp.zeros((size, span, 2 * b), weights.dtype).at[lo].add(
        rows.transpose(1, 2, 0), mode="promise_in_bounds")
    grid = g2[:, 0]
    for q in range(1, span):
        grid = grid + jnp.roll(g2[:, q], q, axis=0)
    return jax.lax.complex(grid[:, :b], grid[:, b:]).T  # (B, size)


class Type3Grid(NamedTuple):
    """Static plan of a type-3 transform along D dimensions."""

    h: tuple  # spreading grid spacing per dim [units of ξ]
    n1: tuple  # spreading grid size per dim
    n2: tuple  # type-2 (oversampled) grid size per dim


def type3_grid(x_half: tuple, s_half: tuple, spec: KernelSpec) -> Type3Grid:
    """Grid sizes for points within ``±x_half`` and frequencies within ``±s_half`` (per dim,
    after centering; both > 0)."""
    hs, n1s, n2s = [], [], []
    for x, s in zip(x_half, s_half):
        s = max(float(s), 1e-300)
        h = 1.0 / (2.0 * SIGMA * s)
        n1 = _grid_size(2.0 * float(x) / h + spec.width + 2)
        hs.append(h)
        n1s.append(n1)
        n2s.append(_grid_size(SIGMA * n1))
    return Type3Grid(tuple(hs), tuple(n1s), tuple(n2s))


def nufft_type3(xi, zeta, v, plan: Type3Grid, spec: KernelSpec):
    """``F[b, n] = Σ_j v[b, j] exp(-i 2π ζ_n·ξ_j)`` for centred points and frequencies.

    Args:
        xi: (D, n) points, within ``±plan`` half extents (centre them first).
        zeta: (D, N) frequencies, likewise centred.
        v: (B, n) complex strengths.
        plan: from `type3_grid`.
        spec: the spreading kernel.

    Returns:
        (B, N) complex.
    """
    d = len(plan.n1)
    h = jnp.asarray(plan.h, xi.dtype)[:, None]
    n1 = np.asarray(plan.n1)
    n2 = np.asarray(plan.n2)
    # 1) spread onto grid 1 (x_g = (g - n1/2) h)
    u1 = xi / h + jnp.asarray(n1 // 2, xi.dtype)[:, None]
    b = _spread(u1, v, plan.n1, spec)
    # 2) type 2 on grid 1's coefficients: modes m = g - n1/2, angle 2π ζ h
    a = b
    for ax in range(d):
        m = np.arange(plan.n1[ax]) - plan.n1[ax] // 2
        corr = _kernel_ft(jnp.asarray(m / plan.n2[ax], xi.dtype), spec)
        shape = [1] * (d + 1)
        shape[1 + ax] = plan.n1[ax]
        a = a / corr.reshape(shape).astype(a.dtype)
        # place mode m at index m mod n2 of a zero grid of n2 along this axis
        pad = jnp.zeros(a.shape[:1 + ax] + (plan.n2[ax],) + a.shape[2 + ax:], a.dtype)
        idx = np.mod(m, plan.n2[ax])
        a = pad.at[(slice(None),) * (1 + ax) + (idx,)].set(a)
    big = jnp.fft.fftn(a, axes=tuple(range(1, d + 1)))  # A_l = Σ_m a_m exp(-i2π m l / n2)
    u2 = zeta * h * jnp.asarray(n2, xi.dtype)[:, None]
    g = _interp(big, u2, spec)
    # 3) deconvolve the spreading kernel at each frequency
    corr = jnp.ones(zeta.shape[1], xi.dtype)
    for ax in range(d):
        corr = corr * _kernel_ft(zeta[ax] * h[ax], spec)
    return g / corr[None, :].astype(g.dtype)


def chebyshev_nodes(a: float, b: float, order: int) -> np.ndarray:
    """``order`` Chebyshev points of the first kind on ``[a, b]``."""
    k = np.arange(order)
    return 0.5 * (a + b) + 0.5 * (b - a) * np.cos(np.pi * (2 * k + 1) / (2 * order))


def lagrange_basis(nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(len(nodes), len(t)) Lagrange basis polynomials of ``nodes`` evaluated at ``t``."""
    nodes = np.asarray(nodes, float)
    t = np.asarray(t, float)
    out = np.ones((nodes.size, t.size))
    for i in range(nodes.size):
        for j in range(nodes.size):
            if i != j:
                out[i] *= (t - nodes[j]) / (nodes[i] - nodes[j])
    return out


def expansion_bound(rate_times_length: float, order: int) -> float:
    """Bound on ``max |exp(-λt) - p(t)|`` over ``t ∈ [0, T]`` for the degree ``order - 1``
    Chebyshev interpolant ``p`` of ``exp(-λt)``, ``Re λ ≥ 0`` and ``|λ| T = rate_times_length``:
    ``|λ|^L (T/2)^L / (2^(L-1) L!) = 2 (|λ|T/4)^L / L!``."""
    x = float(rate_times_length)
    if x == 0.0:
        return 0.0
    return 2.0 * math.exp(order * math.log(x / 4.0) - math.lgamma(order + 1))


def expansion_order(rate_times_length: float, tol: float, max_order: int = 64):
    """Smallest Chebyshev order whose `expansion_bound` is ``<= tol`` (1 when the rate
    spread is 0), and the bound reached. Raises ValueError when ``max_order`` is not enough."""
    if rate_times_length <= 0.0:
        return 1, 0.0
    for order in range(1, max_order + 1):
        bound = expansion_bound(rate_times_length, order)
        if bound <= tol:
            return order, bound
    raise ValueError(
        f"NUFFT readout: tolerance {tol:g} needs more than {max_order} expansion terms for a "
        f"window with |Δλ|·T = {rate_times_length:.3g} (decay and off-resonance spread times "
        f"window length); {max_order} terms reach {expansion_bound(rate_times_length, max_order):.2g}"
    )
