"""NumPy data to the device without compiling a program for it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_device(x, dtype=None):
    """``jnp.asarray(x, dtype)``, with NumPy data cast on the host and copied as it is.

    Eager, `jnp.asarray` of a NumPy array compiles a small program per shape and dtype (a
    "stage", and a "convert_element_type" for a cast; JAX 0.10), ~10 ms each, paid again for
    every new sequence length; `jax.device_put` of the cast array compiles nothing. Other
    values (JAX arrays, tracers, Python scalars, which stay weakly typed) go through
    `jnp.asarray`.
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return jax.device_put(x if dtype is None else np.asarray(x, dtype=jnp.dtype(dtype)))
    return jnp.asarray(x, dtype)
