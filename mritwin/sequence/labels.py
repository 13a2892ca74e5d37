"""Pulseq labels (counters and flags) at each ADC event.

Pulseq blocks may carry ``LABELSET`` / ``LABELINC`` events (`mritwin.Label`). The
scanner keeps one integer per label name (all start at 0); a block's labels are applied
in the order they appear, before that block's ADC is recorded, so an ADC sees the
values *after* its own block's labels. Flags (``NAV``, ``REV``, ``REF``, ...) are
counters that hold 0 or 1 by convention.
"""

from __future__ import annotations

import numpy as np

from .events import LABEL_NAMES
from .sequence import Sequence

__all__ = ["adc_labels", "labels_used", "sample_adc_index"]


def adc_labels(seq: Sequence) -> dict[str, np.ndarray]:
    """Label values seen by every ADC event, in sequence order.

    Args:
        seq: the sequence.

    Returns:
        ``{name: (n_adc_events,) int64 array}`` for every name in
        `mritwin.sequence.events.LABEL_NAMES` (``"LIN"``, ``"PAR"``, ``"SLC"``, ``"ECO"``,
        ``"AVG"``, ``"REP"``, ``"SEG"``, ``"SET"``, ``"PHS"``, ``"NAV"``, ``"REV"``,
        ``"REF"``, ...). Names never set stay 0; `labels_used` tells which names the
        sequence sets.

    Raises:
        TypeError: ``seq`` is not a `mritwin.Sequence`.

    Example:
        >>> import mritwin as mt
        >>> adc = mt.make_adc(4, dwell=1e-5)
        >>> seq = mt.Sequence([mt.Block(adc=adc, labels=[mt.make_label("LIN", 3)]),
        ...                    mt.Block(adc=adc, labels=[mt.make_label("LIN", 1, increment=True)])])
        >>> adc_labels(seq)["LIN"].tolist()
        [3, 4]
    """
    if not isinstance(seq, Sequence):
        raise TypeError(f"seq must be a mritwin.Sequence, got {type(seq).__name__}")
    state = dict.fromkeys(LABEL_NAMES, 0)
    rows: list[tuple[int, ...]] = []
    for block in seq.blocks:
        for lab in block.labels:
            if lab.increment:
                state[lab.name] += int(lab.value)
            else:
                state[lab.name] = int(lab.value)
        if block.adc is not None:
            rows.append(tuple(state[n] for n in LABEL_NAMES))
    table = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(LABEL_NAMES))
    return {name: table[:, i].copy() for i, name in enumerate(LABEL_NAMES)}


def labels_used(seq: Sequence) -> set[str]:
    """Names of the labels that some block of ``seq`` sets or increments."""
    return {lab.name for b in seq.blocks for lab in b.labels}


def sample_adc_index(seq: Sequence) -> np.ndarray:
    """(n_adc_samples,) index of the ADC event that each ADC sample belongs to."""
    counts = [b.adc.num_samples for b in seq.blocks if b.adc is not None]
    return np.repeat(np.arange(len(counts)), counts).astype(np.int64)
