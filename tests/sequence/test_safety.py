"""SAR (∫|B1|² dt, body/head model, IEC limits), B1+rms, PNS and gradient-limit checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mritwin as mt
from mritwin.constants import GAMMA_BAR
from mritwin.sequence import Block, Sequence, builders as B, make_block_pulse, make_sinc_pulse, safety

SC = mt.Scanner(b0=3.0)


def _one(rf, tr=10e-3):
    return Sequence([Block(rf=rf, duration=tr)])


def test_hard_pulse_energy_closed_form():
    a, T = math.pi / 2, 1e-3
    rf = make_block_pulse(a, T, scanner=SC)
    b1 = a / (2 * math.pi * GAMMA_BAR * T)  # PHYSICS.md item 1: 5.87 uT
    assert b1 == pytest.approx(5.87e-6, rel=1e-3)
    e = safety.rf_energy(_one(rf))
    assert e[0] == pytest.approx(b1 ** 2 * T, rel=1e-12)
    assert safety.b1_rms(_one(rf, 10e-3)) == pytest.approx(b1 * math.sqrt(T / 10e-3), rel=1e-12)


def test_sinc_pulse_energy_closed_form():
    a, T, tbw = math.radians(30), 2e-3, 4.0
    rf = make_sinc_pulse(a, T, time_bw_product=tbw, apodization=0.5, scanner=SC)
    # closed form of the continuous Hanning-apodized sinc, B1(t) = A w(t) sinc(bw t)
    t = np.linspace(-T / 2, T / 2, 200001)
    env = (0.5 + 0.5 * np.cos(2 * np.pi * t / T)) * np.sinc(tbw / T * t)
    amp = a / (2 * math.pi * GAMMA_BAR * np.trapezoid(env, t))
    expect = np.trapezoid((amp * env) ** 2, t)
    assert safety.rf_energy(_one(rf))[0] == pytest.approx(expect, rel=1e-3)


def test_energy_of_a_builders_traced_flip_is_one_gather_and_scales_with_flip_squared():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def energy(flip, matrix=8):
        return safety.rf_energy(B.gre(scanner=SC, fov=0.2, matrix=matrix, te=5e-3, tr=20e-3, slice_thickness=5e-3,
                                      flip_angle=flip))

    flip = 0.3
    e0 = energy(flip)
    np.testing.assert_allclose(np.asarray(jax.jit(energy)(flip)), e0, rtol=1e-13)
    # every pulse's energy grows with the flip squared: d/da sum = 2 sum / a
    g = jax.grad(lambda a: jnp.sum(energy(a)))(flip)
    assert float(g) == pytest.approx(2 * e0.sum() / flip, rel=1e-12)
    # the plays share the builder's one traced amplitude: one gather, whatever the lines
    n8, n32 = (len(jax.make_jaxpr(lambda a, m=m: energy(a, m))(flip).eqns) for m in (8, 32))
    assert n8 == n32


def test_sar_scales_with_flip_squared_and_b0_squared():
    kw = dict(scanner=SC, fov=0.2, matrix=16, te=5e-3, tr=20e-3, slice_thickness=5e-3)
    s1 = safety.check_sar(B.gre(flip_angle_deg=20, **kw), SC)
    s2 = safety.check_sar(B.gre(flip_angle_deg=40, **kw), SC)
    assert s2.whole_body_sar == pytest.approx(4 * s1.whole_body_sar, rel=1e-9)
    assert s2.b1_rms == pytest.approx(2 * s1.b1_rms, rel=1e-9)
    sc15 = mt.Scanner(b0=1.5)
    s15 = safety.check_sar(B.gre(flip_angle_deg=20, **{**kw, "scanner": sc15}), sc15)
    assert s15.whole_body_sar == pytest.approx(s1.whole_body_sar / 4, rel=1e-6)


def test_body_model_numbers():
    m = safety.BodyModel(patient_mass=75.0, patient_height=1.75)
    rf = make_block_pulse(math.pi / 2, 1e-3, scanner=SC)
    seq = _one(rf, 1e-3 * (5.87e-6 / 1e-6) ** 2)  # B1rms = 1 uT
    rep = safety.check_sar(seq, SC, model=m)
    assert rep.b1_rms == pytest.approx(1e-6, rel=2e-3)
    w = 2 * math.pi * GAMMA_BAR * 3.0
    expect = 0.5 * w ** 2 * m.radius ** 2 * rep.b1_rms ** 2 / (4 * 1000.0)
    assert rep.partial_body_sar == pytest.approx(expect, rel=1e-9)
    assert rep.whole_body_sar == pytest.approx(expect * 0.7 / 1.75, rel=1e-9)
    heavier = safety.check_sar(seq, SC, model=safety.BodyModel(patient_mass=120.0))
    assert heavier.partial_body_sar > rep.partial_body_sar  # larger radius absorbs more per kg
    head = safety.check_sar(seq, SC, model=safety.BodyModel(coil="head"))
    assert head.head_sar == pytest.approx(0.5 * w ** 2 * 0.09 ** 2 * rep.b1_rms ** 2 / 1e4, rel=1e-9)


def test_over_limit_reported_with_factor():
    seq = B.bssfp(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=70, slice_thickness=5e-3, rf_duration=0.6e-3)
    rep = safety.check_sar(seq, SC)
    assert rep.mode == "exceeds"
    f = rep.whole_body_sar / 4.0
    assert rep.exceeds_by == pytest.approx(max(f, rep.partial_body_sar / rep.limits["partial_body"][1]))
    assert rep.exceeds_by > 1
    text = str(rep)
    assert "EXCEEDS x" in text and "whole_body SAR" in text and "B1+rms" in text
    low = safety.check_sar(B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=10, slice_thickness=5e-3), SC)
    assert low.mode == "normal" and low.ok and "ok" in str(low)


def test_first_level_mode():
    rf = make_block_pulse(math.pi / 2, 1e-3, scanner=SC)
    base = safety.check_sar(_one(rf, 10e-3), SC)
    # choose the period so the whole-body SAR is 2.5 W/kg: between 2 (normal) and 4 (first level);
    # the partial-body SAR (2.5 / 0.4 = 6.25 W/kg) stays below its first-level limit 10 - 6 * 0.4
    tr = 10e-3 * base.whole_body_sar / 2.5
    rep = safety.check_sar(_one(rf, round(tr, 5)), SC)
    assert 2.0 < rep.whole_body_sar < 4.0
    assert rep.factor["whole_body"] > 1 and rep.partial_body_sar < rep.limits["partial_body"][1]
    assert rep.mode == "first_level"


def test_pns_and_gradient_limits():
    epi = B.epi(scanner=SC, fov=0.2, matrix=32, slice_thickness=5e-3)
    rep = safety.check_pns(epi)
    s = SC.max_slew
    # ramps reach max slew: fraction = S r / (rb (1 + c/t)) for the longest ramp at max slew
    assert max(rep.max_slew.values()) <= s * (1 + 1e-9)
    assert rep.fraction["x"] > 0.5
    assert "PNS estimate" in str(rep)
    gentle = safety.check_pns(epi, r_eval=0.05)
    assert gentle.mode == "normal" and gentle.fraction["combined"] < rep.fraction["combined"]
    out = safety.check_gradients(epi, SC)
    assert out["max_grad"]["x"] <= SC.max_grad
    with pytest.raises(ValueError, match="max_slew"):
        safety.check_gradients(epi, mt.Scanner(max_slew=50.0))


def test_b1_rms_is_differentiable_in_the_flip_angle():
    import jax
    import jax.numpy as jnp

    def b1sq(a):
        seq = B.gre(scanner=SC, fov=0.2, matrix=8, te=5e-3, tr=20e-3, flip_angle=a, slice_thickness=5e-3)
        return safety.b1_rms(seq) ** 2

    a = 0.4
    g = float(jax.grad(b1sq)(jnp.asarray(a)))
    assert g == pytest.approx(2 * float(b1sq(a)) / a, rel=1e-6)  # B1rms² ∝ α²
