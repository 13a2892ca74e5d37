"""Benchmark: reverse-mode gradient memory and time vs the forward pass.

Scenario (issue 7): a 2D Cartesian GRE stepped sample by sample (windows off) so it has
>= 10^4 time steps, on a 100 x 100 grid twin (10^4 spins); the loss is the energy of the
signal; the gradient is taken with respect to T1, T2 and PD. Memory is XLA's compiled
temporary-buffer size (the peak working memory of the computation, from
``compiled.memory_analysis()``), for the forward pass, the gradient with segment
checkpointing (default), the gradient with the reversible adjoint
(``Bloch(reversible=True)``) and, compiled but not run, the gradient without either. Times are
medians of repeats in the same process.

Usage:  python benchmarks/bench_gradient.py [--n 100] [--repeats 3]
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre, grid_twin  # noqa: E402


def timed(f, *args, repeats=3):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _reversible_fields(name, t, t_fwd, mem, mem_fwd, grads, ref):
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(np.asarray(y))))
               for x, y in zip(grads, ref))
    return {f"{name}_s": round(t, 4), f"{name}_over_forward_time": round(t / t_fwd, 2),
            f"{name}_temp_mb": round(mem / 2**20, 2), f"{name}_over_forward_memory": round(mem / max(mem_fwd, 1), 2),
            f"{name}_vs_checkpoint_max_rel_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    n, fov = a.n, 0.2
    seq = cartesian_gre(n, fov, tr=10e-3, te=4e-3, dwell=10e-6)
    twin = grid_twin(n, fov, t1=1.0, t2=0.08)
    params = (twin.t1, twin.t2, twin.pd)

    def loss(params, method):
        t1, t2, pd = params
        sig = mt.simulate(twin.replace(t1=t1, t2=t2, pd=pd), seq, method=method)
        return jnp.sum(jnp.abs(sig.samples) ** 2)

    ck = mt.Bloch(windows=False, checkpoint=True)
    nock = mt.Bloch(windows=False, checkpoint=False)
    fwd = jax.jit(lambda p: loss(p, ck))
    grad = jax.jit(jax.grad(lambda p: loss(p, ck)))
    grad_nock = jax.jit(jax.grad(lambda p: loss(p, nock)))
    rev = mt.Bloch(windows=False, reversible=True)
    grad_rev = jax.jit(jax.grad(lambda p: loss(p, rev)))
    # restore points every 0.3 s: error growth exp(0.3 s / T2) = 42 for this twin's T2 = 80 ms
    rev3 = mt.Bloch(windows=False, reversible=True, reversible_segment=0.3)
    grad_rev3 = jax.jit(jax.grad(lambda p: loss(p, rev3)))

    def temp_bytes(f):
        return int(f.lower(params).compile().memory_analysis().temp_size_in_bytes)

    mem_fwd, mem_grad, mem_grad_nock = temp_bytes(fwd), temp_bytes(grad), temp_bytes(grad_nock)
    mem_rev, mem_rev3 = temp_bytes(grad_rev), temp_bytes(grad_rev3)
    t_fwd = timed(fwd, params, repeats=a.repeats)
    t_grad = timed(grad, params, repeats=a.repeats)
    t_rev = timed(grad_rev, params, repeats=a.repeats)
    t_rev3 = timed(grad_rev3, params, repeats=a.repeats)
    g_rev, g_rev3 = grad_rev(params), grad_rev3(params)
    n_steps = mt.discretize(seq, windows=False).n_real_steps
    g = grad(params)
    out = {
        "scenario": f"gradient_gre{n}_stepped",
        "device": jax.devices()[0].device_kind,
        "precision": "float32",
        "n_spins": twin.n_spins,
        "n_steps": n_steps,
        "forward_s": round(t_fwd, 4),
        "gradient_s": round(t_grad, 4),
        "gradient_over_forward_time": round(t_grad / t_fwd, 2),
        "forward_temp_mb": round(mem_fwd / 2**20, 2),
        "gradient_temp_mb": round(mem_grad / 2**20, 2),
        "gradient_over_forward_memory": round(mem_grad / max(mem_fwd, 1), 2),
        "gradient_no_checkpoint_temp_mb": round(mem_grad_nock / 2**20, 2),
        "gradient_finite": bool(all(np.all(np.isfinite(np.asarray(x))) for x in g)),
        **_reversible_fields("reversible", t_rev, t_fwd, mem_rev, mem_fwd, g_rev, g),
        **_reversible_fields("reversible_0.3s", t_rev3, t_fwd, mem_rev3, mem_fwd, g_rev3, g),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
