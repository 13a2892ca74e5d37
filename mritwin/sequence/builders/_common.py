"""Shared pieces of the sequence builders: parameters, pulses, readouts, blocks.

Conventions of every builder (see ``docs/sequences.md``):

- Logical axes ``read``, ``phase``, ``slice`` map to physical gradient channels by
  ``orientation`` (``"axial"``: x, y, z; ``"coronal"``: x, z, y; ``"sagittal"``: y, z, x).
- Cartesian readouts have the ADC centred on the flat top; sample ``n`` of ``nx`` sits at
  ``k = (n - nx/2) Δk`` with ``Δk = 1/FOV`` (the ``-N/2 .. N/2-1`` FFT grid), so the
  k-space centre is a sample and TE is measured to it exactly.
- Phase-encode line ``m`` of ``ny`` is at ``ky = (m - ny/2) Δk`` (label ``LIN = m``).
- Amplitudes derived from flip angles use ``jax.numpy`` so a traced flip angle flows
  into the RF events; timing is always concrete.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Sequence as _Seq

import jax
import jax.numpy as jnp
import numpy as np

from ..events import ADC, RF, Label, TrapGrad
from ..make import make_sinc_pulse
from ..scanner import Scanner
from ..sequence import Block, Sequence

ORIENTATIONS = {"axial": ("x", "y", "z"), "coronal": ("x", "z", "y"), "sagittal": ("y", "z", "x")}
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0  # 111.246° [rad], full spokes
RF_SPOIL_INC = math.radians(117.0)


# ---------------------------------------------------------------------------------------
# parameter handling
# ---------------------------------------------------------------------------------------
def check_scanner(scanner) -> Scanner:
    if not isinstance(scanner, Scanner):
        raise TypeError(
            f"scanner must be a mritwin.Scanner (there is no default system), got {type(scanner).__name__}"
        )
    return scanner


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


FLIPS = ("flip_angle", "flip_angle_deg")


def traceable(*names: str):
    """Decorator of a builder: its keyword arguments other than ``names`` (its flip
    angles) set the sequence's timing and geometry and must be concrete; a traced one
    (`jax.grad`, `jax.jit` or `jax.vmap` with respect to it) raises a ``TypeError`` naming
    it, instead of JAX's error from deep inside the builder."""

    def wrap(fn):
        @functools.wraps(fn)
        def builder(*args, **kwargs):
            for name, value in kwargs.items():
                if name not in names and not all(map(is_concrete, jax.tree_util.tree_leaves(value))):
                    allowed = f"only {', '.join(names)} may be" if names else "none of its arguments can be"
                    raise TypeError(
                        f"{fn.__name__}: {name} is traced (jax.grad, jax.jit or jax.vmap with respect to it), "
                        f"but it sets the sequence's timing or geometry, which must be concrete numbers; "
                        f"{allowed} traced")
            if _TRAPS.get() is not None:  # (a builder called by another: its trapezoids)
                return fn(*args, **kwargs)
            token = _TRAPS.set({})
            try:
                return fn(*args, **kwargs)
            finally:
                _TRAPS.reset(token)

        return builder

    return wrap


def flip(flip_angle, flip_angle_deg, *, name="flip_angle", default=None, max_deg=180.0):
    """Resolve ``flip_angle`` [rad] / ``flip_angle_deg`` [deg] to radians (may be traced)."""
    if flip_angle is not None and flip_angle_deg is not None:
        raise ValueError(f"give {name} [rad] or {name}_deg [deg], not both")
    if flip_angle is None and flip_angle_deg is None:
        if default is None:
            raise ValueError(f"{name} [rad] or {name}_deg [deg] is required")
        flip_angle = default
    if flip_angle_deg is not None:
        flip_angle = flip_angle_deg * (jnp.pi / 180.0) if not is_concrete(flip_angle_deg) else \
            math.radians(float(flip_angle_deg))
    if is_concrete(flip_angle):
        a = float(np.asarray(flip_angle))
        if not (0.0 < a <= math.radians(max_deg) + 1e-12):
            raise ValueError(
                f"{name} must be in (0, {math.radians(max_deg):.4g}] rad (0 to {max_deg:g} deg), "
                f"got {a:.4g} rad ({math.degrees(a):.4g} deg)"
            )
    return flip_angle


def pair(v, n: int, name: str, *, integer=False):
    """Broadcast a scalar or sequence to a tuple of ``n`` values."""
    if isinstance(v, _Seq) or isinstance(v, np.ndarray):
        t = tuple(v)
        if len(t) == 1:
            t = t * n
    else:
        t = (v,) * n
    if len(t) != n:
        raise ValueError(f"{name} must be a number or {n} numbers, got {v!r}")
    if integer:
        if any(int(x) != x or x < 1 for x in t):
            raise ValueError(f"{name} must be positive integers, got {v!r}")
        return tuple(int(x) for x in t)
    if any(not (float(x) > 0 and math.isfinite(float(x))) for x in t):
        raise ValueError(f"{name} must be positive [m], got {v!r}")
    return tuple(float(x) for x in t)


def positive(v, name, unit="s"):
    v = float(v)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be > 0 [{unit}], got {v}")
    return v


def ceil_to(x: float, raster: float) -> float:
    return math.ceil(x / raster - 1e-6) * raster


def round_to(x: float, raster: float) -> float:
    return round(x / raster) * raster


def partial_lines(ny: int, partial_fourier: float) -> np.ndarray:
    """Acquired line indices (ascending) for a partial-Fourier fraction in [0.5, 1]."""
    pf = float(partial_fourier)
    if not 0.5 <= pf <= 1.0:
        raise ValueError(f"partial_fourier must be in [0.5, 1] (fraction of k-space lines), got {pf}")
    n_acq = int(math.ceil(pf * ny - 1e-9))
    n_acq = max(n_acq, ny // 2 + 1)
    return np.arange(ny - n_acq, ny)


def slice_positions(n_slices: int, slice_thickness: float, slice_gap: float) -> np.ndarray:
    """(n_slices,) slice centres [m], centred on the isocentre."""
    if int(n_slices) != n_slices or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices}")
    if slice_gap < 0:
        raise ValueError(f"slice_gap must be >= 0 [m], got {slice_gap}")
    return (np.arange(n_slices) - (n_slices - 1) / 2.0) * (slice_thickness + slice_gap)


# ---------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------
_TRAPS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mritwin_builder_traps", default=None)


def trap(ch, amplitude, rise, flat, fall, delay=0.0) -> TrapGrad:
    """A `TrapGrad`; inside a builder (`traceable`) equal trapezoids are one object, so the
    sequence's tables (`timeline`, grouped by event object) and files hold each once."""
    memo = _TRAPS.get()
    if memo is None or not is_concrete(amplitude):
        return TrapGrad(ch, amplitude, rise, flat, fall, delay)
    key = (ch, float(amplitude), float(rise), float(flat), float(fall), float(delay))
    g = memo.get(key)
    if g is None:
        g = memo[key] = TrapGrad(ch, amplitude, rise, flat, fall, delay)
    return g


def retarget(g: TrapGrad, ch: str, delay=None) -> TrapGrad:
    """The same trapezoid on another channel (and optionally another delay)."""
    return trap(ch, g.amplitude, g.rise_time, g.flat_time, g.fall_time, g.delay if delay is None else delay)


def shortest_trap_timing(area: float, sc: Scanner, max_grad=None):
    """(rise, flat) of the shortest trapezoid with k-space ``area`` [1/m] (on the raster)."""
    gmax = sc.max_grad if max_grad is None else max_grad
    a = abs(area) / sc.gamma_bar  # T s / m
    gr = sc.grad_raster
    if a == 0:
        return gr, 0.0
    rise = max(gr, ceil_to(math.sqrt(a / sc.max_slew), gr))
    if a / rise > gmax:
        rise = max(gr, ceil_to(gmax / sc.max_slew, gr))
        flat = ceil_to(a / gmax - rise, gr)
        return rise, max(flat, 0.0)
    return rise, 0.0


def area_trap(ch, area: float, sc: Scanner, *, rise=None, flat=None, delay=0.0) -> TrapGrad:
    """Trapezoid of k-space ``area`` [1/m]; the shortest unless ``rise``/``flat`` are given."""
    if rise is None:
        rise, flat = shortest_trap_timing(area, sc)
    amp = area / sc.gamma_bar / (rise + flat)
    if abs(amp) > sc.max_grad * (1 + 1e-9):
        raise ValueError(
            f"a gradient lobe of area {area:.4g} 1/m in {(2 * rise + flat) * 1e3:.3f} ms needs "
            f"{abs(amp) * 1e3:.2f} mT/m > max_grad {sc.max_grad * 1e3:.2f} mT/m"
        )
    return trap(ch, amp, rise, flat, rise, delay)


def area_traps(ch, areas, sc: Scanner):
    """Trapezoids of the given areas [1/m] with one common (shortest) timing."""
    areas = np.asarray(areas, dtype=float)
    amax = float(np.max(np.abs(areas))) if areas.size else 0.0
    rise, flat = shortest_trap_timing(amax, sc)
    return [trap(ch, a / sc.gamma_bar / (rise + flat), rise, flat, rise) for a in areas], 2 * rise + flat


def hard_pulse(flip_angle, duration, sc: Scanner, *, use="excitation", phase_offset=0.0,
               delay=None) -> RF:
    """A rectangular pulse on the RF raster: ``B1 = α / (2π γ̄ T)`` (traced α flows)."""
    n = max(1, int(round(duration / sc.rf_raster)))
    duration = n * sc.rf_raster
    amp = flip_angle / (2 * jnp.pi * sc.gamma_bar * duration)
    if is_concrete(amp):
        amp = float(amp)
    return RF(amp, np.ones(n, complex), phase_offset=phase_offset,
              delay=max(sc.rf_dead_time, 0.0) if delay is None else delay, raster=sc.rf_raster,
              center=duration / 2, use=use, dead_time=sc.rf_dead_time,
              ringdown_time=sc.rf_ringdown_time)


def check_b1(rf: RF, sc: Scanner, what="RF pulse"):
    """ValueError when the pulse's peak B1 exceeds ``scanner.max_b1``."""
    amp = rf.amplitude
    if not is_concrete(amp):
        return
    peak = abs(float(np.asarray(amp))) * float(np.max(np.abs(np.asarray(rf.shape))))
    if peak > sc.max_b1 * (1 + 1e-9):
        T = rf.shape_duration
        raise ValueError(
            f"{what} needs a peak B1 of {peak * 1e6:.2f} uT > max_b1 {sc.max_b1 * 1e6:.2f} uT: "
            f"lengthen it to at least {T * peak / sc.max_b1 * 1e3:.3f} ms or lower the flip angle "
            f"below {math.degrees(rf.flip_angle() * sc.max_b1 / peak):.1f} deg"
        )


class SlicePulse:
    """A slice- (or slab-) selective sinc pulse with its gradients on the slice channel."""

    def __init__(self, flip_angle, sc: Scanner, *, thickness, duration, tbw, ch, use="excitation",
                 apodization=0.5, what="excitation pulse"):
        thickness = positive(thickness, "slice_thickness", "m")
        duration = positive(duration, "rf_duration")
        g_ss = tbw / duration / (sc.gamma_bar * thickness)
        if g_ss > sc.max_grad * (1 + 1e-9):
            t_min = tbw / (sc.gamma_bar * sc.max_grad * thickness)
            raise ValueError(
                f"the {what} needs a slice-select gradient of {g_ss * 1e3:.2f} mT/m "
                f"> max_grad {sc.max_grad * 1e3:.2f} mT/m for thickness {thickness * 1e3:.3g} mm: "
                f"use a thickness of at least {tbw / (sc.gamma_bar * sc.max_grad * duration) * 1e3:.3g} mm "
                f"or an RF duration of at least {t_min * 1e3:.3f} ms"
            )
        rf, gz, gzr = make_sinc_pulse(flip_angle, duration, time_bw_product=tbw, apodization=apodization,
                                      slice_thickness=thickness, use=use, scanner=sc)
        check_b1(rf, sc, what)
        self.rf, self.sc, self.ch = rf, sc, ch
        self.gz = retarget(gz, ch)
        self.reph_area = float(gzr.amplitude) * (gzr.flat_time + 0.5 * (gzr.rise_time + gzr.fall_time)) * sc.gamma_bar
        self.amplitude = float(gz.amplitude)  # [T/m]
        self.block_duration = ceil_to(max(rf.duration, self.gz.duration), sc.block_raster)
        self.centre = rf.delay + rf.center  # from block start
        self.tail = self.block_duration - self.centre  # centre to block end

    def rf_at(self, position=0.0, phase=0.0) -> RF:
        """The pulse for a slice at ``position`` [m] with extra ``phase`` [rad].

        Frequency offset ``γ̄ G z`` and phase ``-2π f t_c`` (Pulseq's phase centring).
        """
        rf = self.rf
        f = self.sc.gamma_bar * self.amplitude * float(position)
        ph = phase - 2 * math.pi * f * rf.center
        return RF(rf.amplitude, rf.shape, phase_offset=ph, freq_offset=f, delay=rf.delay,
                  raster=rf.raster, center=rf.center, use=rf.use, dead_time=rf.dead_time,
                  ringdown_time=rf.ringdown_time)

    def block(self, position=0.0, phase=0.0, labels=()) -> Block:
        return make_block(self.sc, rf=self.rf_at(position, phase), grads=[self.gz], labels=labels,
                          duration=self.block_duration)


class HardPulse:
    """A non-selective rectangular pulse in its own block (same interface as `SlicePulse`)."""

    def __init__(self, flip_angle, sc: Scanner, *, duration, use="excitation", what="RF pulse"):
        self.rf = hard_pulse(flip_angle, duration, sc, use=use)
        check_b1(self.rf, sc, what)
        self.sc = sc
        self.gz = None
        self.reph_area = 0.0
        self.block_duration = ceil_to(self.rf.duration, sc.block_raster)
        self.centre = self.rf.delay + self.rf.center
        self.tail = self.block_duration - self.centre

    def rf_at(self, position=0.0, phase=0.0) -> RF:
        rf = self.rf
        return RF(rf.amplitude, rf.shape, phase_offset=phase, delay=rf.delay, raster=rf.raster,
                  center=rf.center, use=rf.use, dead_time=rf.dead_time, ringdown_time=rf.ringdown_time)

    def block(self, position=0.0, phase=0.0, labels=()) -> Block:
        return make_block(self.sc, rf=self.rf_at(position, phase), labels=labels,
                          duration=self.block_duration)


def excitation(flip_angle, sc, *, thickness, duration, tbw, ch, use="excitation", what="excitation pulse"):
    """`SlicePulse` when ``thickness`` is given, else a non-selective `HardPulse`."""
    if thickness is None:
        return HardPulse(flip_angle, sc, duration=duration, use=use, what=what)
    return SlicePulse(flip_angle, sc, thickness=thickness, duration=duration, tbw=tbw, ch=ch, use=use,
                      what=what)


class Readout:
    """A Cartesian readout: trapezoid with the ADC centred on its flat top.

    After a prephaser of area `pre_area`, sample ``n`` is at ``k = (n - nx/2) Δk``
    (``Δk = 1/FOV``); `post_area` returns k to 0 after the readout. ``bandwidth_per_pixel``
    [Hz] sets the dwell ``1 / (bw nx)``, moved to the nearest dwell for which the ADC sits
    symmetrically on the gradient raster.
    """

    def __init__(self, sc: Scanner, *, fov: float, n: int, bandwidth_per_pixel: float, ch: str,
                 sign: float = 1.0):
        self.sc = sc
        bw = positive(bandwidth_per_pixel, "bandwidth_per_pixel", "Hz")
        self.n = n
        self.dk = 1.0 / fov
        dwell = choose_dwell(1.0 / (bw * n), n, sc)
        self.dwell = dwell
        self.bandwidth_per_pixel = 1.0 / (dwell * n)
        t_ro = n * dwell
        amp = self.dk / (sc.gamma_bar * dwell)
        if amp > sc.max_grad * (1 + 1e-9):
            bw_max = sc.gamma_bar * sc.max_grad * fov / n
            fov_min = self.bandwidth_per_pixel * n / (sc.gamma_bar * sc.max_grad)
            raise ValueError(
                f"the readout needs {amp * 1e3:.2f} mT/m > max_grad {sc.max_grad * 1e3:.2f} mT/m: "
                f"at FOV {fov * 1e3:.1f} mm and {n} samples the bandwidth can be at most "
                f"{bw_max:.1f} Hz/pixel, or at {self.bandwidth_per_pixel:.1f} Hz/pixel the FOV must be at "
                f"least {fov_min * 1e3:.1f} mm"
            )
        gr = sc.grad_raster
        flat = ceil_to(t_ro, gr)
        rise = max(gr, ceil_to(amp / sc.max_slew, gr))
        self.rise, self.flat = rise, flat
        self.amplitude = sign * amp
        self.offset = round((flat - t_ro) / 2 / 1e-9) * 1e-9  # ADC start within flat
        self.duration = 2 * rise + flat
        self.adc_delay = rise + self.offset
        self.ch = ch
        # k from the start of the gradient to sample n = nx/2
        g = sc.gamma_bar * amp
        self.area = g * (rise + flat)  # |total area| [1/m]
        self.area_to_centre = g * (0.5 * rise + self.offset + (n // 2 + 0.5) * dwell)
        self.t_centre = self.adc_delay + (n // 2 + 0.5) * dwell  # from block start
        self.sign = sign

    @property
    def pre_area(self) -> float:
        """Prephaser area [1/m] that puts sample n = nx/2 at k = 0 (positive readout)."""
        return -self.sign * self.area_to_centre

    @property
    def post_area(self) -> float:
        """Area [1/m] that returns k to 0 after the readout (from the centre sample)."""
        return -self.sign * (self.area - self.area_to_centre)

    def grad(self, sign=1.0, ch=None, scale=1.0, delay=0.0) -> TrapGrad:
        return trap(ch or self.ch, sign * scale * self.amplitude, self.rise, self.flat, self.rise, delay)

    def adc(self, phase=0.0, delay=0.0) -> ADC:
        return ADC(self.n, self.dwell, delay=delay + self.adc_delay, phase_offset=phase,
                   dead_time=self.sc.adc_dead_time)


def choose_dwell(target: float, n: int, sc: Scanner) -> float:
    """The dwell nearest ``target`` [s] on the ADC raster with the ADC symmetric on the
    gradient raster in whole microseconds (so Pulseq's µs ADC delay is exact)."""
    ar_ns = max(1, int(round(sc.adc_raster * 1e9)))
    gr_ns = int(round(sc.grad_raster * 1e9))
    k0 = max(1, int(round(target * 1e9 / ar_ns)))
    for d in range(0, 100000):
        for k in ((k0 + d, k0 - d) if d else (k0,)):
            if k < 1:
                continue
            t_ro = n * k * ar_ns
            flat = -(-t_ro // gr_ns) * gr_ns
            gap = flat - t_ro
            if gap % 2000 == 0:
                return k * ar_ns * 1e-9
    return k0 * ar_ns * 1e-9  # pragma: no cover


def make_block(sc: Scanner, *, rf=None, adc=None, grads=(), labels=(), duration=None,
               min_duration=0.0) -> Block:
    """A `Block` with gradients placed by channel and the duration on the block raster."""
    kw = {}
    for g in grads:
        if g is None:
            continue
        key = "g" + g.channel
        if key in kw:
            raise ValueError(f"two gradients on channel {g.channel} in one block")
        kw[key] = g
    longest = max([e.duration for e in [rf, adc, *kw.values()] if e is not None] + [min_duration, 0.0])
    if duration is None:
        duration = ceil_to(longest, sc.block_raster)
    return Block(rf=rf, adc=adc, labels=tuple(labels), duration=duration, **kw)


def delay_blocks(d: float, sc: Scanner) -> list:
    """A pure delay of ``d`` [s] rounded to the block raster (empty when ~0)."""
    d = round_to(d, sc.block_raster)
    if d < 0.5 * sc.block_raster:
        return []
    return [Block(duration=d)]


def labels_set(**values) -> tuple:
    return tuple(Label(k, int(v), False) for k, v in values.items())


def spoil_phase(n: int) -> float:
    """Quadratic RF-spoiling phase of excitation ``n`` [rad]: 117° · n(n+1)/2 (mod 2π)."""
    return (RF_SPOIL_INC * (n * (n + 1) // 2)) % (2 * math.pi)


def definitions(sc: Scanner, name: str, fov, matrix, **extra) -> dict:
    """Pulseq definitions. ``fov`` and ``matrix`` come in logical order (read, phase,
    slice/partition) and are stored along the physical axes x, y, z (``FOV`` [m],
    ``MatrixSize``); 2D protocols (matrix[2] == 1) also get ``SliceThickness`` [m]."""
    axes = ORIENTATIONS[extra.get("Orientation", "axial")]
    fov_xyz, mat_xyz = [0.0, 0.0, 0.0], [1, 1, 1]
    for i, ch in enumerate(axes):
        fov_xyz["xyz".index(ch)] = float(fov[i])
        mat_xyz["xyz".index(ch)] = int(matrix[i])
    d = {
        "Name": name,
        "FOV": fov_xyz,
        "MatrixSize": mat_xyz,
        "GradientRasterTime": sc.grad_raster,
        "RadiofrequencyRasterTime": sc.rf_raster,
        "AdcRasterTime": sc.adc_raster,
        "BlockDurationRaster": sc.block_raster,
        "B0": sc.b0,
    }
    if int(matrix[2]) == 1:
        d["SliceThickness"] = float(fov[2])
    for k, v in extra.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple, np.ndarray)):
            v = [float(x) for x in v]
        elif not isinstance(v, str):
            if not is_concrete(v):
                continue
            v = float(np.asarray(v))
        d[k] = v
    return d


def finish(blocks, sc, name, fov, matrix, **extra) -> Sequence:
    return Sequence(tuple(blocks), definitions(sc, name, fov, matrix, **extra))


def t_sum(blocks) -> float:
    return float(sum(b.duration for b in blocks))
