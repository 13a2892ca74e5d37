"""Twin files: mritwin HDF5 (exact round trip), MRzero NIfTI phantoms, KomaMRI .phantom."""

import json

import h5py
import nibabel as nib
import numpy as np
import pytest

import mritwin as mt
from mritwin.io.koma import read_koma, write_koma
from mritwin.io.mrzero import read_mrzero, write_mrzero
from mritwin.twin import fields, phantoms

FIELDS = ("position", "pd", "t1", "t2", "t2_prime", "delta_f", "diffusion", "b1", "coil_sensitivity", "label")


def full_twin():
    t = phantoms.brain(dims=2, matrix=24, fov=0.24)  # 10 mm voxels: exact in NIfTI's float32 affine
    n = t.n_spins
    rng = np.random.default_rng(0)
    t1 = np.asarray(t.t1).copy()
    t1[:5] = np.inf
    t = t.replace(t1=t1, b1=rng.uniform(0.8, 1.2, n))
    return fields.with_coil_sensitivities(t, fields.birdcage_sensitivities(t.position, 3, radius=0.1))


def assert_same(a, b, fields_=FIELDS, exact=True):
    assert a.n_spins == b.n_spins
    assert a.label_names == b.label_names
    for f in fields_:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is None:
            continue
        x, y = np.asarray(x), np.asarray(y)
        if exact:
            assert x.dtype == y.dtype, f
            np.testing.assert_array_equal(x, y, err_msg=f)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=f)


def test_hdf5_round_trip_is_exact(tmp_path):
    t = full_twin()
    mt.save_twin(t, tmp_path / "t.h5")
    assert_same(t, mt.load_twin(tmp_path / "t.h5"))
    # optional fields absent stay absent; compression is lossless
    minimal = mt.Twin(position=np.zeros((2, 3)), pd=[1.0, 0.5], t1=[np.inf, 1.0], t2=[0.1, np.inf])
    mt.save_twin(minimal, tmp_path / "m.h5", compression="gzip")
    assert_same(minimal, mt.load_twin(tmp_path / "m.h5"))
    with h5py.File(tmp_path / "t.h5") as f:
        assert f.attrs["format"] == "mritwin.twin" and f.attrs["version"] == 1
        assert f["t1"].attrs["unit"] == "s" and f["position"].shape == (t.n_spins, 3)
        assert json.loads(f.attrs["label_names"]) == list(t.label_names)


def test_hdf5_bad_files(tmp_path):
    with pytest.raises(ValueError, match="twin file not found"):
        mt.load_twin(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="is not an mritwin twin file"):
        mt.load_twin(tmp_path / "other.h5")
    mt.save_twin(phantoms.brain(matrix=8), tmp_path / "v.h5")
    with h5py.File(tmp_path / "v.h5", "a") as f:
        f.attrs["version"] = 99
    with pytest.raises(ValueError, match="version 99 is not supported"):
        mt.load_twin(tmp_path / "v.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="cannot open"):
        mt.load_twin(tmp_path / "text.h5")


def _sorted(t):
    p = np.asarray(t.position)
    order = np.lexsort((np.asarray(t.delta_f), p[:, 2], p[:, 1], p[:, 0], np.asarray(t.label)))
    return t[order]


def test_mrzero_round_trip(tmp_path):
    # a grid twin with multi-peak fat (several compartments per voxel), coils and B1
    t = full_twin()
    write_mrzero(t, tmp_path / "ph" / "ph.json", b0=3.0)
    cfg = json.loads((tmp_path / "ph" / "ph.json").read_text())
    assert cfg["file_type"] == "nifti_phantom_v1" and "fat_5" in cfg["tissues"]
    assert cfg["tissues"]["gray_matter"]["T1"] == pytest.approx(mt.tissue_parameters("gm", 3.0)["t1"])
    assert cfg["tissues"]["csf"]["T1"] == "ph_T1.nii.gz[0]"  # not uniform: stored as a map
    back = read_mrzero(tmp_path / "ph" / "ph.json")
    a, b = _sorted(t), _sorted(back)
    assert_same(a, b, ("pd", "t1", "t2", "t2_prime", "delta_f", "b1", "coil_sensitivity", "label"), exact=False)
    np.testing.assert_allclose(np.asarray(a.position), np.asarray(b.position), atol=1e-15)
    np.testing.assert_allclose(np.asarray(a.diffusion), np.asarray(b.diffusion), rtol=1e-12)


def test_mrzero_reads_spec_example(tmp_path):
    """A phantom written the way the MRzero spec shows it (constants, refs, a mapping)."""
    aff = np.diag([2.0, 2.0, 5.0, 1.0])
    dens = np.zeros((4, 3, 1, 2))
    dens[1:3, :, 0, 0] = 0.8
    dens[0, :, 0, 1] = 1.0
    db0 = np.full((4, 3, 1, 1), 10.0)
    nib.save(nib.Nifti1Image(dens, aff), tmp_path / "s.nii.gz")
    nib.save(nib.Nifti1Image(db0, aff), tmp_path / "s_dB0.nii.gz")
    cfg = {"file_type": "nifti_phantom_v1",
           "tissues": {"gm": {"density": "s.nii.gz[0]", "T1": 1.56, "T2": 0.083, "T2'": 0.32, "ADC": 0.83,
                              "dB0": "s_dB0.nii.gz:0"},
                       "fat": {"density": "s.nii.gz[1]", "T1": 0.37, "dB0": {"file": "s_dB0.nii.gz[0]",
                                                                             "func": "x - 420"}}}}
    (tmp_path / "s.json").write_text(json.dumps(cfg))
    t = read_mrzero(tmp_path / "s.json")
    assert t.label_names == ("gm", "fat") and t.n_spins == 9
    gm = np.asarray(t.label) == 0
    np.testing.assert_allclose(np.asarray(t.diffusion)[gm], 0.83e-9)
    np.testing.assert_allclose(np.asarray(t.delta_f)[~gm], -410.0)
    assert np.all(np.isinf(np.asarray(t.t2)[~gm]))  # default T2 = inf
    np.testing.assert_allclose(np.asarray(t.position)[~gm][:, 0], 0.0)  # i = 0 -> x = 0 mm
    t_mr0 = read_mrzero(tmp_path / "s.json", positions="mrzero")
    assert np.asarray(t_mr0.position)[:, 0].min() == pytest.approx(-0.004)  # -n//2 voxels
    cfg["file_type"] = "other"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="file_type must be 'nifti_phantom_v1'"):
        read_mrzero(tmp_path / "bad.json")
    cfg["file_type"] = "nifti_phantom_v1"
    cfg["tissues"]["gm"]["density"] = "missing.nii.gz[0]"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing.nii.gz not found"):
        read_mrzero(tmp_path / "bad.json")
    cfg["tissues"]["gm"]["density"] = "s.nii.gz[0]"
    cfg["tissues"]["gm"]["T1"] = {"file": "s_dB0.nii.gz[0]", "func": "__import__('os')"}
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported element in mapping function"):
        read_mrzero(tmp_path / "bad.json")


def test_mrzero_not_expressible(tmp_path):
    t = mt.Twin(position=[[0, 0, 0], [0.001, 0, 0], [0.0025, 0, 0]], pd=[1, 1, 1], t1=[1, 1, 1], t2=[1, 1, 1])
    with pytest.raises(ValueError, match="not on a regular grid"):
        write_mrzero(t, tmp_path / "x.json")


def test_koma_round_trip(tmp_path):
    t = phantoms.brain(dims=2, matrix=16).replace(b1=None)
    write_koma(t, tmp_path / "b.phantom")
    with h5py.File(tmp_path / "b.phantom") as f:
        assert set(f["contrast"]) >= {"ρ", "T1", "T2", "T2s", "Δw"} and f.attrs["Ns"] == t.n_spins
        np.testing.assert_allclose(f["contrast"]["Δw"][()], 2 * np.pi * np.asarray(t.delta_f))
    k = read_koma(tmp_path / "b.phantom")
    for f in ("position", "pd", "t1", "t2", "t2_prime", "delta_f", "diffusion"):
        np.testing.assert_allclose(np.asarray(getattr(k, f)), np.asarray(getattr(t, f)), rtol=1e-9, err_msg=f)


def test_koma_reader_conventions(tmp_path):
    with h5py.File(tmp_path / "k.phantom", "w") as f:  # as KomaMRI writes it
        f.attrs["Version"] = "0.9.0"
        f.attrs["Name"] = "spins"
        f.attrs["Ns"] = 3
        f.attrs["Dims"] = 1
        f["position/x"] = [0.0, 0.01, 0.02]
        f["position/y"] = [0.0, 0.0, 0.0]
        f["position/z"] = [0.0, 0.0, 0.0]
        f["contrast/ρ"] = [1.0, 0.0, 0.5]
        f["contrast/T1"] = [1.0, 0.0, 1e6]
        f["contrast/T2"] = [0.1, 0.0, 1e6]
        f["contrast/T2s"] = [0.05, 0.0, 1e6]
        f["contrast/Δw"] = [2 * np.pi * 100, 0.0, 0.0]
    t = read_koma(tmp_path / "k.phantom", infinite_threshold=1e6)
    assert t.n_spins == 2  # the rho = 0 spin is dropped
    np.testing.assert_allclose(np.asarray(t.delta_f), [100.0, 0.0])
    np.testing.assert_allclose(np.asarray(t.t2_prime)[0], 0.1)  # 1/0.05 - 1/0.1 = 10 /s
    assert np.isinf(np.asarray(t.t1)[1]) and np.isinf(np.asarray(t.t2_prime)[1])
    with h5py.File(tmp_path / "k.phantom", "a") as f:
        f["motion/motion_1/action"] = [0.0]
    with pytest.raises(NotImplementedError, match="motion is not supported"):
        read_koma(tmp_path / "k.phantom")
    with pytest.raises(ValueError, match="not found"):
        read_koma(tmp_path / "none.phantom")
