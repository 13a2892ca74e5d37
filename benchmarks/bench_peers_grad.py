"""Benchmark: gradients through the simulator, mritwin vs MRzeroCore (the differentiable peer), CPU.

Workload: `bench_peers.py`'s 2D spoiled GRE (`mritwin.benchmarking.cartesian_gre(n, 0.2)`,
written with `mt.write_seq` and imported by MRzeroCore) on an n x n object (PD 1, T1 1 s,
T2 0.1 s), and the task of a twin calibration or a differentiable forward model: the
loss ``L = sum over samples |s|^2`` (independent of either code's phase convention) and its
gradient with respect to the object's T1, T2 and PD maps (3 n^2 numbers).

Records (one JSON object per line):

- mritwin: ``jax.value_and_grad`` of the loss through ``mt.simulate`` (default ``Bloch()``:
  exact ADC windows, segment checkpointing in reverse mode, float32), jitted, on one JAX
  device per core (`mritwin.use_cpu_devices`, as the CLI; ``--cpu-devices 1`` for one);
  ``gradient_s`` = median of ``--repeats`` calls after the compiling one, ``forward_s`` the
  same for the loss alone, ``compile_s`` = first gradient call minus ``gradient_s``.
- MRzeroCore PDG, documented defaults (``compute_graph(seq, data, 200, 1e-4)``,
  ``execute_graph(..., 1e-2, 1e-2)``) on its default sinc-voxel phantom whose T1, T2 and PD
  tensors require gradients: ``graph_s`` (`compute_graph`, the Rust pre-pass, no
  gradient; it depends on the sequence and is usually reused while only the object
  changes), ``forward_s`` (`build` of the phantom and `execute_graph` with autograd
  recording), ``backward_s`` (``loss.backward()``); ``gradient_s`` = ``forward_s +
  backward_s`` (the graph excluded, in MRzeroCore's favour), medians of ``--mr0-repeats``.
- Diagnostic up to ``--match-max-n`` (one repeat): the PDG on point voxels without the
  Nyquist cut-off, RF/ADC phases flipped to mritwin's convention, no pruning
  (``compute_graph(10000, 0)``, ``execute_graph(0, 0)``), i.e. the object and physics of
  mritwin's twin (`bench_peers.py` found the signals equal to ~1.5e-4 this way): its
  gradient against mritwin's, ``grad_rel_err_vs_mritwin`` = ``||g - g_mritwin|| /
  ||g_mritwin||`` per map. The default PDG's gradient is that of a different object model
  (band-limited voxels) and is compared the same way only for information.

Memory: MRzeroCore's autograd keeps the phase graph's states for the backward pass. On the
24 GB VM the matched diagnostic at n = 64 and the default PDG at n = 128 were killed by the
kernel for lack of memory, hence ``--match-max-n 32`` and ``--mr0-max-n 64`` by default.

Run (MRzeroCore needs torch; keep it out of mritwin's own environment)::

    python3 -m venv /tmp/mr0-venv
    /tmp/mr0-venv/bin/pip install "torch==2.13.0+cpu" MRzeroCore==1.2.0 -e .
    /tmp/mr0-venv/bin/python benchmarks/bench_peers_grad.py --sizes 32 64

Without torch or MRzeroCore the MRzeroCore part is one ``"skipped"`` record.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_peers import (  # noqa: E402
    FOV,
    _base,
    _cores,
    _emit,
    _flip_phases,
    _mr0_phantom,
    _mrzero_skip,
    _quiet,
    _set_cpu_devices,
    _version,
)

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre, grid_twin, time_call  # noqa: E402

MAPS = ("t1", "t2", "pd")


def _rel(g, ref) -> float:
    g, ref = np.ravel(np.asarray(g, np.float64)), np.ravel(np.asarray(ref, np.float64))
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def run_mritwin(n: int, repeats: int):
    """mritwin's loss and gradient; returns (record, gradients as n x n maps in voxel order)."""
    seq, twin = cartesian_gre(n, FOV), grid_twin(n, FOV)

    def loss(p):
        sig = mt.simulate(twin.replace(t1=p["t1"], t2=p["t2"], pd=p["pd"]), seq)
        return jnp.sum(jnp.abs(sig.samples) ** 2)

    p = {k: jnp.asarray(getattr(twin, k)) for k in MAPS}
    fwd, vg = jax.jit(loss), jax.jit(jax.value_and_grad(loss))

    first, t_grad, (value, g) = time_call(lambda: vg(p), repeats)
    _, t_fwd, _ = time_call(lambda: fwd(p), repeats)
    rec = _base(n, "mritwin", mt.__version__, "jax.value_and_grad through simulate, Bloch(), float32", _cores())
    rec.update(gradient_s=t_grad, forward_s=t_fwd, compile_s=max(first - t_grad, 0.0), repeats=repeats,
               gradient_over_forward=t_grad / t_fwd, loss=float(value), jax=jax.__version__,
               jax_devices=len(jax.devices()))
    # the twin lists its spins in grid_twin's voxel order: (ix, iy) with y fastest
    return rec, {k: np.asarray(g[k], np.float64).reshape(n, n) for k in MAPS}


def _phantom(mr0, torch, n: int):
    """`bench_peers`' phantom with T1, T2 and PD leaves that require gradients."""
    shape = (n, n, 1)
    leaves = {"pd": torch.ones(shape, requires_grad=True), "t1": torch.ones(shape, requires_grad=True),
              "t2": torch.full(shape, 0.1, requires_grad=True)}
    return _mr0_phantom(mr0, torch, n, **leaves), leaves


def run_mrzero(n: int, seq_path: str, ref: dict, repeats: int, match_max_n: int):
    import MRzeroCore as mr0
    import torch

    torch.set_num_threads(_cores())
    version = _version("MRzeroCore")
    with _quiet():
        seq = mr0.Sequence.import_file(seq_path)
        flipped = mr0.Sequence.import_file(seq_path)
    _flip_phases(flipped)

    def grad_run(label, seq, build, pre, main, reps):
        graph_t, fwd_t, bwd_t = [], [], []
        for _ in range(reps):
            phantom, leaves = _phantom(mr0, torch, n)
            with _quiet():
                t0 = time.perf_counter()
                with torch.no_grad():
                    graph = mr0.compute_graph(seq, build(phantom), *pre)
                t1 = time.perf_counter()
                data = build(phantom)  # with autograd recording
                sig = mr0.execute_graph(graph, seq, data, *main, print_progress=False)
                loss = (sig.abs() ** 2).sum()
                t2 = time.perf_counter()
                loss.backward()
                t3 = time.perf_counter()
            graph_t.append(t1 - t0)
            fwd_t.append(t2 - t1)
            bwd_t.append(t3 - t2)
        g, f, b = (statistics.median(x) for x in (graph_t, fwd_t, bwd_t))
        # MRzeroCore's voxel (i, j) of the (n, n, 1) maps is mritwin's (ix, iy)
        grads = {k: leaves[k].grad.numpy()[:, :, 0] for k in MAPS}
        rec = _base(n, "MRzeroCore", version, label, torch.get_num_threads())
        rec.update(gradient_s=f + b, forward_s=f, backward_s=b, graph_s=g, repeats=reps,
                   loss=float(loss.detach()), torch=torch.__version__,
                   **{f"grad_rel_err_vs_mritwin_{k}": _rel(grads[k], ref[k]) for k in MAPS})
        return rec

    yield grad_run("PDG default: compute_graph(200, 1e-4), execute_graph(1e-2, 1e-2); sinc voxels, autograd",
                   seq, lambda ph: ph.build(), (200, 1e-4), (1e-2, 1e-2), repeats)
    if n <= match_max_n:
        def point(ph):
            data = ph.build(voxel_shape="point")
            data.nyquist = torch.full((3,), math.inf)
            return data

        yield grad_run("PDG matched diagnostic: point voxels, no Nyquist cut-off, phases flipped, "
                       "compute_graph(10000, 0), execute_graph(0, 0), autograd",
                       flipped, point, (10000, 0.0), (0.0, 0.0), 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--repeats", type=int, default=5, help="mritwin repeats (median)")
    p.add_argument("--mr0-repeats", type=int, default=3, help="MRzeroCore repeats (median)")
    p.add_argument("--match-max-n", type=int, default=32, help="largest n for the matched diagnostic")
    p.add_argument("--mr0-max-n", type=int, default=64,
                   help="largest n given to MRzeroCore (its autograd at n = 128 needed more than 24 GB)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="JAX CPU devices (default: one per core, as the CLI)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    _set_cpu_devices(a.cpu_devices)
    skip = _mrzero_skip()
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            rec, ref = run_mritwin(n, a.repeats)
            _emit(rec)
            if skip is not None or n > a.mr0_max_n:
                continue
            path = os.path.join(tmp, f"gre{n}.seq")
            mt.write_seq(cartesian_gre(n, FOV), path)
            for peer in run_mrzero(n, path, ref, a.mr0_repeats, a.match_max_n):
                peer["vs_mritwin"] = peer["gradient_s"] / rec["gradient_s"]
                _emit(peer)
    if skip is not None:
        _emit({"simulator": "MRzeroCore", "skipped": skip})
    return 0


if __name__ == "__main__":
    sys.exit(main())
