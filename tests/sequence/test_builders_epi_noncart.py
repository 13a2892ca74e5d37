"""Builders: EPI (GRE/SE), DWI, golden-angle radial, spiral.

DWI: the engine does not simulate diffusion yet, so instead of an exp(-bD) signal test
the b-value computed from the gradient waveform (`builders.b_values`, ∫|2πk|² dt) is
compared with the Stejskal–Tanner closed form for trapezoids (PHYSICS.md item 10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence import builders as B, timing

SC = mt.Scanner(b0=3.0)
FOV, THK = 0.2, 5e-3


def _grid(k, fov, n, ax):
    v = np.unique(np.round(k[:, ax] * fov, 6))
    np.testing.assert_allclose(v, np.arange(-(n // 2), n - n // 2), atol=1e-6)


@pytest.mark.parametrize("spin_echo,te", [(False, 30e-3), (True, 60e-3)])
def test_epi_timing_and_kspace(spin_echo, te):
    seq = B.epi(scanner=SC, fov=FOV, matrix=32, te=te, spin_echo=spin_echo, slice_thickness=THK)
    timing.check_timing(seq, te=te)
    k = seq.kspace()
    _grid(k, FOV, 32, 0)
    _grid(k, FOV, 32, 1)
    pts = {tuple(p) for p in np.round(k[:, :2] * FOV, 6)}
    assert len(pts) == 32 * 32  # every Cartesian point exactly once
    revs = [lab.value for b in seq.blocks for lab in b.labels if lab.name == "REV"]
    assert revs[:4] == [0, 1, 0, 1]


def test_epi_partial_fourier_and_min_te():
    full = timing.minimum_timing(B.epi, scanner=SC, fov=FOV, matrix=32, slice_thickness=THK)
    pf = timing.minimum_timing(B.epi, scanner=SC, fov=FOV, matrix=32, slice_thickness=THK, partial_fourier=0.625)
    assert pf["te"] < full["te"]
    seq = B.epi(scanner=SC, fov=FOV, matrix=32, slice_thickness=THK, partial_fourier=0.625)
    assert seq.n_adc_events == 20


def test_dwi_b_value_matches_stejskal_tanner():
    seq = B.dwi(scanner=SC, fov=FOV, matrix=16, b_values=(0.0, 1e9), directions=[(1, 0, 0), (0, 0, 1), (1, 1, 1)],
                slice_thickness=THK)
    d = seq.definitions
    # the lobes' closed form equals the requested b (design), at the amplitude used
    g = [b.gx.amplitude for b in seq.blocks if b.gx is not None and b.gx.flat_time == pytest.approx(
        d["DiffusionDelta"] - d["DiffusionRamp"]) and b.rf is None and b.adc is None][0]
    b_st = B.stejskal_tanner_b(float(g), d["DiffusionDelta"], d["DiffusionBigDelta"], d["DiffusionRamp"])
    assert b_st == pytest.approx(1e9, rel=1e-9)
    # the whole waveform (imaging gradients included) gives b within 1 %
    b = B.b_values(seq)
    assert b.size == 4
    assert b[0] < 0.01e9
    np.testing.assert_allclose(b[1:], 1e9, rtol=0.01)
    te = timing.echo_times(seq)
    assert np.ptp(te) < 1e-9
    with pytest.raises(ValueError, match="s/m\\^2"):
        B.dwi(scanner=SC, fov=FOV, matrix=16, b_values=(0, 1000), slice_thickness=THK)


def test_radial_golden_angle():
    seq = B.radial(scanner=SC, fov=FOV, matrix=32, n_spokes=13, te=4e-3, tr=10e-3, flip_angle_deg=10,
                   slice_thickness=THK)
    timing.check_timing(seq, te=4e-3, tr=10e-3)
    assert timing.echo_times(seq).size == 13  # every spoke crosses the centre
    k = seq.kspace().reshape(13, 32, 3)
    r = np.linalg.norm(k[:, :, :2], axis=2)
    np.testing.assert_allclose(r.max(axis=1), 16 / FOV, rtol=1e-9)  # extent matrix/(2 FOV)
    np.testing.assert_allclose(np.abs(np.diff(k[0, :, 0] + 1j * k[0, :, 1])), 1 / FOV, rtol=1e-9)
    ang = np.angle(k[:, 0, 0] + 1j * k[:, 0, 1])  # first sample points along -direction
    d = np.mod(np.diff(ang), 2 * np.pi)
    np.testing.assert_allclose(d, math.radians(111.246117975), atol=1e-6)


def test_spiral_coverage_and_te():
    seq = B.spiral(scanner=SC, fov=FOV, matrix=32, n_interleaves=4, flip_angle_deg=20, slice_thickness=THK,
                   te=3e-3, tr=20e-3)
    timing.check_timing(seq, te=3e-3, tr=20e-3)
    k = seq.kspace()
    r = np.linalg.norm(k[:, :2], axis=1)
    assert r.max() == pytest.approx(16 / FOV, rel=0.02)
    n = seq.blocks[[i for i, b in enumerate(seq.blocks) if b.adc is not None][0]].adc.num_samples
    step = np.abs(np.diff(k[:n, 0] + 1j * k[:n, 1]))
    assert step.max() < 1 / FOV  # sampled finely enough along the trajectory
    from mritwin.sequence import safety
    safety.check_gradients(seq, SC)  # within max_grad / max_slew
