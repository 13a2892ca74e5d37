"""Benchmark: one CPU device against two for long step loops (`Bloch(shard="auto")`'s rule).

MR-fingerprinting-like trains (`bench_scenarios.mrf_train`) of ``--trs`` TRs on built-in
brain slices of ``--matrices`` (sequence groups fold each to a few hundred to two thousand
spins), and the suite's short small cases, each discretized once and simulated with
``Bloch(shard=False)`` and ``Bloch(shard=True)`` alternately in one process (``--calls``
timed calls each after two warm-ups). Prints one JSON object per case: spins before and
after folding, the loop's steps (`engine._loop_steps`), both medians, the speed-up, and how
many devices ``shard="auto"`` chose. Needs several JAX CPU devices (``--cpu-devices``,
default one per core; benchmarks/RESULTS.md "CPU: long sequences on two devices").

Usage:  python benchmarks/bench_shard_rule.py [--trs 100 250 1000] [--matrices 24 32 48 96 176]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trs", type=int, nargs="+", default=[100, 250, 1000], help="TRs of the MRF trains")
    p.add_argument("--matrices", type=int, nargs="+", default=[24, 32, 48, 96, 176],
                   help="brain-slice matrix sizes (twins)")
    p.add_argument("--cases", nargs="*", default=["koma-column", "koma-sphere-cs", "gre-64"],
                   help="suite scenarios to time as well (short sequences)")
    p.add_argument("--calls", type=int, default=9)
    p.add_argument("--cpu-devices", type=int, default=None, help="JAX CPU devices (default: one per core)")
    a = p.parse_args(argv)
    n_dev = mt.use_cpu_devices(a.cpu_devices)
    if n_dev < 2:
        raise SystemExit(f"bench_shard_rule: needs at least 2 JAX CPU devices, got {n_dev}")
    import jax
    import numpy as np

    from mritwin.bench_scenarios import brain_slice, build_case, mrf_train
    from mritwin.simulate import engine

    def measure(label, twin, dseq, base):
        methods = {k: dataclasses.replace(base, shard=k) for k in (False, True, "auto")}

        def run(k):
            mt.simulate(twin, dseq, method=methods[k]).samples.block_until_ready()

        for k in methods:
            run(k)
            run(k)
        run("auto")
        auto_devices = engine.last_devices()
        times = {False: [], True: []}
        for _ in range(a.calls):
            for k in (False, True):
                t = time.perf_counter()
                run(k)
                times[k].append(time.perf_counter() - t)
        plan = engine._plan(twin, dseq, mt.Scanner(), None, base, np.float32, False, None, None)
        one, two = (statistics.median(times[k]) for k in (False, True))
        print(json.dumps({
            "benchmark": "shard_rule", "case": label, "device": jax.devices()[0].device_kind,
            "n_devices": n_dev, "n_spins": int(twin.n_spins), "folded_spins": int(plan.n_spins),
            "loop_steps": engine._loop_steps(dseq), "calls": a.calls, "one_device_s": round(one, 6),
            "two_devices_s": round(two, 6), "speedup": round(one / two, 3), "auto_devices": auto_devices,
        }), flush=True)

    for n_tr in a.trs:
        dseq = mt.discretize(mrf_train(n_tr)[0], mt.Scanner())
        for m in a.matrices:
            measure(f"mrf-{n_tr}", brain_slice(m, fov=0.22), dseq, mt.Bloch())
    for name in a.cases:
        case = build_case(name)
        m = case.method
        dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, windows=m.windows, motion=case.motion,
                             rf_per_step=engine.rf_per_step(m))
        measure(name, case.twin, dseq, m)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
