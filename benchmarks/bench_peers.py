"""Benchmark: mritwin vs the peer simulator MRzeroCore on the same 2D spoiled GRE (CPU).

Workload (both simulators): `mritwin.benchmarking.cartesian_gre(n, 0.2)` (n x n, FOV 0.2 m,
TR 12 ms, TE 5 ms, 15 degrees, 100 us hard pulse, RF spoiling), written with
`mritwin.write_seq` to a Pulseq 1.5 file that MRzeroCore imports with
``mr0.Sequence.import_file``; an n x n grid of PD 1, T1 1 s, T2 0.1 s, no off-resonance
(mritwin: `grid_twin(n, 0.2)`, one spin per pixel; MRzeroCore: a `VoxelGridPhantom` of the
same size and FOV, T2' inf, D 0, B0 0, B1 1, one uniform coil; both put voxel i at
``(i - n/2) * fov / n``).

Records (one JSON object per line):

- mritwin ``Bloch()`` (exact ADC windows, float32) and ``Bloch(readout=NUFFTReadout(1e-4))``:
  ``run_s`` = median of ``--repeats`` calls of `mritwin.simulate` (host-side discretization
  included) with `jax.block_until_ready`; ``compile_s`` = first call minus ``run_s``.
- MRzeroCore PDG (phase distribution graph): ``graph_s`` (`compute_graph`, Rust pre-pass) and
  ``execute_s`` (`execute_graph`, torch), medians of ``--mr0-repeats``; ``run_s`` is their
  sum. ``"default"`` uses the documented defaults (``compute_graph(seq, data, 200, 1e-4)``,
  ``execute_graph(..., 1e-2, 1e-2)``), ``"precise"`` the documented "very precise"
  setting (10000, 1e-7; 1e-7, 1e-7). Both on the phantom as MRzeroCore builds it by default
  (``build()``: sinc-shaped, band-limited voxels).
- Diagnostics, up to ``--match-max-n`` (one repeat): the PDG on a phantom modelled like
  mritwin's twin (point voxels, no Nyquist cut-off of dephased states), RF/ADC phase
  signs flipped to mritwin's convention, no pruning (10000, 0; 0, 0); and, up to
  ``--iso-max-n``, MRzeroCore's plain isochromat (Bloch) simulator `isochromat_sim` with
  one spin at each voxel centre, with the phases as imported and flipped (one run each; it
  loops over events in Python).

Errors, vs mritwin's exact result (``Bloch()``): ``rel_err_vs_mritwin_exact`` =
``|| |s| - |s_ref| || / ||s_ref||`` over all samples (both codes return the sum of the
spins' transverse magnetization in units of PD, so no scaling is fitted; magnitudes drop
a global phase convention); ``rel_err_complex_vs_mritwin_exact`` the same on the complex
signal after the best global phase; ``image_rel_err_vs_mritwin_exact`` the relative L2
difference of ``|fft_recon|`` images (both list samples line by line, readout fastest).

Run (MRzeroCore needs torch; keep it out of mritwin's own environment)::

    python3 -m venv /tmp/peervenv && source /tmp/peervenv/bin/activate
    pip install torch --index-url https://download.pytorch.org/whl/cpu
    pip install MRzeroCore
    pip install -e .            # mritwin, from the repository root
    python benchmarks/bench_peers.py [--sizes 64 128] [--repeats 5] [--mr0-repeats 3]

Without torch or MRzeroCore the MRzeroCore part is skipped with one ``"skipped"`` record,
so the script also runs in mritwin's own venv.

Caveats:

- The two codes do not model the same object by default. mritwin's twin is one point spin
  per pixel: on that lattice the spoiler (4 cycles per pixel) is a no-op and the
  configuration states of earlier TRs alias back into the readout, so its exact signal is
  full of spurious echoes (a discretization artifact of the twin, simulated exactly).
  MRzeroCore's voxel-grid phantom is band-limited: states dephased beyond the Nyquist
  frequency are dropped (ideal spoiling). Most of the difference in the default records is
  this modelling difference, not a simulation error; the "matched" diagnostic record shows
  the agreement when both model point spins.
- RF phase convention: mritwin applies Pulseq's RF phase as the complex conjugate in its
  left-handed frame (see `mritwin.sequence.discretize`); MRzeroCore's importer applies it
  with the opposite sign relative to gradient precession. With RF spoiling this changes the
  physics of an individual spin (the mirror-image object); the matched record flips the
  imported RF/ADC phases to mritwin's convention.
- PDG accuracy depends on its pruning thresholds; on the point-spin phantom even 1e-7
  thresholds leave large errors, only zero thresholds match.
- Timings share the CPU between JAX and torch sequentially (torch uses all visible cores);
  MRzeroCore's Pulseq import is timed separately (``import_s``) and not part of ``run_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre, fft_recon, grid_twin, time_call  # noqa: E402

FOV = 0.2


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _emit(rec: dict) -> None:
    if "skipped" not in rec and hasattr(os, "getloadavg"):
        rec["loadavg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine skews timings
    print(json.dumps(rec), flush=True)


@contextlib.contextmanager
def _quiet():
    """Silence fd 1 (MRzeroCore's Rust pre-pass prints timings there) and warnings."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _errors(sig, ref, n) -> dict:
    sig = np.asarray(sig, np.complex128).ravel()
    ref = np.asarray(ref, np.complex128).ravel()
    nref = np.linalg.norm(ref)
    dot = np.vdot(sig, ref)
    rot = dot / abs(dot) if abs(dot) > 0 else 1.0
    img, img_ref = np.abs(fft_recon(sig, n)), np.abs(fft_recon(ref, n))
    return {
        "rel_err_vs_mritwin_exact": float(np.linalg.norm(np.abs(sig) - np.abs(ref)) / nref),
        "rel_err_complex_vs_mritwin_exact": float(np.linalg.norm(sig * rot - ref) / nref),
        "image_rel_err_vs_mritwin_exact": float(np.linalg.norm(img - img_ref) / np.linalg.norm(img_ref)),
    }


def _mrzero_skip() -> str | None:
    """Why MRzeroCore cannot run here, or None when it can."""
    try:
        import MRzeroCore  # noqa: F401
        import torch  # noqa: F401
    except Exception as e:  # ImportError, or a broken torch install
        return f"MRzeroCore/torch not importable: {type(e).__name__}: {e}"
    return None


def _set_cpu_devices(n: int | None) -> None:
    """JAX CPU devices for mritwin: one per core, as the CLI sets them up (``n`` None), or ``n``."""
    from mritwin.simulate.devices import use_cpu_devices, use_cpu_devices_by_default

    if n is None:
        use_cpu_devices_by_default()
    else:
        use_cpu_devices(n)


def _base(n: int, simulator: str, version: str, method: str, threads: int) -> dict:
    return {"scenario": f"gre-{n}", "simulator": simulator, "version": version, "method": method,
            "device": "cpu", "threads": threads, "n_spins": n * n, "n_samples": n * n}


# -- mritwin ------------------------------------------------------------------------------------

def run_mritwin(n: int, repeats: int):
    """Time both mritwin readouts; return (records, exact samples, sequence)."""
    seq, twin = cartesian_gre(n, FOV), grid_twin(n, FOV)
    methods = [("Bloch() exact windows, float32", mt.Bloch()),
               ("Bloch(readout=NUFFTReadout(1e-4)), float32", mt.Bloch(readout=mt.NUFFTReadout(1e-4)))]
    recs, ref = [], None
    for label, method in methods:
        def call(method=method):
            return np.asarray(jax.block_until_ready(mt.simulate(twin, seq, method=method).samples))[0]

        first, run, sig = time_call(call, repeats)
        if ref is None:
            ref = sig
        rec = _base(n, "mritwin", mt.__version__, label, _cores())
        rec.update(run_s=run, compile_s=max(first - run, 0.0), repeats=repeats, jax=jax.__version__,
                   jax_backend=jax.default_backend(), **_errors(sig, ref, n))
        recs.append(rec)
    return recs, ref, seq


# -- MRzeroCore ---------------------------------------------------------------------------------

def _mr0_phantom(mr0, torch, n: int, pd=None, t1=None, t2=None):
    """MRzeroCore's n x n x 1 phantom of `grid_twin` (PD 1, T1 1 s, T2 0.1 s unless given as
    (n, n, 1) tensors, e.g. ones that require gradients)."""
    shape = (n, n, 1)
    affine = torch.eye(3, 4)
    affine[0, 0] = affine[1, 1] = FOV / n * 1000  # mm per voxel; MRzero centres voxel n//2 at 0
    affine[2, 2] = 1.0
    pd = torch.ones(shape) if pd is None else pd
    t1 = torch.ones(shape) if t1 is None else t1
    t2 = torch.full(shape, 0.1) if t2 is None else t2
    return mr0.VoxelGridPhantom(PD=pd, T1=t1, T2=t2,
                                T2dash=torch.full(shape, math.inf), D=torch.zeros(shape),
                                B0=torch.zeros(shape), B1=torch.ones((1, *shape)),
                                coil_sens=torch.ones((1, *shape)), affine=affine)


def _flip_phases(seq) -> None:
    """Flip the imported RF and ADC phases to mritwin's sign convention (in place).

    The importer stores ``pulse.phase = phi_rf`` and ``adc_phase = pi/2 - phi_adc``.
    """
    for rep in seq:
        rep.pulse.phase = -rep.pulse.phase
        rep.adc_phase = math.pi - rep.adc_phase


def run_mrzero(n: int, seq_path: str, ref, repeats: int, match_max_n: int, iso_max_n: int):
    import MRzeroCore as mr0
    import torch

    threads = _cores()
    torch.set_num_threads(threads)
    version = _version("MRzeroCore")
    torch_info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    t0 = time.perf_counter()
    with _quiet():
        seq = mr0.Sequence.import_file(seq_path)
    import_s = time.perf_counter() - t0
    phantom = _mr0_phantom(mr0, torch, n)
    data = phantom.build()  # default: sinc-shaped (band-limited) voxels

    def pdg(label, seq, data, pre, main, reps):
        graph_t, exec_t, sig = [], [], None
        for _ in range(reps):
            with _quiet(), torch.no_grad():
                t0 = time.perf_counter()
                graph = mr0.compute_graph(seq, data, *pre)
                t1 = time.perf_counter()
                sig = mr0.execute_graph(graph, seq, data, *main, print_progress=False)
                t2 = time.perf_counter()
            graph_t.append(t1 - t0)
            exec_t.append(t2 - t1)
        g, e = statistics.median(graph_t), statistics.median(exec_t)
        rec = _base(n, "MRzeroCore", version, label, torch.get_num_threads())
        rec.update(run_s=g + e, graph_s=g, execute_s=e, first_run_s=graph_t[0] + exec_t[0], import_s=import_s,
                   repeats=reps, **torch_info,
                   **_errors(sig.numpy()[:, 0], ref, n))
        return rec

    settings = [("default", (200, 1e-4), (1e-2, 1e-2)), ("precise", (10000, 1e-7), (1e-7, 1e-7))]
    for name, pre, main in settings:
        label = (f"PDG {name}: compute_graph(max_state_count={pre[0]}, min_state_mag={pre[1]:g}), "
                 f"execute_graph(min_emitted={main[0]:g}, min_latent={main[1]:g}); sinc voxels")
        yield pdg(label, seq, data, pre, main, repeats)

    # diagnostics: the same object as mritwin's twin (point spins, nothing cut off)
    point = phantom.build(voxel_shape="point")
    point.nyquist = torch.full((3,), math.inf)  # no cut-off of states dephased beyond Nyquist
    with _quiet():
        flipped = mr0.Sequence.import_file(seq_path)  # Sequence.clone() fails on imported files
    _flip_phases(flipped)
    if n <= match_max_n:
        label = ("PDG matched diagnostic: point voxels, no Nyquist cut-off, RF/ADC phases flipped to "
                 "mritwin's convention, compute_graph(10000, 0), execute_graph(0, 0)")
        yield pdg(label, flipped, point, (10000, 0.0), (0.0, 0.0), 1)
    if n <= iso_max_n:
        # One spin per voxel: with nyquist = inf the intra-voxel offset is 0, i.e. the voxel centre
        # (spin_dist="r2" returns its positions transposed in 1.2.0, so use "rand").
        for phases, iso_seq in (("as imported", seq), ("flipped to mritwin's convention", flipped)):
            t0 = time.perf_counter()
            with _quiet(), torch.no_grad():
                sig = mr0.isochromat_sim(iso_seq, point, 1, print_progress=False, spin_dist="rand")
            run = time.perf_counter() - t0
            rec = _base(n, "MRzeroCore", version, f"isochromat_sim, 1 spin per voxel centre, phases {phases}",
                        torch.get_num_threads())
            rec.update(run_s=run, repeats=1, **torch_info, **_errors(sig.numpy()[:, 0], ref, n))
            yield rec

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--repeats", type=int, default=5, help="mritwin repeats (median)")
    p.add_argument("--mr0-repeats", type=int, default=3, help="MRzeroCore PDG repeats (median)")
    p.add_argument("--match-max-n", type=int, default=64, help="largest n for the matched PDG diagnostic")
    p.add_argument("--iso-max-n", type=int, default=64, help="largest n for MRzeroCore's isochromat_sim")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    skip = _mrzero_skip()
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            recs, ref, seq = run_mritwin(n, a.repeats)
            for rec in recs:
                rec["platform"] = platform.processor() or platform.machine()
                _emit(rec)
            if skip is not None:
                continue
            path = os.path.join(tmp, f"gre{n}.seq")
            mt.write_seq(seq, path)
            for rec in run_mrzero(n, path, ref, a.mr0_repeats, a.match_max_n, a.iso_max_n):
                rec["platform"] = platform.processor() or platform.machine()
                _emit(rec)
    if skip is not None:
        _emit({"simulator": "MRzeroCore", "skipped": skip})
    return 0


if __name__ == "__main__":
    sys.exit(main())
