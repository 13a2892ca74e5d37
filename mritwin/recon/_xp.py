"""Array backend: NumPy for concrete data (fast, no compilation), jax.numpy under tracing.

`reconstruct` works on either: with concrete inputs it runs in NumPy (small problems
would otherwise spend most of their time compiling dozens of one-off XLA kernels); under
`jax.grad`/`jax.jit` the same code runs in jax.numpy, so it stays differentiable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def backend(*arrays):
    """``jax.numpy`` if any argument is a JAX tracer, else ``numpy``."""
    return jnp if any(isinstance(a, jax.core.Tracer) for a in arrays) else np


def set_at(xp, arr, index, values):
    """``arr[index] = values`` functionally (a new array under JAX)."""
    if xp is np:
        arr[index] = values
        return arr
    return arr.at[index].set(values)


def add_columns(xp, flat, idx, values):
    """``flat[:, idx] += values`` with repeated indices accumulated; flat (B, M), values (B, K)."""
    if xp is not np:
        return flat.at[:, idx].add(values)
    m = flat.shape[1]
    idx = np.asarray(idx).ravel()
    for b in range(flat.shape[0]):
        v = values[b].ravel()
        if np.iscomplexobj(flat):
            flat[b] += np.bincount(idx, v.real, m) + 1j * np.bincount(idx, v.imag, m)
        else:
            flat[b] += np.bincount(idx, v, m)
    return flat
