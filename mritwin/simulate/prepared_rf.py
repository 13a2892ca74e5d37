"""Prepared RF pulses: a pulse that repeats is stepped once per chunk, then applied whole.

The Bloch equations are affine in the magnetization, so a whole RF pulse — its raster
steps of rotation and relaxation — maps each spin's magnetization as ``M -> A M + b``
with a per-spin 3 x 3 matrix ``A`` and offset ``b``. When the same pulse (same raster
shape, durations and gradients) is played many times, as the excitation of every TR of a
2D or 3D sequence is, the engine computes ``A`` and ``b`` once per chunk of spins by
stepping the pulse on the three unit vectors and on the zero state, and replaces each
occurrence by one step that applies them: 12 multiply-adds per spin instead of a rotation
per raster sample.

A pulse played with another phase offset ``α`` (RF spoiling) has its B1 rotated by ``α``
about z, which conjugates the map by that rotation:
``M -> Rz(α) (A Rz(-α) M + b)``. The result equals stepping the pulse to float rounding.

`plan_prepared_rf` works on the host from a concrete `DiscreteSequence` and returns a
shorter one (the repeated pulses as single steps of their own kind) and the table of
prepared pulses; `prepare_pulse` and `apply_pulse` are the engine's per-chunk and per-step
kernels. A pulse with a concrete shape whose plays share one traced amplitude (a
builder's flip angle under `jax.grad`, `DiscreteSequence.b1unit`) is planned from its
integrals per unit amplitude, and the table carries the traced factors
(`PulseTable.scale`): the map is computed with the traced amplitude, once per chunk.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._arrays import to_device
from ..sequence.discretize import DiscreteSequence, _bucket
from . import kernels
from .kernels import Spins, State

__all__ = ["PulseTable", "device_b1dt", "shorten_steps", "plan_prepared_rf", "prepare_pulse", "prepare_pulse_grouped",
           "apply_pulse", "MIN_REPEATS", "MAX_PULSES"]

MIN_REPEATS = 4  # a pulse is prepared when played at least this often...
MIN_SAMPLES = 2  # ...with at least this many raster steps (one with ``single_steps``,
# where a one-step pulse must still repeat MIN_REPEATS times: preparing it costs four steps)
MAX_PULSES = 8  # prepared pulse shapes (the ones that save the most steps)
# In reverse mode `prepare_pulse` recomputes each raster step's rotation from the carried
# columns (`jax.checkpoint` of its loop body) instead of keeping the step's ~30 per-spin
# intermediates for every raster step: a 16-line GRE's T2 and B1 gradient (1 024 spins)
# 0.55x the time, a 2 ms sinc's map alone 0.37-0.53x (`benchmarks/bench_prepare_gradient.py`,
# float64, 2-core CPU; with the rotation chosen on the host, 0.52x and 0.33-0.46x).
# False: the intermediates kept (the benchmark's baseline).
CHECKPOINT_PREPARE = True
STEP_FIELDS = ("dt", "t", "kstep", "b1dt", "kind", "sample", "count", "spoil", "cyc0", "bstep")  # per-step fields of a DiscreteSequence


class PulseTable(NamedTuple):
    """The raster steps of each prepared pulse, zero padded (a zero step is the identity).

    Attributes:
        dt: (P, L) step durations [s].
        k: (P, L, 3) gradient moments of the steps [1/m].
        b1dt: (P, L) complex B1 integrals of the steps [cycles], at phase offset 0 (with
            ``scale``: per unit of the pulse's traced amplitude, concrete).
        c0: (P, L) phase common to all spins in each step [cycles] (``cyc0``: a rigid
            translation's, and ``-f dt`` of a pulse with frequency offset ``f``).
        scale: (P,) complex JAX array (traced), or None (1): the factor of each row's
            ``b1dt``, ``conj`` of the traced amplitude its plays share
            (`DiscreteSequence.b1unit`); the engine multiplies it in (`device_b1dt`).
    """

    dt: np.ndarray
    k: np.ndarray
    b1dt: np.ndarray
    c0: np.ndarray
    scale: jax.Array | None = None


def device_b1dt(table: PulseTable, cdt):
    """The table's B1 integrals [cycles] in the complex dtype ``cdt``, scaled (JAX)."""
    b1dt = to_device(table.b1dt, cdt)
    return b1dt if table.scale is None else _scaled_rows(b1dt, table.scale)


@jax.jit
def _scaled_rows(b1dt, scale):
    """``b1dt * scale[:, None]`` in ``b1dt``'s dtype, one jitted call."""
    return b1dt * scale.astype(b1dt.dtype)[:, None]


def _concrete(x):
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _match_tol(t, dt, kind) -> float:
    """Relative rounding of a step's values at the sequence's latest time, to which two
    plays of a pulse still count as the same: a step's integrals (B1, gradient moment,
    duration) are taken between absolute times, so a 1 us step 2.4 s into a sequence
    carries ~5e-10 of relative rounding; and step boundaries are rounded to 1 ps while
    the samples' edges are sums of block durations, which drift from that grid (0.38 ps
    after 1 000 blocks of 12 ms), so a step that ends a held sample (a block pulse cut into
    10 us steps) can overlap it 1 ps less: 1e-7 of a 10 us step. At most 1e-7 (the
    candidate buckets' width)."""
    rf = (kind == 0) & (dt > 0)
    if not rf.any():
        return 0.0
    late = float(np.abs(t).max()) + float(dt.max())
    return min((16 * np.finfo(np.float64).eps * late + 1e-12) / float(dt[rf].min()), 1e-7)


def _runs(kind: np.ndarray):
    """(start, stop) of each maximal run of consecutive RF steps (kind 0)."""
    is_rf = np.r_[False, kind == 0, False].astype(np.int8)
    edges = np.diff(is_rf)
    return np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]


def plan_prepared_rf(dseq: DiscreteSequence, kind_id: int, min_repeats: int = MIN_REPEATS,
                     single_steps: bool = False, max_pulses: int = MAX_PULSES, scaled: bool = False):
    """Replace the RF pulses that repeat by one step each (host side).

    Args:
        dseq: a discretized sequence with concrete values.
        kind_id: the step kind the engine gives the prepared pulses.
        min_repeats: prepare a pulse played at least this often (1 when the engine
            prepares pulses on groups of spins, where preparing costs little).
        single_steps: also prepare pulses of one RF step (a hard pulse) played at least
            `MIN_REPEATS` times, when every one-step pulse of the sequence is (the engine
            does so on the CPU, where applying the map costs less arithmetic than the
            step's rotation).
        max_pulses: prepare at most this many pulse shapes (those that save the most
            steps).
        scaled: with traced B1 integrals that factor into concrete shapes and traced
            amplitudes (`DiscreteSequence.b1unit`), prepare the pulses whose plays share
            one amplitude: the table's ``b1dt`` is then per unit amplitude and its
            ``scale`` the traced factors (the XLA engine; the fused kernel takes concrete
            tables only).

    Returns:
        ``(dseq, table)``: the sequence with each repeated pulse as one step of kind
        ``kind_id`` (``count`` = which prepared pulse, ``b1dt`` = ``exp(iα)`` of its phase
        offset, ``dt`` its duration), and the `PulseTable`; or ``(dseq, None)`` when no
        pulse qualifies, or the sequence has traced values (other than factored B1 with
        ``scaled``, and a traced motion's common phases, ``cyc0``, outside the steps it
        cannot change, `DiscreteSequence.cyc0_fixed`: a pulse played there is prepared,
        the others stay steps), diffusion weighting or RF during ADC sampling. A
        translation's common phase per step (``cyc0``) belongs to the pulse: plays at
        other times of a moving twin are other pulses.
    """
    m = dseq.n_real_steps
    fields = {f: _concrete(getattr(dseq, f)) for f in
              ("dt", "t", "kstep", "b1dt", "kind", "sample", "count", "spoil", "cyc0", "bstep", "out_index")}
    source = np.full(m, -1)  # the traced amplitude of each step (`DiscreteSequence.b1src`)
    if fields["b1dt"] is None and scaled and _concrete(dseq.b1unit) is not None and _concrete(dseq.b1src) is not None:
        fields["b1dt"], source = np.asarray(dseq.b1unit), np.asarray(dseq.b1src)[:m]
    moving = np.zeros(m, bool)  # steps whose traced common phase (a traced motion's) is unknown here
    if fields["cyc0"] is None and dseq.cyc0_fixed is not None:
        fixed = np.asarray(dseq.cyc0_fixed)[:m]
        moving = np.isnan(fixed)
        fields["cyc0"] = np.where(moving, 0.0, fixed)
    if any(v is None for v in fields.values()):
        return dseq, None
    if np.any(fields["bstep"][:m] != 0):
        return dseq, None
    kind = fields["kind"][:m]
    starts, stops = _runs(kind)
    if not starts.size:
        return dseq, None
    sample, spoil = fields["sample"][:m], fields["spoil"][:m]
    dt, kst, b1, cyc = fields["dt"][:m], fields["kstep"][:m], fields["b1dt"][:m], fields["cyc0"][:m]
    # group the runs by shape: durations, moments, B1 up to a common phase and the common
    # phases, equal to 1e-10 of each field's largest value plus `_match_tol` of each value
    # (float rounding apart).
    # Candidates come from buckets of two sums (|B1| and durations, to 1e-7), looked up
    # with their neighbours: a hash of all the rounded values would put plays that differ
    # only by rounding into different buckets whenever one of their ~2 000 values
    # straddles a rounding boundary (a 256-line GRE: 89 of its 256 sinc plays were left
    # unprepared)
    scales = [max(float(np.abs(x).max()), 1e-300) for x in (dt, kst, b1, cyc)]
    tol = _match_tol(fields["t"][:m], dt, kind)
    buckets: dict = {}
    groups = []  # [(dt, k, shape), [runs]]
    near = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    phases = np.zeros(starts.size, complex)
    for r, (a, b) in enumerate(zip(starts, stops)):
        if (b - a < (1 if single_steps else MIN_SAMPLES) or sample[a:b].any() or spoil[a + 1:b].any()
                or np.any(source[a:b] != source[a]) or moving[a:b].any()):
            continue
        ref = a + int(np.argmax(np.abs(b1[a:b])))
        if b1[ref] == 0:
            continue
        ph = b1[ref] / abs(b1[ref])
        phases[r] = ph
        vals = (dt[a:b], kst[a:b], b1[a:b] * np.conj(ph), cyc[a:b])
        q = (int(np.floor(np.abs(vals[2]).sum() / (1e-7 * scales[2] * (b - a)))),
             int(np.floor(vals[0].sum() / (1e-7 * scales[0] * (b - a)))))
        match = next((g for i, j in near for g in buckets.get((b - a, source[a], q[0] + i, q[1] + j), ())
                      if all(np.all(np.abs(v - w) <= 1e-10 * sc + tol * np.abs(w))
                             for v, w, sc in zip(vals, groups[g][0], scales))),
                     None)
        if match is None:
            buckets.setdefault((b - a, source[a]) + q, []).append(len(groups))
            groups.append((vals, [r]))
        else:
            groups[match][1].append(r)
    groups = {g: runs for g, (_, runs) in enumerate(groups)}
    def enough(runs):  # (a one-step pulse: repeated MIN_REPEATS times whatever min_repeats)
        one = stops[runs[0]] - starts[runs[0]] == 1
        return len(runs) >= (max(min_repeats, MIN_REPEATS) if one else min_repeats)

    chosen = [runs for runs in groups.values() if enough(runs)]
    chosen.sort(key=lambda runs: -len(runs) * (stops[runs[0]] - starts[runs[0]]))
    chosen = chosen[:max_pulses]
    if single_steps:  # all one-step pulses or none: one left as a step (an inversion between
        # two trains) would be a kind outside the period of the others (`layout`)
        one = [runs for runs in chosen if stops[runs[0]] - starts[runs[0]] == 1]
        if sum(len(runs) for runs in one) < int(np.sum(stops - starts == 1)):
            chosen = [runs for runs in chosen if stops[runs[0]] - starts[runs[0]] > 1]
    if not chosen:
        return dseq, None

    # the table of prepared pulses
    length = max(int(stops[runs[0]] - starts[runs[0]]) for runs in chosen)
    n_p = len(chosen)
    t_dt = np.zeros((n_p, length))
    t_k = np.zeros((n_p, length, 3))
    t_b1 = np.zeros((n_p, length), complex)
    t_c0 = np.zeros((n_p, length))
    pulse_of_run = np.full(starts.size, -1)
    for p, runs in enumerate(chosen):
        a, b = starts[runs[0]], stops[runs[0]]
        t_dt[p, :b - a] = dt[a:b]
        t_k[p, :b - a] = kst[a:b]
        t_b1[p, :b - a] = b1[a:b] * np.conj(phases[runs[0]])
        t_c0[p, :b - a] = cyc[a:b]
        pulse_of_run[runs] = p

    # the shorter step list: each prepared run becomes its first step, retyped
    keep = np.ones(m, bool)
    new = {f: fields[f][:m].copy() for f in STEP_FIELDS}
    for r in np.nonzero(pulse_of_run >= 0)[0]:
        a, b = starts[r], stops[r]
        keep[a + 1:b] = False
        new["dt"][a] = dt[a:b].sum()
        new["kstep"][a] = kst[a:b].sum(0)
        new["b1dt"][a] = phases[r]
        new["cyc0"][a] = 0.0  # (in the table)
        new["kind"][a] = kind_id
        new["count"][a] = pulse_of_run[r]
    if moving.any():  # a traced motion: the other steps keep their traced common phase
        new["cyc0"] = jnp.asarray(dseq.cyc0)[:m].at[starts[pulse_of_run >= 0]].set(0.0)
    scale = None
    if source.max(initial=-1) >= 0:  # traced amplitudes: the other steps keep their traced B1
        first = starts[pulse_of_run >= 0]
        ref = _amplitude_steps(fields["b1dt"], source, [source[starts[runs[0]]] for runs in chosen])
        new["b1dt"], scale = _traced_b1(dseq.b1dt, m, first, new["b1dt"][first], ref,
                                        np.where(ref >= 0, fields["b1dt"][ref], 1.0))
    return shorten_steps(dseq, keep, new), PulseTable(t_dt, t_k, t_b1, t_c0, scale)


def _amplitude_steps(unit, source, sources) -> np.ndarray:
    """(P,) for each of ``sources`` (a traced amplitude, `DiscreteSequence.b1src`), the
    step where its ``|b1unit|`` peaks; -1 for the source -1 (a concrete amplitude)."""
    ref = np.full(len(sources), -1)
    for i, s in enumerate(sources):
        if s >= 0:
            steps = np.nonzero(source == s)[0]
            ref[i] = steps[np.argmax(np.abs(unit[steps]))]
    return ref


@functools.partial(jax.jit, static_argnames="m")
def _traced_b1(b1dt, m, first, phases, ref, unit):
    """The traced steps' B1 with the prepared pulses' first steps set to their ``phases``,
    (m,), and the factors ``b1dt / b1unit`` (``conj`` of the amplitude) read at the steps
    ``ref`` (1 where -1), (P,): in one jitted call (eager, each of its gathers, scatters and
    divisions would be a program compiled on its own, and so would their transposes under
    `jax.grad`)."""
    scale = jnp.where(ref >= 0, b1dt[jnp.maximum(ref, 0)] / unit, 1.0).astype(b1dt.dtype)
    return b1dt[:m].at[first].set(phases.astype(b1dt.dtype)), scale


def shorten_steps(dseq: DiscreteSequence, keep: np.ndarray, new: dict, fused=None) -> DiscreteSequence:
    """The sequence with only the steps where ``keep`` is true (host side).

    Args:
        dseq: the original sequence; its structure (``t``, ``dt``, ``out_index``, ``widx``,
            ``wcidx``) must be concrete.
        keep: (n_real_steps,) bool, false for the steps merged into an earlier one; no
            dropped step may carry an ADC sample.
        new: every field of `STEP_FIELDS`, (n_real_steps, ...) arrays (NumPy or JAX, so
            that traced values stay traced) with the merged steps' values already written
            into the kept ones.
        fused: ``(start_of, pos, size)`` when merged steps keep their ADC samples as
            outputs of their fused step (`mritwin.simulate.fused_rf`): per old step, the
            old index of its fused step's first step and its position in it (-1 outside).

    Returns:
        The shorter `DiscreteSequence`, padded to its length bucket, with ``out_index``
        remapped: per-step samples to their step's new index, window samples to their
        window's, and samples inside fused steps to the engine's third output block
        (``n_pad + n_pad * n_window + new_step * size + pos``).
    """
    m = dseq.n_real_steps
    old_to_new = np.cumsum(keep) - 1
    m_new = int(keep.sum())
    n_pad_old = dseq.dt.shape[0]
    n_pad = _bucket(m_new)
    rows = np.nonzero(keep)[0]

    def pad(x, value=0):
        if not isinstance(x, np.ndarray):
            return _take_padded(x, rows, n_pad, value)
        widths = [(0, n_pad - m_new)] + [(0, 0)] * (x.ndim - 1)
        return np.pad(x[rows], widths, constant_values=value)

    # ADC samples: per-step ones point at a step, window ones at (step, sample) after them
    out = np.asarray(dseq.out_index).astype(np.int64)
    single = out < n_pad_old
    nw = max(dseq.n_window, 1)
    win_step, win_pos = np.divmod(out - n_pad_old, nw)
    out_new = np.where(single, old_to_new[np.minimum(out, m - 1)],
                       n_pad + old_to_new[np.clip(win_step, 0, m - 1)] * nw + win_pos)
    if fused is not None:
        start_of, pos, size = fused
        step = np.minimum(out, m - 1)
        inside = single & (pos[step] >= 0)
        out_new = np.where(inside, n_pad * (1 + dseq.n_window) + old_to_new[np.maximum(start_of[step], 0)] * size
                           + pos[step], out_new)
    total = float(np.asarray(dseq.t)[m - 1] + np.asarray(dseq.dt)[m - 1])
    extra = {f: None if getattr(dseq, f) is None else pad(np.asarray(getattr(dseq, f))[:m])
             for f in ("widx", "wcidx")}
    return DiscreteSequence(
        dt=pad(new["dt"]), t=pad(new["t"], total), kstep=pad(new["kstep"]), b1dt=pad(new["b1dt"]),
        kind=pad(new["kind"], 1), sample=pad(new["sample"], False), cyc0=pad(new["cyc0"]),
        bstep=pad(new["bstep"]), count=pad(new["count"]), spoil=pad(new["spoil"], False),
        out_index=out_new.astype(np.int32), demod=dseq.demod, adc_time=dseq.adc_time, n_window=dseq.n_window,
        n_real_steps=m_new, wk=dseq.wk, wt=dseq.wt, widx=extra["widx"], wcyc=dseq.wcyc, wcidx=extra["wcidx"],
        frame_end=dseq.frame_end,
        rf_sample=None if dseq.rf_sample is None else pad(np.asarray(dseq.rf_sample)[:m], -1),
    )


@functools.partial(jax.jit, static_argnames="n_pad")
def _take_padded(x, rows, n_pad: int, value):
    """``x[rows]`` padded with ``value`` to ``n_pad`` rows (a traced field of
    `shorten_steps`), in one jitted call."""
    x = x[rows]
    return jnp.pad(x, [(0, n_pad - x.shape[0])] + [(0, 0)] * (x.ndim - 1), constant_values=value)


class PreparedPulse(NamedTuple):
    """A pulse's per-spin affine map ``M -> A M + b``: ``a[i][j]`` (n,) and ``b[i]`` (n,)."""

    a: tuple
    b: tuple


def _step_map(rotation, spins: Spins, dt, k, b1dt, c0, relax=None):
    """One RF step (`kernels.rf_step`: relax dt/2, rotate, relax dt/2) as the affine map
    ``M -> (I + D) M + pd u``, returned as ``D`` (3 x 3 nested tuples of (n,)) and ``u``
    (3 (n,)): the *change* it makes, so that a raster step's tiny rotation and relaxation
    keep their relative precision. With ``d = 1 - exp(-R dt/2)`` (`kernels.half_relaxation`:
    in float32 ``exp(-R dt/2)`` itself is 1 to within a few ulps for a 1 us step) and
    ``R - I = b (w wᵀ - |w|² I) - a [w]x`` (``1 - cos θ = b |w|²``). ``relax``: the
    half-step fractions when computed already."""
    (wx, wy, wz), a, b, _ = rotation(spins, dt, k, b1dt, c0)
    d1, d2 = kernels.half_relaxation(spins, dt, relax)
    d = (d2, d2, d1)
    e = (1.0 - d2, 1.0 - d2, 1.0 - d1)
    bxy, bxz, byz = b * wx * wy, b * wx * wz, b * wy * wz
    r = ((-b * (wy * wy + wz * wz), bxy + a * wz, bxz - a * wy),
         (bxy - a * wz, -b * (wx * wx + wz * wz), byz + a * wx),
         (bxz + a * wy, byz - a * wx, -b * (wx * wx + wy * wy)))
    # E (I + R - I) E - I with E = I - diag(d), entry by entry (the diagonal without a 1)
    dm = tuple(tuple(e[i] * (r[i][j] * e[j] - d[j]) - d[i] if i == j else e[i] * r[i][j] * e[j]
                     for j in range(3)) for i in range(3))
    # offset per unit PD: E R (d1 z) + d1 z
    u = (e[0] * r[0][2] * d1, e[1] * r[1][2] * d1, (e[2] * (1.0 + r[2][2]) + 1.0) * d1)
    return dm, u


def prepare_pulse(spins: Spins, dt, k, b1dt, c0=None, unroll: int = 1, rotation: str = "auto") -> PreparedPulse:
    """One pulse's affine map per spin, ``M -> A M + b``: ``dt`` (L,) [s], ``k`` (L, 3)
    [1/m], ``b1dt`` (L,) [cycles], common phases ``c0`` (L,) [cycles] or None; ``unroll``
    steps per loop iteration; ``rotation`` as in `kernels.rf_step` (``"small"`` or
    ``"general"`` when the caller knows every step's field, else ``"auto"``: decided per
    step on the device).

    The map is the product of the raster steps' maps, accumulated column by column (the
    unit vectors, then the zero state with its recovery), each step *adding* its change
    ``D M + pd u`` (`_step_map`) with compensated (Kahan) summation. Stepping the columns
    directly, as `kernels.rf_step` steps a state, loses float32 precision that no single
    step shows: a 1 us step relaxes by ~5e-7 of ``M0`` (T1 = 1 s), a few ulps of 1, so the
    rounding of ``exp(-dt/2T1)`` was repeated 4 000 times per 2 ms pulse, the same way each
    time (in float32, a 2 ms sinc's recovery ``b`` came out 4 % off and ``A`` 1e-4; a
    constant 2 ms pulse's map now equals its matrix exponential to 3e-10 and 1e-7).
    """
    n = spins.x.shape[0]
    dtype = spins.x.dtype
    one, zero = jnp.ones((n,), dtype), jnp.zeros((n,), dtype)
    # columns e_x, e_y, e_z (the linear part) and the zero state (the offset): (4, n) per row
    m0 = (jnp.stack([one, zero, zero, zero]), jnp.stack([zero, one, zero, zero]), jnp.stack([zero, zero, one, zero]))
    offset = jnp.stack([zero, zero, zero, spins.pd])  # the offset column's PD

    def add_step(rotation, carry, d, kk, b, c):
        m, comp = carry
        dm, u = _step_map(rotation, spins, d, kk, b, c)
        new_m, new_comp = [], []
        for i in range(3):
            inc = dm[i][0] * m[0] + dm[i][1] * m[1] + dm[i][2] * m[2] + u[i] * offset
            y = inc - comp[i]
            t = m[i] + y
            new_comp.append((t - m[i]) - y)
            new_m.append(t)
        return tuple(new_m), tuple(new_comp)

    def body(carry, step):
        if rotation != "auto":
            rot = kernels._rf_rotation_small if rotation == "small" else kernels._rf_rotation
            return add_step(rot, carry, *step), None
        small = kernels.small_field(spins, *step)
        return jax.lax.cond(small, functools.partial(add_step, kernels._rf_rotation_small),
                            functools.partial(add_step, kernels._rf_rotation), carry, *step), None

    if CHECKPOINT_PREPARE:
        body = jax.checkpoint(body)
    zeros = (jnp.zeros((4, n), dtype),) * 3
    (m, _), _ = jax.lax.scan(body, (m0, zeros), (dt, k, b1dt, jnp.zeros_like(dt) if c0 is None else c0),
                             unroll=unroll)
    return PreparedPulse(tuple(tuple(r[j] for j in range(3)) for r in m), tuple(r[3] for r in m))


def prepare_pulse_grouped(spins: Spins, dt, k, b1dt, c0=None, prepare=None) -> PreparedPulse:
    """`prepare_pulse` (or ``prepare(spins, dt, k, b1dt, c0)``) on the spins' RF groups
    (``spins.rf_group`` (n,), the groups' (x, y, z, Δf, B1, R1, R2) in
    ``spins.rf_group_params`` (7, G)): stepped for one member of each group with unit PD,
    then each spin takes its group's map (the offset ``b`` is proportional to PD)."""
    gp = spins.rf_group_params
    ones = jnp.ones_like(gp[0])
    reps = Spins(x=gp[0], y=gp[1], z=gp[2], pd=ones, r1=gp[5], r2=gp[6], df=gp[3], b1=gp[4],
                 coil_re=None, coil_im=None)
    p = (prepare or prepare_pulse)(reps, dt, k, b1dt, c0)
    g = spins.rf_group
    return PreparedPulse(tuple(tuple(p.a[i][j][g] for j in range(3)) for i in range(3)),
                         tuple(p.b[i][g] * spins.pd for i in range(3)))


def apply_pulse(m: State, pulse: PreparedPulse, phase) -> State:
    """``Rz(α) (A Rz(-α) M + b)`` with ``phase = exp(iα)`` (the pulse's phase offset)."""
    c, s = jnp.real(phase), jnp.imag(phase)
    mx = m.mx * c + m.my * s
    my = m.my * c - m.mx * s
    mz = m.mz
    a, b = pulse.a, pulse.b
    nx = a[0][0] * mx + a[0][1] * my + a[0][2] * mz + b[0]
    ny = a[1][0] * mx + a[1][1] * my + a[1][2] * mz + b[1]
    nz = a[2][0] * mx + a[2][1] * my + a[2][2] * mz + b[2]
    return State(nx * c - ny * s, ny * c + nx * s, nz)
