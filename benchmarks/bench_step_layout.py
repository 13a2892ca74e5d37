"""Benchmark: periodic step layouts (macro steps of static kinds) against the generic scan.

The 64x64 spoiled GRE sequence of the suite (256 steps, period 4) on grid twins of growing
size: for each size the compiled core with the layout and without it
(`engine.MAX_STEP_PERIOD = 0`), planned from the same twin and sequence and called
alternately, ``--calls`` calls each. Prints one JSON object per size: spins, medians,
speed-up, and the largest difference (float rounding).

Usage:  python benchmarks/bench_step_layout.py [--sizes 32 64 91 128] [--calls 21]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.benchmarking import alternate_runs, cartesian_gre, grid_twin  # noqa: E402
from mritwin.simulate import engine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 91, 128], help="grid sizes (n x n spins)")
    p.add_argument("--calls", type=int, default=21)
    a = p.parse_args(argv)
    seq = cartesian_gre(64, 0.2, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=10e-6)
    scanner = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    for n in a.sizes:
        twin = grid_twin(n, 0.2, t1=0.9, t2=0.07)
        runs = []
        for period in (16, 0):
            engine.MAX_STEP_PERIOD = period
            runs.append(engine._plan(twin, seq, scanner, None, mt.Bloch(), jnp.float32, False, None, ()))
        layout = runs[0].call.keywords.get("layout")
        (with_layout, generic), diff = alternate_runs(runs, a.calls)
        print(json.dumps({
            "benchmark": "step_layout",
            "device": jax.devices()[0].device_kind,
            "platform": jax.default_backend(),
            "n_spins": int(twin.n_spins),
            "chunk": int(runs[0].call.keywords["chunk"]),
            "period": None if layout is None else layout.period,
            "calls": a.calls,
            "layout_s": round(with_layout, 6),
            "generic_s": round(generic, 6),
            "speedup": round(generic / with_layout, 3),
            "max_rel_diff": diff,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
