"""Benchmark: mritwin vs SigPy and blochsimulator on a shaped pulse's slice profile (CPU).

Workload: the excitation profile of a slice-selective sinc pulse, the task that RF pulse
designers simulate most (and one that simulators with instantaneous RF, such as
MRzeroCore, cannot do). A 2 ms, 90 degree sinc (time-bandwidth product 4, Hamming window
as `mritwin.make_sinc_pulse` makes it, 1 us RF raster, 2 000 samples) on a 5 mm slice
gradient with its rewinder, on the scanner without dead times; ``n`` spins on a line along
z over +-3 slice thicknesses (+-15 mm), no relaxation (T1 = T2 = inf: SigPy's simulator
has none), no off-resonance, starting from M = (0, 0, 1). The result is every spin's
magnetization at the end of the rewinder.

Every simulator gets the same event train: mritwin's own discretization of the sequence
(``mt.discretize(seq, windows=False)``, 2 001 steps: the gradient's ramp-up as one free
step, then the RF samples as 1 999 steps of constant B1 with their complex ``b1dt`` and
gradient moment ``kstep``, the even-length sinc's two equal centre samples being one step
of 2 us, then the ramp-down and rewinder as one free step), so the comparison times the
simulation alone. Each step is a rotation about a constant field, which all three
compute exactly, so in float64 they must agree to rounding.

Records (one JSON object per line):

- mritwin ``mt.simulate(twin, seq, return_magnetization=True)`` (float32, the sequence
  object; its discretization is part of each call): ``run_s`` = median of ``--repeats``
  calls after the compiling one, ``compile_s`` = first call minus ``run_s``. One JAX
  device per core (`mritwin.use_cpu_devices`, as the CLI and ``mritwin bench`` set up)
  unless ``--cpu-devices 1``.
- SigPy `sigpy.mri.rf.sim.abrm_nd` (NumPy, float64; the Cayley-Klein simulator of SigPy's
  RF design toolbox, a Python loop over the samples vectorized over positions): ``rf`` =
  ``2 pi b1dt`` [rad] per step (zero in the free steps), ``g`` = ``2 pi kstep_z``
  [rad/m], ``x`` = z [m]; ``M = (2 Re(conj(a) b), 2 Im(conj(a) b), |a|^2 - |b|^2)``.
  Up to ``--sigpy-max`` spins (its time grows as n x steps with ~15 NumPy passes per
  step).
- blochsimulator `BlochSimulator.simulate` (C core with OpenMP, float64, Hargreaves's
  rotation-then-decay scheme; 2.9.5): the same steps as ``(b1 [G], gradients [G/cm],
  time [s])`` converted with its own gyromagnetic ratio (``GAMMA`` = 26 753 rad/s/G, so
  that every step rotates by the same angle), T1 = T2 = inf, ``positions`` the spins' z,
  ``mode=0`` (end point), ``num_threads`` = the cores this process may use.

Errors: ``max_err_vs_<other>`` = the largest ``|M - M_other|`` over spins (3-vectors, units
of M0), in each record against every other simulator that ran at that size. The frames:
SigPy's Cayley-Klein parameters rotate the other way round from mritwin's simulation frame (the
mirror image, see ``docs/conventions.md``: mritwin's ``Mx + i My`` is the complex
conjugate of SigPy's for the same ``b1dt``, so SigPy's ``My`` is negated), while
blochsimulator rotates as mritwin does (its result is compared as it is; ``frame`` in
each record says which). Magnitudes and Mz need no mapping. With ``--x64`` mritwin runs in
float64 (JAX's float64 enabled), like the peers: its time is then float64's and the errors
are those of float64 codes against each other.

Run (in a venv of its own with both peers; they also need mritwin, i.e. JAX)::

    python3 -m venv /tmp/rfpeers && /tmp/rfpeers/bin/pip install sigpy==0.1.27 \\
        blochsimulator==2.9.5 -e .
    /tmp/rfpeers/bin/python benchmarks/bench_peers_rf.py --sizes 1000 10000 100000

A peer that cannot be imported gives one ``{"simulator": ..., "skipped": reason}`` record,
so the script also runs in mritwin's own venv.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_peers import _cores, _emit, _set_cpu_devices, _version  # noqa: E402

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import time_call  # noqa: E402

PEERS = ("sigpy", "blochsimulator")
THICKNESS = 5e-3  # [m]
SPAN = 3.0  # spins over +-SPAN slice thicknesses
SCANNER = dict(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)


def slice_sequence():
    """The workload's sequence: a 2 ms, 90 degree sinc on a 5 mm slice, then its rewinder."""
    scanner = mt.Scanner(**SCANNER)
    rf, gz, gzr = mt.make_sinc_pulse(math.pi / 2, 2e-3, time_bw_product=4.0,
                                     slice_thickness=THICKNESS, scanner=scanner)
    return mt.Sequence([mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr)]), scanner


def line_twin(n: int):
    """``n`` spins on z over +-SPAN slice thicknesses, PD 1, no relaxation."""
    z = np.linspace(-SPAN * THICKNESS, SPAN * THICKNESS, n)
    inf = np.full(n, np.inf)
    return mt.Twin(position=np.c_[0 * z, 0 * z, z], pd=np.ones(n), t1=inf, t2=inf), z


def event_train(seq):
    """mritwin's discretization as NumPy arrays: ``(dt [s], b1dt [cycles], kz [1/m])``."""
    d = mt.discretize(seq, windows=False)
    n = d.n_real_steps
    if np.any(np.asarray(d.cyc0[:n])) or np.any(np.asarray(d.kstep[:n, :2])):
        raise ValueError("the workload's steps should have no frame phase and no x/y moment")
    return (np.asarray(d.dt[:n], np.float64), np.asarray(d.b1dt[:n], np.complex128),
            np.asarray(d.kstep[:n, 2], np.float64))


def _base(n: int, simulator: str, version: str, method: str, n_steps: int) -> dict:
    return {"scenario": f"slice-profile-{n}", "simulator": simulator, "version": version,
            "method": method, "device": "cpu", "threads": _cores(), "n_spins": n, "n_steps": n_steps,
            "platform": platform.processor() or platform.machine()}


def _rate(rec: dict) -> dict:
    rec["spin_steps_per_s"] = rec["n_spins"] * rec["n_steps"] / rec["run_s"]
    return rec


# -- the simulators ----------------------------------------------------------------------------

def run_mritwin(n: int, seq, scanner, n_steps: int, repeats: int, x64: bool):
    import jax
    import jax.numpy as jnp

    twin, _ = line_twin(n)
    dtype = jnp.float64 if x64 else jnp.float32

    def call():
        sig = mt.simulate(twin, seq, scanner=scanner, return_magnetization=True, dtype=dtype)
        return np.asarray(jax.block_until_ready(sig.magnetization), np.float64)

    first, run, m = time_call(call, repeats)
    rec = _base(n, "mritwin", mt.__version__, f"simulate(return_magnetization=True), "
                f"{'float64' if x64 else 'float32'}", n_steps)
    rec.update(run_s=run, compile_s=max(first - run, 0.0), repeats=repeats, jax=jax.__version__,
               jax_devices=len(jax.devices()))
    return _rate(rec), m


def run_sigpy(n: int, train, repeats: int):
    from sigpy.mri.rf.sim import abrm_nd

    dt, b1dt, kz = train
    _, z = line_twin(n)
    rf = 2 * np.pi * b1dt
    g = (2 * np.pi * kz)[:, None]
    x = z[:, None]

    def call():
        a, b = abrm_nd(rf, x, g)
        ab = np.conj(a) * b
        return np.stack([2 * ab.real, 2 * ab.imag, np.abs(a) ** 2 - np.abs(b) ** 2], axis=1)

    first, run, m = time_call(call, repeats)
    m[:, 1] = -m[:, 1]  # SigPy's Mx + i My is the complex conjugate of mritwin's
    rec = _base(n, "sigpy", _version("sigpy"), "sigpy.mri.rf.sim.abrm_nd, float64", dt.size)
    rec.update(run_s=run, first_run_s=first, repeats=repeats, frame="(Mx, -My, Mz)")
    return _rate(rec), m


def run_blochsimulator(n: int, train, repeats: int):
    from blochsimulator import BlochSimulator
    from blochsimulator.simulator import TissueParameters

    gamma = 26753.0  # rad/s/G, blochsimulator's GAMMA (bloch_core.h)
    dt, b1dt, kz = train
    _, z = line_twin(n)
    b1 = 2 * np.pi * b1dt / (gamma * dt)  # [G]
    grad = np.zeros((dt.size, 3))
    grad[:, 2] = 2 * np.pi * kz / (gamma * dt) / 100.0  # [G/cm]: GAMMA G z[cm] dt = 2 pi kz z[m]
    # It takes each sample's duration from diff(time) and gives the last one the duration of
    # the one before: one more sample without any field (an identity, as nothing relaxes)
    # after the last step lets every step keep its own duration.
    t = np.concatenate([[0.0], np.cumsum(dt)])
    b1 = np.append(b1, 0.0)
    grad = np.vstack([grad, np.zeros(3)])
    sim = BlochSimulator(use_parallel=True, num_threads=_cores())
    tissue = TissueParameters(name="no relaxation", t1=math.inf, t2=math.inf)
    positions = np.c_[0 * z, 0 * z, z]

    def call():
        r = sim.simulate((b1, grad, t), tissue, positions=positions, mode=0)
        return np.stack([np.ravel(r["mx"]), np.ravel(r["my"]), np.ravel(r["mz"])], axis=1)

    first, run, m = time_call(call, repeats)
    rec = _base(n, "blochsimulator", _version("blochsimulator"),
                "BlochSimulator.simulate, optimized kernel, float64", dt.size)
    rec.update(run_s=run, first_run_s=first, repeats=repeats, frame="as it is")
    return _rate(rec), m


def _errors(m, ref, name: str) -> dict:
    return {f"max_err_vs_{name}": float(np.max(np.linalg.norm(m - ref, axis=1)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--repeats", type=int, default=5, help="mritwin repeats (median)")
    p.add_argument("--peer-repeats", type=int, default=3, help="peer repeats (median)")
    p.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--sigpy-max", type=int, default=100000, help="largest n given to SigPy")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="JAX CPU devices (default: one per core, as the CLI)")
    p.add_argument("--x64", action="store_true", help="mritwin in float64, as the peers")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    _set_cpu_devices(a.cpu_devices)
    if a.x64:
        import jax

        jax.config.update("jax_enable_x64", True)

    skipped = {}
    for peer in a.peers:
        try:
            if peer == "sigpy":
                import sigpy.mri.rf.sim  # noqa: F401
            else:
                import blochsimulator  # noqa: F401
        except Exception as e:  # ImportError, or a broken build
            skipped[peer] = f"{peer} not importable: {type(e).__name__}: {e}"

    seq, scanner = slice_sequence()
    train = event_train(seq)
    for n in a.sizes:
        rec, m = run_mritwin(n, seq, scanner, train[0].size, a.repeats, a.x64)
        peers = {}
        for peer in a.peers:
            if peer in skipped or (peer == "sigpy" and n > a.sigpy_max):
                continue
            run = run_sigpy if peer == "sigpy" else run_blochsimulator
            peers[peer] = run(n, train, a.peer_repeats)
        for name, (_, mp) in peers.items():
            rec.update(_errors(m, mp, name))
        _emit(rec)
        for name, (prec, mp) in peers.items():
            prec["vs_mritwin"] = prec["run_s"] / rec["run_s"]
            prec.update(_errors(mp, m, "mritwin"))
            for other, (_, mo) in peers.items():
                if other != name:
                    prec.update(_errors(mp, mo, other))
            _emit(prec)
    for peer, why in skipped.items():
        _emit({"simulator": peer, "skipped": why})
    return 0


if __name__ == "__main__":
    sys.exit(main())
