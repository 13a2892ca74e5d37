"""Benchmark: how close float32 comes to float64 on the machine it runs on (CPU or GPU).

The library's GRE with a 2 ms sinc on a 1 us raster per TR (`mt.sequences.gre`, RF
spoiling), on the suite's quick gre-sinc twin (one spin per pixel, T1 1 s) and on 16
CSF-like spins (T1 4 s, T2 2 s, 32 TRs). Each float32 run is compared with the XLA
engine's float64 result (jax_enable_x64 on), as the largest difference over the samples
relative to their peak:

- ``prepared``: the default XLA engine, which prepares the repeated pulse once as an
  affine map (`prepared_rf.prepare_pulse`, compensated summation of each raster step's
  change);
- ``stepped``: `Bloch(prepare_pulses=False)`, the pulse stepped in fused runs of raster
  steps (relaxation by ``1 - exp(-dt/T)`` from ``expm1``);
- ``auto``: what `mt.simulate` runs by default (on one GPU the fused Pallas kernel where
  it covers the case; elsewhere the same as ``prepared``).

On a GPU this checks that XLA keeps the compensation (a compiler that simplified
``(t - m) - y`` to 0 would bring ``prepared`` back towards ``stepped``). Prints one JSON
object per case and method.

Usage:  python benchmarks/bench_precision.py [--cases gre-sinc csf] [--out precision.jsonl]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import build_case  # noqa: E402
from mritwin.benchmarking import emit_record  # noqa: E402


def _cases(names):
    scanner = mt.Scanner()
    if "gre-sinc" in names:
        case = build_case("gre-sinc-256", quick=True)
        yield "gre-sinc", case.twin, case.seq, case.scanner
    if "csf" in names:
        seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=32, flip_angle_deg=15, slice_thickness=5e-3)
        rng = np.random.default_rng(0)
        n = 16
        twin = mt.Twin(position=np.c_[rng.uniform(-0.08, 0.08, (n, 2)), np.zeros(n)], pd=np.ones(n),
                       t1=np.full(n, 4.0), t2=np.full(n, 2.0))
        yield "csf", twin, seq, scanner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["gre-sinc", "csf"], choices=["gre-sinc", "csf"])
    ap.add_argument("--methods", nargs="+", default=["prepared", "stepped", "auto"],
                    choices=["prepared", "stepped", "auto"])
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    methods = {"prepared": mt.Bloch(kernel="xla"), "stepped": mt.Bloch(kernel="xla", prepare_pulses=False),
               "auto": None}
    device = jax.devices()[0].device_kind
    for name, twin, seq, scanner in _cases(args.cases):
        ref = np.asarray(mt.simulate(twin, seq, scanner=scanner, dtype=jnp.float64,
                                     method=mt.Bloch(kernel="xla")).samples)
        peak = float(np.abs(ref).max())
        for label in args.methods:
            kw = {} if methods[label] is None else {"method": methods[label]}
            got = np.asarray(mt.simulate(twin, seq, scanner=scanner, **kw).samples)
            rec = {"bench": "precision", "case": name, "method": label, "device": device,
                   "n_spins": int(twin.n_spins), "n_samples": int(ref.size),
                   "max_rel_diff_vs_float64": float(np.abs(got - ref).max() / peak)}
            emit_record(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
