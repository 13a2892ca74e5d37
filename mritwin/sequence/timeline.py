"""Flatten a `Sequence` into absolute-time, vectorized event tables.

The timing (all static) is gathered with NumPy, once per *unique* event and broadcast
over the blocks that use it, so sequences with 10⁵ blocks flatten in milliseconds.
Values (amplitudes, waveforms, phases) stay as they are — NumPy or JAX, possibly
traced — and are combined with the timing through sparse linear maps, so that
gradients flow from a simulated signal back into the events.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .events import ADC, RF, TrapGrad
from .sequence import Sequence

__all__ = ["GradientTable", "RFTable", "ADCTable", "gradient_table", "rf_table", "adc_table",
           "gradient_moments", "is_traced", "tables_shared"]

_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mritwin_tables", default=None)


@contextlib.contextmanager
def tables_shared():
    """Within the block, `gradient_table`, `rf_table` and `adc_table` build each table of
    a sequence object (and arguments) once and return the same one after: for one
    `mritwin.simulate`'s planning, where `discretize`, `Sequence.kspace` and the first
    moments each ask for the gradient table. Scoped rather than cached on the sequence:
    the tables are only needed while planning, and a traced table must not outlive its
    trace. Nested blocks share the outer one's tables."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _shared(build):
    """``build(seq, *numbers)``, once per sequence object and numbers inside `tables_shared`."""
    @functools.wraps(build)
    def table(seq, *args):
        memo = _SHARED.get()
        if memo is None or not all(isinstance(a, (int, float, np.number)) for a in args):
            return build(seq, *args)
        key = (build.__name__, id(seq)) + args
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = (seq, build(seq, *args))  # (the sequence kept: its id stays its own)
        return hit[1]
    return table


def is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _concat(parts, dtype):
    """One flat table of event values: JAX when any value is traced (differentiating with
    respect to the sequence), else NumPy in ``dtype`` (float64 / complex128), so that one
    concrete JAX-valued event (e.g. `make_arbitrary_rf`'s) does not turn the whole table
    into float32 and the exact-tracing paths (run merging, prepared pulses) stay on."""
    if not parts:
        return np.zeros(0, dtype=dtype)
    if any(isinstance(p, jax.core.Tracer) for p in parts):
        return jnp.concatenate([jnp.ravel(jnp.asarray(p)) for p in parts])
    return np.concatenate([np.ravel(np.asarray(p)) for p in parts]).astype(dtype)


def _group_by_event(seq: Sequence, attr: str):
    """{id(event): (event, [block indices])} in first-use order."""
    groups: dict[int, tuple] = {}
    for i, b in enumerate(seq.blocks):
        e = getattr(b, attr)
        if e is None:
            continue
        g = groups.get(id(e))
        if g is None:
            groups[id(e)] = (e, [i])
        else:
            g[1].append(i)
    return list(groups.values())


@dataclass(frozen=True)
class GradientTable:
    """All gradient segments of a sequence (piecewise-linear pieces), absolute time.

    Segment ``s`` runs from ``t0[s]`` to ``t1[s]`` linearly between ``values[i0[s]]``
    and ``values[i1[s]]`` [T/m] on *logical* channel ``channel[s]``; its contribution to
    the physical axes is ``direction[s] (3,)`` times that (the block's rotation column).
    """

    t0: np.ndarray
    t1: np.ndarray
    i0: np.ndarray
    i1: np.ndarray
    direction: np.ndarray  # (n_seg, 3)
    flat: np.ndarray  # (n_seg,) bool: constant over the segment (known structurally)
    values: object  # (n_values,) np or jax array [T/m]
    block: np.ndarray  # (n_seg,) block index


@_shared
def gradient_table(seq: Sequence) -> GradientTable:
    starts = seq.block_starts()
    rot = _rotation_columns(seq)
    t0s, t1s, i0s, i1s, dirs, flats, blocks, vals = [], [], [], [], [], [], [], []
    offset = 0
    for ch_i, attr in enumerate(("gx", "gy", "gz")):
        for ev, idx in _group_by_event(seq, attr):
            t, w = type(ev).waveform(ev)  # unbound: equinox wraps bound methods (slow)
            t = np.asarray(t, dtype=np.float64)
            nseg = t.size - 1
            if nseg < 1:
                continue
            if isinstance(ev, TrapGrad):
                flat = np.array([False, True, False])[:nseg]
            else:
                if is_traced(w):
                    flat = np.zeros(nseg, bool)
                else:
                    wn = np.asarray(w)
                    flat = wn[1:] == wn[:-1]
            idx = np.asarray(idx)
            T = starts[idx][:, None]
            t0s.append((T + t[None, :-1]).ravel())
            t1s.append((T + t[None, 1:]).ravel())
            k = np.arange(nseg)
            i0s.append(np.broadcast_to(offset + k, (idx.size, nseg)).ravel())
            i1s.append(np.broadcast_to(offset + k + 1, (idx.size, nseg)).ravel())
            if rot is None:
                d = np.zeros((idx.size * nseg, 3))
                d[:, ch_i] = 1.0
            else:
                d = np.repeat(rot[idx][:, :, ch_i], nseg, axis=0)
            dirs.append(d)
            flats.append(np.tile(flat, idx.size))
            blocks.append(np.repeat(idx, nseg))
            vals.append(w)
            offset += t.size
    if not t0s:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        return GradientTable(z, z, zi, zi, np.zeros((0, 3)), np.zeros(0, bool), np.zeros(0), zi)
    return GradientTable(
        t0=np.concatenate(t0s), t1=np.concatenate(t1s), i0=np.concatenate(i0s),
        i1=np.concatenate(i1s), direction=np.concatenate(dirs), flat=np.concatenate(flats),
        values=_concat(vals, np.float64), block=np.concatenate(blocks),
    )


def _rotation_columns(seq: Sequence):
    """(n_blocks, 3, 3) rotation matrices, or None when no block is rotated."""
    mats = None
    for i, b in enumerate(seq.blocks):
        r = b.rotation if b.extensions else None
        if r is not None:
            if mats is None:
                mats = np.broadcast_to(np.eye(3), (seq.n_blocks, 3, 3)).copy()
            mats[i] = r.matrix
    return mats


def gradient_moments(table: GradientTable, a: np.ndarray, b: np.ndarray, *, first_moment=False):
    """Exact integrals of the gradients over intervals ``[a[i], b[i]]``.

    The intervals must be sorted and non-overlapping (``a`` and ``b`` non-decreasing).

    Returns:
        (n_intervals, 3) ∫ G dt [T·s/m] (NumPy, or JAX when the values are), and with
        ``first_moment`` also (n_intervals, 3) ∫ G (t − mid_i) dt [T·s²/m] about each
        interval's midpoint.
    """
    rows, cols, c0, c1, c0m, c1m = _overlaps(table, a, b, first_moment)
    n = a.size
    v = table.values
    i0, i1, direction = table.i0[cols], table.i1[cols], table.direction[cols]
    if isinstance(v, jax.Array):
        out = _traced_moments(v, i0, i1, c0, c1, rows, direction, n)
        return out if not first_moment else (out, _traced_moments(v, i0, i1, c0m, c1m, rows, direction, n))
    out = _scatter_rows(rows, direction, c0 * v[i0] + c1 * v[i1], n)
    if not first_moment:
        return out
    return out, _scatter_rows(rows, direction, c0m * v[i0] + c1m * v[i1], n)


def _scatter_rows(rows, direction, contrib, n):
    out = np.zeros((n, 3))
    for ax in range(3):
        out[:, ax] = np.bincount(rows, weights=contrib * direction[:, ax], minlength=n)
    return out


@functools.partial(jax.jit, static_argnames="n")
def _traced_moments(v, i0, i1, c0, c1, rows, direction, n: int):
    """(n, 3) `gradient_moments` of traced segment values ``v``, in one jitted call (eager,
    each gather and scatter would be a program of its own, and so would its transpose
    under `jax.grad`)."""
    w = (c0 * v[i0] + c1 * v[i1])[:, None] * direction
    return jnp.zeros((n, 3), w.dtype).at[rows].add(w)


def _overlaps(table: GradientTable, a, b, first_moment):
    """Sparse (interval, segment) pairs and the coefficients of the two segment values."""
    if table.t0.size == 0 or a.size == 0:
        e = np.zeros(0)
        return np.zeros(0, np.int64), np.zeros(0, np.int64), e, e, e, e
    # intervals overlapping segment s: b > t0[s] and a < t1[s]
    lo = np.searchsorted(b, table.t0, side="right")
    hi = np.searchsorted(a, table.t1, side="left")
    counts = np.maximum(hi - lo, 0)
    cols = np.repeat(np.arange(table.t0.size), counts)
    rows = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    ta, tb = table.t0[cols], table.t1[cols]
    u0 = np.maximum(a[rows], ta)
    u1 = np.minimum(b[rows], tb)
    keep = (u1 > u0) & (tb > ta)
    rows, cols, ta, tb, u0, u1 = rows[keep], cols[keep], ta[keep], tb[keep], u0[keep], u1[keep]
    L = tb - ta
    l0 = (u0 - ta) / L
    l1 = (u1 - ta) / L
    w = u1 - u0
    c1 = w * (l0 + l1) / 2.0
    c0 = w - c1
    if not first_moment:
        return rows, cols, c0, c1, None, None
    # ∫ (t - m) g(t) dt over [u0, u1], g linear: exact via Simpson on a quadratic
    m = 0.5 * (a[rows] + b[rows])
    um = 0.5 * (u0 + u1)
    lm = (um - ta) / L
    # weights of g0 and g1 in (t - m) * g(t) sampled at u0, um, u1 (Simpson exact for quadratics)
    f0 = (u0 - m)
    fm = (um - m)
    f1 = (u1 - m)
    c0m = w / 6.0 * (f0 * (1 - l0) + 4 * fm * (1 - lm) + f1 * (1 - l1))
    c1m = w / 6.0 * (f0 * l0 + 4 * fm * lm + f1 * l1)
    return rows, cols, c0, c1, c0m, c1m


@dataclass(frozen=True)
class RFTable:
    """All RF samples of a sequence, absolute time.

    Sample ``k`` is held over ``[edge0[k], edge1[k]]``; its scanner-convention B1 is
    ``values[k] * exp(i 2π freq[k] tau[k])`` [T] where ``values`` carries amplitude,
    shape and phase offset (possibly traced) and ``tau`` is the sample's time from its
    pulse's shape start.
    """

    edge0: np.ndarray
    edge1: np.ndarray
    tau: np.ndarray
    freq: np.ndarray
    values: object  # complex (n_samples_total,)
    pulse: np.ndarray  # (n,) index into `pulses`
    value_index: np.ndarray  # (n,) index into values
    pulses: list  # [(block index, RF event)] in time order
    periods: np.ndarray  # (n_pulses, 2) absolute [start, end] of each shape
    # concrete (n_values,) shape samples when every pulse's shape is concrete (amplitude and
    # phase may be traced): within one pulse, equal shape samples are equal values, so
    # runs of them merge into one step in the traced path as in the concrete one
    shape_key: np.ndarray | None = None
    # when ``values`` are traced but factor as ``unit * a[source]``: concrete (n_values,)
    # complex ``unit`` (shape times phase, times the amplitude where it is concrete) and
    # (n_values,) int ``source``, the index of a traced scalar amplitude ``a`` (pulses
    # sharing one amplitude object share its index; -1: concrete, ``values == unit``).
    # Plays of a pulse with one traced amplitude can then be prepared (`prepared_rf`).
    unit: np.ndarray | None = None
    source: np.ndarray | None = None


def _jax_value(a) -> bool:
    return isinstance(a, jax.Array) or is_traced(a)


def _rf_values(ev, gamma_bar, b0):
    """(n,) B1 samples ``amplitude * shape * exp(i phase)`` of one pulse."""
    phase = ev.phase_offset + ev.phase_ppm * 1e-6 * gamma_bar * b0
    return ev.amplitude * ev.shape * (jnp.exp(1j * phase) if _jax_value(phase) else np.exp(1j * np.asarray(phase)))


def _value_runs(groups):
    """Order the RF event groups so that pulses whose traced values can be computed at
    once follow each other, and mark each such run.

    A run: the plays of one traced pulse train (`RF.play`) with the same shape object, or
    pulses sharing one traced amplitude object (a builder's pulse at each TR's phase)
    with the same concrete shape and concrete phases. Computed one by one, each pulse
    would add its own operations to the program: XLA compiles each into a kernel.

    Returns ``(groups, runs)``: ``runs`` maps ``id(event)`` of each run's first pulse to
    the run (its ``[(event, block indices)]``, whose values are then one row per pulse in
    this order) and of every other pulse of a run to None."""
    plain, runs = [], {}
    for ev, idx in groups:
        tr = ev.train
        if is_traced(ev.shape):
            key = None
        elif tr is not None and any(_jax_value(a) for a in tr):
            key = ("train", id(tr[0]), id(tr[1]), id(ev.shape))
        elif _jax_value(ev.amplitude) and not _jax_value(ev.phase_offset):
            key = ("shared", id(ev.amplitude), id(ev.shape))
        else:
            key = None
        if key is None:
            plain.append((ev, idx))
        else:
            runs.setdefault(key, []).append((ev, idx))
    marks = {}
    for run in runs.values():
        if len(run) == 1:
            plain.extend(run)
            continue
        marks[id(run[0][0])] = run
        for ev, _ in run[1:]:
            marks[id(ev)] = None
        plain.extend(run)
    return plain, marks


def _unit_values(events, gamma_bar, b0, sources: dict):
    """The concrete factor and amplitude index (`RFTable.unit`, `RFTable.source`) of the
    values of ``events`` (one pulse, or a run of `_value_runs` in order), or None when a
    shape or phase is traced or an amplitude is a traced vector. ``sources`` numbers the
    traced amplitude objects (by identity; filled in)."""
    units, srcs = [], []
    for ev in events:
        phase = ev.phase_offset + ev.phase_ppm * 1e-6 * gamma_bar * b0
        amp = ev.amplitude
        if is_traced(ev.shape, phase) or (is_traced(amp) and jnp.ndim(amp) != 0):
            return None
        unit = np.asarray(ev.shape) * np.exp(1j * np.asarray(phase))
        if is_traced(amp):
            src = sources.setdefault(id(amp), len(sources))
        else:
            unit, src = unit * np.asarray(amp), -1
        units.append(unit.ravel())
        srcs.append(np.full(unit.size, src, np.int64))
    return np.concatenate(units), np.concatenate(srcs)


def _run_values(run, gamma_bar, b0):
    """(len(run) * n,) B1 samples of a run of `_value_runs`, one pulse after the other."""
    ev = run[0][0]
    if ev.train is not None:
        k = np.asarray([e.play_index for e, _ in run])
        amp, phase = (a[k] if jnp.ndim(a) == 1 else a for a in ev.train)
    else:
        amp, phase = ev.amplitude, np.asarray([np.asarray(e.phase_offset) for e, _ in run])
    ppm = np.asarray([e.phase_ppm for e, _ in run]) * 1e-6 * gamma_bar * b0
    phase = jnp.reshape(phase, (-1, 1)) + ppm[:, None] if _jax_value(phase) else np.reshape(phase, (-1, 1)) + ppm[:, None]
    rot = jnp.exp(1j * phase) if _jax_value(phase) else np.exp(1j * phase)
    return jnp.ravel(jnp.reshape(amp, (-1, 1)) * ev.shape * rot)


@_shared
def rf_table(seq: Sequence, b0: float, gamma_bar: float) -> RFTable:
    starts = seq.block_starts()
    e0s, e1s, taus, freqs, vals, pidx, vidx, pulses, periods = [], [], [], [], [], [], [], [], []
    keys = []
    parts = []  # the events of each entry of ``vals``
    offset = 0
    groups, runs = _value_runs(_group_by_event(seq, "rf"))
    pulse_of_block = {}
    for ev, idx in groups:
        edges = RF.sample_edges(ev)  # unbound calls: equinox wraps bound methods (slow)
        tau = RF.sample_times(ev)
        n = tau.size
        f = ev.freq_offset + ev.freq_ppm * 1e-6 * gamma_bar * b0
        if id(ev) not in runs:
            vals.append(_rf_values(ev, gamma_bar, b0))
            parts.append([ev])
        elif runs[id(ev)] is not None:  # a run's first pulse: the values of the whole run
            vals.append(_run_values(runs[id(ev)], gamma_bar, b0))
            parts.append([e for e, _ in runs[id(ev)]])
        keys.append(None if is_traced(ev.shape) else np.asarray(ev.shape))
        idx = np.asarray(idx)
        T = starts[idx][:, None] + ev.delay
        e0s.append((T + edges[None, :-1]).ravel())
        e1s.append((T + edges[None, 1:]).ravel())
        taus.append(np.tile(tau, idx.size))
        freqs.append(np.full(idx.size * n, f))
        vidx.append(np.tile(offset + np.arange(n), idx.size))
        for j in idx:
            pulse_of_block[int(j)] = ev
        pidx.append(np.repeat(idx, n))  # block index for now
        offset += n
    if not e0s:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        return RFTable(z, z, z, z, np.zeros(0, complex), zi, zi, [], np.zeros((0, 2)))
    order_blocks = sorted(pulse_of_block)
    for b in order_blocks:
        ev = pulse_of_block[b]
        pulses.append((b, ev))
        s = starts[b] + ev.delay
        periods.append((s, s + ev.shape_duration))
    block_idx = np.concatenate(pidx)
    e0 = np.concatenate(e0s)
    order = np.argsort(e0, kind="stable")
    values = _concat(vals, np.complex128)
    sources: dict = {}
    units = [_unit_values(p, gamma_bar, b0, sources) for p in parts] if is_traced(values) else [None]
    factored = all(u is not None for u in units)
    return RFTable(
        edge0=e0[order], edge1=np.concatenate(e1s)[order], tau=np.concatenate(taus)[order],
        freq=np.concatenate(freqs)[order], values=values,
        pulse=np.searchsorted(np.asarray(order_blocks), block_idx[order]),
        value_index=np.concatenate(vidx)[order], pulses=pulses, periods=np.asarray(periods),
        shape_key=None if any(k is None for k in keys) else np.concatenate(keys),
        unit=np.concatenate([u[0] for u in units]) if factored else None,
        source=np.concatenate([u[1] for u in units]) if factored else None,
    )


@dataclass(frozen=True)
class ADCTable:
    """All ADC samples, in time order, with the receiver's demodulation."""

    time: np.ndarray  # (n_adc,) absolute sample times [s]
    event: np.ndarray  # (n_adc,) index of the ADC event (0..n_adc_events-1)
    first: np.ndarray  # (n_events,) index of each event's first sample
    count: np.ndarray  # (n_events,) samples per event
    dwell: np.ndarray  # (n_events,)
    block: np.ndarray  # (n_events,) block index of each event
    demod: object  # (n_adc,) complex factor applied to the simulated signal


@_shared
def adc_table(seq: Sequence, b0: float, gamma_bar: float) -> ADCTable:
    starts = seq.block_starts()
    groups = _group_by_event(seq, "adc")
    if not groups:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        return ADCTable(z, zi, zi, zi, z, zi, np.zeros(0, complex))
    # one template per unique ADC event (timing and demodulation), broadcast to its blocks
    templ_t, templ_d, nums, dwl, blk, gid = [], [], [], [], [], []
    any_traced = False
    for g, (a, idx) in enumerate(groups):
        st = ADC.sample_times(a)
        f = a.freq_offset + a.freq_ppm * 1e-6 * gamma_bar * b0
        ph = 2 * np.pi * f * (st - a.delay)
        phase = a.phase_offset + a.phase_ppm * 1e-6 * gamma_bar * b0
        if a.phase_modulation is not None:
            phase = phase + a.phase_modulation
        if isinstance(phase, jax.Array):
            any_traced = True
            templ_d.append(jnp.exp(1j * (phase + ph)) * jnp.ones(st.size))
        else:
            templ_d.append(np.exp(1j * (np.asarray(phase) + ph)) * np.ones(st.size))
        templ_t.append(st)
        nums.append(a.num_samples)
        dwl.append(a.dwell)
        blk.append(np.asarray(idx))
        gid.append(np.full(len(idx), g))
    nums, dwl = np.asarray(nums), np.asarray(dwl)
    blocks = np.concatenate(blk)
    gids = np.concatenate(gid)
    order = np.argsort(blocks, kind="stable")
    blocks, gids = blocks[order], gids[order]
    counts = nums[gids]
    firsts = np.cumsum(counts) - counts
    total = int(counts.sum())
    time = np.empty(total)
    rank = np.empty(blocks.size, np.int64)
    rank[order] = np.arange(blocks.size)  # position (in block order) of each group entry
    pos_of = []
    offset = 0
    for g in range(len(groups)):
        k = blk[g].size
        ev_rank = rank[offset:offset + k]
        offset += k
        pos = firsts[ev_rank][:, None] + np.arange(nums[g])[None, :]
        time[pos] = starts[blk[g]][:, None] + templ_t[g][None, :]
        pos_of.append(pos.ravel())
    if any_traced:
        parts = [jnp.broadcast_to(jnp.asarray(templ_d[g]), (blk[g].size, nums[g])).ravel()
                 for g in range(len(groups))]
        demod = jnp.zeros(total, jnp.result_type(*parts)).at[np.concatenate(pos_of)].set(jnp.concatenate(parts))
    else:
        demod = np.empty(total, complex)
        for g in range(len(groups)):
            demod[pos_of[g]] = np.broadcast_to(templ_d[g], (blk[g].size, nums[g])).ravel()
    event = np.repeat(np.arange(blocks.size), counts)
    return ADCTable(time=time, event=event, first=firsts, count=counts, dwell=dwl[gids],
                    block=blocks, demod=demod)
