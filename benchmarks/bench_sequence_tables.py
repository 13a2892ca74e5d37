"""Benchmark: the host time of a new sequence's tables (`timeline.gradient_table`, which
`discretize` and `Sequence.kspace` each build once per `simulate` of a new sequence), with
the gradient events' `waveform` calling their breakpoints through the class (``now``)
against through a bound method (``before``: an equinox Module's bound method is a wrapper
object made at each access, ~25 us), in the same process, taking turns.

Sequences: `mritwin.sequences.gre` at n x n (n = 64, 128, 256: 3n + 2 gradient events).
Also ``simulate_new_sequence_s``: `mritwin.simulate` of a new n x n GRE object (TR changed
by 1 ms each call: new tables and plans, the compiled core reused) on an n x n grid twin,
float32, now only. One JSON line per size: medians over ``--repeats``.

Usage:  python benchmarks/bench_sequence_tables.py [--sizes 64 128 256] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402
from mritwin.sequence import events  # noqa: E402
from mritwin.sequence.timeline import gradient_table  # noqa: E402

NOW = events.TrapGrad.waveform


def _bound_waveform(self):
    t, v = self.breakpoints()
    return t, self.amplitude * v


def _gre(n, tr=None):
    return mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=n, tr=tr, flip_angle_deg=15.0,
                            slice_thickness=5e-3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    for n in args.sizes:
        seq = _gre(n)
        times = {"before": [], "now": []}
        for _ in range(args.repeats):
            for k, fn in (("before", _bound_waveform), ("now", NOW)):
                events.TrapGrad.waveform = fn
                t0 = time.perf_counter()
                gradient_table(seq)
                times[k].append(time.perf_counter() - t0)
        events.TrapGrad.waveform = NOW
        tw = grid_twin(n, 0.2)
        tr0 = float(seq.definitions["TR"])
        jax.block_until_ready(mt.simulate(tw, seq).samples)  # compile
        sim = []
        for i in range(min(args.repeats, 8)):
            new = _gre(n, tr0 + 1e-3 * (i + 1))
            t0 = time.perf_counter()
            jax.block_until_ready(mt.simulate(tw, new).samples)
            sim.append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"benchmark": "sequence_tables", "matrix": n, "device": jax.devices()[0].device_kind,
                          "n_blocks": seq.n_blocks, "repeats": args.repeats,
                          "gradient_table_before_s": round(med["before"], 5), "gradient_table_now_s": round(med["now"], 5),
                          "now_vs_before": round(med["now"] / med["before"], 3),
                          "simulate_new_sequence_s": round(statistics.median(sim), 4)}), flush=True)


if __name__ == "__main__":
    main()
