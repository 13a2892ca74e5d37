"""twin_from_labels: geometry, tissue values, partial volumes, resampling, bad input."""

import math

import nibabel as nib
import numpy as np
import pytest

import mritwin as mt
from mritwin.constants import GAMMA_BAR
from mritwin.twin import FREESURFER_LABELS, with_isochromats
from mritwin.twin.labels import isochromat_pattern


def oblique_affine():
    """Anisotropic voxels (1.2 x 0.9 x 3 mm), rotated about two axes, shifted origin [mm]."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([1.2, 0.9, 3.0])
    aff[:3, 3] = [-14.5, 7.25, 30.0]
    return aff


def label_map(shape=(9, 8, 5), seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.choice([0, 1, 2, 3, 4], size=shape, p=[0.3, 0.2, 0.2, 0.2, 0.1]).astype(np.int16)
    return lab


MAP = {1: "csf", 2: "gray_matter", 3: "white_matter", 4: "fat"}


@pytest.fixture
def nifti_labels(tmp_path):
    lab, aff = label_map(), oblique_affine()
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(lab, aff), path)
    return path, lab, nib.load(path).affine  # the affine as stored (float32 in the header)


def voxel_index(twin, aff_mm):
    a = aff_mm.copy()
    a[:3] /= 1000.0
    pos = np.asarray(twin.position, np.float64)
    return (pos - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T


def test_positions_are_affine_mapped_voxel_centres(nifti_labels):
    path, lab, aff = nifti_labels
    twin = mt.twin_from_labels(path, MAP, b0=3.0)
    ijk = voxel_index(twin, aff)
    ijk_r = np.round(ijk).astype(int)
    # each spin sits on a voxel centre (float32 positions: ~1e-7 m, i.e. < 1e-3 voxel)
    assert np.abs(ijk - ijk_r).max() < 1e-3
    expected = (aff @ np.c_[ijk_r, np.ones(len(ijk_r))].T).T[:, :3] / 1000.0
    np.testing.assert_allclose(np.asarray(twin.position), expected, atol=1e-7)
    # ... of a voxel with that spin's tissue, and every labelled voxel has its spins
    names = np.array(twin.label_names)[np.asarray(twin.label)]
    assert all(MAP[lab[tuple(v)]] == n for v, n in zip(ijk_r, names, strict=True))
    n_peaks = {"csf": 1, "gray_matter": 1, "white_matter": 1, "fat": 6}
    for v, t in MAP.items():
        assert (names == t).sum() == (lab == v).sum() * n_peaks[t]
    assert twin.n_spins == sum((lab == v).sum() * n_peaks[t] for v, t in MAP.items())


def test_tissue_values_equal_the_library(nifti_labels):
    path, lab, _ = nifti_labels
    for b0 in (1.5, 3.0, 7.0):
        twin = mt.twin_from_labels(path, MAP, b0=b0)
        names = np.array(twin.label_names)[np.asarray(twin.label)]
        for t in MAP.values():
            p = mt.tissue_parameters(t, b0)
            m = names == t
            for field, key in (("t1", "t1"), ("t2", "t2"), ("t2_prime", "t2_prime"), ("diffusion", "adc")):
                np.testing.assert_allclose(np.asarray(getattr(twin, field))[m], p[key], rtol=1e-6)
            pd = np.sort(np.unique(np.asarray(twin.pd)[m]))
            np.testing.assert_allclose(pd, np.sort(np.unique(np.float32(np.multiply(p["pd"], p["spectrum_amplitude"])))), rtol=1e-6)
            df = np.sort(np.unique(np.asarray(twin.delta_f)[m]))
            np.testing.assert_allclose(df, np.sort(np.array(p["spectrum_ppm"]) * 1e-6 * GAMMA_BAR * b0),
                                       rtol=1e-6, atol=1e-3)
    # fat at 3 T: the main peak at -3.4 ppm is about -434 Hz
    twin = mt.twin_from_labels(path, MAP, b0=3.0)
    fat = np.asarray(twin.label) == twin.label_names.index("fat")
    assert np.any(np.isclose(np.asarray(twin.delta_f)[fat], -434.3, atol=0.5))


def test_isochromats_spread_inside_the_oblique_voxel(nifti_labels):
    path, lab, aff = nifti_labels
    n = 5
    twin = mt.twin_from_labels(path, {1: "csf", 2: "gray_matter", 3: None, 4: None}, spins_per_voxel=n)
    ijk = voxel_index(twin, aff).reshape(-1, n, 3)
    pattern, q = isochromat_pattern(n)
    centre = np.round(ijk.mean(axis=1) - pattern.mean(0))
    off = ijk - centre[:, None, :]
    np.testing.assert_allclose(off, np.broadcast_to(pattern, off.shape), atol=2e-3)
    assert np.abs(off).max() <= 0.5 + 2e-3
    # pd is split between the isochromats; T2' spread into the off-resonance
    assert twin.t2_prime is None
    p = mt.tissue_parameters("csf", 3.0)
    csf = np.asarray(twin.label) == twin.label_names.index("csf")
    np.testing.assert_allclose(np.asarray(twin.pd)[csf], p["pd"] / n, rtol=1e-6)
    df = np.asarray(twin.delta_f)[csf].reshape(-1, n)
    np.testing.assert_allclose(df, np.broadcast_to(q / (2 * np.pi * p["t2_prime"]), df.shape),
                               rtol=1e-5)


def test_matches_with_isochromats_for_axis_aligned_voxels():
    lab = label_map((6, 5, 3), seed=3)
    aff = np.diag([2.0, 1.5, 4.0, 1.0])
    aff[:3, 3] = [-5.0, 3.0, 1.0]
    one = mt.twin_from_labels(lab, {1: "csf", 2: "white_matter", 3: "gray_matter", 4: "fat"}, affine=aff)
    many = mt.twin_from_labels(lab, {1: "csf", 2: "white_matter", 3: "gray_matter", 4: "fat"}, affine=aff,
                               spins_per_voxel=4)
    ref = with_isochromats(one, 4, np.array([2.0, 1.5, 4.0]) * 1e-3)
    for f in ("position", "pd", "t1", "t2", "delta_f", "diffusion", "label"):
        np.testing.assert_allclose(np.asarray(getattr(many, f)), np.asarray(getattr(ref, f)), rtol=1e-5, atol=1e-7)


def test_partial_volume_fractions_sum_to_voxel_pd(tmp_path):
    rng = np.random.default_rng(1)
    fr = rng.dirichlet([1, 1, 1, 1], size=(7, 6, 4))[..., :3]  # 4th class = empty space
    fr[0, 0, 0] = [0.0, 0.0, 0.0]
    aff = oblique_affine()
    nib.save(nib.Nifti1Image(fr.astype(np.float32), aff), tmp_path / "pve.nii.gz")
    twin = mt.twin_from_labels(tmp_path / "pve.nii.gz", "fast", b0=3.0)  # pve_0/1/2 = CSF/GM/WM
    stored = nib.load(tmp_path / "pve.nii.gz")
    frs = np.asarray(stored.dataobj, np.float64)
    pds = np.array([mt.tissue_parameters(t, 3.0)["pd"] for t in ("csf", "gray_matter", "white_matter")])
    ijk = np.round(voxel_index(twin, stored.affine)).astype(int)
    flat = np.ravel_multi_index(ijk.T, fr.shape[:3])
    got = np.bincount(flat, weights=np.asarray(twin.pd, np.float64), minlength=flat.max() + 1)
    want = (frs * pds).sum(-1).reshape(-1)
    np.testing.assert_allclose(got[: want.size], want, rtol=1e-6, atol=1e-7)
    # several compartments per voxel, each with its tissue's values
    assert np.bincount(flat).max() == 3
    # the same maps given as a list of 3D files (FAST pve_0, pve_1, pve_2)
    paths = []
    for c in range(3):
        paths.append(tmp_path / f"pve_{c}.nii.gz")
        nib.save(nib.Nifti1Image(fr[..., c].astype(np.float32), aff), paths[-1])
    twin2 = mt.twin_from_labels(paths, "fast")
    np.testing.assert_array_equal(np.asarray(twin2.pd), np.asarray(twin.pd))


def test_resampling_preserves_total_pd():
    lab = np.zeros((40, 36, 10), np.int32)
    lab[5:30, 4:31, 2:9] = 3
    lab[12:20, 10:25, 3:8] = 2
    lab[15:17, 15:18, 4:6] = 1
    lab[3:6, 3:34, 1:9] = 4
    aff = oblique_affine()
    vs_in = np.linalg.norm(aff[:3, :3], axis=0)
    fine = mt.twin_from_labels(lab, MAP, affine=aff, dtype=np.float64)
    total = np.asarray(fine.pd, np.float64).sum() * np.prod(vs_in) * 1e-9
    for res in (2.5e-3, (3.0e-3, 2.0e-3, None), (1.0e-3, 0.5e-3, 3e-3)):
        coarse = mt.twin_from_labels(lab, MAP, affine=aff, resolution=res, dtype=np.float64)
        r = [vs_in[a] if (np.ndim(res) and res[a] is None) else (res if np.isscalar(res) else res[a]) * 1e3
             for a in range(3)]
        tot = np.asarray(coarse.pd, np.float64).sum() * np.prod(r) * 1e-9
        assert tot == pytest.approx(total, rel=1e-6)
    # a thick 2D slice: a 3-slice slab (3 mm voxels) averaged into one 9 mm slice
    thick = mt.twin_from_labels(lab, MAP, affine=aff, slices=(3, 6), resolution=(None, None, 9e-3),
                                dtype=np.float64)
    k = voxel_index(thick, aff)[:, 2]
    np.testing.assert_allclose(k, 4.0, atol=1e-6)  # the slab's middle slice
    slab = mt.twin_from_labels(lab, MAP, affine=aff, slices=(3, 6), dtype=np.float64)
    assert np.asarray(thick.pd).sum() * 3 == pytest.approx(np.asarray(slab.pd).sum(), rel=1e-9)
    # a 2D slice twin from the 3D map, coarser in plane
    sl = mt.twin_from_labels(lab, MAP, affine=aff, slices=5, resolution=(2e-3, 2e-3, None))
    ijk = voxel_index(sl, aff)
    np.testing.assert_allclose(ijk[:, 2], 5.0, atol=1e-3)  # all spins in slice k = 5


def test_slab_selection_and_centering():
    lab = label_map((6, 6, 8), seed=5)
    aff = oblique_affine()
    slab = mt.twin_from_labels(lab, MAP, affine=aff, slices=(2, 5))
    k = np.round(voxel_index(slab, aff)[:, 2])
    assert set(np.unique(k)) <= {2.0, 3.0, 4.0}
    c = mt.twin_from_labels(np.ones((3, 3, 3), int), {1: "csf"}, affine=aff, center=True)
    np.testing.assert_allclose(np.asarray(c.position).mean(0), 0.0, atol=1e-7)


def test_conventions():
    lab = np.array([[[0, 2, 3, 4, 41, 42, 43, 24, 77, 30]]]).reshape(10, 1, 1)
    twin = mt.twin_from_labels(lab, "freesurfer", affine=np.eye(4))
    order = np.argsort(np.asarray(twin.position)[:, 0])  # voxel i sits at x = i mm
    names = [twin.label_names[i] for i in np.asarray(twin.label)[order]]
    assert names == [FREESURFER_LABELS[v] for v in lab.ravel()[1:]]
    bw = mt.twin_from_labels(np.arange(12).reshape(12, 1, 1), "brainweb", affine=np.eye(4))
    assert set(bw.label_names) == {"csf", "gray_matter", "white_matter", "fat", "muscle", "skin",
                                   "skull", "vessels", "marrow"}
    fast = mt.twin_from_labels(np.arange(4).reshape(4, 1, 1), "fast", affine=np.eye(4))
    assert fast.label_names == ("csf", "gray_matter", "white_matter")
    skip = mt.twin_from_labels(np.array([1, 2]).reshape(2, 1, 1), {1: "csf", 2: None}, affine=np.eye(4))
    assert skip.n_spins == 1


# ---------------------------------------------------------------------------- bad input
def test_missing_labels_are_listed_with_voxel_counts():
    lab = np.zeros((4, 4, 2), int)
    lab[0, :, 0] = 7
    lab[1, :2, 0] = 9
    lab[2, 0, 0] = 1
    with pytest.raises(ValueError, match=r"labels not in the mapping: 7 \(4 voxels\), 9 \(2 voxels\)"):
        mt.twin_from_labels(lab, {1: "csf"}, affine=np.eye(4))


@pytest.mark.parametrize("aff", [np.diag([1.0, 0.0, 1.0, 1.0]),
                                 np.array([[1, 2, 0, 0], [2, 4, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])])
def test_singular_affine(aff):
    with pytest.raises(ValueError, match="affine is singular"):
        mt.twin_from_labels(np.ones((2, 2, 2), int), {1: "csf"}, affine=aff)


def test_bad_maps():
    lab = np.ones((3, 3, 3))
    with pytest.raises(ValueError, match="label map contains NaN at 1 voxel"):
        mt.twin_from_labels(np.where(np.arange(27).reshape(3, 3, 3) == 4, np.nan, lab), {1: "csf"},
                            affine=np.eye(4))
    with pytest.raises(ValueError, match="negative labels"):
        mt.twin_from_labels(-lab.astype(int), {1: "csf"}, affine=np.eye(4))
    with pytest.raises(ValueError, match="non-integer values"):
        mt.twin_from_labels(lab * 0.5, {1: "csf"}, affine=np.eye(4))
    fr = np.full((3, 3, 3, 2), 0.4)
    with pytest.raises(ValueError, match="fraction map contains NaN"):
        mt.twin_from_labels(np.where(fr > 0.3, np.nan, fr), "fast", affine=np.eye(4))
    with pytest.raises(ValueError, match="fraction map contains negative values"):
        mt.twin_from_labels(-fr, "fast", affine=np.eye(4))
    with pytest.raises(ValueError, match="fractions sum to more than 1 in 27 voxel"):
        mt.twin_from_labels(fr * 2, "fast", affine=np.eye(4))
    with pytest.raises(ValueError, match=r"shape mismatch between maps: fraction map 1 has shape \(3, 3, 2\)"):
        mt.twin_from_labels([np.zeros((3, 3, 3)), np.zeros((3, 3, 2))], "fast", affine=np.eye(4))
    with pytest.raises(ValueError, match="pass affine"):
        mt.twin_from_labels(lab.astype(int), {1: "csf"})
    with pytest.raises(ValueError, match="unknown label convention 'mni'"):
        mt.twin_from_labels(lab.astype(int), "mni", affine=np.eye(4))
    with pytest.raises(ValueError, match="out of range for axis 2"):
        mt.twin_from_labels(lab.astype(int), {1: "csf"}, affine=np.eye(4), slices=3)
    with pytest.raises(ValueError, match="NIfTI file not found"):
        mt.twin_from_labels("/nonexistent/seg.nii.gz", "brainweb")


def test_unknown_field_strength():
    with pytest.raises(ValueError, match=r"no T1/T2/T2\* values at b0 = 0.55 T"):
        mt.twin_from_labels(np.ones((2, 2, 1), int), {1: "csf"}, affine=np.eye(4), b0=0.55)
    assert math.isfinite(float(mt.twin_from_labels(np.ones((1, 1, 1), int), {1: "csf"},
                                                    affine=np.eye(4), b0=1.5).t1[0]))
