"""``make_*`` builders for sequence events (SI units; angles in radians).

They mirror pypulseq's builders but take and return SI values (T, T/m, s, rad) and an
explicit `Scanner` for limits and raster times. Amplitude arguments may be JAX
tracers (differentiable); timing arguments must be concrete numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .events import ADC, RF, ArbGrad, Delay, Label, TrapGrad
from .scanner import Scanner

__all__ = [
    "make_block_pulse",
    "make_sinc_pulse",
    "make_arbitrary_rf",
    "make_trapezoid",
    "make_arbitrary_grad",
    "make_extended_trapezoid",
    "make_adc",
    "make_delay",
    "make_label",
]


def _ceil_to(x: float, raster: float) -> float:
    return math.ceil(x / raster - 1e-9) * raster


def _round_to(x: float, raster: float) -> float:
    return round(x / raster) * raster


def make_block_pulse(flip_angle, duration, *, phase_offset=0.0, freq_offset=0.0, delay=None,
                     use="excitation", scanner: Scanner | None = None) -> RF:
    """A rectangular (hard) pulse of ``flip_angle`` [rad] lasting ``duration`` [s].

    Stored as one sample held for the whole duration. The simulator cuts it into equal
    steps of at most ``Bloch.max_rf_dt`` (10 us) for accuracy with relaxation during the
    pulse, and applies them as one step where the pulse plays (prepared or held).
    ``B1 = flip_angle / (2π γ̄ duration)``.
    """
    sc = scanner or Scanner()
    if not duration > 0:
        raise ValueError(f"duration must be > 0 [s], got {duration}")
    amp = flip_angle / (2 * jnp.pi * sc.gamma_bar * duration)
    return RF(amp, np.ones(1, complex), phase_offset=phase_offset, freq_offset=freq_offset,
              delay=sc.rf_dead_time if delay is None else delay, raster=duration,
              center=duration / 2, use=use, dead_time=sc.rf_dead_time,
              ringdown_time=sc.rf_ringdown_time)


def make_sinc_pulse(flip_angle, duration, *, time_bw_product=4.0, apodization=0.5,
                    center_pos=0.5, phase_offset=0.0, freq_offset=0.0, slice_thickness=None,
                    delay=None, use="excitation", scanner: Scanner | None = None):
    """A (Hanning-apodized) sinc pulse; with ``slice_thickness`` also its slice gradients.

    Args:
        flip_angle: [rad] (may be traced).
        duration: [s].
        time_bw_product: time-bandwidth product (bandwidth = TBW / duration [Hz]).
        apodization: 0 (none) .. 1 (Hanning window weight), pypulseq's convention.
        center_pos: position of the peak as a fraction of the duration.
        slice_thickness: if given [m], returns ``(rf, gz, gz_rephase)`` with the slice
            gradient ``G = BW / (γ̄ thickness)`` and its rephaser; else just ``rf``.

    Returns:
        ``rf`` or ``(rf, gz, gz_rephase)``.
    """
    sc = scanner or Scanner()
    n = max(1, int(round(duration / sc.rf_raster)))
    t = (np.arange(n) + 0.5) * sc.rf_raster
    bw = time_bw_product / duration
    tc = center_pos * duration
    window = 1.0 - apodization + apodization * np.cos(2 * np.pi * (t - tc) / duration)
    shape = window * np.sinc(bw * (t - tc))
    shape = shape / np.abs(shape).max()
    area = np.sum(shape) * sc.rf_raster  # ∫shape dt [s]
    amp = flip_angle / (2 * jnp.pi * sc.gamma_bar * area)
    rf = RF(amp, shape.astype(complex), phase_offset=phase_offset, freq_offset=freq_offset,
            delay=sc.rf_dead_time if delay is None else delay, raster=sc.rf_raster, center=tc,
            use=use, dead_time=sc.rf_dead_time, ringdown_time=sc.rf_ringdown_time)
    if slice_thickness is None:
        return rf
    amplitude = bw / (sc.gamma_bar * slice_thickness)  # T/m
    gz = make_trapezoid("z", flat_time=_ceil_to(duration, sc.grad_raster), amplitude=amplitude,
                        scanner=sc)
    rf = RF(rf.amplitude, rf.shape, phase_offset=phase_offset, freq_offset=freq_offset,
            delay=max(gz.rise_time, rf.delay), raster=sc.rf_raster, center=tc, use=use,
            dead_time=sc.rf_dead_time, ringdown_time=sc.rf_ringdown_time)
    if rf.delay > gz.rise_time:
        gz = make_trapezoid("z", flat_time=gz.flat_time, amplitude=amplitude,
                            delay=_ceil_to(rf.delay - gz.rise_time, sc.grad_raster), scanner=sc)
    # rephase from the pulse centre to the end of the flat top and the ramp down
    rephase_area = -amplitude * (gz.flat_time - (rf.delay - gz.delay - gz.rise_time) - tc
                                 + 0.5 * gz.fall_time)
    gz_rephase = make_trapezoid("z", area=rephase_area * sc.gamma_bar, scanner=sc)
    return rf, gz, gz_rephase


def make_arbitrary_rf(signal, *, flip_angle=None, raster=None, phase_offset=0.0,
                      freq_offset=0.0, delay=None, use="undefined",
                      scanner: Scanner | None = None) -> RF:
    """An RF pulse from complex samples ``signal`` [T] (or scaled to ``flip_angle`` [rad])."""
    sc = scanner or Scanner()
    raster = sc.rf_raster if raster is None else raster
    # traced (differentiating with respect to the samples or the flip angle): JAX; else
    # float64 NumPy, so that the pulse's samples are not rounded to float32
    xp = jnp if any(isinstance(x, jax.core.Tracer) for x in (signal, flip_angle)) else np
    sig = xp.asarray(signal)
    if xp is np:
        sig = sig.astype(np.complex128 if np.iscomplexobj(sig) else np.float64)
    peak = xp.max(xp.abs(sig))
    shape = sig / peak
    amp = peak
    if flip_angle is not None:
        area = xp.abs(xp.sum(shape)) * raster
        amp = flip_angle / (2 * np.pi * sc.gamma_bar * area)
    return RF(amp, shape, phase_offset=phase_offset, freq_offset=freq_offset,
              delay=sc.rf_dead_time if delay is None else delay, raster=raster, use=use,
              dead_time=sc.rf_dead_time, ringdown_time=sc.rf_ringdown_time)


def make_trapezoid(channel, *, area=None, flat_area=None, amplitude=None, duration=None,
                   flat_time=None, rise_time=None, fall_time=None, delay=0.0,
                   scanner: Scanner | None = None) -> TrapGrad:
    """A trapezoid on ``channel`` from k-space areas or an amplitude.

    Args:
        channel: ``"x"``, ``"y"``, ``"z"``.
        area: total k-space area ``γ̄ ∫G dt`` [1/m]; the shortest trapezoid within the
            scanner's limits (or of the given ``duration``) is built.
        flat_area: k-space area of the flat top [1/m] (with ``flat_time``).
        amplitude: flat-top amplitude [T/m] (with ``flat_time`` or ``duration``).
        duration, flat_time, rise_time, fall_time, delay: timing [s] (on the gradient raster).

    Raises:
        ValueError: the request is under-determined or exceeds the scanner limits
            (the message says what the limits allow).
    """
    sc = scanner or Scanner()
    gr = sc.grad_raster
    gb = sc.gamma_bar
    if area is not None and isinstance(area, (int, float)) and flat_area is None and amplitude is None:
        a = area / gb  # T·s/m
        if duration is None:
            # shortest trapezoid (or triangle)
            rise = _ceil_to(math.sqrt(abs(a) / sc.max_slew), gr)
            rise = max(rise, gr)
            if abs(a) / rise > sc.max_grad:  # triangle too tall: trapezoid at max_grad
                rise = _ceil_to(sc.max_grad / sc.max_slew, gr)
                flat = _ceil_to(abs(a) / sc.max_grad - rise, gr)
            else:
                flat = 0.0
            amp = a / (rise + flat)
            return TrapGrad(channel, amp, rise, flat, rise, delay)
        # fixed duration: choose the ramp for max slew, solve for amplitude
        rise = rise_time
        if rise is None:
            # amplitude A with ramps r = A/slew: a = A (duration - r) -> quadratic
            disc = duration ** 2 - 4 * abs(a) / sc.max_slew
            if disc < 0:
                min_dur = 2 * math.sqrt(abs(a) / sc.max_slew)
                raise ValueError(
                    f"trapezoid area {area:.4g} 1/m needs at least {min_dur * 1e3:.3f} ms at "
                    f"max slew {sc.max_slew} T/m/s, got duration {duration * 1e3:.3f} ms"
                )
            amp_abs = (duration - math.sqrt(disc)) / 2 * sc.max_slew
            # at least one raster: a zero area (e.g. the ky = 0 phase encode) must not
            # give a trapezoid with zero-length ramps
            rise = max(gr, _ceil_to(amp_abs / sc.max_slew, gr))
        flat = duration - 2 * rise
        if flat < -1e-12:
            raise ValueError(f"duration {duration} s is shorter than two ramps of {rise} s")
        amp = a / (rise + max(flat, 0.0))
        if abs(amp) > sc.max_grad * (1 + 1e-9):
            raise ValueError(
                f"trapezoid needs {abs(amp) * 1e3:.2f} mT/m > max_grad {sc.max_grad * 1e3:.2f} mT/m"
            )
        return TrapGrad(channel, amp, rise, max(flat, 0.0), rise if fall_time is None else fall_time, delay)
    if flat_area is not None:
        if flat_time is None:
            raise ValueError("flat_area needs flat_time")
        amplitude = flat_area / gb / flat_time
    if amplitude is None:
        if area is not None and duration is not None:  # traced area with a fixed duration
            rise = rise_time if rise_time is not None else _ceil_to(sc.max_grad / sc.max_slew, gr)
            return TrapGrad(channel, area / gb / (duration - rise), rise, duration - 2 * rise, rise, delay)
        raise ValueError("make_trapezoid needs area, flat_area or amplitude")
    amp_c = float(abs(np.asarray(amplitude))) if not hasattr(amplitude, "aval") else sc.max_grad
    if amp_c > sc.max_grad * (1 + 1e-9):
        raise ValueError(
            f"gradient amplitude {amp_c * 1e3:.2f} mT/m exceeds max_grad {sc.max_grad * 1e3:.2f} mT/m"
        )
    if rise_time is None:
        rise_time = max(gr, _ceil_to(amp_c / sc.max_slew, gr))
    if fall_time is None:
        fall_time = rise_time
    if flat_time is None:
        if duration is None:
            raise ValueError("amplitude needs flat_time or duration")
        flat_time = duration - rise_time - fall_time
        if flat_time < -1e-12:
            raise ValueError(f"duration {duration} s is shorter than the ramps ({rise_time + fall_time} s)")
    return TrapGrad(channel, amplitude, rise_time, max(flat_time, 0.0), fall_time, delay)


def make_arbitrary_grad(channel, waveform, *, raster=None, delay=0.0, first=None, last=None,
                        scanner: Scanner | None = None) -> ArbGrad:
    """An arbitrary gradient with samples ``waveform`` [T/m] on the gradient raster."""
    sc = scanner or Scanner()
    return ArbGrad(channel, 1.0, waveform, raster=sc.grad_raster if raster is None else raster,
                   delay=delay, first=first, last=last)


def make_extended_trapezoid(channel, times, amplitudes, *, delay=0.0) -> ArbGrad:
    """A piecewise-linear gradient through ``(times [s], amplitudes [T/m])`` (time-shaped)."""
    times = np.asarray(times, dtype=float)
    if times[0] != 0:
        raise ValueError("make_extended_trapezoid: times must start at 0")
    return ArbGrad(channel, 1.0, amplitudes, time=times, delay=delay)


def make_adc(num_samples, *, dwell=None, duration=None, delay=None, phase_offset=0.0,
             freq_offset=0.0, scanner: Scanner | None = None) -> ADC:
    """An ADC of ``num_samples`` samples with ``dwell`` [s] (or spread over ``duration``).

    ``delay`` defaults to the scanner's ADC dead time.
    """
    sc = scanner or Scanner()
    if dwell is None:
        if duration is None:
            raise ValueError("make_adc needs dwell or duration")
        dwell = duration / num_samples
    return ADC(num_samples, dwell, delay=sc.adc_dead_time if delay is None else delay, phase_offset=phase_offset,
               freq_offset=freq_offset, dead_time=sc.adc_dead_time)


def make_delay(duration) -> Delay:
    """A delay event: its block lasts at least ``duration`` [s]."""
    return Delay(duration)


def make_label(name: str, value: int, *, increment: bool = False) -> Label:
    """A Pulseq label (LABELSET, or LABELINC with ``increment=True``)."""
    return Label(name, int(value), increment)

