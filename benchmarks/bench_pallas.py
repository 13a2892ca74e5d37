"""The fused Pallas kernel against the XLA engine, on the suite's scenarios (JSON lines).

For each scenario: the XLA engine with the scenario's method (windows, prepared and
fused pulses: what `mritwin bench` times), then `Bloch(kernel="pallas")` for each
(block, warps) configuration, all in one process on the same device, with the median of
``--repeats`` runs, the kernel's throughput in stepped spin-steps per second (every ADC
sample and every RF raster sample a step, whether the kernel steps it or applies a
prepared pulse) and in its own loop iterations (``loop_spin_steps_per_s``), and its
largest deviation from the XLA engine's signal.

Meant for a GPU (`python benchmarks/bench_pallas.py --sweep`). On a CPU the kernel runs
in Pallas's interpreter: only ``--quick`` is allowed there, as a check that the script
works; its times mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import mritwin as mt
from mritwin.bench_scenarios import build_case, scenario_names
from mritwin.benchmarking import emit_record
from mritwin.simulate.engine import _default_chunk, _pack_spins
from mritwin.simulate.pallas_kernel import (
    DEFAULT_SINCOS,
    PREPARED,
    SINCOS,
    _loop_length,
    kernel_steps,
    launch_config,
    pallas_chunk,
    pallas_core,
)

DEFAULT_SCENARIOS = ["koma-brain-spiral", "koma-epi", "mrilab-spiral", "gre-256", "brain3d-gre", "mrf-train"]


def _median_time(fn, repeats):
    out = fn()
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(name, *, quick, repeats, configs):
    case = build_case(name, quick)
    twin, m = case.twin, case.method
    interpret = jax.default_backend() == "cpu"
    dev = jax.devices()[0].device_kind
    base = {"scenario": name, "quick": quick, "device": dev, "platform": jax.default_backend(),
            "n_spins": int(twin.n_spins), "repeats": repeats, "interpret": interpret}
    # the XLA engine as the suite runs it
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, windows=m.windows, motion=case.motion)
    t = time.perf_counter()
    ref = mt.simulate(twin, dseq, method=m)
    ref.samples.block_until_ready()
    first = time.perf_counter() - t
    xla_s, _ = _median_time(lambda: mt.simulate(twin, dseq, method=m).samples, repeats)
    ref = np.asarray(ref.samples)
    yield {**base, "kernel": "xla", "n_steps": int(dseq.n_real_steps), "run_s": xla_s,
           "compile_s": max(first - xla_s, 0.0)}
    # the fused kernel on the stepped sequence
    stepped = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, windows=False, motion=case.motion)
    demod = jnp.asarray(stepped.demod, jnp.complex64)
    plans = {}
    for prepare in sorted({c[5] for c in configs}):
        steps, pulse, slot_of_sample, n_slots = kernel_steps(stepped, spoiling=False, prepare=prepare)
        plans[prepare] = (steps, pulse, jnp.asarray(slot_of_sample), n_slots)
    for block, warps, sincos, compensate, reuse, prepare in configs:
        steps, pulse, sos, n_slots = plans[prepare]
        chunk = pallas_chunk(_default_chunk(twin.n_spins), 1, n_slots, block, 0 if pulse is None else len(pulse[0]))
        spins, _ = _pack_spins(twin, None, chunk, jnp.float32, 1)

        def call(spins=spins, block=block, warps=warps, sincos=sincos, compensate=compensate, reuse=reuse,
                 steps=steps, pulse=pulse, sos=sos, n_slots=n_slots):
            return pallas_core(spins, steps, sos, demod, pulse, n_slots=n_slots, block=block, interpret=interpret,
                               want_mag=False, num_warps=warps, sincos=sincos, compensate=compensate,
                               reuse=reuse)[0]

        t = time.perf_counter()
        out = call()
        out.block_until_ready()
        first = time.perf_counter() - t
        run_s, out = _median_time(call, repeats)
        out = np.asarray(out)
        n_steps = int(stepped.n_real_steps)
        loop = int(_loop_length(steps)[0])
        yield {**base, "kernel": "pallas", "block": block, "num_warps": warps, "sincos": sincos, "compensate": compensate,
               "reuse": reuse, "prepare": prepare, "chunk": chunk,
               "kernel_loop_steps": loop,
               # the same throughput counted in the kernel's loop iterations (prepared plays,
               # not their raster steps; the pulses' preparation, a launch before the loop,
               # is in run_s but not counted)
               "loop_spin_steps_per_s": twin.n_spins * loop / run_s,
               "prepared_plays": int(np.sum(np.asarray(steps[7]) == PREPARED)),
               "prepared_pulses": 0 if pulse is None else int(pulse[0].shape[0]),
               "n_steps": n_steps, "run_s": run_s, "compile_s": max(first - run_s, 0.0),
               "spin_steps_per_s": twin.n_spins * n_steps / run_s, "xla_run_s": xla_s,
               "speedup_vs_xla": xla_s / run_s,
               "max_rel_diff_vs_xla": float(np.abs(out - ref).max() / np.abs(ref).max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the scenarios' small versions")
    p.add_argument("--scenario", nargs="+", default=None, metavar="NAME",
                   help=f"default: {' '.join(DEFAULT_SCENARIOS)}; any of {', '.join(scenario_names())}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="blocks 32..512 x warps 1..8 (default: one configuration)")
    p.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128, 256, 512], metavar="B",
                   help="spins per program in the sweep (default 32 64 128 256 512)")
    p.add_argument("--warps", type=int, nargs="+", default=[1, 2, 4, 8], metavar="W",
                   help="warps per program in the sweep (default 1 2 4 8; only W <= B/32)")
    p.add_argument("--sincos", nargs="+", choices=SINCOS, default=[DEFAULT_SINCOS],
                   help=f"the kernel's sine/cosine variants to time (default {DEFAULT_SINCOS}; libdevice: CUDA's; "
                        "poly: the XLA engine's polynomial)")
    p.add_argument("--compensate", nargs="+", choices=["no", "yes"], default=["no"],
                   help="plain and/or compensated (Kahan) summation of each step's change (default no)")
    p.add_argument("--reuse", nargs="+", choices=["yes", "no"], default=["yes"],
                   help="reuse a step's rotation and relaxation factors where they repeat (yes, the default) "
                        "and/or compute them at every step (no)")
    p.add_argument("--prepare", nargs="+", choices=["yes", "no"], default=["yes"],
                   help="repeated RF pulses prepared into per-spin maps (yes, the default) and/or "
                        "stepped at every play (no)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    a = p.parse_args(argv)
    if jax.default_backend() == "cpu" and not a.quick:
        print("bench_pallas: error: on a CPU the kernel runs in Pallas's interpreter; use --quick (a check "
              "that the script works) or run on a GPU", file=sys.stderr)
        return 2
    configs = [launch_config(jax.default_backend() == "cpu")]  # what simulate launches
    if a.sweep:
        configs = [(b, w) for b in a.blocks for w in a.warps if b >= 32 * w]
    configs = [(b, w, sc, c == "yes", r == "yes", pr == "yes") for b, w in configs for sc in a.sincos
               for c in a.compensate for r in a.reuse for pr in a.prepare]
    for name in a.scenario or DEFAULT_SCENARIOS:
        print(f"[{name}]", file=sys.stderr, flush=True)
        for rec in run(name, quick=a.quick, repeats=a.repeats, configs=configs):
            emit_record(rec, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
