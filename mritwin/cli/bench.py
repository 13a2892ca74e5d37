"""`mritwin bench`: the benchmark suite, one JSON object per scenario on stdout."""

from __future__ import annotations

import json

__all__ = ["add_parser", "run"]


def add_parser(sub):
    p = sub.add_parser("bench", help="run the benchmark suite (JSON out)",
                       description="Time 2D Cartesian spoiled GRE scenarios against a plain-NumPy "
                                   "reference; one JSON object per scenario.")
    p.add_argument("--quick", action="store_true", help="64x64 and 128x128 only, 2 repeats")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference")
    return p


def run(args) -> int:
    from ..benchmarking import run_gre

    sizes, repeats = ((64, 128), 2) if args.quick else ((64, 128, 256), 3)
    for n in sizes:
        print(json.dumps(run_gre(n, repeats, not args.no_numpy)), flush=True)
    return 0
