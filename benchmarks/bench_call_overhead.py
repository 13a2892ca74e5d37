"""Benchmark: the host share of a `mritwin.simulate` call (planning) next to the compiled core.

For a scenario of the suite (default gre-64: 4 096 spins, where the host work is as large
as the simulation), the median over ``--calls`` calls of
- ``same_objects_s``: `simulate` with the same twin and sequence objects every call (the
  planned run is remembered: only the core is dispatched);
- ``new_values_s``: `simulate` with a new twin (new T1 values) every call, as the suite times
  it (the plans that depend on the twin's values are made anew);
- ``core_s``: the compiled core alone (`engine._plan(...).call()`);
and the host shares ``new_values_s - core_s`` and ``same_objects_s - core_s``. The three are
measured interleaved, call by call, so that the VM's drift hits them alike.

Usage:  python benchmarks/bench_call_overhead.py [--scenario gre-64] [--calls 60]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import SCENARIOS  # noqa: E402
from mritwin.simulate import engine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="gre-64", choices=sorted(SCENARIOS))
    p.add_argument("--calls", type=int, default=60)
    a = p.parse_args(argv)
    case = SCENARIOS[a.scenario].build(False)
    m = case.method
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, windows=m.windows, motion=case.motion)
    twin = case.twin
    twins = [twin.replace(t1=twin.t1 * (1.0 + 0.001 * (i + 1))) for i in range(a.calls)]
    run = engine._plan(twin, dseq, case.scanner, None, m, jnp.float32, False, case.motion, ())

    def timed(f):
        t = time.perf_counter()
        jax.block_until_ready(f())
        return time.perf_counter() - t

    def call(tw):
        return mt.simulate(tw, dseq, scanner=case.scanner, method=m, motion=case.motion).samples

    call(twin), call(twins[0]), run.call()  # compile
    same, new, core = [], [], []
    for tw in twins:
        same.append(timed(lambda: call(twin)))
        new.append(timed(lambda tw=tw: call(tw)))
        core.append(timed(run.call))
    med = {k: statistics.median(v) for k, v in (("same", same), ("new", new), ("core", core))}
    print(json.dumps({
        "benchmark": "call_overhead",
        "scenario": a.scenario,
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "n_spins": int(twin.n_spins),
        "n_steps": int(dseq.n_real_steps),
        "calls": a.calls,
        "same_objects_s": round(med["same"], 6),
        "new_values_s": round(med["new"], 6),
        "core_s": round(med["core"], 6),
        "host_new_values_s": round(med["new"] - med["core"], 6),
        "host_same_objects_s": round(med["same"] - med["core"], 6),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
