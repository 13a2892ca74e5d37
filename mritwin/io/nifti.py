"""NIfTI label, fraction and field maps (nibabel, imported lazily).

NIfTI stores an affine from voxel indices ``(i, j, k)`` to world coordinates in
millimetres, RAS+ (x towards the subject's right, y anterior, z superior). mritwin
works in metres: `affine_to_metres` is the one place where the factor 1e-3 is applied
to NIfTI geometry.

**World → scanner frame.** mritwin identifies the NIfTI RAS+ world axes with the
scanner (gradient) axes: scanner ``x`` = world ``x`` (R), ``y`` = ``y`` (A), ``z`` =
``z`` (S), origin unchanged, mm → m. A slice ``k = const`` of an axial acquisition
therefore lies in the scanner's xy-plane and ``gz`` selects along the head-foot axis
(head-first supine positioning with no table offset). Pass ``center=True`` to
`twin_from_labels` to move the centre of the field of view to the isocentre.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "MM_PER_M",
    "load_nifti",
    "save_nifti",
    "affine_to_metres",
    "check_affine",
    "voxel_sizes",
]

#: Millimetres per metre (NIfTI lengths are in mm).
MM_PER_M = 1000.0


def _is_image(x) -> bool:
    return hasattr(x, "dataobj") and hasattr(x, "affine")


def load_nifti(source, *, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file (or take a nibabel image) as ``(data, affine_mm)``.

    Args:
        source: path to a ``.nii`` / ``.nii.gz`` file, or a nibabel image.
        dtype: optional NumPy dtype for the data (default: the stored type after
            scaling, as ``np.asanyarray(img.dataobj)``).

    Returns:
        ``data`` (the voxel array, any number of dimensions) and ``affine_mm``
        (4, 4) voxel index → RAS+ world [mm] (the sform, else the qform, as nibabel
        chooses).

    Raises:
        ValueError: the file is missing or cannot be read as NIfTI (the message names it).
    """
    import nibabel as nib

    if _is_image(source):
        img = source
        name = getattr(source, "get_filename", lambda: None)() or "<nibabel image>"
    else:
        name = os.fspath(source)
        if not os.path.exists(name):
            raise ValueError(f"NIfTI file not found: {name}")
        try:
            img = nib.load(name)
        except Exception as e:  # nibabel raises several types for bad files
            raise ValueError(f"cannot read NIfTI file {name}: {e}") from None
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise ValueError(f"cannot read the voxel data of {name}: {e}") from None
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    affine = np.asarray(img.affine, dtype=np.float64)
    return data, affine


def save_nifti(data, affine_mm, path, *, dtype=None) -> None:
    """Write ``data`` with ``affine_mm`` (4, 4) [mm, RAS+] as a NIfTI-1 file (sform code 2)."""
    import nibabel as nib

    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(arr, check_affine(affine_mm))
    nib.save(img, os.fspath(path))


def check_affine(affine, name: str = "affine") -> np.ndarray:
    """Validate a (4, 4) or (3, 4) affine and return it as (4, 4) float64.

    Raises:
        ValueError: wrong shape, NaN/inf, a last row other than (0, 0, 0, 1), or a
            singular 3×3 part.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4):
        raise ValueError(f"{name} must have shape (4, 4) (voxel index -> world), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{name} last row must be (0, 0, 0, 1), got {a[3].tolist()}")
    m = a[:3, :3]
    scale = np.abs(m).max()
    if scale == 0 or abs(np.linalg.det(m)) <= 1e-12 * scale**3:
        raise ValueError(f"{name} is singular (its 3x3 part has determinant {np.linalg.det(m):.3g})")
    return a


def affine_to_metres(affine_mm) -> np.ndarray:
    """Convert a NIfTI affine (index → world [mm]) to index → scanner frame [m]."""
    a = check_affine(affine_mm).copy()
    a[:3, :] /= MM_PER_M
    return a


def voxel_sizes(affine) -> np.ndarray:
    """(3,) voxel edge lengths along the array axes, in the affine's length unit."""
    a = np.asarray(affine, dtype=np.float64)
    return np.linalg.norm(a[:3, :3], axis=0)
