"""Corpus helpers shared by the Pulseq IO tests (the .seq files live in ../shared)."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest

SEQ_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "seq"
MISSING = f"Pulseq corpus not found at {SEQ_DIR} (it lives in ../shared beside the checkout)"


def corpus_files() -> list[str]:
    """File names of the corpus, or a single placeholder that skips when it is absent."""
    if not SEQ_DIR.is_dir():
        return ["<corpus missing>"]
    return sorted(p.name for p in SEQ_DIR.glob("*.seq"))


def corpus_path(name: str) -> pathlib.Path:
    if not SEQ_DIR.is_dir():
        pytest.skip(MISSING)
    return SEQ_DIR / name


def manifest() -> dict:
    p = SEQ_DIR / "MANIFEST.tsv"
    if not p.is_file():
        return {}
    with open(p, newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}


def _close(x, y, rtol=1e-6):
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    scale = max(float(np.max(np.abs(x), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(x - y) <= rtol * scale + 1e-300))


def event_diff(a, b, *, rtol=1e-6) -> str | None:
    """None when events ``a`` and ``b`` are equal: values to ``rtol`` of their peak
    (the written precision), times to 1 ps; else a description of the difference."""
    if a is None or b is None:
        return None if a is b else f"{a!r} vs {b!r}"
    if type(a) is not type(b):
        return f"{type(a).__name__} vs {type(b).__name__}"
    for f in a.__dataclass_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if hasattr(x, "shape") and not isinstance(x, tuple):
            if not _close(x, y, rtol):
                return f"{type(a).__name__}.{f} differs"
        elif isinstance(x, float):
            if not abs(x - y) <= 1e-12 + 1e-9 * abs(x):
                return f"{type(a).__name__}.{f}: {x!r} vs {y!r}"
        elif isinstance(x, tuple) and x and isinstance(x[0], float):
            if len(x) != len(y) or not np.allclose(x, y, rtol=1e-9, atol=1e-9):
                return f"{type(a).__name__}.{f} differs"
        elif x != y:
            return f"{type(a).__name__}.{f}: {x!r} vs {y!r}"
    return None


def sequence_diff(s1, s2, *, rtol=1e-6) -> str | None:
    """None when two sequences have the same blocks and events (see `event_diff`)."""
    if s1.n_blocks != s2.n_blocks:
        return f"{s1.n_blocks} vs {s2.n_blocks} blocks"
    for i, (b1, b2) in enumerate(zip(s1.blocks, s2.blocks)):
        if abs(b1.duration - b2.duration) > 1e-12:
            return f"block {i}: duration {b1.duration} vs {b2.duration}"
        for k in ("rf", "gx", "gy", "gz", "adc"):
            d = event_diff(getattr(b1, k), getattr(b2, k), rtol=rtol)
            if d:
                return f"block {i} {k}: {d}"
        e1, e2 = (*b1.labels, *b1.extensions), (*b2.labels, *b2.extensions)
        if len(e1) != len(e2):
            return f"block {i}: {len(e1)} vs {len(e2)} extension events"
        for x, y in zip(e1, e2):
            d = event_diff(x, y, rtol=rtol)
            if d:
                return f"block {i} extension: {d}"
    return None
