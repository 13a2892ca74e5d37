"""Benchmark: the cost of motion, flow, diffusion random walks and contrast dynamics
relative to a static simulation (issue 9).

Scenario: a 2D Cartesian spoiled GRE (n x n, TR 12 ms, TE 5 ms, 15 degrees) on an n x n
grid twin (one spin per pixel), float32. Variants, all in the same process:

- ``static``: the default engine (ADC readouts as window steps);
- ``static_stepped``: the default engine with windows off (``Bloch(windows=False)``), the
  fair baseline for dynamics, which always step the readouts;
- ``rigid_motion``: `mritwin.PeriodicTranslation` (folded into the per-step k-vectors);
- ``displacement_field``: a per-spin respiratory `DisplacementField`;
- ``flow``: `Flow` of half of the spins with inflow resets;
- ``random_walk``: `RandomWalk` (free steps cut to ``max_step``, here 100 us: more steps);
- ``contrast``: `ContrastAgent` with two compartments.

Times are medians of ``--repeats`` runs of ``mt.simulate`` after a first (compiling) run;
ratios are against ``static`` and ``static_stepped`` of the same run. Prints JSON.

Usage:  python benchmarks/bench_dynamics.py [--n 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre, grid_twin, time_call  # noqa: E402
from mritwin.twin import dynamics as dyn  # noqa: E402


def timed(f, repeats):
    first, med, _ = time_call(f, repeats)
    return first, med


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--walk-step", type=float, default=100e-6, help="RandomWalk max_step [s]")
    a = p.parse_args(argv)
    n, fov, tr = a.n, 0.2, 12e-3
    seq = cartesian_gre(n, fov, tr=tr, te=5e-3)
    twin = grid_twin(n, fov, t1=1.0, t2=0.08)
    ns = twin.n_spins
    twin = twin.replace(diffusion=np.full(ns, 1e-9), label=(np.arange(ns) % 2).astype(np.int32),
                        label_names=("tissue", "tumour"))
    pos = np.asarray(twin.position)
    flowing = pos[:, 0] < 0
    amp = np.where(flowing[:, None], [0.0, 5e-3, 0.0], 0.0)
    times = np.linspace(0.0, seq.duration, 101)
    variants = {
        "static": dict(),
        "static_stepped": dict(method=mt.Bloch(windows=False)),
        "rigid_motion": dict(motion=mt.PeriodicTranslation(amplitude=(0.0, 5e-3, 0.0), period=4.0)),
        "displacement_field": dict(dynamics=dyn.DisplacementField(amp, dyn.RespiratoryWaveform(rate=0.25))),
        "flow": dict(dynamics=dyn.Flow(velocity=np.where(flowing[:, None], [0.0, 0.2, 0.0], 0.0),
                                       box_min=(-np.inf, -fov / 2, -np.inf), box_max=(np.inf, fov / 2, np.inf))),
        "random_walk": dict(dynamics=dyn.RandomWalk(jax.random.key(0), max_step=a.walk_step)),
        "contrast": dict(dynamics=dyn.ContrastAgent.from_labels(
            twin, times, {"tumour": np.linspace(0.0, 1.0, times.size)}, r1=4.0, r2=5.0)),
    }
    steps = {
        "static": mt.discretize(seq).n_real_steps,
        "stepped": mt.discretize(seq, windows=False).n_real_steps,
        "random_walk": mt.discretize(seq, windows=False, max_dt=a.walk_step).n_real_steps,
    }
    rows = {}
    for name, kw in variants.items():
        first, run = timed(lambda kw=kw: mt.simulate(twin, seq, **kw).samples, a.repeats)
        n_steps = steps["static"] if name == "static" else steps["random_walk" if name == "random_walk" else "stepped"]
        rows[name] = {"first_call_s": round(first, 3), "run_s": round(run, 4), "n_steps": n_steps,
                      "spin_steps_per_s": float(f"{ns * n_steps / run:.3g}")}
    for r in rows.values():
        r["ratio_to_static"] = round(r["run_s"] / rows["static"]["run_s"], 2)
        r["ratio_to_static_stepped"] = round(r["run_s"] / rows["static_stepped"]["run_s"], 2)
    out = {
        "scenario": f"dynamics_gre{n}",
        "device": jax.devices()[0].device_kind,
        "precision": "float32",
        "n_spins": ns,
        "repeats": a.repeats,
        "variants": rows,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
