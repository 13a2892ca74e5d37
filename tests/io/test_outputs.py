"""Output files read back by real clients: ISMRMRD (ismrmrd), NIfTI (nibabel), DICOM (pydicom), PNG."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mritwin as mt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "recon"))
from recon_helpers import epi, gre  # noqa: E402

from mritwin.io.images import write_dicom, write_nifti, write_png  # noqa: E402
from mritwin.io.mrd import read_mrd_header, write_mrd  # noqa: E402
from mritwin.recon import reconstruct  # noqa: E402

ismrmrd = pytest.importorskip("ismrmrd")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

POINTS = np.array([[0.025, 0.05, -0.01], [-0.05, -0.025, 0.01]])  # [m], scanner frame


def _twin(pos):
    n = len(pos)
    return mt.Twin(position=pos, pd=np.ones(n), t1=np.full(n, 0.5), t2=np.full(n, 0.5))


@pytest.fixture(scope="module")
def multislice():
    seq = gre(16, 0.2, slices=[0.01, -0.01])
    sig = mt.simulate(_twin(POINTS), seq)
    return seq, sig, reconstruct(sig, seq, b0=1.5)


@pytest.fixture(scope="module")
def volume():
    r = np.array([[0.025, -0.0375, 0.025]])
    seq = gre(16, 0.2, n_z=8, fov_z=0.1)
    sig = mt.simulate(_twin(r), seq)
    return r[0], reconstruct(sig, seq)


def test_mrd_is_read_by_ismrmrd_and_the_header_validates(tmp_path, multislice):
    seq, sig, img = multislice
    path = write_mrd(tmp_path / "raw.mrd", sig, seq, image=img, b0=1.5)
    hdr = read_mrd_header(path)  # parses against the ISMRMRD schema classes
    enc = hdr.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (16, 16)
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(200.0)
    assert enc.trajectory.value == "cartesian"
    assert (enc.encodingLimits.kspace_encoding_step_1.minimum, enc.encodingLimits.kspace_encoding_step_1.maximum) == (0, 15)
    assert enc.encodingLimits.slice.maximum == 1
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == pytest.approx(1.5)
    assert hdr.experimentalConditions.H1resonanceFrequency_Hz == round(mt.GAMMA_BAR * 1.5)
    assert hdr.sequenceParameters.TE[0] == pytest.approx(img.te * 1e3)
    assert hdr.sequenceParameters.TR[0] == pytest.approx(img.tr * 1e3)
    assert hdr.sequenceParameters.flipAngle_deg[0] == pytest.approx(90.0, rel=1e-6)
    # the XML round-trips through the ismrmrd schema classes unchanged
    from ismrmrd import xsd

    assert xsd.ToXML(xsd.CreateFromDocument(xsd.ToXML(hdr))) == xsd.ToXML(hdr)
    samples = np.asarray(sig.samples)
    with ismrmrd.Dataset(path, "dataset", create_if_needed=False) as d:
        assert d.number_of_acquisitions() == seq.n_adc_events
        for i in (0, 5, 20):
            acq = d.read_acquisition(i)
            np.testing.assert_allclose(acq.data[0], samples[0, i * 16:(i + 1) * 16], rtol=1e-6)
            assert acq.idx.kspace_encode_step_1 == i % 16
            assert acq.idx.slice == i // 16
            assert acq.sample_time_us == pytest.approx(20.0)
            np.testing.assert_allclose(acq.traj[:, 1], (i % 16 - 8) / 16, atol=1e-6)
        assert d.read_acquisition(31).is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)


def test_mrd_flags_for_epi(tmp_path):
    seq = epi(16, 0.2)
    sig = mt.simulate(_twin(POINTS[:1] * [1, 1, 0]), seq)
    path = write_mrd(tmp_path / "epi.mrd", sig, seq)
    with ismrmrd.Dataset(path, "dataset", create_if_needed=False) as d:
        flags = [(d.read_acquisition(i).is_flag_set(ismrmrd.ACQ_IS_NAVIGATION_DATA),
                  d.read_acquisition(i).is_flag_set(ismrmrd.ACQ_IS_REVERSE)) for i in range(5)]
    assert flags == [(True, False), (True, True), (True, False), (False, True), (False, False)]


def test_nifti_puts_objects_at_their_scanner_position(tmp_path, multislice, volume):
    _, _, img = multislice
    path = write_nifti(img, tmp_path / "image.nii.gz")
    nii = nib.load(path)
    assert nii.shape == (16, 16, 2)
    np.testing.assert_allclose(nii.affine, img.affine)
    assert int(nii.header["sform_code"]) == 1 and int(nii.header["qform_code"]) == 1
    np.testing.assert_allclose(nii.header.get_qform(), img.affine, atol=1e-4)
    data = np.asarray(nii.dataobj)
    for z in range(2):
        i, j = np.unravel_index(np.argmax(data[:, :, z]), (16, 16))
        world = nii.affine @ [i, j, z, 1]
        # the brightest voxel of each slice is one of the points, at its position [mm]
        assert np.min(np.linalg.norm(POINTS * 1e3 - world[:3], axis=1)) < 1e-6
    r, vol = volume
    nii = nib.load(write_nifti(vol, tmp_path / "vol.nii.gz"))
    data = np.asarray(nii.dataobj)
    idx = np.unravel_index(np.argmax(data), data.shape)
    np.testing.assert_allclose((nii.affine @ [*idx, 1])[:3], r * 1e3, atol=1e-6)
    # world -> voxel with the inverse affine lands on the peak
    np.testing.assert_allclose(np.linalg.inv(nii.affine) @ [*(r * 1e3), 1], [*idx, 1], atol=1e-6)


def _dicom_series(folder):
    files = sorted(pathlib.Path(folder).glob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_dicom_series_geometry_matches_the_nifti(tmp_path, multislice):
    _, _, img = multislice
    paths = write_dicom(img, tmp_path / "dicom")
    assert len(paths) == 2
    ds_list = _dicom_series(tmp_path / "dicom")
    nii = nib.load(write_nifti(img, tmp_path / "image.nii.gz"))
    vol = np.asarray(nii.dataobj)
    lps = np.diag([-1, -1, 1, 1]) @ nii.affine
    series = {d.SeriesInstanceUID for d in ds_list}
    assert len(series) == 1 and len({d.StudyInstanceUID for d in ds_list}) == 1
    assert len({d.SOPInstanceUID for d in ds_list}) == 2
    for d in ds_list:
        assert d.SOPClassUID == pydicom.uid.MRImageStorage
        assert d.Modality == "MR" and str(d.PatientName) == "" and d.PatientID == ""
        assert float(d.EchoTime) == pytest.approx(img.te * 1e3, rel=1e-5)
        assert float(d.RepetitionTime) == pytest.approx(img.tr * 1e3, rel=1e-5)
        assert float(d.FlipAngle) == pytest.approx(90.0, rel=1e-5)
        assert float(d.MagneticFieldStrength) == 1.5
        assert float(d.SliceThickness) == pytest.approx(img.slice_thickness * 1e3, rel=1e-5)
        z = d.InstanceNumber - 1
        # DICOM pixel (row r, column c) is voxel (i = c, j = r, z)
        row_dir = np.array(d.ImageOrientationPatient[:3], float)
        col_dir = np.array(d.ImageOrientationPatient[3:], float)
        ps_row, ps_col = (float(v) for v in d.PixelSpacing)
        np.testing.assert_allclose(row_dir * ps_col, lps[:3, 0], atol=1e-6)
        np.testing.assert_allclose(col_dir * ps_row, lps[:3, 1], atol=1e-6)
        np.testing.assert_allclose(np.array(d.ImagePositionPatient, float), (lps @ [0, 0, z, 1])[:3], atol=1e-5)
        pix = d.pixel_array.astype(float) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_allclose(pix.T, vol[:, :, z], atol=2 * float(d.RescaleSlope))
    # fresh UIDs each time
    again = write_dicom(img, tmp_path / "dicom2")
    assert pydicom.dcmread(again[0]).SeriesInstanceUID not in series
    assert pydicom.dcmread(again[0]).StudyInstanceUID != ds_list[0].StudyInstanceUID


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed (Debian: apt-get install dcm2niix)")
@pytest.mark.parametrize("which", ["multislice", "volume"])
def test_dcm2niix_converts_our_dicom_back_to_the_same_affine(tmp_path, which, multislice, volume):
    img = multislice[2] if which == "multislice" else volume[1]
    write_dicom(img, tmp_path / "dicom")
    out = tmp_path / "conv"
    out.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-f", "conv", "-o", str(out), str(tmp_path / "dicom")],
                   check=True, capture_output=True)
    theirs = nib.as_closest_canonical(nib.load(next(out.glob("*.nii.gz"))))
    ours = nib.as_closest_canonical(nib.load(write_nifti(img, tmp_path / "ours.nii.gz")))
    # dcm2niix may store the axes in another order: compare in the canonical (RAS) order
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-4)
    a, b = np.asarray(theirs.dataobj, float), np.asarray(ours.dataobj, float)
    np.testing.assert_allclose(a / a.max(), b / b.max(), atol=1e-4)


def test_png_preview(tmp_path, multislice, volume):
    import matplotlib.image as mpimg

    _, _, img = multislice
    for im, name in ((img, "ms.png"), (volume[1], "vol.png")):
        p = write_png(im, tmp_path / name)
        a = mpimg.imread(p)
        assert a.ndim == 3 and a.shape[0] >= 128 and a.shape[1] >= 128
        assert a[..., :3].max() > 0.9  # the objects are visible


def test_missing_optional_packages_give_a_clear_error(tmp_path, multislice, monkeypatch):
    seq, sig, img = multislice
    monkeypatch.setitem(sys.modules, "ismrmrd", None)
    with pytest.raises(ImportError, match=r"mritwin\[io\]"):
        write_mrd(tmp_path / "raw.mrd", sig, seq)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"mritwin\[io\]"):
        write_dicom(img, tmp_path / "d")
    assert not os.path.exists(tmp_path / "raw.mrd")


def test_mrd_rejects_a_mismatched_sequence(tmp_path, multislice):
    seq, sig, _ = multislice
    with pytest.raises(ValueError, match="ADC samples but the signal has"):
        write_mrd(tmp_path / "raw.mrd", sig, gre(8, 0.2))
