"""Pulse trains (`RF.play`): one pulse with a value per play, read as one vector.

Built from a traced vector, the plays of a train must give exactly the signal, the
gradient and the forward-mode derivative of the same sequence built one pulse per
block from scalars (the independent reference: the ordinary per-event path), while the
traced program no longer grows with the number of plays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.timeline import rf_table
from tests.seqkit import IDEAL

N_TR = 12


def _train_seq(flips, phases, *, trains: bool, sinc: bool = False, reuse_play: bool = False):
    """A short spoiled-gradient-echo-like train: per TR one pulse of ``flips[i]`` [rad] and
    RF phase ``phases[i]`` [rad] (a block pulse, or a 3-lobe sinc with ``sinc``), a
    readout gradient with 8 ADC samples and a spoiler. With ``trains`` the pulses are
    plays of one train (`RF.play`), else one pulse per block from scalars. With
    ``reuse_play`` the first play object is placed again in the last TR (as in the
    reference, whose last pulse is then the first one's values)."""
    if sinc:
        def pulse(f, p):
            return mt.make_sinc_pulse(f, 400e-6, time_bw_product=3.0, phase_offset=p, delay=0.0, scanner=IDEAL)
    else:
        def pulse(f, p):
            return mt.make_block_pulse(f, 200e-6, phase_offset=p, delay=0.0, scanner=IDEAL)
    train = pulse(flips, phases) if trains else None
    gx = mt.make_trapezoid("x", area=800.0, flat_time=160e-6, scanner=IDEAL)
    spoil = mt.make_trapezoid("x", area=4000.0, scanner=IDEAL)
    blocks, first = [], None
    for i in range(N_TR):
        j = 0 if (reuse_play and i == N_TR - 1) else i
        if trains:
            rf = first if (reuse_play and i == N_TR - 1) else train.play(i)
            first = rf if i == 0 else first
        else:
            rf = pulse(flips[j], phases[j])
        blocks += [mt.Block(rf=rf), mt.Block(gx=gx, adc=mt.ADC(8, 20e-6, delay=gx.rise_time)),
                   mt.Block(gx=spoil), mt.Block(duration=1e-3)]
    return mt.Sequence(blocks)


def _twin():
    rng = np.random.default_rng(3)
    n = 24
    return mt.Twin(position=np.c_[rng.uniform(-0.05, 0.05, (n, 2)), np.zeros(n)], pd=rng.uniform(0.5, 1, n),
                   t1=rng.uniform(0.3, 1.5, n), t2=rng.uniform(0.02, 0.1, n), delta_f=rng.normal(0, 20, n))


FLIPS = np.radians(np.linspace(10.0, 70.0, N_TR))
PHASES = np.radians(117.0) * np.arange(N_TR) * (np.arange(N_TR) + 1) / 2  # RF spoiling


def _signal(flips, phases, method=None, **kw):
    sig = mt.simulate(_twin(), _train_seq(flips, phases, **kw), scanner=IDEAL, dtype=jnp.float64, method=method)
    return sig.samples


@pytest.mark.parametrize("sinc", [False, True])
@pytest.mark.parametrize("reuse_play", [False, True])
def test_traced_train_equals_pulses_from_scalars(sinc, reuse_play):
    """Traced flips and phases (one jit): a train's plays give the signal of one pulse per block."""
    f = jax.jit(lambda a, p, t: _signal(a, p, trains=t, sinc=sinc, reuse_play=reuse_play), static_argnums=2)
    ref = np.asarray(f(FLIPS, PHASES, False))
    got = np.asarray(f(FLIPS, PHASES, True))
    assert np.max(np.abs(ref)) > 1e-3
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.max(np.abs(ref)))


def test_concrete_train_is_ordinary_pulses():
    """Concrete values: the plays are ordinary pulses, the RF table equals the per-block one."""
    a = rf_table(_train_seq(FLIPS, PHASES, trains=True), 3.0, IDEAL.gamma_bar)
    b = rf_table(_train_seq(FLIPS, PHASES, trains=False), 3.0, IDEAL.gamma_bar)
    assert isinstance(a.values, np.ndarray)
    np.testing.assert_array_equal(a.values[a.value_index], b.values[b.value_index])
    np.testing.assert_array_equal(a.edge0, b.edge0)


def test_gradients_and_forward_mode_equal_pulses_from_scalars():
    """Reverse mode w.r.t. flips and phases, and jax.jvp (forward mode), as per block.
    (One step per block pulse: the engine's held steps are tested elsewhere and triple
    the compile time of these four programs.)"""

    def loss(a, p, trains):
        return jnp.sum(jnp.abs(_signal(a, p, trains=trains, method=mt.Bloch(max_rf_dt=None))) ** 2)

    g_ref = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(FLIPS, PHASES, False)
    g_got = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(FLIPS, PHASES, True)
    for r, g in zip(g_ref, g_got):
        assert np.max(np.abs(r)) > 1e-6
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * np.max(np.abs(r)))
    direction = np.cos(np.arange(N_TR))
    jvp = jax.jit(lambda a, d, trains: jax.jvp(lambda x: loss(x, PHASES, trains), (a,), (d,))[1],
                  static_argnums=2)
    t_ref, t_got = jvp(FLIPS, direction, False), jvp(FLIPS, direction, True)
    np.testing.assert_allclose(float(t_got), float(t_ref), rtol=1e-10)
    np.testing.assert_allclose(float(t_got), float(np.dot(g_ref[0], direction)), rtol=1e-8)


def test_traced_program_does_not_grow_with_the_plays():
    """The reason for trains: the RF values of n plays cost a fixed number of operations
    (besides each play's own unused value, dropped by the compiler), not n of them."""

    def count(n, trains):
        def f(a):
            train = mt.make_block_pulse(a, 200e-6, delay=0.0, scanner=IDEAL)
            pulses = [train.play(i) if trains else mt.make_block_pulse(a[i], 200e-6, delay=0.0, scanner=IDEAL)
                      for i in range(n)]
            seq = mt.Sequence([b for rf in pulses for b in (mt.Block(rf=rf), mt.Block(duration=1e-3))])
            return jnp.real(rf_table(seq, 3.0, IDEAL.gamma_bar).values)

        eqns = jax.make_jaxpr(f)(jnp.linspace(0.1, 0.5, n)).jaxpr.eqns
        return sum(e.primitive.name not in ("slice", "squeeze") for e in eqns)

    assert count(20, True) == count(40, True)
    assert count(40, False) > count(20, False) + 20  # (the per-block path: several per play)


def test_two_trains_and_ordinary_pulses_interleaved():
    """Plays of two traced trains and a plain pulse, interleaved in time: each block
    keeps its own values (run order in the value table is not time order)."""

    def seq(a, b, trains):
        ta = mt.make_block_pulse(a, 100e-6, delay=0.0, scanner=IDEAL)
        tb = mt.make_block_pulse(b, 300e-6, phase_offset=0.5, delay=0.0, scanner=IDEAL)
        blocks = []
        for i in range(4):
            ra = ta.play(i) if trains else mt.make_block_pulse(a[i], 100e-6, delay=0.0, scanner=IDEAL)
            rb = tb.play(i) if trains else mt.make_block_pulse(b[i], 300e-6, phase_offset=0.5, delay=0.0,
                                                               scanner=IDEAL)
            blocks += [mt.Block(rf=rb), mt.Block(duration=1e-4), mt.Block(rf=mt.make_block_pulse(
                0.2 * (i + 1), 50e-6, delay=0.0, scanner=IDEAL)), mt.Block(rf=ra), mt.Block(duration=2e-4)]
        return mt.Sequence(blocks)

    def table(a, b, trains):
        t = rf_table(seq(a, b, trains), 3.0, IDEAL.gamma_bar)
        return t.values[t.value_index], t.edge0

    a, b = jnp.array([0.1, 0.2, 0.3, 0.4]), jnp.array([1.0, 1.1, 1.2, 1.3])
    ref_v, ref_e = jax.jit(table, static_argnums=2)(a, b, False)
    got_v, got_e = jax.jit(table, static_argnums=2)(a, b, True)
    np.testing.assert_array_equal(got_e, ref_e)
    np.testing.assert_allclose(got_v, ref_v, rtol=1e-15, atol=0)


def test_train_errors():
    train = mt.make_block_pulse(np.radians([10.0, 20.0]), 1e-3, delay=0.0, scanner=IDEAL)
    assert train.n_plays == 2 and train.play(1).n_plays is None
    with pytest.raises(ValueError, match=r"pulse train of 2 plays.*train\.play\(k\)"):
        mt.Block(rf=train)
    for k in (2, -1, 0.5, True):
        with pytest.raises(ValueError, match=r"integer in \[0, 2\)"):
            train.play(k)
    with pytest.raises(ValueError, match=r"train of 2 plays; ask one play, train\.play\(k\)\.flip_angle\(\)"):
        train.flip_angle()
    with pytest.raises(ValueError, match=r"train\.play\(k\)\.signal"):
        _ = train.signal
    np.testing.assert_allclose(train.play(1).flip_angle(), np.radians(20.0), rtol=1e-12)
    with pytest.raises(ValueError, match="not a train"):
        train.play(0).play(0)
    with pytest.raises(ValueError, match="same length"):
        mt.make_block_pulse(np.radians([10.0, 20.0]), 1e-3, phase_offset=np.zeros(3), scanner=IDEAL)
    with pytest.raises(ValueError, match="at least one play"):
        mt.make_block_pulse(np.zeros(0), 1e-3, scanner=IDEAL)
    with pytest.raises(ValueError, match=r"RF.amplitude must have 0 or 1 dimension"):
        mt.RF(np.ones((2, 2)), np.ones(1))


def test_plays_write_and_read_back_as_pulseq(tmp_path):
    """A sequence of plays is an ordinary sequence for the Pulseq writer."""
    seq = _train_seq(FLIPS, PHASES, trains=True)
    path = tmp_path / "train.seq"
    mt.io.write_seq(seq, path)
    back = mt.io.read_seq(path)
    flips = [b.rf.flip_angle() for b in back.blocks if b.rf is not None]
    np.testing.assert_allclose(flips, FLIPS, rtol=1e-6)


def test_sar_of_a_traced_train_equals_pulses_from_scalars():
    """B1+rms (the SAR penalty of flip-angle optimization) and its gradient through a
    train's plays, beside an ordinary pulse, equal the per-block values."""
    from mritwin.sequence.safety import b1_rms, rf_energy

    def seq(a, trains):
        train = mt.make_sinc_pulse(a, 400e-6, time_bw_product=3.0, delay=0.0, scanner=IDEAL)
        blocks = [mt.Block(rf=mt.make_block_pulse(np.pi, 1e-3, delay=0.0, scanner=IDEAL))]
        for i in range(N_TR):
            rf = train.play(i) if trains else mt.make_sinc_pulse(a[i], 400e-6, time_bw_product=3.0, delay=0.0,
                                                                  scanner=IDEAL)
            blocks += [mt.Block(rf=rf), mt.Block(duration=2e-3)]
        return mt.Sequence(blocks)

    ref = jax.jit(jax.value_and_grad(lambda a: b1_rms(seq(a, False))))(FLIPS)
    got = jax.jit(jax.value_and_grad(lambda a: b1_rms(seq(a, True))))(FLIPS)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-14)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda a: rf_energy(seq(a, True)))(FLIPS), rf_energy(seq(FLIPS, False)),
                               rtol=1e-13)
    # independent: a sinc of flip a has ∫|B1|² dt ∝ a², the block pulse's is (π / (2π γ̄ T))² T
    e = rf_energy(seq(FLIPS, False))
    np.testing.assert_allclose(e[1:] / e[1], (FLIPS / FLIPS[0]) ** 2, rtol=1e-12)
    np.testing.assert_allclose(e[0], (np.pi / (2 * np.pi * IDEAL.gamma_bar * 1e-3)) ** 2 * 1e-3, rtol=1e-12)


def test_builder_pulses_sharing_a_traced_flip_are_one_run():
    """A builder's pulse at every TR's spoiling phase shares one traced amplitude: its
    values are computed at once (the program does not grow with the TRs) and equal the
    concrete table's."""

    def gre(flip, matrix):
        return mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=matrix, flip_angle=flip, slice_thickness=5e-3)

    def values(flip, matrix):
        t = rf_table(gre(flip, matrix), 3.0, IDEAL.gamma_bar)
        return t.values[t.value_index]

    flip = np.radians(15.0)
    ref = values(flip, 16)
    assert isinstance(ref, np.ndarray)
    got = jax.jit(values, static_argnums=1)(flip, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14 * np.max(np.abs(ref)))
    n8, n16 = (len(jax.make_jaxpr(lambda a, m=m: jnp.real(rf_table(gre(a, m), 3.0, IDEAL.gamma_bar).values))(flip)
                   .jaxpr.eqns) for m in (8, 16))
    assert n8 == n16
