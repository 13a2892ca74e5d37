"""The `Twin`: spin-wise tissue parameters, an immutable JAX pytree."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._arrays import to_device

__all__ = ["Twin"]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_float_array(x):
    if x is None:
        return None
    if isinstance(x, jax.Array):
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"expected a numeric array, got dtype {arr.dtype}")
    return to_device(arr)


def _as_complex_array(x):
    if x is None:
        return None
    if isinstance(x, jax.Array):
        return x
    return to_device(np.asarray(x))


def _as_int_array(x):
    if x is None:
        return None
    if isinstance(x, jax.Array):
        return x
    return to_device(np.asarray(x, dtype=np.int32))


class Twin(eqx.Module):
    """Spin-wise tissue parameters of a digital twin. All fields are SI.

    A twin is a set of isochromats ("spins"), each with a position in the scanner frame
    and its own relaxation times, proton density and off-resonance. It is an immutable
    pytree (an `equinox.Module`): use `dataclasses.replace(twin, t1=...)` or
    `eqx.tree_at` to derive a modified twin, and pass it through `jax.jit`, `jax.grad`
    and `jax.vmap` freely.

    Args:
        position: (n_spins, 3) spin positions [m] in the scanner (gradient) frame.
        pd: (n_spins,) proton density [a.u.], >= 0. It is the equilibrium
            magnetization M0 of each isochromat.
        t1: (n_spins,) longitudinal relaxation time [s], > 0; ``inf`` means no
            T1 relaxation.
        t2: (n_spins,) transverse relaxation time [s], > 0; ``inf`` allowed.
        t2_prime: optional (n_spins,) reversible dephasing time T2' [s], > 0
            (``1/T2* = 1/T2 + 1/T2'``). A single isochromat cannot dephase reversibly:
            T2' takes effect when `with_isochromats` spreads each spin over a
            Lorentzian off-resonance distribution.
        delta_f: optional (n_spins,) off-resonance [Hz] (B0 inhomogeneity and chemical
            shift). Positive ``delta_f`` precesses as ``exp(-i 2π Δf t)``.
        diffusion: optional (n_spins,) apparent diffusion coefficient [m²/s], >= 0.
        b1: optional (n_spins,) relative transmit field B1+ scale [1] (1 = nominal).
        coil_sensitivity: optional (n_coils, n_spins) complex receive sensitivities.
        label: optional (n_spins,) integer tissue label of each spin (for regions of
            interest); ``label_names[label]`` names it.
        label_names: names of the labels (static metadata).

    Raises:
        ValueError: a field has the wrong shape, a NaN, or a value out of range (the
            message names the field). Value checks run only on concrete arrays (not
            under `jax.jit` tracing).

    Example:
        >>> import mritwin as mt, numpy as np
        >>> twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[0.1])
        >>> twin.n_spins
        1
    """

    position: jax.Array = eqx.field(converter=_as_float_array)
    pd: jax.Array = eqx.field(converter=_as_float_array)
    t1: jax.Array = eqx.field(converter=_as_float_array)
    t2: jax.Array = eqx.field(converter=_as_float_array)
    t2_prime: jax.Array | None = eqx.field(default=None, converter=_as_float_array)
    delta_f: jax.Array | None = eqx.field(default=None, converter=_as_float_array)
    diffusion: jax.Array | None = eqx.field(default=None, converter=_as_float_array)
    b1: jax.Array | None = eqx.field(default=None, converter=_as_float_array)
    coil_sensitivity: jax.Array | None = eqx.field(default=None, converter=_as_complex_array)
    label: jax.Array | None = eqx.field(default=None, converter=_as_int_array)
    label_names: tuple[str, ...] = eqx.field(default=(), static=True, converter=tuple)

    def __check_init__(self):
        if self.position.ndim != 2 or self.position.shape[-1] != 3:
            raise ValueError(
                f"Twin.position must have shape (n_spins, 3) [m], got {tuple(self.position.shape)}"
            )
        n = self.position.shape[0]
        for name in ("pd", "t1", "t2", "t2_prime", "delta_f", "diffusion", "b1", "label"):
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != (n,):
                raise ValueError(
                    f"Twin.{name} must have shape (n_spins,) = ({n},) to match position, "
                    f"got {tuple(v.shape)}"
                )
        cs = self.coil_sensitivity
        if cs is not None and (cs.ndim != 2 or cs.shape[1] != n):
            raise ValueError(
                f"Twin.coil_sensitivity must have shape (n_coils, n_spins) = (n_coils, {n}), "
                f"got {tuple(cs.shape)}"
            )
        # Value checks: only where the arrays are concrete (not under tracing).
        _check_values("position", self.position, finite=True)
        _check_values("pd", self.pd, nonneg=True, finite=True)
        _check_values("t1", self.t1, positive=True)
        _check_values("t2", self.t2, positive=True)
        _check_values("t2_prime", self.t2_prime, positive=True)
        _check_values("delta_f", self.delta_f, finite=True)
        _check_values("diffusion", self.diffusion, nonneg=True, finite=True)
        _check_values("b1", self.b1, nonneg=True, finite=True)
        # NumPy, not jnp: inside a jit trace a jnp op on a concrete array is staged (a tracer)
        if cs is not None and _is_concrete(cs) and not np.all(np.isfinite(np.asarray(cs))):
            raise ValueError("Twin.coil_sensitivity contains NaN or inf")
        if self.label is not None and self.label_names and _is_concrete(self.label):
            lab = np.asarray(self.label)
            if lab.size and (lab.min() < 0 or lab.max() >= len(self.label_names)):
                raise ValueError(
                    f"Twin.label values must index label_names (0..{len(self.label_names) - 1}), "
                    f"got range {lab.min()}..{lab.max()}"
                )

    @property
    def n_spins(self) -> int:
        """Number of isochromats."""
        return int(self.position.shape[0])

    @property
    def n_coils(self) -> int:
        """Number of receive coils (1 when no sensitivities are set)."""
        return 1 if self.coil_sensitivity is None else int(self.coil_sensitivity.shape[0])

    def replace(self, **changes) -> Twin:
        """Return a copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def __getitem__(self, index) -> Twin:
        """Select spins with a NumPy-style index (slice, boolean mask, integer array)."""
        def take(v):
            return None if v is None else v[index]

        cs = self.coil_sensitivity
        return Twin(
            position=self.position[index],
            pd=self.pd[index],
            t1=self.t1[index],
            t2=self.t2[index],
            t2_prime=take(self.t2_prime),
            delta_f=take(self.delta_f),
            diffusion=take(self.diffusion),
            b1=take(self.b1),
            coil_sensitivity=None if cs is None else cs[:, index],
            label=take(self.label),
            label_names=self.label_names,
        )

    def __repr__(self) -> str:
        extra = [
            n for n in ("t2_prime", "delta_f", "diffusion", "b1", "coil_sensitivity", "label")
            if getattr(self, n) is not None
        ]
        return f"Twin(n_spins={self.n_spins}, dtype={self.pd.dtype}, optional={extra})"


def _check_values(name, v, *, positive=False, nonneg=False, finite=False):
    """Range checks with two passes (min, max); details are computed only on failure."""
    if v is None or not _is_concrete(v):
        return
    a = np.asarray(v)
    if a.size == 0:
        return
    lo, hi = a.min(), a.max()  # NaN propagates
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"Twin.{name} contains NaN at {int(np.isnan(a).sum())} spin(s)")
    if finite and (np.isinf(lo) or np.isinf(hi)):
        raise ValueError(f"Twin.{name} contains inf (it must be finite)")
    if positive and lo <= 0:
        bad = a[a <= 0]
        raise ValueError(
            f"Twin.{name} must be > 0 [s] (use inf for no relaxation), got {bad.size} "
            f"value(s) <= 0, e.g. {bad.flat[0]}"
        )
    if nonneg and lo < 0:
        bad = a[a < 0]
        raise ValueError(f"Twin.{name} must be >= 0, got {bad.size} negative value(s), e.g. {bad.flat[0]}")
