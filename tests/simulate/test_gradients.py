"""Gradients of the simulated signal against central finite differences (float64).

Covers every kernel (shaped-RF steps, free steps, stepped ADC on ramps, ADC windows) and
every parameter kind: twin fields and sequence values (RF flip/amplitude, RF phase, RF
waveform samples, gradient amplitude, ADC phase).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from tests.seqkit import IDEAL

F64 = dict(dtype=jnp.float64, scanner=IDEAL)
W = None


def make_seq(flip=0.6, rf_phase=0.3, g=8e-3, adc_phase=-0.2, shape=None, freq=0.0):
    if shape is None:
        rf = mt.make_sinc_pulse(flip, 0.4e-3, time_bw_product=3, phase_offset=rf_phase, delay=0.0,
                                scanner=IDEAL)
    else:
        rf = mt.make_arbitrary_rf(shape, raster=1e-5, phase_offset=rf_phase, delay=0.0, scanner=IDEAL)
    if freq:
        rf = mt.RF(rf.amplitude, rf.shape, phase_offset=rf.phase_offset, freq_offset=freq, raster=rf.raster)
    gz = mt.TrapGrad("z", g, 20e-6, 0.4e-3, 20e-6)
    gzr = mt.TrapGrad("z", -g / 2, 20e-6, 0.2e-3, 20e-6)
    gx = mt.TrapGrad("x", g / 2, 100e-6, 0.4e-3, 100e-6)
    return mt.Sequence([
        mt.Block(rf=mt.RF(rf.amplitude, rf.shape, phase_offset=rf.phase_offset, freq_offset=rf.freq_offset,
                          delay=20e-6, raster=rf.raster), gz=gz),
        mt.Block(gz=gzr),
        mt.Block(gx=gx, adc=mt.ADC(60, 10e-6, delay=0.0, phase_offset=adc_phase)),  # ramps: stepped
        mt.Block(gx=gx, adc=mt.ADC(30, 10e-6, delay=120e-6, phase_offset=adc_phase)),  # flat: window
    ])


def twin(**over):
    rng = np.random.default_rng(0)
    n = 40
    d = dict(position=rng.uniform(-0.01, 0.01, (n, 3)), pd=rng.uniform(0.5, 1, n),
             t1=rng.uniform(0.2, 1, n), t2=rng.uniform(0.01, 0.1, n), delta_f=rng.normal(0, 50, n),
             b1=rng.uniform(0.9, 1.1, n))
    d.update(over)
    return mt.Twin(**d)


def loss_of(sig):
    s = sig.samples[0]
    w = jnp.exp(1j * jnp.arange(s.shape[0]) * 0.37)
    return jnp.sum(jnp.abs(s) ** 2) + jnp.real(jnp.sum(w * s))


def assert_grad_matches_fd(f, x0, rel=1e-5, seed=0, h=None):
    """Directional derivative along a random direction: autodiff vs central differences."""
    x0 = jnp.asarray(x0, jnp.float64)
    v = jnp.asarray(np.random.default_rng(seed).normal(size=x0.shape))
    g = jax.grad(f)(x0)
    ad = float(jnp.sum(g * v))
    h = 1e-4 * float(jnp.max(jnp.abs(x0))) if h is None else h
    fd = (float(f(x0 + h * v)) - float(f(x0 - h * v))) / (2 * h)
    assert abs(ad - fd) <= rel * max(abs(fd), 1e-8), (ad, fd)


SEQ = None


def seq0():
    global SEQ
    if SEQ is None:
        SEQ = make_seq()
    return SEQ


@pytest.mark.parametrize("field", ["pd", "t1", "t2", "delta_f", "b1", "position"])
@pytest.mark.slow
def test_gradient_wrt_twin_fields(field):
    base = twin()
    x0 = getattr(base, field)
    # positions vary on the scale of 1/k (sub-mm): a smaller step keeps FD truncation < 1e-5
    h = 1e-7 if field == "position" else None
    assert_grad_matches_fd(lambda x: loss_of(mt.simulate(base.replace(**{field: x}), seq0(), **F64)), x0, h=h)


@pytest.mark.parametrize("name", ["flip", "rf_phase", "g", "adc_phase"])
@pytest.mark.slow
def test_gradient_wrt_sequence_values(name):
    base = twin()
    x0 = {"flip": 0.6, "rf_phase": 0.3, "g": 8e-3, "adc_phase": -0.2}[name]

    def f(x):
        return loss_of(mt.simulate(base, make_seq(**{name: x}), **F64))

    assert_grad_matches_fd(f, x0, rel=1e-5)


@pytest.mark.parametrize("rf_dt", [None, 40e-6])
@pytest.mark.parametrize("name", ["flip", "rf_phase"])
def test_gradient_through_a_pulse_with_frequency_offset(name, rf_dt):
    """An off-centre slice's pulse (frequency offset: simulated in the frame that follows
    it, `mritwin.sequence.discretize`), stepped per raster sample and grouped: derivatives
    of the signal in its flip angle and phase match central differences."""
    base = twin()
    x0 = {"flip": 0.6, "rf_phase": 0.3}[name]

    def f(x):
        seq = make_seq(**{name: x}, freq=mt.GAMMA_BAR * 8e-3 * 4e-3)  # the slice at z = 4 mm
        return loss_of(mt.simulate(base, seq, method=mt.Bloch(rf_dt=rf_dt), **F64))

    assert_grad_matches_fd(f, x0, rel=1e-5)


@pytest.mark.slow
def test_gradient_wrt_rf_waveform_samples():
    base = twin()
    shape0 = np.hanning(40) * 1e-5 + 0j

    def f(x):
        return loss_of(mt.simulate(base, make_seq(shape=x.astype(jnp.complex128)), **F64))

    assert_grad_matches_fd(f, shape0.real, rel=1e-5)


def test_gradient_wrt_rf_amplitude_from_zero():
    """Pulse design often starts from a zero pulse: there the rotation's derivative is its
    generator (not zero), so the gradient must match finite differences at 0, for spins
    on resonance at the isocentre (no effective field at all) and off resonance."""
    base = twin(position=np.zeros((40, 3)), delta_f=np.r_[np.zeros(20), np.full(20, 30.0)])
    shape = np.hanning(40) + 0j
    seq = make_seq(g=0.0)

    def f(amp):
        rf = mt.RF(amp, shape, delay=20e-6, raster=1e-5)
        blocks = [mt.Block(rf=rf)] + list(seq.blocks[1:])
        return loss_of(mt.simulate(base, mt.Sequence(blocks), **F64))

    g = jax.grad(f)(jnp.asarray(0.0))
    assert np.isfinite(float(g)) and abs(float(g)) > 0
    h = 1e-10  # [T]: a flip of about 1e-5 rad
    fd = (float(f(h)) - float(f(-h))) / (2 * h)
    assert abs(float(g) - fd) <= 1e-6 * abs(fd)
