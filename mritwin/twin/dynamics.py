"""A twin that lives: per-spin motion, flow, diffusion random walks and contrast agents.

Pass one model, or a tuple of models, to ``mritwin.simulate(..., dynamics=...)``:

- `DisplacementField`: ``r_j(t) = r0_j + a_j f(t)`` with a periodic waveform ``f``
  (`RespiratoryWaveform`, `CardiacWaveform`): breathing or cardiac displacement of part
  of a twin.
- `SpinPaths`: arbitrary time-sampled per-spin trajectories, linearly interpolated.
- `Flow`: constant per-spin velocities inside a box; a spin that leaves the box re-enters
  on the other side with fresh (equilibrium) magnetization: inflow and flow phase.
- `RandomWalk`: Brownian isochromat random walks with per-spin ``twin.diffusion`` (the
  tissue library's ADC when the twin was built from labels).
- `ContrastAgent`: ``1/T1_j(t) = 1/T1_j + r1 C_j(t)`` (and T2 likewise) from
  concentration curves, e.g. a `parker_aif` population arterial input function and
  `tofts` tissue uptake.

How the engine uses them (``mritwin.simulate``): ADC windows are stepped, free periods
are cut into steps of at most ``max_step`` (the smallest of the models' values, when any),
and at every step the positions, velocities and relaxation rates are evaluated at the
step's midpoint ``t_mid``. The phase of a step is

    φ/2π = k0·r(t_mid) + k1·v(t_mid) + Δf dt

with the step's gradient moments ``k0 = γ̄∫G dt`` and ``k1 = γ̄∫G (t - t_mid) dt``, which
is exact for motion that is linear within the step (constant velocity) however long the
step. Without dynamics the engine is compiled exactly as before (no cost).

All models are `equinox.Module` pytrees, pure and differentiable in their array
parameters. Units are SI; concentrations are in mM (= mol/m³), relaxivities in
1/(mM·s) and transfer constants (``ktrans``) in 1/s (not 1/min).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AbstractDynamics",
    "AbstractWaveform",
    "RespiratoryWaveform",
    "CardiacWaveform",
    "DisplacementField",
    "SpinPaths",
    "Flow",
    "RandomWalk",
    "ContrastAgent",
    "Effect",
    "PARKER_2006",
    "parker_aif",
    "tofts",
    "combine_effects",
]


# ---------------------------------------------------------------------------------------
# validation helpers


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _array(x, name, *, dtype=None):
    """``x`` as a JAX array: floating point, or ``dtype`` when given."""
    if x is None:
        raise ValueError(f"{name} is required, got None")
    if isinstance(x, jax.Array):
        if dtype is not None:
            return x.astype(dtype)
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)
    try:
        a = np.asarray(x, dtype=float if dtype is None else dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {e}") from None
    return jnp.asarray(a)


def _check_finite(name, x, *, nonneg=False, allow_inf=False):
    if x is None or not _concrete(x):
        return
    a = np.asarray(x)
    if a.size == 0:
        return
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN at {int(np.isnan(a).sum())} entries (expected finite values)")
    if not allow_inf and np.isinf(a).any():
        raise ValueError(f"{name} contains inf at {int(np.isinf(a).sum())} entries (expected finite values)")
    if nonneg and (a < 0).any():
        raise ValueError(f"{name} must be >= 0, got {int((a < 0).sum())} negative value(s), e.g. {a[a < 0].flat[0]}")


def _check_times(name, t):
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n_times,) with n_times >= 2, got {tuple(t.shape)}")
    _check_finite(name, t)
    if _concrete(t) and np.any(np.diff(np.asarray(t)) <= 0):
        raise ValueError(f"{name} must be strictly increasing [s]")


def _per_spin_vectors(name, v, n):
    """(3,) or (n, 3) -> (n, 3)."""
    v = jnp.asarray(v)
    if v.shape == (3,):
        return jnp.broadcast_to(v, (n, 3))
    if v.shape != (n, 3):
        raise ValueError(f"{name} must have shape (3,) or (n_spins, 3) = ({n}, 3), got {tuple(v.shape)}")
    return v


def _interp_index(times, t):
    """Index ``i`` and weight ``w`` of linear interpolation at scalar ``t`` (held outside),
    and whether ``t`` is strictly inside the sampled range."""
    n = times.shape[0]
    i = jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, n - 2)
    t0, t1 = times[i], times[i + 1]
    w = jnp.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    inside = (t > times[0]) & (t < times[-1])
    return i, w, t1 - t0, inside


# ---------------------------------------------------------------------------------------
# the engine interface


class Effect(NamedTuple):
    """What the dynamics do to a chunk of spins over one step (``None``: nothing).

    Attributes:
        displacement: (n, 3) position at the step midpoint minus the rest position [m].
        velocity: (n, 3) velocity at the step midpoint [m/s].
        r1: (n,) added longitudinal relaxation rate [1/s].
        r2: (n,) added transverse relaxation rate [1/s].
        reset: (n,) bool: replace the magnetization by the equilibrium ``(0, 0, pd)``
            before the step (a fresh spin entered).
    """

    displacement: jax.Array | None = None
    velocity: jax.Array | None = None
    r1: jax.Array | None = None
    r2: jax.Array | None = None
    reset: jax.Array | None = None


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def combine_effects(models, spin_arrays, states, t, dt, index, chunk_id):
    """Evaluate every model over one step and add their effects (resets are or-ed).

    Args:
        models: tuple of models (as returned by `AbstractDynamics.kernel`).
        spin_arrays: tuple of per-model dicts of per-spin arrays for the chunk.
        states: tuple of per-model states.
        t: step midpoint [s]; dt: step duration [s]; index: step index (int);
        chunk_id: global chunk index (int).

    Returns:
        ``(Effect, new_states)``.
    """
    total = Effect()
    new = []
    for model, spin, state in zip(models, spin_arrays, states):
        eff, st = model.effect(spin, state, t, dt, index, chunk_id)
        new.append(st)
        reset = total.reset if eff.reset is None else (
            eff.reset if total.reset is None else total.reset | eff.reset)
        total = Effect(_add(total.displacement, eff.displacement), _add(total.velocity, eff.velocity),
                       _add(total.r1, eff.r1), _add(total.r2, eff.r2), reset)
    return total, tuple(new)


class AbstractDynamics(eqx.Module):
    """Base of the dynamics models passed to ``simulate(..., dynamics=...)``.

    A model splits into per-spin arrays (`spin_arrays`, chunked by the engine with the
    spins) and a *kernel* (the model without them) whose `effect` is evaluated at every
    step of the scan.
    """

    _per_spin_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def max_step(self) -> float | None:
        """Longest simulation step this model needs [s] (``None``: no limit)."""
        return None

    def spin_arrays(self, twin) -> dict:
        """Per-spin arrays for ``twin`` (leading axis n_spins), validated.

        Raises:
            ValueError: shapes do not match ``twin.n_spins`` or values are invalid.
        """
        return {}

    def kernel(self) -> AbstractDynamics:
        """This model without its per-spin arrays (so compiled shapes do not depend on them)."""
        out = self
        for name in self._per_spin_fields:
            if getattr(out, name) is not None:
                out = eqx.tree_at(lambda m, name=name: getattr(m, name), out, None)
        return out

    def init_state(self, spin: dict, dtype):
        """Initial per-chunk state (a pytree; ``()`` for stateless models)."""
        return ()

    def effect(self, spin: dict, state, t, dt, index, chunk_id):
        """``(Effect, new_state)`` over the step of duration ``dt`` centred at ``t`` [s]."""
        raise NotImplementedError(f"{type(self).__name__} does not implement effect()")


# ---------------------------------------------------------------------------------------
# periodic waveforms


class AbstractWaveform(eqx.Module):
    """A scalar function of time ``f(t)`` and its derivative, for `DisplacementField`."""

    def __call__(self, t):
        """``(f(t), df/dt(t))`` at times ``t`` [s] (any shape) -> same shapes [1], [1/s]."""
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


def _check_rate(cls, rate):
    if _concrete(rate):
        r = float(np.asarray(rate))
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"{cls}.rate must be a finite frequency > 0 [Hz], got {r}")


class RespiratoryWaveform(AbstractWaveform):
    """Breathing: ``f(t) = cos^(2n)(π rate t − phase)``, between 0 and 1.

    The model of Lujan et al., "A method for incorporating organ motion due to breathing
    into 3D dose calculations", Med. Phys. 26 (1999) 715–720. ``f`` is 1 at the peak and
    0 at rest; a larger ``n`` makes the peaks narrower and the rests longer (``n`` = 2 or 3
    fit liver data). With a `DisplacementField` amplitude equal to the rest-to-peak
    displacement, the twin's positions are the rest (end-exhale) positions.

    Args:
        rate: breathing rate [Hz] (breaths per second), > 0.
        phase: [rad].
        power: the exponent ``n`` (positive integer).
    """

    rate: jax.Array
    phase: jax.Array = eqx.field(default=0.0)
    power: int = eqx.field(default=3, static=True)

    def __check_init__(self):
        _check_rate("RespiratoryWaveform", self.rate)
        if int(self.power) != self.power or self.power < 1:
            raise ValueError(f"RespiratoryWaveform.power must be a positive integer, got {self.power}")

    def __call__(self, t):
        th = jnp.pi * self.rate * t - self.phase
        c, s = jnp.cos(th), jnp.sin(th)
        n = self.power
        return c ** (2 * n), -2 * n * c ** (2 * n - 1) * s * jnp.pi * self.rate


class CardiacWaveform(AbstractWaveform):
    """Heart beat: ``f(t) = Σ_h a_h sin(2π h rate t + h phase)``, h = 1, 2, ...

    Args:
        rate: heart rate [Hz] (beats per second), > 0.
        phase: [rad].
        harmonics: (n_h,) amplitudes ``a_h`` [1] of the harmonics (default a pure sine).
    """

    rate: jax.Array
    phase: jax.Array = eqx.field(default=0.0)
    harmonics: jax.Array = eqx.field(default=(1.0,), converter=lambda a: _array(a, "CardiacWaveform.harmonics"))

    def __check_init__(self):
        _check_rate("CardiacWaveform", self.rate)
        if self.harmonics.ndim != 1 or self.harmonics.shape[0] < 1:
            raise ValueError(f"CardiacWaveform.harmonics must have shape (n_harmonics,), got "
                             f"{tuple(self.harmonics.shape)}")
        _check_finite("CardiacWaveform.harmonics", self.harmonics)

    def __call__(self, t):
        t = jnp.asarray(t)
        h = jnp.arange(1, self.harmonics.shape[0] + 1, dtype=t.dtype if jnp.issubdtype(t.dtype, jnp.floating)
                       else float)
        arg = 2 * jnp.pi * self.rate * h * t[..., None] + h * self.phase
        f = jnp.sum(self.harmonics * jnp.sin(arg), -1)
        fd = jnp.sum(self.harmonics * 2 * jnp.pi * self.rate * h * jnp.cos(arg), -1)
        return f, fd


# ---------------------------------------------------------------------------------------
# motion models


class DisplacementField(AbstractDynamics):
    """Per-spin periodic displacement ``r_j(t) = r0_j + amplitude_j f(t)``.

    Spins with zero amplitude stay still, so a field can move part of a twin (the liver
    with the breath, the heart with the beat) while the rest does not.

    Args:
        amplitude: (n_spins, 3) or (3,) displacement per unit of ``f`` [m].
        waveform: the waveform ``f`` (`RespiratoryWaveform`, `CardiacWaveform`).

    Example:
        >>> import mritwin as mt, numpy as np
        >>> ctx = mt.PatientContext(respiratory_rate=0.25)
        >>> field = DisplacementField.respiratory(np.array([0.0, 0.0, 0.01]), ctx)
        >>> float(field.waveform.rate)
        0.25
    """

    amplitude: jax.Array = eqx.field(converter=lambda a: _array(a, "DisplacementField.amplitude"))
    waveform: AbstractWaveform = eqx.field(default=None)

    _per_spin_fields: ClassVar[tuple[str, ...]] = ("amplitude",)

    def __check_init__(self):
        if not isinstance(self.waveform, AbstractWaveform):
            raise ValueError(f"DisplacementField.waveform must be a waveform such as "
                             f"RespiratoryWaveform(rate=...), got {self.waveform!r}")
        if self.amplitude is not None:
            if self.amplitude.shape != (3,) and (self.amplitude.ndim != 2 or self.amplitude.shape[1] != 3):
                raise ValueError(f"DisplacementField.amplitude must have shape (n_spins, 3) or (3,) [m], "
                                 f"got {tuple(self.amplitude.shape)}")
            _check_finite("DisplacementField.amplitude", self.amplitude)

    @classmethod
    def respiratory(cls, amplitude, patient, *, power: int = 3, phase=0.0) -> DisplacementField:
        """A breathing field at the patient's respiratory rate (`RespiratoryWaveform`).

        Args:
            amplitude: (n_spins, 3) or (3,) peak displacement [m].
            patient: a `mritwin.PatientContext` with ``respiratory_rate``.
            power: the exponent ``n`` of ``cos^(2n)``.
            phase: [rad].
        """
        rate = 1.0 / patient.respiratory_period
        return cls(amplitude, RespiratoryWaveform(rate=rate, phase=phase, power=power))

    @classmethod
    def cardiac(cls, amplitude, patient, *, harmonics=(1.0,), phase=0.0) -> DisplacementField:
        """A cardiac field at the patient's heart rate (`CardiacWaveform`).

        Args:
            amplitude: (n_spins, 3) or (3,) displacement per unit of the waveform [m].
            patient: a `mritwin.PatientContext` with ``heart_rate``.
            harmonics: amplitudes of the harmonics of the waveform.
            phase: [rad].
        """
        rate = 1.0 / patient.cardiac_period
        return cls(amplitude, CardiacWaveform(rate=rate, phase=phase, harmonics=harmonics))

    def spin_arrays(self, twin) -> dict:
        return {"amplitude": _per_spin_vectors("DisplacementField.amplitude", self.amplitude, twin.n_spins)}

    def effect(self, spin, state, t, dt, index, chunk_id):
        f, fd = self.waveform(t)
        a = spin["amplitude"]
        return Effect(displacement=a * f, velocity=a * fd), state


class SpinPaths(AbstractDynamics):
    """Time-sampled per-spin trajectories, linearly interpolated in time.

    Before the first and after the last sample the positions are held (velocity 0).

    Args:
        times: (n_times,) strictly increasing sample times [s], n_times >= 2.
        positions: (n_spins, n_times, 3) absolute positions [m] (``twin.position`` is not
            used for these spins' positions).
    """

    times: jax.Array = eqx.field(converter=lambda a: _array(a, "SpinPaths.times"))
    positions: jax.Array = eqx.field(converter=lambda a: _array(a, "SpinPaths.positions"))

    _per_spin_fields: ClassVar[tuple[str, ...]] = ("positions",)

    def __check_init__(self):
        _check_times("SpinPaths.times", self.times)
        if self.positions is not None:
            n_t = self.times.shape[0]
            if self.positions.ndim != 3 or self.positions.shape[1:] != (n_t, 3):
                raise ValueError(f"SpinPaths.positions must have shape (n_spins, n_times, 3) = "
                                 f"(n_spins, {n_t}, 3) [m], got {tuple(self.positions.shape)}")
            _check_finite("SpinPaths.positions", self.positions)

    def spin_arrays(self, twin) -> dict:
        n = twin.n_spins
        if self.positions.shape[0] != n:
            raise ValueError(f"SpinPaths.positions must have shape (n_spins, n_times, 3) with n_spins = "
                             f"twin.n_spins = {n}, got {tuple(self.positions.shape)}")
        return {"offset": self.positions - jnp.asarray(twin.position)[:, None, :]}

    def effect(self, spin, state, t, dt, index, chunk_id):
        i, w, h, inside = _interp_index(self.times.astype(jnp.result_type(t)), t)
        off = spin["offset"]
        p0 = jnp.take(off, i, axis=1)
        p1 = jnp.take(off, i + 1, axis=1)
        disp = p0 * (1 - w) + p1 * w
        vel = jnp.where(inside, (p1 - p0) / h, 0.0)
        return Effect(displacement=disp, velocity=vel), state


class Flow(AbstractDynamics):
    """Constant-velocity spins in a box, with inflow of fresh magnetization.

    Spin ``j`` moves as ``r0_j + v_j t``, wrapped into the box ``[box_min, box_max)``
    along each axis where the box is finite. A spin that leaves the box during a step
    re-enters on the opposite face with its magnetization replaced by the equilibrium
    ``(0, 0, pd)`` before that step: blood that flows out is replaced by fresh, unsaturated
    blood (inflow enhancement). Inside the box the phase of a moving spin includes the flow
    phase ``2π γ̄ M1 v`` (first gradient moment), exactly for constant velocity.

    Args:
        velocity: (n_spins, 3) or (3,) velocity [m/s] (0 for static tissue).
        box_min: (3,) lower corner of the box [m]; ``-inf`` where unbounded.
        box_max: (3,) upper corner [m]; ``inf`` where unbounded. The flowing spins must
            start inside the box.

    Raises:
        ValueError: wrong shapes, NaN, ``box_max <= box_min``, or a spin starting
            outside the box.
    """

    velocity: jax.Array = eqx.field(converter=lambda a: _array(a, "Flow.velocity"))
    box_min: jax.Array = eqx.field(default=(-np.inf,) * 3, converter=lambda a: _array(a, "Flow.box_min"))
    box_max: jax.Array = eqx.field(default=(np.inf,) * 3, converter=lambda a: _array(a, "Flow.box_max"))

    _per_spin_fields: ClassVar[tuple[str, ...]] = ("velocity",)

    def __check_init__(self):
        for name in ("box_min", "box_max"):
            v = getattr(self, name)
            if v.shape != (3,):
                raise ValueError(f"Flow.{name} must have shape (3,) [m], got {tuple(v.shape)}")
            _check_finite(f"Flow.{name}", v, allow_inf=True)
        if _concrete(self.box_min) and _concrete(self.box_max):
            if np.any(np.asarray(self.box_max) <= np.asarray(self.box_min)):
                raise ValueError(f"Flow.box_max must be > box_min on every axis, got box_min = "
                                 f"{np.asarray(self.box_min)}, box_max = {np.asarray(self.box_max)}")
        if self.velocity is not None:
            v = self.velocity
            if v.shape != (3,) and (v.ndim != 2 or v.shape[1] != 3):
                raise ValueError(f"Flow.velocity must have shape (n_spins, 3) or (3,) [m/s], got {tuple(v.shape)}")
            _check_finite("Flow.velocity", v)

    def spin_arrays(self, twin) -> dict:
        n = twin.n_spins
        v = _per_spin_vectors("Flow.velocity", self.velocity, n)
        r0 = jnp.asarray(twin.position)
        if _concrete(r0) and _concrete(v) and _concrete(self.box_min):
            moving = np.any(np.asarray(v) != 0, axis=1)
            p = np.asarray(r0)[moving]
            lo, hi = np.asarray(self.box_min), np.asarray(self.box_max)
            out = ~np.all((p >= lo) & (p < hi), axis=1)
            if out.any():
                raise ValueError(f"Flow: {int(out.sum())} flowing spin(s) start outside the box "
                                 f"[box_min, box_max) = [{lo}, {hi}) [m], e.g. at {p[out][0]}")
        return {"velocity": v, "r0": r0}

    def effect(self, spin, state, t, dt, index, chunk_id):
        v, r0 = spin["velocity"], spin["r0"]
        lo = self.box_min.astype(r0.dtype)
        length = self.box_max.astype(r0.dtype) - lo
        finite = jnp.isfinite(length)
        ls = jnp.where(finite, length, 1.0)
        lo = jnp.where(finite, lo, 0.0)

        def cycles(tt):
            return (r0 + v * tt - lo) / ls

        u = cycles(t)
        pos = jnp.where(finite, lo + (u - jnp.floor(u)) * ls, r0 + v * t)
        crossed = jnp.floor(cycles(t - 0.5 * dt)) != jnp.floor(cycles(t + 0.5 * dt))
        reset = jnp.any(finite & crossed, axis=-1)
        return Effect(displacement=pos - r0, velocity=v, reset=reset), state


class RandomWalk(AbstractDynamics):
    """Brownian random walks of the isochromats (diffusion by Monte Carlo).

    At step ``i`` every spin takes a Gaussian step ``sqrt(2 D τ) N(0, 1)`` per axis, with
    ``τ`` the time between consecutive step midpoints, so positions are a Brownian path
    sampled at the midpoints; the random numbers come from ``fold_in(fold_in(key,
    chunk), i)``. The walk is reproducible for a given key and spin chunking
    (``Bloch.chunk_size`` and the number of devices). The phase of a walker then has the
    variance ``2 D b_step``, with ``b_step`` the midpoint rule of ``(2π)² ∫|k|² dt`` on the
    step boundaries (second order in the step: for a PGSE with 15 ms lobes and 0.5 ms
    ramps, ``b_step / b - 1`` is 1e-5 at 400 µs steps and 7e-7 at 200 µs), so the signal
    of many walkers approaches ``exp(-b D)`` (Stejskal–Tanner).

    Args:
        key: a `jax.random` key.
        diffusion: optional (n_spins,) diffusion coefficients [m²/s], >= 0; default
            ``twin.diffusion`` (the tissue library's ADC for twins built from labels).
        max_step: longest simulation step [s] (default 100 µs).

    Raises:
        ValueError: a missing ``twin.diffusion``, negative or non-finite values, a wrong
            shape, or ``max_step <= 0``.
    """

    key: jax.Array
    diffusion: jax.Array | None = eqx.field(
        default=None, converter=lambda a: None if a is None else _array(a, "RandomWalk.diffusion"))
    step: float = eqx.field(default=1e-4, static=True, converter=float)

    _per_spin_fields: ClassVar[tuple[str, ...]] = ("diffusion",)

    def __init__(self, key, diffusion=None, *, max_step: float = 1e-4):
        if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                                  or (key.dtype == jnp.uint32 and key.shape == (2,)))):
            raise ValueError(f"RandomWalk.key must be a jax.random key (e.g. jax.random.key(0)), got {key!r}")
        self.key = key
        self.diffusion = None if diffusion is None else _array(diffusion, "RandomWalk.diffusion")
        if not (math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"RandomWalk.max_step must be > 0 [s], got {max_step}")
        self.step = float(max_step)
        if self.diffusion is not None:
            if self.diffusion.ndim != 1:
                raise ValueError(f"RandomWalk.diffusion must have shape (n_spins,) [m^2/s], got "
                                 f"{tuple(self.diffusion.shape)}")
            _check_finite("RandomWalk.diffusion", self.diffusion, nonneg=True)

    @property
    def max_step(self) -> float:
        return self.step

    def spin_arrays(self, twin) -> dict:
        d = self.diffusion if self.diffusion is not None else twin.diffusion
        if d is None:
            raise ValueError("RandomWalk needs diffusion coefficients: set twin.diffusion [m^2/s] (twins "
                             "built from labels take the tissue ADC) or pass RandomWalk(key, diffusion=...)")
        if tuple(d.shape) != (twin.n_spins,):
            raise ValueError(f"RandomWalk.diffusion must have shape (n_spins,) = ({twin.n_spins},), "
                             f"got {tuple(d.shape)}")
        return {"sigma": jnp.sqrt(2.0 * jnp.asarray(d))}

    def init_state(self, spin, dtype):
        n = spin["sigma"].shape[0]
        return jnp.zeros((n, 3), dtype), jnp.zeros((), dtype)

    def effect(self, spin, state, t, dt, index, chunk_id):
        walk, dt_prev = state
        sigma = spin["sigma"]
        tau = 0.5 * (dt_prev + dt)
        k = jax.random.fold_in(jax.random.fold_in(self.key, chunk_id), index)
        xi = jax.random.normal(k, walk.shape, walk.dtype)
        walk = walk + (sigma * jnp.sqrt(tau))[:, None] * xi
        return Effect(displacement=walk), (walk, dt.astype(dt_prev.dtype))


# ---------------------------------------------------------------------------------------
# contrast agents


#: Population-averaged arterial input function of Parker et al., "Experimentally-derived
#: functional form for a population-averaged high-temporal-resolution arterial input
#: function for dynamic contrast-enhanced MRI", Magn. Reson. Med. 56 (2006) 993–1000,
#: Table 1 (whole-blood concentration, Gd-DTPA-BMA 0.1 mmol/kg), in the paper's units:
#: A [mmol·min], T and sigma [min], alpha [mmol], beta and s [1/min], tau [min].
PARKER_2006 = {
    "A1": 0.809, "A2": 0.330,
    "T1": 0.17046, "T2": 0.365,
    "sigma1": 0.0563, "sigma2": 0.132,
    "alpha": 1.050, "beta": 0.1685,
    "s": 38.078, "tau": 0.483,
}


def parker_aif(t, *, delay=0.0, hematocrit=None):
    """The Parker (2006) population arterial input function (`PARKER_2006`).

    ``C_b(t) = Σ_{n=1,2} A_n/(σ_n √(2π)) exp(-(t - T_n)²/(2σ_n²))
    + α exp(-β t) / (1 + exp(-s (t - τ)))`` with ``t`` in minutes after the bolus
    arrival, evaluated here in seconds.

    Args:
        t: times [s] (any shape).
        delay: bolus arrival time [s]: the curve is zero before it.
        hematocrit: when given (e.g. 0.42), return the plasma concentration
            ``C_b / (1 - Hct)`` instead of the whole-blood one.

    Returns:
        Concentration [mM] with the shape of ``t``.

    Example:
        >>> round(float(parker_aif(10.2)), 2)  # the first-pass peak, about 6 mM
        6.07
    """
    p = PARKER_2006
    t = jnp.asarray(t, dtype=float) if not isinstance(t, jax.Array) else t
    tm = (t - delay) / 60.0
    c = 0.0
    for a, tn, sg in ((p["A1"], p["T1"], p["sigma1"]), (p["A2"], p["T2"], p["sigma2"])):
        c = c + a / (sg * math.sqrt(2 * math.pi)) * jnp.exp(-((tm - tn) ** 2) / (2 * sg * sg))
    c = c + p["alpha"] * jnp.exp(-p["beta"] * tm) / (1.0 + jnp.exp(-p["s"] * (tm - p["tau"])))
    c = jnp.where(tm >= 0, c, 0.0)
    if hematocrit is not None:
        if not 0 <= hematocrit < 1:
            raise ValueError(f"hematocrit must be in [0, 1), got {hematocrit}")
        c = c / (1.0 - hematocrit)
    return c


def tofts(t, cp, ktrans, ve, vp=0.0):
    """Extended Tofts tissue concentration ``C_t = v_p C_p + K^trans ∫ C_p(τ) e^{-k_ep (t-τ)} dτ``.

    ``k_ep = K^trans / v_e``. The convolution is exact for a plasma curve that is linear
    between the samples (a recursion over the intervals), so it holds for non-uniform
    sampling. Vectorized over tissues: ``ktrans``, ``ve``, ``vp`` broadcast together.

    Args:
        t: (n_times,) increasing times [s], starting before the bolus (C_p(t[0]) is the
            concentration from which the convolution starts; the tissue starts empty).
        cp: (n_times,) plasma concentration [mM].
        ktrans: transfer constant [1/s] (note: 1/s, not 1/min), >= 0.
        ve: extravascular extracellular volume fraction [1], > 0 where ktrans > 0.
        vp: plasma volume fraction [1] (0: the standard Tofts model).

    Returns:
        (*batch, n_times) tissue concentration [mM], ``batch`` the broadcast shape of
        ``ktrans``, ``ve``, ``vp``.
    """
    t = jnp.asarray(t)
    cp = jnp.asarray(cp)
    if t.ndim != 1 or cp.shape != t.shape:
        raise ValueError(f"tofts: t and cp must have the same shape (n_times,), got {tuple(t.shape)} "
                         f"and {tuple(cp.shape)}")
    _check_times("tofts t", t)
    ktrans, ve, vp = jnp.broadcast_arrays(jnp.asarray(ktrans, float), jnp.asarray(ve, float),
                                          jnp.asarray(vp, float))
    _check_finite("tofts ktrans", ktrans, nonneg=True)
    _check_finite("tofts vp", vp, nonneg=True)
    _check_finite("tofts ve", ve, nonneg=True)
    if _concrete(ve) and _concrete(ktrans) and np.any((np.asarray(ve) <= 0) & (np.asarray(ktrans) > 0)):
        raise ValueError("tofts: ve must be > 0 wherever ktrans > 0")
    kep = jnp.where(ve > 0, ktrans / jnp.where(ve > 0, ve, 1.0), 0.0)
    h = jnp.diff(t)

    def body(i_prev, xs):
        hh, c0, c1 = xs
        x = kep * hh
        small = x < 1e-6
        e = jnp.exp(-x)
        ks = jnp.where(small, 1.0, kep)
        a = jnp.where(small, hh * (1 - x / 2), -jnp.expm1(-x) / ks)  # ∫0^h e^{-k(h-s)} ds
        b = jnp.where(small, hh * hh * (0.5 - x / 6), (hh - a) / ks)  # ∫0^h s e^{-k(h-s)} ds
        i_new = i_prev * e + c0 * a + (c1 - c0) * b / hh
        return i_new, i_new

    _, conv = jax.lax.scan(body, jnp.zeros_like(kep), (h, cp[:-1], cp[1:]))
    conv = jnp.concatenate([jnp.zeros_like(kep)[None], conv], axis=0)  # (n_t, *batch)
    conv = jnp.moveaxis(conv, 0, -1)
    return vp[..., None] * cp + ktrans[..., None] * conv


class ContrastAgent(AbstractDynamics):
    """Contrast-agent relaxation: ``1/T1_j(t) = 1/T1_j + r1 C_j(t)``, ``1/T2_j(t) = 1/T2_j + r2 C_j(t)``.

    Every spin belongs to a compartment whose concentration curve is sampled at ``times``
    and linearly interpolated (held outside). Each step uses the concentration averaged
    over the step, so the relaxation ``exp(-∫R1 dt)`` of a free step is exact for these
    piecewise-linear curves however long the step (within RF pulses the Strang splitting
    applies as usual).

    Args:
        times: (n_times,) strictly increasing [s].
        concentration: (n_compartments, n_times) concentration [mM], >= 0.
        compartment: (n_spins,) int compartment index of each spin.
        r1: longitudinal relaxivity [1/(mM·s)] (e.g. about 3–5 for gadolinium chelates at 3 T).
        r2: transverse relaxivity [1/(mM·s)].
        max_step: optional longest simulation step [s].

    Raises:
        ValueError: wrong shapes, NaN/inf, negative concentration or relaxivity,
            compartment indices out of range, or ``times`` not increasing.
    """

    times: jax.Array = eqx.field(converter=lambda a: _array(a, "ContrastAgent.times"))
    concentration: jax.Array = eqx.field(converter=lambda a: _array(a, "ContrastAgent.concentration"))
    compartment: jax.Array | None = eqx.field(
        converter=lambda a: None if a is None else _array(a, "ContrastAgent.compartment", dtype=np.int32))
    r1: jax.Array = eqx.field(converter=lambda a: _array(a, "ContrastAgent.r1"))
    r2: jax.Array = eqx.field(converter=lambda a: _array(a, "ContrastAgent.r2"))
    step: float | None = eqx.field(default=None, static=True)

    _per_spin_fields: ClassVar[tuple[str, ...]] = ("compartment",)

    def __check_init__(self):
        _check_times("ContrastAgent.times", self.times)
        n_t = self.times.shape[0]
        c = self.concentration
        if c.ndim != 2 or c.shape[1] != n_t:
            raise ValueError(f"ContrastAgent.concentration must have shape (n_compartments, n_times) = "
                             f"(n_compartments, {n_t}) [mM], got {tuple(c.shape)}")
        _check_finite("ContrastAgent.concentration", c, nonneg=True)
        for name in ("r1", "r2"):
            v = getattr(self, name)
            if v.shape != ():
                raise ValueError(f"ContrastAgent.{name} must be a scalar [1/(mM s)], got shape {tuple(v.shape)}")
            _check_finite(f"ContrastAgent.{name}", v, nonneg=True)
        if self.compartment is not None:
            cm = self.compartment
            if cm.ndim != 1:
                raise ValueError(f"ContrastAgent.compartment must have shape (n_spins,), got {tuple(cm.shape)}")
            if _concrete(cm) and cm.size and (int(cm.min()) < 0 or int(cm.max()) >= c.shape[0]):
                raise ValueError(f"ContrastAgent.compartment values must be in 0..{c.shape[0] - 1} "
                                 f"(n_compartments = {c.shape[0]}), got {int(cm.min())}..{int(cm.max())}")
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"ContrastAgent.step (max_step) must be > 0 [s], got {self.step}")

    @property
    def max_step(self) -> float | None:
        return self.step

    @classmethod
    def from_labels(cls, twin, times, curves: Mapping[str, object], *, r1, r2,
                    max_step: float | None = None) -> ContrastAgent:
        """One concentration curve per tissue label name of ``twin``.

        Args:
            twin: a twin with ``label`` and ``label_names``.
            times: (n_times,) [s].
            curves: ``{label name: (n_times,) concentration [mM]}``; labels not listed get
                no contrast agent.
            r1, r2: relaxivities [1/(mM·s)].
            max_step: optional longest simulation step [s].

        Raises:
            ValueError: the twin has no labels, or a name is not one of its labels.
        """
        if twin.label is None or not twin.label_names:
            raise ValueError("ContrastAgent.from_labels needs twin.label and twin.label_names "
                             "(build the twin with mritwin.twin_from_labels)")
        names = list(twin.label_names)
        unknown = [k for k in curves if k not in names]
        if unknown:
            raise ValueError(f"ContrastAgent.from_labels: {unknown} are not labels of the twin "
                             f"(its labels: {names})")
        times = _array(times, "ContrastAgent.times")
        # compartment 0: no agent; compartment 1 + i: the i-th listed curve
        rows = [jnp.zeros(times.shape[0])] + [jnp.broadcast_to(jnp.asarray(curves[k], float), times.shape)
                                              for k in curves]
        lut = np.zeros(len(names), np.int32)
        for i, k in enumerate(curves):
            lut[names.index(k)] = i + 1
        comp = jnp.asarray(lut)[jnp.asarray(twin.label)]
        return cls(times, jnp.stack(rows), comp, r1, r2, step=max_step)

    @classmethod
    def tofts(cls, twin, times, cp, *, ktrans: Mapping[str, float], ve: Mapping[str, float],
              vp: Mapping[str, float] | None = None, r1, r2, max_step: float | None = None) -> ContrastAgent:
        """Extended-Tofts uptake per tissue label from a plasma curve (see `tofts`).

        Args:
            twin: a twin with labels.
            times: (n_times,) [s]; cp: (n_times,) plasma concentration [mM] (e.g.
                ``parker_aif(times, hematocrit=0.42)``).
            ktrans: ``{label name: K^trans [1/s]}``; ve: ``{label name: v_e}``;
                vp: ``{label name: v_p}`` (a vessel is ``vp = 1`` with no ``ktrans``).
            r1, r2: relaxivities [1/(mM·s)].
        """
        vp = {} if vp is None else dict(vp)
        names = list(dict.fromkeys([*ktrans, *ve, *vp]))
        curves = {}
        for name in names:
            kt, v_e, v_p = ktrans.get(name, 0.0), ve.get(name, 0.0), vp.get(name, 0.0)
            if kt > 0 and name not in ve:
                raise ValueError(f"ContrastAgent.tofts: tissue {name!r} has ktrans but no ve")
            curves[name] = tofts(times, cp, kt, v_e if v_e > 0 else 1.0, v_p)
        return cls.from_labels(twin, times, curves, r1=r1, r2=r2, max_step=max_step)

    def spin_arrays(self, twin) -> dict:
        if self.compartment is None or tuple(self.compartment.shape) != (twin.n_spins,):
            got = None if self.compartment is None else tuple(self.compartment.shape)
            raise ValueError(f"ContrastAgent.compartment must have shape (n_spins,) = ({twin.n_spins},), got {got}")
        return {"compartment": self.compartment}

    def concentration_at(self, t):
        """(n_compartments,) concentrations [mM] at a scalar time ``t`` [s]."""
        i, w, _, _ = _interp_index(self.times.astype(jnp.result_type(t)), t)
        c = self.concentration.astype(jnp.result_type(t))
        return c[:, i] * (1 - w) + c[:, i + 1] * w

    def mean_concentration(self, t, dt):
        """(n_compartments,) mean concentration [mM] over ``[t - dt/2, t + dt/2]`` [s]:
        exact for the piecewise-linear curves (held outside ``times``); the value at ``t``
        when ``dt = 0``."""
        dtype = jnp.result_type(t)
        ts = self.times.astype(dtype)
        c = self.concentration.astype(dtype)
        h = jnp.diff(ts)
        cum = jnp.concatenate([jnp.zeros((c.shape[0], 1), dtype),
                               jnp.cumsum(0.5 * h * (c[:, 1:] + c[:, :-1]), axis=1)], axis=1)

        def integral(x):  # ∫_{times[0]}^{x} C dt
            xc = jnp.clip(x, ts[0], ts[-1])
            i, _, hi, _ = _interp_index(ts, xc)
            s = xc - ts[i]
            ci, cj = c[:, i], c[:, i + 1]
            return (cum[:, i] + ci * s + (cj - ci) * s * s / (2 * hi)
                    + jnp.minimum(x - ts[0], 0.0) * c[:, 0] + jnp.maximum(x - ts[-1], 0.0) * c[:, -1])

        pos = dt > 0
        mean = (integral(t + 0.5 * dt) - integral(t - 0.5 * dt)) / jnp.where(pos, dt, 1.0)
        return jnp.where(pos, mean, self.concentration_at(t))

    def effect(self, spin, state, t, dt, index, chunk_id):
        # the step-averaged rate: relaxation over the step is exp(-∫R dt), exact for
        # piecewise-linear concentration curves however long the step
        c = self.mean_concentration(t, dt)[spin["compartment"]]
        return Effect(r1=self.r1.astype(c.dtype) * c, r2=self.r2.astype(c.dtype) * c), state
