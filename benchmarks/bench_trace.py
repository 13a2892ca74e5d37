"""Benchmark: the time JAX takes to trace the engine's programs, with `kernels.sincos_cycles`'
primal jitted (``now``: traced once per shape and dtype) against traced anew at every use
(``before``: the jit unwrapped, as it was), in the same process, taking turns.

Programs: a 12 x 12 Cartesian GRE of a disc of spins with off-resonance (float64), its core
as `mritwin.simulate` plans it with deferred windows (``windows``), stepping every sample
(``stepped``) and a NUFFT readout (``nufft``), and the gradient of the samples' energy with
respect to T2 (``gradient``: `jax.grad` through `simulate`). Each trace starts with JAX's
caches cleared. One JSON line per program: the median trace time of each variant over
``--repeats`` and their ratio.

``--run SCENARIO ...``: instead, what the change does to the compiled programs' run time
(XLA inlines the call, but its fusion decisions may differ): each variant's core program
of the suite's scenario compiled (float32, one JAX device per core, XLA's default flags, as
`mritwin bench`), called in turn ``--calls`` times (`bench_call_path.py`'s helpers); one JSON
line per scenario with the medians, their ratio and the samples' largest difference.

Usage:  python benchmarks/bench_trace.py [--repeats 7]
        python benchmarks/bench_trace.py --run gre-64 koma-brain-suscept koma-epi [--calls 11]
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
from mritwin.benchmarking import cartesian_gre, grid_twin  # noqa: E402

engine = importlib.import_module("mritwin.simulate.engine")
kernels = importlib.import_module("mritwin.simulate.kernels")
NOW = kernels._sincos_reduced
VARIANTS = {"before": NOW.__wrapped__, "now": NOW}


def programs():
    seq = cartesian_gre(12, 0.2)
    tw = grid_twin(12, 0.2, mask=lambda x, y: x ** 2 + y ** 2 < 0.07 ** 2)
    tw = tw.replace(delta_f=jnp.asarray(np.random.default_rng(0).uniform(-20, 20, tw.n_spins)))
    out = {}
    for name, method in (("windows", mt.Bloch()), ("stepped", mt.Bloch(windows=False)),
                         ("nufft", mt.Bloch(readout=mt.NUFFTReadout(1e-9)))):
        run = engine._plan(tw, seq, mt.Scanner(), None, method, jnp.float64, False, None, ())
        out[name] = (lambda run=run: run.call.func.trace(*run.call.args, **run.call.keywords))

    def loss(t2):
        return jnp.sum(jnp.abs(mt.simulate(tw.replace(t2=t2), seq, dtype=jnp.float64).samples) ** 2)

    out["gradient"] = lambda: jax.jit(jax.grad(loss)).trace(tw.t2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--run", nargs="+", metavar="SCENARIO", help="time the compiled programs instead")
    ap.add_argument("--calls", type=int, default=11)
    args = ap.parse_args(argv)
    if args.run:
        return run_times(args.run, args.calls)
    jax.config.update("jax_enable_x64", True)
    for name, trace in programs().items():
        times = {k: [] for k in VARIANTS}
        for _ in range(args.repeats):
            for k, fn in VARIANTS.items():
                kernels._sincos_reduced = fn
                jax.clear_caches()
                t0 = time.perf_counter()
                trace()
                times[k].append(time.perf_counter() - t0)
        kernels._sincos_reduced = NOW
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"benchmark": "trace", "program": name, "device": jax.devices()[0].device_kind,
                          "repeats": args.repeats, "before_s": round(med["before"], 4),
                          "now_s": round(med["now"], 4), "now_vs_before": round(med["now"] / med["before"], 3)}))


def run_times(names, calls: int) -> None:
    from bench_call_path import _alternate, _compiled

    from mritwin.bench_scenarios import build_case

    mt.use_cpu_devices()
    for name in names:
        case = build_case(name)
        compiled = {}
        for k, fn in VARIANTS.items():
            kernels._sincos_reduced = fn
            compiled[k] = _compiled(case)
        kernels._sincos_reduced = NOW
        res = _alternate(compiled, calls)
        (t0, s0), (t1, s1) = res["before"], res["now"]
        print(json.dumps({"benchmark": "trace_run", "scenario": name, "n_spins": case.twin.n_spins,
                          "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
                          "precision": "float32", "calls": calls, "before_s": round(t0, 6), "now_s": round(t1, 6),
                          "ratio": round(t1 / t0, 3),
                          "max_rel_diff": float(np.max(np.abs(s1 - s0)) / np.max(np.abs(s0)))}), flush=True)


if __name__ == "__main__":
    main()
