"""Benchmark: `mritwin.simulate` of a new sequence object whose compiled core is reused (a
parameter sweep that builds a sequence per call): the host planning with the sequence's
tables built once per call and the grouped pulse plan skipped where it equals the plain
one (``now``) against each table built by each user and both plans always made
(``before``: `timeline.tables_shared` a no-op, `engine._steps_rf` always true), in the
same process, taking turns.

Cases: `mritwin.sequences.gre` at n x n on the n x n grid twin, float32; each call a new
`Sequence` object of the same blocks (its plans are remembered per object, so each call
plans anew; the compiled program is the same). One JSON line per size: the medians over
``--repeats`` of the call's time per variant, their ratio, and the samples' largest
difference between the variants.

Usage:  python benchmarks/bench_new_sequence.py [--sizes 64 128 256] [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

engine = importlib.import_module("mritwin.simulate.engine")
NOW = {"tables_shared": engine.tables_shared, "_steps_rf": engine._steps_rf}
BEFORE = {"tables_shared": contextlib.nullcontext, "_steps_rf": lambda dseq: True}


def _use(variant: dict) -> None:
    for name, fn in variant.items():
        setattr(engine, name, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    for n in args.sizes:
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, flip_angle_deg=15.0, slice_thickness=5e-3)
        tw = grid_twin(n, 0.2)
        out = {}
        for variant in (BEFORE, NOW):  # compile (once: the same program)
            _use(variant)
            jax.block_until_ready(mt.simulate(tw, mt.Sequence(seq.blocks, seq.definitions)).samples)
        times = {"before": [], "now": []}
        for _ in range(args.repeats):
            for k, variant in (("before", BEFORE), ("now", NOW)):
                _use(variant)
                new = mt.Sequence(seq.blocks, seq.definitions)
                t0 = time.perf_counter()
                out[k] = np.asarray(jax.block_until_ready(mt.simulate(tw, new).samples))
                times[k].append(time.perf_counter() - t0)
        _use(NOW)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"benchmark": "new_sequence", "matrix": n, "device": jax.devices()[0].device_kind,
                          "precision": "float32", "n_blocks": seq.n_blocks, "repeats": args.repeats,
                          "before_s": round(med["before"], 4), "now_s": round(med["now"], 4),
                          "now_vs_before": round(med["now"] / med["before"], 3),
                          "max_abs_diff": float(np.max(np.abs(out["now"] - out["before"])))}), flush=True)


if __name__ == "__main__":
    main()
