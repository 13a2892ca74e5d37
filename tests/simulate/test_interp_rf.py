"""Interpolated RF pulses (`Bloch(rf_interpolation=tol)`): each pulse's affine map as a
Chebyshev series in the offset v = γ̄G·r + Δf per tissue. Checked against the closed-form
hard-pulse rotation, against stepping every raster sample (float64), and for the cases
where the engine must step instead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.simulate import interp_rf
from mritwin.simulate.interp_rf import interpolated_pulse, plan_pulse_interpolation
from mritwin.simulate.kernels import Spins
from mritwin.simulate.prepared_rf import PulseTable
from tests.seqkit import IDEAL

jax.config.update("jax_enable_x64", True)

EXACT = mt.Bloch(group_spins=False)


def _hard_table(b_hz: float, duration: float, steps: int) -> PulseTable:
    """A hard pulse of B1 = b_hz/γ̄ as ``steps`` raster steps without a gradient."""
    dt = np.full((1, steps), duration / steps)
    return PulseTable(dt=dt, k=np.zeros((1, steps, 3)), b1dt=(b_hz * dt).astype(complex), c0=np.zeros_like(dt))


def _evaluate(plan, twin, p=0):
    """Every spin's interpolated map (n, 12): A row-major, then b."""
    tab = plan.tables
    n = twin.n_spins
    pos = np.asarray(twin.position)
    sp = Spins(x=jnp.asarray(pos[:, 0]), y=jnp.asarray(pos[:, 1]), z=jnp.asarray(pos[:, 2]), pd=jnp.ones(n),
               r1=jnp.zeros(n), r2=jnp.zeros(n), df=jnp.asarray(twin.delta_f), b1=jnp.ones(n), coil_re=None,
               coil_im=None, tissue=jnp.asarray(plan.tissue))
    out = interpolated_pulse(sp, jnp.asarray(tab.coef[p]), jnp.asarray(tab.rate[p]), tab.centre[p], tab.half[p])
    return np.stack([np.asarray(out.a[i][j]) for i in range(3) for j in range(3)]
                    + [np.asarray(out.b[i]) for i in range(3)], 1)


@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_hard_pulse_off_resonance_matches_the_closed_form(tol):
    """Without relaxation a hard pulse rotates by 2πT·w about (b, 0, v)/w, w = sqrt(b² + v²):
    A_zz = 1 - 2 (b/w)² sin²(πTw), whatever the sense of rotation; A is a rotation
    (orthogonal) and b = 0."""
    b, duration = 1250.0, 0.2e-3  # 90 degrees
    rng = np.random.default_rng(1)
    v = np.r_[-3000.0, 3000.0, rng.uniform(-3000, 3000, 400)]
    twin = mt.Twin(position=np.zeros((v.size, 3)), pd=np.ones(v.size), t1=np.full(v.size, np.inf),
                   t2=np.full(v.size, np.inf), delta_f=v)
    plan = plan_pulse_interpolation(twin, _hard_table(b, duration, 40), tol, jnp.float64)
    assert plan.use[0] and plan.error[0] <= tol
    maps = _evaluate(plan, twin)
    w = np.hypot(b, v)
    azz = 1 - 2 * (b / w) ** 2 * np.sin(np.pi * duration * w) ** 2
    assert np.abs(maps[:, 8] - azz).max() < tol
    a = maps[:, :9].reshape(-1, 3, 3)
    assert np.abs(a @ a.transpose(0, 2, 1) - np.eye(3)).max() < 4 * tol
    assert np.abs(maps[:, 9:]).max() < tol
    # the series is shorter for the looser tolerance
    assert plan.n_terms[0] >= 9


def test_series_length_follows_the_offset_range():
    twin_small = mt.Twin(position=np.zeros((3, 3)), pd=np.ones(3), t1=np.ones(3), t2=np.full(3, 0.1),
                         delta_f=np.array([-50.0, 0.0, 50.0]))
    twin_wide = twin_small.replace(delta_f=np.array([-20e3, 0.0, 20e3]))
    tab = _hard_table(1250.0, 0.2e-3, 400)
    small = plan_pulse_interpolation(twin_small, tab, 1e-7, jnp.float64)
    wide = plan_pulse_interpolation(twin_wide, tab, 1e-7, jnp.float64)
    assert small.use[0] and wide.use[0]
    assert small.n_terms[0] < wide.n_terms[0]


def _slice_twin(n=12, seed=0, nz=1):
    """A 2D slice (or ``nz`` slices through the slab) with a field map and four tissues."""
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - n / 2) * 0.2 / n
    z = np.linspace(-4e-3, 4e-3, nz) if nz > 1 else np.zeros(1)
    x, y, zz = np.meshgrid(c, c, z, indexing="ij")
    m = x.size
    tissue = rng.integers(0, 4, m)
    t1 = np.array([0.8, 1.2, 0.3, 4.0])[tissue]
    t2 = np.array([0.07, 0.1, 0.04, 2.0])[tissue]
    df = 300.0 * np.exp(-((x.ravel() - 0.03) ** 2 + y.ravel() ** 2) / 0.03 ** 2) + 400.0 * y.ravel()
    return mt.Twin(position=np.c_[x.ravel(), y.ravel(), zz.ravel()], pd=rng.uniform(0.5, 1, m), t1=t1, t2=t2,
                   delta_f=df + np.where(tissue == 2, -420.0, 0.0))


def _epi_like(n=12, fov=0.2, tr_count=1):
    """A 2 ms slice-selective sinc excitation (2000 raster steps) and Cartesian readouts."""
    dk = 1 / fov
    dwell = 20e-6
    amp = dk / (dwell * IDEAL.gamma_bar)
    blocks = []
    for _ in range(tr_count):
        rf, gz, gzr = mt.make_sinc_pulse(np.radians(70), 2e-3, slice_thickness=5e-3, scanner=IDEAL)
        blocks += [mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr)]
        for j in range(n):
            gx = mt.make_trapezoid("x", amplitude=amp * (-1) ** j, flat_time=n * dwell, scanner=IDEAL)
            gy = mt.make_trapezoid("y", area=(j - n / 2) * dk if j == 0 else dk, duration=0.3e-3, scanner=IDEAL)
            blocks += [mt.Block(gy=gy), mt.Block(gx=gx, adc=mt.ADC(n, dwell, delay=gx.rise_time))]
        blocks.append(mt.Block(duration=5e-3))
    return mt.Sequence(blocks, {"FOV": [fov, fov, 0.0]})


def _used(nz=1):
    """The last simulation interpolated its one pulse (a slab needs a longer series)."""
    (_, use, n_terms, errors, _), = interp_rf._PLANS.values()
    assert use.tolist() == [True]
    assert n_terms[0] > (33 if nz > 1 else 4)
    return n_terms[0]


@pytest.mark.parametrize("nz", [1, 5])
@pytest.mark.slow
def test_simulation_equals_stepping_in_float64(nz):
    """Field map, chemical shift, relaxation during the pulse; one slice (v = Δf) and a slab
    across the slice profile (v = γ̄Gz z + Δf)."""
    twin = _slice_twin(nz=nz)
    seq = _epi_like()
    ref = mt.simulate(twin, seq, dtype=jnp.float64, method=EXACT, return_magnetization=True)
    interp_rf._PLANS.clear()
    got = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(rf_interpolation=1e-9),
                      return_magnetization=True)
    _used(nz)
    scale = np.abs(ref.samples).max()
    assert np.abs(got.samples - ref.samples).max() < 5e-8 * scale
    assert np.abs(np.asarray(got.magnetization) - np.asarray(ref.magnetization)).max() < 5e-8


@pytest.mark.slow
def test_a_translating_twin_equals_stepping_in_float64():
    """A translation through the slice adds a phase common to all spins to every raster
    step; it is part of the interpolated pulse (stepped at the nodes with it)."""
    twin = _slice_twin()
    seq = _epi_like()
    motion = mt.Translation(velocity=(0.01, 0.02, 0.05))
    kw = dict(dtype=jnp.float64, motion=motion, scanner=IDEAL)
    ref = mt.simulate(twin, seq, method=EXACT, **kw).samples
    interp_rf._PLANS.clear()
    got = mt.simulate(twin, seq, method=mt.Bloch(rf_interpolation=1e-9), **kw).samples
    _used()
    still = mt.simulate(twin, seq, method=EXACT, dtype=jnp.float64, scanner=IDEAL).samples
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() < 5e-8 * scale
    assert np.abs(still - ref).max() > 1e-3 * scale  # (the motion matters)


@pytest.mark.slow
def test_float32_error_stays_at_stepping_rounding():
    twin = _slice_twin(16)
    seq = _epi_like(16)
    truth = mt.simulate(twin, seq, dtype=jnp.float64, method=EXACT).samples
    stepped = mt.simulate(twin, seq, dtype=jnp.float32, method=EXACT).samples
    interp_rf._PLANS.clear()
    interp = mt.simulate(twin, seq, dtype=jnp.float32, method=mt.Bloch(rf_interpolation=1e-6)).samples
    _used()
    scale = np.abs(truth).max()
    err_stepped = np.abs(np.asarray(stepped) - truth).max() / scale
    err_interp = np.abs(np.asarray(interp) - truth).max() / scale
    assert err_interp < max(2 * err_stepped, 1e-5)


def test_the_pulse_is_not_stepped_per_spin():
    """The interpolated pulse becomes one step; the plan is remembered for the same content."""
    twin = _slice_twin()
    seq = _epi_like()
    interp_rf._PLANS.clear()
    mt.simulate(twin, seq, method=mt.Bloch(rf_interpolation=1e-6))
    assert len(interp_rf._PLANS) == 1
    (_, use, n_terms, errors, reasons), = interp_rf._PLANS.values()
    assert use.tolist() == [True] and reasons == ("",)
    assert 4 < n_terms[0] <= 129 and errors[0] <= 1e-6
    mt.simulate(twin.replace(pd=twin.pd * 2), seq, method=mt.Bloch(rf_interpolation=1e-6))
    assert len(interp_rf._PLANS) == 1  # PD does not enter the series


def test_a_gradient_changing_during_the_pulse_is_stepped():
    """RF over a gradient ramp: the map depends on position and Δf separately."""
    dt = np.full((1, 50), 2e-6)
    k = np.zeros((1, 50, 3))
    k[0, :, 2] = np.linspace(0, 40.0, 50) * dt[0]
    tab = PulseTable(dt=dt, k=k, b1dt=(1000.0 * dt).astype(complex), c0=np.zeros_like(dt))
    twin = _slice_twin(nz=3)
    plan = plan_pulse_interpolation(twin, tab, 1e-6, jnp.float64)
    assert not plan.use[0] and "gradient changes" in plan.reason[0]


def test_falls_back_when_the_twin_has_too_many_tissues():
    twin = _slice_twin()
    many = twin.replace(t2=np.linspace(0.05, 0.1, twin.n_spins))
    assert plan_pulse_interpolation(many, _hard_table(1250.0, 0.2e-3, 40), 1e-6, jnp.float64) is None
    seq = _epi_like()
    ref = mt.simulate(many, seq, dtype=jnp.float64, method=EXACT).samples
    got = mt.simulate(many, seq, dtype=jnp.float64, method=mt.Bloch(rf_interpolation=1e-6)).samples
    assert np.abs(got - ref).max() < 1e-11 * np.abs(ref).max()


def test_derivatives_trace_through_exact_stepping():
    """With T2 traced the plan cannot be made: the pulse is stepped and the derivative is
    the exact one."""
    twin = _slice_twin(8)
    seq = _epi_like(8)
    dseq = mt.discretize(seq)

    def loss(t2, method):
        s = mt.simulate(twin.replace(t2=t2), dseq, method=method, dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(s) ** 2)

    t2 = jnp.asarray(twin.t2)
    g_ref = jax.grad(loss)(t2, EXACT)
    g = jax.grad(loss)(t2, mt.Bloch(rf_interpolation=1e-6))
    assert np.abs(g - g_ref).max() <= 1e-9 * np.abs(g_ref).max()


@pytest.mark.parametrize("bad", [0.0, -1e-6, 0.5, "1e-6"])
def test_bad_tolerance_is_refused(bad):
    with pytest.raises(ValueError, match="rf_interpolation"):
        mt.Bloch(rf_interpolation=bad)
