"""NUFFT readout benchmark: whole simulations and per-window scaling, JSON lines on stdout.

1. ``gre``: a 2D Cartesian spoiled GRE, one spin per pixel, float32: exact stepping
   (``Bloch(windows=False)``, one step per ADC sample), exact windows (the default
   ``Bloch()``) and the NUFFT readout at tol 1e-4 and 1e-6; speed-ups against stepping
   measured in the same run, and the NUFFT's error against the exact windows.
2. ``window``: one ADC window (n_samples = sqrt(n_spins), constant gradient, spread T2)
   timed alone for growing sizes, through the NUFFT as is and prepared (the spreading
   weights of a window geometry that repeats, computed once, as the engine does for
   Cartesian lines): the time per window against
   ``(n_spins + n_samples) · log2(n_spins + n_samples)``, next to the exact window
   (``O(n_spins · n_samples)``).

Usage: ``python benchmarks/bench_nufft.py [--sizes 256] [--repeats 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp
import numpy as np

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin, time_call
from mritwin.sequence.discretize import discretize
from mritwin.simulate import kernels
from mritwin.simulate.nufft import first_grid_index, periodic_grid_size
from mritwin.simulate.readout import WindowCacheSpec, best_block, plan_readout


def _device():
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')}"


def _time(fn, repeats):
    """(compile [s], median run [s]) of ``fn``."""
    first, med, _ = time_call(fn, repeats)
    return max(first - med, 0.0), med


def bench_gre(n, repeats, step_repeats):
    fov = 0.2
    seq = cartesian_gre(n, fov)
    twin = grid_twin(n, fov)
    d = discretize(seq)
    n_samples = n * n
    methods = {
        "stepping": mt.Bloch(windows=False),
        "windows": mt.Bloch(),
        "nufft-1e-4": mt.Bloch(readout=mt.NUFFTReadout(1e-4)),
        "nufft-1e-6": mt.Bloch(readout=mt.NUFFTReadout(1e-6)),
    }
    out = {}
    signals = {}
    for name, method in methods.items():
        reps = step_repeats if name == "stepping" else repeats
        compile_s, run_s = _time(lambda m=method: mt.simulate(twin, seq, method=m).samples, reps)
        signals[name] = np.asarray(mt.simulate(twin, seq, method=method).samples)
        out[name] = {"compile_s": round(compile_s, 3), "run_s": round(run_s, 4), "repeats": reps}
    ref = signals["windows"]
    for name in methods:
        out[name]["speedup_vs_stepping"] = round(out["stepping"]["run_s"] / out[name]["run_s"], 1)
        out[name]["max_rel_err_vs_windows"] = float(np.max(np.abs(signals[name] - ref)) / np.max(np.abs(ref)))
    return {"scenario": "gre", "device": _device(), "precision": "float32", "matrix": n,
            "n_spins": twin.n_spins, "n_steps_stepped": int(discretize(seq, windows=False).n_real_steps),
            "n_steps_windows": d.n_real_steps, "n_samples": n_samples, "methods": out}


def bench_window(n_spins, repeats, tol=1e-6):
    """One window, timed in a jitted scan of 8 windows (per-window time reported)."""
    n_samples = int(round(math.sqrt(n_spins)))
    rng = np.random.default_rng(0)
    f32 = jnp.float32
    side = 0.2
    x = jnp.asarray(rng.uniform(-side / 2, side / 2, n_spins), f32)
    y = jnp.asarray(rng.uniform(-side / 2, side / 2, n_spins), f32)
    t2 = rng.uniform(0.05, 0.2, n_spins)
    sp = kernels.Spins(x=x, y=y, z=jnp.zeros(n_spins, f32), pd=jnp.ones(n_spins, f32),
                       r1=jnp.ones(n_spins, f32), r2=jnp.asarray(1 / t2, f32),
                       df=jnp.asarray(rng.uniform(-50, 50, n_spins), f32), b1=jnp.ones(n_spins, f32),
                       coil_re=None, coil_im=None)
    m0 = kernels.State(jnp.ones(n_spins, f32), jnp.zeros(n_spins, f32), jnp.zeros(n_spins, f32))
    dwell = 10e-6
    k = jnp.asarray([1.0 / (side * 1.0), 0.0, 0.0], f32) / 1.0
    count = jnp.int32(n_samples)
    twin = mt.Twin(position=np.c_[np.asarray(x), np.asarray(y), np.zeros(n_spins)], pd=np.ones(n_spins),
                   t1=np.ones(n_spins), t2=t2)
    # a plan for this window: reuse the engine's planner on a one-window sequence
    dwell_seq = 20e-6
    te = max(5e-3, 0.5 * n_samples * dwell_seq + 3e-3)
    seq = cartesian_gre(n_samples, side, te=te, tr=2 * te + 4e-3)
    plan = plan_readout(mt.NUFFTReadout(tol), twin, discretize(seq), jnp.float32).window
    n_win = discretize(seq).n_window

    def scan(step):
        def body(m, _):
            m2, out = step(m)
            return m2, out[:, :n_samples]
        return jax.jit(lambda m: jax.lax.scan(body, m, None, length=8)[1])

    nufft = scan(lambda m: kernels.window_step_nufft(sp, m, jnp.float32(dwell), k, count, n_win, plan))
    exact = scan(lambda m: kernels.window_step(sp, m, jnp.float32(dwell), k, count, n_win))
    _, t_nufft = _time(lambda: nufft(m0), repeats)
    _, t_exact = _time(lambda: exact(m0), repeats)
    # the same window prepared once (as the engine does for windows that repeat): spins
    # sorted by grid cell, spreading weights and end-state rotation computed beforehand
    theta = np.asarray(kernels._cycles(sp, k, jnp.float32(dwell)), np.float64)
    size_grid = periodic_grid_size(n_win + 1, plan.spec)
    perm = np.argsort(first_grid_index(theta, size_grid, plan.spec), kind="stable")
    block, (span,) = best_block([theta[perm]], size_grid, plan.spec, n_spins)
    pplan = plan._replace(cache=WindowCacheSpec(size_grid, block, span, 1, True))
    sp_sorted = jax.tree_util.tree_map(lambda a: a[perm], sp)
    m_sorted = jax.tree_util.tree_map(lambda a: a[perm], m0)
    cache = jax.jit(lambda: kernels.prepare_window(sp_sorted, jnp.float32(dwell), k, count, pplan))()
    prepared = scan(lambda m: kernels.window_step_cached(sp_sorted, m, jnp.float32(dwell), count, n_win, pplan,
                                                         cache))
    _, t_prep = _time(lambda: prepared(m_sorted), repeats)
    size = n_spins + n_samples
    return {"scenario": "window", "device": _device(), "precision": "float32", "tol": tol,
            "n_spins": n_spins, "n_samples": n_samples, "expansion_terms": len(plan.nodes),
            "kernel_width": plan.spec.width, "prepared_block": block, "prepared_span": span,
            "nufft_s_per_window": t_nufft / 8, "prepared_s_per_window": t_prep / 8,
            "exact_s_per_window": t_exact / 8,
            "nufft_ns_per_nlogn": 1e9 * t_nufft / 8 / (size * math.log2(size)),
            "prepared_ns_per_nlogn": 1e9 * t_prep / 8 / (size * math.log2(size)),
            "exact_ns_per_spin_sample": 1e9 * t_exact / 8 / (n_spins * n_samples)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="GRE matrix sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step-repeats", type=int, default=2, help="repeats of the (slow) stepping baseline")
    p.add_argument("--window-spins", type=int, nargs="+", default=[4096, 16384, 65536, 262144])
    p.add_argument("--quick", action="store_true", help="64x64 GRE and small windows only")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.window_spins = [64], [1024, 4096, 16384, 65536]
    for n in args.window_spins:
        print(json.dumps(bench_window(n, args.repeats)), flush=True)
    for n in args.sizes:
        print(json.dumps(bench_gre(n, args.repeats, args.step_repeats)), flush=True)


if __name__ == "__main__":
    main()
