"""Benchmark scenarios shared by `benchmarks/` scripts, `mritwin bench` and the tests.

- `cartesian_gre`: a 2D Cartesian spoiled GRE with a hard pulse (n x n, readout along x).
- `grid_twin`: one spin per pixel centre of an n x n grid.
- `numpy_reference`: a careful plain-NumPy Bloch simulation of the same discretized steps.
- `run_gre`: the issue-2 scenario (TR 12 ms, TE 5 ms, 15 degrees) timed against the
  NumPy reference, as a JSON-ready dict.
- `run_scenario`: time one named scenario of `mritwin.bench_scenarios` (the issue-8 suite)
  and return its JSON-ready record; `records_to_markdown` renders records as the
  `benchmarks/RESULTS.md` table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

import mritwin as mt
from mritwin.simulate import engine, trace_count

__all__ = ["cartesian_gre", "grid_twin", "fft_recon", "numpy_reference", "exact_constant_pulse", "run_gre", "run_scenario", "run_case",
           "records_to_markdown", "RECORD_FIELDS", "time_call", "compile_and_time", "compile_fresh"]


def time_call(fn, repeats: int):
    """Time ``fn()`` (its result is waited for with `jax.block_until_ready`): the first call,
    which compiles, then ``repeats`` more.

    Returns:
        ``(first_s, median_s, result)``: the first call's time [s], the median of the
        repeats [s] and the first call's result.
    """
    t0 = time.perf_counter()
    result = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), result


def compile_and_time(fn, x, calls: int):
    """``jax.jit(fn)`` traced and lowered, compiled, then called on ``x``: a fresh function
    object each time (traced afresh, not taken from JAX's cache).

    Returns:
        ``(times, out)``: ``{"trace_lower_s", "compile_s"}`` (rounded to 0.01 s) and
        ``"run_s"``, the median of ``calls`` calls after the first [s]; and the first
        call's output flattened into one NumPy vector.
    """
    compiled, times = compile_fresh(fn, x)
    out = jax.block_until_ready(compiled(x))
    _, run_s, _ = time_call(lambda: compiled(x), calls)
    flat = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree_util.tree_leaves(out)])
    return {**times, "run_s": run_s}, flat


def compile_fresh(fn, x):
    """``jax.jit(fn)`` traced, lowered and compiled for ``x`` (a fresh function object:
    not taken from JAX's cache). Returns ``(compiled, {"trace_lower_s", "compile_s"})``
    (rounded to 0.01 s)."""
    t0 = time.perf_counter()
    lowered = jax.jit(lambda v: fn(v)).trace(x).lower()
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, {"trace_lower_s": round(t1 - t0, 2), "compile_s": round(time.perf_counter() - t1, 2)}


def alternate_runs(runs, calls: int):
    """Planned runs (``engine._plan(...)``, each ``run.call()`` returning ``(samples, mag)``)
    timed against each other in one process: compiled by a first call, then called in turn
    ``calls`` times each, so that the machine's drift hits them alike. Returns ``(medians
    [s] per run, largest |samples - last run's samples| / max |last run's samples| over the
    runs)``."""
    outs = [np.asarray(jax.block_until_ready(r.call()[0])) for r in runs]  # (compiles)
    times = [[] for _ in runs]
    for _ in range(calls):
        for r, t in zip(runs, times):
            t0 = time.perf_counter()
            jax.block_until_ready(r.call()[0])
            t.append(time.perf_counter() - t0)
    ref = outs[-1]
    diff = max(float(np.abs(o - ref).max() / np.abs(ref).max()) for o in outs)
    return [statistics.median(t) for t in times], diff


def readout_gradients(n, fov, dwell, t_pre, scanner):
    """Cartesian readout along x: ``(dk, readout, prephaser, spoiler)``.

    The readout's flat top holds ``n`` samples of ``dwell`` at ``dk = 1/fov`` per sample;
    the prephaser (``t_pre`` [s]) puts sample ``n/2`` at k = 0 (centre of the flat top);
    the spoiler winds 4 cycles per pixel.
    """
    dk = 1.0 / fov
    g_ro = dk / (mt.GAMMA_BAR * dwell)
    gx = mt.make_trapezoid("x", amplitude=g_ro, flat_time=n * dwell, scanner=scanner)
    k_pre = -(n / 2 + 0.5) * dk - mt.GAMMA_BAR * g_ro * gx.rise_time / 2
    gxp = mt.make_trapezoid("x", area=k_pre, duration=t_pre, scanner=scanner)
    spoil = mt.make_trapezoid("x", area=4 * n * dk, scanner=scanner)
    return dk, gx, gxp, spoil


def cartesian_gre(n, fov, *, tr=12e-3, te=5e-3, flip=np.radians(15), dwell=20e-6, rf_duration=100e-6,
                  scanner=None, rf_spoil=True):
    """A 2D Cartesian spoiled GRE with a hard pulse: n x n, readout along x, phase along y.

    Sample m of line j is at k = ((m - n/2) / fov, (j - n/2) / fov). RF spoiling (117 deg)
    with matched ADC phase and a spoiler of 4 cycles per pixel along x.
    """
    sc = scanner or mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)
    t_pre = 1e-3
    dk, gx, gxp, spoil = readout_gradients(n, fov, dwell, t_pre, sc)
    blocks = []
    phase = inc = 0.0
    t_rf = rf_duration / 2  # RF centre from TR start
    # readout: the k-space centre (sample n/2) at TE
    t_center_in_ro = gx.rise_time + (n / 2 + 0.5) * dwell
    gap = te - t_rf - rf_duration / 2 - t_pre - t_center_in_ro
    if gap < 0:
        raise ValueError(f"TE too short: minimum {te - gap:.6f} s")
    for j in range(n):
        ph = np.radians(phase) if rf_spoil else 0.0
        rf = mt.make_block_pulse(flip, rf_duration, phase_offset=ph, delay=0.0, scanner=sc)
        gyp = mt.make_trapezoid("y", area=(j - n / 2) * dk, duration=t_pre, scanner=sc)
        gyr = mt.make_trapezoid("y", area=-(j - n / 2) * dk, duration=t_pre, scanner=sc)
        adc = mt.ADC(n, dwell, delay=gx.rise_time, phase_offset=ph)
        b = [mt.Block(rf=rf), mt.Block(gx=gxp, gy=gyp)]
        if gap > 0:
            b.append(mt.Block(duration=gap))
        b += [mt.Block(gx=gx, adc=adc), mt.Block(gx=spoil, gy=gyr)]
        used = sum(x.duration for x in b)
        if used > tr + 1e-12:
            raise ValueError(f"TR too short: minimum {used:.6f} s")
        b.append(mt.Block(duration=tr - used)) if tr - used > 1e-12 else None
        blocks += b
        inc += 117.0
        phase = (phase + inc) % 360.0
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def grid_twin(n, fov, mask=None, t1=1.0, t2=0.1, pd=1.0):
    """One spin per pixel centre of an n x n grid over fov (z = 0), optionally masked."""
    c = (np.arange(n) - n / 2) * fov / n
    x, y = np.meshgrid(c, c, indexing="ij")
    keep = np.ones_like(x, bool) if mask is None else mask(x, y)
    x, y = x[keep], y[keep]
    m = x.size
    return mt.Twin(position=np.c_[x, y, np.zeros(m)], pd=np.full(m, pd), t1=np.full(m, t1),
                   t2=np.full(m, t2))


def fft_recon(samples, n):
    """(n, n) image indexed [x, y] from line-major samples (line j = ky index)."""
    data = np.asarray(samples).reshape(n, n).T  # [kx, ky]
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(data))) * n * n / n / n


def exact_constant_pulse(b1, df, t1, t2, duration) -> np.ndarray:
    """The closed-form Bloch solution for a constant field (4x4 matrix exponential): an
    independent reference for RF steps with relaxation.

    Args:
        b1: complex B1 [T] in the simulator's frame (the conjugate of the scanner's, as in
            ``conj(rf.signal)``).
        df: off-resonance [Hz]; t1, t2: [s]; duration: [s].

    Returns:
        (3,) the magnetization (mx, my, mz) after ``duration`` from (0, 0, 1), M0 = 1.
    """
    import scipy.linalg  # (a dependency of jax)

    w = 2 * np.pi * mt.GAMMA_BAR * np.array([b1.real, b1.imag, 0.0])
    w[2] = 2 * np.pi * df
    a = np.zeros((4, 4))
    # dM/dt = M x Omega (left-handed) - relaxation
    a[:3, :3] = [[-1 / t2, w[2], -w[1]], [-w[2], -1 / t2, w[0]], [w[1], -w[0], -1 / t1]]
    a[2, 3] = 1 / t1
    return (scipy.linalg.expm(a * duration) @ np.array([0, 0, 1.0, 1.0]))[:3]


def numpy_reference(twin: mt.Twin, dseq) -> np.ndarray:
    """Plain-NumPy Bloch simulation of a stepped DiscreteSequence (float32, complex64)."""
    pos = np.asarray(twin.position, np.float32)
    x, y, z = pos[:, 0].copy(), pos[:, 1].copy(), pos[:, 2].copy()
    pd = np.asarray(twin.pd, np.float32)
    r1 = (1.0 / np.asarray(twin.t1, np.float32)).astype(np.float32)
    r2 = (1.0 / np.asarray(twin.t2, np.float32)).astype(np.float32)
    df = np.zeros_like(pd) if twin.delta_f is None else np.asarray(twin.delta_f, np.float32)
    if np.asarray(dseq.kind)[: dseq.n_real_steps].max(initial=0) > 1:
        raise ValueError("numpy_reference needs a stepped sequence: discretize(..., windows=False)")
    mxy = np.zeros(pd.size, np.complex64)
    mz = pd.copy()
    n = dseq.n_real_steps
    # every per-step value in float32 as well: a float64 step value would promote the
    # per-spin arithmetic to float64 (NumPy 2) and slow the reference down
    dt = np.asarray(dseq.dt, np.float32)[:n]
    k = np.asarray(dseq.kstep, np.float32)[:n]
    b1 = np.asarray(dseq.b1dt, np.complex64)[:n]
    kind = np.asarray(dseq.kind)[:n]
    sample = np.asarray(dseq.sample)[:n]
    cyc0 = np.asarray(dseq.cyc0)[:n].astype(np.float32)  # rigid-motion phase per step [cycles]
    out = np.zeros(n, np.complex64)
    cache: dict = {}
    tmp = np.empty_like(mz)
    two_pi = np.float32(2 * np.pi)
    for i in range(n):
        if kind[i] == 1:  # free precession: factor cached per distinct interval
            key = (dt[i], k[i, 0], k[i, 1], k[i, 2], cyc0[i])
            f = cache.get(key)
            if f is None:
                cyc = k[i, 0] * x + k[i, 1] * y + k[i, 2] * z + df * np.float32(dt[i]) + cyc0[i]
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
            wz = k[i, 0] * x + k[i, 1] * y + k[i, 2] * z + df * np.float32(dt[i]) + cyc0[i]
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


def emit_record(rec: dict, out: str | None = None) -> None:
    """Print one benchmark record as a JSON line (flushed) and, with ``out``, append it to
    that file: the output of every script in ``benchmarks/``."""
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def rss_mb() -> float:
    """Peak resident memory of this process [MB] (NaN where the platform cannot tell)."""
    try:
        import resource  # Unix only
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_gre(n: int, repeats: int = 3, with_numpy: bool = True) -> dict:
    """Time the GRE scenario at n x n (median of ``repeats``) against the NumPy reference."""
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


#: fields every `run_scenario` record has (values may be None where noted)
RECORD_FIELDS = (
    "scenario", "quick", "device", "platform", "cpu_count", "n_devices", "precision", "readout", "rf", "n_spins", "n_steps",
    "n_steps_padded", "n_samples", "discretize_s", "compile_s", "first_call_s", "run_s", "run_s_all",
    "repeats", "spin_steps_per_s", "compiled_on_first_call", "recompiled_on_new_values", "peak_host_mb", "peak_device_mb",
    "anchor", "note", "params",
)

#: skip the NumPy reference above this many (stepped) spin-steps: it would take minutes
NUMPY_MAX_SPIN_STEPS = 5e9
#: the NumPy reference is timed like ours: the median of up to this many runs, while
#: they take less than NUMPY_BUDGET_S together (the first run always)
NUMPY_REPEATS = 3
NUMPY_BUDGET_S = 10.0


def _peak_host_mb():
    """Peak resident memory of this process [MB] (``ru_maxrss``), or None off Unix."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024.0 * 1024.0) if platform.system() == "Darwin" else rss / 1024.0, 1)


def _peak_device_mb():
    """Peak memory in use on the first JAX device [MB], or None where the backend does not say."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise various errors
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return round(stats["peak_bytes_in_use"] / 2 ** 20, 1)


def run_scenario(name: str, *, quick: bool = False, repeats: int = 3, dtype: str = "float32",
                 with_numpy: bool = True, nufft: float | None = None, kernel: str = "auto",
                 rf_interpolation: float | None = None) -> dict:
    """Time one named scenario (`mritwin.bench_scenarios.SCENARIOS`) and return its record.

    The sequence is discretized once (``discretize_s``; with the scenario's method and
    motion, so ``n_steps`` counts exactly the engine's steps: an ADC window is one step)
    and `mritwin.simulate` runs on the `DiscreteSequence`: once to compile, then
    ``repeats`` times with new T1 values (the same compiled code must be reused).
    ``compile_s`` is the first call minus the median run; it is about 0 when an earlier
    scenario in the same process already compiled the same shapes
    (``compiled_on_first_call`` is then false).

    Args:
        name: scenario name (see `mritwin.bench_scenarios.scenario_names`).
        quick: the small version of the scenario.
        repeats: timed runs after the first (>= 1); ``run_s`` is their median [s].
        dtype: ``"float32"`` or ``"float64"`` (float64 needs JAX x64 enabled).
        with_numpy: also time the plain-NumPy reference (`numpy_reference`) on the same
            steps, one step per ADC sample, when it is at most `NUMPY_MAX_SPIN_STEPS`.
        nufft: run with the NUFFT readout at this tolerance
            (``Bloch(readout=NUFFTReadout(nufft))``) instead of the scenario's method's
            exact windows; ``None``: the scenario's method as it is.
        kernel: ``"auto"`` (default): what `simulate`'s default ``Bloch(kernel="auto")``
            runs for the scenario, ``"pallas"`` on one GPU where it covers the scenario
            (`Bloch.resolve_kernel`), else ``"xla"``; ``"xla"``: the scenario's method on
            the XLA engine, also on a GPU; ``"pallas"``: the fused kernel
            (``Bloch(kernel="pallas")``, every ADC sample a step, so ``n_steps`` counts the
            stepped sequence). On the CPU it runs in Pallas's interpreter: a correctness
            check, its times mean nothing.
        rf_interpolation: run with interpolated RF pulses at this tolerance
            (``Bloch(rf_interpolation=...)``, `mritwin.simulate.interp_rf`), an
            approximation; ``None``: the scenario's method as it is.

    Returns:
        A JSON-ready dict with the `RECORD_FIELDS` (times in s, memory in MB,
        ``spin_steps_per_s = n_spins * n_steps / run_s``) and, with the NumPy
        reference, ``numpy_run_s``, ``speedup_vs_numpy`` and ``max_rel_diff_vs_numpy``.

    Raises:
        ValueError: unknown scenario, repeats < 1, unknown dtype.
    """
    from .bench_scenarios import build_case

    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if kernel not in ("auto", "xla", "pallas"):
        raise ValueError(f"kernel must be 'auto', 'xla' or 'pallas', got {kernel!r}")
    case = build_case(name, quick)
    if kernel == "auto":
        kernel = _auto_kernel(case, dtype, nufft, rf_interpolation)
    if kernel == "pallas":
        if nufft is not None:
            raise ValueError("the NUFFT readout is not available with kernel='pallas'")
        case = dataclasses.replace(case, method=dataclasses.replace(case.method, kernel="pallas", windows=False))
    else:  # the XLA engine on every platform (Bloch's default "auto" picks the kernel on a GPU)
        case = dataclasses.replace(case, method=dataclasses.replace(case.method, kernel="xla"))
    if nufft is not None:
        case = dataclasses.replace(case, method=dataclasses.replace(case.method, readout=mt.NUFFTReadout(nufft)))
    if rf_interpolation is not None:
        if kernel == "pallas":
            raise ValueError("interpolated RF pulses are not available with kernel='pallas'")
        case = dataclasses.replace(case, method=dataclasses.replace(case.method, rf_interpolation=rf_interpolation))
    return run_case(name, case, quick=quick, repeats=repeats, dtype=dtype, with_numpy=with_numpy)


def _auto_kernel(case, dtype: str, nufft, rf_interpolation) -> str:
    """The kernel ``simulate(twin, seq)`` would pick for the scenario (`Bloch.resolve_kernel`)."""
    from mritwin.simulate.engine import _resolve_auto

    m = case.method
    if nufft is not None:
        m = dataclasses.replace(m, readout=mt.NUFFTReadout(nufft))
    if rf_interpolation is not None:
        m = dataclasses.replace(m, rf_interpolation=rf_interpolation)
    return _resolve_auto(m, case.twin, case.seq, None, case.motion, np.dtype(dtype), False).kernel


def run_case(name: str, case, *, quick: bool = False, repeats: int = 3, dtype: str = "float32",
             with_numpy: bool = True) -> dict:
    """Time an already built `mritwin.bench_scenarios.Case` (see `run_scenario`).

    Args:
        name: the ``scenario`` field of the record.
        case: the `Case` (twin, sequence, scanner, method, motion, note, anchor, params).
        quick, repeats, dtype, with_numpy: as in `run_scenario`.

    Returns:
        The record (see `run_scenario`).
    """
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    m = case.method
    t0 = time.perf_counter()
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, max_rf_dt=m.max_rf_dt, windows=m.windows, motion=case.motion,
                         general_windows=m.readout is not None, rf_per_step=engine.rf_per_step(m))
    discretize_s = time.perf_counter() - t0
    twin = case.twin
    n_steps = int(dseq.n_real_steps)

    def once(tw):
        t = time.perf_counter()
        sig = mt.simulate(tw, dseq, method=m, dtype=dtype)
        sig.samples.block_until_ready()
        return time.perf_counter() - t, sig

    traces0 = trace_count()
    first, sig = once(twin)
    traces = trace_count()
    times = []
    for r in range(int(repeats)):
        tw = twin.replace(t1=twin.t1 * (1.0 + 0.01 * (r + 1)))  # new values: must not recompile
        times.append(once(tw)[0])
    # Rounded once, here: run_s and spin_steps_per_s in the record agree exactly (a 4 ms run rounded to
    # 1e-7 s afterwards would differ from the rate by up to 1e-5 relative).
    run_s = round(statistics.median(times), 7)
    rec = {
        "scenario": name,
        "quick": bool(quick),
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "n_devices": engine.last_devices(),
        "precision": dtype,
        "readout": "exact" if m.readout is None else f"nufft tol={m.readout.tol:g}",
        "rf": "exact" if m.rf_interpolation is None else f"interpolated tol={m.rf_interpolation:g}",
        "kernel": m.kernel + ("-interpret" if m.kernel == "pallas" and jax.default_backend() == "cpu" else ""),
        "n_spins": int(twin.n_spins),
        "n_steps": n_steps,
        "n_steps_padded": int(dseq.n_steps),
        "n_samples": int(dseq.n_adc),
        "discretize_s": round(discretize_s, 4),
        "compile_s": round(max(first - run_s, 0.0), 3),
        "first_call_s": round(first, 4),
        "run_s": run_s,
        "run_s_all": [round(t, 7) for t in times],
        "repeats": int(repeats),
        "spin_steps_per_s": twin.n_spins * n_steps / run_s,
        "compiled_on_first_call": traces != traces0,
        "recompiled_on_new_values": trace_count() != traces,
        "peak_host_mb": _peak_host_mb(),
        "peak_device_mb": _peak_device_mb(),
        "anchor": case.anchor,
        "note": case.note,
        "params": case.params,
    }
    if with_numpy:
        stepped = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, max_rf_dt=m.max_rf_dt, windows=False, motion=case.motion)
        work = twin.n_spins * stepped.n_real_steps
        rec["numpy_n_steps"] = int(stepped.n_real_steps)
        if work > NUMPY_MAX_SPIN_STEPS:
            rec["numpy_run_s"] = None
            rec["numpy_skipped"] = f"{work:.2g} spin-steps > {NUMPY_MAX_SPIN_STEPS:.2g}"
        else:
            np_times = []
            while len(np_times) < NUMPY_REPEATS and (not np_times or sum(np_times) < NUMPY_BUDGET_S):
                t0 = time.perf_counter()
                ref = numpy_reference(twin, stepped)
                np_times.append(time.perf_counter() - t0)
            np_s = float(np.median(np_times))
            ours = np.asarray(sig.samples[0])
            rec.update({
                "numpy_run_s": round(np_s, 4),
                "numpy_run_s_all": [round(t, 4) for t in np_times],
                "speedup_vs_numpy": round(np_s / run_s, 2),
                "max_rel_diff_vs_numpy": float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)),
                "peak_host_mb": _peak_host_mb(),
            })
    return rec


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def records_to_markdown(records) -> str:
    """A Markdown table (one row per `run_scenario` record) for `benchmarks/RESULTS.md`.

    Published anchors go in their own column; the GPU column says "not measured" unless
    a record comes from a GPU device.
    """
    head = ("| scenario | spins | steps | samples | compile [s] | run [s] (median) | spin-steps/s | "
            "NumPy [s] | vs NumPy | peak RSS [MB] | GPU run [s] | published anchor |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for r in records:
        anchor = r.get("anchor")
        if anchor:
            v = anchor["run_s"]
            val = f"{v[0]:g}–{v[1]:g}" if isinstance(v, list) else f"{v:g}"
            a = f"{val} s ({anchor['software']}, {anchor['hardware']})"
        else:
            a = "–"
        gpu = _fmt(r["run_s"], ".4g") if r.get("platform") == "gpu" else "not measured"
        cpu_run = _fmt(r["run_s"], ".4g") if r.get("platform") != "gpu" else "–"
        sp = r.get("speedup_vs_numpy")
        label = r["scenario"] + (" (quick)" if r.get("quick") else "")
        extras = [x for x in (r.get("readout"), r.get("rf")) if x and not x.startswith("exact")]
        if extras:
            label += f" ({'; '.join(('RF ' + x) if x.startswith('interp') else x for x in extras)})"
        rows.append(
            f"| {label} | {r['n_spins']:,} | {r['n_steps']:,} | {r['n_samples']:,} | "
            f"{_fmt(r['compile_s'], '.3g')} | {cpu_run} | {r['spin_steps_per_s']:.3g} | "
            f"{_fmt(r.get('numpy_run_s'), '.4g')} | {'–' if sp is None else f'{sp:.3g}×'} | "
            f"{_fmt(r['peak_host_mb'], '.0f')} | {gpu} | {a} |")
    return "\n".join(rows) + "\n"
