"""Benchmark: a first `mritwin.simulate` call's small programs: NumPy data put on the device
with `mritwin._arrays.to_device` (``now``: cast on the host, `jax.device_put`) against
`jnp.asarray` (``before``), which compiles a small program per shape and dtype ("stage",
"convert_element_type"; JAX 0.10), in the same process, taking turns, each call after
`jax.clear_caches()` (so each pays its compiles, as a new sequence length does).

Cases: the n x n grid twin made and a `mritwin.sequences.gre` simulated (float32, XLA's
defaults). One JSON line per size: per variant the medians over ``--repeats`` of the
call's time and its XLA compiles (count and seconds, from `jax.monitoring`), and the
samples' largest difference between the variants.

Usage:  python benchmarks/bench_first_call.py [--sizes 32 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin._arrays import to_device  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

MODULES = [importlib.import_module(m) for m in ("mritwin.simulate.engine", "mritwin.simulate.prepared_rf",
                                                "mritwin.sequence.discretize", "mritwin.twin.twin")]
VARIANTS = {"before": jnp.asarray, "now": to_device}
COMPILES = {"n": 0, "s": 0.0}


def _on_event(event: str, duration: float, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES["n"] += 1
        COMPILES["s"] += duration


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    for n in args.sizes:
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, flip_angle_deg=15.0, slice_thickness=5e-3)
        res = {k: [] for k in VARIANTS}
        out = {}
        for _ in range(args.repeats):
            for k, fn in VARIANTS.items():
                for mod in MODULES:
                    mod.to_device = fn
                jax.clear_caches()
                COMPILES.update(n=0, s=0.0)
                t0 = time.perf_counter()
                # a new sequence object: planned anew (its plans are remembered per object)
                new = mt.Sequence(seq.blocks, seq.definitions)
                out[k] = np.asarray(jax.block_until_ready(mt.simulate(grid_twin(n, 0.2), new).samples))
                res[k].append((time.perf_counter() - t0, COMPILES["n"], COMPILES["s"]))
        for mod in MODULES:
            mod.to_device = to_device
        line = {"benchmark": "first_call", "matrix": n, "device": jax.devices()[0].device_kind, "precision": "float32",
                "repeats": args.repeats}
        for k, runs in res.items():
            line[f"{k}_s"] = round(statistics.median(r[0] for r in runs), 3)
            line[f"{k}_compiles"] = int(statistics.median(r[1] for r in runs))
            line[f"{k}_compile_s"] = round(statistics.median(r[2] for r in runs), 3)
        line["now_vs_before"] = round(line["now_s"] / line["before_s"], 3)
        line["max_abs_diff"] = float(np.max(np.abs(out["now"] - out["before"])))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
