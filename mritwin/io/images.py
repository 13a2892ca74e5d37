"""Image files: NIfTI (nibabel), DICOM MR Image Storage series (pydicom), PNG previews.

Geometry: an `Image` affine maps voxel indices to world millimetres in mritwin's world
frame, which is the scanner frame read as RAS+ (``x`` = right, ``y`` = anterior,
``z`` = superior). NIfTI stores that affine as is (sform and qform, code 1 "scanner").
DICOM uses LPS+, so ``(x, y, z)_LPS = (-x, -y, z)_RAS``. In each DICOM slice, columns run
along image axis 0 (``x``) and rows along image axis 1 (``y``); slices along axis 2.

DICOM output carries no identifiers unless they are passed in: patient name and ID are
empty, UIDs (study, series, frame of reference, instances) are generated fresh.
``pydicom`` is optional (``pip install mritwin[io]``).
"""

from __future__ import annotations

import datetime
import os

import numpy as np

__all__ = ["write_nifti", "write_dicom", "write_png", "image_volume"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def image_volume(image, *, magnitude: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(data with 3 spatial axes + extra axes, affine): 2D images get a z axis of size 1."""
    data = np.asarray(image.data)
    if image.n_spatial == 2:
        data = data[:, :, None]
    if magnitude:
        data = np.abs(data).astype(np.float32)
    return data, np.asarray(image.affine, dtype=np.float64)


def write_nifti(image, path, *, magnitude: bool = True) -> str:
    """Write an `Image` as NIfTI-1 (``.nii`` or ``.nii.gz``) with its affine.

    Args:
        image: the image; extra axes (echo, repetition, coil) become NIfTI dims 4-7.
        path: output path.
        magnitude: store ``|data|`` as float32 (default) or the complex64 data.

    Returns:
        The path written.
    """
    import nibabel as nib  # noqa: PLC0415

    data, affine = image_volume(image, magnitude=magnitude)
    if not magnitude:
        data = data.astype(np.complex64)
    if data.ndim > 7:
        raise ValueError(f"NIfTI holds at most 7 axes, the image has {data.ndim}")
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    tr = image.tr
    img.header.set_xyzt_units("mm", "sec")
    if tr:
        zooms = list(img.header.get_zooms())
        if len(zooms) > 3:
            zooms[3] = float(tr)
            img.header.set_zooms(zooms)
    desc = (image.description or "mritwin")[:79]
    img.header["descrip"] = desc.encode("ascii", "replace")
    path = os.fspath(path)
    nib.save(img, path)
    return path


def _require_pydicom():
    try:
        import pydicom  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "writing DICOM needs the optional 'pydicom' package: pip install 'mritwin[io]' "
            "(or pip install pydicom)"
        ) from e
    return pydicom


def write_dicom(image, folder, *, series_description: str = "mritwin simulation",
                patient_name: str = "", patient_id: str = "", study_uid: str | None = None,
                series_number: int = 1, prefix: str = "IM") -> list[str]:
    """Write an `Image` as a DICOM MR Image Storage series, one file per slice (and frame).

    Pixel data are the magnitude as unsigned 16-bit integers with ``RescaleSlope``
    restoring the float values. Extra axes (echoes, repetitions, ...) are written as
    further instances of the same series with their own ``InstanceNumber`` (and
    ``EchoTime`` / ``EchoNumbers`` per echo when the image has an ``echo`` axis).

    Args:
        image: the `Image`.
        folder: output folder (created if missing).
        series_description: ``SeriesDescription``.
        patient_name, patient_id: identifiers (empty by default: no identifiers).
        study_uid: reuse a study UID (default: a fresh one).
        series_number: ``SeriesNumber``.
        prefix: file name prefix (files are ``{prefix}{n:05d}.dcm``).

    Returns:
        The file paths written, in instance order.
    """
    pydicom = _require_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import (  # noqa: PLC0415
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        MRImageStorage,
        generate_uid,
    )

    del pydicom
    vol, affine = image_volume(image, magnitude=True)
    nx, ny, nz = vol.shape[:3]
    extra = vol.shape[3:]
    frames = vol.reshape(nx, ny, nz, -1)
    n_frames = frames.shape[-1]
    vmax = float(frames.max()) if frames.size else 0.0
    slope = vmax / 65535.0 if vmax > 0 else 1.0
    lps = _RAS_TO_LPS @ affine
    vx, vy, vz = (np.linalg.norm(affine[:3, i]) for i in range(3))
    row_dir = lps[:3, 0] / vx  # along a row = increasing column index = image axis 0
    col_dir = lps[:3, 1] / vy  # down a column = increasing row index = image axis 1
    normal = lps[:3, 2] / vz
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    echo_axis = image.dims.index("echo") - image.n_spatial if "echo" in image.dims else None
    te_list = list(np.atleast_1d(image.te)) if image.te is not None else []
    os.makedirs(folder, exist_ok=True)
    paths = []
    inst = 0
    thickness = image.slice_thickness if image.slice_thickness else vz / 1000.0
    for f in range(n_frames):
        extra_idx = np.unravel_index(f, extra) if extra else ()
        echo_i = int(extra_idx[echo_axis]) if echo_axis is not None else 0
        for z in range(nz):
            inst += 1
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality = "MR"
            ds.Manufacturer = "mritwin"
            ds.ManufacturerModelName = "mritwin simulator"
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
            ds.StudyID = ""
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.SeriesNumber = int(series_number)
            ds.InstanceNumber = inst
            ds.SeriesDescription = series_description[:64]
            ds.ImageType = ["DERIVED", "PRIMARY", "M"]
            ds.ScanningSequence = "RM"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D" if image.n_spatial == 3 and image.slice_thickness is None else "2D"
            ds.ImagedNucleus = "1H"
            ds.PositionReferenceIndicator = ""
            if image.tr is not None:
                ds.RepetitionTime = round(float(image.tr) * 1e3, 6)
            if te_list:
                ds.EchoTime = round(float(te_list[min(echo_i, len(te_list) - 1)]) * 1e3, 6)
                ds.EchoNumbers = echo_i + 1
            if image.flip_angle is not None:
                ds.FlipAngle = round(float(np.degrees(image.flip_angle)), 6)
            if image.b0:
                ds.MagneticFieldStrength = float(image.b0)
            ds.SliceThickness = round(float(thickness) * 1e3, 6)
            ds.SpacingBetweenSlices = round(float(vz), 6)
            ds.PixelSpacing = [round(float(vy), 6), round(float(vx), 6)]  # row spacing, column spacing
            ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_dir, *col_dir)]
            pos = lps[:3, :] @ np.array([0.0, 0.0, z, 1.0])
            ds.ImagePositionPatient = [round(float(v), 6) for v in pos]
            ds.SliceLocation = round(float(np.dot(pos, normal)), 6)
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ny
            ds.Columns = nx
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = 0
            ds.RescaleSlope = float(f"{slope:.10g}")
            ds.RescaleType = "US"
            pix = np.round(frames[:, :, z, f].T / slope).clip(0, 65535).astype(np.uint16)  # (rows=y, cols=x)
            ds.PixelData = pix.tobytes()
            p = os.path.join(folder, f"{prefix}{inst:05d}.dcm")
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
    return paths


def write_png(image, path, *, max_tiles: int = 16) -> str:
    """Write a grey-scale PNG preview of ``|image|``.

    2D images are shown as is; 3D or multi-slice images as a mosaic of up to
    ``max_tiles`` evenly spaced slices; extra axes show their first index. Display
    convention: ``x`` to the right, ``y`` up.

    Returns:
        The path written.
    """
    import matplotlib.image as mpimg  # noqa: PLC0415

    vol, _ = image_volume(image, magnitude=True)
    vol = vol.reshape(vol.shape[:3] + (-1,))[..., 0]
    nz = vol.shape[2]
    picks = np.unique(np.linspace(0, nz - 1, min(nz, max_tiles)).round().astype(int))
    tiles = [vol[:, :, z].T[::-1] for z in picks]  # rows = y (top = +y), cols = x
    n = len(tiles)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = tiles[0].shape
    mosaic = np.zeros((rows * h, cols * w), np.float32)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    vmax = float(mosaic.max()) if mosaic.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    # upsample small images so the preview is legible
    rep = max(1, 256 // max(mosaic.shape))
    mosaic = np.kron(mosaic, np.ones((rep, rep), np.float32))
    path = os.fspath(path)
    mpimg.imsave(path, np.clip(mosaic / vmax, 0, 1), cmap="gray", vmin=0.0, vmax=1.0)
    return path
