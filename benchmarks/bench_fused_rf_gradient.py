"""Benchmark: reverse and forward mode through stepped RF (fused RF steps): the derivative of the rolled loop vs the written-out tangent.

A pulse that is not prepared (played once, or with a traced shape: pulse design) is
stepped 16 raster samples at a time by `fused_rf.fused_rf_steps`. Its derivative used to
be JAX's derivative of the same 16 steps as a rolled loop (``rolled``); since 2026-12-07
it is a written-out tangent (``explicit``; ``rolled``: `engine.ROLLED_FUSED_RF_DERIVATIVE`): the rotations'
coefficients of all 16 steps computed and differentiated at once (vectorized over the
steps), then a loop whose tangent step is a few products, which reverse mode transposes
into a loop without reductions or parameter accumulators.

Scenarios (float64, this machine's default device):

- ``design``: notebook 02's slice-profile loss (``--design-spins`` spins through the
  slice, a 64-sample pulse on a 20 us raster, ``Bloch(rf_dt=20e-6)``), differentiated with
  respect to the 64 samples;
- ``design-fine``: the same on a 4 us raster (320 samples, 1 000 spins);
- ``tissue``: a 2 ms slice-selective sinc played once (1 999 raster steps) and an
  8 x 8 EPI-like readout on ``--tissue-n``² spins in a slab (`tests.seqkit.epi_like`), the
  signal energy differentiated with respect to T2 and B1.

For each: the forward pass (``jax.jit(loss)``), ``jax.grad`` and ``jax.jvp`` (one
direction) under both settings, compiled in one process (JAX's caches cleared in
between), then called in turn. One JSON line per (scenario, mode, setting): trace+lower and compile
times, the median of ``--calls`` calls, the ratios against ``rolled`` and against the
forward pass, the largest relative difference from ``rolled``'s derivative.

Usage:  python benchmarks/bench_fused_rf_gradient.py [--scenarios design design-fine tissue] [--calls 9]
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
from mritwin.benchmarking import compile_fresh  # noqa: E402

jax.config.update("jax_enable_x64", True)
engine = importlib.import_module("mritwin.simulate.engine")
SETTINGS = {"rolled": True, "explicit": False}  # engine.ROLLED_FUSED_RF_DERIVATIVE


def design_case(n_spins: int, raster: float, duration: float = 1.28e-3):
    """Notebook 02's profile loss and its initial sinc [uT]."""
    sc = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, max_slew=1e4)
    thickness, tbw = 5e-3, 4.0
    g = tbw / duration / (mt.GAMMA_BAR * thickness)
    z = np.linspace(-2 * thickness, 2 * thickness, n_spins)
    twin = mt.Twin(position=np.stack([0 * z, 0 * z, z], 1), pd=np.ones_like(z), t1=np.full_like(z, 10.0),
                   t2=np.full_like(z, 10.0))
    target = jnp.asarray((np.abs(z) < thickness / 2).astype(float))

    def loss(b1_uT):
        rf = mt.make_arbitrary_rf((b1_uT * 1e-6).astype(jnp.complex128), raster=raster, delay=20e-6, scanner=sc)
        seq = mt.Sequence([mt.Block(rf=rf, gz=mt.TrapGrad("z", g, 20e-6, duration, 20e-6))])
        m = mt.simulate(twin, seq, scanner=sc, method=mt.Bloch(rf_dt=raster), dtype=jnp.float64,
                        return_magnetization=True).magnetization
        return jnp.mean((jnp.sqrt(m[:, 0] ** 2 + m[:, 1] ** 2 + 1e-12) - target) ** 2)

    sinc = mt.make_sinc_pulse(np.pi / 2, duration, time_bw_product=tbw, scanner=mt.Scanner(rf_raster=raster))
    return loss, jnp.asarray(np.real(np.asarray(sinc.shape)) * float(sinc.amplitude) * 1e6)


def tissue_case(n: int):
    from tests.seqkit import IDEAL, epi_like, slab_twin
    twin, seq = slab_twin(n), epi_like()

    def loss(p):
        tw = twin.replace(t2=p["t2"], b1=p["b1"])
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=IDEAL, dtype=jnp.float64).samples) ** 2)

    return loss, {"t2": jnp.asarray(twin.t2), "b1": jnp.asarray(twin.b1)}


def run(scenario: str, size: int, calls: int) -> None:
    """The forward pass and, for each mode, both settings compiled (JAX's caches cleared
    in between), then called in turn ``calls`` times each: the machine's drift hits all
    alike."""
    loss, x = CASES[scenario](size)
    direction = jax.tree_util.tree_map(lambda v: jnp.full_like(v, 0.5), x)
    fns = {"grad": jax.grad(loss), "jvp": lambda v: jax.jvp(loss, (v,), (direction,))[1]}
    programs = {("forward", "-"): compile_fresh(loss, x)}
    for mode, fn in fns.items():
        for setting, rolled in SETTINGS.items():
            engine.ROLLED_FUSED_RF_DERIVATIVE = rolled
            jax.clear_caches()  # (the engine's jitted core reads the setting while tracing)
            programs[(mode, setting)] = compile_fresh(fn, x)
    engine.ROLLED_FUSED_RF_DERIVATIVE = False
    outs = {key: np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree_util.tree_leaves(p[0](x))])
            for key, p in programs.items()}
    times = {key: [] for key in programs}
    for _ in range(calls):
        for key, (program, _) in programs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(program(x))
            times[key].append(time.perf_counter() - t0)
    run_s = {key: statistics.median(t) for key, t in times.items()}
    for mode in fns:
        ref = outs[(mode, "rolled")]
        for setting in SETTINGS:
            key = (mode, setting)
            print(json.dumps({
                "benchmark": "fused_rf_gradient", "scenario": scenario, "n_spins": size, "mode": mode,
                "setting": setting, "device": jax.devices()[0].device_kind, "precision": "float64",
                **programs[key][1], "run_s": run_s[key],
                "forward_run_s": run_s[("forward", "-")],
                "rel_diff_vs_rolled": float(np.max(np.abs(outs[key] - ref)) / np.max(np.abs(ref))),
                "run_ratio_vs_forward": round(run_s[key] / run_s[("forward", "-")], 2),
                "compile_ratio_vs_rolled": round(programs[key][1]["compile_s"] / programs[(mode, "rolled")][1]["compile_s"], 3),
                "run_ratio_vs_rolled": round(run_s[key] / run_s[(mode, "rolled")], 3)}), flush=True)


CASES = {"design": lambda n: design_case(n, 20e-6), "design-fine": lambda n: design_case(n, 4e-6),
         "tissue": lambda n: tissue_case(int(round(n ** 0.5)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=["design", "design-fine", "tissue"],
                    choices=["design", "design-fine", "tissue"])
    ap.add_argument("--design-spins", type=int, default=81)
    ap.add_argument("--tissue-n", type=int, default=32, help="the tissue scenario's grid (n x n spins)")
    ap.add_argument("--calls", type=int, default=9)
    args = ap.parse_args()
    sizes = {"design": args.design_spins, "design-fine": 1000, "tissue": args.tissue_n ** 2}
    for scenario in args.scenarios:
        run(scenario, sizes[scenario], args.calls)

if __name__ == "__main__":
    main()
