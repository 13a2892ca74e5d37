"""Benchmark: a translating twin on a sequence that cannot tell all its spins apart (the
1 000-TR fingerprinting train of ``mritwin bench mrf-train``: gradients on x only, one
64-sample line per TR, the built-in brain slice), where spins run once per group.

Variants, all in the same process (float32, the default engine unless stated):

- ``static``: no motion;
- ``translation``: a `mritwin.PeriodicTranslation` (4 mm / 2 mm in x / y, period 4 s);
- ``translation_per_spin``: the same with ``Bloch(group_spins=False)`` (every spin run:
  what the engine did under motion before the groups were kept under a translation).

Times are medians of ``--repeats`` calls of ``mt.simulate`` after a first (compiling)
call; ratios against ``translation_per_spin``. Prints JSON.

Usage:  python benchmarks/bench_motion_groups.py [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import build_case  # noqa: E402
from mritwin.benchmarking import time_call  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the scenario's quick twin (48 x 48)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    case = build_case("mrf-train", quick=a.quick)
    twin, seq, scanner = case.twin, case.seq, case.scanner
    motion = mt.PeriodicTranslation(amplitude=(4e-3, 2e-3, 0.0), period=4.0)
    variants = {"static": {}, "translation": {"motion": motion},
                "translation_per_spin": {"motion": motion, "method": mt.Bloch(group_spins=False)}}
    out = {"device": jax.devices()[0].device_kind, "precision": "float32", "n_spins": twin.n_spins,
           "n_tr": 1000, "variants": {}}
    for name, kw in variants.items():
        first, med, _ = time_call(lambda kw=kw: mt.simulate(twin, seq, scanner=scanner, **kw).samples, a.repeats)
        out["variants"][name] = {"first_s": round(first, 3), "run_s": round(med, 4)}
    base = out["variants"]["translation_per_spin"]["run_s"]
    for v in out["variants"].values():
        v["run_vs_per_spin"] = round(v["run_s"] / base, 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
