"""Steady states: Ernst (spoiled GRE), RF spoiling, bSSFP, inversion-recovery null
(PHYSICS.md 4, 5, 6). Idealizations are stated per test."""

import jax.numpy as jnp
import numpy as np

import mritwin as mt
from tests.seqkit import IDEAL, adc_at, build, hard, rf_at

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def concat(seqs):
    out = seqs[0]
    for s in seqs[1:]:
        out = out + s
    return out


def one(t1, t2, **kw):
    return mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[t1], t2=[t2], **{k: [v] for k, v in kw.items()})


def test_ernst_steady_state_ideal_spoiling():
    # Ideal spoiling exactly: T2 = 5 ms << TR = 50 ms (exp(-TR/T2) = 4.5e-5).
    # S = sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2); 2 us pulses.
    t1, t2, tr, te, a = 0.5, 0.005, 0.05, 0.002, np.radians(30)
    one_tr = build([rf_at(1e-6, hard(a, 2e-6)), adc_at(1e-6 + te)], total=tr)
    sig = mt.simulate(one(t1, t2), concat([one_tr] * 60), **F64)
    e1 = np.exp(-tr / t1)
    ernst = np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te / t2)
    np.testing.assert_allclose(abs(complex(sig.samples[0, -1])), ernst, rtol=1e-3)


def rf_spoiled_flash(n_tr, a, tr, te, spoil_cycles_per_m, increment_deg):
    seqs = []
    phase, inc = 0.0, 0.0
    spoiler = mt.TrapGrad("x", spoil_cycles_per_m / mt.GAMMA_BAR / 1e-3, 0.0, 1e-3, 0.0)
    for _ in range(n_tr):
        ph = np.radians(phase)
        seqs.append(build([
            rf_at(1e-6, hard(a, 2e-6, phase=ph)),
            adc_at(1e-6 + te, phase=ph),
            (tr - 1.5e-3, mt.Block(gx=spoiler)),
        ], total=tr))
        inc += increment_deg
        phase = (phase + inc) % 360.0
    return concat(seqs)


def test_rf_spoiled_flash_approaches_ernst():
    # RF spoiling (117 deg quadratic phase) + a gradient spoiler of 4 cycles across the voxel,
    # 100 isochromats spread over the 1 mm voxel along x. T2 = 80 ms is NOT << TR = 10 ms, so
    # only RF spoiling brings the signal near the ideal (Ernst) value; Zur et al. (MRM 1991)
    # report residual deviations of a few percent for 117 deg, so the tolerance is 5 %.
    t1, t2, tr, te, a = 1.0, 0.08, 0.01, 0.004, np.radians(15)
    voxel = 1e-3
    twin = mt.with_isochromats(one(t1, t2), 100, (voxel, 0, 0))
    e1 = np.exp(-tr / t1)
    ernst = np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te / t2)
    spoiled = rf_spoiled_flash(300, a, tr, te, 4 / voxel, 117.0)
    sc = np.asarray(mt.simulate(twin, spoiled, **F64).samples[0])
    s = np.abs(sc)
    plain = rf_spoiled_flash(300, a, tr, te, 4 / voxel, 0.0)
    s0 = np.abs(np.asarray(mt.simulate(twin, plain, **F64).samples[0]))
    assert abs(s[-20:].mean() - ernst) / ernst < 0.05
    # gradient spoiling alone keeps T2-dependent coherences: clearly off the Ernst value
    assert abs(s0[-20:].mean() - ernst) / ernst > 0.2
    # matched RF/ADC phases give a stable phase in the steady state (within the residual
    # fluctuation of 100 isochromats); the same data without the ADC demodulation wander
    ph = np.angle(sc[-20:])
    assert np.ptp(np.unwrap(ph)) < 0.15
    rf_phase = np.radians(np.cumsum(np.cumsum(np.full(300, 117.0))) - np.cumsum(np.full(300, 117.0)))
    raw = sc * np.exp(-1j * rf_phase)  # undo the demodulation by the (matched) ADC phase
    assert np.ptp(np.unwrap(np.angle(raw[-20:]))) > 1.0


def bssfp(n_tr, a, tr, prep):
    seqs = []
    if prep:
        seqs.append(build([rf_at(tr / 2 - 1e-6, hard(a / 2, 2e-6, phase=np.pi))], total=tr / 2))
    for k in range(n_tr):
        ph = np.pi * (k % 2)
        seqs.append(build([rf_at(1e-6, hard(a, 2e-6, phase=ph)), adc_at(1e-6 + tr / 2, phase=ph)],
                          total=tr))
    return concat(seqs)


def test_bssfp_steady_state_and_alpha_half_preparation():
    # On resonance, alternating RF phase, 2 us pulses (instantaneous to 1e-4):
    # S0 = (1 - E1) sin a / (1 - (E1 - E2) cos a - E1 E2); at TE = TR/2 S0 exp(-TR/(2 T2)).
    t1, t2, tr, a = 0.3, 0.1, 0.005, np.radians(40)
    e1, e2 = np.exp(-tr / t1), np.exp(-tr / t2)
    s0 = (1 - e1) * np.sin(a) / (1 - (e1 - e2) * np.cos(a) - e1 * e2)
    expected = s0 * np.exp(-tr / (2 * t2))
    s_prep = np.abs(np.asarray(mt.simulate(one(t1, t2), bssfp(800, a, tr, True), **F64).samples[0]))
    s_none = np.abs(np.asarray(mt.simulate(one(t1, t2), bssfp(800, a, tr, False), **F64).samples[0]))
    np.testing.assert_allclose(s_prep[-1], expected, rtol=1e-3)
    np.testing.assert_allclose(s_none[-1], expected, rtol=1e-3)

    def oscillation(s):
        return np.mean(np.abs(np.diff(s[:60], 2)))

    assert oscillation(s_none) > 10 * oscillation(s_prep)


def test_inversion_recovery_null_at_finite_tr():
    # 180 - TI - 90 (FID sampled 1 us after) ... TR; T2 = 20 ms << TR so Mz = 0 after readout
    # and nothing transverse survives: S = |1 - 2 exp(-TI/T1) + exp(-TR/T1)|, null at
    # TI = T1 ln(2 / (1 + exp(-TR/T1))).
    t1, t2, tr = 1.0, 0.02, 2.0
    twin = one(t1, t2)
    ti_null = t1 * np.log(2 / (1 + np.exp(-tr / t1)))
    for ti in (0.2, ti_null, 1.2):
        one_tr = build([rf_at(1e-6, hard(np.pi, 2e-6, use="inversion")),
                        rf_at(1e-6 + ti, hard(np.pi / 2, 2e-6)), adc_at(2e-6 + ti + 1e-6)], total=tr)
        s = abs(complex(mt.simulate(twin, concat([one_tr] * 3), **F64).samples[0, -1]))
        expected = abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1))
        np.testing.assert_allclose(s, expected, rtol=1e-3, atol=1e-3)
    assert ti_null < t1 * np.log(2)  # finite TR moves the null earlier than T1 ln 2


def test_ideal_spoiling_gives_ernst_with_long_t2():
    # Bloch(ideal_spoiling=True) nulls Mxy before each excitation: the Ernst formula holds
    # exactly even for T2 ~ TR and a single isochromat.
    t1, t2, tr, te, a = 1.0, 0.1, 0.02, 0.003, np.radians(20)
    one_tr = build([rf_at(1e-6, hard(a, 2e-6)), adc_at(1e-6 + te)], total=tr)
    sig = mt.simulate(one(t1, t2), concat([one_tr] * 200), method=mt.Bloch(ideal_spoiling=True), **F64)
    e1 = np.exp(-tr / t1)
    ernst = np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te / t2)
    np.testing.assert_allclose(abs(complex(sig.samples[0, -1])), ernst, rtol=1e-3)
    plain = mt.simulate(one(t1, t2), concat([one_tr] * 200), **F64)
    assert abs(abs(complex(plain.samples[0, -1])) - ernst) / ernst > 0.05


def test_ideal_spoiling_marks_the_pulse_not_the_step_before_it():
    """Back-to-back 30 degree pulses of 680 us: their start times, summed from block
    durations, lie a rounding below the step bounds (3 * 0.68 ms = 0.0020399999999999997
    s). Ideal spoiling nulls Mxy right before each pulse, so after the fourth
    M = (0, sin a cos^3 a, cos^4 a); spoiling the step before (the previous pulse) gave
    twice the signal before 2026-12-06."""
    a = np.pi / 6
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[np.inf], t2=[np.inf])
    blocks = [mt.Block(rf=mt.make_block_pulse(a, 680 * 1e-6, delay=0.0, scanner=IDEAL)) for _ in range(4)]
    seq = mt.Sequence(blocks + [mt.Block(adc=mt.ADC(1, 2e-6))])
    s = mt.simulate(twin, seq, method=mt.Bloch(ideal_spoiling=True), return_magnetization=True, **F64)
    np.testing.assert_allclose(complex(np.asarray(s.samples)[0, 0]), 1j * np.sin(a) * np.cos(a) ** 3, atol=1e-12)
    np.testing.assert_allclose(np.asarray(s.magnetization)[0], [0, np.sin(a) * np.cos(a) ** 3, np.cos(a) ** 4],
                               atol=1e-12)
