"""Discretize a `Sequence` into flat arrays for the device-side simulator.

Steps
-----
The sequence timeline is cut into *steps*:

- **RF steps** (``kind = 0``) inside RF pulses: by default one per RF raster sample,
  runs of equal samples merged and a held run longer than ``max_rf_dt`` (``MAX_RF_DT``,
  10 us) cut into equal steps, so a 1 ms block pulse is 100 steps (relaxation is split
  around each step's rotation: shorter steps, smaller error); ``rf_dt`` groups samples
  into steps of that duration from the shape start (the last possibly shorter; B1
  averaged; a held sample longer than ``rf_dt`` is cut into equal steps of at most
  ``rf_dt``).
  The gradient over an RF step is its exact average.
- **Free steps** (``kind = 1``) between RF pulses: one per ADC sample; everything in
  between is merged, because free precession of a static spin depends only on the
  elapsed time and the exact gradient moment ``∫G dt`` (integrated exactly over the
  piecewise-linear gradients).
- **Window steps** (``kind = 2``): an ADC event whose samples all fall on a constant
  gradient without RF becomes one step of ``count = n_samples - 1`` identical intervals;
  the engine evaluates all of its samples at once (exactly: the per-interval evolution
  is the same, so sample ``n`` is the first sample's magnetization times ``z**n``).
- **General window steps** (``kind = 3``, only with ``general_windows=True``, used by the
  NUFFT readout): an ADC event without RF on a time-varying gradient (ramp sampling,
  spirals) becomes one step from its first to its last sample; the k-space offset and
  time of every sample relative to the first are tabulated in ``wk``/``wt``.

Frame
-----
Event values use the scanner's (Pulseq's) complex convention,
``B1 = a(t) exp(i(φ + 2π f t))``. The simulator's rotating frame is left-handed
(free precession ``exp(-i 2π Δf t)``), its mirror image, so RF enters as the complex
conjugate and the receiver demodulates with ``exp(+i(φ_adc + 2π f_adc t))``. With this,
a pulse with ``f = γ̄ G z0`` excites the slice at ``+z0``, Pulseq's phase centring
``φ − 2π f t_c`` holds, and RF spoiling with equal RF/ADC phases gives a stable phase.

Pulses with a frequency offset ``f`` (off-centre slices, fat saturation) are simulated in a
frame that follows them: during such a pulse the frame turns with the pulse, so its B1 is
the smooth envelope ``a(t) exp(iφ)`` and every spin sees the off-resonance ``Δf - f`` (the
step's common phase ``cyc0`` gets ``-f dt``). The frame's phase ``Φ(t)`` (cycles: the sum
of ``f`` times the time spent in each pulse so far) stays after the pulse; later pulses'
B1 (``b1dt``) and the receiver (``demod``) carry it, and `DiscreteSequence.frame_end`
rotates the final magnetization back. This is exact (the frames differ by a rotation
about z, which commutes with free precession and relaxation) and it is what makes
``rf_dt`` usable on modulated pulses: averaging ``a(t) exp(i 2π f t)`` over a step of
``rf_dt`` would instead alias the slice profile to ``z0 ± 1/(γ̄ G rf_dt)`` (replicas of
an off-centre slice at tens of millimetres for ``rf_dt`` of tens of microseconds).

Everything is stored in "cycles" so the engine multiplies by 2π once:
``kstep = γ̄ ∫G dt`` [1/m] and ``b1dt = γ̄ conj(∫B1 dt)`` [1] per step.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._arrays import to_device
from .scanner import Scanner
from .sequence import Sequence
from .timeline import _overlaps, adc_table, gradient_moments, gradient_table, rf_table

__all__ = ["DiscreteSequence", "discretize", "RF_STEP", "FREE_STEP", "WINDOW_STEP", "GENERAL_WINDOW_STEP", "MAX_RF_DT"]

RF_STEP, FREE_STEP, WINDOW_STEP, GENERAL_WINDOW_STEP = 0, 1, 2, 3
# the longest RF step by default [s]: a held sample (block pulse) is cut into steps this
# long, so that the Strang splitting of relaxation and rotation (error ~ flip per step^2
# x dt/T2) stays below ~1e-5 of M0 for flips up to ~4 degrees per step (25 uT B1)
MAX_RF_DT = 10e-6
_MIN_WINDOW = 4  # ADC events with fewer samples are stepped
_MAX_WINDOW_BUFFER = 1 << 24  # entries of the (n_steps, n_window) window output buffer


class DiscreteSequence(eqx.Module):
    """A sequence as flat per-step arrays (padded to a length bucket).

    Attributes:
        dt: (n_steps,) step duration [s] (per interval for window steps).
        t: (n_steps,) step start time [s].
        kstep: (n_steps, 3) ``γ̄ ∫G dt`` over the step (one interval of a window) [1/m].
        b1dt: (n_steps,) complex ``γ̄ ∫B1 dt`` in the simulation frame [1] (cycles).
        kind: (n_steps,) int32: 0 RF, 1 free precession, 2 ADC window, 3 general ADC window.
        sample: (n_steps,) bool: an ADC sample is taken at the end of the step.
        count: (n_steps,) int32: number of intervals of a window step (else 0).
        bstep: (n_steps,) diffusion weighting accumulated over the step along the current
            coherence pathway, ``(2π)² ∫|k(t)|² dt`` [s/m²] (0 unless ``diffusion=True``).
        cyc0: (n_steps,) phase added to every spin in the step [cycles]: rigid motion,
            and ``-f dt`` in the steps of a pulse with frequency offset ``f`` (the frame
            that follows the pulse; module docstring); 0 otherwise.
        spoil: (n_steps,) bool: ideal spoiling — transverse magnetization is set to zero
            before the step (the first step of each excitation pulse when
            ``ideal_spoiling=True``; all False otherwise).
        out_index: (n_adc,) int32: where ADC sample ``i`` is in the engine's flat output
            (``[per-step samples (n_steps), window samples (n_steps * n_window)]``).
        demod: (n_adc,) complex receiver demodulation factor.
        adc_time: (n_adc,) sample times [s].
        n_window: static window length (0 when the sequence has no windows).
        n_real_steps: static number of steps before padding.
        wk: (n_general, n_window, 3) k-space offset ``γ̄ ∫G dt`` [1/m] of samples 1..N-1 of
            each general window from its first sample (zero padded).
        wt: (n_general, n_window) time of those samples from the first sample [s].
        widx: (n_steps,) int32: index into ``wk``/``wt`` of a general window step (else 0).
        wcyc: (n_windows, n_window) with a translation motion: the phase common to all spins
            [cycles] accumulated by samples 1..N-1 of each window (else None).
        wcidx: (n_steps,) int32: index into ``wcyc`` of a window step (else 0).
        frame_end: () the frame's phase after the last pulse [cycles] (module docstring):
            the final transverse magnetization in the scanner's frame is the simulated
            one times ``exp(-i 2π frame_end)``. None: 0.
        rf_sample: (n_steps,) int32, NumPy: for an RF step inside one RF raster sample (up
            to 1e-6 of the step), that sample's index among all played samples, else -1.
            Consecutive steps with the same index and duration have the same B1 integral
            even when its value is traced: the simulator's held steps
            (`mritwin.simulate.held_rf`) read it. None: unknown.
        b1unit: (n_steps,) complex, NumPy, with ``b1src``, when ``b1dt`` is traced but
            each step's B1 is a concrete shape times one traced scalar amplitude:
            ``b1dt = b1unit * conj(a[b1src])`` (``b1src = -1``: ``b1dt = b1unit``, a
            concrete step); plays of a pulse sharing one traced amplitude (a builder's
            flip angle) are then prepared once (`mritwin.simulate.prepared_rf`). None:
            no such factorization.
        b1src: (n_steps,) int32, NumPy: the index of each step's traced amplitude ``a``
            (the same index: the same amplitude object), -1 for concrete steps. None
            with ``b1unit``.
        cyc0_fixed: (n_steps,) float, NumPy, when ``cyc0`` is traced (a traced rigid
            motion): ``cyc0`` where the motion adds nothing to it whatever its values (a
            step without gradient moments: ``∫G dt = ∫G t dt = 0``), NaN elsewhere; a
            pulse played in such steps (a non-selective pulse) is then prepared as on a
            static twin (`mritwin.simulate.prepared_rf`). None: no such steps known.
    """

    dt: jax.Array
    t: jax.Array
    kstep: jax.Array
    b1dt: jax.Array
    kind: jax.Array
    sample: jax.Array
    count: jax.Array
    spoil: jax.Array
    cyc0: jax.Array
    bstep: jax.Array
    out_index: jax.Array
    demod: jax.Array
    adc_time: jax.Array
    n_window: int = eqx.field(static=True)
    n_real_steps: int = eqx.field(static=True)
    wk: jax.Array | None = None
    wt: jax.Array | None = None
    widx: jax.Array | None = None
    wcyc: jax.Array | None = None
    wcidx: jax.Array | None = None
    frame_end: jax.Array | None = None
    rf_sample: np.ndarray | None = None
    b1unit: np.ndarray | None = None
    b1src: np.ndarray | None = None
    cyc0_fixed: np.ndarray | None = None

    @property
    def n_general(self) -> int:
        """Number of general (time-varying gradient) ADC windows."""
        return 0 if self.wk is None else int(self.wk.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.dt.shape[0])

    @property
    def n_adc(self) -> int:
        return int(self.out_index.shape[0])

    def astype(self, dtype) -> DiscreteSequence:
        """Cast the floating-point arrays to ``dtype`` (complex ones to the matching complex)."""
        cdt = jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64
        out = self
        if self.n_general:
            out = eqx.tree_at(lambda d: (d.wk, d.wt), self,
                              (to_device(self.wk, dtype), to_device(self.wt, dtype)))
        if self.wcyc is not None:
            out = eqx.tree_at(lambda d: d.wcyc, out, to_device(self.wcyc, dtype))
        return eqx.tree_at(
            lambda d: (d.dt, d.t, d.kstep, d.b1dt, d.demod, d.adc_time, d.cyc0, d.bstep),
            out,
            (to_device(self.dt, dtype), to_device(self.t, dtype), to_device(self.kstep, dtype),
             to_device(self.b1dt, cdt), to_device(self.demod, cdt),
             to_device(self.adc_time, dtype), to_device(self.cyc0, dtype),
             to_device(self.bstep, dtype)),
        )


def _bucket(n: int) -> int:
    """Round up to a length bucket: multiples of 2^(floor(log2 n) - 3) (≤ 12.5 % padding)."""
    if n <= 16:
        return 16
    step = 2 ** (int(math.floor(math.log2(n))) - 3)
    return int(math.ceil(n / step) * step)


def fuse_starts(kind, dt, sample, spoil, size: int, step_kind: int = 0) -> np.ndarray:
    """First steps of the fused steps: greedy, left to right, non-overlapping runs of
    ``size`` steps of kind ``step_kind`` of equal duration (to 1e-9 relative: raster times
    carry float rounding), with no ideal spoiling after their first step. RF runs (kind 0)
    take no ADC sample; free-precession runs (kind 1) may sample after any step."""
    if step_kind == 1:
        sample = np.zeros_like(sample)
    m = kind.shape[0]
    if m < size:
        return np.zeros(0, np.int64)
    # a step can continue a run started before it when it has the run's kind, takes no
    # sample (nor does the step before it; RF only), is not spoiled and lasts as long as
    # the step before
    cont = np.zeros(m, bool)
    cont[1:] = ((kind[1:] == step_kind) & (kind[:-1] == step_kind) & ~sample[1:] & ~sample[:-1] & ~spoil[1:]
                & (np.abs(dt[1:] - dt[:-1]) <= 1e-9 * np.abs(dt[:-1])))
    # maximal segments [a, b) in which every step after the first continues the run
    # (the first is then RF without a sample too, whenever the segment is longer than one)
    seg_a = np.nonzero(~cont)[0]
    seg_b = np.r_[seg_a[1:], m]
    n_fused = (seg_b - seg_a) // size
    seg_a, n_fused = seg_a[n_fused > 0], n_fused[n_fused > 0]
    out = [a + size * np.arange(n) for a, n in zip(seg_a, n_fused)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _fused_away(is_rf, dt, size: int) -> int:
    """How many fewer steps the RF steps take when the engine fuses them ``size`` at a time
    (`fuse_starts`, without its sample and spoiling conditions)."""
    if size < 2 or not is_rf.any():
        return 0
    none = np.zeros(is_rf.size, bool)
    return int(fuse_starts(np.where(is_rf, 0, 1), dt, none, none, size).size * (size - 1))


def discretize(
    seq: Sequence,
    scanner: Scanner | None = None,
    *,
    rf_dt: float | None = None,
    windows: bool = True,
    bucket: bool = True,
    ideal_spoiling: bool = False,
    motion=None,
    diffusion: bool = False,
    general_windows: bool = False,
    max_dt: float | None = None,
    rf_per_step: int = 1,
    max_rf_dt: float | None = MAX_RF_DT,
) -> DiscreteSequence:
    """Discretize ``seq`` into a `DiscreteSequence` (see the module docstring).

    Args:
        seq: the sequence.
        scanner: the system (``b0`` for ppm offsets, ``gamma_bar``); default `Scanner()`.
        rf_dt: group RF samples into steps of this duration [s] from the shape start,
            the last possibly shorter (B1 averaged over the step; a held sample longer
            than ``rf_dt`` cut into equal steps of at most ``rf_dt``). Default: one step
            per raster sample, runs of equal samples merged, and a run (a held sample:
            a block pulse) longer than ``max_rf_dt`` cut into equal steps of at most
            ``max_rf_dt`` (exact for piecewise-constant RF up to the splitting error of
            the relaxation: see `mritwin.Bloch`).
        windows: evaluate constant-gradient ADC events as windows (exact; faster).
        bucket: pad the number of steps to a length bucket so compiled shapes repeat.
        ideal_spoiling: mark the first step of every excitation pulse to null the
            transverse magnetization (the "ideal spoiling" idealization of spoiled
            gradient echoes; see PHYSICS.md 5). Off by default: real spoiling comes from
            gradients, RF phase cycling and enough isochromats per voxel.
        motion: optional rigid motion (`mritwin.twin.motion.AbstractMotion`): folded into
            each step's k-vector and a per-step phase (exact for motion linear within a
            step). With a translation (`Translation`, `PeriodicTranslation`, a
            `RigidPath` without rotations) constant-gradient ADC windows stay windows, with a per-sample phase common to all spins
            (``wcyc``); with rotations they are stepped sample by sample.
        diffusion: compute ``bstep`` for the analytic diffusion attenuation
            ``Mxy *= exp(-D bstep)`` (k-space pathway: k reset at each excitation centre,
            negated at each refocusing centre; exact for single-pathway sequences such as
            PGSE). ADC windows are then stepped.
        general_windows: also collapse ADC events on time-varying gradients (without RF)
            into one step each (``kind = 3``), for readouts that evaluate a whole window
            at once (the NUFFT readout). Needs concrete (untraced) gradient values;
            otherwise those events are stepped.
        max_dt: cut steps outside RF pulses that are longer than this [s] into equal
            steps of at most ``max_dt`` (for per-spin dynamics such as random walks,
            `mritwin.twin.dynamics`). Default: no limit.
        rf_per_step: RF raster steps of equal duration that the simulator applies as one
            step (the engine's fused RF steps, `Bloch.fuse_rf`). Only sizes the window
            output buffer, which has one row per simulator step: windows fall back to
            stepping when it would pass 2**24 entries, and a shaped pulse's raster steps
            (2 000 per 2 ms sinc at 1 us) would otherwise count one row each.

    Returns:
        The discretized sequence; values are NumPy/JAX arrays (JAX when any event value
        is traced, so gradients flow back into the events).
    """
    scanner = Scanner() if scanner is None else scanner
    gb = scanner.gamma_bar
    if rf_dt is not None and not rf_dt > 0:
        raise ValueError(f"rf_dt must be > 0 [s], got {rf_dt}")
    if max_rf_dt is not None and not (np.isfinite(max_rf_dt) and max_rf_dt > 0):
        raise ValueError(f"max_rf_dt must be None or > 0 [s], got {max_rf_dt}")
    total = seq.duration
    rft = rf_table(seq, scanner.b0, gb)
    adt = adc_table(seq, scanner.b0, gb)
    gt = gradient_table(seq)

    # ---- boundaries ---------------------------------------------------------------
    rf_edges = _rf_step_edges(rft, rf_dt)
    bounds = np.concatenate([[0.0, total], rf_edges, adt.time])
    bounds = np.unique(np.round(bounds, 12))
    bounds = bounds[(bounds >= 0) & (bounds <= round(total, 12) + 1e-12)]
    held_dt = rf_dt if rf_dt is not None else max_rf_dt
    if held_dt is not None:
        # a held sample (a block pulse) longer than rf_dt (max_rf_dt): equal steps of at
        # most that (with rf_dt=None every RF step is a run of equal samples)
        bounds = _subdivide_steps(bounds, rft, held_dt, inside_rf=True)
    if max_dt is not None:
        bounds = _subdivide_steps(bounds, rft, max_dt, inside_rf=False)
    a, b = bounds[:-1], bounds[1:]
    n = a.size

    # RF steps: midpoint inside an RF shape period
    mid = 0.5 * (a + b)
    is_rf = np.zeros(n, bool)
    if rft.periods.size:
        p = np.searchsorted(rft.periods[:, 0], mid, side="right") - 1
        ok = p >= 0
        is_rf[ok] = mid[ok] < rft.periods[p[ok], 1]

    # ADC samples: the step ending at each sample time
    at = np.round(adt.time, 12)
    step_of_sample = np.searchsorted(b, at, side="left")
    if at.size and (np.any(step_of_sample >= n) or np.any(np.abs(b[np.minimum(step_of_sample, n - 1)] - at) > 1e-11)):
        raise ValueError("internal error: ADC sample times not on step boundaries")

    # ---- windows --------------------------------------------------------------------
    win_first = np.zeros(0, np.int64)  # ADC event index of each window
    win_general = np.zeros(0, bool)
    if diffusion or (motion is not None and not _translation_only(motion)):
        windows = False
    if motion is not None:
        general_windows = False
    if windows and adt.count.size:
        cand = np.nonzero(adt.count >= _MIN_WINDOW)[0]
        if cand.size:
            f0 = adt.first[cand]
            f1 = f0 + adt.count[cand] - 1
            s0, s1 = step_of_sample[f0], step_of_sample[f1]
            ok = (s1 - s0 == adt.count[cand] - 1) & ~is_rf[s0]
            ok &= ~np.array([is_rf[x + 1:y + 1].any() for x, y in zip(s0, s1)], bool)
            const = _constant_gradient(gt, adt.time[f0], adt.time[f1])
            if not (general_windows and not isinstance(gt.values, jax.core.Tracer)):
                ok &= const
            cand = cand[ok]
            win_general = ~const[ok]
        # window outputs are (n_steps, n_window) per coil: fall back to stepping when that
        # buffer would exceed _MAX_WINDOW_BUFFER entries (and be mostly padding); the
        # simulator's steps: RF raster steps fused rf_per_step at a time
        n_after = n - _fused_away(is_rf, b - a, rf_per_step)
        n_after -= int((adt.count[cand] - 2).sum()) if cand.size else 0
        buffer = n_after * (int(adt.count[cand].max()) if cand.size else 0)
        if cand.size and buffer <= max(_MAX_WINDOW_BUFFER, 4 * adt.time.size):
            win_first = cand
        else:
            win_general = np.zeros(0, bool)

    # Build the step list: every step, except that the N-1 steps of a window become one.
    keep = np.ones(n, bool)
    win_step = np.zeros(0, np.int64)
    int_a, int_b = a.copy(), b.copy()
    count = np.zeros(n, np.int64)
    kind = np.where(is_rf, 0, 1)
    if win_first.size:
        f0 = adt.first[win_first]
        N = adt.count[win_first]
        s0 = step_of_sample[f0]
        for x, c in zip(s0, N):
            keep[x + 2:x + c] = False  # steps x+1 .. x+c-1 collapse into step x+1
        ws = s0 + 1
        win_step = ws
        int_a[ws] = adt.time[f0]
        int_b[ws] = np.where(win_general, adt.time[f0 + N - 1], adt.time[f0] + adt.dwell[win_first])
        count[ws] = N - 1
        kind[ws] = np.where(win_general, GENERAL_WINDOW_STEP, WINDOW_STEP)
    new_index = np.cumsum(keep) - 1
    sa, sb = int_a[keep], int_b[keep]
    t_start = a[keep]
    kind = kind[keep]
    count = count[keep]
    dt = sb - sa
    m = sa.size

    # per-step samples (non-window) and output mapping
    sample = np.zeros(m, bool)
    n_pad = _bucket(m) if bucket else m
    n_window = int(adt.count[win_first].max() - 1) if win_first.size else 0
    if n_window and bucket:
        n_window = 1 << (n_window - 1).bit_length()
    out_index = new_index[step_of_sample].astype(np.int64)
    if win_first.size:
        for w_ev, ws_old in zip(win_first, win_step):
            f0, c = adt.first[w_ev], adt.count[w_ev]
            ws_new = new_index[ws_old]
            out_index[f0 + 1:f0 + c] = n_pad + ws_new * n_window + np.arange(c - 1)
        in_window = np.zeros(adt.time.size, bool)
        for w_ev in win_first:
            in_window[adt.first[w_ev] + 1:adt.first[w_ev] + adt.count[w_ev]] = True
        sample[new_index[step_of_sample[~in_window]]] = True
    else:
        sample[new_index[step_of_sample]] = True

    spoil = np.zeros(m, bool)
    if ideal_spoiling and rft.pulses:
        from .kspace import rf_roles

        roles = np.asarray(rf_roles(rft.pulses))
        # (rounded like the step bounds: a start summed from block durations may lie a
        # rounding below its bound, which would mark the step before the pulse)
        starts_exc = np.round(rft.periods[roles == 0, 0], 12)
        spoil[np.searchsorted(sb, starts_exc, side="right")] = True

    # ---- values -----------------------------------------------------------------------
    still = None  # (the steps whose phase no motion changes)
    if motion is None:
        kstep = gb * gradient_moments(gt, sa, sb)
        cyc0 = np.zeros(m)
    else:
        kstep, cyc0, still = _apply_motion(motion, gt, sa, sb, gb)
    frame = _PulseFrame(rft)
    b1dt, rf_sample, b1factor = _rf_integrals(rft, sa, sb, kind == 0, gb, frame)
    shift = np.zeros(m)
    if frame.active:  # the frame follows each pulse's frequency offset: -f dt in its steps
        rf_steps = np.nonzero(kind == 0)[0]
        # (the pulse holding each step's midpoint: a step's start may sit a rounding below its pulse's)
        shift[rf_steps] = -frame.freq[frame.pulse_at(0.5 * (sa + sb)[rf_steps])] * dt[rf_steps]
        cyc0 = cyc0 + shift
    cyc0_fixed = None
    if isinstance(cyc0, jax.core.Tracer) and still is not None and still.any():
        cyc0_fixed = np.where(still, shift, np.nan)
    wcyc = wcidx = None
    if motion is not None and win_first.size:
        wcyc, wcidx, cyc0 = _translated_windows(motion, kstep, cyc0, adt, win_first, new_index[win_step], n_window)
    wk = wt = widx = None
    if win_general.any():
        wk, wt, widx = _general_windows(gt, adt, win_first[win_general], new_index[win_step[win_general]],
                                        n_window, m, gb)

    def pad(x, value=0):
        if n_pad == m:
            return x
        widths = [(0, n_pad - m)] + [(0, 0)] * (x.ndim - 1)
        return (jnp if isinstance(x, jax.Array) else np).pad(x, widths, constant_values=value)

    return DiscreteSequence(
        dt=pad(dt), t=pad(t_start, total), kstep=pad(kstep), b1dt=pad(b1dt),
        kind=pad(kind.astype(np.int32), 1), sample=pad(sample, False), cyc0=pad(cyc0),
        bstep=pad(_pathway_b(seq, gt, rft, sa, sb, gb) if diffusion else np.zeros(m)),
        count=pad(count.astype(np.int32)), spoil=pad(spoil, False), out_index=out_index.astype(np.int32),
        demod=adt.demod if not frame.active else adt.demod * np.exp(-2j * np.pi * frame.phase(adt.time)),
        adc_time=adt.time, n_window=n_window, n_real_steps=m,
        wk=wk, wt=wt, widx=None if widx is None else pad(widx),
        wcyc=wcyc, wcidx=None if wcidx is None else pad(wcidx),
        frame_end=np.float64(frame.end), rf_sample=pad(rf_sample, -1),
        b1unit=None if b1factor is None else pad(b1factor[0]),
        b1src=None if b1factor is None else pad(b1factor[1], -1),
        cyc0_fixed=None if cyc0_fixed is None else pad(cyc0_fixed, np.nan),
    )


class _PulseFrame:
    """The frame that follows the RF pulses' frequency offsets (module docstring).

    ``freq[p]`` [Hz] is pulse ``p``'s offset, ``before[p]`` the frame's phase at its
    start [cycles, mod 1]; the phase grows at ``freq[p]`` through the pulse's shape and
    stays constant between pulses."""

    def __init__(self, rft):
        n_p = len(rft.pulses)
        self.freq = np.zeros(n_p)
        if n_p:
            self.freq[rft.pulse] = rft.freq
        self.start = rft.periods[:, 0] if n_p else np.zeros(0)
        self.length = rft.periods[:, 1] - self.start if n_p else np.zeros(0)
        adv = self.freq * self.length
        # (cumulative sums mod 1 as they go: 1e4 pulses of 12 cycles keep float64's precision)
        before = np.zeros(n_p)
        acc = 0.0
        for p in range(n_p):
            before[p] = acc
            acc = (acc + adv[p]) % 1.0
        self.before, self.end = before, acc
        self.active = bool(np.any(self.freq != 0))

    def pulse_at(self, t) -> np.ndarray:
        """(n,) index of the last pulse starting at or before each time (-1: none)."""
        return np.searchsorted(self.start, np.asarray(t), side="right") - 1

    def phase(self, t) -> np.ndarray:
        """(n,) the frame's phase at times ``t`` [s] [cycles, mod 1]."""
        t = np.asarray(t, float)
        p = self.pulse_at(t)
        out = np.zeros(t.shape)
        ok = p >= 0
        q = p[ok]
        out[ok] = self.before[q] + self.freq[q] * np.clip(t[ok] - self.start[q], 0.0, self.length[q])
        return out % 1.0


def _translation_only(motion) -> bool:
    """Motion without rotation (`Translation`, `PeriodicTranslation`, a `RigidPath` without
    rotations): ADC windows stay windows (the motion adds a phase common to all spins to
    each sample)."""
    from ..twin.motion import PeriodicTranslation, RigidPath, Translation

    return (isinstance(motion, (Translation, PeriodicTranslation))
            or (isinstance(motion, RigidPath) and motion.rotations is None))


def _translated_windows(motion, kstep, cyc0, adt, events, steps, n_window):
    """Per-sample common phases of constant-gradient windows under a translation ``d(t)``.

    Interval ``i`` of a window (moment ``k`` per interval, constant gradient so no first
    moment about its midpoint) adds ``k·d(t_mid,i)`` cycles to every spin; sample ``n``
    carries the cumulative sum ``Φ_n`` (``wcyc[w, n-1]``). Returns ``(wcyc, wcidx, cyc0)``
    with the window steps' own ``cyc0`` zeroed (the table replaces it).
    """
    xp = jnp if any(isinstance(x, jax.Array) for x in (kstep, cyc0)) else np
    # every window's interval midpoints in one (W, n_window) grid, evaluated at once (a
    # call per window: ~65 small eager programs per call of a 64-line GRE, and as many
    # pieces in a traced motion's program); the grid's pad past each window's c - 1
    # intervals holds its last midpoint and is zeroed after the sum
    first, dwell = adt.first[events], adt.dwell[events]
    n_int = adt.count[events] - 1
    j = np.arange(n_window)
    mids = adt.time[first][:, None] + (np.minimum(j[None, :], n_int[:, None] - 1) + 0.5) * dwell[:, None]
    _, _, d, _ = motion.evaluate(mids.ravel())
    d = xp.reshape(xp.asarray(d), mids.shape + (3,))
    phi = xp.cumsum(xp.einsum("wnj,wj->wn", d, kstep[np.asarray(steps)]), axis=1)
    wcyc = xp.where(j[None, :] < n_int[:, None], phi, 0.0)
    wcidx = np.zeros(len(cyc0), np.int32)
    wcidx[np.asarray(steps)] = np.arange(len(steps))
    if xp is jnp:
        cyc0 = jnp.asarray(cyc0).at[np.asarray(steps)].set(0.0)
    else:
        cyc0 = np.array(cyc0, dtype=float)
        cyc0[np.asarray(steps)] = 0.0
    return wcyc, wcidx, cyc0


def _subdivide_steps(bounds, rft, max_dt, *, inside_rf: bool):
    """Step boundaries with every step inside RF pulses (``inside_rf``; long held samples)
    or outside them (per-spin dynamics: `mritwin.twin.dynamics`) longer than ``max_dt``
    [s] cut into equal parts."""
    if not (max_dt is not None and np.isfinite(max_dt) and max_dt > 0):
        raise ValueError(f"max_dt must be > 0 [s], got {max_dt}")
    a, b = bounds[:-1], bounds[1:]
    mid = 0.5 * (a + b)
    in_rf = np.zeros(a.size, bool)
    if rft.periods.size:
        p = np.searchsorted(rft.periods[:, 0], mid, side="right") - 1
        ok = p >= 0
        in_rf[ok] = mid[ok] < rft.periods[p[ok], 1]
    parts = np.maximum(np.ceil((b - a) / max_dt - 1e-9), 1).astype(np.int64)
    parts[in_rf != inside_rf] = 1
    if not (parts > 1).any():
        return bounds
    extra = parts - 1
    idx = np.repeat(np.arange(a.size), extra)
    j = np.arange(idx.size) - np.repeat(np.cumsum(extra) - extra, extra) + 1
    cuts = a[idx] + (b - a)[idx] * j / parts[idx]
    # (not rounded to 1 ps as the other boundaries are: that made the parts' durations
    # differ by up to 2 ps, 2e-7 of a 10 us step, too much for them to count as equal
    # steps of one prepared pulse or one fused step; unrounded, they differ by the
    # rounding of the absolute times, ~eps t. Interior points: no duplicates.)
    return np.sort(np.concatenate([bounds, cuts]))


def _general_windows(gt, adt, events, steps, n_window, n_steps, gb):
    """Sample k-space offsets (n, n_window, 3) [1/m] and times (n, n_window) [s] of general
    windows, relative to each window's first sample, and the per-step window index."""
    wk = np.zeros((events.size, n_window, 3))
    wt = np.zeros((events.size, n_window))
    for i, ev in enumerate(events):
        f0, c = adt.first[ev], adt.count[ev]
        ts = adt.time[f0 + 1:f0 + c]
        wt[i, :c - 1] = ts - adt.time[f0]
        wk[i, :c - 1] = gb * np.asarray(gradient_moments(gt, np.full(c - 1, adt.time[f0]), ts))
    widx = np.zeros(n_steps, np.int32)
    widx[steps] = np.arange(events.size)
    return wk, wt, widx


def _pathway_b(seq, gt, rft, sa, sb, gb):
    """(n_steps,) (2π)² ∫|k|² dt over each step along the k-space pathway [s/m²].

    Integrated exactly: on a grid holding every step edge, gradient corner and RF centre,
    G is linear so k is quadratic and |k|² quartic, which 3-point Gauss–Legendre
    quadrature integrates exactly.
    """
    from .kspace import _EXCITE, _NONE, rf_roles

    starts = seq.block_starts()
    centres = np.array([starts[b] + ev.delay + ev.center for b, ev in rft.pulses]) if rft.pulses else np.zeros(0)
    roles = np.asarray(rf_roles(rft.pulses), int) if rft.pulses else np.zeros(0, int)
    keep = roles != _NONE
    centres, roles = centres[keep], roles[keep]
    grid = np.unique(np.concatenate([sa, sb, gt.t0, gt.t1, centres]))
    grid = grid[(grid >= sa[0]) & (grid <= sb[-1])]
    u, v = grid[:-1], grid[1:]
    k_inc = gb * np.asarray(gradient_moments(gt, u, v))  # (n_fine, 3)
    # k at the start of each fine interval, with resets/negations at RF centres
    k_start = np.zeros_like(k_inc)
    kc = np.zeros(3)
    ci = 0
    for i in range(u.size):
        while ci < centres.size and centres[ci] <= u[i] + 1e-15:
            kc = np.zeros(3) if roles[ci] == _EXCITE else -kc
            ci += 1
        k_start[i] = kc
        kc = kc + k_inc[i]
    nodes = np.array([-np.sqrt(0.6), 0.0, np.sqrt(0.6)])
    weights = np.array([5.0, 8.0, 5.0]) / 18.0
    integral = np.zeros(u.size)
    for x, w in zip(nodes, weights):
        tq = u + (v - u) * (x + 1) / 2
        kq = k_start + gb * np.asarray(gradient_moments(gt, u, tq))
        integral += w * (v - u) * np.sum(kq * kq, axis=1)
    step = np.searchsorted(sb, 0.5 * (u + v))
    return (2 * np.pi) ** 2 * np.bincount(step, weights=integral, minlength=sa.size)


def _apply_motion(motion, gt, sa, sb, gb):
    """Per-step k-vector, phase offset [cycles] and the steps the motion leaves alone, for a
    rigid motion (see `mritwin.twin.motion`): k_eff = Rᵀk0 + Ṙᵀk1, offset = k0·(c+d) + k1·ḋ
    - k_eff·c; ``still`` (NumPy bool, None with traced gradients): both moments zero, so
    the offset is exactly 0 and k_eff 0 whatever the motion.

    Concrete moments below 1e-12 of the sequence's largest (each moment on its own) are
    set to 0 first: they are rounding, not gradient (a step that starts where a trapezoid
    ends, its end time a rounding past the step's bound rounded to 1 ps, picks up ~1e-24
    1/m of its ramp), and would mark the step as moved (a hard pulse after such a
    trapezoid could then not be prepared under a traced motion: a 32-line GRE prepared 15
    of its 32 pulses). The phase dropped, ``k·d`` with ``|k| <= 1e-12 max|k|``, is below
    1e-10 cycles for any displacement within the field of view."""
    m0, m1 = gradient_moments(gt, sa, sb, first_moment=True)
    still = None
    if not any(isinstance(x, jax.core.Tracer) for x in (m0, m1)):
        m0, m1 = (np.where(np.abs(m) <= 1e-12 * np.abs(m).max(initial=0.0), 0.0, m)
                  for m in (np.asarray(m0), np.asarray(m1)))
        still = ~np.any(m0 != 0, axis=1) & ~np.any(m1 != 0, axis=1)
    k0, k1 = gb * m0, gb * m1
    r, rd, d, dd = motion.evaluate(0.5 * (sa + sb))
    if _translation_only(motion):  # (R = I: the k-vectors stay the sequence's, concrete
        # under a traced translation, so that its pulses can still be planned)
        return k0, jnp.sum(k0 * d, -1) + jnp.sum(k1 * dd, -1), still
    k_eff = jnp.einsum("nij,ni->nj", r, k0) + jnp.einsum("nij,ni->nj", rd, k1)
    c = jnp.asarray(motion.center)
    offset = (jnp.sum(k0 * (c[None, :] + d), -1) + jnp.sum(k1 * dd, -1)
              - jnp.sum(k_eff * c[None, :], -1))
    return k_eff, offset, still


def _rf_step_edges(rft, rf_dt):
    """Step edges inside RF pulses: every sample edge, minus removable interior ones, and
    each pulse's shape period (whose start the pulse's frame and ``is_rf`` refer to: a
    time-shaped pulse's first sample may start after it, or its last end before it)."""
    if rft.edge0.size == 0:
        return np.zeros(0)
    e0, e1 = rft.edge0, rft.edge1
    same_pulse = rft.pulse[1:] == rft.pulse[:-1]
    removable = same_pulse.copy()
    if rf_dt is None:
        vals = rft.values
        if not isinstance(vals, jax.Array):
            v = np.asarray(vals)[rft.value_index]
            removable &= v[1:] == v[:-1]  # (in the frame that follows the pulse, modulated or not)
        elif rft.shape_key is not None:
            # traced amplitude or phase (one value per pulse), concrete shapes: the same runs
            k = rft.shape_key[rft.value_index]
            removable &= k[1:] == k[:-1]
        else:
            removable[:] = False
    else:
        # steps of rf_dt from the shape start: a sample belongs to the step its start is in
        start = rft.periods[rft.pulse, 0]
        bucket_idx = np.floor((e0 - start) / rf_dt + 1e-9)
        removable &= bucket_idx[1:] == bucket_idx[:-1]
    first = np.r_[True, ~same_pulse]
    last = np.r_[~same_pulse, True]
    return np.concatenate([e0[first], e1[last], e1[:-1][same_pulse & ~removable],
                           rft.periods[:, 0], rft.periods[:, 1]])


def _rf_integrals(rft, sa, sb, is_rf, gb, frame):
    """(n_steps,) γ̄ conj(∫ B1 dt) over each RF step (0 elsewhere), in the frame that
    follows the pulses (``frame``, a `_PulseFrame`): the samples' frequency modulation is
    replaced by the frame's phase at their pulse's start (0 without offsets); the
    steps' ``rf_sample`` (`DiscreteSequence`): the sample an RF step lies in, to 1e-6 of
    its duration (step bounds are rounded to 1 ps), else -1; and, when the integrals are
    traced but the table's values factor (`RFTable.unit`), the steps' ``(b1unit, b1src)``
    (`DiscreteSequence`), else None."""
    m = sa.size
    sample_of = np.full(m, -1, np.int32)
    if rft.edge0.size == 0 or not is_rf.any():
        return np.zeros(m, np.complex128), sample_of, None
    # pairs (step, sample) with positive overlap; samples are sorted and disjoint
    idx = np.nonzero(is_rf)[0]
    lo = np.searchsorted(rft.edge1, sa[idx], side="right")
    hi = np.searchsorted(rft.edge0, sb[idx], side="left")
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(idx, counts)
    cols = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    ov = np.minimum(sb[rows], rft.edge1[cols]) - np.maximum(sa[rows], rft.edge0[cols])
    good = ov > 0
    rows, cols, ov = rows[good], cols[good], ov[good]
    inside = ov >= (1.0 - 1e-6) * (sb[rows] - sa[rows])
    sample_of[rows[inside]] = cols[inside]
    coef = ov * np.exp(-2j * np.pi * frame.before)[rft.pulse[cols]]  # (the exponential per pulse)

    def integrals(vals):
        contrib = coef * vals[rft.value_index[cols]]
        out = np.bincount(rows, weights=contrib.real, minlength=m) + 1j * np.bincount(
            rows, weights=contrib.imag, minlength=m)
        return gb * np.conj(out)

    vals = rft.values
    if not isinstance(vals, jax.Array):
        return integrals(np.asarray(vals)), sample_of, None
    out = _traced_integrals(vals, coef, rft.value_index[cols], rows, gb, m)
    factor = None
    if rft.unit is not None:  # b1dt = b1unit * conj(a[b1src]): one amplitude per step
        src = rft.source[rft.value_index[cols]]
        lo_src, hi_src = np.full(m, np.iinfo(np.int64).max), np.full(m, -1)
        np.minimum.at(lo_src, rows, src)
        np.maximum.at(hi_src, rows, src)
        if np.all((lo_src == hi_src) | (hi_src == -1)):
            factor = (integrals(rft.unit), np.where(hi_src >= 0, hi_src, -1).astype(np.int32))
    return out, sample_of, factor


@functools.partial(jax.jit, static_argnames="m")
def _traced_integrals(vals, coef, index, rows, gb, m: int):
    """`_rf_integrals` of traced B1 samples ``vals``, (m,): ``gb conj(sum coef vals[index])``
    per step ``rows``, in one jitted call (eager, each gather and scatter would be a
    program of its own, and so would its transpose under `jax.grad`)."""
    contrib = coef * vals[index]
    return gb * jnp.conj(jnp.zeros(m, contrib.dtype).at[rows].add(contrib))


def _constant_gradient(gt, t_first, t_last):
    """(n,) bool: every gradient is constant over [t_first[i], t_last[i]]."""
    n = t_first.size
    ok = np.ones(n, bool)
    rows, cols, *_ = _overlaps(gt, t_first, t_last, False)
    if rows.size == 0:
        return ok
    bad = ~gt.flat[cols]
    ok[rows[bad]] = False
    vals = gt.values
    if isinstance(vals, jax.Array):
        # traced values: only one (flat) segment per logical channel is provably constant
        key = rows * 3 + np.argmax(np.abs(gt.direction[cols]), axis=1)
        uniq, cnt = np.unique(key, return_counts=True)
        ok[(uniq[cnt > 1] // 3)] = False
    else:
        v = np.asarray(vals)
        # constant iff all segments are flat and, per row and channel, their values agree
        for r in np.unique(rows):
            sel = rows == r
            sv = v[gt.i0[cols[sel]]]
            ch = np.argmax(np.abs(gt.direction[cols[sel]]), axis=1)
            for c in np.unique(ch):
                vv = sv[ch == c]
                if np.ptp(vv) > 1e-12 * max(1.0, np.abs(vv).max()):
                    ok[r] = False
    return ok

