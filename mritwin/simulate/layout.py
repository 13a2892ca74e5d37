"""Periodic step layouts: the engine's scan over macro steps of static kinds.

Most sequences repeat a short pattern of steps: a spoiled GRE is (pulse, free, ADC window,
free) once per TR, an MRF train the same with a new flip angle each time. The generic scan
body dispatches on each step's kind (a ``lax.switch``) and on its flags (conditionals for
the sample, the ideal spoiling and the deferred window), which on XLA's CPU backend costs
about as much as the arithmetic of a step for a few thousand spins. When the steps repeat
with a period ``P``, the engine instead scans *macro steps* of ``P`` steps whose kinds
and flags are static: one conditional per step (on its ``active`` flag) instead of three.

`plan_step_layout` (host, NumPy) finds the period and places every step at a *slot*: the
steps that follow the pattern take consecutive slots; the steps before and after the
pattern's longest run (a preparation, a single-shot readout's excitation, a partial last
period) run outside the scan, one by one, with their own static flags; and where a step
inside does not follow the pattern the slots in between are *pads*, skipped by their
conditional (their inputs are copies of a real step's at the same position). A slot
position whose flag differs between the macro steps keeps that flag per step (a
conditional), as in the generic body.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Slot", "StepLayout", "StepMap", "plan_step_layout", "FIELDS"]

FIELDS = ("kind", "sample", "spoil", "geo", "pulse")  # the per-step values a slot can fix


class Slot(NamedTuple):
    """What the engine knows statically about one position of a macro step.

    Attributes:
        kind: the step kind (every step at this position has it).
        sample: whether the step ends with an ADC sample, or None (per step).
        spoil: whether the transverse magnetization is spoiled before the step, or None.
        geo: the exact-window table row of a window step (``n_geometries``: not tabled),
            or None (per step); -1 for steps that are not windows.
        pulse: the prepared pulse of a pulse step, or None (per step); -1 for other steps.
        masked: some macro steps have a pad here (skipped by the step's conditional).
        direct: a step of the head or tail (run outside the scan): a tabled window gives
            its samples at once instead of being deferred.
        same_dt: every step at this position has the same duration, up to the rounding
            of the time grid (16 ulp of the sequence's length: the durations are
            differences of times): their relaxation (``kernels.relaxation``) is computed once
            per chunk of spins instead of at every step (the engine does so for RF and
            free-precession steps, from the first macro step's duration).
    """

    kind: int
    sample: bool | None
    spoil: bool | None
    geo: int | None
    pulse: int | None
    masked: bool
    direct: bool = False
    same_dt: bool = False


class StepLayout(NamedTuple):
    """The static part of a layout (part of the compiled core's key).

    Attributes:
        period: steps per macro step ``P``.
        n_macro: macro steps scanned (a multiple of ``seg``).
        n_live: macro steps with real steps: those after them (which fill the last
            segment) are skipped.
        seg: macro steps per checkpointed segment (`engine._segmented_scan`).
        slots: (P,) `Slot` per position.
        head: a `Slot` for each of the first steps, run one by one before the scan (the
            preparation of the sequence, up to the first whole period).
        tail: a `Slot` for each of the last steps, run after the scan (a partial period).
    """

    period: int
    n_macro: int
    n_live: int
    seg: int
    slots: tuple[Slot, ...]
    head: tuple[Slot, ...] = ()
    tail: tuple[Slot, ...] = ()


class StepMap(NamedTuple):
    """The per-slot arrays of a layout (host NumPy; the engine passes them as inputs).

    Attributes:
        index: (n_macro * P,) int32: the real step whose inputs each slot takes (a pad
            copies a real step at the same position).
        active: (n_macro * P,) bool: False on pads.
        slot_of: (n_real - len(head) - len(tail),) int32: the slot of each step of the scan
            (steps ``len(head)`` to ``n_real - len(tail)``).
    """

    index: np.ndarray
    active: np.ndarray
    slot_of: np.ndarray


MAX_PAD_FRACTION = 0.25  # at most this many pads per real step: else the steps are not periodic
MAX_PEEL_PERIODS = 4  # a head or tail of up to this many periods runs outside the scan (no pads),
MAX_PEEL_STEPS = 16  # and at most this many steps (each is compiled on its own)


def plan_step_layout(fields: dict[str, np.ndarray], *, max_period: int = 16, checkpoint: bool = True,
                     seg_of=None, dt: np.ndarray | None = None) -> tuple[StepLayout, StepMap] | None:
    """Find the period of a sequence's steps and lay them out in macro steps.

    Args:
        fields: the per-step values of `FIELDS`, each (n_real,) integer (the real steps
            only, without the padding to a length bucket).
        max_period: the longest period tried.
        checkpoint: the scan is checkpointed by segments: pick ``seg`` near
            ``sqrt(n_slots) / P`` macro steps (else one segment).
        seg_of: ``n -> (steps per segment, segments)`` of the generic scan, whose segment
            length the layout approximates (default: ``sqrt(n)``).
        dt: (n_real,) the steps' durations [s], concrete (float64 for the tolerance of
            `Slot.same_dt`), or None (unknown: no slot has `Slot.same_dt`). They do not
            change the layout, only that flag.

    Returns:
        ``(StepLayout, StepMap)``, or None when no period up to ``max_period`` covers the
        steps with at most `MAX_PAD_FRACTION` pads per step (then the generic scan runs).
    """
    cols = np.stack([np.asarray(fields[f]).astype(np.int64) for f in FIELDS], axis=1)
    n = cols.shape[0]
    dt = None if dt is None else np.asarray(dt)[:n]
    # durations equal up to the rounding of the time grid they are differences of
    dt_tol = None if dt is None else 16 * np.finfo(dt.dtype).eps * float(np.sum(np.abs(dt)))
    if n < 2:
        return None
    _, key = np.unique(cols, axis=0, return_inverse=True)
    key = key.reshape(-1)
    kind = cols[:, 0]
    best = None
    for p in range(1, max_period + 1):
        if 4 * p > n:  # at least four periods (else the unrolled macro step is most of the sequence)
            break
        if np.mean(key[p:] == key[:-p]) < 0.5:
            continue
        run = _longest_run(key, p)
        if run is None:
            continue
        # steps before and after the pattern's longest run (a preparation, a single-shot
        # readout's excitation) may run outside the scan when they are short; or every
        # step goes on the pattern (per-step flags where they differ)
        a, e = run
        peel = min(MAX_PEEL_PERIODS * p, MAX_PEEL_STEPS)
        ends = (a if a <= peel else 0, n - e if n - e <= peel else 0)
        for h0, t0 in [ends] + ([(0, 0)] if ends != (0, 0) else []):
            slot_of = _align(key[h0:n - t0], kind[h0:n - t0], key[a:a + p], kind[a:a + p],
                             int(MAX_PAD_FRACTION * n))
            if slot_of is None:
                continue
            h1, t1, core = _peel(slot_of, p, peel - h0, peel - t0)
            head, tail = h0 + h1, t0 + t1
            if core.size < 4 * p:  # at least four macro steps in the scan
                continue
            n_slots = int(core[-1]) + 1
            n_dyn = _dynamic_fields(cols[head:n - tail], core, p)
            n_masked = _masked_positions(core, p)
            # in steps: the scan's slots, a conditional or a masked position ~ a quarter of
            # a step, the head and tail (unrolled: compile time) and the macro step's body
            cost = n_slots + 0.25 * (n_dyn + n_masked) * -(-n_slots // p) + 2 * (head + tail) + 2 * p
            if best is None or cost < best[0]:
                best = (cost, p, head, tail, core)
    if best is None:
        return None
    _, p, head, tail, slot_of = best
    base = head  # the scan's steps are steps head .. n - tail
    n_slots = int(slot_of[-1]) + 1
    live = -(-n_slots // p)
    seg = _segment_length(live, p, seg_of) if checkpoint else live
    m = -(-live // seg) * seg
    total = m * p
    active = np.zeros(total, bool)
    active[slot_of] = True
    index = np.full(total, -1, np.int64)
    index[slot_of] = base + np.arange(slot_of.size)
    pos = np.arange(total) % p
    rep = np.full(p, -1, np.int64)  # a real step at each position (the first one)
    for j in range(p):
        at = np.flatnonzero(active & (pos == j))
        rep[j] = index[at[0]]
    index[~active] = rep[pos[~active]]
    slots = []
    for j in range(p):
        real = index[active & (pos == j)]
        vals = [_static(cols[real, c]) for c in range(cols.shape[1])]
        same_dt = dt is not None and bool(np.all(np.abs(dt[real] - dt[real[0]]) <= dt_tol))
        slots.append(Slot(kind=int(vals[0]), sample=None if vals[1] is None else bool(vals[1]),
                          spoil=None if vals[2] is None else bool(vals[2]), geo=vals[3], pulse=vals[4],
                          masked=bool(not active[: live * p][pos[: live * p] == j].all()), same_dt=same_dt))
    def own(i):  # a step of the head or tail: its own values
        v = cols[i]
        return Slot(kind=int(v[0]), sample=bool(v[1]), spoil=bool(v[2]), geo=int(v[3]), pulse=int(v[4]),
                    masked=False, direct=True)

    layout = StepLayout(period=p, n_macro=m, n_live=live, seg=seg, slots=tuple(slots),
                        head=tuple(own(i) for i in range(head)), tail=tuple(own(i) for i in range(n - tail, n)))
    return layout, StepMap(index.astype(np.int32), active, slot_of.astype(np.int32))


def _peel(slot_of: np.ndarray, p: int, max_head: int, max_tail: int) -> tuple[int, int, np.ndarray]:
    """``(h, t, slots)``: the first ``h`` and last ``t`` steps, the macro steps with pads at
    either end (at most `MAX_PEEL_PERIODS` periods and ``max_head`` / ``max_tail`` steps),
    run outside the scan; the slots of the steps between them, counted from their first
    macro step."""
    macro = slot_of // p
    counts = np.bincount(macro)
    full = counts == p
    if full.all():
        return 0, 0, slot_of
    first = int(np.argmax(full)) if full.any() else len(full)
    last = len(full) - int(np.argmax(full[::-1])) if full.any() else 0
    h = int(np.sum(counts[:first]))
    h = h if first <= MAX_PEEL_PERIODS and h <= max_head else 0
    t = int(np.sum(counts[last:]))
    t = t if len(full) - last <= MAX_PEEL_PERIODS and t <= max_tail else 0
    core = slot_of[h:slot_of.size - t]
    if not core.size:
        return 0, 0, slot_of
    return h, t, core - (core[0] // p) * p


def _static(values: np.ndarray):
    """The value every step at a position has, or None."""
    return int(values[0]) if np.all(values == values[0]) else None


def _masked_positions(slot_of: np.ndarray, p: int) -> int:
    """Number of positions with a pad in some macro step (up to the last real step)."""
    live = np.zeros(-(-(int(slot_of[-1]) + 1) // p) * p, bool)
    live[slot_of] = True
    return int(np.sum(~live.reshape(-1, p).all(0)))


def _dynamic_fields(cols: np.ndarray, slot_of: np.ndarray, p: int) -> int:
    """Number of (position, field) pairs whose values differ between macro steps."""
    pos = slot_of % p
    n = 0
    for c in range(1, cols.shape[1]):
        for j in range(p):
            v = cols[pos == j, c]
            n += int(v.size > 0 and not np.all(v == v[0]))
    return n


def _longest_run(key: np.ndarray, p: int) -> tuple[int, int] | None:
    """``(a, e)``: the longest run of steps ``a .. e - 1`` in which every step after the
    first ``p`` repeats the step ``p`` before it (None when no step does)."""
    rep = np.r_[False, key[p:] == key[:-p], False]
    edges = np.flatnonzero(np.diff(rep.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    if not starts.size:
        return None
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i]) + p


def _align(key: np.ndarray, kind: np.ndarray, pat_key: np.ndarray, pat_kind: np.ndarray,
           max_pad: int) -> np.ndarray | None:
    """Slots of the steps on the pattern ``pat_key`` (its kinds ``pat_kind``) of ``p``
    steps: each step goes to the next slot whose pattern step has its key (or, failing
    that, its kind); None when a kind is not in the pattern or the pads pass ``max_pad``.

    Steps that repeat the step ``p`` before them, placed ``p - 1`` slots after it, follow
    without pads: those runs are placed at once, so the loop runs over the breaks only."""
    n, p = key.size, pat_key.size
    first = np.flatnonzero(pat_key == key[0])  # rotate: the first step needs no pad
    if first.size:
        pat_key, pat_kind = np.roll(pat_key, -first[0]), np.roll(pat_kind, -first[0])
    same = np.zeros(n, bool)
    same[p:] = key[p:] == key[:-p]
    breaks = np.r_[np.flatnonzero(~same), n]
    next_break = breaks[np.searchsorted(breaks, np.arange(n))]
    slot_of = np.empty(n, np.int64)
    s = pads = i = 0
    while i < n:
        if i >= p and same[i] and slot_of[i - 1] - slot_of[i - p] == p - 1:
            e = next_break[i]  # a periodic run: consecutive slots
            slot_of[i:e] = slot_of[i - 1] + 1 + np.arange(e - i)
            s, i = int(slot_of[e - 1]) + 1, e
            continue
        order = (s + np.arange(p)) % p
        hit = np.flatnonzero(pat_key[order] == key[i])
        if not hit.size:
            hit = np.flatnonzero(pat_kind[order] == kind[i])
            if not hit.size:
                return None
        t = int(hit[0])
        pads += t
        if pads > max_pad:
            return None
        slot_of[i] = s + t
        s += t + 1
        i += 1
    return slot_of


def _segment_length(m: int, p: int, seg_of) -> int:
    """Macro steps per segment: near the generic scan's segment length over ``p``; a
    divisor of ``m`` when one is within a factor of two (else the last segment is padded
    with macro steps that are skipped)."""
    steps = seg_of(m * p)[0] if seg_of is not None else max(1, int(round((m * p) ** 0.5)))
    target = max(1, int(round(steps / p)))
    low = max(1, -(-2 * target // 3))
    divisors = [d for d in range(low, min(m, 2 * target) + 1) if m % d == 0]
    if divisors:
        return min(divisors, key=lambda d: (abs(d - target), d))
    return min(target, m)
