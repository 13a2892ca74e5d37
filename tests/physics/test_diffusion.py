"""Analytic diffusion attenuation along the k-space pathway (PHYSICS.md 10, Stejskal–Tanner)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from tests.seqkit import IDEAL, adc_at, build, hard, rf_at

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def pgse(g, delta, Delta, ramp, te=0.08):
    """90x - lobe - 180y - lobe - echo at TE, lobes of flat time delta - ramp (so that the
    trapezoid's plateau-plus-one-ramp duration is delta) starting Delta apart."""
    lobe = mt.TrapGrad("x", g, ramp, delta - ramp, ramp)
    t1 = 5e-3
    return build([
        rf_at(1e-6, hard(np.pi / 2, 2e-6)),
        (t1, mt.Block(gx=lobe)),
        rf_at(1e-6 + te / 2, hard(np.pi, 2e-6, phase=np.pi / 2, use="refocusing")),
        (t1 + Delta, mt.Block(gx=lobe)),
        adc_at(1e-6 + te),
    ], total=te + 0.01)


@pytest.mark.parametrize("g, D", [(30e-3, 2e-9), (40e-3, 3e-9), (20e-3, 0.7e-9)])
def test_pgse_attenuation_is_exp_minus_bD(g, D):
    # b = (2 pi gamma_bar)^2 G^2 [delta^2 (Delta - delta/3) + eps^3/30 - delta eps^2/6] for
    # trapezoids with ramp eps (PHYSICS.md 10); delta = flat time + ramp
    delta, Delta, ramp = 20e-3, 40e-3, 1e-3
    seq = pgse(g, delta, Delta, ramp)
    b = (2 * np.pi * mt.GAMMA_BAR * g) ** 2 * (delta ** 2 * (Delta - delta / 3) + ramp ** 3 / 30
                                               - delta * ramp ** 2 / 6)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf], diffusion=[D])
    on = abs(complex(mt.simulate(twin, seq, method=mt.Bloch(analytic_diffusion=True), **F64).samples[0, 0]))
    off = abs(complex(mt.simulate(twin, seq, **F64).samples[0, 0]))
    np.testing.assert_allclose(off, 1.0, atol=1e-9)  # diffusion off by default
    np.testing.assert_allclose(on, np.exp(-b * D), rtol=1e-6)
    assert 0.005 < on < 0.95  # a meaningful attenuation (b = 380 to 1500 s/mm²)


def test_diffusion_gradient_and_errors():
    seq = pgse(30e-3, 20e-3, 40e-3, 1e-3)
    m = mt.Bloch(analytic_diffusion=True)

    def signal(d):
        twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf], diffusion=d)
        return jnp.abs(mt.simulate(twin, seq, method=m, **F64).samples[0, 0])

    d0 = jnp.array([2e-9])
    g = float(jax.grad(lambda d: signal(d))(d0)[0])
    h = 1e-13
    fd = (float(signal(d0 + h)) - float(signal(d0 - h))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[0.1])
    with pytest.raises(ValueError, match="needs twin.diffusion"):
        mt.simulate(twin, seq, method=m)


def test_dwi_builder_attenuates_csf_by_exp_minus_bD():
    # the library's PGSE SE-EPI: at the k-space centre of the echo train the signal of a
    # free-water spin (D = 3e-9 m²/s, CSF) falls as exp(-b D), with b measured from the
    # waveform (imaging gradients included) by the builder's b_values. One repetition per
    # b-value from equilibrium, T1 = T2 = inf: after the 90 degree pulse Mz = 0, so the spin
    # echo is the only coherence pathway (the model's assumption).
    sc = mt.Scanner(b0=3.0)
    d = 3e-9
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf], diffusion=[d])
    method = mt.Bloch(analytic_diffusion=True, rf_dt=10e-6)
    out = []
    for bval in (0.0, 1e9):
        seq = mt.sequences.dwi(scanner=sc, fov=0.2, matrix=16, b_values=(bval,),
                               directions=((1.0, 0, 0),), slice_thickness=5e-3)
        sig = mt.simulate(twin, seq, scanner=sc, method=method, dtype=jnp.float64)
        k = np.linalg.norm(np.asarray(sig.kspace), axis=1)
        out.append((abs(complex(sig.samples[0, np.argmin(k)])), float(mt.sequences.b_values(seq)[0])))
    (s0, b0), (s1, b1) = out
    assert abs(b1 - 1e9) < 0.02e9
    np.testing.assert_allclose(s1 / s0, np.exp(-(b1 - b0) * d), rtol=1e-3)
