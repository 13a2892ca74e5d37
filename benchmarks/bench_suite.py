"""Benchmark suite (issue 8): every scenario of `mritwin.bench_scenarios`, JSON lines out.

The same code as `mritwin bench` (`mritwin.benchmarking.run_scenario`). Each record has
device, precision, n_spins, n_steps, n_samples, compile_s, run_s (median of repeats),
spin_steps_per_s, peak_host_mb, peak_device_mb and the published anchor where one exists;
see docs/benchmarks.md.

Usage:
    python benchmarks/bench_suite.py [--quick] [--scenario NAME ...] [--repeats N]
                                     [--no-numpy] [--dtype float32|float64]
                                     [--out results.jsonl] [--markdown]
    python benchmarks/bench_suite.py --from results.jsonl --markdown   # table only, no run

``--markdown`` prints the benchmarks/RESULTS.md table (after the JSON lines, or alone
with ``--from``), so RESULTS.md is regenerated from the JSON, never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mritwin.bench_scenarios import scenario_names  # noqa: E402
from mritwin.benchmarking import emit_record, records_to_markdown, run_scenario  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small version of every scenario")
    p.add_argument("--scenario", nargs="+", default=None, metavar="NAME", help=f"any of: {', '.join(scenario_names())}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 2 quick, 3 full)")
    p.add_argument("--no-numpy", action="store_true", help="skip the plain-NumPy reference")
    p.add_argument("--nufft", type=float, default=None, metavar="TOL", help="NUFFT readout at this tolerance")
    p.add_argument("--rf-interp", type=float, default=None, metavar="TOL",
                   help="interpolated RF pulses at this tolerance (Bloch(rf_interpolation=TOL))")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--kernel", choices=("auto", "xla", "pallas"), default="auto",
                   help="auto (default): what simulate's default Bloch() runs (the fused kernel on one GPU "
                        "where it covers the scenario, else XLA); xla: the XLA engine; pallas: the fused "
                        "Pallas kernel (interpreted on a CPU: checking only)")
    p.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                   help="JAX CPU devices (default: one per core, unless JAX_NUM_CPU_DEVICES or XLA_FLAGS set "
                        "them): large twins are split over them (mritwin.use_cpu_devices)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("--markdown", action="store_true", help="print the RESULTS.md table at the end")
    p.add_argument("--from", dest="from_file", help="read JSON lines from this file instead of running")
    a = p.parse_args(argv)
    if a.from_file:
        with open(a.from_file) as f:
            records = [json.loads(line) for line in f if line.strip()]
        print(records_to_markdown(records), end="")
        return 0
    from mritwin.simulate.devices import use_cpu_devices, use_cpu_devices_by_default

    try:
        if a.cpu_devices is None:
            use_cpu_devices_by_default()
        else:
            use_cpu_devices(a.cpu_devices)
    except (ValueError, RuntimeError) as e:
        print(f"bench_suite: error: {e}", file=sys.stderr)
        return 2
    names = a.scenario or scenario_names()
    unknown = [n for n in names if n not in scenario_names()]
    if unknown:
        print(f"bench_suite: error: unknown scenario {unknown[0]!r}; known: {', '.join(scenario_names())}",
              file=sys.stderr)
        return 2
    if a.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 3)
    records = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        rec = run_scenario(name, quick=a.quick, repeats=repeats, dtype=a.dtype, with_numpy=not a.no_numpy,
                           nufft=a.nufft, kernel=a.kernel, rf_interpolation=a.rf_interp)
        records.append(rec)
        emit_record(rec, a.out)
    if a.markdown:
        print(records_to_markdown(records), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
