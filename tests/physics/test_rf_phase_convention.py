"""The RF and ADC phase convention against an independent model of Pulseq's own Bloch
simulator (``mr.simRf`` of pulseq/pulseq): there ``B1 = a(t) exp(i(φ + 2π f t))`` rotates
right-handed about ``(Re B1, Im B1, ΔB0)``, free precession is ``exp(+i2πΔf t)`` and the
receiver demodulates by ``exp(-iφ_adc)``. mritwin's frame (DESIGN.md: free precession
``exp(-i2πΔf t)``) is its mirror image, so every magnetization and every ADC sample must
be the complex conjugate of that model's, while everything physical (which spins are
resonant, RF spoiling with equal RF and ADC phases) is the same."""

import jax.numpy as jnp
import numpy as np

import mritwin as mt
from tests.seqkit import IDEAL


def _right_handed(axis, m):
    """Rotate ``m`` right-handed about ``axis`` [cycles] by ``2π |axis|``."""
    n = np.linalg.norm(axis)
    if n == 0:
        return m
    u = axis / n
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    a = 2 * np.pi * n
    return (np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k) @ m


def _pulseq_model(steps, df):
    """Pulseq's simRf frame: ``steps`` is a list of ``(duration [s], complex γ̄∫B1 [cycles])``
    applied in order to a spin with off-resonance ``df`` [Hz] starting at equilibrium;
    returns the magnetization after each step."""
    m = np.array([0.0, 0.0, 1.0])
    out = []
    for dur, c in steps:
        m = _right_handed(np.array([c.real, c.imag, df * dur]), m)
        out.append(m)
    return out


def test_magnetization_and_samples_mirror_pulseqs_own_model():
    # a shaped pulse (phase 0.7 rad), free precession, a hard 45° pulse at phase 2.0 rad,
    # free precession again, then 8 ADC samples with phase 0.3 rad; five off-resonances
    raster, n_rf = 1e-6, 400
    shape = np.hanning(n_rf + 2)[1:-1] * np.sinc(np.linspace(-2, 2, n_rf))
    flip1, ph1, flip2, ph2, ph_adc = np.radians(60.0), 0.7, np.radians(45.0), 2.0, 0.3
    rf1 = mt.make_arbitrary_rf(shape, flip_angle=flip1, raster=raster, phase_offset=ph1, delay=0.0, scanner=IDEAL)
    rf2 = mt.make_block_pulse(flip2, 50e-6, phase_offset=ph2, delay=0.0, scanner=IDEAL)
    dwell, n_adc, gap = 20e-6, 8, 0.3e-3
    seq = mt.Sequence([mt.Block(rf=rf1), mt.Block(duration=gap), mt.Block(rf=rf2), mt.Block(duration=gap),
                       mt.Block(adc=mt.ADC(n_adc, dwell, phase_offset=ph_adc))])
    df = np.array([-700.0, -200.0, 0.0, 300.0, 900.0])
    twin = mt.Twin(position=np.zeros((df.size, 3)), pd=np.ones(df.size), t1=np.full(df.size, np.inf),
                   t2=np.full(df.size, np.inf), delta_f=df)
    sig = mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64, return_magnetization=True)

    # the same events in Pulseq's frame, from the definitions alone
    c1 = shape / shape.sum() * flip1 / (2 * np.pi) * np.exp(1j * ph1)  # flip = 2π Σ γ̄ B1 dt
    steps = [(raster, c) for c in c1] + [(gap, 0j), (50e-6, flip2 / (2 * np.pi) * np.exp(1j * ph2)), (gap, 0j)]
    steps += [(dwell / 2, 0j)] + [(dwell, 0j)] * (n_adc - 1) + [(dwell / 2, 0j)]  # samples at (n + 1/2) dwell
    ref_samples = np.zeros(n_adc, complex)
    ref_end = np.zeros((df.size, 3))
    for j, f in enumerate(df):
        ms = _pulseq_model(steps, f)
        adc = ms[len(c1) + 3:len(c1) + 3 + n_adc]
        ref_samples += np.array([m[0] + 1j * m[1] for m in adc]) * np.exp(-1j * ph_adc)
        ref_end[j] = ms[-1]

    mirror = np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.asarray(sig.magnetization), ref_end * mirror, atol=1e-9)
    np.testing.assert_allclose(np.asarray(sig.samples[0]), np.conj(ref_samples), atol=1e-8)
    assert np.abs(ref_samples).max() > 0.5  # a real signal, not two zeros agreeing
    assert np.abs(np.asarray(sig.magnetization) - ref_end).max() > 0.1  # and the mirror is not the identity


def test_rf_spoiling_phase_is_stable_in_both_frames():
    """A 30° pulse and the ADC at the same phase: the sample does not depend on that phase
    (Pulseq's spoiling recipe), in mritwin as in Pulseq's model (where it is -i/2 on
    resonance, so mritwin's is +i/2)."""
    twin = mt.Twin(position=np.zeros((1, 3)), pd=np.ones(1), t1=np.full(1, np.inf), t2=np.full(1, np.inf))
    values = []
    for ph in (0.0, 1.0, 2.5, -2.0):
        rf = mt.make_block_pulse(np.radians(30), 20e-6, phase_offset=ph, delay=0.0, scanner=IDEAL)
        seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(1, 2e-6, phase_offset=ph))])
        values.append(complex(np.asarray(mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64).samples)[0, 0]))
    m = _pulseq_model([(20e-6, np.radians(30) / (2 * np.pi) + 0j)], 0.0)[-1]
    np.testing.assert_allclose(values, np.conj(m[0] + 1j * m[1]) * np.ones(4), atol=1e-12)
    np.testing.assert_allclose(values[0], 0.5j, atol=1e-12)
