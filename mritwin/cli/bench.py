"""`mritwin bench`: the benchmark suite, one JSON object per scenario on stdout.

Scenarios are defined in `mritwin.bench_scenarios` and timed by
`mritwin.benchmarking.run_scenario` (see ``docs/benchmarks.md``). Progress goes to
stderr, so ``mritwin bench > results.jsonl`` keeps only the records.
"""

from __future__ import annotations

import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(sub):
    p = sub.add_parser(
        "bench", help="run the benchmark suite (JSON out)",
        description="Time the benchmark scenarios (published KomaMRI/JEMRIS/MRiLab cases, 2D GRE, 3D brain, "
                    "MRF train, 10M-spin scale) and print one JSON object per scenario per line.")
    p.add_argument("--quick", action="store_true",
                   help="small version of every scenario (about a minute on 2 CPU cores)")
    p.add_argument("--scenario", nargs="+", metavar="NAME", action="extend", default=None,
                   help="run only these scenarios (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--no-numpy", action="store_true", help="skip the plain-NumPy reference")
    p.add_argument("--nufft", type=float, default=None, metavar="TOL",
                   help="use the NUFFT readout (mritwin.NUFFTReadout) at this tolerance")
    p.add_argument("--rf-interp", type=float, default=None, metavar="TOL",
                   help="interpolate RF pulses in the spins' offsets at this tolerance (Bloch(rf_interpolation=TOL)): "
                        "an approximation, much faster for twins with a field map")
    p.add_argument("--kernel", choices=("auto", "xla", "pallas"), default="auto",
                   help="auto (default): what simulate's default Bloch() runs, the fused Pallas kernel on one GPU "
                        "where it covers the scenario, else the XLA engine; xla: the engine's XLA programs; "
                        "pallas: the fused kernel (on a CPU it runs in Pallas's interpreter, for checking only)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per scenario after the compiling one (default 2 quick, 3 full)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="simulation precision (float64 enables JAX x64)")
    return p


def run(args) -> int:
    from ..bench_scenarios import SCENARIOS, scenario_names
    from ..benchmarking import run_scenario
    if args.list:
        for name in scenario_names():
            s = SCENARIOS[name]
            print(f"{name:<20} {s.description}")
        return 0
    # user errors are ValueError: `mritwin.cli.main` prints them as one line, exit 2 (also under
    # `python -m mritwin.cli.main`, where its UserError class is a different object)
    names = args.scenario or scenario_names()
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}; known: {', '.join(scenario_names())}")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if args.nufft is not None and not 0 < args.nufft < 1:
        raise ValueError(f"--nufft tolerance must be in (0, 1), got {args.nufft:g}")
    if args.rf_interp is not None and not 0 < args.rf_interp < 0.1:
        raise ValueError(f"--rf-interp tolerance must be in (0, 0.1), got {args.rf_interp:g}")
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)  # the user asked for float64: an app-level switch
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        rec = run_scenario(name, quick=args.quick, repeats=repeats, dtype=args.dtype,
                           with_numpy=not args.no_numpy, nufft=args.nufft, kernel=args.kernel,
                           rf_interpolation=args.rf_interp)
        print(json.dumps(rec), flush=True)
    return 0
