"""Hardware checks of a `Sequence` against a `Scanner` (limits, rasters, dead times).

`check_sequence` returns a `CheckReport`: data (a tuple of `Violation` s, each naming
the first block where it happens and how many blocks share it) with a readable
``str``. Unique events are checked once and reported at the blocks that use them, so
sequences with 10⁵ blocks check in well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .events import ADC, RF, TrapGrad
from .scanner import Scanner
from .sequence import Sequence

__all__ = ["Violation", "CheckReport", "check_sequence"]


@dataclass(frozen=True)
class Violation:
    """One kind of limit violation.

    Attributes:
        block: index of the first block where it happens.
        what: what is checked, e.g. ``"gx amplitude"``, ``"rf dead time"``.
        value: the offending value (SI unit ``unit``; the worst over ``n_blocks``).
        limit: the limit it breaks (same unit).
        unit: ``"T/m"``, ``"T/m/s"``, ``"T"``, ``"s"``.
        n_blocks: number of blocks with this violation.
    """

    block: int
    what: str
    value: float
    limit: float
    unit: str
    n_blocks: int = 1

    def __str__(self) -> str:
        scale, u = _display(self.unit)
        more = f" (and {self.n_blocks - 1} more blocks)" if self.n_blocks > 1 else ""
        rel = "<" if "dead" in self.what or "ringdown" in self.what else ">"
        if "raster" in self.what:
            return (f"block {self.block}: {self.what}: {self.value * scale:.6g} {u} is not a multiple "
                    f"of {self.limit * scale:.6g} {u}{more}")
        return (f"block {self.block}: {self.what} {self.value * scale:.6g} {u} {rel} limit "
                f"{self.limit * scale:.6g} {u}{more}")


def _display(unit):
    return {"T/m": (1e3, "mT/m"), "T": (1e6, "uT"), "s": (1e6, "us"), "T/m/s": (1.0, "T/m/s")}.get(
        unit, (1.0, unit))


@dataclass(frozen=True)
class CheckReport:
    """The result of `check_sequence`: ``violations`` (tuple of `Violation`)."""

    violations: tuple = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __bool__(self) -> bool:
        return self.ok

    def __len__(self) -> int:
        return len(self.violations)

    def __iter__(self):
        return iter(self.violations)

    def __str__(self) -> str:
        if self.ok:
            return "sequence check passed: no violations"
        lines = [f"sequence check: {len(self.violations)} violation(s)"]
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)


def _off_raster(x: float, raster: float) -> bool:
    q = x / raster
    return abs(q - round(q)) > 1e-6


def _grad_checks(g, ch, sc):
    out = []  # (what, value, limit, unit)
    if isinstance(g, TrapGrad):
        amp = abs(float(np.asarray(g.amplitude)))
        if amp > sc.max_grad * (1 + 1e-9):
            out.append((f"g{ch} amplitude", amp, sc.max_grad, "T/m"))
        for name, t in (("rise", g.rise_time), ("fall", g.fall_time)):
            slew = amp / t if t > 0 else (math.inf if amp > 0 else 0.0)
            if slew > sc.max_slew * (1 + 1e-9):
                out.append((f"g{ch} slew ({name})", slew, sc.max_slew, "T/m/s"))
        for name, t in (("delay", g.delay), ("rise time", g.rise_time), ("flat time", g.flat_time),
                        ("fall time", g.fall_time)):
            if _off_raster(t, sc.grad_raster):
                out.append((f"g{ch} {name} raster", t, sc.grad_raster, "s"))
        return out
    t, w = g.waveform()
    w = np.asarray(w, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    amp = float(np.max(np.abs(w))) if w.size else 0.0
    if amp > sc.max_grad * (1 + 1e-9):
        out.append((f"g{ch} amplitude", amp, sc.max_grad, "T/m"))
    dt = np.diff(t)
    ok = dt > 0
    if np.any(ok):
        slew = float(np.max(np.abs(np.diff(w)[ok] / dt[ok])))
        if slew > sc.max_slew * (1 + 1e-9):
            out.append((f"g{ch} slew", slew, sc.max_slew, "T/m/s"))
    if g.time is None and _off_raster(g.raster, sc.grad_raster):
        out.append((f"g{ch} sample raster", g.raster, sc.grad_raster, "s"))
    if _off_raster(g.delay, sc.grad_raster):
        out.append((f"g{ch} delay raster", g.delay, sc.grad_raster, "s"))
    return out


def _rf_checks(rf: RF, sc):
    out = []
    peak = float(np.max(np.abs(np.asarray(rf.amplitude) * np.asarray(rf.shape))))
    if peak > sc.max_b1 * (1 + 1e-9):
        out.append(("rf amplitude", peak, sc.max_b1, "T"))
    if rf.time is None and _off_raster(rf.raster, sc.rf_raster):
        out.append(("rf sample raster", rf.raster, sc.rf_raster, "s"))
    if _off_raster(rf.delay, sc.rf_raster):
        out.append(("rf delay raster", rf.delay, sc.rf_raster, "s"))
    if rf.delay < sc.rf_dead_time - 1e-12:
        out.append(("rf dead time (delay)", rf.delay, sc.rf_dead_time, "s"))
    return out


def _adc_checks(adc: ADC, sc):
    out = []
    if _off_raster(adc.dwell, sc.adc_raster):
        out.append(("adc dwell raster", adc.dwell, sc.adc_raster, "s"))
    if adc.delay < sc.adc_dead_time - 1e-12:
        out.append(("adc dead time (delay)", adc.delay, sc.adc_dead_time, "s"))
    return out


def check_sequence(seq: Sequence, scanner: Scanner | None = None) -> CheckReport:
    """Check a sequence against a scanner's limits, rasters and dead times.

    Checked: per-axis gradient amplitude (``max_grad``) and slew rate (``max_slew``)
    of every gradient (logical axes, before any rotation); RF peak B1 (``max_b1``),
    RF sample and delay raster, RF dead time before the pulse and ringdown time after
    it within its block; ADC dwell raster and dead time before and after the ADC;
    gradient timing on the gradient raster; block durations on the block raster.

    Args:
        seq: the sequence.
        scanner: the system (default `Scanner()`).

    Returns:
        A `CheckReport`; ``report.ok`` is True when nothing is violated and
        ``str(report)`` lists each violation with its first block.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence.checks import check_sequence
        >>> seq = mt.Sequence([mt.Block(gx=mt.TrapGrad("x", 0.1, 1e-4, 1e-3, 1e-4))])
        >>> print(check_sequence(seq, mt.Scanner(max_grad=40e-3)).violations[0])
        block 0: gx amplitude 100 mT/m > limit 40 mT/m
    """
    sc = scanner if scanner is not None else Scanner()
    found: dict = {}  # what -> [first block, worst value, limit, unit, count]

    def add(block, what, value, limit, unit, count=1):
        cur = found.get(what)
        if cur is None:
            found[what] = [block, value, limit, unit, count]
        else:
            cur[0] = min(cur[0], block)
            cur[1] = max(cur[1], value) if "dead" not in what and "ringdown" not in what else min(cur[1], value)
            cur[4] += count

    checked: dict = {}
    for attr, fn in (("rf", _rf_checks), ("adc", _adc_checks)):
        for i, b in enumerate(seq.blocks):
            e = getattr(b, attr)
            if e is None:
                continue
            k = id(e)
            if k not in checked:
                checked[k] = (e, fn(e, sc))
            for what, val, lim, unit in checked[k][1]:
                add(i, what, val, lim, unit)
    for ch in ("x", "y", "z"):
        cache = {}
        for i, b in enumerate(seq.blocks):
            g = getattr(b, "g" + ch)
            if g is None:
                continue
            k = id(g)
            if k not in cache:
                cache[k] = (g, _grad_checks(g, ch, sc))
            for what, val, lim, unit in cache[k][1]:
                add(i, what, val, lim, unit)
    # per-block: ringdown/dead time after events, block raster
    for i, b in enumerate(seq.blocks):
        if b.rf is not None:
            after = b.duration - (b.rf.delay + b.rf.shape_duration)
            if after < sc.rf_ringdown_time - 1e-12:
                add(i, "rf ringdown time (after the pulse)", after, sc.rf_ringdown_time, "s")
        if b.adc is not None:
            after = b.duration - (b.adc.delay + b.adc.num_samples * b.adc.dwell)
            if after < sc.adc_dead_time - 1e-12:
                add(i, "adc dead time (after the ADC)", after, sc.adc_dead_time, "s")
    d = seq.block_durations()
    q = d / sc.block_raster
    off = np.flatnonzero(np.abs(q - np.round(q)) > 1e-6)
    if off.size:
        add(int(off[0]), "block duration raster", float(d[off[0]]), sc.block_raster, "s", int(off.size))
    vs = [Violation(v[0], what, float(v[1]), float(v[2]), v[3], int(v[4])) for what, v in found.items()]
    vs.sort(key=lambda v: (v.block, v.what))
    return CheckReport(tuple(vs))
