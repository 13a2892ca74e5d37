"""Several isochromats per voxel: spatial spread over the voxel and a T2' distribution.

A voxel holding one isochromat cannot dephase: gradient spoiling, RF spoiling and
reversible T2' decay (T2*) all come from the spread of phases *inside* a voxel. This
module replaces every spin of a twin by ``n`` isochromats spread over the voxel extent
and, where the twin has ``t2_prime``, over a Lorentzian (Cauchy) off-resonance
distribution whose free-induction decay is ``exp(-t/T2')``.

Deterministic by default: positions follow a low-discrepancy (Kronecker / R-sequence)
pattern mirrored in pairs (so the isochromats' centroid is the voxel centre) and frequencies are the Lorentzian's quantiles at ``(k + 1/2)/n``.
Pass ``key`` to draw both at random instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .twin import Twin

__all__ = ["with_isochromats", "lorentzian_offsets"]


def _r_sequence(n: int, dim: int) -> np.ndarray:
    """Roberts' R_d low-discrepancy sequence in [0, 1)^dim, shape (n, dim)."""
    # phi_d is the unique positive root of x^(d+1) = x + 1.
    phi = 2.0
    for _ in range(64):
        phi = (1.0 + phi) ** (1.0 / (dim + 1))
    alpha = (1.0 / phi) ** np.arange(1, dim + 1)
    k = np.arange(n)[:, None] + 0.5
    return np.mod(k * alpha[None, :], 1.0)


def _symmetric_pattern(n: int) -> np.ndarray:
    """(n, 3) points in [0, 1)^3 from the R_3 sequence, mirrored in pairs so their mean is
    exactly the voxel centre (0.5, 0.5, 0.5)."""
    base = _r_sequence(n // 2, 3)
    pts = np.concatenate([base, 1.0 - base, np.full((n % 2, 3), 0.5)])
    return pts


def lorentzian_offsets(n: int) -> np.ndarray:
    """Quantiles of the standard Cauchy distribution at ``(k + 1/2)/n``, shape (n,).

    Multiply by ``1 / (2π T2')`` [Hz] to get off-resonances whose summed free
    induction decay approximates ``exp(-|t|/T2')`` (the Fourier transform of a
    Lorentzian of half width ``1/(2π T2')``). The approximation holds for
    ``t ≲ n T2' / 4`` and improves with ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    u = (np.arange(n) + 0.5) / n
    return np.tan(np.pi * (u - 0.5))


def with_isochromats(
    twin: Twin,
    n: int,
    voxel_size=(0.0, 0.0, 0.0),
    *,
    spread_t2_prime: bool = True,
    key: jax.Array | None = None,
) -> Twin:
    """Replace each spin by ``n`` isochromats spread over its voxel and a T2' distribution.

    Args:
        twin: the twin; each spin is taken as the centre of a voxel.
        n: isochromats per spin (>= 1).
        voxel_size: (3,) voxel extent [m] along x, y, z (0 along an axis = no spread),
            or (n_spins, 3) per spin.
        spread_t2_prime: when the twin has ``t2_prime``, spread the isochromats'
            off-resonance over a Lorentzian of half width ``1/(2π T2')`` [Hz] and drop
            ``t2_prime`` from the result (it is now represented explicitly).
        key: optional `jax.random` key; draws uniform positions and Cauchy offsets
            instead of the deterministic pattern.

    Returns:
        A twin with ``n * twin.n_spins`` spins, each with ``pd / n`` (so signals keep
        their scale), ordered spin-major (the ``n`` isochromats of spin 0 first).

    Raises:
        ValueError: ``n < 1`` or a voxel size of the wrong shape or sign.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n (isochromats per spin) must be an integer >= 1, got {n}")
    n = int(n)
    vs = jnp.asarray(voxel_size, dtype=twin.position.dtype)
    if vs.shape not in ((3,), (twin.n_spins, 3)):
        raise ValueError(f"voxel_size must have shape (3,) or (n_spins, 3) [m], got {vs.shape}")
    # NumPy, not jnp: inside a jit trace a jnp op on a concrete array is staged (a tracer)
    if not isinstance(vs, jax.core.Tracer) and np.any(np.asarray(vs) < 0):
        raise ValueError("voxel_size must be >= 0 [m]")

    if key is None:
        u = jnp.asarray(_symmetric_pattern(n), dtype=twin.position.dtype)  # (n, 3)
        q = jnp.asarray(lorentzian_offsets(n), dtype=twin.position.dtype)  # (n,)
        u = jnp.broadcast_to(u, (twin.n_spins, n, 3))
        q = jnp.broadcast_to(q, (twin.n_spins, n))
    else:
        k1, k2 = jax.random.split(key)
        u = jax.random.uniform(k1, (twin.n_spins, n, 3), dtype=twin.position.dtype)
        q = jax.random.cauchy(k2, (twin.n_spins, n), dtype=twin.position.dtype)
    vs = jnp.broadcast_to(vs, (twin.n_spins, 3))
    offsets = (u - 0.5) * vs[:, None, :]
    position = (twin.position[:, None, :] + offsets).reshape(-1, 3)

    def rep(v):
        return None if v is None else jnp.repeat(v, n, axis=0)

    delta_f = twin.delta_f
    t2_prime = twin.t2_prime
    if spread_t2_prime and t2_prime is not None:
        width = 1.0 / (2.0 * jnp.pi * t2_prime)  # Lorentzian half width [Hz]
        width = jnp.where(jnp.isinf(t2_prime), 0.0, width)
        spread = (width[:, None] * q).reshape(-1)
        delta_f = spread if delta_f is None else rep(delta_f) + spread
        t2_prime = None
    else:
        delta_f = rep(delta_f)
        t2_prime = rep(t2_prime)

    cs = twin.coil_sensitivity
    return Twin(
        position=position,
        pd=rep(twin.pd) / n,
        t1=rep(twin.t1),
        t2=rep(twin.t2),
        t2_prime=t2_prime,
        delta_f=delta_f,
        diffusion=rep(twin.diffusion),
        b1=rep(twin.b1),
        coil_sensitivity=None if cs is None else jnp.repeat(cs, n, axis=1),
        label=rep(twin.label),
        label_names=twin.label_names,
    )
