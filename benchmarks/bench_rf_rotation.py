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

``--prepared``: the repeated pulses prepared (the default method), and the rotation of
their preparation (`prepared_rf.prepare_pulse`, once per chunk) compared instead: the
engine's choice against a conditional at each raster step ("auto", the engine before
2026-12-07); stepped and fused RF steps keep the engine's choice in both.

Usage:  python benchmarks/bench_rf_rotation.py [--scenario gre-64 gre-128 koma-brain-suscept] [--calls 21] [--prepared]
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
    p.add_argument("--prepared", action="store_true", help="compare the rotation of prepared pulses' preparation")
    a = p.parse_args(argv)
    own = engine._rf_rotation_mode
    for name in a.scenario:
        _one(name, a.calls, own, a.prepared)
    return 0


def _one(name: str, calls: int, own, prepared: bool = False) -> None:
    case = SCENARIOS[name].build(False)
    m = (case.method if prepared else dataclasses.replace(case.method, prepare_pulses=False)).resolve_kernel(
        dtype=jnp.float32, traced=False, dynamics=False, n_devices=1, backend="cpu")
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, max_rf_dt=m.max_rf_dt, windows=m.windows,
                         motion=case.motion)
    runs = []
    for forced in (None, "auto" if prepared else "general"):
        if forced is None:
            engine._rf_rotation_mode = own
        elif prepared:  # (only the preparation's rotation, marked by mixed="auto")
            engine._rf_rotation_mode = lambda *args, **kw: "auto" if kw.get("mixed") == "auto" else own(*args, **kw)
        else:
            engine._rf_rotation_mode = lambda *args, f=forced, **kw: f
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
        ("per_step_s" if prepared else "general_s"): round(general, 6),
        "speedup": round(general / chosen, 3),
        "max_rel_diff": diff,
    }), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
