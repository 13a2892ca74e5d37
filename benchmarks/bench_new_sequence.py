"""Benchmark: building a sequence and `mritwin.simulate` of it, with the compiled core reused
(a parameter sweep that builds a sequence per call): the host planning with the
sequence's tables built once per call, the grouped pulse plan skipped where it equals the
plain one, and a builder's equal trapezoids one object (``now``) against each table built
by each user, both plans always made and a trapezoid object per use (``before``:
`timeline.tables_shared` a no-op, `engine._steps_rf` always true, the builders' `trap`
without its memo), in the same process, taking turns.

Cases: `mritwin.sequences.gre` at n x n on the n x n grid twin, float32, built anew at
each call (a new object: its plans are remembered per object, so each call plans anew;
the compiled program is the same). One JSON line per size: the medians over
``--repeats`` of the build's and the simulation's time per variant, the ratio of their
sums, and the samples' largest difference between the variants.

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
from bench_sequence_tables import _gre  # noqa: E402

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

engine = importlib.import_module("mritwin.simulate.engine")
common = importlib.import_module("mritwin.sequence.builders._common")
NOW = {(engine, "tables_shared"): engine.tables_shared, (engine, "_steps_rf"): engine._steps_rf,
       (common, "trap"): common.trap}
BEFORE = {(engine, "tables_shared"): contextlib.nullcontext, (engine, "_steps_rf"): lambda dseq: True,
          (common, "trap"): common.TrapGrad}


def _use(variant: dict) -> None:
    for (mod, name), fn in variant.items():
        setattr(mod, name, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    for n in args.sizes:
        tw = grid_twin(n, 0.2)
        out = {}
        for variant in (BEFORE, NOW):  # compile (once: the same program)
            _use(variant)
            jax.block_until_ready(mt.simulate(tw, _gre(n)).samples)
        times = {(k, part): [] for k in ("before", "now") for part in ("build", "simulate")}
        for _ in range(args.repeats):
            for k, variant in (("before", BEFORE), ("now", NOW)):
                _use(variant)
                t0 = time.perf_counter()
                seq = _gre(n)
                t1 = time.perf_counter()
                out[k] = np.asarray(jax.block_until_ready(mt.simulate(tw, seq).samples))
                times[k, "build"].append(t1 - t0)
                times[k, "simulate"].append(time.perf_counter() - t1)
        _use(NOW)
        med = {f"{k}_{part}_s": round(statistics.median(v), 4) for (k, part), v in times.items()}
        total = {k: med[f"{k}_build_s"] + med[f"{k}_simulate_s"] for k in ("before", "now")}
        print(json.dumps({"benchmark": "new_sequence", "matrix": n, "device": jax.devices()[0].device_kind,
                          "precision": "float32", "n_blocks": seq.n_blocks, "repeats": args.repeats, **med,
                          "now_vs_before": round(total["now"] / total["before"], 3),
                          "max_abs_diff": float(np.max(np.abs(out["now"] - out["before"])))}), flush=True)

if __name__ == "__main__":
    main()
