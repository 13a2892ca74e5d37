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
import platform
import resource
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.simulate import trace_count  # noqa: E402
from tests.seqkit import cartesian_gre, grid_twin  # noqa: E402


def numpy_reference(twin: mt.Twin, dseq) -> np.ndarray:
    """Plain-NumPy Bloch simulation of a stepped DiscreteSequence (float32, complex64)."""
    pos = np.asarray(twin.position, np.float32)
    x, y, z = pos[:, 0].copy(), pos[:, 1].copy(), pos[:, 2].copy()
    pd = np.asarray(twin.pd, np.float32)
    r1 = (1.0 / np.asarray(twin.t1, np.float32)).astype(np.float32)
    r2 = (1.0 / np.asarray(twin.t2, np.float32)).astype(np.float32)
    df = np.zeros_like(pd) if twin.delta_f is None else np.asarray(twin.delta_f, np.float32)
    mxy = np.zeros(pd.size, np.complex64)
    mz = pd.copy()
    n = dseq.n_real_steps
    dt = np.asarray(dseq.dt)[:n]
    k = np.asarray(dseq.kstep)[:n]
    b1 = np.asarray(dseq.b1dt)[:n]
    kind = np.asarray(dseq.kind)[:n]
    sample = np.asarray(dseq.sample)[:n]
    out = np.zeros(n, np.complex64)
    cache: dict = {}
    tmp = np.empty_like(mz)
    two_pi = np.float32(2 * np.pi)
    for i in range(n):
        if kind[i] == 1:  # free precession: factor cached per distinct interval
            key = (dt[i], k[i, 0], k[i, 1], k[i, 2])
            f = cache.get(key)
            if f is None:
                cyc = k[i, 0] * x + k[i, 1] * y + k[i, 2] * z + df * np.float32(dt[i])
                e2 = np.exp(-r2 * np.float32(dt[i]))
                zf = (e2 * np.exp(-1j * two_pi * cyc)).astype(np.complex64)
                e1 = np.exp(-r1 * np.float32(dt[i]))
                f = (zf, e1, pd * (1 - e1))
                if len(cache) < 64:
                    cache[key] = f
            mxy *= f[0]
            mz *= f[1]
            mz += f[2]
        else:  # RF step: relax dt/2, rotate (Rodrigues), relax dt/2
            h = np.float32(dt[i] / 2)
            e2 = np.exp(-r2 * h)
            e1 = np.exp(-r1 * h)
            mxy *= e2
            mz *= e1
            mz += pd * (1 - e1)
            wx, wy = np.float32(b1[i].real), np.float32(b1[i].imag)
            wz = k[i, 0] * x + k[i, 1] * y + k[i, 2] * z + df * np.float32(dt[i])
            nrm = np.sqrt(wx * wx + wy * wy + wz * wz)
            th = two_pi * nrm
            nrm[nrm == 0] = 1
            ux, uy, uz = wx / nrm, wy / nrm, wz / nrm
            c, s = np.cos(th), np.sin(th)
            mx, my = mxy.real.copy(), mxy.imag.copy()
            udm = (ux * mx + uy * my + uz * mz) * (1 - c)
            nx = mx * c - (uy * mz - uz * my) * s + ux * udm
            ny = my * c - (uz * mx - ux * mz) * s + uy * udm
            np.multiply(mz, c, out=tmp)
            tmp -= (ux * my - uy * mx) * s
            tmp += uz * udm
            mz[:] = tmp
            mxy = (nx + 1j * ny).astype(np.complex64)
            mxy *= e2
            mz *= e1
            mz += pd * (1 - e1)
        if sample[i]:
            out[i] = mxy.sum()
    idx = np.asarray(dseq.out_index)
    return out[idx] * np.asarray(dseq.demod)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(n: int, repeats: int, with_numpy: bool) -> dict:
    fov = 0.22
    seq = cartesian_gre(n, fov, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=10e-6)
    twin = grid_twin(n, fov, t1=1.0, t2=0.08)
    stepped = mt.discretize(seq, mt.Scanner(), windows=False)
    n_steps = stepped.n_real_steps
    spin_steps = twin.n_spins * n_steps

    t0 = time.perf_counter()
    sig = mt.simulate(twin, seq)
    sig.samples.block_until_ready()
    first = time.perf_counter() - t0
    traces = trace_count()
    times = []
    for r in range(repeats):
        tw = twin.replace(t1=twin.t1 * (1.0 + 0.01 * (r + 1)))  # new values: must not recompile
        t0 = time.perf_counter()
        mt.simulate(tw, seq).samples.block_until_ready()
        times.append(time.perf_counter() - t0)
    run_s = statistics.median(times)
    result = {
        "scenario": f"gre2d_{n}x{n}",
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "precision": "float32",
        "n_spins": twin.n_spins,
        "n_steps": n_steps,
        "n_engine_steps": mt.discretize(seq, mt.Scanner()).n_real_steps,
        "compile_s": round(first - run_s, 3),
        "run_s": round(run_s, 4),
        "run_s_all": [round(t, 4) for t in times],
        "spin_steps_per_s": spin_steps / run_s,
        "recompiled_on_new_values": trace_count() != traces,
        "peak_rss_mb_after_mritwin": round(rss_mb(), 1),
    }
    if with_numpy:
        nt = []
        for _ in range(max(1, min(repeats, 2))):
            t0 = time.perf_counter()
            ref = numpy_reference(twin, stepped)
            nt.append(time.perf_counter() - t0)
        np_s = statistics.median(nt)
        ours = np.asarray(sig.samples[0])
        result.update({
            "numpy_run_s": round(np_s, 4),
            "numpy_spin_steps_per_s": spin_steps / np_s,
            "speedup_vs_numpy": round(np_s / run_s, 2),
            "max_rel_diff_vs_numpy": float(np.abs(ours - ref).max() / np.abs(ref).max()),
            "peak_rss_mb_after_numpy": round(rss_mb(), 1),
        })
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-numpy", action="store_true")
    a = p.parse_args(argv)
    for n in a.sizes:
        print(json.dumps(run(n, a.repeats, not a.no_numpy)), flush=True)
    return 0


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", False)
    sys.exit(main())
