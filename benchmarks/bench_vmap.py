"""Benchmark: a sweep of flip angles through `mritwin.sequences.gre` and `mritwin.simulate`
three ways: a Python loop over concrete flips (a new sequence per flip, the compiled core
reused), `jax.vmap` over a traced flip (eager: planned anew at each call), and
`jax.jit(jax.vmap(...))` (planned once, at the trace).

Cases: the n x n GRE (flip sweep of ``--flips`` values from 5 to 60 degrees) on the n x n
grid twin, float32. One JSON line per size: per way, the first call's time (after
`jax.clear_caches()`, with its compiles) and the median of ``--repeats`` later calls, and
the largest difference of the batch from the loop's signals (relative to their peak).

Usage:  python benchmarks/bench_vmap.py [--sizes 32 64] [--flips 8] [--repeats 5]
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
from mritwin.benchmarking import grid_twin, time_call  # noqa: E402


def _sweep(n: int, n_flips: int, repeats: int) -> dict:
    twin = grid_twin(n, 0.2)

    def signal(flip):
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, flip_angle=flip, slice_thickness=5e-3)
        return mt.simulate(twin, seq).samples

    flips = jnp.radians(jnp.linspace(5.0, 60.0, n_flips))
    batched = jax.jit(jax.vmap(signal))
    ways = {
        "loop": lambda: jnp.stack([signal(float(a)) for a in flips]),
        "vmap": lambda: jax.vmap(signal)(flips),
        "jit_vmap": lambda: batched(flips),
    }
    line = {"benchmark": "vmap", "matrix": n, "device": jax.devices()[0].device_kind, "precision": "float32",
            "n_flips": n_flips, "repeats": repeats}
    ref = None
    for name, fn in ways.items():
        jax.clear_caches()  # (the first call compiles, whichever way ran before)
        first, later, out = time_call(fn, repeats)
        out = np.asarray(out)
        ref = out if ref is None else ref
        line[f"{name}_first_s"] = round(first, 3)
        line[f"{name}_s"] = round(later, 4)
        line[f"{name}_max_rel_diff"] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    line["jit_vmap_vs_loop"] = round(line["jit_vmap_s"] / line["loop_s"], 4)
    return line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--flips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    for n in args.sizes:
        print(json.dumps(_sweep(n, args.flips, args.repeats)), flush=True)

if __name__ == "__main__":
    main()
