"""Benchmark: `kernels.one_fusion` (the magnetization after a fused RF step as the outputs
of one multi-output reduction) against the plain outputs, on XLA's CPU backend.

For scenarios of the suite, the engine's compiled core compiled twice from the same plan:
as it is, and with `kernels.one_fusion` replaced by the identity while tracing (each
output array of a fused RF step, ``mx + i my`` and ``mz`` in the engine's carry, is then a
fusion of its own that recomputes all 16 unrolled rotations). Called alternately in one
process, ``--calls`` calls each. Also the kernel alone: a scan of fused 16-step kernels
on 26k spins with the engine's packed carry (``--kernels rf_step``: the same for single
RF steps with `one_fusion` applied to them, which the engine does not do: there the extra
packing pass costs more than the shared rotation saves). Prints one JSON object per case:
medians, speed-up and the largest difference (float rounding).

Usage:  python benchmarks/bench_one_fusion.py [--scenario koma-brain-suscept gre-64] [--calls 15]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import mritwin as mt  # noqa: E402
from mritwin.bench_scenarios import SCENARIOS  # noqa: E402
from mritwin.benchmarking import alternate_runs  # noqa: E402
from mritwin.simulate import engine, fused_rf, kernels  # noqa: E402
from mritwin.simulate.kernels import Spins, State  # noqa: E402


def _compiled(fn, args, kwargs, fuse: bool, static=()):
    """``fn`` (a plain function) jitted anew, traced and compiled with or without
    `one_fusion`: ``(compiled, its dynamic keyword arguments)``."""
    own = kernels.one_fusion
    kernels.one_fusion = own if fuse else (lambda *arrays: arrays)
    jax.clear_caches()  # (scan bodies and checkpointed functions keep their traced jaxprs)
    try:
        exe = jax.jit(fn, static_argnames=static).lower(*args, **kwargs).compile()
    finally:
        kernels.one_fusion = own
    return exe, {k: v for k, v in kwargs.items() if k not in static}


def _scenario(name: str, calls: int) -> dict:
    case = SCENARIOS[name].build(False)
    m = case.method.resolve_kernel(dtype=jnp.float32, traced=False, dynamics=False, n_devices=1, backend="cpu")
    dseq = mt.discretize(case.seq, case.scanner, rf_dt=m.rf_dt, windows=m.windows, motion=case.motion)
    run = engine._plan(case.twin, dseq, case.scanner, None, m, jnp.float32, False, case.motion, ())
    c = run.call
    runs = []
    for fuse in (True, False):
        exe, kw = _compiled(engine._core.__wrapped__, c.args, c.keywords, fuse, engine._CORE_STATIC)
        runs.append(types.SimpleNamespace(call=lambda exe=exe, kw=kw: exe(*c.args, **kw)))
    (fused, plain), diff = alternate_runs(runs, calls)
    return {"case": name, "n_spins": int(case.twin.n_spins), "one_fusion_s": round(fused, 6),
            "plain_s": round(plain, 6), "speedup": round(plain / fused, 3), "max_rel_diff": diff}


def _kernel(kind: str, calls: int, n: int = 26_000) -> dict:
    rng = np.random.default_rng(0)

    def f32(a):
        return jnp.asarray(a, jnp.float32)

    spins = Spins(x=f32(rng.uniform(-0.1, 0.1, n)), y=f32(rng.uniform(-0.1, 0.1, n)), z=f32(np.zeros(n)),
                  pd=f32(np.ones(n)), r1=f32(np.full(n, 1.0)), r2=f32(np.full(n, 10.0)),
                  df=f32(rng.normal(0, 50, n)), b1=f32(np.ones(n)), coil_re=None, coil_im=None)
    steps = 500 if kind == "rf_step" else 32  # raster steps, or rows of 16 fused steps
    shape = (steps,) if kind == "rf_step" else (steps, fused_rf.DEFAULT_FUSE)
    xs = (f32(np.full(shape, 1e-6)), f32(rng.normal(0, 1, shape + (3,))),
          jnp.asarray(rng.normal(0, 1e-3, shape) + 1j * rng.normal(0, 1e-3, shape), jnp.complex64),
          f32(np.zeros(shape)))
    m0 = State(f32(np.zeros(n)), f32(np.zeros(n)), f32(np.ones(n)))

    def step(c, x):  # on the engine's carry (mx + i my, mz)
        m = State(jnp.real(c[0]), jnp.imag(c[0]), c[1])
        if kind == "rf_step":
            m = State(*kernels.one_fusion(*kernels.rf_step(spins, m, *x, rotation="small")))
        else:
            m = fused_rf.fused_rf_steps(spins, m, *x, rotation="small")
        return (jax.lax.complex(m.mx, m.my), m.mz), None

    def fn(m0, xs):
        return jax.lax.scan(step, (jax.lax.complex(m0.mx, m0.my), m0.mz), xs)[0]

    runs = [types.SimpleNamespace(call=lambda exe=_compiled(fn, (m0, xs), {}, fuse)[0]: exe(m0, xs))
            for fuse in (True, False)]
    (fused, plain), _ = alternate_runs(runs, calls)
    outs = [np.stack([np.real(o[0]), np.imag(o[0]), o[1]]) for o in (r.call() for r in runs)]
    return {"case": f"kernel:{kind}", "n_spins": n, "spin_steps": n * steps * (1 if kind == "rf_step" else 16),
            "one_fusion_s": round(fused, 6), "plain_s": round(plain, 6), "speedup": round(plain / fused, 3),
            "max_abs_diff": float(np.abs(outs[0] - outs[1]).max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", nargs="*", default=["koma-brain-suscept", "gre-64"], choices=sorted(SCENARIOS))
    p.add_argument("--kernels", nargs="*", default=["fused"], choices=["rf_step", "fused"])
    p.add_argument("--calls", type=int, default=15)
    a = p.parse_args(argv)
    base = {"benchmark": "one_fusion", "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
            "calls": a.calls}
    for kind in a.kernels:
        print(json.dumps({**base, **_kernel(kind, a.calls)}), flush=True)
    for name in a.scenario:
        print(json.dumps({**base, **_scenario(name, a.calls)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
