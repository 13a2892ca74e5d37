"""Per-spin dynamics inside the simulation: displacement fields, spin paths and flow
(mritwin.twin.dynamics; PHYSICS.md 5 and 11)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin
from mritwin.twin import dynamics as dyn
from tests.seqkit import IDEAL, adc_at, build, hard, rf_at
from tests.simulate.test_motion import bipolar_seq, first_moment

F64 = dict(dtype=jnp.float64, scanner=IDEAL)
FWD = mt.Bloch(checkpoint=False)  # forward-only tests: no reverse-mode checkpointing (faster compile)


def _image(samples, n):
    s = np.asarray(samples[0]).reshape(n, n).T  # [kx, ky]
    return np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(s))))


def test_displacement_field_ghosts_only_the_moving_part():
    # two discs side by side along x; a cardiac-like sine field (period 4 TR) moves only the
    # disc at x < 0 along y (the phase-encoding axis): ghosts at +-n/4 pixels appear in its
    # columns and not in the static disc's columns
    n, fov, tr = 32, 0.2, 0.05
    xa, xb, rad = -0.05, 0.05, 0.02

    def mask(x, y):
        return ((x - xa) ** 2 + y ** 2 < rad ** 2) | ((x - xb) ** 2 + y ** 2 < rad ** 2)

    twin = grid_twin(n, fov, mask=mask, t2=0.005)
    seq = cartesian_gre(n, fov, tr=tr, te=3e-3, rf_spoil=False)
    moving = np.asarray(twin.position)[:, 0] < 0
    amp = np.where(moving[:, None], [0.0, 0.008, 0.0], 0.0)
    field = dyn.DisplacementField(amp, dyn.CardiacWaveform(rate=1 / (4 * tr)))
    sc = dict(dtype=jnp.float64, method=FWD)
    still = _image(mt.simulate(twin, seq, **sc).samples, n)
    img = _image(mt.simulate(twin, seq, dynamics=field, **sc).samples, n)
    c = n // 2
    ia, ib = c + int(round(xa / (fov / n))), c + int(round(xb / (fov / n)))  # disc-centre columns
    upper, lower = np.arange(c + 5, c + 12), np.arange(c - 11, c - 4)  # clear of the discs (r = 3.2 px)
    for band, target in ((upper, c + n // 4), (lower, c - n // 4)):
        ga = img[ia][band] - still[ia][band]
        gb = img[ib][band] - still[ib][band]
        assert ga.sum() > 2 * still[ia][band].sum()  # a ghost of the moving disc ...
        w = np.clip(ga, 0, None)
        assert abs((band * w).sum() / w.sum() - target) < 1.0  # ... n/4 pixels from it
        assert np.abs(gb).sum() < 0.02 * ga.sum()  # the static disc's columns are unchanged
    assert np.abs(img[ib] - still[ib]).max() < 0.02 * np.abs(img[ia] - still[ia]).max()


def test_uniform_fields_equal_rigid_motion():
    # a displacement field with the same amplitude for every spin is a rigid translation, and
    # spin paths that all follow one sampled path equal `RigidPath` (both tested against the
    # k-space shift theorem and the velocity-encoding phase in test_motion.py)
    n, fov, tr = 8, 0.2, 0.02
    twin = grid_twin(n, fov, mask=lambda x, y: x ** 2 + y ** 2 < 0.07 ** 2, t2=0.01)
    seq = cartesian_gre(n, fov, tr=tr, te=3e-3, rf_spoil=False)
    sc = dict(dtype=jnp.float64, method=FWD)
    amp = np.array([0.003, 0.008, 0.0])
    rigid = mt.simulate(twin, seq, motion=mt.PeriodicTranslation(amplitude=amp, period=4 * tr, phase=0.3), **sc)
    field = dyn.DisplacementField(amp, dyn.CardiacWaveform(rate=1 / (4 * tr), phase=0.3))
    a = np.asarray(rigid.samples)
    np.testing.assert_allclose(np.asarray(mt.simulate(twin, seq, dynamics=field, **sc).samples), a,
                               rtol=1e-10, atol=1e-10 * np.abs(a).max())
    times = np.linspace(0.0, seq.duration, 6)
    path = np.random.default_rng(0).normal(0.0, 3e-3, (6, 3))
    a = np.asarray(mt.simulate(twin, seq, motion=mt.RigidPath(times=times, translations=path), **sc).samples)
    paths = np.asarray(twin.position)[:, None, :] + path[None]
    b = np.asarray(mt.simulate(twin, seq, dynamics=dyn.SpinPaths(times, paths), **sc).samples)
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max())


def test_flow_combines_with_rigid_motion():
    # a rigid translation u plus flow v equals flow u + v; a constant rigid rotation R of a
    # twin whose spins flow with v (body frame) equals the rotated twin flowing with R v
    # (checks the first moment rotated into the body frame, R^T k1)
    n, fov = 8, 0.2
    twin = grid_twin(n, fov, t2=0.01)
    seq = cartesian_gre(n, fov, tr=0.02, te=3e-3, rf_spoil=False)
    sc = dict(dtype=jnp.float64, method=FWD)
    u, v = np.array([0.01, -0.02, 0.0]), np.array([0.0, 0.03, 0.0])
    a = np.asarray(mt.simulate(twin, seq, motion=mt.Translation(velocity=u), dynamics=dyn.Flow(velocity=v), **sc).samples)
    b = np.asarray(mt.simulate(twin, seq, dynamics=dyn.Flow(velocity=u + v), **sc).samples)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())
    ang = np.radians(30)
    path = mt.RigidPath(times=[0.0, 10.0], translations=np.zeros((2, 3)), rotations=[[0, 0, ang], [0, 0, ang]])
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    a = np.asarray(mt.simulate(twin, seq, motion=path, dynamics=dyn.Flow(velocity=v), **sc).samples)
    turned = twin.replace(position=np.asarray(twin.position) @ rot.T)
    b = np.asarray(mt.simulate(turned, seq, dynamics=dyn.Flow(velocity=rot @ v), **sc).samples)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_per_spin_flow_phase_is_2pi_gamma_m1_v():
    # each spin moves with its own velocity through a bipolar gradient: its phase relative to
    # the static run is -2 pi gamma_bar (M0 x0 + M1 v) = -2 pi gamma_bar M1 v (M0 = 0 at the
    # end; exp(-i 2 pi k.r) convention)
    seq = bipolar_seq()
    v = np.array([-0.5, 0.05, 0.2, 1.0, 0.0])
    pos = np.c_[np.linspace(-0.01, 0.01, 5), np.zeros(5), np.zeros(5)]
    twin = mt.Twin(position=pos, pd=np.ones(5), t1=np.full(5, np.inf), t2=np.full(5, np.inf))
    vel = np.c_[v, np.zeros(5), np.zeros(5)]

    def phases(**kw):
        m = np.asarray(mt.simulate(twin, seq, return_magnetization=True, method=FWD, **kw, **F64).magnetization)
        return m[:, 0] + 1j * m[:, 1]

    m0 = phases()
    expected = -2 * np.pi * mt.GAMMA_BAR * first_moment(seq) * v
    # zero velocity through the dynamics core reproduces the static engine
    np.testing.assert_allclose(phases(dynamics=dyn.Flow(velocity=0 * vel)), m0, rtol=1e-12, atol=1e-14)
    m = phases(dynamics=dyn.Flow(velocity=vel))
    err = np.angle(m / m0 * np.exp(-1j * expected))
    np.testing.assert_allclose(err, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(m), np.abs(m0), rtol=1e-12)
    assert np.ptp(expected) > 1.0  # the velocities span a wide phase range


def _spoiled_fid(flip, tr, te, n_tr, rf_dur=2e-6):
    """Hard pulses (centre at k TR + rf_dur/2), one ADC sample at TE after each centre, no
    gradients: with ideal spoiling, the FLASH signal of PHYSICS.md 5."""
    items = []
    for k in range(n_tr):
        c = k * tr + rf_dur / 2
        items += [rf_at(c, hard(flip, rf_dur)), adc_at(c + te)]
    return build(items, total=n_tr * tr)


def test_inflow_full_replacement_gives_unsaturated_signal():
    # static slab: ideal-spoiled steady state (Ernst); a slab of blood in a tube of length L
    # flowing at v = L / TR, placed so that every spin leaves the tube (and is replaced by
    # fresh magnetization) between the ADC and the next pulse: every pulse sees M0, so the
    # flowing slab gives the unsaturated signal sin(a) exp(-TE/T2) at every TR
    flip, tr, te, n_tr = np.radians(30), 10e-3, 2e-3, 80
    t1, t2 = 1.0, 0.1
    L, v = 0.01, 1.0  # tube length [m], velocity [m/s]: L / v = TR
    assert abs(L / v - tr) < 1e-15
    seq = _spoiled_fid(flip, tr, te, n_tr)
    n_f, n_s = 40, 40
    # flowing slab between z = -0.4 L and 0: it reaches the end of the tube (z = L/2)
    # between 0.5 TR and 0.9 TR, after the ADC (0.2 TR)
    zf = np.linspace(-0.4 * L, 0.0, n_f)
    pos = np.r_[np.c_[np.zeros(n_f), np.zeros(n_f), zf], np.c_[np.full(n_s, 0.02), np.zeros(n_s), np.zeros(n_s)]]
    vel = np.r_[np.tile([0.0, 0.0, v], (n_f, 1)), np.zeros((n_s, 3))]
    twin = mt.Twin(position=pos, pd=np.ones(n_f + n_s), t1=np.full(n_f + n_s, t1), t2=np.full(n_f + n_s, t2))
    flow = dyn.Flow(velocity=vel, box_min=(-np.inf, -np.inf, -L / 2), box_max=(np.inf, np.inf, L / 2))
    method = mt.Bloch(ideal_spoiling=True, checkpoint=False)
    blood_flow = dyn.Flow(velocity=vel[:n_f], box_min=flow.box_min, box_max=flow.box_max)
    blood = np.abs(np.asarray(mt.simulate(twin[:n_f], seq, dynamics=blood_flow, method=method, **F64).samples[0]))
    both = np.abs(np.asarray(mt.simulate(twin, seq, dynamics=flow, method=method, **F64).samples[0]))
    e1 = np.exp(-tr / t1)
    decay = np.exp(-te / t2)
    fresh = np.sin(flip) * decay
    ernst = np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1) * decay
    np.testing.assert_allclose(blood / n_f, fresh, rtol=1e-8)
    # the static part is in steady state up to (E1 cos a)^79 = 5e-6 of its transient
    np.testing.assert_allclose(both[-1], n_f * fresh + n_s * ernst, rtol=2e-5)
    assert blood[-1] / n_f > 2.5 * ernst  # the inflow enhancement (1 - cos a E1) / (1 - E1) = 14.3


def test_inflow_partial_replacement_matches_recursion():
    # blood filling a tube of length L at v = L / (3.5 TR): each spin is replaced every 3.5 TR
    # at its own time. Reference: a pulse-by-pulse recursion with the exact exit times
    # (ideal spoiling, instantaneous pulses): a spin that exits between the ends of pulses
    # k-1 and k is fresh (Mz = M0) at pulse k; one that exits between pulse k and its ADC
    # gives no signal at that ADC.
    flip, tr, te, n_tr = np.radians(40), 10e-3, 3e-3, 30
    t1, t2, rf_dur = 0.5, 0.08, 2e-6
    L = 0.035
    v = L / (3.5 * tr)
    n_f = 64
    z0 = -L / 2 + (np.arange(n_f) + 0.5) * L / n_f
    pos = np.c_[np.zeros(n_f), np.zeros(n_f), z0]
    twin = mt.Twin(position=pos, pd=np.ones(n_f), t1=np.full(n_f, t1), t2=np.full(n_f, t2))
    flow = dyn.Flow(velocity=(0.0, 0.0, v), box_min=(-np.inf, -np.inf, -L / 2), box_max=(np.inf, np.inf, L / 2))
    seq = _spoiled_fid(flip, tr, te, n_tr, rf_dur)
    sim = np.asarray(mt.simulate(twin, seq, dynamics=flow, method=mt.Bloch(ideal_spoiling=True, checkpoint=False), **F64).samples[0])

    ref = np.zeros(n_tr, complex)
    mz = np.ones(n_f)
    e1 = np.exp(-tr / t1)
    for k in range(n_tr):
        e_k = k * tr + rf_dur  # end of pulse k
        a_k = k * tr + rf_dur / 2 + te  # ADC k

        def exits(t0, t1_):  # did each spin cross z = L/2 in (t0, t1_]?
            return np.floor((z0 + v * t1_ + L / 2) / L) != np.floor((z0 + v * t0 + L / 2) / L)

        if k == 0:
            fresh = np.zeros(n_f, bool)
        else:
            fresh = exits(e_k - tr, e_k)
        mz = np.where(fresh, 1.0, mz)
        gone = exits(e_k, a_k)
        ref[k] = 1j * np.sin(flip) * np.exp(-te / t2) * np.sum(np.where(gone, 0.0, mz))
        mz = 1.0 + (np.where(gone, 1.0, mz * np.cos(flip)) - 1.0) * e1
    np.testing.assert_allclose(sim, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    # inflow: the flowing spins give more signal than static spins (the Ernst value)
    ernst = n_f * np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1) * np.exp(-te / t2)
    assert np.abs(sim[-5:]).mean() > 1.5 * ernst


def test_respiratory_waveform_and_patient_rates():
    ctx = mt.PatientContext(heart_rate=1.2, respiratory_rate=0.25)
    resp = dyn.DisplacementField.respiratory([0.0, 0.0, 0.01], ctx, power=2)
    card = dyn.DisplacementField.cardiac([0.0, 0.002, 0.0], ctx, harmonics=(1.0, 0.3))
    assert float(resp.waveform.rate) == 0.25 and float(card.waveform.rate) == pytest.approx(1.2)
    t = np.linspace(0.0, 8.0, 2001)
    f, fd = resp.waveform(t)
    np.testing.assert_allclose(f, np.cos(np.pi * 0.25 * t) ** 4, atol=1e-12)  # Lujan cos^(2n), n = 2
    np.testing.assert_allclose(fd[1:-1], np.gradient(f, t)[1:-1], atol=2e-3)
    f, fd = card.waveform(t)
    np.testing.assert_allclose(f, np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(4 * np.pi * 1.2 * t), atol=1e-12)
    np.testing.assert_allclose(fd[1:-1], np.gradient(f, t)[1:-1], atol=0.1)
    with pytest.raises(ValueError, match="respiratory_rate"):
        dyn.DisplacementField.respiratory([0.0, 0.0, 0.01], mt.PatientContext(heart_rate=1.0))


def test_flow_velocity_gradient_matches_finite_difference():
    # d(phase)/dv = -2 pi gamma_bar M1 through the engine (jax.grad of the flow velocity)
    seq = bipolar_seq()
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf])

    def imag(v):
        flow = dyn.Flow(velocity=jnp.stack([v, 0.0, 0.0]))
        return jnp.imag(mt.simulate(twin, seq, dynamics=flow, **F64).samples[0, 0] * jnp.exp(-0.5j * jnp.pi))

    g = float(jax.grad(imag)(jnp.asarray(0.0)))
    # s = i exp(-i 2 pi gamma M1 v): Im(s / i) = -sin(2 pi gamma M1 v), slope -2 pi gamma M1 at 0
    np.testing.assert_allclose(g, -2 * np.pi * mt.GAMMA_BAR * first_moment(seq), rtol=1e-6)


def test_dynamics_bad_input():
    twin = mt.Twin(position=np.zeros((2, 3)), pd=[1.0, 1.0], t1=[1.0, 1.0], t2=[0.1, 0.1])
    seq = bipolar_seq()
    with pytest.raises(ValueError, match=r"amplitude must have shape \(3,\) or \(n_spins, 3\) = \(2, 3\), got \(3, 3\)"):
        mt.simulate(twin, seq, dynamics=dyn.DisplacementField(np.zeros((3, 3)), dyn.CardiacWaveform(rate=1.0)))
    with pytest.raises(ValueError, match="DisplacementField.amplitude contains NaN"):
        dyn.DisplacementField([np.nan, 0, 0], dyn.CardiacWaveform(rate=1.0))
    with pytest.raises(ValueError, match="rate must be a finite frequency > 0"):
        dyn.CardiacWaveform(rate=0.0)
    with pytest.raises(ValueError, match="SpinPaths.times must be strictly increasing"):
        dyn.SpinPaths([0.0, 0.0], np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"SpinPaths.positions must have shape \(n_spins, n_times, 3\)"):
        dyn.SpinPaths([0.0, 1.0], np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="n_spins = twin.n_spins = 2"):
        mt.simulate(twin, seq, dynamics=dyn.SpinPaths([0.0, 1.0], np.zeros((5, 2, 3))))
    with pytest.raises(ValueError, match="Flow.velocity contains inf"):
        dyn.Flow(velocity=(np.inf, 0.0, 0.0))
    with pytest.raises(ValueError, match="box_max must be > box_min"):
        dyn.Flow(velocity=(1.0, 0, 0), box_min=(0, 0, 0), box_max=(1, 1, 0))
    with pytest.raises(ValueError, match="start outside the box"):
        mt.simulate(twin, seq, dynamics=dyn.Flow(velocity=(1.0, 0, 0), box_min=(0.1, -1, -1), box_max=(1, 1, 1)))
    with pytest.raises(TypeError, match="dynamics must be a mritwin dynamics model"):
        mt.simulate(twin, seq, dynamics=(0.1, 0, 0))
    with pytest.raises(TypeError, match="needs a mritwin.Sequence"):
        mt.simulate(twin, mt.discretize(seq), dynamics=dyn.Flow(velocity=(1.0, 0, 0)))
