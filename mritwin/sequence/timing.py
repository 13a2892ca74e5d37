"""Sequence timing: minimum TE/TR/TI, and TE/TR/TI measured from the events.

Definitions used throughout mritwin (and in ``docs/sequences.md``):

- **TE** (echo time): time from the centre of the excitation pulse to the ADC sample
  at the k-space centre (the sample with the smallest ``|k|``) of the same excitation.
- **TR** (repetition time): time between the centres of consecutive excitation pulses
  (pulses with ``use="excitation"``; preparation pulses such as bSSFP's α/2 are not
  counted).
- **TI** (inversion time): time from the centre of an inversion pulse to the centre of
  the next excitation pulse (``at="first"``), or to the excitation whose readout
  crosses the k-space centre (``at="kspace_centre"``, MPRAGE's convention).

Everything here is measured from the events of a built `Sequence` (RF ``center`` and
``use``, ADC sample times, the exact k-space trajectory), never from the parameters a
builder was given, so the functions double as checks of the builders.
"""

from __future__ import annotations

import numpy as np

from .sequence import Sequence

__all__ = [
    "rf_centres",
    "excitation_centres",
    "kspace_centre_samples",
    "echo_times",
    "repetition_times",
    "inversion_times",
    "check_timing",
    "minimum_timing",
    "require_minimum",
]


def require_minimum(name: str, value, minimum: float, *, what: str = "these parameters",
                    raster: float = 10e-6) -> float:
    """Return ``value`` (or ``minimum`` when ``value`` is None), checked against ``minimum``.

    Args:
        name: the parameter's name in messages (``"te"``, ``"tr"``, ``"ti"``).
        value: the requested time [s] or None (use the minimum).
        minimum: the shortest possible time [s].
        what: what the minimum depends on (for the message).
        raster: requests within half this [s] below the minimum are accepted (rounding).

    Raises:
        ValueError: ``value`` is shorter than ``minimum``; the message states the minimum.
    """
    if value is None:
        return float(minimum)
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a time >= 0 [s], got {value}")
    if value < minimum - 0.5 * raster:
        raise ValueError(
            f"{name} = {value * 1e3:.3f} ms is impossible: the minimum {name} for {what} on this "
            f"scanner is {minimum * 1e3:.3f} ms"
        )
    return max(value, float(minimum))


def rf_centres(seq: Sequence, use: str | tuple[str, ...]) -> np.ndarray:
    """Absolute times [s] of the centres of the RF pulses with the given ``use``."""
    uses = (use,) if isinstance(use, str) else tuple(use)
    starts = seq.block_starts()
    out = [starts[i] + b.rf.delay + b.rf.center for i, b in enumerate(seq.blocks)
           if b.rf is not None and b.rf.use in uses]
    return np.asarray(out, dtype=np.float64)


def excitation_centres(seq: Sequence) -> np.ndarray:
    """Absolute times [s] of the centres of the excitation pulses (``use="excitation"``)."""
    return rf_centres(seq, "excitation")


def kspace_centre_samples(seq: Sequence, *, tol: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """ADC samples at the k-space centre, one per ADC event that passes through it.

    Args:
        seq: the sequence.
        tol: largest ``|k|`` [1/m] that counts as the centre (default 0.5 1/m, a small
            fraction of Δk = 1/FOV for any FOV below 1 m).

    Returns:
        ``(index, time)``: (n,) indices into the ADC samples and their absolute times [s].
    """
    k = seq.kspace()
    if k.shape[0] == 0:
        return np.zeros(0, int), np.zeros(0)
    times = seq.adc_times()
    r = np.linalg.norm(k, axis=1)
    idx = []
    first = 0
    for b in seq.blocks:
        if b.adc is None:
            continue
        n = b.adc.num_samples
        j = first + int(np.argmin(r[first:first + n]))
        if r[j] <= tol:
            idx.append(j)
        first += n
    idx = np.asarray(idx, dtype=int)
    return idx, times[idx]


def echo_times(seq: Sequence, *, tol: float = 0.5) -> np.ndarray:
    """Echo times [s] measured from the events.

    For every ADC event that samples the k-space centre (``|k| <= tol`` [1/m]), the time
    from the centre of the most recent excitation pulse to that sample.

    Returns:
        (n,) echo times [s] in acquisition order.
    """
    exc = excitation_centres(seq)
    _, t = kspace_centre_samples(seq, tol=tol)
    if exc.size == 0 or t.size == 0:
        return np.zeros(0)
    j = np.searchsorted(exc, t, side="right") - 1
    ok = j >= 0
    return t[ok] - exc[j[ok]]


def repetition_times(seq: Sequence) -> np.ndarray:
    """(n_excitations - 1,) times between consecutive excitation centres [s]."""
    return np.diff(excitation_centres(seq))


def inversion_times(seq: Sequence, *, at: str = "first", tol: float = 0.5) -> np.ndarray:
    """Inversion times [s] measured from the events.

    Args:
        seq: the sequence.
        at: ``"first"``: to the next excitation after each inversion;
            ``"kspace_centre"``: to the excitation whose readout samples the k-space
            centre, when that happens before the next inversion (MPRAGE convention).
        tol: |k| tolerance [1/m] for the k-space centre.

    Returns:
        (n,) inversion times [s].
    """
    inv = rf_centres(seq, "inversion")
    exc = excitation_centres(seq)
    if inv.size == 0 or exc.size == 0:
        return np.zeros(0)
    if at == "first":
        j = np.searchsorted(exc, inv, side="right")
        ok = j < exc.size
        return exc[j[ok]] - inv[ok]
    if at != "kspace_centre":
        raise ValueError(f"at must be 'first' or 'kspace_centre', got {at!r}")
    _, tc = kspace_centre_samples(seq, tol=tol)
    out = []
    nxt = np.r_[inv[1:], np.inf]
    for t_inv, t_next in zip(inv, nxt, strict=True):
        hits = tc[(tc > t_inv) & (tc < t_next)]
        if hits.size:
            j = np.searchsorted(exc, hits[0], side="right") - 1
            out.append(exc[j] - t_inv)
    return np.asarray(out)


def check_timing(seq: Sequence, *, te=None, tr=None, ti=None, ti_at: str = "first",
                 atol: float = 10e-6) -> dict:
    """Check that ``seq`` has the given TE/TR/TI, measured from its events.

    Args:
        seq: the sequence.
        te: expected echo time(s) [s]: a number (every echo) or a sequence of distinct
            echo times (multi-echo: the set of measured echo times).
        tr: expected repetition time [s]: the median interval between consecutive
            excitations (single-slice protocols; interleaved multi-slice protocols
            excite other slices in between).
        ti: expected inversion time [s] (see `inversion_times`; ``ti_at``).
        atol: tolerance [s] (default 10 µs, the block raster).

    Returns:
        dict of the measured values (``te``, ``tr``, ``ti`` as arrays).

    Raises:
        ValueError: a measured value differs; the message gives both.
    """
    out = {"te": echo_times(seq), "tr": repetition_times(seq)}
    if te is not None:
        want = np.atleast_1d(np.asarray(te, float))
        got = np.unique(np.round(out["te"] / atol)) * atol
        if out["te"].size == 0:
            raise ValueError("no ADC sample reaches the k-space centre: TE is undefined")
        if want.size == 1:
            bad = np.abs(out["te"] - want[0]) > atol
            if bad.any():
                raise ValueError(f"TE measured {out['te'][bad][0] * 1e3:.4f} ms, expected {want[0] * 1e3:.4f} ms")
        elif got.size != want.size or np.any(np.abs(np.sort(got) - np.sort(want)) > atol):
            raise ValueError(f"TEs measured {np.sort(got) * 1e3} ms, expected {np.sort(want) * 1e3} ms")
    if tr is not None and out["tr"].size:
        if abs(float(np.median(out["tr"])) - tr) > atol:
            raise ValueError(f"TR measured {np.median(out['tr']) * 1e3:.4f} ms, expected {tr * 1e3:.4f} ms")
    if ti is not None:
        out["ti"] = inversion_times(seq, at=ti_at)
        if out["ti"].size == 0 or np.any(np.abs(out["ti"] - ti) > atol):
            raise ValueError(f"TI measured {out['ti'] * 1e3} ms, expected {ti * 1e3:.4f} ms")
    return out


def minimum_timing(builder, /, **params) -> dict:
    """Minimum TE and TR of a builder for the given protocol parameters, measured.

    Builds the protocol with ``te=None`` and ``tr=None`` (as short as possible; only the
    ones the builder takes) and measures TE and TR from the events. TR is the shortest
    interval between excitations, so use it for single-slice protocols.

    Args:
        builder: a builder from `mritwin.sequences` (``gre``, ``spin_echo``, ...).
        **params: its other parameters (``scanner``, ``fov``, ``matrix``, ...).

    Returns:
        ``{"te": min TE [s] (or None without a k-space centre), "tr": min TR [s] (or None)}``.

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders, timing
        >>> t = timing.minimum_timing(builders.gre, scanner=mt.Scanner(), fov=0.2,
        ...                           matrix=32, flip_angle_deg=15, slice_thickness=5e-3)
        >>> 1e-3 < t["te"] < t["tr"] < 20e-3
        True
    """
    import inspect

    params = dict(params)
    accepted = inspect.signature(builder).parameters
    for name in ("te", "tr"):
        if name in accepted:
            params[name] = None
    seq = builder(**params)
    te = echo_times(seq)
    tr = repetition_times(seq)
    return {"te": float(te.min()) if te.size else None,
            "tr": float(tr.min()) if tr.size else None}
