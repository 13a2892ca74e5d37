"""Benchmark: mritwin vs the peer simulators sycomore, cmrsim and blochsimulator on bench_peers.py's 2D spoiled GRE (CPU).

Workload (as in `bench_peers.py`): `mritwin.benchmarking.cartesian_gre(n, 0.2)` (n x n, FOV
0.2 m, TR 12 ms, TE 5 ms, 15 degrees, 100 us hard pulse, RF spoiling with matched ADC phase,
n samples at 20 us dwell on a constant readout gradient, spoiler) on `grid_twin(n, 0.2)`
(one point spin per pixel centre, PD 1, T1 1 s, T2 0.1 s, no off-resonance). sycomore and
cmrsim do not read Pulseq files, so each is given the identical event train built from
mritwin's own `Sequence` (no file in between); blochsimulator reads the sequence's Pulseq
file, as mritwin's users would give it.

Records (one JSON object per line, the keys of `bench_peers.py`):

- mritwin ``Bloch()`` (exact ADC windows, float32) and ``Bloch(readout=NUFFTReadout(1e-4))``,
  from `bench_peers.run_mritwin`: ``run_s`` = median of ``--repeats`` calls of
  `mritwin.simulate` after the compiling one, ``compile_s`` = first call minus ``run_s``.
  They are measured in the same process as the peer (each peer lives in its own venv, so
  the ``jax`` field says which JAX ran them).
- cmrsim `cmrsim.bloch.GeneralBlochOperator` (TensorFlow, float32): the sequence as
  waveforms on one time grid per TR (the union over TRs of every gradient corner, the RF
  pulse cut into ``--cmrsim-rf-steps`` intervals, every ADC sample time and the TR end;
  the hard pulse's jumps are duplicated grid points, i.e. intervals of length 0), gradients
  [mT/m] and RF [mT] sampled at the grid points (cmrsim integrates both with the trapezoidal
  rule, exact for piecewise-linear gradients and a constant B1), ``adc_events`` = 1 at the
  sample times with the ADC phase; gamma = 2 pi * `mritwin.GAMMA_BAR` in rad/(ms mT). All
  n^2 spins in one batch, TRs as repetitions run sequentially (``run_parallel=False``,
  the magnetization carried from TR to TR), as in cmrsim's "sequential call" example.
  ``run_s`` = median of ``--peer-repeats`` full simulations (reset, n calls);
  ``first_run_s`` includes cmrsim's `tf.function` tracing and XLA compilation of its
  kernels, ``compile_s`` = ``first_run_s - run_s``. TensorFlow's intra- and inter-op
  thread pools are set to the cores this process may use (2 on the benchmark VM).
  cmrsim's `_call_core` is a `tf.function(jit_compile=False)` (graph mode; its per-step
  kernels are `jit_compile=True`); we use it as shipped.
- sycomore `sycomore.epg.Discrete3D` (C++, float64, one thread): sycomore 1.3.2, the
  newest release on PyPI, has no isochromat simulator (its `sycomore.bloch` module builds
  4x4 NumPy matrices for one isochromat position at a time), so the record uses its
  discrete 3D EPG model, which represents the whole object at once: the spin at r has
  ``M+(r) = sum_k F(k) exp(i k.r)`` (sycomore's states: ``F(k)``, ``F*(-k)``, ``Z(k)`` on a
  half space of orders). The event train is mritwin's stepped discretization
  (``mt.discretize(seq, windows=False)``: per TR one RF step, one free interval to the first
  sample, one per dwell, one to the next pulse; the exact gradient moment of each): a free
  interval is ``apply_time_interval(dt, G)`` with ``G = 2 pi k / (gamma_sycomore dt)`` (the
  exact moment), an RF step is relax dt/2, ``apply_pulse(angle, phase)``, relax dt/2 (the
  same splitting as mritwin's RF step; no gradient plays during the pulse). After every ADC
  sample the signal of the point-spin lattice is projected from all states,
  ``s = sum_k F(k) L(k) + conj(F*(k)) conj(L(k))`` with the lattice sum
  ``L(k) = sum_r exp(i k.r)`` (closed-form geometric series per axis), then demodulated
  with the ADC phase. ``bin_width`` (``--sycomore-bin-width``, rad/m) must be fine: the
  orders are rounded to it at every shift, and the rounding accumulates over the n^2 dwell
  shifts. Measured magnitude errors against mritwin: sycomore's default 1 rad/m gives 0.54
  (n = 16) and 0.97 (n = 64); 1e-3 rad/m 2e-4 and 1e-3; the default here, 1e-7 rad/m,
  5e-7 (n = 64) and 1.1e-6 (n = 128) against mritwin's float64 result (``--x64``); 1e-9
  rad/m 1e-9 at n = 64, but 20 times slower. ``run_s`` = median of ``--peer-repeats``, of
  which ``apply_s`` is spent in sycomore's ``apply_time_interval``/``apply_pulse`` calls,
  ``fetch_s`` in reading its ``states`` and ``orders`` after each sample (``orders`` is a
  Python list of tuples of `Quantity`), ``readout_s`` in our NumPy projection (including
  turning those tuples into an array); ``max_states`` is the largest number of states held.
  Two records: ``"... after every sample"`` reads all states after every ADC sample
  (sycomore's API as documented: one ``states`` and one ``orders`` read per sample);
  ``"... once per ADC window"`` reads them only at a window's first sample and gets its
  later samples from the exact evolution of those states on the constant readout gradient
  (state ``F`` at order ``k`` -> ``F E2^m`` at ``k + m dk``; Z states do not contribute),
  the same shortcut as mritwin's ADC windows. sycomore still applies the window dwell by
  dwell: one ``apply_time_interval`` over the whole window, with the same moment, made the
  number of states after each pulse grow to 6 080 (instead of 128) over the 128 TRs at
  n = 128 (cause not investigated).

- blochsimulator `BlochSimulator.simulate_sequence` (C core with OpenMP, float64; the
  Hargreaves-style isochromat solver of the ``blochsimulator`` GUI package, 2.9.5): the
  sequence written by `mritwin.write_seq` in format 1.5.0 (the newest blochsimulator
  accepts; mritwin's default is 1.5.1), read by its `load_pulseq` (pypulseq 1.5.0 inside;
  ``prepare_s``, not part of ``run_s``), and a `Phantom` of the twin's n x n grid (pixel
  centres via ``affine_ijk_to_xyz_m``, the twin's T1, T2 and PD maps), one spin per voxel,
  ``spoiler_mode="gradient"`` (the gradient waveforms act on the spin positions; this file
  declares no ideal spoilers, and ``"ideal"`` gives the same signal), its default kernel
  (``"optimized"``; ``"strict_reference"`` agrees with it to 1e-13) and chunking, with
  ``num_threads`` = the cores this process may use. ``run_s`` = median of
  ``--peer-repeats`` calls after a first one (``first_run_s``; nothing is compiled on the
  first call) and includes the sequence compilation that every call repeats
  (``sequence_compile_s``, timed on its own). Its rotation sense is mritwin's, so its
  signal is compared as it is (no conjugate).

Errors, vs mritwin's exact result (``Bloch()``), as in `bench_peers.py`:
``rel_err_vs_mritwin_exact`` = ``|| |s| - |s_ref| || / ||s_ref||``,
``rel_err_complex_vs_mritwin_exact`` the same on the complex signal after the best global
phase, ``image_rel_err_vs_mritwin_exact`` on ``|fft_recon|`` images. With ``--x64``
(a diagnostic: JAX float64 enabled, do not take timings with it) each peer record also has
the three errors against mritwin's float64 exact result (``*_vs_mritwin_f64``), which
separates the peer's own error from mritwin's float32 rounding.

Phase convention: both peers are given Pulseq's RF and ADC phases as they are (sycomore:
``apply_pulse(angle, phase)`` with Pulseq's phase, demodulation ``exp(-i phi_adc)``;
cmrsim: complex RF ``B1 exp(i phi)``, ``adc_events[..., 1] = phi_adc``). Both precess
``Mx + i My`` as ``exp(+i gamma G.r t)`` (cmrsim's `phase_increment`, sycomore's order
shift), the opposite sense to mritwin's left-handed frame, whose RF enters as the complex
conjugate (see `mritwin.sequence.discretize` and ``docs/conventions.md``): each peer's
signal is then the complex conjugate of mritwin's up to a constant phase, for every spin,
RF spoiling included. The records compare ``conj(peer signal)``; magnitudes do not depend
on this.

Run (each peer in its own venv; both also need mritwin and therefore JAX)::

    # sycomore 1.3.2: PyPI has only the source archive; it needs CMake, a C++11 compiler,
    # the xsimd headers and pybind11. Without root, unpack Debian's libxsimd-dev:
    python3 -m venv /tmp/syco-venv
    /tmp/syco-venv/bin/pip install numpy pybind11 setuptools setuptools_scm wheel
    (cd /tmp && apt-get download libxsimd-dev && dpkg -x libxsimd-dev_*.deb /tmp/xsimd)
    CMAKE_PREFIX_PATH=/tmp/xsimd/usr:$(/tmp/syco-venv/bin/python -c \
        "import pybind11; print(pybind11.get_cmake_dir())") \
        /tmp/syco-venv/bin/pip install --no-build-isolation sycomore==1.3.2
    /tmp/syco-venv/bin/pip install -e .
    /tmp/syco-venv/bin/python benchmarks/bench_peers_more.py --peers sycomore

    # cmrsim 0.31 pins tensorflow 2.15.1 (numpy < 2, ml_dtypes 0.3), so mritwin runs
    # there on the last JAX that accepts those (0.4.30) with equinox 0.11.8, optax 0.2.3
    python3 -m venv /tmp/cmrsim-venv
    /tmp/cmrsim-venv/bin/pip install cmrsim==0.31 -e . "numpy<2" "ml_dtypes~=0.3.1" \
        jax==0.4.30 jaxlib==0.4.30 equinox==0.11.8 optax==0.2.3
    /tmp/cmrsim-venv/bin/python benchmarks/bench_peers_more.py --peers cmrsim

    # blochsimulator 2.9.5 (a wheel; pins pypulseq 1.5.0, pulls in PyQt5 for its GUI)
    python3 -m venv /tmp/bsim-venv
    /tmp/bsim-venv/bin/pip install blochsimulator==2.9.5 -e .
    /tmp/bsim-venv/bin/python benchmarks/bench_peers_more.py --peers blochsimulator --sizes 64 128 256

A peer that cannot be imported gives one ``{"simulator": ..., "skipped": reason}`` record,
so the script also runs in mritwin's own venv (mritwin's records only).

Caveats:

- Both peers get mritwin's event train, not a file of their own: the comparison times the
  simulation, not sequence parsing. The preparation (waveform grid, stepped
  discretization) is timed separately (``prepare_s``) and not part of ``run_s``.
- cmrsim applies a pulse interval's whole rotation and then relaxes over the interval;
  mritwin splits the relaxation around the rotation. With one interval per 100 us pulse
  that order alone differs by 5e-4; ``--cmrsim-rf-steps 10`` (10 us, the gradient raster)
  brings it below float32 accumulation (4e-5 at n = 16; at n = 64 cmrsim's float32
  accumulation over its 6 208 steps gives 2.6e-4 against mritwin's float64 result).
- cmrsim with TensorFlow's XLA auto-clustering (``TF_XLA_FLAGS="--tf_xla_auto_jit=2
  --tf_xla_cpu_global_jit"``) ran 2.3 times slower at n = 16 (0.35 s against 0.15 s), so
  the records use it as shipped.
- sycomore's EPG signal is the point lattice's signal, exactly, only because the object is a
  uniform lattice (PD 1, the same T1 and T2 everywhere; the script refuses anything else):
  EPG's cost then follows the number of states (``max_states``: 191 at n = 64, 383 at
  n = 128), not the number of spins. A heterogeneous object needs one EPG model per
  distinct tissue. The projection ``L(k)`` is ours (NumPy), computed from the states
  sycomore returns, and it dominates ``run_s``. sycomore itself runs on one thread.
- blochsimulator's signal drifts from the exact one as the sequence goes on: its interval
  compiler gives the readout axis a moment of 2 882.49345 cycles/m per TR at n = 128
  instead of the sequence's 2 882.5 (the summed trapezoid areas; mritwin's reading of the
  same file differs from its in-memory sequence by 8e-6 in the signal), an error of
  2.3e-6 per TR that dephases the spins far from the centre across TRs: at x = 9.8 cm a
  single spin's samples are off by up to 1.4 % of the peak by the 48th TR (2e-5 after the
  first; 1e-4 at x = 0). Hence its 2.4e-4, 9.4e-3 and 1.4e-2 at n = 64, 128 and 256
  against mritwin, which agrees with sycomore's float64 EPG to 1e-6 on this workload.
- Timings share the machine with whatever else runs on it; ``loadavg_1m`` is in every
  record.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_peers import FOV, _base, _cores, _emit, _errors, _version, run_mritwin  # noqa: E402

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import grid_twin  # noqa: E402

PEERS = ("sycomore", "cmrsim", "blochsimulator")
_SCANNER = dict(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)  # cartesian_gre's default scanner


def _importable(peer: str) -> str | None:
    """None when ``peer`` can be imported, else the reason."""
    try:
        if peer == "sycomore":
            import sycomore  # noqa: F401
            import sycomore.epg  # noqa: F401
        elif peer == "blochsimulator":
            import blochsimulator  # noqa: F401
            from blochsimulator.sequence.pulseq import load_pulseq  # noqa: F401  (needs pypulseq 1.5.0)
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import tensorflow as tf

            # before cmrsim's import creates tensors: the pools are fixed from then on
            tf.config.threading.set_intra_op_parallelism_threads(_cores())
            tf.config.threading.set_inter_op_parallelism_threads(_cores())
            import cmrsim.bloch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (e.g. a NumPy ABI mismatch)
        return f"{peer} not importable: {type(e).__name__}: {e}"
    return None


# -- cmrsim -------------------------------------------------------------------------------------

def tr_waveforms(seq, rf_steps: int):
    """The sequence as cmrsim's per-repetition waveforms on one time grid (one TR = one repetition).

    Returns:
        ``(grid [s], rf [T] (R, T) complex, grad [T/m] (R, T, 3), adc (R, T, 2))``; a TR
        starts at each block with an RF pulse; ``adc[..., 0]`` is 1 at sample times,
        ``adc[..., 1]`` the ADC phase [rad]. Pulseq's phases, as they are.

    Raises:
        ValueError: anything but one single-sample (hard) pulse per TR at the same time.
    """
    reps, cur = [], None
    for b, t0 in zip(seq.blocks, seq.block_starts()):
        if b.rf is not None:
            cur = {"t0": t0, "rf": [], "grad": ([], [], []), "adc": []}
            reps.append(cur)
        if cur is None:
            raise ValueError("the sequence must start with an RF block")
        rel = t0 - cur["t0"]
        if b.rf is not None:
            rf = b.rf
            if rf.n_samples != 1 or rf.freq_offset != 0 or rf.time is not None:
                raise ValueError("only hard pulses (one RF sample, no frequency offset) are supported")
            cur["rf"].append((rel + rf.delay, rel + rf.delay + rf.shape_duration,
                              complex(np.asarray(rf.signal)[0])))
        for ch, g in enumerate(b.gradients):
            if g is not None:
                tt, vv = g.waveform()
                cur["grad"][ch].append((rel + np.asarray(tt, float), np.asarray(vv, float)))
        if b.adc is not None:
            cur["adc"].append((rel + b.adc.sample_times(), float(b.adc.phase_offset)))
        cur["end"] = rel + b.duration

    def r9(x):
        return np.round(np.asarray(x, float), 9)  # 1 ns: merges equal times computed differently

    ts, te = r9(reps[0]["rf"][0][0]), r9(reps[0]["rf"][0][1])
    pts = {0.0}
    for r in reps:
        if len(r["rf"]) != 1 or r9(r["rf"][0][0]) != ts or r9(r["rf"][0][1]) != te:
            raise ValueError("every TR needs one pulse at the same time")
        pts.add(float(r9(r["end"])))
        pts.update(r9(ts + (te - ts) * np.arange(rf_steps + 1) / rf_steps).tolist())
        for segs in r["grad"]:
            for tt, _ in segs:
                pts.update(r9(tt).tolist())
        for tt, _ in r["adc"]:
            pts.update(r9(tt).tolist())
    grid = np.array(sorted(pts))
    i_s, i_e = int(np.searchsorted(grid, ts)), int(np.searchsorted(grid, te))
    grid = np.insert(grid, [i_s, i_e + 1], [ts, te])  # B1 jumps: zero-length intervals
    n_rep, n_t = len(reps), grid.size
    rf_w = np.zeros((n_rep, n_t), complex)
    grad_w = np.zeros((n_rep, n_t, 3))
    adc_w = np.zeros((n_rep, n_t, 2))
    for i, r in enumerate(reps):
        rf_w[i, i_s + 1:i_e + 2] = r["rf"][0][2]  # grid[i_s] (B1 0), grid[i_s+1..i_e+1] on, grid[i_e+2] off
        for ch, segs in enumerate(r["grad"]):
            for tt, vv in segs:
                m = (grid >= tt[0] - 1e-12) & (grid <= tt[-1] + 1e-12)
                grad_w[i, m, ch] += np.interp(grid[m], tt, vv)
        for tt, ph in r["adc"]:
            idx = np.searchsorted(grid, r9(tt))
            if not np.allclose(grid[idx], tt, atol=1e-9):
                raise ValueError("ADC sample times are not on the grid")
            adc_w[i, idx, 0] = 1.0
            adc_w[i, idx, 1] = ph
    return grid, rf_w, grad_w, adc_w


def run_cmrsim(n: int, seq, twin, ref, repeats: int, rf_steps: int):
    import tensorflow as tf
    from cmrsim.bloch import GeneralBlochOperator

    threads = _cores()
    t0 = time.perf_counter()
    grid, rf_w, grad_w, adc_w = tr_waveforms(seq, rf_steps)
    prepare_s = time.perf_counter() - t0
    gamma = 2 * np.pi * mt.GAMMA_BAR * 1e-6  # rad/(ms mT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = GeneralBlochOperator(
            name="gre", gamma=gamma,
            time_grid=grid * 1e3,  # ms; float64 here, so cmrsim's np.diff gives exact intervals
            gradient_waveforms=(grad_w * 1e3).astype(np.float32),  # mT/m
            rf_waveforms=(rf_w * 1e3).astype(np.complex64),  # mT (with gamma in rad/(ms mT))
            adc_events=adc_w.astype(np.float32), device="CPU:0")
    pos = tf.constant(np.asarray(twin.position, np.float32))
    t1 = tf.constant(np.asarray(twin.t1, np.float32) * 1e3)  # ms
    t2 = tf.constant(np.asarray(twin.t2, np.float32) * 1e3)
    m0 = tf.constant(np.asarray(twin.pd, np.float32))
    mag0 = np.zeros((twin.n_spins, 3), np.complex64)
    mag0[:, 2] = 1.0  # (Mx + iMy, Mx - iMy, Mz), normalized; M0 weights the signal

    def simulate():
        op.reset()
        m, r = tf.constant(mag0), pos
        for rep in range(op.n_repetitions):
            m, r = op(initial_position=r, magnetization=m, T1=t1, T2=t2, M0=m0,
                      repetition_index=rep, run_parallel=False)
        return np.concatenate([v.numpy() for v in op.time_signal_acc])

    times, sig = [], None
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        sig = simulate()
        times.append(time.perf_counter() - t0)
    run = statistics.median(times[1:])
    rec = _base(n, "cmrsim", _version("cmrsim"),
                f"GeneralBlochOperator, float32, waveform grid ({grid.size - 1} intervals per TR, "
                f"pulse in {rf_steps}), one batch of all spins, TRs sequential; conj(signal)",
                threads)
    rec.update(run_s=run, compile_s=max(times[0] - run, 0.0), first_run_s=times[0], prepare_s=prepare_s,
               repeats=repeats, tensorflow=tf.__version__,
               tf_threads=[tf.config.threading.get_intra_op_parallelism_threads(),
                           tf.config.threading.get_inter_op_parallelism_threads()],
               n_steps=int(rf_w.shape[0] * (grid.size - 1)), **_errors(np.conj(sig), ref, n))
    rec["_signal"] = np.conj(sig)  # popped by main
    return rec


# -- blochsimulator ------------------------------------------------------------------------------

def run_blochsimulator(n: int, seq, twin, ref, repeats: int):
    """blochsimulator's sequence mode on the Pulseq file of ``seq`` (format 1.5.0, the newest
    it reads) and a ``Phantom`` with the twin's grid, maps and positions."""
    import tempfile

    from blochsimulator import BlochSimulator
    from blochsimulator.phantom import Phantom
    from blochsimulator.sequence import SequenceCompiler
    from blochsimulator.sequence.pulseq import load_pulseq

    threads = _cores()
    pos = np.asarray(twin.position, np.float64)
    dx = FOV / n
    c = (np.arange(n) - n / 2) * dx
    # grid_twin's spins are the pixel centres in [x, y] order (x slowest): Phantom's order
    if pos.shape[0] != n * n or not np.allclose(pos[:, :2], np.stack(np.meshgrid(c, c, indexing="ij"), -1)
                                                .reshape(-1, 2)) or np.any(pos[:, 2] != 0):
        raise ValueError("run_blochsimulator needs grid_twin's n x n grid")
    affine = np.eye(4)
    affine[0, 0] = affine[1, 1] = dx
    affine[0, 3] = affine[1, 3] = c[0]
    phantom = Phantom(shape=(n, n), fov=(FOV, FOV), affine_ijk_to_xyz_m=affine,
                      t1_map=np.asarray(twin.t1, np.float64).reshape(n, n),
                      t2_map=np.asarray(twin.t2, np.float64).reshape(n, n),
                      pd_map=np.asarray(twin.pd, np.float64).reshape(n, n))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"gre{n}.seq")
        mt.write_seq(seq, path, version="1.5.0")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = load_pulseq(path)
        prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = SequenceCompiler().compile(program)  # also done inside every simulate_sequence call
    seq_compile_s = time.perf_counter() - t0
    sim = BlochSimulator(use_parallel=True, num_threads=threads)

    def simulate():
        out = sim.simulate_sequence(program, phantom, spoiler_mode="gradient")
        return np.asarray(out.signal).ravel(), out.metadata

    times, sig, meta = [], None, None
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        sig, meta = simulate()
        times.append(time.perf_counter() - t0)
    run = statistics.median(times[1:])
    rec = _base(n, "blochsimulator", _version("blochsimulator"),
                "BlochSimulator.simulate_sequence (C core, OpenMP), Pulseq 1.5.0 file via load_pulseq, "
                "spoiler_mode='gradient', one spin per voxel, float64", int(meta.get("effective_threads", threads)))
    rec.update(run_s=run, first_run_s=times[0], prepare_s=prepare_s, sequence_compile_s=seq_compile_s,
               repeats=repeats, n_intervals=int(compiled.n_intervals),
               numerical_contract=str(meta.get("numerical_contract")), **_errors(sig, ref, n))
    rec["_signal"] = sig  # popped by main
    return rec


# -- sycomore -----------------------------------------------------------------------------------

def _lattice_sum(k, n):
    """``sum_i exp(i k x_i)`` over ``x_i = (i - n/2) fov/n``, i = 0..n-1, for k [rad/m] (array)."""
    dx = FOV / n
    z = np.exp(1j * k * dx)
    den = 1.0 - z
    on_lattice = np.abs(den) < 1e-9
    geo = np.where(on_lattice, n, (1.0 - z ** n) / np.where(on_lattice, 1.0, den))
    return np.exp(1j * k * (-n / 2 * dx)) * geo


def run_sycomore(n: int, seq, twin, ref, repeats: int, bin_width: float, window: bool = False):
    """sycomore's discrete 3D EPG on the stepped event train (see the module docstring).

    ``window``: read the states once per ADC window (at its first sample) and get the
    window's later samples from the exact shift and T2 decay of those states.
    """
    import sycomore
    from sycomore.units import T, m, rad, s

    if not (np.all(np.asarray(twin.pd) == 1) and np.ptp(np.asarray(twin.t1)) == 0
            and np.ptp(np.asarray(twin.t2)) == 0 and twin.delta_f is None):
        raise ValueError("the EPG projection needs a uniform lattice (one species, PD 1)")
    t0 = time.perf_counter()
    d = mt.discretize(seq, mt.Scanner(**_SCANNER), windows=False, bucket=False)
    nst = d.n_real_steps
    kind = np.asarray(d.kind)[:nst]
    dt = np.asarray(d.dt, float)[:nst]
    kstep = np.asarray(d.kstep, float)[:nst]
    b1 = np.asarray(d.b1dt)[:nst]
    sample = np.asarray(d.sample)[:nst]
    out_index = np.asarray(d.out_index)
    demod = np.asarray(d.demod)  # mritwin's exp(+i phi_adc); the peer's is its conjugate
    if np.any((kind == 0) & (np.abs(kstep).sum(axis=1) > 1e-9)):
        raise ValueError("a gradient plays during an RF pulse: not a hard-pulse EPG step")
    gs = sycomore.gamma.magnitude
    t2 = float(np.asarray(twin.t2)[0])
    zero = [0 * T / m] * 3

    def interval(i, count=1):  # count intervals of step i: duration, G [T/m] with the exact moment
        g = 2 * np.pi * kstep[i] / (gs * dt[i])
        return count * dt[i] * s, [g[0] * T / m, g[1] * T / m, g[2] * T / m]

    ops = []  # prebuilt arguments: the Quantity arithmetic stays out of the timed loop
    i = 0
    while i < nst:
        if kind[i] == 0:  # Pulseq phase = -arg(b1dt) (b1dt = gamma_bar conj(int B1 dt))
            ops.append((0, i, (dt[i] / 2 * s, 2 * np.pi * abs(b1[i]) * rad, -np.angle(b1[i]) * rad)))
            i += 1
            continue
        c = 0
        if window and sample[i]:
            while (i + c + 1 < nst and kind[i + c + 1] == 1 and sample[i + c + 1]
                   and abs(dt[i + c + 1] - dt[i + 1]) < 1e-12  # equal up to float noise
                   and np.allclose(kstep[i + c + 1], kstep[i + 1], rtol=1e-9, atol=1e-9)):
                c += 1
        if c == 0:
            ops.append((1, i, interval(i)))
        else:  # the first sample, then c equal dwell intervals on a constant gradient
            ops.append((2, i, (interval(i), interval(i + 1), c, 2 * np.pi * kstep[i + 1],
                               np.exp(-dt[i + 1] / t2))))
        i += c + 1
    prepare_s = time.perf_counter() - t0
    species = sycomore.Species(float(np.asarray(twin.t1)[0]) * s, t2 * s)

    def simulate():
        model = sycomore.epg.Discrete3D(species, bin_width=bin_width * rad / m)
        out = np.zeros(nst, complex)
        t_apply = t_fetch = t_read = 0.0
        max_states = 1
        for k, i, arg in ops:
            ta = time.perf_counter()
            if k == 0:
                model.apply_time_interval(arg[0], zero)
                model.apply_pulse(arg[1], arg[2])
                model.apply_time_interval(arg[0], zero)
            else:
                model.apply_time_interval(*(arg if k == 1 else arg[0]))
            tb = time.perf_counter()
            t_apply += tb - ta
            if not sample[i]:
                continue
            states, orders = model.states, model.orders
            tc = time.perf_counter()
            t_fetch += tc - tb
            od = np.array([[q.magnitude for q in o] for o in orders])
            # unfolded: F(k) at k, and F*(k) (= conj F(-k)) as conj(F*) at -k; F*(0) = conj F(0)
            kk = np.concatenate([od, -od[1:]])
            f = np.concatenate([states[:, 0], np.conj(states[1:, 1])]) * (kk[:, 2] == 0)  # lattice at z = 0
            max_states = max(max_states, len(od))
            if k == 2:
                _, rest, c, dk, e2 = arg
                mm = np.arange(c + 1)[:, None]
                ly = _lattice_sum(kk[None, :, 1] + mm * dk[1], n) if dk[1] else _lattice_sum(kk[None, :, 1], n)
                lat = _lattice_sum(kk[None, :, 0] + mm * dk[0], n) * ly
                out[i:i + c + 1] = (lat @ f) * e2 ** mm[:, 0]
            else:
                out[i] = np.sum(f * _lattice_sum(kk[:, 0], n) * _lattice_sum(kk[:, 1], n))
            td = time.perf_counter()
            t_read += td - tc
            if k == 2:  # one dwell at a time: one interval of c dwells makes the states explode
                for _ in range(c):
                    model.apply_time_interval(*rest)
                t_apply += time.perf_counter() - td
        return out[out_index] * np.conj(demod), (t_apply, t_fetch, t_read), max_states

    times, parts, sig = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        sig, part, max_states = simulate()
        times.append(time.perf_counter() - t0)
        parts.append(part)
    run = statistics.median(times)
    mid = times.index(sorted(times)[(len(times) - 1) // 2])
    how = ("states read once per ADC window (at its first sample), its later samples from their exact "
           "shift and T2 decay" if window
           else "lattice signal projected from all states after every sample")
    rec = _base(n, "sycomore", _version("sycomore"),
                f"epg.Discrete3D (bin_width {bin_width:g} rad/m, float64), stepped event train, {how}; "
                "conj(signal)", 1)
    rec.update(run_s=run, apply_s=parts[mid][0], fetch_s=parts[mid][1], readout_s=parts[mid][2],
               prepare_s=prepare_s, repeats=repeats, n_calls=len(ops), max_states=int(max_states),
               **_errors(np.conj(sig), ref, n))
    rec["_signal"] = np.conj(sig)  # popped by main
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--repeats", type=int, default=5, help="mritwin repeats (median)")
    p.add_argument("--peer-repeats", type=int, default=3, help="peer repeats (median)")
    p.add_argument("--cmrsim-rf-steps", type=int, default=10, help="grid intervals per hard pulse")
    p.add_argument("--sycomore-bin-width", type=float, default=1e-7, help="EPG order bin width [rad/m]")
    p.add_argument("--x64", action="store_true",
                   help="diagnostic: enable JAX float64 and add each peer's errors against mritwin's "
                        "float64 exact result (*_vs_mritwin_f64); do not take timings with it")
    p.add_argument("--max-peer-s", type=float, default=600.0,
                   help="skip a peer's larger sizes once one of its runs took longer than this [s]")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    skips = {peer: _importable(peer) for peer in a.peers}
    if a.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    too_slow: dict[str, float] = {}
    proc = platform.processor() or platform.machine()
    for n in a.sizes:
        recs, ref, seq = run_mritwin(n, a.repeats)
        twin = grid_twin(n, FOV)
        ref64 = None
        if a.x64:
            ref64 = np.asarray(mt.simulate(twin, seq, method=mt.Bloch(), dtype="float64").samples)[0]
        for rec in recs:
            rec["platform"] = proc
            _emit(rec)
        for peer in a.peers:
            if skips[peer] is not None:
                continue
            if peer in too_slow:
                _emit({"simulator": peer, "scenario": f"gre-{n}",
                       "skipped": f"a smaller size took {too_slow[peer]:.0f} s > --max-peer-s"})
                continue
            if peer == "cmrsim":
                recs = [run_cmrsim(n, seq, twin, ref, a.peer_repeats, a.cmrsim_rf_steps)]
            elif peer == "blochsimulator":
                recs = [run_blochsimulator(n, seq, twin, ref, a.peer_repeats)]
            else:
                recs = [run_sycomore(n, seq, twin, ref, a.peer_repeats, a.sycomore_bin_width, window)
                        for window in (False, True)]
            for rec in recs:
                sig = rec.pop("_signal")
                if ref64 is not None:
                    rec.update({k.replace("_exact", "_f64"): v for k, v in _errors(sig, ref64, n).items()})
                rec["platform"] = proc
                _emit(rec)
            worst = max(r.get("first_run_s", r["run_s"]) for r in recs)
            if worst > a.max_peer_s:
                too_slow[peer] = worst
    for peer, why in skips.items():
        if why is not None:
            _emit({"simulator": peer, "skipped": why})
    return 0


if __name__ == "__main__":
    sys.exit(main())
