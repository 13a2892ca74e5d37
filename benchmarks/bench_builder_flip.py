"""Benchmark: the flip-angle gradient of a builder's sequence, traced pulse prepared vs stepped.

``mt.sequences.gre(flip_angle=x)`` under `jax.grad` has a traced RF amplitude: before
2026-12-07 the engine could not prepare the excitation (its integrals were traced) and
stepped every play of the 1 ms sinc, 1 000 raster steps each, 16 per fused step. The
plays share one amplitude object and a concrete shape, so the engine now prepares the
pulse once per chunk with the traced amplitude (`engine.PREPARE_TRACED_AMPLITUDES`).

Scenario: the contrast of gray and white matter (``mo.contrast``, the brain phantom's
tissues) under the clinical GRE builder (``--matrix`` lines, TE 5 ms, TR 20 ms, ideal
spoiling), differentiated with respect to the flip angle; float64. ``--dims 3``: the 3D
GRE (``matrix x matrix x 4``) with its non-selective excitation, a 100 us block pulse in
10 us steps (prepared as the power of one held step). For each matrix both
settings are compiled and called in the same process: ``stepped``
(``PREPARE_TRACED_AMPLITUDES = False``, the engine before) and ``prepared`` (the
default). Prints one JSON line per (matrix, setting): trace+lower and XLA compile times,
the median of ``--calls`` calls, ratios against ``stepped``, and the relative difference of
value and gradient from ``stepped``'s.

Usage:  python benchmarks/bench_builder_flip.py [--matrix 8 16 32] [--dims 2] [--phantom 24] [--calls 5]
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


def _tissues(matrix: int) -> mt.Twin:
    brain = mt.phantoms.brain(matrix=matrix, t2_prime=False)
    names = brain.label_names
    keep = [names.index(n) for n in ("gray_matter", "white_matter") if n in names]
    return brain[np.isin(np.asarray(brain.label), keep)]


def case(matrix: int, twin: mt.Twin, dims: int):
    geometry = dict(matrix=matrix, slice_thickness=5e-3) if dims == 2 else dict(matrix=(matrix, matrix, 4), dims=3)

    def loss(flip):
        seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, te=5e-3, tr=20e-3, flip_angle=flip, **geometry)
        return -mo.contrast(twin, seq, "gray_matter", "white_matter", method=mt.Bloch(ideal_spoiling=True),
                            dtype=jnp.float64)

    return jax.value_and_grad(loss)


def run(matrix: int, twin: mt.Twin, calls: int, dims: int) -> None:
    x = jnp.asarray(np.radians(20.0))
    rows, ref = {}, None
    for setting, flag in (("stepped", False), ("prepared", True)):
        engine.PREPARE_TRACED_AMPLITUDES = flag
        times, out = compile_and_time(case(matrix, twin, dims), x, calls)
        ref = out if ref is None else ref
        rows[setting] = {**times, "value": float(out[0]), "grad": float(out[1]),
                         "rel_diff_vs_stepped": float(np.max(np.abs(out - ref) / np.abs(ref)))}
    engine.PREPARE_TRACED_AMPLITUDES = True
    base = rows["stepped"]
    for setting, r in rows.items():
        print(json.dumps({"benchmark": "builder_flip", "dims": dims, "matrix": matrix, "setting": setting,
                          "device": jax.devices()[0].device_kind, "precision": "float64", "n_spins": twin.n_spins,
                          **r, "compile_ratio_vs_stepped": round(r["compile_s"] / base["compile_s"], 3),
                          "run_ratio_vs_stepped": round(r["run_s"] / base["run_s"], 3)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", nargs="+", type=int, default=[8, 16, 32], help="the GRE's matrix sizes")
    ap.add_argument("--phantom", type=int, default=24, help="matrix of the brain phantom giving the tissues")
    ap.add_argument("--dims", type=int, default=2, choices=[2, 3], help="2D (sinc) or 3D (block pulse) GRE")
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    twin = _tissues(args.phantom)
    for matrix in args.matrix:
        run(matrix, twin, args.calls, args.dims)


if __name__ == "__main__":
    main()
