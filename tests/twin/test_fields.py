import numpy as np
import pytest

import mritwin as mt
from mritwin.constants import GAMMA_BAR
from mritwin.twin import fields, phantoms


@pytest.fixture
def twin():
    return phantoms.brain(dims=2, matrix=24)


def test_b0_map_from_array_and_nifti(twin, tmp_path):
    import nibabel as nib

    lab, aff = phantoms.brain_labels(2, matrix=24)
    x = np.arange(24)[:, None, None] * np.ones((24, 24, 1))
    hz = 10.0 * x  # linear in i: trilinear interpolation is exact
    t = fields.with_b0_map(twin, hz, affine=aff, add=False)
    ijk = (np.asarray(twin.position, np.float64) * 1e3 - aff[:3, 3]) / np.diag(aff)[:3]
    np.testing.assert_allclose(np.asarray(t.delta_f), 10.0 * ijk[:, 0], rtol=1e-5, atol=1e-3)
    # added to the chemical shift by default; ppm of b0
    nib.save(nib.Nifti1Image(np.ones((24, 24, 1), np.float32), aff), tmp_path / "b0.nii.gz")
    t2 = fields.with_b0_map(twin, tmp_path / "b0.nii.gz", unit="ppm", b0=3.0)
    np.testing.assert_allclose(np.asarray(t2.delta_f) - np.asarray(twin.delta_f), 1e-6 * GAMMA_BAR * 3, rtol=1e-5)


def test_bad_maps(twin):
    lab, aff = phantoms.brain_labels(2, matrix=24)
    bad = np.zeros((24, 24, 1))
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="B0 map contains NaN or inf at 1 value"):
        fields.with_b0_map(twin, bad, affine=aff)
    with pytest.raises(ValueError, match="B1 map must be >= 0"):
        fields.with_b1_map(twin, -np.ones((24, 24, 1)), affine=aff)
    with pytest.raises(ValueError, match=r"spin\(s\) lie outside the B0 map grid"):
        fields.with_b0_map(twin, np.zeros((4, 4, 1)), affine=aff)
    with pytest.raises(ValueError, match=r"coil sensitivities must have shape \(n_coils, \d+\)"):
        fields.with_coil_sensitivities(twin, np.ones((2, 7)))
    with pytest.raises(ValueError, match="B0 map gives shape"):
        fields.with_b0_map(twin, np.ones(3))
    with pytest.raises(ValueError, match="affine is singular"):
        fields.with_b0_map(twin, np.zeros((24, 24, 1)), affine=np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unit must be"):
        fields.with_b0_map(twin, np.zeros(twin.n_spins), unit="gauss")


def test_sphere_and_cylinder_fields_closed_form():
    b0, dchi, a = 3.0, fields.AIR_TISSUE_DELTA_CHI, 0.01
    p = np.array([[0, 0, 0.02], [0.02, 0, 0], [0, 0, 0.005]])  # on axis, equator, inside
    dB = fields.sphere_field(p, radius=a, delta_chi=dchi, b0=b0)
    np.testing.assert_allclose(dB, [2 / 3 * dchi * b0 / 8, -1 / 3 * dchi * b0 / 8, 0.0])
    # cylinder perpendicular to B0 (axis x): outside along z (phi = 0) and y (phi = 90 deg)
    q = np.array([[0.3, 0, 0.02], [0.3, 0.02, 0], [0.0, 0.0, 0.0]])
    dC = fields.cylinder_field(q, axis=(1, 0, 0), radius=a, delta_chi=dchi, b0=b0)
    np.testing.assert_allclose(dC, [dchi * b0 / 2 / 4, -dchi * b0 / 2 / 4, -dchi * b0 / 6])
    # parallel to B0: no field outside, Δχ B0 / 3 inside
    dP = fields.cylinder_field(q, axis=(0, 0, 1), radius=a, delta_chi=dchi, b0=b0)
    np.testing.assert_allclose(dP, [0.0, 0.0, dchi * b0 / 3])


def test_coils(twin):
    pos = np.asarray(twin.position)
    bc = fields.birdcage_sensitivities(pos, 8, radius=0.1)
    assert bc.shape == (8, twin.n_spins) and np.abs(bc).max() == pytest.approx(1.0)
    loops = fields.loop_coil_sensitivities(pos, [[0.13, 0, 0], [-0.13, 0, 0]], [[1, 0, 0], [-1, 0, 0]], 0.04)
    # each loop is most sensitive near itself
    assert pos[np.argmax(np.abs(loops[0])), 0] > 0.05 and pos[np.argmax(np.abs(loops[1])), 0] < -0.05
    t = fields.with_coil_sensitivities(twin, loops)
    assert t.n_coils == 2
    # on the axis (x) of a loop, B = mu0 I a^2 / (2 (a^2 + x^2)^1.5) along the axis (|Bx - iBy| = Bx)
    s = fields.loop_coil_sensitivities(np.array([[0.03, 0.0, 0.0]]), [[0, 0, 0]], [[1, 0, 0]], 0.04,
                                       n_segments=720, normalize=False)
    np.testing.assert_allclose(abs(s[0, 0]), fields.MU0 * 0.04**2 / (2 * (0.04**2 + 0.03**2) ** 1.5), rtol=1e-4)
    # the simulator uses them: one signal per coil
    sig = mt.simulate(t[:50].replace(t2_prime=None), mt.Sequence([mt.Block(rf=mt.make_block_pulse(np.pi / 2, 1e-3)),
                                           mt.Block(adc=mt.make_adc(4, dwell=1e-4))]))
    assert sig.samples.shape == (2, 4)


def test_b1_map(twin):
    t = fields.with_b1_map(twin, lambda p: 1.0 + 0.0 * p[:, 0])
    np.testing.assert_allclose(np.asarray(t.b1), 1.0)
