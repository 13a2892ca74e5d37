"""Benchmark: the small-angle RF rotation (Taylor series) against the general rotation.

For scenarios of the suite, the compiled core planned twice from the same twin and
sequence: with the engine's own choice (`engine._rf_rotation_mode`: the series where every
RF step's field stays within `kernels.SMALL_FIELD`) and forced to the general rotation
(reciprocal square root and range-reduced sine/cosine), called alternately in one
process, ``--calls`` calls each. Prints one JSON object per scenario: the chosen modes
(single RF steps, fused RF steps, held RF steps; "auto" or "general" where there are none,
None for no held steps), medians, speed-up and the largest difference (float rounding).
Pulses are stepped here (``Bloch(prepare_pulses=False)``, as pulses played once are: the
engine otherwise prepares repeated ones, the GRE's hard pulses of 10 steps of 10 us among
them), since their rotation is what this measures; a block pulse's equal steps are one
held step (`mritwin.simulate.held_rf`), whose step map rotates once per play.

Usage:  python benchmarks/bench_rf_rotation.py [--scenario gre-64 gre-128 koma-brain-suscept] [--calls 21]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import SCENARIOS  # noqa: E402
from mritwin.benchmarking import alternate_runs  # noqa: E402
from mritwin.simulate import engine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", nargs="+", default=["gre-64", "gre-128", "koma-brain-suscept"],
                   choices=sorted(SCENARIOS))
    p.add_argument("--calls", type=int, default=21)
    a = p.parse_args(argv)
    own = engine._rf_rotation_mode
    for name in a.scenario:
        _one(name, a.calls, own)
    return 0


def _one(name: str, calls: int, own) -> None:
    case = SCENARIOS[name].build(False)
    m = dataclasses.replace(case.method, prepare_pulses=False).resolve_kernel(
        dtype=jnp.float32, traced=False, dynamics=False, n_devices=1, backend="cpu")
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, max_rf_dt=m.max_rf_dt, windows=m.windows,
                         motion=case.motion)
    runs = []
    for forced in (None, "general"):
        engine._rf_rotation_mode = own if forced is None else (lambda *args, f=forced, **kw: f)
        try:
            runs.append(engine._plan(case.twin, dseq, case.scanner, None, m, jnp.float32, False, case.motion, ()))
        finally:
            engine._rf_rotation_mode = own
    (chosen, general), diff = alternate_runs(runs, calls)
    held = runs[0].call.keywords["held"]
    print(json.dumps({
        "benchmark": "rf_rotation",
        "scenario": name,
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "n_spins": int(case.twin.n_spins),
        "modes": list(runs[0].call.keywords["rf_rotation"]) + [None if held is None else held.rotation],
        "calls": calls,
        "chosen_s": round(chosen, 6),
        "general_s": round(general, 6),
        "speedup": round(general / chosen, 3),
        "max_rel_diff": diff,
    }), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
