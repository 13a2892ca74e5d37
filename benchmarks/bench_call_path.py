"""Benchmark: two costs on the path of every call, each against its former version in the same process.

- ``products``: the deferred windows' matrix products (`engine._window_products`),
  ``[Re r; Im r] @ [Re t; Im t]^T``. Written as ``r @ t.T`` (``before``, kept here as
  the baseline), XLA's CPU backend copied the power table into spin-major order before
  the product; as a `dot_general` contracting the last axes of both (``now``) it does
  not. Both engines' compiled core programs (`engine._core`, lowered and compiled here),
  called in turn.
- ``placement``: the run's arrays put on the devices once when it is planned
  (`engine._placed`, ``now``) against left as they were (``before``: uncommitted arrays
  on the first device and NumPy arrays, which JAX copied to the devices at every call).
  Both runs planned (`engine._plan`) and called in turn.

Scenarios from `mritwin.bench_scenarios` (full size, float32, one JAX device per core as
`mritwin bench`). One JSON line per scenario and part: the medians of ``--calls`` calls,
the ratio now/before and the largest difference of the samples.

Usage:  python benchmarks/bench_call_path.py [--scenarios koma-brain-suscept ...] [--calls 11]
"""

from __future__ import annotations

import argparse
import importlib
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
from mritwin.bench_scenarios import build_case  # noqa: E402

engine = importlib.import_module("mritwin.simulate.engine")
NOW_PRODUCTS, NOW_PLACED = engine._window_products, engine._placed


def products_before(rows, table):
    """`engine._window_products` as it was: ``r @ t.T``."""
    k, c, width = rows.shape
    kc = k * c
    r = jnp.concatenate([jnp.real(rows), jnp.imag(rows)], 0).reshape(2 * kc, width)
    n_s = table.shape[0]
    n_blocks = -(-n_s // engine.WINDOW_PRODUCT_SAMPLES)
    size = -(-n_s // n_blocks)
    out = []
    for i in range(0, n_s, size):
        t = table[i:i + size]
        m = t.shape[0]
        o = r @ jnp.concatenate([jnp.real(t), jnp.imag(t)], 0).T
        out.append(jax.lax.complex(o[:kc, :m] - o[kc:, m:], o[:kc, m:] + o[kc:, :m]))
    return (out[0] if len(out) == 1 else jnp.concatenate(out, -1)).reshape(k, c, n_s)


def _plan(case):
    return engine._plan(case.twin, case.seq, case.scanner, None, case.method, jnp.float32, False, None, ())


def _compiled(case):
    """The run's core program, lowered and compiled now (the engine's code as patched)."""
    jax.clear_caches()
    run = _plan(case)
    kw = run.call.keywords
    program = run.call.func.lower(*run.call.args, **kw).compile()
    dynamic = {k: v for k, v in kw.items() if k not in engine._CORE_STATIC}
    return lambda: program(*run.call.args, **dynamic)


def _alternate(calls: dict, n: int) -> dict:
    outs = {key: np.asarray(jax.block_until_ready(f())[0]) for key, f in calls.items()}
    times = {key: [] for key in calls}
    for _ in range(n):
        for key, f in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[key].append(time.perf_counter() - t0)
    return {key: (statistics.median(t), outs[key]) for key, t in times.items()}


def run(name: str, n_calls: int) -> None:
    case = build_case(name)
    parts = {}
    engine._window_products = products_before
    before = _compiled(case)
    engine._window_products = NOW_PRODUCTS
    parts["products"] = _alternate({"before": before, "now": _compiled(case)}, n_calls)
    engine._placed = lambda spins, d, core, sharding: (spins, d, core)
    before = _plan(case).call
    engine._placed = NOW_PLACED
    now = _plan(case)
    parts["placement"] = _alternate({"before": before, "now": now.call}, n_calls)
    for part, res in parts.items():
        (t0, s0), (t1, s1) = res["before"], res["now"]
        print(json.dumps({"benchmark": "call_path", "scenario": name, "part": part, "n_spins": case.twin.n_spins,
                          "device": jax.devices()[0].device_kind, "n_devices": now.n_devices,
                          "precision": "float32", "before_s": round(t0, 6), "now_s": round(t1, 6),
                          "ratio": round(t1 / t0, 3),
                          "max_rel_diff": float(np.max(np.abs(s1 - s0)) / np.max(np.abs(s0)))}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=["koma-brain-suscept", "koma-brain-motion", "koma-epi",
                                                        "koma-sphere-cs", "koma-column", "gre-128", "gre-256"])
    ap.add_argument("--calls", type=int, default=11)
    args = ap.parse_args()
    mt.use_cpu_devices()
    for name in args.scenarios:
        run(name, args.calls)


if __name__ == "__main__":
    main()
