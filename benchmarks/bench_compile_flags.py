"""Benchmark: XLA's CPU compile time against run time under the flags a user may set for
many small compiles (the test suite's, `tests/conftest.py`), and with JAX's persistent
compilation cache, each configuration in its own process (XLA reads ``XLA_FLAGS`` once),
the configurations taking turns.

Configurations: XLA's defaults; ``--xla_cpu_use_fusion_emitters=false`` (the older loop
emitters); that with ``--xla_backend_optimization_level=0`` (no LLVM optimization); and
XLA's defaults with ``JAX_COMPILATION_CACHE_DIR`` set to a new folder (``cache_cold``: the
process that fills it) and again to that folder (``cache_warm``: a rerun, which loads the
programs instead of compiling them).
Cases (float64, 2 CPU cores, one JAX device): the flip-angle gradient of an n x n
`mritwin.sequences.gre` (sinc pulse, 5 mm slice) on an n x n grid twin,
`jax.jit(jax.grad(loss))` (``grad-16``, ``grad-64``), and the forward simulation of the
128 x 128 one (``fwd-128``, `jax.jit` of the samples). Per run: trace and lowering,
compile, and the median of 5 calls. One JSON line per case: per configuration the
medians over ``--repeats`` runs and the ratios to the defaults.

Usage:  python benchmarks/bench_compile_flags.py [--repeats 3] [--cases grad-16 grad-64 fwd-128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {  # name: (XLA_FLAGS, persistent cache: None, "cold" (a new folder) or "warm" (the cold one's))
    "defaults": ("", None),
    "no_fusion_emitters": ("--xla_cpu_use_fusion_emitters=false", None),
    "no_fusion_emitters_O0": ("--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0", None),
    "cache_cold": ("", "cold"),
    "cache_warm": ("", "warm"),
}


def child(case: str) -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    import mritwin as mt
    from mritwin.benchmarking import grid_twin

    kind, n = case.split("-")
    n = int(n)
    tw = grid_twin(n, 0.2)

    def samples(fa):
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, flip_angle_deg=fa, slice_thickness=5e-3)
        return mt.simulate(tw, seq, dtype=jnp.float64).samples

    fn = jax.jit(jax.grad(lambda fa: jnp.sum(jnp.abs(samples(fa)) ** 2)) if kind == "grad" else samples)
    t0 = time.perf_counter()
    lowered = fn.trace(30.0).lower()
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(compiled(30.0))
        runs.append(time.perf_counter() - t)
    print(json.dumps({"trace_s": t1 - t0, "compile_s": t2 - t1, "run_s": statistics.median(runs)}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=["grad-16", "grad-64", "fwd-128"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child)
    for case in args.cases:
        res = {k: [] for k in CONFIGS}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                for k, (flags, cached) in CONFIGS.items():
                    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
                    env.pop("JAX_COMPILATION_CACHE_DIR", None)
                    if cached:
                        env["JAX_COMPILATION_CACHE_DIR"] = cache
                    out = subprocess.run([sys.executable, __file__, "--child", case], env=env, check=True,
                                         capture_output=True, text=True).stdout
                    res[k].append(json.loads(out.strip().splitlines()[-1]))
        line = {"benchmark": "compile_flags", "case": case, "device": "cpu", "precision": "float64",
                "repeats": args.repeats}
        med = {k: {f: statistics.median(r[f] for r in runs) for f in ("trace_s", "compile_s", "run_s")}
               for k, runs in res.items()}
        for k, m in med.items():
            line[k] = {f: round(v, 4) for f, v in m.items()}
            if k != "defaults":
                line[k]["compile_vs_defaults"] = round(m["compile_s"] / med["defaults"]["compile_s"], 3)
                line[k]["run_vs_defaults"] = round(m["run_s"] / med["defaults"]["run_s"], 3)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
