"""Benchmark: build a twin from a 256³ label map with 2 isochromats per voxel.

Prints one JSON object: wall time of `twin_from_labels` (best of ``--repeat``), the
peak of Python/NumPy allocations during the build (tracemalloc; JAX buffers are not
included), the process peak RSS (resource.ru_maxrss, includes generating the label
map), spin count, thread settings and the device. Target (issue 4): <= 10 s and
<= 4 GB on 2 CPU cores.

    python benchmarks/bench_twin_build.py [--n 256] [--spins-per-voxel 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="label map size per axis")
    ap.add_argument("--spins-per-voxel", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    import mritwin as mt
    from mritwin.twin import phantoms

    t0 = time.perf_counter()
    labels, affine = phantoms.brain_labels(dims=3, matrix=args.n, fov=0.256)  # 1 mm voxels
    t_labels = time.perf_counter() - t0
    n_vox = int((labels > 0).sum())

    times, peak = [], 0
    twin = None
    for _ in range(args.repeat):
        del twin
        twin = None
        tracemalloc.start()
        t0 = time.perf_counter()
        twin = mt.twin_from_labels(labels, phantoms.BRAIN_MAPPING, affine=affine,
                                   spins_per_voxel=args.spins_per_voxel)
        jax.block_until_ready(twin.position)
        times.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    out = {
        "benchmark": "twin_from_labels",
        "label_map": [args.n] * 3,
        "labelled_voxels": n_vox,
        "spins_per_voxel": args.spins_per_voxel,
        "n_spins": twin.n_spins,
        "dtype": str(np.asarray(twin.pd).dtype),
        "time_s": min(times),
        "time_first_s": times[0],
        "times_s": times,
        "peak_traced_bytes": peak,
        "peak_rss_bytes": rss,
        "label_generation_s": t_labels,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "device": str(jax.devices()[0]),
        "python": platform.python_version(),
        "mritwin": mt.__version__,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
