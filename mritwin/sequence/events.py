"""Sequence events (host side, SI): RF pulses, gradients, ADC, delays, labels, extensions.

Every event is an immutable `equinox.Module`. Fields that fix the *timing* (delays,
raster times, sample times, sample counts) are static Python values: they decide the
shape of the simulation and must be concrete. Fields that carry *values* (RF and
gradient amplitudes and waveforms, phase offsets) are array leaves: they may be JAX
tracers, so `jax.grad` flows from a simulated signal back into them.

Conventions (also in docs/conventions.md):

- RF: ``B1(t) = amplitude * shape(t) * exp(i (phase_offset + 2π freq_offset t))`` in
  the scanner's (Pulseq's) complex convention, with ``t`` from the start of the shape.
  The simulator's left-handed rotating frame is the mirror image of it (see
  `mritwin.sequence.discretize`).
- Uniformly sampled shapes (RF and gradients) have sample ``n`` at
  ``delay + (n + 1/2) * raster``; RF samples are held constant over their raster
  interval, gradients are piecewise linear through their samples.
- ADC samples are at ``delay + (n + 1/2) * dwell``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "RF",
    "TrapGrad",
    "ArbGrad",
    "ADC",
    "Delay",
    "Label",
    "Trigger",
    "SoftDelay",
    "Rotation",
    "RFShim",
    "Gradient",
    "RF_USES",
    "LABEL_NAMES",
    "CHANNELS",
]

CHANNELS = ("x", "y", "z")
RF_USES = (
    "excitation",
    "refocusing",
    "inversion",
    "saturation",
    "preparation",
    "other",
    "undefined",
)
#: Pulseq label names (counters and flags), Pulseq specification 1.4/1.5.
LABEL_NAMES = (
    "SLC", "SEG", "REP", "AVG", "SET", "ECO", "PHS", "LIN", "PAR", "ACQ",
    "NAV", "REV", "SMS", "REF", "IMA", "NOISE", "PMC", "NOROT", "NOPOS", "NOSCL",
    "ONCE", "TRID",
)


def _value(x, name, *, complex_ok=False, ndim=0):
    """Convert a value field to an array without concretizing tracers."""
    if isinstance(x, jax.core.Tracer) or isinstance(x, jax.Array):
        arr = x
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got {x!r}")
        if np.iscomplexobj(arr) and not complex_ok:
            raise TypeError(f"{name} must be real, got a complex value")
        if not np.iscomplexobj(arr):
            arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
    ndims = ndim if isinstance(ndim, tuple) else (ndim,)
    if arr.ndim not in ndims:
        what = " or ".join(str(d) for d in ndims)
        raise ValueError(f"{name} must have {what} dimension(s), got shape {tuple(arr.shape)}")
    return arr


def _time(x, name, *, positive=False):
    try:
        v = float(x)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError(
            f"{name} is a timing parameter and must be a concrete number [s], got {x!r}"
        ) from e
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} [s], got {v}")
    return v


def _times(x, name):
    if x is None:
        return None
    t = tuple(float(v) for v in np.asarray(x, dtype=np.float64).ravel())
    if any(not math.isfinite(v) for v in t):
        raise ValueError(f"{name} must be finite")
    if any(b < a for a, b in zip(t, t[1:])):
        raise ValueError(f"{name} must be non-decreasing")
    if t and t[0] < 0:
        raise ValueError(f"{name} must be >= 0 [s], got {t[0]}")
    return t


class RF(eqx.Module):
    """An RF pulse.

    Args:
        amplitude: peak B1 [T] (scalar value; may be traced; a vector: a pulse train).
        shape: (n,) complex normalized waveform (value; may be traced).
        phase_offset: phase offset [rad] (value; a vector: a pulse train).
        freq_offset: frequency offset [Hz] (static).
        delay: time from block start to the start of the shape [s].
        raster: sample spacing of a uniformly sampled shape [s].
        time: optional (n,) sample times from the shape start [s] (time-shaped pulse);
            each sample is held over the interval between midpoints of its neighbours.
        shape_duration: duration of the shape [s]; defaults to ``n * raster`` (uniform)
            or ``time[-1] + (time[-1] - time[-2]) / 2`` (time-shaped).
        center: time of the pulse centre from the shape start [s] (defaults to the
            peak of ``|shape|``).
        use: one of ``RF_USES`` (``"excitation"``, ``"refocusing"``, ...).
        dead_time, ringdown_time: minimum times before/after the pulse in its block [s].
        freq_ppm, phase_ppm: Pulseq 1.5 offsets proportional to B0 [ppm] (static).

    A **pulse train**: ``amplitude`` and/or ``phase_offset`` of shape ``(n_plays,)``
    (e.g. ``make_block_pulse(flips, ...)`` with a vector of flip angles) describe one
    pulse played ``n_plays`` times with a different value each time. A train is not
    placed in a block itself: ``Block(rf=train.play(k))`` plays its ``k``-th value.
    Built from a traced vector (flip angles or RF phases being optimized), the plays
    keep a reference to it, and the simulator reads all their values from it at once:
    one gather instead of a few small operations per block, each of which XLA compiles
    into a kernel of its own (docs/optimize.md, "Long traced trains": a 1 000-TR train's
    jitted flip-angle gradient compiles about 4x faster).
    """

    amplitude: jax.Array
    shape: jax.Array
    phase_offset: jax.Array
    # a play of a pulse train: the train's (amplitude, phase_offset) values (traced or
    # not; children, so jit and tree maps see them) and this play's index (static)
    # (not init fields: dataclasses.replace of a play gives an ordinary pulse)
    train: tuple | None = eqx.field(default=None, init=False)
    play_index: int | None = eqx.field(static=True, default=None, init=False)
    freq_offset: float = eqx.field(static=True)
    delay: float = eqx.field(static=True)
    raster: float = eqx.field(static=True)
    time: tuple[float, ...] | None = eqx.field(static=True)
    shape_duration: float = eqx.field(static=True)
    center: float = eqx.field(static=True)
    use: str = eqx.field(static=True)
    dead_time: float = eqx.field(static=True)
    ringdown_time: float = eqx.field(static=True)
    freq_ppm: float = eqx.field(static=True)
    phase_ppm: float = eqx.field(static=True)

    def __init__(
        self,
        amplitude,
        shape,
        *,
        phase_offset=0.0,
        freq_offset=0.0,
        delay=0.0,
        raster=1e-6,
        time=None,
        shape_duration=None,
        center=None,
        use="undefined",
        dead_time=0.0,
        ringdown_time=0.0,
        freq_ppm=0.0,
        phase_ppm=0.0,
    ):
        self.amplitude = _value(amplitude, "RF.amplitude", ndim=(0, 1))
        self.shape = _value(shape, "RF.shape", complex_ok=True, ndim=1)
        n = self.shape.shape[0]
        if n == 0:
            raise ValueError("RF.shape must have at least one sample")
        self.phase_offset = _value(phase_offset, "RF.phase_offset", ndim=(0, 1))
        plays = {a.shape[0] for a in (self.amplitude, self.phase_offset) if a.ndim == 1}
        if len(plays) > 1:
            raise ValueError(f"a pulse train's RF.amplitude and RF.phase_offset must have the same length "
                             f"(one value per play), got {self.amplitude.shape[0]} and {self.phase_offset.shape[0]}")
        if plays and min(plays) == 0:
            raise ValueError("a pulse train needs at least one play: RF.amplitude / RF.phase_offset have length 0")
        self.train = None
        self.play_index = None
        self.freq_offset = float(freq_offset)
        self.delay = _time(delay, "RF.delay")
        self.raster = _time(raster, "RF.raster", positive=True)
        self.time = _times(time, "RF.time")
        if self.time is not None and len(self.time) != n:
            raise ValueError(f"RF.time has {len(self.time)} points but RF.shape has {n} samples")
        if shape_duration is None:
            if self.time is None:
                shape_duration = n * self.raster
            elif n > 1:
                shape_duration = self.time[-1] + 0.5 * (self.time[-1] - self.time[-2])
            else:
                shape_duration = self.time[0] * 2
        self.shape_duration = _time(shape_duration, "RF.shape_duration")
        held = n * self.raster if self.time is None else self.time[-1]
        if self.shape_duration < held - 1e-12 - 1e-9 * held:  # (rounding of n * raster)
            what = f"{n} samples of {self.raster:g} s" if self.time is None else f"the last sample time {held:g} s"
            raise ValueError(f"RF.shape_duration {self.shape_duration:g} s is shorter than {what}: "
                             "samples past the shape's end would be dropped")
        if center is None:
            # NumPy shapes stay NumPy (a lax op on them inside jax.jit would stage a tracer)
            if isinstance(self.shape, jax.core.Tracer):
                k = n // 2
            else:
                k = int(np.argmax(np.abs(np.asarray(self.shape))))
            center = self.sample_times()[k]
        self.center = float(center)
        if use not in RF_USES:
            raise ValueError(f"RF.use must be one of {RF_USES}, got {use!r}")
        self.use = use
        self.dead_time = _time(dead_time, "RF.dead_time")
        self.ringdown_time = _time(ringdown_time, "RF.ringdown_time")
        self.freq_ppm = float(freq_ppm)
        self.phase_ppm = float(phase_ppm)

    @property
    def n_samples(self) -> int:
        return int(self.shape.shape[0])

    @property
    def n_plays(self) -> int | None:
        """Number of plays of a pulse train (``amplitude`` or ``phase_offset`` a vector), else None."""
        for a in (self.amplitude, self.phase_offset):
            if a.ndim == 1:
                return int(a.shape[0])
        return None

    def play(self, k: int) -> RF:
        """The ``k``-th play of a pulse train: an ordinary (scalar-valued) pulse to put in a block.

        Its amplitude and phase are the train's ``k``-th values (a value given as a scalar
        is the same for every play). The play remembers the train, so the simulator can
        read the values of all plays at once (see the class docstring).

        Args:
            k: the play, ``0 <= k < n_plays`` (a concrete integer).

        Raises:
            ValueError: if this pulse is not a train or ``k`` is out of range.
        """
        n = self.n_plays
        if n is None:
            raise ValueError("RF.play: this pulse is not a train (amplitude and phase_offset are scalars); "
                             "make one with a vector of flip angles or phases, e.g. make_block_pulse(flips, ...)")
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
            raise ValueError(f"RF.play: k must be an integer in [0, {n}), got {k!r}")
        k = int(k)

        def pick(a):
            return a[k] if a.ndim == 1 else a

        out = RF(pick(self.amplitude), self.shape, phase_offset=pick(self.phase_offset),
                 freq_offset=self.freq_offset, delay=self.delay, raster=self.raster, time=self.time,
                 shape_duration=self.shape_duration, center=self.center, use=self.use,
                 dead_time=self.dead_time, ringdown_time=self.ringdown_time, freq_ppm=self.freq_ppm,
                 phase_ppm=self.phase_ppm)
        # (a frozen module: the train reference is set the way __init__ sets fields)
        object.__setattr__(out, "train", (self.amplitude, self.phase_offset))
        object.__setattr__(out, "play_index", k)
        return out

    def sample_times(self) -> np.ndarray:
        """(n,) sample times from the shape start [s]."""
        if self.time is not None:
            return np.asarray(self.time)
        return (np.arange(self.n_samples) + 0.5) * self.raster

    def sample_edges(self) -> np.ndarray:
        """(n + 1,) edges of the intervals over which each sample is held [s]."""
        if self.time is None:
            return np.arange(self.n_samples + 1) * self.raster
        t = np.asarray(self.time)
        if t.size == 1:
            return np.array([0.0, self.shape_duration])
        mid = 0.5 * (t[1:] + t[:-1])
        return np.concatenate([[max(0.0, t[0] - 0.5 * (t[1] - t[0]))], mid, [self.shape_duration]])

    @property
    def duration(self) -> float:
        """Time the pulse occupies in its block, ``delay + shape + ringdown`` [s]."""
        return self.delay + self.shape_duration + self.ringdown_time

    @property
    def signal(self):
        """(n,) complex B1 samples [T] without the frequency modulation."""
        self._not_a_train("signal")
        return self.amplitude * self.shape * jnp.exp(1j * self.phase_offset)

    def _not_a_train(self, what):
        if self.n_plays is not None:
            raise ValueError(f"RF.{what}: this pulse is a train of {self.n_plays} plays; "
                             f"ask one play, train.play(k).{what}")

    def flip_angle(self) -> float:
        """Nominal flip angle [rad] on resonance, ``2π γ̄ |∫ B1 dt|``."""
        from ..constants import GAMMA_BAR

        self._not_a_train("flip_angle()")
        w = np.diff(self.sample_edges())
        # NumPy on the concrete values: jnp would stage a tracer inside a jit trace even
        # for concrete inputs (a sequence built inside a jitted function)
        signal = (np.asarray(self.amplitude) * np.asarray(self.shape)
                  * np.exp(1j * np.asarray(self.phase_offset)))
        return float(2 * np.pi * GAMMA_BAR * abs(np.sum(signal * w)))


class TrapGrad(eqx.Module):
    """A trapezoidal gradient on one channel.

    Args:
        channel: ``"x"``, ``"y"`` or ``"z"``.
        amplitude: flat-top amplitude [T/m] (value; may be traced).
        rise_time, flat_time, fall_time, delay: timing [s].
    """

    channel: str = eqx.field(static=True)
    amplitude: jax.Array
    rise_time: float = eqx.field(static=True)
    flat_time: float = eqx.field(static=True)
    fall_time: float = eqx.field(static=True)
    delay: float = eqx.field(static=True)

    def __init__(self, channel, amplitude, rise_time, flat_time, fall_time, delay=0.0):
        if channel not in CHANNELS:
            raise ValueError(f"gradient channel must be one of {CHANNELS}, got {channel!r}")
        self.channel = channel
        self.amplitude = _value(amplitude, "TrapGrad.amplitude")
        self.rise_time = _time(rise_time, "TrapGrad.rise_time")
        self.flat_time = _time(flat_time, "TrapGrad.flat_time")
        self.fall_time = _time(fall_time, "TrapGrad.fall_time")
        self.delay = _time(delay, "TrapGrad.delay")

    @property
    def duration(self) -> float:
        return self.delay + self.rise_time + self.flat_time + self.fall_time

    @property
    def area(self):
        """Gradient moment ∫G dt [T·s/m]."""
        return self.amplitude * (self.flat_time + 0.5 * (self.rise_time + self.fall_time))

    @property
    def flat_area(self):
        return self.amplitude * self.flat_time

    def breakpoints(self):
        """Times from block start [s] (np) and unit values (np) of the waveform corners."""
        d, r, f, fa = self.delay, self.rise_time, self.flat_time, self.fall_time
        t = np.array([d, d + r, d + r + f, d + r + f + fa])
        return t, np.array([0.0, 1.0, 1.0, 0.0])

    def waveform(self):
        """(times [s], values [T/m]) of the piecewise-linear waveform, with traced values."""
        t, v = type(self).breakpoints(self)  # (unbound: an equinox bound method costs ~25 us to make)
        return t, self.amplitude * v


class ArbGrad(eqx.Module):
    """An arbitrary (piecewise-linear) gradient on one channel.

    ``waveform = amplitude * shape``. Uniformly sampled shapes have sample ``n`` at
    ``delay + (n + 1/2) raster``, with ``first`` at ``delay`` and ``last`` at
    ``delay + n_samples * raster``; time-shaped ones (``time`` given) pass through
    ``(delay + time[n], waveform[n])``.

    Args:
        channel: ``"x"``, ``"y"`` or ``"z"``.
        amplitude: scale [T/m] (value).
        shape: (n,) waveform samples [1] (value).
        raster: sample spacing [s] (uniform shapes).
        time: optional (n,) sample times from the gradient start [s].
        delay: [s].
        first, last: waveform values at the start and end [T/m] (uniform shapes;
            default: extrapolated half a raster beyond the first/last sample, clamped
            to 0 when the shape starts/ends at 0).
    """

    channel: str = eqx.field(static=True)
    amplitude: jax.Array
    shape: jax.Array
    first: jax.Array
    last: jax.Array
    raster: float = eqx.field(static=True)
    time: tuple[float, ...] | None = eqx.field(static=True)
    delay: float = eqx.field(static=True)

    def __init__(self, channel, amplitude, shape, *, raster=10e-6, time=None, delay=0.0,
                 first=None, last=None):
        if channel not in CHANNELS:
            raise ValueError(f"gradient channel must be one of {CHANNELS}, got {channel!r}")
        self.channel = channel
        self.amplitude = _value(amplitude, "ArbGrad.amplitude")
        self.shape = _value(shape, "ArbGrad.shape", ndim=1)
        if self.shape.shape[0] == 0:
            raise ValueError("ArbGrad.shape must have at least one sample")
        self.raster = _time(raster, "ArbGrad.raster", positive=True)
        self.time = _times(time, "ArbGrad.time")
        if self.time is not None and len(self.time) != self.shape.shape[0]:
            raise ValueError(
                f"ArbGrad.time has {len(self.time)} points but shape has {self.shape.shape[0]}"
            )
        self.delay = _time(delay, "ArbGrad.delay")
        w = self.amplitude * self.shape
        if first is None:
            first = w[0] if self.time is not None else _edge(w, 0)
        if last is None:
            last = w[-1] if self.time is not None else _edge(w, -1)
        self.first = _value(first, "ArbGrad.first")
        self.last = _value(last, "ArbGrad.last")

    @property
    def n_samples(self) -> int:
        return int(self.shape.shape[0])

    @property
    def shape_duration(self) -> float:
        if self.time is not None:
            return self.time[-1]
        return self.n_samples * self.raster

    @property
    def duration(self) -> float:
        return self.delay + self.shape_duration

    def breakpoints(self):
        """Times from block start [s] and the index of the value at each (see `waveform`)."""
        if self.time is not None:
            return self.delay + np.asarray(self.time)
        n = self.n_samples
        return self.delay + np.concatenate([[0.0], (np.arange(n) + 0.5) * self.raster,
                                            [n * self.raster]])

    def waveform(self):
        """(times [s], values [T/m]) of the piecewise-linear waveform."""
        # JAX only when traced; concrete values in float64 NumPy (the k-space sums many)
        traced = any(isinstance(x, jax.core.Tracer) for x in (self.amplitude, self.shape, self.first, self.last))
        xp = jnp if traced else np
        amp, shape, first, last = (x if traced else np.asarray(x, np.float64)
                                   for x in (self.amplitude, self.shape, self.first, self.last))
        w = amp * shape
        if self.time is None:
            w = xp.concatenate([xp.reshape(first, (1,)), w, xp.reshape(last, (1,))])
        return type(self).breakpoints(self), w  # (unbound, as in `TrapGrad.waveform`)

    @property
    def area(self):
        t, w = self.waveform()
        return jnp.sum(0.5 * (w[1:] + w[:-1]) * np.diff(t))


def _edge(w, i):
    if isinstance(w, jax.core.Tracer):
        return w[i]
    w = np.asarray(w)
    if w.size == 1:
        return w[0]
    if i == 0:
        return 0.0 if w[0] == 0 else 1.5 * w[0] - 0.5 * w[1]
    return 0.0 if w[-1] == 0 else 1.5 * w[-1] - 0.5 * w[-2]


Gradient = TrapGrad | ArbGrad


class ADC(eqx.Module):
    """An ADC (readout) event.

    Args:
        num_samples: number of samples.
        dwell: sample spacing [s].
        delay: time from block start to the start of the first dwell interval [s];
            sample ``n`` is at ``delay + (n + 1/2) dwell``.
        phase_offset: receiver phase [rad] (value).
        freq_offset: receiver frequency offset [Hz] (static).
        dead_time: minimum time before and after the ADC in its block [s].
        freq_ppm, phase_ppm: Pulseq 1.5 offsets proportional to B0 [ppm].
        phase_modulation: optional (num_samples,) extra receiver phase per sample [rad].
    """

    num_samples: int = eqx.field(static=True)
    dwell: float = eqx.field(static=True)
    delay: float = eqx.field(static=True)
    phase_offset: jax.Array
    freq_offset: float = eqx.field(static=True)
    dead_time: float = eqx.field(static=True)
    freq_ppm: float = eqx.field(static=True)
    phase_ppm: float = eqx.field(static=True)
    phase_modulation: jax.Array | None

    def __init__(self, num_samples, dwell, *, delay=0.0, phase_offset=0.0, freq_offset=0.0,
                 dead_time=0.0, freq_ppm=0.0, phase_ppm=0.0, phase_modulation=None):
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"ADC.num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.dwell = _time(dwell, "ADC.dwell", positive=True)
        self.delay = _time(delay, "ADC.delay")
        self.phase_offset = _value(phase_offset, "ADC.phase_offset")
        self.freq_offset = float(freq_offset)
        self.dead_time = _time(dead_time, "ADC.dead_time")
        self.freq_ppm = float(freq_ppm)
        self.phase_ppm = float(phase_ppm)
        if phase_modulation is not None:
            phase_modulation = _value(phase_modulation, "ADC.phase_modulation", ndim=1)
            if phase_modulation.shape[0] != self.num_samples:
                raise ValueError(
                    f"ADC.phase_modulation has {phase_modulation.shape[0]} samples, "
                    f"expected num_samples={self.num_samples}"
                )
        self.phase_modulation = phase_modulation

    @property
    def duration(self) -> float:
        return self.delay + self.num_samples * self.dwell + self.dead_time

    def sample_times(self) -> np.ndarray:
        """(num_samples,) sample times from block start [s]."""
        return self.delay + (np.arange(self.num_samples) + 0.5) * self.dwell


class Delay(eqx.Module):
    """A pure delay: makes its block last at least ``duration`` [s]."""

    duration: float = eqx.field(static=True, converter=lambda d: _time(d, "Delay.duration"))


class Label(eqx.Module):
    """A Pulseq label: set (``increment=False``) or increment a counter or flag.

    Args:
        name: one of `LABEL_NAMES` (``"LIN"``, ``"PAR"``, ``"SLC"``, ``"ECO"``, ...).
        value: integer value (or increment).
        increment: ``False`` for LABELSET, ``True`` for LABELINC.
    """

    name: str = eqx.field(static=True)
    value: int = eqx.field(static=True)
    increment: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.name not in LABEL_NAMES:
            raise ValueError(f"Label.name must be one of {LABEL_NAMES}, got {self.name!r}")
        if int(self.value) != self.value:
            raise ValueError(f"Label.value must be an integer, got {self.value!r}")


class Trigger(eqx.Module):
    """A trigger input or output (Pulseq TRIGGERS extension). Timing only; not simulated."""

    trigger_type: int = eqx.field(static=True)
    channel: int = eqx.field(static=True)
    delay: float = eqx.field(static=True, default=0.0)
    duration: float = eqx.field(static=True, default=0.0)


class SoftDelay(eqx.Module):
    """A soft delay (Pulseq 1.5 DELAYS extension): block duration = offset + factor*value."""

    num: int = eqx.field(static=True)
    offset: float = eqx.field(static=True)
    factor: float = eqx.field(static=True)
    hint: str = eqx.field(static=True)


class Rotation(eqx.Module):
    """A rotation of the block's gradients (Pulseq ROTATIONS extension).

    Args:
        quaternion: (w, x, y, z) unit quaternion; the physical gradient is
            ``R(q) @ (gx, gy, gz)``.
    """

    quaternion: tuple[float, float, float, float] = eqx.field(
        static=True, converter=lambda q: tuple(float(x) for x in np.asarray(q).ravel()))

    def __check_init__(self):
        if len(self.quaternion) != 4:
            raise ValueError(f"Rotation.quaternion must have 4 numbers, got {self.quaternion}")
        n = math.sqrt(sum(q * q for q in self.quaternion))
        if not abs(n - 1.0) < 1e-6:
            raise ValueError(f"Rotation.quaternion must be a unit quaternion, |q| = {n}")

    @property
    def matrix(self) -> np.ndarray:
        w, x, y, z = self.quaternion
        return np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])


class RFShim(eqx.Module):
    """Per-channel transmit magnitudes and phases (Pulseq RF_SHIMS extension); kept, not simulated."""

    magnitudes: tuple[float, ...] = eqx.field(static=True, converter=tuple)
    phases: tuple[float, ...] = eqx.field(static=True, converter=tuple)
