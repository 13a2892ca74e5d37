"""Benchmark: reverse mode through a prepared pulse's map: loop body checkpointed or not, rotation chosen on the host or per step.

`prepared_rf.prepare_pulse` steps a repeated pulse once per chunk on the three unit
vectors and the zero state (a `lax.scan` over its raster steps). In reverse mode JAX kept
each raster step's ~30 per-spin intermediates; since 2026-12-07 the loop body is
checkpointed (`prepared_rf.CHECKPOINT_PREPARE`): each step is recomputed from the carried
columns in the backward pass. And the rotation (small-angle series or general) is chosen
on the host when every step's field is known to be small or not
(`engine._rf_rotation_mode`), not by a conditional at every raster step.

Scenarios (float64, this machine's default device):

- ``pulse``: `prepare_pulse` alone on the GRE builder's 2 ms slice-selective sinc (1 999
  raster steps), for ``--spins`` spins (random in-plane positions, slice offsets,
  off-resonance); the gradient of the map's sum of squares with respect to the spins' R2
  and the pulse's amplitude;
- ``gre``: the T2 and B1 gradient of a 16-line GRE's signal energy (the builder, concrete
  flip: its pulse prepared) for a twin of ``--gre-spins`` spins spread through the slice
  (no two see the pulse alike: prepared per spin, not on RF groups).

For each, three settings compiled and called in the same process (JAX's caches cleared
in between): ``kept`` (the intermediates kept and the rotation decided per step: the
engine before), ``checkpointed`` (the rotation still per step) and ``static_rotation``
(checkpointed, the rotation chosen on the host: the default). One JSON line per
(scenario, size, setting): trace+lower and compile times, the median
of ``--calls`` calls, ratios against ``kept``, the gradients' largest relative difference
from ``kept``'s.

Usage:  python benchmarks/bench_prepare_gradient.py [--spins 4 1000] [--gre-spins 1024] [--calls 5]
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
from mritwin.benchmarking import compile_and_time  # noqa: E402
from mritwin.sequence.discretize import discretize  # noqa: E402
from mritwin.simulate.kernels import Spins  # noqa: E402

jax.config.update("jax_enable_x64", True)
prepared_rf = importlib.import_module("mritwin.simulate.prepared_rf")
engine = importlib.import_module("mritwin.simulate.engine")
kernels = importlib.import_module("mritwin.simulate.kernels")
SC = mt.Scanner()
SETTINGS = {"kept": (False, False), "checkpointed": (True, False), "static_rotation": (True, True)}
_OWN_MODE = engine._rf_rotation_mode
STATIC = [True]  # (read while tracing)


def _mode(*args, **kw):
    """`engine._rf_rotation_mode`, or "auto" for prepared pulses when not ``STATIC[0]``."""
    return "auto" if kw.get("mixed") == "auto" and not STATIC[0] else _OWN_MODE(*args, **kw)


def _gre(matrix=16):
    return mt.sequences.gre(scanner=SC, fov=0.2, matrix=matrix, slice_thickness=5e-3, te=5e-3, tr=20e-3,
                            flip_angle=0.3)


def pulse_case(n: int):
    _, table = prepared_rf.plan_prepared_rf(discretize(_gre(), SC), 3)
    dt, k, b1dt, c0 = (jnp.asarray(a[0]) for a in (table.dt, table.k, table.b1dt, table.c0))
    rng = np.random.default_rng(0)
    spins = Spins(x=jnp.asarray(rng.uniform(-0.1, 0.1, n)), y=jnp.asarray(rng.uniform(-0.1, 0.1, n)),
                  z=jnp.asarray(rng.uniform(-3e-3, 3e-3, n)), pd=jnp.ones(n), r1=jnp.ones(n), r2=jnp.full(n, 10.0),
                  df=jnp.asarray(rng.normal(0, 10, n)), b1=jnp.ones(n), coil_re=None, coil_im=None)

    # the host's choice as the engine makes it (the field's bound over the spins' extent)
    ext = np.array([1.0, 0.1, 0.1, 3e-3, float(np.max(np.abs(np.asarray(spins.df))))])
    wz = np.abs(np.asarray(table.k[0])) @ ext[1:4] + np.abs(np.asarray(table.dt[0])) * ext[4]
    small = (np.abs(np.asarray(table.b1dt[0])) ** 2 + wz ** 2 <= kernels.SMALL_FIELD ** 2).all()

    def loss(p):
        rotation = ("small" if small else "general") if STATIC[0] else "auto"
        m = prepared_rf.prepare_pulse(spins._replace(r2=p["r2"]), dt, k, b1dt * p["amp"], c0, rotation=rotation)
        return sum(jnp.sum(x ** 2) for row in m.a for x in row) + sum(jnp.sum(x ** 2) for x in m.b)

    return jax.grad(loss), {"r2": spins.r2, "amp": jnp.asarray(1.0)}


def gre_case(n: int):
    seq = _gre()
    rng = np.random.default_rng(1)
    twin = mt.Twin(position=np.c_[rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(-3e-3, 3e-3, n)], pd=np.ones(n),
                   t1=rng.uniform(0.5, 1.5, n), t2=rng.uniform(0.03, 0.2, n), delta_f=rng.normal(0, 10, n),
                   b1=rng.uniform(0.9, 1.1, n))

    def loss(p):
        tw = twin.replace(t2=p["t2"], b1=p["b1"])
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, scanner=SC, dtype=jnp.float64).samples) ** 2)

    return jax.grad(loss), {"t2": jnp.asarray(twin.t2), "b1": jnp.asarray(twin.b1)}


def run(name: str, size: int, grad_fn, x, calls: int) -> None:
    rows, ref = {}, None
    engine._rf_rotation_mode = _mode
    for setting, (flag, static) in SETTINGS.items():
        prepared_rf.CHECKPOINT_PREPARE, STATIC[0] = flag, static
        jax.clear_caches()  # (the engine's jitted core would otherwise reuse its trace)
        times, flat = compile_and_time(grad_fn, x, calls)
        ref = flat if ref is None else ref
        rows[setting] = {**times, "grad_rel_diff_vs_kept": float(np.max(np.abs(flat - ref)) / np.max(np.abs(ref)))}
    prepared_rf.CHECKPOINT_PREPARE, STATIC[0], engine._rf_rotation_mode = True, True, _OWN_MODE
    base = rows["kept"]
    for setting, r in rows.items():
        print(json.dumps({"benchmark": "prepare_gradient", "scenario": name, "n_spins": size, "setting": setting,
                          "device": jax.devices()[0].device_kind, "precision": "float64", **r,
                          "compile_ratio_vs_kept": round(r["compile_s"] / base["compile_s"], 3),
                          "run_ratio_vs_kept": round(r["run_s"] / base["run_s"], 3)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=["pulse", "gre"], choices=["pulse", "gre"])
    ap.add_argument("--spins", nargs="+", type=int, default=[4, 1000], help="spins of the pulse scenario")
    ap.add_argument("--gre-spins", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    if "pulse" in args.scenarios:
        for n in args.spins:
            run("pulse", n, *pulse_case(n), args.calls)
    if "gre" in args.scenarios:
        run("gre", args.gre_spins, *gre_case(args.gre_spins), args.calls)


if __name__ == "__main__":
    main()
