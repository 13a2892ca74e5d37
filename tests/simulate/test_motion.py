"""Rigid motion inside the simulation (PHYSICS.md 11 and k-space shift theorem)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin
from tests.seqkit import IDEAL, hard

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def bipolar_seq(amplitude=10e-3):
    lobe = dict(rise_time=100e-6, flat_time=800e-6, fall_time=100e-6)
    return mt.Sequence([
        mt.Block(rf=hard(np.pi / 2, 2e-6)),
        mt.Block(gx=mt.TrapGrad("x", amplitude, **lobe)),
        mt.Block(gx=mt.TrapGrad("x", -amplitude, **lobe)),
        mt.Block(adc=mt.ADC(1, 2e-6)),
    ])


def first_moment(seq):
    """M1 = ∫ G t dt [T s²/m] by dense integration of the waveforms (independent reference)."""
    t = np.linspace(0, seq.duration, 400001)
    g = np.zeros_like(t)
    for start, blk in zip(seq.block_starts(), seq.blocks):
        if blk.gx is not None:
            tt, w = blk.gx.waveform()
            g += np.interp(t, start + np.asarray(tt), np.asarray(w), left=0, right=0)
    return np.trapezoid(g * t, t)


@pytest.mark.parametrize("v", [-0.5, 0.05, 0.2, 1.0])
def test_velocity_encoding_phase(v):
    # constant velocity v along x through a bipolar gradient: the phase relative to a static
    # spin is 2 pi gamma_bar M1 v in magnitude; with the exp(-i 2 pi k.r) convention it is
    # -2 pi gamma_bar M1 v
    seq = bipolar_seq()
    twin = mt.Twin(position=[[0.0, 0.0, 0.0]], pd=[1.0], t1=[np.inf], t2=[np.inf])
    s0 = complex(mt.simulate(twin, seq, **F64).samples[0, 0])
    s = complex(mt.simulate(twin, seq, motion=mt.Translation(velocity=(v, 0, 0)), **F64).samples[0, 0])
    expected = -2 * np.pi * mt.GAMMA_BAR * first_moment(seq) * v
    wrapped = np.angle(np.exp(1j * (np.angle(s / s0) - expected)))
    assert abs(wrapped) < 1e-5
    assert abs(s) == pytest.approx(abs(s0), rel=1e-12)


def test_a_traced_velocity_gives_the_closed_form_derivative_and_keeps_the_k_vectors_concrete():
    """d(phase)/dv = -2 pi gamma_bar M1 (PHYSICS.md 11) through `jax.grad`; under the trace a
    translation leaves the sequence's k-vectors concrete (it does not rotate them), so the
    planners that need concrete steps still run: only the per-step phases are traced."""
    from mritwin.sequence.discretize import discretize

    seq = bipolar_seq()
    twin = mt.Twin(position=[[0.0, 0.0, 0.0]], pd=[1.0], t1=[np.inf], t2=[np.inf])

    def phase(v):
        return jnp.angle(mt.simulate(twin, seq, motion=mt.Translation(velocity=jnp.stack([v, 0.0, 0.0])),
                                     **F64).samples[0, 0])

    g = float(jax.grad(phase)(jnp.float64(0.05)))
    assert g == pytest.approx(-2 * np.pi * mt.GAMMA_BAR * first_moment(seq), rel=1e-5)
    static = np.asarray(discretize(seq).kstep)

    @jax.jit
    def traced(v):
        d = discretize(seq, motion=mt.Translation(velocity=v))
        assert not isinstance(d.kstep, jax.core.Tracer) and isinstance(d.cyc0, jax.core.Tracer)
        np.testing.assert_array_equal(np.asarray(d.kstep), static)
        return d.cyc0

    traced(jnp.asarray([0.1, 0.0, 0.0]))


def test_a_traced_translation_prepares_the_pulses_it_cannot_change():
    """Steps without gradient moments keep their phase under any rigid motion
    (`DiscreteSequence.cyc0_fixed`): under a traced translation a hard pulse is still
    prepared (compiling the 12 x 12 GRE's velocity gradient: 13 s -> 2 s), a slice pulse
    (its gradient on) is not; the gradient equals a central difference of concrete
    motions."""
    from mritwin.sequence.discretize import discretize
    from mritwin.simulate.prepared_rf import plan_prepared_rf

    hard_gre = cartesian_gre(8, 0.2)
    slice_gre = mt.sequences.gre(scanner=IDEAL, fov=0.2, matrix=8, tr=8e-3, flip_angle_deg=20.0, slice_thickness=5e-3)

    @jax.jit
    def planned(v):  # inside the trace: NaN (motion-dependent) exactly where a gradient moment is
        d = discretize(hard_gre, motion=mt.Translation(velocity=v))
        n = d.n_real_steps
        steps, k, rf = np.asarray(d.cyc0_fixed)[:n], np.asarray(d.kstep)[:n], np.asarray(d.kind)[:n] == 0
        assert isinstance(d.cyc0, jax.core.Tracer)
        assert np.all(np.isnan(steps[np.any(k != 0, 1)])) and np.all(steps[rf] == 0.0)
        assert plan_prepared_rf(d, 3)[1] is not None
        assert plan_prepared_rf(discretize(slice_gre, motion=mt.Translation(velocity=v)), 3)[1] is None
        return d.cyc0

    planned(jnp.asarray([0.0, 0.0, 0.1]))

    # a 32-line GRE: a pulse whose block starts where the previous TR's trapezoid ends
    # (its end a rounding past the step bound) picks up a ~1e-24 1/m moment of rounding;
    # it is no gradient, and every pulse is prepared, as on the static twin (15 of 32 were)
    long_gre = cartesian_gre(32, 0.2)
    static = plan_prepared_rf(discretize(long_gre), 3)[0]
    assert np.sum(np.asarray(static.kind)[:static.n_real_steps] == 3) == 32

    @jax.jit
    def prepared(v):
        d = plan_prepared_rf(discretize(long_gre, motion=mt.Translation(velocity=v)), 3)[0]
        assert np.sum(np.asarray(d.kind)[:d.n_real_steps] == 3) == 32 and d.n_real_steps == static.n_real_steps
        return d.cyc0

    prepared(jnp.asarray([0.02, -0.05, 0.01]))
    tw = grid_twin(8, 0.2)

    def loss(v):
        s = mt.simulate(tw, hard_gre, motion=mt.Translation(velocity=v), dtype=jnp.float64).samples
        return jnp.sum(jnp.abs(s) ** 2)

    v, h = np.array([0.02, -0.05, 0.01]), 1e-6
    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(v)))
    for axis in (0, 1):  # (in-plane; the sequence has no z gradient: 0)
        e = np.eye(3)[axis]
        fd = (float(loss(jnp.asarray(v + h * e))) - float(loss(jnp.asarray(v - h * e)))) / (2 * h)
        assert g[axis] == pytest.approx(fd, rel=1e-6)
    assert g[2] == 0.0


@pytest.mark.slow
def test_the_docs_velocity_fit_recovers_the_velocity(capsys):
    """docs/motion.md's example: a phase-encoding velocity of -2 cm/s found from 0 by
    `mritwin.optimize` through the traced motion."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "motion.md"
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S) if "optimize" in c]
    ns = {}
    exec(compile(code, str(doc), "exec"), ns)
    assert "estimated velocity: -2.000 cm/s" in capsys.readouterr().out
    assert float(ns["res"].params) == pytest.approx(-0.02, rel=1e-3)


def test_window_groups_under_a_translation_equal_every_spin(monkeypatch):
    """A translation only adds a phase common to all spins, so the windows still run on
    groups of spins (`engine._group_plan`): samples, magnetization and the velocity
    gradient equal the ungrouped run's (``group_spins=False``), and stepping."""
    from mritwin.simulate import engine

    seq, tw = cartesian_gre(16, 0.2), grid_twin(16, 0.2)
    tw = tw.replace(coil_sensitivity=jnp.asarray(np.stack([np.ones(tw.n_spins), np.linspace(0.5, 1.5, tw.n_spins)])
                                                 + 0j))
    planned = []
    original = engine._group_plan
    monkeypatch.setattr(engine, "_group_plan", lambda *a: planned.append(original(*a)) or planned[-1])
    for mo in (mt.Translation(velocity=(0.02, -0.05, 0.01), offset=(1e-3, 0.0, 0.0)),
               mt.PeriodicTranslation(amplitude=(0.0, 4e-3, 0.0), period=0.05)):
        kw = dict(motion=mo, dtype=jnp.float64)
        planned.clear()
        got = mt.simulate(tw, seq, return_magnetization=True, **kw)
        assert planned and planned[0] is not None  # (on groups)
        ref = mt.simulate(tw, seq, return_magnetization=True, method=mt.Bloch(group_spins=False), **kw)
        steps = mt.simulate(tw, seq, method=mt.Bloch(windows=False), **kw).samples
        scale = float(jnp.abs(ref.samples).max())
        assert float(jnp.abs(got.samples - ref.samples).max()) < 1e-12 * scale
        np.testing.assert_allclose(np.asarray(got.magnetization), np.asarray(ref.magnetization), atol=1e-12)
        assert float(jnp.abs(got.samples - steps).max()) < 1e-9 * scale

    def loss(v, method):
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, motion=mt.Translation(velocity=v), dtype=jnp.float64,
                                           method=method).samples) ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    v = jnp.asarray([0.02, -0.05, 0.01])
    g, g_ref = grad(v, mt.Bloch()), grad(v, mt.Bloch(group_spins=False))
    assert float(jnp.abs(g - g_ref).max()) < 1e-12 * float(jnp.abs(g_ref).max())


def test_rigid_shift_gives_linear_kspace_phase():
    n, fov = 16, 0.2
    # T2 = 3 ms << TR = 100 ms: no coherence survives from earlier lines, so each sample is
    # the Fourier transform of the (shifted) object at its own k
    twin = grid_twin(n, fov, mask=lambda x, y: x ** 2 + (y - 0.02) ** 2 < 0.05 ** 2, t2=0.003)
    seq = cartesian_gre(n, fov, tr=0.1, te=3e-3, rf_spoil=False)
    d = np.array([0.007, -0.011, 0.0])
    moved = np.asarray(mt.simulate(twin, seq, motion=mt.Translation(offset=d), **F64).samples[0])
    static = mt.simulate(twin, seq, **F64)
    k = np.asarray(static.kspace)
    np.testing.assert_allclose(moved, np.asarray(static.samples[0]) * np.exp(-2j * np.pi * k @ d),
                               rtol=1e-9, atol=1e-12)
    shifted = twin.replace(position=np.asarray(twin.position) + d)
    np.testing.assert_allclose(moved, np.asarray(mt.simulate(shifted, seq, **F64).samples[0]),
                               rtol=1e-9, atol=1e-12)


def test_constant_rotation_equals_rotated_twin():
    rng = np.random.default_rng(2)
    pos = rng.uniform(-0.05, 0.05, (30, 3)) * [1, 1, 0]
    twin = mt.Twin(position=pos, pd=np.ones(30), t1=np.ones(30), t2=np.full(30, 0.05))
    seq = cartesian_gre(8, 0.2, tr=0.02, te=3e-3, rf_spoil=False)
    ang = np.radians(30)
    path = mt.RigidPath(times=[0.0, 10.0], translations=np.zeros((2, 3)),
                        rotations=[[0, 0, ang], [0, 0, ang]])
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    a = np.asarray(mt.simulate(twin, seq, motion=path, **F64).samples)
    b = np.asarray(mt.simulate(twin.replace(position=pos @ rot.T), seq, **F64).samples)
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


def test_periodic_motion_makes_ghosts_along_phase_encoding():
    # breathing-like motion along y with a period of 4 TR: line j sees d(j TR); the k-space
    # modulation of period 4 lines puts ghosts at +-n/4 pixels along y
    n, fov, tr = 32, 0.2, 0.05
    twin = grid_twin(n, fov, mask=lambda x, y: x ** 2 + y ** 2 < 0.03 ** 2, t2=0.005)
    seq = cartesian_gre(n, fov, tr=tr, te=3e-3, rf_spoil=False)
    motion = mt.PeriodicTranslation(amplitude=(0, 0.008, 0), period=4 * tr)

    def image(**kw):
        s = np.asarray(mt.simulate(twin, seq, **kw).samples[0]).reshape(n, n).T  # [kx, ky]
        return np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(s))))

    still, moving = image(), image(motion=motion)
    c = n // 2
    ghost = moving[c] - still[c]  # profile along y through the object's centre
    # bands of +-3 pixels around the expected ghost centres c +- n/4, clear of the object
    # (radius 4.8 pixels)
    upper, lower = np.arange(c + 5, c + 12), np.arange(c - 11, c - 4)
    for band in (upper, lower):
        assert ghost[band].sum() > 2 * still[c][band].sum()  # well above the Gibbs ringing
    # each ghost is centred n/4 = 8 pixels from the object (its edges are brightest, so use
    # the centroid over a band symmetric about the expected centre)
    for band, target in ((upper, c + n // 4), (lower, c - n // 4)):
        w = np.clip(ghost[band], 0, None)
        assert abs((band * w).sum() / w.sum() - target) < 1.0


def test_motion_bad_input():
    with pytest.raises(ValueError, match="3-vector"):
        mt.Translation(velocity=(1.0, 2.0))
    with pytest.raises(ValueError, match="period must be > 0"):
        mt.PeriodicTranslation(amplitude=(0, 0, 1e-3), period=0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        mt.RigidPath(times=[0.0, 0.0], translations=np.zeros((2, 3)))
    twin = mt.Twin(position=[[0.0, 0.0, 0.0]], pd=[1.0], t1=[1.0], t2=[0.1])
    with pytest.raises(TypeError, match="motion model"):
        mt.simulate(twin, bipolar_seq(), motion=(0.1, 0, 0))


@pytest.mark.slow
def test_translation_keeps_adc_windows_exact():
    """A translation adds, per ADC sample, a phase common to all spins: windows stay windows
    (exact and NUFFT), equal to stepping every sample; a rotation still steps them."""
    from mritwin.sequence.discretize import WINDOW_STEP, discretize

    seq = cartesian_gre(12, 0.2)
    tw = grid_twin(12, 0.2, mask=lambda x, y: x ** 2 + y ** 2 < 0.07 ** 2)
    tw = tw.replace(delta_f=jnp.asarray(np.random.default_rng(0).uniform(-20, 20, tw.n_spins)))
    for mo in (mt.Translation(velocity=(0.02, -0.05, 0.0), offset=(1e-3, 0.0, 0.0)),
               mt.PeriodicTranslation(amplitude=(0.0, 0.004, 0.0), period=0.05)):
        assert np.sum(np.asarray(discretize(seq, motion=mo).kind) == WINDOW_STEP) == 12
        ref = mt.simulate(tw, seq, motion=mo, dtype=jnp.float64, method=mt.Bloch(windows=False)).samples
        scale = float(jnp.max(jnp.abs(ref)))
        got = mt.simulate(tw, seq, motion=mo, dtype=jnp.float64).samples
        assert float(jnp.max(jnp.abs(got - ref))) < 1e-10 * scale
        got = mt.simulate(tw, seq, motion=mo, dtype=jnp.float64,
                          method=mt.Bloch(readout=mt.NUFFTReadout(1e-9))).samples
        assert float(jnp.max(jnp.abs(got - ref))) < 1e-9 * float(jnp.sum(tw.pd))

    def loss(v, method):
        mo = mt.Translation(velocity=v)
        return jnp.sum(jnp.abs(mt.simulate(tw, seq, motion=mo, dtype=jnp.float64, method=method).samples) ** 2)

    v = jnp.asarray([0.02, -0.05, 0.0])
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_ref = grad(v, mt.Bloch(windows=False))
    for method in (mt.Bloch(), mt.Bloch(reversible=True)):
        g = grad(v, method)
        assert float(jnp.max(jnp.abs(g - g_ref))) < 1e-8 * float(jnp.max(jnp.abs(g_ref)))
    rot = mt.RigidPath(times=[0.0, 1.0], translations=[[0.0, 0.0, 0.0]] * 2, rotations=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    assert not np.any(np.asarray(discretize(seq, motion=rot).kind) == WINDOW_STEP)
