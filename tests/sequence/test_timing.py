"""Minimum TE/TR/TI, impossible timing, flip-angle and gradient-limit errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence import builders as B, timing

SC = mt.Scanner(b0=3.0)
GRE = dict(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=15, slice_thickness=5e-3)


def test_minimum_timing_is_achievable_and_tight():
    t = timing.minimum_timing(B.gre, **GRE)
    seq = B.gre(te=t["te"], tr=t["tr"], **GRE)
    timing.check_timing(seq, te=t["te"], tr=t["tr"])
    with pytest.raises(ValueError, match=r"te = .* is impossible: the minimum te .* is (\d+\.\d+) ms"):
        B.gre(te=t["te"] - 50e-6, **GRE)
    with pytest.raises(ValueError, match=r"minimum tr"):
        B.gre(tr=t["tr"] - 50e-6, **GRE)


def test_min_te_grows_with_lower_bandwidth():
    fast = timing.minimum_timing(B.gre, bandwidth_per_pixel=500.0, **GRE)
    slow = timing.minimum_timing(B.gre, bandwidth_per_pixel=100.0, **GRE)
    assert slow["te"] > fast["te"] + 1e-3


def test_impossible_ti_states_minimum():
    with pytest.raises(ValueError, match=r"minimum ti .* is \d+\.\d+ ms"):
        B.inversion_recovery(scanner=SC, fov=0.2, matrix=16, ti=1e-3, te=20e-3, tr=2.0, slice_thickness=5e-3)
    with pytest.raises(ValueError, match=r"minimum ti"):
        B.mprage(scanner=SC, fov=0.2, matrix=(16, 16, 16), ti=10e-3, tr=2.3, flip_angle_deg=9)


def test_flip_angle_out_of_range():
    with pytest.raises(ValueError, match=r"flip_angle must be in \(0, 3.142\] rad \(0 to 180 deg\)"):
        B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=200, slice_thickness=5e-3)
    with pytest.raises(ValueError, match="flip_angle must be in"):
        B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle=-0.1, slice_thickness=5e-3)
    with pytest.raises(ValueError, match="not both"):
        B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle=0.1, flip_angle_deg=10, slice_thickness=5e-3)


def test_rf_beyond_b1_limit():
    with pytest.raises(ValueError, match=r"max_b1 .* lengthen it to at least"):
        B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=90, slice_thickness=0.02, rf_duration=0.2e-3)


def test_matrix_fov_beyond_gradient_limits():
    with pytest.raises(ValueError, match=r"bandwidth can be at most .* Hz/pixel, .* FOV must be at least"):
        B.gre(scanner=SC, fov=0.01, matrix=256, flip_angle_deg=15, slice_thickness=5e-3,
              bandwidth_per_pixel=1000.0)
    with pytest.raises(ValueError, match=r"slice-select gradient .* use a thickness of at least"):
        B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle_deg=15, slice_thickness=0.1e-3)


def test_echo_and_centre_checks():
    seq = B.spin_echo(scanner=SC, fov=0.2, matrix=16, te=30e-3, tr=0.4, slice_thickness=5e-3)
    idx, t = timing.kspace_centre_samples(seq)
    assert idx.size == 1 and np.linalg.norm(seq.kspace()[idx[0]]) < 1e-6
    with pytest.raises(ValueError, match="TE measured"):
        timing.check_timing(seq, te=31e-3)
    with pytest.raises(ValueError, match="TR measured"):
        timing.check_timing(seq, tr=0.5)


def test_traced_flip_angle_flows_into_rf():
    def peak_b1(a):
        seq = B.gre(scanner=SC, fov=0.2, matrix=16, flip_angle=a, slice_thickness=5e-3, te=5e-3, tr=10e-3)
        return seq.blocks[0].rf.amplitude

    g = jax.grad(peak_b1)(jnp.asarray(math.radians(15.0)))
    np.testing.assert_allclose(float(g) * math.radians(15.0), float(peak_b1(math.radians(15.0))), rtol=1e-6)


@pytest.mark.slow
def test_gradient_of_simulated_signal_wrt_flip():
    twin = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[0.1])

    def sig(a):
        seq = B.gre(scanner=SC, fov=0.2, matrix=4, flip_angle=a, slice_thickness=5e-3, te=4e-3, tr=8e-3,
                    rf_duration=0.5e-3)
        return jnp.abs(mt.simulate(twin, seq, method=mt.Bloch(rf_dt=20e-6)).samples[0, 0])

    a = 0.3
    g = float(jax.grad(sig)(jnp.asarray(a)))
    fd = (float(sig(a + 1e-3)) - float(sig(a - 1e-3))) / 2e-3
    assert g == pytest.approx(fd, rel=0.02)


TRACED = {
    "gre": lambda a: B.gre(scanner=SC, fov=0.2, matrix=8, flip_angle=a, slice_thickness=5e-3),
    "multi_echo_gre": lambda a: B.multi_echo_gre(scanner=SC, fov=0.2, matrix=8, n_echoes=2, flip_angle=a,
                                                 slice_thickness=5e-3),
    "tse": lambda a: B.tse(scanner=SC, fov=0.2, matrix=8, etl=4, flip_angle=a, refocusing_angle=2 * a,
                           slice_thickness=5e-3),
    "epi": lambda a: B.epi(scanner=SC, fov=0.2, matrix=8, flip_angle=a, slice_thickness=5e-3),
    "bssfp": lambda a: B.bssfp(scanner=SC, fov=0.2, matrix=8, flip_angle=a, slice_thickness=5e-3),
    "radial": lambda a: B.radial(scanner=SC, fov=0.2, matrix=8, n_spokes=3, flip_angle=a, slice_thickness=5e-3),
    "spiral": lambda a: B.spiral(scanner=SC, fov=0.2, matrix=8, flip_angle=a, slice_thickness=5e-3),
    "mprage": lambda a: B.mprage(scanner=SC, fov=0.2, matrix=(8, 2, 2), ti=0.5, flip_angle=a, n_dummy=0),
}


@pytest.mark.parametrize("name", sorted(TRACED))
def test_every_builder_accepts_a_traced_flip_angle(name):
    """The flip angle is a differentiable parameter: RF amplitudes are linear in it."""
    a0 = 0.5

    def total_b1(a):
        seq = TRACED[name](a)
        return sum(jnp.sum(b.rf.amplitude) for b in seq.blocks if b.rf is not None and b.rf.use == "excitation")

    g = float(jax.grad(total_b1)(jnp.asarray(a0)))
    assert g == pytest.approx(float(total_b1(a0)) / a0, rel=1e-5)
    # static metadata is unaffected by tracing
    seq = TRACED[name](a0)
    assert seq.definitions["FlipAngle"] == pytest.approx(a0)
