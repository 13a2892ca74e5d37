"""Shaped RF: small-tip slice profile (PHYSICS.md 9), a 90-degree profile against the
Cayley-Klein product of its samples, slice offsets through the RF frequency,
and convergence of the RF step against an exact matrix exponential."""

import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from tests.seqkit import IDEAL, exact_constant_pulse

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def column(z):
    n = z.size
    return mt.Twin(position=np.c_[0 * z, 0 * z, z], pd=np.ones(n), t1=np.full(n, np.inf),
                   t2=np.full(n, np.inf))


def excite(z, flip, thickness, freq=0.0, phase=0.0, duration=2e-3, tbw=4.0):
    rf, gz, gzr = mt.make_sinc_pulse(flip, duration, time_bw_product=tbw, slice_thickness=thickness,
                                     scanner=IDEAL)
    if freq or phase:
        rf = mt.RF(rf.amplitude, rf.shape, phase_offset=phase, freq_offset=freq, delay=rf.delay,
                   raster=rf.raster, center=rf.center, use="excitation")
    seq = mt.Sequence([mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr), mt.Block(adc=mt.ADC(1, 1e-6))])
    sig = mt.simulate(column(z), seq, return_magnetization=True, **F64)
    m = np.asarray(sig.magnetization)
    return m[:, 0] + 1j * m[:, 1], rf, gz


def test_small_tip_profile_is_fourier_transform_of_envelope():
    # |Mxy(z)| ~ 2 pi gamma_bar |FT{B1}(gamma_bar G z)| for small flips; width TBW/(T gamma_bar G)
    thickness, flip = 5e-3, np.radians(10)
    z = np.linspace(-10e-3, 10e-3, 401)
    mxy, rf, gz = excite(z, flip, thickness)
    t = rf.sample_times()
    b1 = np.asarray(rf.signal)
    f = mt.GAMMA_BAR * float(gz.amplitude) * z
    ft = 2 * np.pi * mt.GAMMA_BAR * np.abs(
        (b1[None, :] * np.exp(-2j * np.pi * f[:, None] * (t[None, :] - rf.center))).sum(1) * rf.raster)
    # small-tip approximation error is O(flip^2): < 1 % of the peak at 10 degrees
    assert np.max(np.abs(np.abs(mxy) - ft)) < 0.01 * np.sin(flip)
    np.testing.assert_allclose(np.abs(mxy).max(), np.sin(flip), rtol=1e-2)
    half = np.abs(mxy) >= np.abs(mxy).max() / 2
    fwhm = z[half].max() - z[half].min()
    np.testing.assert_allclose(fwhm, thickness, rtol=0.05)
    # the slice is refocused: flat phase across the slice
    inside = np.abs(z) < thickness / 4
    assert np.ptp(np.angle(mxy[inside])) < 0.02


def test_large_tip_sinc_profile_is_the_cayley_klein_product():
    """A 90-degree sinc's whole slice profile (2 000 samples, past the small-tip regime)
    against an independent float64 product of the samples' exact rotations in
    Cayley-Klein form (Pauly et al. 1991, as SigPy's `abrm_nd`), built here from the
    pulse's own samples and the gradients' areas, not from mritwin's discretization: each
    1 us sample rotates about (2 pi gamma_bar B1 dt, 2 pi gamma_bar G z dt); the ramp-down and
    rewinder add the phase of their area. In mritwin's left-handed frame Mx + i My is the
    complex conjugate of that right-handed result (docs/conventions.md; B1 is real here)."""
    thickness = 5e-3
    z = np.linspace(-15e-3, 15e-3, 241)
    mxy, rf, gz = excite(z, np.pi / 2, thickness)
    _, _, gzr = mt.make_sinc_pulse(np.pi / 2, 2e-3, time_bw_product=4.0, slice_thickness=thickness,
                                   scanner=IDEAL)
    b1 = np.asarray(rf.signal, np.complex128)
    assert np.all(b1.imag == 0) and rf.delay == gz.rise_time  # the pulse sits on the flat top
    g = mt.GAMMA_BAR * float(gz.amplitude)  # [Hz/m]
    a, b = np.ones(z.size, complex), np.zeros(z.size, complex)
    for sample in b1:
        w = 2 * np.pi * mt.GAMMA_BAR * sample * rf.raster  # [rad]
        om = 2 * np.pi * g * z * rf.raster
        phi = np.sqrt(abs(w) ** 2 + om ** 2)
        c, s = np.cos(phi / 2), np.sin(phi / 2) / np.where(phi > 0, phi, 1.0)
        av, bv = c - 1j * om * s, -1j * w * s
        a, b = av * a - np.conj(bv) * b, bv * a + np.conj(av) * b
    flat_after = gz.flat_time - rf.n_samples * rf.raster  # flat top left after the last sample
    area = float(gz.amplitude) * (flat_after + gz.fall_time / 2) + float(gzr.area)  # [T s/m]
    ref = 2 * np.conj(a) * b * np.exp(2j * np.pi * mt.GAMMA_BAR * area * z)  # precession: e^{+i om}
    assert abs(ref[z.size // 2]) > 0.999999  # 90 degrees at the slice centre
    np.testing.assert_allclose(mxy, np.conj(ref), rtol=0, atol=1e-12)  # measured 2.6e-14


def test_slice_offset_through_frequency_offset():
    # Pulseq convention: freq = gamma_bar G z0 excites the slice at +z0; the phase offset
    # -2 pi f t_c (Pulseq's centring) gives the same phase as an on-centre slice.
    thickness, flip, z0 = 4e-3, np.radians(10), 6e-3
    z = np.linspace(-12e-3, 12e-3, 481)
    m_c, rf, gz = excite(z, flip, thickness)
    f = mt.GAMMA_BAR * float(gz.amplitude) * z0
    m_o, *_ = excite(z, flip, thickness, freq=f, phase=-2 * np.pi * f * rf.center)
    w = np.abs(m_o)
    centroid = (w * z).sum() / w.sum()
    np.testing.assert_allclose(centroid, z0, atol=0.05e-3)
    k_c, k_o = np.argmax(np.abs(m_c)), np.argmax(w)
    assert abs(np.angle(m_o[k_o] / m_c[k_c])) < 0.05


@pytest.mark.parametrize("rf_dt", [None, 0.25e-3])
def test_block_pulse_with_frequency_offset_closed_form(rf_dt):
    """A block pulse of frequency offset f and phase φ, on a spin off resonance by Δf (no
    relaxation: a block pulse is one step, exact only without it): in the frame turning with the pulse (B1 = conj(a e^{iφ}) constant, spin
    off resonance by Δf - f) the pulse is one constant-field rotation (4x4 expm); back in
    the simulation frame the transverse part turns by e^{-i 2π f T}, then precesses freely
    at Δf until the ADC sample. A block pulse is one held sample, so before the frame
    followed the pulse its modulation was frozen at the centre: this needs the frame, with
    (rf_dt = T/4) and without grouping."""
    T, flip, f, phi = 1e-3, np.pi / 2, 1700.0, 0.6
    df, t1, t2, t_s = f + 250.0, np.inf, np.inf, 0.4e-3
    rf = mt.make_block_pulse(flip, T, phase_offset=phi, freq_offset=f, delay=0.0, scanner=IDEAL)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2], delta_f=[df])
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 2 * t_s))])  # (one sample at dwell/2 = t_s)
    sig = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=rf_dt), return_magnetization=True, **F64)
    b1 = np.conj(complex(np.asarray(rf.signal)[0]))
    mp = exact_constant_pulse(b1, df - f, t1, t2, T)
    mxy_end = (mp[0] + 1j * mp[1]) * np.exp(-2j * np.pi * f * T)
    expected = mxy_end * np.exp(-2j * np.pi * df * t_s)
    np.testing.assert_allclose(complex(np.asarray(sig.samples)[0, 0]), expected, atol=1e-9)
    m = np.asarray(sig.magnetization[0])  # the end of the sequence: after the ADC block (2 t_s)
    np.testing.assert_allclose(m[0] + 1j * m[1], mxy_end * np.exp(-4j * np.pi * df * t_s), atol=1e-9)
    np.testing.assert_allclose(m[2], mp[2], atol=1e-9)
    assert abs(expected) > 0.3  # (a real signal: the pulse tipped the spin)


def test_grouped_rf_keeps_an_off_centre_slice():
    """``rf_dt`` averages B1 over steps of the pulse's own frame (a smooth envelope), so an
    off-centre slice keeps its profile: a 2 ms sinc at z0 = 15 mm stepped in 20 us groups
    matches the raster-stepped profile to 1e-3 of the peak everywhere on +-100 mm. Averaging
    the frequency-modulated samples instead aliased the slice to z0 - 1/(γ̄ G rf_dt)
    (-35 mm here) with 5 % of its signal at 20 us and 32 % at 50 us."""
    thickness, flip, z0 = 5e-3, np.radians(15), 15e-3
    z = np.linspace(-100e-3, 100e-3, 801)
    rf, gz, gzr = mt.make_sinc_pulse(flip, 2e-3, time_bw_product=4.0, slice_thickness=thickness,
                                     scanner=IDEAL)
    f = mt.GAMMA_BAR * float(gz.amplitude) * z0
    rf = mt.RF(rf.amplitude, rf.shape, phase_offset=-2 * np.pi * f * rf.center, freq_offset=f,
               delay=rf.delay, raster=rf.raster, center=rf.center, use="excitation")
    seq = mt.Sequence([mt.Block(rf=rf, gz=gz), mt.Block(gz=gzr), mt.Block(adc=mt.ADC(1, 1e-6))])

    def profile(rf_dt):
        m = np.asarray(mt.simulate(column(z), seq, method=mt.Bloch(rf_dt=rf_dt), return_magnetization=True,
                                   **F64).magnetization)
        return m[:, 0] + 1j * m[:, 1]

    ref = profile(None)
    peak = np.abs(ref).max()
    np.testing.assert_allclose(peak, np.sin(flip), rtol=1e-2)
    assert abs(z[np.argmax(np.abs(ref))] - z0) < 0.5e-3
    assert np.abs(profile(20e-6) - ref).max() < 1e-3 * peak
    # 50 us steps: the envelope's own variation within a step is left (3 %), no alias
    coarse = profile(50e-6)
    assert np.abs(coarse - ref).max() < 0.04 * peak
    assert np.abs(coarse[np.abs(z - (z0 - 50e-3)) < 2e-3]).max() < 0.04 * peak


@pytest.mark.slow
def test_rf_step_converges_with_second_order():
    # A 90-degree constant pulse with strong relaxation and off-resonance during the pulse,
    # discretized into n steps (rf_dt = T/n): error vs the exact solution falls as n^-2
    # (Strang splitting of relaxation around the exact rotation).
    duration, t1, t2, df = 1e-3, 5e-3, 2e-3, 300.0
    rf = mt.make_arbitrary_rf(np.ones(1000), flip_angle=np.pi / 2, raster=1e-6, delay=0.0, scanner=IDEAL)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2], delta_f=[df])
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-9))])
    ref = exact_constant_pulse(complex(np.conj(rf.signal[0])), df, t1, t2, duration)
    errors = []
    ns = [2, 4, 8, 16, 32]
    for n in ns:
        sig = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=duration / n), return_magnetization=True, **F64)
        errors.append(np.linalg.norm(np.asarray(sig.magnetization[0]) - ref))
    order = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert 1.8 < order < 2.2, (order, errors)
    # one step per raster sample (1000 steps) is within 1e-5 of the exact solution even with
    # T2 = 2 ms during the 1 ms pulse
    sig = mt.simulate(twin, seq, method=mt.Bloch(rf_dt=1e-6), return_magnetization=True, **F64)
    assert np.linalg.norm(np.asarray(sig.magnetization[0]) - ref) < 1e-5


@pytest.mark.parametrize("flip_deg,duration,t2,one_step", [
    (90, 1e-3, 0.05, 6.2e-3), (90, 1e-3, 0.01, 3.1e-2), (90, 0.2e-3, 0.05, 1.2e-3), (180, 2e-3, 0.08, 1.1e-2)])
def test_block_pulse_with_relaxation_against_the_closed_form(flip_deg, duration, t2, one_step):
    """A block pulse is one sample held. By default it is cut into steps of at most
    ``max_rf_dt`` (10 us), each a Strang step (relaxation split around a rotation): within
    3e-6 of M0 of the closed form (4x4 expm). As one step (``max_rf_dt=None``) its error is
    the one the `Bloch` docstring and docs/engine.md state; ``rf_dt`` cuts it into steps of
    rf_dt instead, second order in the step."""
    rf = mt.make_block_pulse(np.radians(flip_deg), duration, delay=0.0, scanner=IDEAL)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[t2])
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-9))])
    ref = exact_constant_pulse(complex(np.conj(rf.signal[0])), 0.0, 1.0, t2, duration)

    def error(**kw):
        sig = mt.simulate(twin, seq, return_magnetization=True, method=mt.Bloch(**kw), **F64)
        return np.linalg.norm(np.asarray(sig.magnetization[0]) - ref)

    default = error()
    assert default < 3e-6
    assert error(max_rf_dt=None) == pytest.approx(one_step, rel=0.05)
    assert error(max_rf_dt=10e-6) == pytest.approx(default, rel=1e-6)
    e4, e8 = error(rf_dt=duration / 4), error(rf_dt=duration / 8)
    assert e8 == pytest.approx(e4 / 4, rel=0.1)
    e20 = error(max_rf_dt=20e-6)
    assert e20 == pytest.approx(4 * default, rel=0.1)  # second order in the held step


@pytest.mark.parametrize("use", ["excitation", "undefined"])
def test_rf_use_does_not_change_physics(use):
    z = np.linspace(-3e-3, 3e-3, 5)
    rf = mt.make_block_pulse(0.3, 1e-4, delay=0.0, use=use, scanner=IDEAL)
    seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 1e-6))])
    s = mt.simulate(column(z), seq, **F64).samples
    np.testing.assert_allclose(np.asarray(s), 5j * np.sin(0.3), rtol=1e-9)


def _brute_rotation(m, b1_of_t, t0, t1, n=20000):
    """m (3,) rotated about conj(B1(t)) (the left-handed precession of conventions.md),
    by n midpoint steps of exact rotations: an independent reference for short pulses."""
    dt = (t1 - t0) / n
    for i in range(n):
        b = np.conj(b1_of_t(t0 + (i + 0.5) * dt))
        w = 2 * np.pi * mt.GAMMA_BAR * dt * np.array([b.real, b.imag, 0.0])
        th = np.linalg.norm(w)
        u = w / th
        m = m * np.cos(th) - np.cross(u, m) * np.sin(th) + u * np.dot(u, m) * (1 - np.cos(th))
    return m


@pytest.mark.parametrize("delay", [0.0, 20e-6, 100e-6])
def test_offset_pulse_whose_samples_start_after_its_shape_start(delay):
    """A time-shaped pulse with a frequency offset whose first sample starts 30 us after
    the shape start (the modulation's time origin): the empty lead-in, and any delay
    before the pulse, are part of the frame's bookkeeping and must not change the result
    (they did before 2026-12-06: ~0.5 off at a 100 us delay). Also: a shape period longer
    than a uniformly sampled pulse's samples."""
    f = 5000.0
    amp = np.pi / 2 / (2 * np.pi * mt.GAMMA_BAR * 80e-6)
    twin = column(np.zeros(1))
    hard = mt.make_block_pulse(np.pi / 2, 10e-6, delay=0.0, scanner=IDEAL)  # M -> +y
    rf = mt.RF(amp, np.ones(4), time=(40e-6, 60e-6, 80e-6, 100e-6), freq_offset=f, delay=delay,
               use="excitation")  # samples held over [30, 50], ..., [90, 110] us of the shape
    seq = mt.Sequence([mt.Block(rf=hard), mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 2e-6))])
    got = complex(np.asarray(mt.simulate(twin, seq, **F64).samples)[0, 0])
    m = _brute_rotation(np.array([0.0, 1.0, 0.0]), lambda t: amp * np.exp(2j * np.pi * f * t), 30e-6, 110e-6)
    assert abs(got - (m[0] + 1j * m[1])) < 1e-7
    # the same B1(t) as a uniformly sampled pulse whose first 30 samples are zero
    uni = mt.RF(amp, np.r_[np.zeros(30), np.ones(80)], raster=1e-6, freq_offset=f, delay=delay, use="excitation")
    ref = mt.Sequence([mt.Block(rf=hard), mt.Block(rf=uni), mt.Block(adc=mt.ADC(1, 2e-6))])
    assert abs(got - complex(np.asarray(mt.simulate(twin, ref, **F64).samples)[0, 0])) < 1e-12
    # a shape period 30 us longer than the samples, then waiting: the same as no tail
    def tail(extra, gap):
        p = mt.RF(amp, np.ones(80), raster=1e-6, shape_duration=80e-6 + extra, freq_offset=f, use="excitation")
        blocks = [mt.Block(rf=hard), mt.Block(rf=p)] + ([mt.Block(duration=gap)] if gap else [])
        s = mt.Sequence(blocks + [mt.Block(adc=mt.ADC(1, 2e-6))])
        return complex(np.asarray(mt.simulate(twin, s, **F64).samples)[0, 0])
    m = _brute_rotation(np.array([0.0, 1.0, 0.0]), lambda t: amp * np.exp(2j * np.pi * f * t), 0.0, 80e-6)
    for extra, gap in ((0.0, 0.0), (30e-6, 0.0), (30e-6, delay + 1e-6)):
        assert abs(tail(extra, gap) - (m[0] + 1j * m[1])) < 1e-7, (extra, gap)
