"""Benchmark: a gradient with respect to a rigid motion's parameters (a `mritwin.Translation`'s
velocity) against one with respect to a tissue parameter (T2) on the same sequence and twin.

Cases: a 2D Cartesian GRE with hard (non-selective) pulses, `mritwin.benchmarking.cartesian_gre`,
and `mt.sequences.gre` with a slice-selective sinc, both n x n on the n x n grid twin, float32,
XLA's default flags. Each gradient is ``jax.jit(jax.grad(loss))``, loss = sum |samples|^2:
``trace_lower_s`` and ``compile_s`` (`benchmarking.compile_and_time`), ``build_s`` their
sum, ``run_s`` the median of ``--repeats`` calls after the first. One JSON line per case.

Under a traced motion each step's common phase is traced; pulses played where no gradient
moment is (hard pulses) are still prepared (`DiscreteSequence.cyc0_fixed`), a slice pulse
under through-plane motion is stepped.

Usage:  python benchmarks/bench_motion_gradient.py [--n 32] [--repeats 5]
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
from mritwin.benchmarking import cartesian_gre, compile_and_time, grid_twin  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    n = args.n
    tw = grid_twin(n, 0.2)
    seqs = {"hard": cartesian_gre(n, 0.2),
            "slice": mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, tr=0.01, flip_angle_deg=15.0,
                                      slice_thickness=5e-3)}
    for name, seq in seqs.items():
        def velocity(v, seq=seq):
            return jnp.sum(jnp.abs(mt.simulate(tw, seq, motion=mt.Translation(velocity=v)).samples) ** 2)

        def t2(scale, seq=seq):
            return jnp.sum(jnp.abs(mt.simulate(tw.replace(t2=tw.t2 * scale), seq).samples) ** 2)

        out = {"case": f"{name}-{n}", "device": jax.devices()[0].device_kind, "precision": "float32",
               "n_spins": tw.n_spins}
        for label, fn, x in (("velocity", velocity, jnp.asarray([0.02, -0.05, 0.01], jnp.float32)),
                             ("t2", t2, jnp.float32(1.0))):
            times, g = compile_and_time(jax.grad(fn), x, args.repeats)
            out[label] = {**times, "build_s": round(times["trace_lower_s"] + times["compile_s"], 2),
                          "finite": bool(np.all(np.isfinite(np.asarray(g))))}
        out["velocity_over_t2"] = {k: round(out["velocity"][k] / out["t2"][k], 2) for k in ("build_s", "run_s")}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
