"""Spin echo, stimulated echo and CPMG trains against closed forms (PHYSICS.md 3, 7, 8).

Idealization: hard pulses of 10-20 us (instantaneous to within relaxation over 20 us,
< 1e-3 here); spoiling is ideal because T2 << TR (residual transverse magnetization
exp(-TR/T2) < 1e-4) unless a test says otherwise.
"""

import jax.numpy as jnp
import numpy as np

import mritwin as mt
from tests.seqkit import IDEAL, adc_at, build, hard, rf_at

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def spins(n=1, **kw):
    d = dict(position=np.zeros((n, 3)), pd=np.ones(n), t1=np.full(n, np.inf), t2=np.full(n, np.inf))
    d.update({k: np.broadcast_to(np.asarray(v, float), (n,)).copy() for k, v in kw.items()})
    return mt.Twin(**d)


def spin_echo_train(te, tr, n_tr, refocus_phase=np.pi / 2, p=20e-6):
    """n_tr repetitions of 90x - TE/2 - 180y - TE/2 (echo sampled) ... TR; pulses last p."""
    seqs = []
    for _ in range(n_tr):
        seqs.append(build([
            rf_at(p / 2, hard(np.pi / 2, p)),
            rf_at(p / 2 + te / 2, hard(np.pi, p, phase=refocus_phase, use="refocusing")),
            adc_at(p / 2 + te),
        ], total=tr))
    out = seqs[0]
    for s in seqs[1:]:
        out = out + s
    return out


def test_spin_echo_steady_state_exact_formula():
    # S = exp(-TE/T2) (1 - 2 exp(-(TR - TE/2)/T1) + exp(-TR/T1)): the 180 also inverts the Mz
    # that regrew during TE/2. TR = 500 ms, T1 = 1 s (TR not >> T1), T2 = 40 ms.
    t1, t2, te, tr = 1.0, 0.04, 0.03, 0.5
    seq = spin_echo_train(te, tr, n_tr=25)
    sig = mt.simulate(spins(t1=t1, t2=t2), seq, **F64)
    s = np.abs(np.asarray(sig.samples[0]))
    exact = np.exp(-te / t2) * (1 - 2 * np.exp(-(tr - te / 2) / t1) + np.exp(-tr / t1))
    textbook = np.exp(-te / t2) * (1 - np.exp(-tr / t1))
    np.testing.assert_allclose(s[-1], exact, rtol=1e-3)
    assert abs(s[-1] - textbook) / textbook > 0.03  # the textbook formula is measurably off


def test_spin_echo_refocuses_any_off_resonance():
    # 2 us pulses: off-resonance during the pulses (250 Hz x 2 us) stays below 1e-3
    te = 0.02
    seq = spin_echo_train(te, 0.1, n_tr=1, p=2e-6)
    ref = mt.simulate(spins(t2=0.05), seq, **F64).samples[0, 0]
    for df in (13.0, -71.0, 250.0):
        s = mt.simulate(spins(t2=0.05, delta_f=df), seq, **F64).samples[0, 0]
        np.testing.assert_allclose(complex(s), complex(ref), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(abs(complex(ref)), np.exp(-te / 0.05), rtol=1e-3)


def test_stimulated_echo_half_amplitude():
    # 90 - tau - 90 - TM - 90 - tau: S = 1/2 exp(-2 tau/T2) exp(-TM/T1), with dephasing
    # gradient lobes of equal area in both tau periods (4 cycles across the spin column)
    # and a crusher of another area (7 cycles) during TM.
    n, length = 64, 0.01
    x = (np.arange(n) + 0.5) / n * length - length / 2
    t1, t2, tau, tm = 0.5, 0.08, 0.01, 0.1
    twin = mt.Twin(position=np.c_[x, 0 * x, 0 * x], pd=np.full(n, 1 / n), t1=np.full(n, t1),
                   t2=np.full(n, t2))
    g_area = 4.0 / length / mt.GAMMA_BAR  # T s/m for 4 cycles over the column
    lobe = mt.TrapGrad("x", g_area / 1e-3, 0.0, 1e-3, 0.0)
    crush = mt.TrapGrad("x", 7.0 / length / mt.GAMMA_BAR / 2e-3, 0.0, 2e-3, 0.0)
    p = 10e-6
    seq = build([
        rf_at(p, hard(np.pi / 2, 2 * p)),
        (3e-3, mt.Block(gx=lobe)),
        rf_at(p + tau, hard(np.pi / 2, 2 * p)),
        (p + tau + 0.02, mt.Block(gx=crush)),
        rf_at(p + tau + tm, hard(np.pi / 2, 2 * p)),
        (p + tau + tm + 3e-3, mt.Block(gx=lobe)),
        adc_at(p + 2 * tau + tm),
    ], total=2 * tau + tm + 0.01)
    s = abs(complex(mt.simulate(twin, seq, **F64).samples[0, 0]))
    np.testing.assert_allclose(s, 0.5 * np.exp(-2 * tau / t2) * np.exp(-tm / t1), rtol=1e-3)


def cpmg(esp, n_echo, refocus_flip, refocus_phase):
    items = [rf_at(10e-6, hard(np.pi / 2, 20e-6))]
    for k in range(n_echo):
        items.append(rf_at(10e-6 + esp / 2 + k * esp, hard(refocus_flip, 20e-6, phase=refocus_phase,
                                                           use="refocusing")))
        items.append(adc_at(10e-6 + (k + 1) * esp))
    return build(items, total=(n_echo + 0.5) * esp)


def test_cpmg_echo_train_decays_with_t2():
    # ideal 180s: echo n = exp(-n ESP / T2), for every off-resonance
    t2, esp = 0.06, 0.01
    twin = spins(3, t2=t2, delta_f=[0.0, 20.0, -50.0])
    sig = mt.simulate(twin, cpmg(esp, 12, np.pi, np.pi / 2), **F64)
    s = np.abs(np.asarray(sig.samples[0])) / 3
    n = np.arange(1, 13)
    np.testing.assert_allclose(s, np.exp(-n * esp / t2), rtol=1e-3)


def test_cpmg_smooth_cp_alternates_with_imperfect_refocusing():
    # 150 degree refocusing. Over a spread of off-resonance, CPMG (90x-180y) echoes stay
    # high and smooth while CP (90x-180x) echoes lose signal; for an on-resonance spin the
    # CP train is a plain rotation, My = cos(n flip), while CPMG is constant.
    n = 101
    twin = spins(n, delta_f=np.linspace(-150, 150, n), pd=1 / n)
    flip = np.radians(150)
    s_cpmg = np.abs(np.asarray(mt.simulate(twin, cpmg(0.01, 8, flip, np.pi / 2), **F64).samples[0]))
    s_cp = np.abs(np.asarray(mt.simulate(twin, cpmg(0.01, 8, flip, 0.0), **F64).samples[0]))

    def zigzag(s):  # mean |second difference| relative to the mean echo
        return np.mean(np.abs(np.diff(s, 2))) / np.mean(s)

    assert zigzag(s_cp) > 3 * zigzag(s_cpmg)
    assert s_cpmg.min() > 0.9 and s_cp.min() < 0.5

    one = spins(1)
    c1 = np.abs(np.asarray(mt.simulate(one, cpmg(0.01, 6, flip, np.pi / 2), **F64).samples[0]))
    p1 = np.asarray(mt.simulate(one, cpmg(0.01, 6, flip, 0.0), **F64).samples[0])
    np.testing.assert_allclose(c1, 1.0, atol=1e-9)  # CPMG: M along the refocusing axis
    # CP on resonance: every refocusing pulse rotates M about the excitation axis, so the
    # n-th echo is My = cos(n * flip) exactly
    k = np.arange(1, 7)
    np.testing.assert_allclose(p1.imag, np.cos(k * flip), atol=1e-9)
