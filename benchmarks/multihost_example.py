"""Multi-host simulation with `jax.distributed`: each process simulates a disjoint slice of spins.

Spins are independent and the received signal is a sum over spins, so a multi-host run
needs no special engine support:

1. every process calls `jax.distributed.initialize()` (on SLURM, Open MPI, Kubernetes
   or Cloud TPU the arguments are detected; elsewhere pass them, see below);
2. every process builds the same twin and sequence (or loads its slice from disk) and
   keeps the spins ``[i * n / P, (i + 1) * n / P)`` of process ``i`` of ``P``;
3. each process runs `mritwin.simulate` on its slice; ``Bloch(shard="auto")`` (the
   default) spreads that slice over the process's own devices (``jax.local_devices()``;
   on CPU devices at least 8 192 spins each);
4. the partial signals (same shape on every process) are gathered with
   `jax.experimental.multihost_utils.process_allgather` and summed.

The result equals a single-process run up to float rounding (the sum is re-associated).
Gradients work the same way: each process differentiates its own partial loss (for a loss
that is linear in the signal) or the gathered sum.

Usage (single process, no coordinator; this is also what the docs' smoke check runs):
    python benchmarks/multihost_example.py [--matrix 64] [--check]

Two processes on one machine (CPU; for a real cluster use one process per host):
    python benchmarks/multihost_example.py --coordinator localhost:9876 --num-processes 2 --process-id 0 &
    python benchmarks/multihost_example.py --coordinator localhost:9876 --num-processes 2 --process-id 1

On a SLURM cluster (arguments auto-detected):
    srun --nodes=4 --ntasks-per-node=1 python benchmarks/multihost_example.py --auto

Process 0 prints one JSON object: process count, spins per process, run time and, with
``--check``, the relative difference to a single-process simulation of the whole twin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre  # noqa: E402

#: Twin fields with one value per spin (sliced along axis 0); coil maps are (n_coils, n_spins)
_PER_SPIN = ("position", "pd", "t1", "t2", "t2_prime", "delta_f", "diffusion", "b1", "label")


def spin_slice(twin: mt.Twin, start: int, stop: int) -> mt.Twin:
    """The spins ``[start, stop)`` of ``twin`` (every per-spin field, coil maps included)."""
    kw = {f: getattr(twin, f)[start:stop] for f in _PER_SPIN if getattr(twin, f) is not None}
    if twin.coil_sensitivity is not None:
        kw["coil_sensitivity"] = twin.coil_sensitivity[:, start:stop]
    return twin.replace(**kw)


def process_bounds(n_spins: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Contiguous, nearly equal spin ranges: process ``i`` gets ``[start, stop)``."""
    edges = np.linspace(0, n_spins, process_count + 1).round().astype(int)
    return int(edges[process_index]), int(edges[process_index + 1])


def simulate_multihost(twin: mt.Twin, seq, **kwargs) -> np.ndarray:
    """Simulate this process's share of ``twin`` and return the summed signal of all processes.

    Args:
        twin: the whole twin (identical on every process).
        seq: the sequence (identical on every process).
        **kwargs: passed to `mritwin.simulate` (method, dtype, scanner, ...).

    Returns:
        (n_coils, n_adc_samples) complex NumPy array, the same on every process.
    """
    from jax.experimental import multihost_utils

    start, stop = process_bounds(twin.n_spins, jax.process_index(), jax.process_count())
    part = mt.simulate(spin_slice(twin, start, stop), seq, **kwargs).samples
    if jax.process_count() == 1:
        return np.asarray(part)
    gathered = multihost_utils.process_allgather(part)  # (n_processes, n_coils, n_adc)
    return np.asarray(gathered).sum(axis=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matrix", type=int, default=64, help="n for the n x n GRE and grid twin")
    p.add_argument("--coordinator", help="host:port of process 0 (omit for a single process)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--auto", action="store_true", help="jax.distributed.initialize() with cluster auto-detection")
    p.add_argument("--check", action="store_true", help="compare with a single-process run of the whole twin")
    a = p.parse_args(argv)
    if a.coordinator:
        jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                                   process_id=a.process_id)
    elif a.auto:
        jax.distributed.initialize()
    n, fov = a.matrix, 0.22
    rng = np.random.default_rng(0)  # the same twin on every process
    m = n * n
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    twin = mt.Twin(position=np.c_[x.ravel(), y.ravel(), np.zeros(m)], pd=rng.uniform(0.5, 1.0, m),
                   t1=rng.uniform(0.3, 2.0, m), t2=rng.uniform(0.03, 0.2, m), delta_f=rng.normal(0.0, 20.0, m))
    seq = cartesian_gre(n, fov, tr=12e-3, te=5e-3, dwell=10e-6)
    simulate_multihost(twin, seq)  # compile
    t0 = time.perf_counter()
    sig = simulate_multihost(twin, seq)
    run_s = time.perf_counter() - t0
    out = {"process_count": jax.process_count(), "local_devices": len(jax.local_devices()),
           "n_spins": twin.n_spins, "spins_this_process": int(np.diff(process_bounds(
               twin.n_spins, jax.process_index(), jax.process_count()))[0]),
           "n_samples": int(sig.shape[-1]), "run_s": round(run_s, 4)}
    if a.check:
        whole = np.asarray(mt.simulate(twin, seq).samples)
        out["max_rel_diff_vs_single_process"] = float(np.abs(sig - whole).max() / np.abs(whole).max())
    if jax.process_index() == 0:
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
