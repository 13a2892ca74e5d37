"""Benchmark: a user's first *eager* gradient through a sequence builder and `simulate`
(`jax.grad` without `jax.jit`), with the traced-value steps of planning in one jitted call
each (``now``) against one eager operation at a time (``before``: those jits unwrapped, as
it was), and `jax.jit(jax.grad(...))` beside them (``jit``, now), in the same process,
taking turns, each call starting with JAX's caches cleared.

Eager, every JAX operation on a traced value is a program of its own, compiled once per
shape, and `jax.grad`'s backward pass compiles each one's transpose as well: planning's
gathers, scatters and pads of traced B1 integrals (`discretize._rf_integrals`,
`prepared_rf.plan_prepared_rf` / `shorten_steps`, `prepared_rf.device_b1dt`) were ~100 such
programs in a flip-angle gradient, and those of traced gradient moments
(`timeline.gradient_moments`), k-space (`kspace.kspace_at_adc`) and fused RF steps
(`fused_rf.plan_fused_rf`) ~110 in a gradient-amplitude one. ``before`` is the same
functions unjitted; for k-space that is already the recurrence as one `lax.scan`, where
the code before it looped over the RF events in Python (more operations still).

Scenarios: the gradient of a 16 x 16 `mritwin.sequences.gre`'s (sinc pulse, 5 mm slice)
signal energy with respect to its flip angle (``flip``: the sequence's B1 traced), to a
factor scaling every readout gradient (``readout``: its gradient amplitudes traced), and
to the twin's T2 (``t2``: only the twin traced, which these jits do not touch; a control),
float64. One JSON line per scenario: per variant the median time of the first gradient,
its XLA compiles (count and seconds, from `jax.monitoring`), and the gradients' largest
relative difference between the variants.

Usage:  python benchmarks/bench_eager_grad.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

prepared_rf = importlib.import_module("mritwin.simulate.prepared_rf")
fused_rf = importlib.import_module("mritwin.simulate.fused_rf")
discretize = importlib.import_module("mritwin.sequence.discretize")
timeline = importlib.import_module("mritwin.sequence.timeline")
kspace = importlib.import_module("mritwin.sequence.kspace")
JITTED = [(prepared_rf, "_traced_b1"), (prepared_rf, "_take_padded"), (prepared_rf, "_scaled_rows"),
          (discretize, "_traced_integrals"), (timeline, "_traced_moments"), (kspace, "_traced_k_at_samples"),
          (fused_rf, "_traced_fused")]
COMPILES = {"n": 0, "s": 0.0}


def _on_event(event: str, duration: float, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES["n"] += 1
        COMPILES["s"] += duration


def timed(fn, *args):
    """``(result, seconds, XLA compiles, their seconds)`` of ``fn(*args)``, blocked until ready."""
    COMPILES.update(n=0, s=0.0)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0, COMPILES["n"], COMPILES["s"]


def medians(res: dict) -> dict:
    """Per variant of ``res`` ({variant: [(seconds, compiles, compile seconds), ...]}) the medians."""
    out = {}
    for k, runs in res.items():
        out[f"{k}_s"] = round(statistics.median(r[0] for r in runs), 3)
        out[f"{k}_compiles"] = int(statistics.median(r[1] for r in runs))
        out[f"{k}_compile_s"] = round(statistics.median(r[2] for r in runs), 3)
    return out


def _use(variant: str) -> None:
    for mod, name in JITTED:
        fn = getattr(mod, name)
        fn = getattr(fn, "__wrapped__", fn) if variant == "before" else _NOW[name]
        setattr(mod, name, fn)


_NOW = {name: getattr(mod, name) for mod, name in JITTED}


def losses():
    tw = grid_twin(16, 0.2)

    def sequence(flip):
        return mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=16, flip_angle_deg=flip, slice_thickness=5e-3)

    def flip(fa):
        return jnp.sum(jnp.abs(mt.simulate(tw, sequence(fa), dtype=jnp.float64).samples) ** 2)

    seq = sequence(30.0)

    def readout(scale):
        blocks = [eqx.tree_at(lambda b: b.gx.amplitude, b, b.gx.amplitude * scale) if b.gx is not None else b
                  for b in seq.blocks]
        return jnp.sum(jnp.abs(mt.simulate(tw, mt.Sequence(blocks, seq.definitions), dtype=jnp.float64).samples) ** 2)

    def t2(t2):
        return jnp.sum(jnp.abs(mt.simulate(tw.replace(t2=t2), seq, dtype=jnp.float64).samples) ** 2)

    return {"flip": (flip, jnp.asarray(30.0)), "readout": (readout, jnp.asarray(1.0)), "t2": (t2, tw.t2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    for name, (loss, x) in losses().items():
        res = {k: [] for k in ("before", "now", "jit")}
        grads = {}
        for _ in range(args.repeats):
            for k in res:
                _use("before" if k == "before" else "now")
                grad = jax.grad(loss) if k != "jit" else jax.jit(jax.grad(loss))
                jax.clear_caches()
                g, *cost = timed(grad, x)
                grads[k] = np.asarray(g)
                res[k].append(cost)
        _use("now")
        out = {"benchmark": "eager_grad", "scenario": name, "device": jax.devices()[0].device_kind,
               "precision": "float64", "repeats": args.repeats}
        out.update(medians(res))
        out["now_vs_before"] = round(out["now_s"] / out["before_s"], 3)
        out["jit_vs_now"] = round(out["jit_s"] / out["now_s"], 3)
        scale = float(np.max(np.abs(grads["before"])))
        out["max_rel_diff"] = max(float(np.max(np.abs(grads[k] - grads["before"]))) / scale for k in ("now", "jit"))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
