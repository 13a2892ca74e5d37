"""Benchmark: `mritwin.optimize.optimize` with its step run eagerly (``jit=False``, the
default) against compiled (``jit=True``), in the same process, taking turns.

The workload is notebook 05's twin calibration: T1, T2, PD and B1 of every voxel of a
24 x 24 brain slice (the voxels of four tissues) fitted by Adam to the noisy samples of
a sequence of free-induction, saturation-recovery and two-flip-angle acquisitions (40
samples per voxel, one receive coil per voxel), float64. Each fit starts with JAX's caches
cleared, so both include their compiles, as a user's first fit does.

One JSON line per mode: medians over ``--repeats`` fits of the whole fit, its first step
(trace, compile and one evaluation) and a later step, and the final loss (equal in both
modes to rounding).

Usage:  python benchmarks/bench_optimize_jit.py [--steps 60] [--repeats 3]
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
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_held_gradient import SC, _tissues, calibration_sequence  # noqa: E402  (notebook 05's twin and sequence)

import mritwin as mt  # noqa: E402
import mritwin.optimize as mo  # noqa: E402


def calibration_problem():
    """Notebook 05's twin, sequence and noisy samples: ``(loss, p0)``."""
    twin = _tissues(24)
    pos = np.asarray(twin.position)
    truth = twin.replace(b1=1.10 - 0.25 * ((pos[:, 0] / 0.065) ** 2 + (pos[:, 1] / 0.08) ** 2))
    n = truth.n_spins
    seq = calibration_sequence()
    sim = dict(coils=np.eye(n, dtype=complex), method=mt.Bloch(ideal_spoiling=True), scanner=SC, dtype=jnp.float64)
    clean = np.asarray(mt.simulate(truth, seq, **sim).samples)
    rng = np.random.default_rng(0)
    noisy = clean + np.abs(clean).max() / 50 * (rng.normal(size=clean.shape) + 1j * rng.normal(size=clean.shape)) / np.sqrt(2)
    fields = ("t1", "t2", "pd", "b1")

    def loss(p):
        return mo.signal_mse(mt.simulate(truth.replace(**{k: jnp.exp(p[k]) for k in fields}), seq, **sim), noisy)

    start = {"t1": np.log(1.0), "t2": np.log(0.1), "pd": 0.0, "b1": 0.0}
    return loss, {k: jnp.full(n, start[k]) for k in fields}, n


def fit(loss, p0, steps, jit):
    jax.clear_caches()
    stamps = []
    t0 = time.perf_counter()
    res = mo.optimize(loss, p0, steps=steps, optimizer=optax.adam(0.05), jit=jit,
                      callback=lambda *_: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    return total, stamps[0] - t0, (stamps[-1] - stamps[1]) / (len(stamps) - 2), res.loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    loss, p0, n = calibration_problem()
    runs = {False: [], True: []}
    for _ in range(args.repeats):
        for jit in (False, True):
            runs[jit].append(fit(loss, p0, args.steps, jit))
    eager = statistics.median(r[0] for r in runs[False])
    for jit, rs in runs.items():
        total = statistics.median(r[0] for r in rs)
        print(json.dumps({
            "benchmark": "optimize_jit", "device": jax.devices()[0].device_kind, "jit": jit,
            "n_voxels": n, "steps": args.steps, "repeats": args.repeats,
            "fit_s": round(total, 3), "first_step_s": round(statistics.median(r[1] for r in rs), 3),
            "later_step_s": round(statistics.median(r[2] for r in rs), 4),
            "fit_vs_eager": round(total / eager, 3), "final_loss": rs[0][3],
        }))


if __name__ == "__main__":
    main()
