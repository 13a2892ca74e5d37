"""Rigid motion of the whole twin during a simulation.

A rigid motion maps a spin at rest position ``r0`` to

    r(t) = R(t) (r0 - c) + c + d(t)

with a rotation ``R(t)`` about the centre ``c`` [m] and a translation ``d(t)`` [m].
Within each simulation step the motion is linearized about the step's midpoint, and the
gradient's zeroth and first moments (``k0 = γ̄∫G dt``, ``k1 = γ̄∫G (t - t_mid) dt``) give
the phase exactly for motion that is linear over the step:

    φ/2π = k0·r(t_mid) + k1·ṙ(t_mid)
         = (Rᵀk0 + Ṙᵀk1)·r0 + [k0·(c + d) + k1·ḋ - (Rᵀk0 + Ṙᵀk1)·c]

so rigid motion only changes the per-step k-vector and adds one per-step phase: its cost
does not depend on the number of spins. (With a rotation, ADC windows are stepped sample
by sample, since consecutive intervals are no longer identical; a translation keeps them
as windows, each sample with a phase common to all spins, and keeps the engine's spin
groups: see docs/motion.md.)

All models are pure functions of time, vectorized over an array of times, and
differentiable in their parameters.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np

__all__ = ["AbstractMotion", "Translation", "PeriodicTranslation", "RigidPath"]


def _vec3(x, name):
    a = jnp.asarray(x, dtype=float) if not isinstance(x, np.ndarray) else np.asarray(x, dtype=float)
    if a.shape != (3,):
        raise ValueError(f"{name} must be a 3-vector [m or m/s], got shape {a.shape}")
    return a


class AbstractMotion(eqx.Module):
    """A rigid motion ``r(t) = R(t)(r0 - c) + c + d(t)``."""

    @abc.abstractmethod
    def evaluate(self, t):
        """At times ``t`` (n,) [s]: ``R`` (n, 3, 3), ``dR/dt`` (n, 3, 3) [1/s], ``d`` (n, 3) [m],
        ``dd/dt`` (n, 3) [m/s]."""

    @property
    def center(self):
        return np.zeros(3)

    def displacement(self, position, t):
        """Positions (n_spins, 3) [m] at one time ``t`` [s] of spins at rest at ``position``."""
        r, _, d, _ = self.evaluate(np.atleast_1d(float(t)))
        c = self.center
        return (jnp.asarray(position) - c) @ r[0].T + c + d[0]


def _identity(n):
    return np.broadcast_to(np.eye(3), (n, 3, 3)), np.zeros((n, 3, 3))


class Translation(AbstractMotion):
    """Translation with constant velocity: ``d(t) = offset + velocity * t``.

    Args:
        velocity: (3,) [m/s].
        offset: (3,) displacement at t = 0 [m].
    """

    velocity: jnp.ndarray = eqx.field(converter=lambda v: _vec3(v, "velocity"), default=(0.0, 0.0, 0.0))
    offset: jnp.ndarray = eqx.field(converter=lambda v: _vec3(v, "offset"), default=(0.0, 0.0, 0.0))

    def evaluate(self, t):
        t = np.asarray(t, float)
        r, rd = _identity(t.size)
        d = self.offset[None, :] + t[:, None] * self.velocity[None, :]
        dd = jnp.broadcast_to(self.velocity, (t.size, 3))
        return r, rd, d, dd


class PeriodicTranslation(AbstractMotion):
    """Periodic translation ``d(t) = amplitude * sin(2π t / period + phase)`` (e.g. breathing).

    Args:
        amplitude: (3,) peak displacement [m].
        period: [s], > 0.
        phase: [rad].
    """

    amplitude: jnp.ndarray = eqx.field(converter=lambda v: _vec3(v, "amplitude"))
    period: float = eqx.field(static=True, converter=float)
    phase: float = 0.0

    def __check_init__(self):
        if not float(self.period) > 0:
            raise ValueError(f"PeriodicTranslation.period must be > 0 [s], got {self.period}")

    def evaluate(self, t):
        t = np.asarray(t, float)
        r, rd = _identity(t.size)
        w = 2 * np.pi / self.period
        arg = w * t + self.phase
        d = jnp.sin(arg)[:, None] * self.amplitude[None, :]
        dd = (w * jnp.cos(arg))[:, None] * self.amplitude[None, :]
        return r, rd, d, dd


class RigidPath(AbstractMotion):
    """A sampled rigid path: translations and rotation vectors at given times, linearly
    interpolated (held constant outside the sampled range).

    Args:
        times: (n_t,) increasing sample times [s].
        translations: (n_t, 3) translation [m].
        rotations: optional (n_t, 3) rotation vectors [rad] (axis × angle) about ``center``.
        rotation_center: (3,) centre of rotation [m].
    """

    times: tuple = eqx.field(static=True, converter=lambda t: tuple(float(x) for x in np.ravel(t)))
    translations: jnp.ndarray
    rotations: jnp.ndarray | None = None
    rotation_center: tuple = eqx.field(static=True, default=(0.0, 0.0, 0.0),
                                       converter=lambda c: tuple(float(x) for x in np.ravel(c)))

    def __check_init__(self):
        t = np.asarray(self.times)
        if t.size < 2 or np.any(np.diff(t) <= 0):
            raise ValueError("RigidPath.times must have >= 2 strictly increasing values [s]")
        for name in ("translations", "rotations"):
            v = getattr(self, name)
            if v is not None and tuple(np.shape(v)) != (t.size, 3):
                raise ValueError(f"RigidPath.{name} must have shape (n_times, 3) = ({t.size}, 3), "
                                 f"got {tuple(np.shape(v))}")

    @property
    def center(self):
        return np.asarray(self.rotation_center, float)

    def _interp(self, values, t):
        ts = np.asarray(self.times)
        tc = np.clip(t, ts[0], ts[-1])
        i = np.clip(np.searchsorted(ts, tc, side="right") - 1, 0, ts.size - 2)
        w = (tc - ts[i]) / (ts[i + 1] - ts[i])
        v = jnp.asarray(values)
        val = v[i] * (1 - w)[:, None] + v[i + 1] * w[:, None]
        inside = (t > ts[0]) & (t < ts[-1])
        slope = (v[i + 1] - v[i]) / (ts[i + 1] - ts[i])[:, None] * inside[:, None]
        return val, slope

    def evaluate(self, t):
        t = np.asarray(t, float)
        d, dd = self._interp(self.translations, t)
        if self.rotations is None:
            r, rd = _identity(t.size)
            return r, rd, d, dd
        theta, theta_dot = self._interp(self.rotations, t)
        r = _rodrigues(theta)
        h = 1e-6
        rd = (_rodrigues(theta + h * theta_dot) - _rodrigues(theta - h * theta_dot)) / (2 * h)
        return r, rd, d, dd


def _rodrigues(theta):
    """(n, 3) rotation vectors -> (n, 3, 3) rotation matrices."""
    ang = jnp.sqrt(jnp.sum(theta * theta, axis=-1) + 1e-300)
    k = theta / ang[:, None]
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    z = jnp.zeros_like(kx)
    kmat = jnp.stack([jnp.stack([z, -kz, ky], -1), jnp.stack([kz, z, -kx], -1),
                      jnp.stack([-ky, kx, z], -1)], -2)
    s, c = jnp.sin(ang)[:, None, None], jnp.cos(ang)[:, None, None]
    eye = jnp.eye(3)[None]
    return eye + s * kmat + (1 - c) * (kmat @ kmat)
