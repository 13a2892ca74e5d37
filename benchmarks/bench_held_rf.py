"""Benchmark: held RF samples (block pulses) as one step against steps of ``max_rf_dt``.

A block pulse is one RF sample held; relaxation is split around each RF step's rotation
(Strang), so one step for the whole pulse leaves an error ~ (flip per step)² · dt/T2. By
default (`mritwin.sequence.discretize.MAX_RF_DT`, 10 us) a held sample is cut into steps
of at most 10 us. This prints, as JSON lines:

- ``accuracy``: a block pulse on one spin, float64, against the closed form (4x4 matrix
  exponential), for ``max_rf_dt`` None (one step), 20 us, 10 us (default) and 5 us: the
  largest |M - M_exact| / M0 over the cases.
- per scenario (``--scenario``, suite scenarios with block pulses): the compiled core
  planned from the same twin with each ``max_rf_dt`` (None, 20 us, 10 us), called in turn
  ``--calls`` times each in one process (`benchmarking.alternate_runs`, so that drift hits
  them alike): steps, first-call (compile) time, median run time, time relative to one
  step per held sample, and the signal's largest change from the default's relative to
  its peak (what one step per block pulse got wrong there).

- with ``--gradient``, per scenario: ``jax.jit(jax.value_and_grad)`` of the signal energy
  with respect to the twin's T2 map (a calibration's gradient), one step per held sample
  against the default, each jitted function called ``--calls`` times after its first
  (compiling) call: first-call and median times, float32 (``--x64``: float64). With
  ``--wrt flips`` (mrf-train only): with respect to the train's 1 000 flip angles instead
  (B1 traced: sequence optimization).

Usage:  python benchmarks/bench_held_rf.py [--scenario gre-64 gre-128 mrf-train] [--quick] [--calls 11]
                                           [--gradient [--wrt t2|flips]] [--x64]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from mritwin.benchmarking import alternate_runs, exact_constant_pulse  # noqa: E402
from mritwin.simulate import engine  # noqa: E402

CAPS = (None, 20e-6, 10e-6)  # the last one is the default: the reference of the signal change
IDEAL = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0, max_b1=1.0)
# (flip [deg], duration [s], T1 [s], T2 [s]): clinical hard pulses, and at 25 uT (~0.47 ms for 180°)
PULSES = [(90, 1e-3, 1.0, 0.05), (90, 1e-3, 1.0, 0.01), (90, 0.2e-3, 1.0, 0.05), (180, 2e-3, 1.0, 0.08),
          (180, 0.47e-3, 0.5, 0.01), (30, 0.5e-3, 0.8, 0.03)]


def accuracy() -> dict:
    errors = {str(c): 0.0 for c in CAPS + (5e-6,)}
    for flip, dur, t1, t2 in PULSES:
        rf = mt.make_block_pulse(np.radians(flip), dur, delay=0.0, scanner=IDEAL)
        seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-9))])
        twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2])
        ref = exact_constant_pulse(complex(np.conj(rf.signal[0])), 0.0, t1, t2, dur)
        for cap in CAPS + (5e-6,):
            sig = mt.simulate(twin, seq, scanner=IDEAL, method=mt.Bloch(max_rf_dt=cap), dtype=jnp.float64,
                              return_magnetization=True)
            err = float(np.linalg.norm(np.asarray(sig.magnetization[0]) - ref))
            errors[str(cap)] = max(errors[str(cap)], err)
    return {"benchmark": "held_rf_accuracy", "pulses": [dict(zip(("flip_deg", "duration_s", "t1_s", "t2_s"), p))
                                                        for p in PULSES],
            "max_error_by_max_rf_dt": {k: float(f"{v:.3g}") for k, v in errors.items()}}


def scenario(name: str, quick: bool, calls: int) -> dict:
    case = SCENARIOS[name].build(quick)
    runs, steps, first = [], [], []
    for cap in CAPS:
        m = dataclasses.replace(case.method, max_rf_dt=cap).resolve_kernel(
            dtype=jnp.float32, traced=False, dynamics=False, n_devices=1, backend="cpu")
        dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, max_rf_dt=cap, windows=m.windows,
                             motion=case.motion)
        steps.append(int(dseq.n_real_steps))
        run = engine._plan(case.twin, dseq, case.scanner, None, m, jnp.float32, False, case.motion, ())
        t0 = time.perf_counter()
        jax.block_until_ready(run.call()[0])
        first.append(time.perf_counter() - t0)
        runs.append(run)
    medians, change = alternate_runs(runs, calls)
    return {
        "benchmark": "held_rf",
        "scenario": name,
        "quick": quick,
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "precision": "float32",
        "n_spins": int(case.twin.n_spins),
        "calls": calls,
        "max_rf_dt_s": [c for c in CAPS],
        "n_steps": steps,
        "first_call_s": [round(x, 3) for x in first],
        "run_s": [round(x, 6) for x in medians],
        "time_vs_one_step": [round(x / medians[0], 3) for x in medians],
        "max_signal_change_vs_default": float(f"{change:.3g}"),
    }


def gradient(name: str, quick: bool, calls: int, dtype, wrt: str = "t2") -> dict:
    case = SCENARIOS[name].build(quick)
    tw = case.twin
    if wrt == "flips" and name != "mrf-train":
        raise SystemExit("--wrt flips: only the mrf-train scenario")
    first, runs = [], []
    for cap in (None, CAPS[-1]):
        method = dataclasses.replace(case.method, max_rf_dt=cap)

        def loss(x, method=method):
            if wrt == "flips":
                twin, seq = tw, mrf_train(x.shape[0], flips=x)[0]
            else:
                twin, seq = dataclasses.replace(tw, t2=x), case.seq
            sig = mt.simulate(twin, seq, scanner=case.scanner, method=method, dtype=dtype)
            return jnp.sum(jnp.abs(sig.samples) ** 2)

        f = jax.jit(jax.value_and_grad(loss))
        t2 = jnp.asarray(mrf_train(1000)[1] if wrt == "flips" else tw.t2, dtype)
        t0 = time.perf_counter()
        jax.block_until_ready(f(t2))
        first.append(time.perf_counter() - t0)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            jax.block_until_ready(f(t2))
            times.append(time.perf_counter() - t0)
        runs.append(float(np.median(times)))
    return {"benchmark": "held_rf_gradient", "scenario": name, "wrt": wrt, "quick": quick, "device": jax.devices()[0].device_kind,
            "precision": jnp.dtype(dtype).name, "n_spins": int(tw.n_spins), "calls": calls,
            "max_rf_dt_s": [None, CAPS[-1]], "first_call_s": [round(x, 3) for x in first],
            "run_s": [round(x, 6) for x in runs], "time_vs_one_step": [1.0, round(runs[1] / runs[0], 3)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", nargs="*", default=["gre-64", "gre-128", "mrf-train"], choices=sorted(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="the scenarios' quick sizes")
    p.add_argument("--calls", type=int, default=11)
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--gradient", action="store_true", help="time gradients w.r.t. T2 instead of forward runs")
    p.add_argument("--wrt", choices=("t2", "flips"), default="t2", help="differentiate w.r.t. the T2 map or the "
                   "flip angles (mrf-train)")
    p.add_argument("--x64", action="store_true", help="gradients in float64")
    a = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # (float64 for the accuracy part; the runs ask float32)
    if not a.no_accuracy:
        print(json.dumps(accuracy()), flush=True)
    for name in a.scenario:
        if a.gradient:
            print(json.dumps(gradient(name, a.quick, a.calls, jnp.float64 if a.x64 else jnp.float32, a.wrt)),
                  flush=True)
        else:
            print(json.dumps(scenario(name, a.quick, a.calls)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
