"""Benchmark: 2D Cartesian spoiled GRE, mritwin vs a careful plain-NumPy implementation.

Scenario (issue 2): n x n matrix (64, 128, 256), one spin per pixel, TR 12 ms, TE 5 ms,
15 degrees, 100 us hard pulse, RF spoiling, readout dwell 10 us. Both implementations run
the *same* discretized physics (same steps); the NumPy reference is written the way a
good NumPy user would: vectorized over spins, in-place updates, and the precession
factor of each distinct free-precession interval computed once and reused (all readout
samples share one).

Throughput is quoted as spin-steps/s with steps = the discretized time steps when every
ADC sample is a step (the NumPy reference's step count), for both codes.

Usage:  python benchmarks/bench_gre.py [--sizes 64 128 256] [--repeats 3] [--no-numpy]
Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mritwin.benchmarking import run_gre  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-numpy", action="store_true")
    a = p.parse_args(argv)
    for n in a.sizes:
        print(json.dumps(run_gre(n, a.repeats, not a.no_numpy)), flush=True)
    return 0


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", False)
    sys.exit(main())
