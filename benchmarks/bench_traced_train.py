"""Benchmark: a sequence rebuilt from traced flip angles, pulse train against pulses per TR.

Optimizing a flip-angle schedule means a jitted function that builds the sequence from a
traced vector of flips, simulates it and differentiates. Built with one pulse per TR
from the scalar ``flips[i]``, every TR adds its own small computations to the program,
and XLA compiles each into a kernel of its own (on the CPU ~10 ms each, more in reverse
mode). Built as the plays of one pulse train (``make_block_pulse(flips, ...).play(i)``,
`mritwin.RF.play`), the simulator reads all flips as one vector.

For the MR-fingerprinting-like train of the suite (`mritwin.bench_scenarios.mrf_train`,
``--n-tr`` TRs; the suite's quick twin, 1 897 spins, float32), prints one JSON line per
(n_tr, construction): the jitted ``value_and_grad`` of the signal energy with respect to
the flips (``--forward``: the signal energy only), split into tracing, lowering and XLA
compile time, then the median of ``--calls`` calls (the two constructions called in
turn); and the largest difference of the
gradients between the two constructions relative to its largest entry.

Usage:  python benchmarks/bench_traced_train.py [--n-tr 100 300 1000] [--calls 5] [--forward]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import SCENARIOS, mrf_train  # noqa: E402


def compile_one(n_tr: int, pulse_train: bool, forward: bool, case) -> tuple[dict, object, np.ndarray]:
    """The jitted function for one construction: (timings, compiled, output)."""
    def energy(flips):
        seq = mrf_train(n_tr, flips=flips, pulse_train=pulse_train)[0]
        sig = mt.simulate(case.twin, seq, scanner=case.scanner, method=case.method, dtype=jnp.float32)
        return jnp.sum(jnp.abs(sig.samples) ** 2)

    f = jax.jit(energy if forward else jax.value_and_grad(energy))
    x = jnp.asarray(mrf_train(n_tr)[1], jnp.float32)
    t0 = time.perf_counter()
    traced = f.trace(x)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    out = jax.block_until_ready(compiled(x))
    row = {"benchmark": "traced_train", "n_tr": n_tr, "construction": "train" if pulse_train else "per_tr",
           "mode": "forward" if forward else "value_and_grad", "device": jax.devices()[0].device_kind,
           "precision": "float32", "n_spins": int(case.twin.n_spins), "trace_s": round(t1 - t0, 3),
           "lower_s": round(t2 - t1, 3), "compile_s": round(t3 - t2, 3), "first_call_total_s": round(t3 - t0, 3)}
    return row, (lambda: compiled(x)), np.asarray(out if forward else out[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-tr", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--forward", action="store_true", help="the signal energy only (no gradient)")
    a = p.parse_args(argv)
    case = SCENARIOS["mrf-train"].build(True)
    compile_one(10, True, a.forward, case)  # warm-up: the process's first compilations, not timed
    for n in a.n_tr:
        rows = [compile_one(n, pt, a.forward, case) for pt in (False, True)]
        times = [[], []]
        for _ in range(a.calls):  # in turn, so that the machine's drift hits both alike
            for (_, call, _), t in zip(rows, times):
                t0 = time.perf_counter()
                jax.block_until_ready(call())
                t.append(time.perf_counter() - t0)
        ref, got = rows[0][2], rows[1][2]
        dev = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
        for (row, _, _), t in zip(rows, times):
            row["run_s"] = round(float(np.median(t)), 4)
            row["max_rel_difference_train_vs_per_tr"] = float(f"{dev:.3g}")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
