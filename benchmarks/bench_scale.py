"""Benchmark: spin-count scaling on the CPU (issue 8: 10M spins on a 24 GB machine).

For each size, a fresh Python process (so ``peak_host_mb`` = ru_maxrss is that size's own
peak) builds ``n`` spins on a 3D grid and simulates the 32 x 32 issue-2 GRE (hard pulse,
TR 12 ms, ADC windows: 128 engine steps) with `mritwin.benchmarking.run_case`. The
compile time should not depend on n_spins: spins are simulated in fixed-size chunks
(65 536 on the CPU) under one ``lax.map``, so only the chunk count changes.

Before each size the script compares an estimate of its memory (500 MB plus the bytes per
spin above the import baseline measured on the previous size, +20 %; 1 kB/spin before
the first) with MemAvailable and skips sizes that would not
fit in half of it (other jobs share the machine).

The 2D GRE does not encode z, so with the default `Bloch()` sequence groups (issue 7) fold
the grid's z columns into one spin each (10M spins: 46k groups) and the host's grouping
dominates; ``--ungrouped`` (``Bloch(group_spins=False)``) simulates every spin.

Usage:  python benchmarks/bench_scale.py [--sizes 1000000 3000000 10000000] [--repeats 2] [--ungrouped]
        python benchmarks/bench_scale.py --one 50000000 --ungrouped   (one size, in this process)
Prints one JSON object per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


_BASELINE_MB = None  # RSS after imports, before the twin is built (set in _one)


def _one(n: int, repeats: int, ungrouped: bool = False) -> dict:
    global _BASELINE_MB
    import resource

    import jax

    jax.config.update("jax_enable_x64", False)
    from mritwin.bench_scenarios import _scale
    from mritwin.benchmarking import run_case

    _BASELINE_MB = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    case = _scale(False, n)
    if ungrouped:  # every spin simulated (the GRE leaves z unencoded: sequence groups fold it)
        import dataclasses

        case = dataclasses.replace(case, method=dataclasses.replace(case.method, group_spins=False))
    rec = run_case(f"scale-{n}" + ("-ungrouped" if ungrouped else ""), case, repeats=repeats, with_numpy=False)
    rec["bytes_per_spin_peak"] = round(rec["peak_host_mb"] * 2 ** 20 / n, 1) if rec["peak_host_mb"] else None
    rec["baseline_host_mb"] = _BASELINE_MB
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ungrouped", action="store_true",
                   help="Bloch(group_spins=False): simulate every spin (by default the 2D GRE's sequence "
                        "groups fold the unencoded z axis)")
    p.add_argument("--one", type=int, help="run this one size in this process (no memory check)")
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(_one(a.one, a.repeats, a.ungrouped)), flush=True)
        return 0
    per_spin = 1000.0  # bytes per spin above the baseline, refined from each finished size
    for n in a.sizes:
        need_mb = 500 + n * per_spin / 2 ** 20
        avail = _available_mb()
        if avail is not None and need_mb > 0.5 * avail:
            print(json.dumps({"scenario": f"scale-{n}", "skipped": f"needs ~{need_mb:.0f} MB, "
                                                                  f"{avail:.0f} MB available"}), flush=True)
            continue
        print(f"scale: {n} spins (estimated {need_mb:.0f} MB)", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, __file__, "--one", str(n), "--repeats", str(a.repeats)]
                           + (["--ungrouped"] if a.ungrouped else []),
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(json.dumps({"scenario": f"scale-{n}", "failed": r.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        if rec.get("peak_host_mb") and rec.get("baseline_host_mb"):
            per_spin = (rec["peak_host_mb"] - rec["baseline_host_mb"]) * 2 ** 20 / n * 1.2
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
