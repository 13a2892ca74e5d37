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
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_eager_grad import _on_event, medians, timed  # noqa: E402

import mritwin as mt  # noqa: E402
from mritwin._arrays import to_device  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

MODULES = [importlib.import_module(m) for m in ("mritwin.simulate.engine", "mritwin.simulate.prepared_rf",
                                                "mritwin.sequence.discretize", "mritwin.twin.twin")]
VARIANTS = {"before": jnp.asarray, "now": to_device}


def _first_call(n, seq):
    return mt.simulate(grid_twin(n, 0.2), mt.Sequence(seq.blocks, seq.definitions)).samples


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
                # a new sequence object: planned anew (its plans are remembered per object)
                s, *cost = timed(_first_call, n, seq)
                out[k] = np.asarray(s)
                res[k].append(cost)
        for mod in MODULES:
            mod.to_device = to_device
        line = {"benchmark": "first_call", "matrix": n, "device": jax.devices()[0].device_kind, "precision": "float32",
                "repeats": args.repeats}
        line.update(medians(res))
        line["now_vs_before"] = round(line["now_s"] / line["before_s"], 3)
        line["max_abs_diff"] = float(np.max(np.abs(out["now"] - out["before"])))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
