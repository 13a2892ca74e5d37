"""Benchmark: gradients through held RF steps (block pulses), premapped maps vs in-loop powers.

Two scenarios, as in notebooks 04 and 05 (float64, the brain phantom's tissues):

- ``flip``: the flip-angle gradient of a protocol of ``2 x --n-rd`` block pulses of 100 us
  (dummy TRs, then sampled TRs), the flip traced (a traced held-step table);
- ``twin``: the gradient with respect to T1, T2, PD and B1 maps of a fit sequence of 11
  block pulses (a spin echo train, inversion pairs, two single pulses; concrete sequence).

For each scenario three engine settings, compiled and called in the same process:
``before`` (in-loop powers and the periodic layout whatever its copies of the held step:
``HELD_PREMAP_ROWS = 0``, ``HELD_LAYOUT_COPIES`` unbounded, the engine before 2026-12-07),
``copies_rule`` (in-loop powers, a layout with more than 2 copies of a traced held step
dropped) and ``premapped`` (the default: the maps of at most 16 rows computed once per
chunk). Prints one JSON line per (scenario, setting): XLA compile time, the median of
``--calls`` calls, ratios against ``before``, and the largest difference of the gradient
from ``before``'s relative to its largest entry.

Usage:  python benchmarks/bench_held_gradient.py [--scenarios flip twin] [--n-rd 8] [--calls 7]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
import mritwin.optimize as mo  # noqa: E402
from mritwin.benchmarking import compile_and_time  # noqa: E402

jax.config.update("jax_enable_x64", True)
engine = importlib.import_module("mritwin.simulate.engine")
SC = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
SETTINGS = {"before": (0, 10**9), "copies_rule": (0, 2), "premapped": (16, 2)}


def _tissues(matrix: int) -> mt.Twin:
    brain = mt.phantoms.brain(matrix=matrix, t2_prime=False)
    names = brain.label_names
    keep = [names.index(n) for n in ("gray_matter", "white_matter", "csf", "ms_lesion") if n in names]
    return brain[np.isin(np.asarray(brain.label), keep)]


def _hard(flip):
    return mt.make_block_pulse(flip, 100e-6, delay=0.0, scanner=SC)


def flip_case(n_rd: int):
    """Notebook 04's protocol: the flip gradient of a lesion/white-matter contrast."""
    twin = _tissues(48)
    method = mt.Bloch(ideal_spoiling=True)

    def score(flip, te=0.04, tr=0.046):
        blocks = []
        for acq in (False, True):
            for _ in range(n_rd):
                blocks.append(mt.Block(rf=_hard(flip)))
                adc = mt.ADC(2, 20e-6, delay=te - 50e-6 - 20e-6) if acq else None
                blocks.append(mt.Block(adc=adc, duration=tr - 100e-6))
            blocks.append(mt.Block(duration=0.3))
        s = mo.region_signals(twin, mt.Sequence(blocks), ["ms_lesion", "white_matter"], method=method, scanner=SC,
                              dtype=jnp.float64)
        m = jnp.abs(s).reshape(2, n_rd, 2).mean(axis=2).mean(axis=1)
        return jnp.abs(m[0] - m[1])

    return jax.grad(score), jnp.asarray(0.3), twin.n_spins


def calibration_sequence() -> mt.Sequence:
    """Notebook 05's sequence: FIDs at four echo times, saturation recoveries at four
    delays, and two flip angles after a long wait (40 ADC samples)."""
    blocks = [mt.Block(rf=_hard(np.pi / 2))]
    t = 50e-6
    for te in (0.02, 0.05, 0.1, 0.2):
        blocks.append(mt.Block(adc=mt.ADC(4, 1e-4, delay=te - t - 2e-4), duration=te - t + 2e-4))
        t = te + 2e-4
    blocks.append(mt.Block(duration=0.01))
    for tau in (0.15, 0.4, 0.8, 1.6):
        blocks += [mt.Block(rf=_hard(np.pi / 2)), mt.Block(duration=tau), mt.Block(rf=_hard(np.pi / 2)),
                   mt.Block(adc=mt.ADC(4, 1e-4, delay=5e-3), duration=0.01)]
    for a in (np.pi / 3, 2 * np.pi / 3):
        blocks += [mt.Block(duration=15.0), mt.Block(rf=_hard(a)),
                   mt.Block(adc=mt.ADC(4, 1e-4, delay=2e-3 - 50e-6 - 2e-4), duration=5e-3)]
    return mt.Sequence(blocks)


def twin_case():
    """Notebook 05's fit: the gradient of a signal misfit with respect to the twin's maps."""
    twin = _tissues(24)
    seq = calibration_sequence()
    n = twin.n_spins
    sim = dict(coils=np.eye(n, dtype=complex), method=mt.Bloch(ideal_spoiling=True), scanner=SC, dtype=jnp.float64)
    target = np.asarray(mt.simulate(twin, seq, **sim).samples)
    fields = ("t1", "t2", "pd", "b1")

    def loss(p):
        tw = twin.replace(**{k: jnp.exp(p[k]) for k in fields})
        return mo.signal_mse(mt.simulate(tw, seq, **sim), target)

    start = {"t1": np.log(1.0), "t2": np.log(0.1), "pd": 0.0, "b1": 0.0}
    return jax.grad(loss), {k: jnp.full(n, start[k]) for k in fields}, n


def run(name: str, grad_fn, x, n_spins: int, calls: int) -> None:
    rows, ref = {}, None
    for setting, (rows_limit, copies) in SETTINGS.items():
        engine.HELD_PREMAP_ROWS, engine.HELD_LAYOUT_COPIES = rows_limit, copies
        times, flat = compile_and_time(grad_fn, x, calls)
        ref = flat if ref is None else ref
        rows[setting] = {**times, "grad_rel_diff_vs_before": float(np.max(np.abs(flat - ref)) / np.max(np.abs(ref)))}
    base = rows["before"]
    for setting, r in rows.items():
        print(json.dumps({"benchmark": "held_gradient", "scenario": name, "setting": setting,
                          "device": jax.devices()[0].device_kind, "precision": "float64", "n_spins": n_spins, **r,
                          "compile_ratio_vs_before": round(r["compile_s"] / base["compile_s"], 3),
                          "run_ratio_vs_before": round(r["run_s"] / base["run_s"], 3)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=["flip", "twin"], choices=["flip", "twin"])
    ap.add_argument("--n-rd", type=int, default=8, help="dummy (and sampled) TRs of the flip scenario")
    ap.add_argument("--calls", type=int, default=7)
    args = ap.parse_args()
    for name in args.scenarios:
        case = flip_case(args.n_rd) if name == "flip" else twin_case()
        run(name, *case, args.calls)


if __name__ == "__main__":
    main()
