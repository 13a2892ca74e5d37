"""Contrast-agent dynamics: Parker AIF, Tofts uptake and T1/T2 that follow the
concentration (mritwin.twin.dynamics.ContrastAgent; PHYSICS.md 5)."""

import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.twin import dynamics as dyn
from tests.seqkit import IDEAL
from tests.simulate.test_dynamics import _spoiled_fid

F64 = dict(dtype=jnp.float64, scanner=IDEAL)
RF = 2e-6  # hard pulse duration of _spoiled_fid [s]


def agent_for(agent, compartment):
    """The same curves for a sub-twin whose spins are in ``compartment``."""
    return dyn.ContrastAgent(agent.times, agent.concentration, compartment, agent.r1, agent.r2)


def test_tofts_closed_forms():
    t = np.r_[0.0, np.cumsum(np.random.default_rng(1).uniform(0.5, 1.5, 400))]  # non-uniform [s]
    ktrans, ve, vp = np.array([0.002, 0.01, 0.0]), np.array([0.2, 0.4, 0.3]), np.array([0.05, 0.0, 1.0])
    kep = ktrans / ve
    # a constant plasma concentration from t = 0: C_t = vp c + ve c (1 - exp(-kep t))
    c = 1.7
    got = np.asarray(dyn.tofts(t, np.full(t.size, c), ktrans, ve, vp))
    assert got.shape == (3, t.size)
    np.testing.assert_allclose(got, vp[:, None] * c + ve[:, None] * c * (1 - np.exp(-kep[:, None] * t)),
                               rtol=1e-12, atol=1e-14)
    # an exponential wash-out C_p = exp(-lam t): C_t = vp C_p + ktrans (exp(-lam t) - exp(-kep t)) / (kep - lam)
    lam = 0.003
    tf = np.linspace(0.0, 400.0, 4001)
    got = np.asarray(dyn.tofts(tf, np.exp(-lam * tf), ktrans, ve, vp))
    ref = vp[:, None] * np.exp(-lam * tf) + ktrans[:, None] * (
        np.exp(-lam * tf) - np.exp(-kep[:, None] * tf)) / (kep[:, None] - lam)
    np.testing.assert_allclose(got, ref, atol=1e-8)  # linear-interpolation error ~ h^2 lam^2 / 8
    with pytest.raises(ValueError, match="ve must be > 0 wherever ktrans > 0"):
        dyn.tofts(t, np.ones(t.size), 0.01, 0.0)
    with pytest.raises(ValueError, match="tofts t must be strictly increasing"):
        dyn.tofts(t[::-1], np.ones(t.size), 0.01, 0.2)


def test_parker_aif_published_values():
    # Parker et al. MRM 2006 Table 1, in minutes: first-pass peak near T1 = 0.17046 min
    # (10.2 s), about 6 mM; the sigmoid-modulated washout alpha exp(-beta t) at late times
    t = np.linspace(0.0, 600.0, 60001)
    cb = np.asarray(dyn.parker_aif(t))
    assert abs(t[np.argmax(cb)] - 0.17046 * 60) < 0.3
    tm = 0.17046
    peak = (0.809 / (0.0563 * np.sqrt(2 * np.pi)) + 0.330 / (0.132 * np.sqrt(2 * np.pi))
            * np.exp(-(tm - 0.365) ** 2 / (2 * 0.132 ** 2)) + 1.050 * np.exp(-0.1685 * tm)
            / (1 + np.exp(-38.078 * (tm - 0.483))))
    np.testing.assert_allclose(float(dyn.parker_aif(tm * 60)), peak, rtol=1e-12)
    np.testing.assert_allclose(float(dyn.parker_aif(300.0)), 1.050 * np.exp(-0.1685 * 5), rtol=1e-6)
    # delay shifts the curve; the plasma curve is the blood curve over (1 - Hct)
    np.testing.assert_allclose(np.asarray(dyn.parker_aif(t, delay=20.0))[2000:], cb[:-2000], atol=1e-12)
    assert float(dyn.parker_aif(5.0, delay=20.0)) == 0.0
    np.testing.assert_allclose(np.asarray(dyn.parker_aif(t, hematocrit=0.42)), cb / 0.58, rtol=1e-12)


def _recursion(flip, tr, te, n_tr, r1_of_t, r2_of_t, n_fine=64):
    """Ideal-spoiled FLASH with time-varying rates, instantaneous pulses at k TR + RF/2:
    Mz relaxes with exp(-∫R1 dt) (integrated by Simpson's rule on n_fine sub-intervals),
    the echo decays with exp(-∫R2 dt) over TE."""

    def integral(f, a, b):
        x = np.linspace(a, b, 2 * n_fine + 1)
        w = np.ones(x.size)
        w[1:-1:2], w[2:-1:2] = 4, 2
        return (b - a) / (6 * n_fine) * np.sum(w[:, None] * f(x), axis=0)

    out = []
    mz = 1.0
    for k in range(n_tr):
        c = k * tr + RF / 2
        out.append(mz * np.sin(flip) * np.exp(-integral(r2_of_t, c, c + te)))
        mz = 1.0 + (mz * np.cos(flip) - 1.0) * np.exp(-integral(r1_of_t, c, c + tr))
    return np.array(out)  # (n_tr, n_spins)


def test_dynamic_t1_series_follows_concentration_ernst_and_recursion():
    # a T1-weighted spoiled-GRE series during a concentration ramp (0 mM until 0.3 s, 2 mM
    # from 0.8 s) in one compartment; a second compartment gets no agent. 1/T1 = 1/T1_0 +
    # r1 C(t): the signal follows the recursion with the exact time-varying rates at every
    # TR, and on the plateau the Ernst formula with T1(C) (frames long against settling)
    flip, tr, te, n_tr = np.radians(20), 5e-3, 2e-3, 320
    t1_0, t2_0, r1, r2 = 1.0, 0.05, 4.0, 5.0
    times = np.array([0.0, 0.3, 0.8, 10.0])
    conc = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    twin = mt.Twin(position=np.zeros((2, 3)), pd=[1.0, 1.0], t1=[t1_0] * 2, t2=[t2_0] * 2)
    agent = dyn.ContrastAgent(times, conc, compartment=[0, 1], r1=r1, r2=r2)
    seq = _spoiled_fid(flip, tr, te, n_tr, RF)
    method = mt.Bloch(ideal_spoiling=True, checkpoint=False)
    # one run per spin (per-spin signals), with the agent restricted to that spin
    sim = np.asarray(mt.simulate(twin[:1], seq, dynamics=agent_for(agent, [0]), method=method, **F64).samples[0])
    static = np.asarray(mt.simulate(twin[1:], seq, dynamics=agent_for(agent, [1]), method=method, **F64).samples[0])

    def c_of_t(x):
        return np.stack([np.interp(x, times, conc[0])], -1)

    ref = _recursion(flip, tr, te, n_tr, lambda x: 1 / t1_0 + r1 * c_of_t(x), lambda x: 1 / t2_0 + r2 * c_of_t(x))
    np.testing.assert_allclose(np.abs(sim), ref[:, 0], rtol=1e-7)
    # plateau: Ernst with T1(C = 2 mM), T2(C)
    r1c, r2c = 1 / t1_0 + 2 * r1, 1 / t2_0 + 2 * r2
    e1 = np.exp(-tr * r1c)
    ernst = np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1) * np.exp(-te * r2c)
    np.testing.assert_allclose(abs(sim[-1]), ernst, rtol=1e-7)
    # the compartment without agent stays at its own steady state
    e10 = np.exp(-tr / t1_0)
    np.testing.assert_allclose(abs(static[-1]), np.sin(flip) * (1 - e10) / (1 - np.cos(flip) * e10)
                               * np.exp(-te / t2_0), rtol=1e-7)
    assert abs(sim[-1]) > 2 * abs(static[-1])  # T1 shortening enhances the T1-weighted signal


def test_parker_tofts_enhancement_matches_recursion():
    # labelled twin: a vessel (plasma curve, vp = 1), a tumour (extended Tofts, Ktrans =
    # 0.25/min) and muscle without uptake, driven by the Parker AIF; dynamic series of
    # 30 s at TR = 50 ms. Each tissue follows the recursion with its own concentration curve.
    flip, tr, te, n_tr = np.radians(25), 50e-3, 2e-3, 600
    t1_0, t2_0 = np.array([1.9, 1.2, 1.4]), np.array([0.25, 0.08, 0.03])
    r1, r2 = 4.5, 5.5
    twin = mt.Twin(position=np.zeros((3, 3)), pd=np.ones(3), t1=t1_0, t2=t2_0, label=[0, 1, 2],
                   label_names=("vessel", "tumour", "muscle"))
    times = np.linspace(0.0, 40.0, 801)
    cp = np.asarray(dyn.parker_aif(times, delay=5.0, hematocrit=0.42))
    agent = dyn.ContrastAgent.tofts(twin, times, cp, ktrans={"tumour": 0.25 / 60}, ve={"tumour": 0.3},
                                    vp={"vessel": 1.0, "tumour": 0.05}, r1=r1, r2=r2)
    seq = _spoiled_fid(flip, tr, te, n_tr, RF)
    method = mt.Bloch(ideal_spoiling=True, checkpoint=False)
    sims = [np.asarray(mt.simulate(twin[i:i + 1], seq, dynamics=agent_for(agent, [int(agent.compartment[i])]),
                                   method=method, **F64).samples[0]) for i in range(3)]
    curves = np.stack([cp, np.asarray(dyn.tofts(times, cp, 0.25 / 60, 0.3, 0.05)), np.zeros(times.size)], -1)

    def c_of_t(x):
        return np.stack([np.interp(x, times, curves[:, j]) for j in range(3)], -1)

    ref = _recursion(flip, tr, te, n_tr, lambda x: 1 / t1_0 + r1 * c_of_t(x), lambda x: 1 / t2_0 + r2 * c_of_t(x))
    for i in range(3):
        np.testing.assert_allclose(np.abs(sims[i]), ref[:, i], rtol=1e-7)
    # the vessel enhances at the first pass, the tumour slowly, the muscle not at all
    pre = slice(40, 90)  # 2-4.5 s, before the bolus (5 s)
    assert np.abs(sims[0]).max() > 3 * np.abs(sims[0][pre]).mean()
    assert np.abs(sims[1][-50:]).mean() > 1.3 * np.abs(sims[1][pre]).mean()
    e1 = np.exp(-tr / t1_0[2])
    ernst = np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1) * np.exp(-te / t2_0[2])
    np.testing.assert_allclose(np.abs(sims[2][-50:]), ernst, rtol=1e-6)


def test_contrast_agent_errors():
    twin = mt.Twin(position=np.zeros((2, 3)), pd=[1.0, 1.0], t1=[1.0, 1.0], t2=[0.1, 0.1])
    t = [0.0, 1.0]
    with pytest.raises(ValueError, match=r"concentration must have shape \(n_compartments, n_times\)"):
        dyn.ContrastAgent(t, np.zeros((1, 3)), [0, 0], r1=4.0, r2=5.0)
    with pytest.raises(ValueError, match="ContrastAgent.concentration must be >= 0"):
        dyn.ContrastAgent(t, [[0.0, -1.0]], [0, 0], r1=4.0, r2=5.0)
    with pytest.raises(ValueError, match="ContrastAgent.concentration contains NaN"):
        dyn.ContrastAgent(t, [[0.0, np.nan]], [0, 0], r1=4.0, r2=5.0)
    with pytest.raises(ValueError, match="compartment values must be in 0..0"):
        dyn.ContrastAgent(t, [[0.0, 1.0]], [0, 1], r1=4.0, r2=5.0)
    with pytest.raises(ValueError, match="ContrastAgent.times must be strictly increasing"):
        dyn.ContrastAgent([1.0, 0.0], [[0.0, 1.0]], [0, 0], r1=4.0, r2=5.0)
    with pytest.raises(ValueError, match="ContrastAgent.r1 must be >= 0"):
        dyn.ContrastAgent(t, [[0.0, 1.0]], [0, 0], r1=-4.0, r2=5.0)
    seq = _spoiled_fid(0.3, 10e-3, 2e-3, 2, RF)
    with pytest.raises(ValueError, match=r"compartment must have shape \(n_spins,\) = \(2,\), got \(3,\)"):
        mt.simulate(twin, seq, dynamics=dyn.ContrastAgent(t, [[0.0, 1.0]], [0, 0, 0], r1=4.0, r2=5.0), **F64)
    with pytest.raises(ValueError, match="needs twin.label"):
        dyn.ContrastAgent.from_labels(twin, t, {"tumour": [0.0, 1.0]}, r1=4.0, r2=5.0)
    lab = twin.replace(label=[0, 1], label_names=("a", "b"))
    with pytest.raises(ValueError, match=r"\['c'\] are not labels of the twin"):
        dyn.ContrastAgent.from_labels(lab, t, {"c": [0.0, 1.0]}, r1=4.0, r2=5.0)
