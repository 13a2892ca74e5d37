"""Pulseq shape compression: run-length encoding of the derivative.

A Pulseq shape of ``num_samples`` samples is stored either as the samples themselves
(when the stored list has exactly ``num_samples`` values, format 1.4 and later) or
compressed: the first difference of the waveform, in which a run of ``r >= 2`` equal
values ``v`` is written as ``v v (r - 2)``. Decompression expands the runs and takes
the cumulative sum. Files older than 1.4 always store shapes compressed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decompress_shape", "compress_shape", "QUANTUM"]

#: Quantization step of the compressed derivative (Pulseq toolboxes use 1e-7).
QUANTUM = 1e-7


def decompress_shape(data: np.ndarray, num_samples: int, *, force: bool = False) -> np.ndarray:
    """Expand a stored Pulseq shape.

    Args:
        data: (n_stored,) stored values.
        num_samples: number of samples of the waveform.
        force: treat ``data`` as compressed even when ``n_stored == num_samples``
            (pre-1.4 files).

    Returns:
        (num_samples,) float64 waveform.

    Raises:
        ValueError: the stored values do not expand to ``num_samples`` samples (the
            message says what they expand to); the caller adds the file position.
    """
    data = np.asarray(data, dtype=np.float64)
    n = data.size
    if not force and n == num_samples:
        return data.copy()
    if n == 0:
        if num_samples == 0:
            return data.copy()
        raise ValueError(f"no stored values for a shape of {num_samples} samples")
    try:
        return _expand(data, num_samples)
    except ValueError as e:
        if force:
            raise
        raise ValueError(f"stores {n} values for num_samples={num_samples}, so it is read as "
                         f"compressed, but {e}") from None


def _expand(data, num_samples):
    n = data.size
    counts = np.ones(n, dtype=np.int64)
    markers = np.flatnonzero(data[1:] == data[:-1])
    pos = 0  # index of the next unconsumed stored value
    for m in markers.tolist():
        if m < pos:
            continue
        if m + 2 >= n:
            raise ValueError(
                f"run-length marker at stored value {m + 1} has no repeat count")
        r = data[m + 2]
        if r < 0 or r != np.floor(r) or r > 1e9:
            raise ValueError(
                f"invalid run-length repeat count {float(r)!r} at stored value {m + 3}")
        counts[m] = int(r) + 2
        counts[m + 1] = 0
        counts[m + 2] = 0
        pos = m + 3
    total = int(counts.sum())
    if total != num_samples:
        raise ValueError(
            f"compressed data expands to {total} samples, expected num_samples={num_samples}")
    return np.cumsum(np.repeat(data, counts))


def compress_shape(w: np.ndarray) -> np.ndarray:
    """Compress a waveform the way the Pulseq toolboxes do (derivative + run lengths).

    The derivative is quantized to `QUANTUM` with error feedback, so the decompressed
    waveform differs from ``w`` by at most about one quantum.

    Args:
        w: (n,) waveform.

    Returns:
        The stored values: the compressed form when it is shorter than ``w`` and
        ``n > 4``, otherwise ``w`` itself (uncompressed storage, format 1.4+).
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size <= 4:
        return w
    scaled = w / QUANTUM
    datq = np.round(np.concatenate((scaled[:1], np.diff(scaled))))
    qerr = scaled - np.cumsum(datq)
    qcor = np.concatenate(([0.0], np.diff(np.round(qerr))))
    datd = datq + qcor
    starts = np.concatenate(([0], np.flatnonzero(datd[1:] != datd[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [datd.size])))
    values = datd[starts] * QUANTUM
    long = lengths > 1
    reps = 1 + 2 * long
    v = np.repeat(values, reps)
    ends = np.cumsum(reps) - 1
    v[ends[long]] = lengths[long] - 2
    if v.size < w.size:
        return v
    return w
