"""Twins from label maps and partial-volume (fraction) maps.

A segmentation becomes spins: every labelled voxel becomes one compartment per spectral
peak of its tissue (water tissues have one peak; fat has six), each compartment
``spins_per_voxel`` isochromats. A 4D fraction map (last axis = class; FSL FAST
``pve_*``, BrainWeb fuzzy models) gives several compartments per voxel weighted by
fraction.

Conventions (see docs/twin.md):

- Geometry: spin positions are the affine-mapped voxel centres, NIfTI RAS+ world in mm
  identified with the scanner frame and converted to metres (`mritwin.io.nifti`),
  plus the isochromat offset inside the (possibly oblique) voxel.
- Proton density: a spin's ``pd`` is ``tissue PD × fraction × peak amplitude /
  spins_per_voxel``, a density (not scaled by voxel volume), so images keep the tissue
  PD scale at any resolution. The *total PD* ``Σ pd × voxel volume`` is what
  resampling preserves.
- Order: spins are grouped by compartment (mapping class, then spectral peak), then
  voxel in C order, then isochromat (the order of `with_isochromats`).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping

import jax
import numpy as np

from ..constants import GAMMA_BAR
from .isochromats import with_isochromats
from .tissues import DEFAULT_LIBRARY, Tissue, TissueLibrary
from .twin import Twin

__all__ = [
    "twin_from_labels",
    "BRAINWEB_LABELS",
    "FREESURFER_LABELS",
    "FAST_LABELS",
    "FAST_PVE_CLASSES",
    "MAPPINGS",
    "resample_fractions",
    "isochromat_pattern",
]

#: BrainWeb discrete anatomical models (and the class order of its fuzzy models):
#: 0 background, 1 CSF, 2 grey matter, 3 white matter, 4 fat, 5 muscle, 6 muscle/skin,
#: 7 skull, 8 vessels, 9 around fat (connective, mapped to fat), 10 dura mater
#: (mapped to skin: dense connective tissue), 11 bone marrow.
BRAINWEB_LABELS: Mapping[int, str | None] = {
    0: None, 1: "csf", 2: "gray_matter", 3: "white_matter", 4: "fat", 5: "muscle",
    6: "skin", 7: "skull", 8: "vessels", 9: "fat", 10: "skin", 11: "marrow",
}

#: FSL FAST hard segmentation (``*_seg``): 0 background, 1 CSF, 2 GM, 3 WM.
FAST_LABELS: Mapping[int, str | None] = {0: None, 1: "csf", 2: "gray_matter", 3: "white_matter"}
#: FSL FAST partial-volume maps (``*_pve_0/1/2`` stacked on the last axis): CSF, GM, WM.
FAST_PVE_CLASSES: Mapping[int, str | None] = {0: "csf", 1: "gray_matter", 2: "white_matter"}

_FS_WM = (2, 7, 16, 28, 41, 46, 60, 85, 192, 251, 252, 253, 254, 255)
_FS_GM = (3, 8, 10, 11, 12, 13, 17, 18, 26, 42, 47, 49, 50, 51, 52, 53, 54, 58, 80, 81, 82)
_FS_CSF = (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)
_FS_LESION = (77, 78, 79)
_FS_VESSEL = (30, 62)
#: FreeSurfer ``aseg`` (FreeSurferColorLUT): cerebral/cerebellar white matter, brain
#: stem, ventral DC, optic chiasm and corpus callosum → white matter; cortex and deep
#: grey nuclei (thalamus, caudate, putamen, pallidum, hippocampus, amygdala,
#: accumbens) → grey matter; ventricles, CSF and choroid plexus → CSF; WM
#: hypointensities (77-79) → ms_lesion; vessels (30, 62) → vessels.
FREESURFER_LABELS: Mapping[int, str | None] = {
    0: None,
    **{k: "white_matter" for k in _FS_WM},
    **{k: "gray_matter" for k in _FS_GM},
    **{k: "csf" for k in _FS_CSF},
    **{k: "ms_lesion" for k in _FS_LESION},
    **{k: "vessels" for k in _FS_VESSEL},
}

#: Named conventions: ``{name: (mapping for label maps, mapping for fraction maps)}``.
MAPPINGS: Mapping[str, tuple[Mapping, Mapping]] = {
    "brainweb": (BRAINWEB_LABELS, BRAINWEB_LABELS),
    "freesurfer": (FREESURFER_LABELS, FREESURFER_LABELS),
    "aseg": (FREESURFER_LABELS, FREESURFER_LABELS),
    "fast": (FAST_LABELS, FAST_PVE_CLASSES),
}


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------
def _is_pathlike(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _load_one(src, affine):
    from ..io.nifti import _is_image, load_nifti

    if _is_pathlike(src) or _is_image(src):
        data, aff = load_nifti(src)
        return np.asarray(data), (aff if affine is None else affine)
    if hasattr(src, "__array__") or isinstance(src, (list, tuple)):
        return np.asarray(src), affine
    raise TypeError(
        f"labels must be a NIfTI path, a nibabel image or an array, got {type(src).__name__}"
    )


def _load(labels, affine):
    """-> (data, affine_mm, kind) with kind "labels" (3D int) or "fractions" (4D float)."""
    if isinstance(labels, (list, tuple)) and labels and (
        _is_pathlike(labels[0]) or hasattr(labels[0], "dataobj") or isinstance(labels[0], np.ndarray)
        or hasattr(labels[0], "__array__")
    ):
        # several 3D fraction maps (one per class), e.g. FAST pve_0..2 or BrainWeb fuzzy
        maps, affs = [], []
        for i, src in enumerate(labels):
            d, a = _load_one(src, affine)
            d = np.asarray(d, dtype=np.float64)
            if d.ndim == 2:
                d = d[:, :, None]
            if d.ndim != 3:
                raise ValueError(f"fraction map {i} must be 2D or 3D, got shape {d.shape}")
            if maps and d.shape != maps[0].shape:
                raise ValueError(
                    f"shape mismatch between maps: fraction map {i} has shape {d.shape}, "
                    f"map 0 has {maps[0].shape}"
                )
            maps.append(d)
            affs.append(a)
        if affs[0] is None:
            raise ValueError("fraction maps given as arrays need an affine (4x4, mm, RAS)")
        for i, a in enumerate(affs[1:], 1):
            if a is not None and not np.allclose(a, affs[0], atol=1e-4):
                raise ValueError(f"fraction map {i} has a different affine from map 0")
        return np.stack(maps, axis=-1), affs[0], "fractions"
    data, aff = _load_one(labels, affine)
    if aff is None:
        raise ValueError(
            "labels is an array: pass affine= too (4x4 voxel index -> world [mm], RAS+)"
        )
    if data.dtype == bool:
        data = data.astype(np.int32)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"label map must hold integers or fractions, got dtype {data.dtype}")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[-1] == 1 and np.issubdtype(data.dtype, np.integer):
        data = data[..., 0]
    if data.ndim == 4:
        return data, aff, "fractions"
    if data.ndim != 3:
        raise ValueError(
            f"label map must be 2D or 3D (or 4D fractions, last axis = class), got shape {data.shape}"
        )
    return data, aff, "labels"


def _check_labels(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        if np.isnan(data).any():
            raise ValueError(f"label map contains NaN at {int(np.isnan(data).sum())} voxel(s)")
        if not np.isfinite(data).all():
            raise ValueError("label map contains inf")
        if (data != np.round(data)).any():
            raise ValueError(
                "label map holds non-integer values; pass partial-volume fractions as a 4D "
                "array (last axis = class) or a list of 3D maps"
            )
    if data.size and data.min() < 0:
        raise ValueError(
            f"label map contains negative labels ({int((data < 0).sum())} voxel(s), min {data.min()})"
        )
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise ValueError(f"label value {data.max()} is too large")
    return data.astype(np.int32, copy=False) if data.dtype != np.int32 else data


def _check_fractions(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if np.isnan(data).any():
        raise ValueError(f"fraction map contains NaN at {int(np.isnan(data).sum())} value(s)")
    if not np.isfinite(data).all():
        raise ValueError("fraction map contains inf")
    if (data < 0).any():
        raise ValueError(
            f"fraction map contains negative values ({int((data < 0).sum())}, min {data.min():.3g})"
        )
    total = data.sum(axis=-1)
    if (total > 1 + 1e-3).any():
        raise ValueError(
            f"fractions sum to more than 1 in {int((total > 1 + 1e-3).sum())} voxel(s) "
            f"(max {total.max():.4g}); the last axis must hold volume fractions"
        )
    return data


def _resolve_mapping(mapping, kind: str) -> dict:
    if isinstance(mapping, str):
        key = mapping.strip().lower()
        if key not in MAPPINGS:
            raise ValueError(f"unknown label convention {mapping!r}; known: {', '.join(MAPPINGS)}")
        return dict(MAPPINGS[key][0 if kind == "labels" else 1])
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"mapping must be a dict {{label: tissue name}} or a convention name, got {type(mapping).__name__}"
        )
    out = {}
    for k, v in mapping.items():
        try:
            ik = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"mapping keys must be integer labels, got {k!r}") from None
        if ik != k and not (isinstance(k, str) and k.strip().lstrip("-").isdigit()):
            raise ValueError(f"mapping keys must be integer labels, got {k!r}")
        if v is not None and not isinstance(v, (str, Tissue)):
            raise TypeError(f"mapping[{k!r}] must be a tissue name, a Tissue or None, got {type(v).__name__}")
        out[ik] = v
    return out


def _tissue_params(entry, b0, library: TissueLibrary) -> dict:
    if isinstance(entry, Tissue):
        return entry.parameters(b0)
    if isinstance(entry, str) and entry.strip().lower() == "background":
        return None
    return library.parameters(entry, b0)


# --------------------------------------------------------------------------------------
# resampling (area-weighted box filter: exact partial-volume fractions)
# --------------------------------------------------------------------------------------
def _box_resample_axis(f: np.ndarray, factor: float, axis: int) -> np.ndarray:
    """Average ``f`` over output cells ``factor`` input voxels wide along ``axis``.

    Output cell ``o`` covers input-index interval ``[o·factor - ½, (o+1)·factor - ½]``;
    the value is the mean of the piecewise-constant input over it (zero beyond the
    input). ``Σ_o out[o]·factor == Σ_i f[i]`` exactly (up to rounding).
    """
    n = f.shape[axis]
    n_out = max(1, math.ceil(n / factor - 1e-9))
    f = np.moveaxis(f, axis, 0)
    c = np.concatenate([np.zeros((1,) + f.shape[1:]), np.cumsum(f, axis=0, dtype=np.float64)])
    fpad = np.concatenate([f, np.zeros((1,) + f.shape[1:])])
    edges = np.arange(n_out + 1) * factor  # in units of "x + 1/2"
    m = np.minimum(np.floor(edges + 1e-12).astype(np.int64), n)
    frac = np.where(m < n, edges - m, 0.0)
    shape = (-1,) + (1,) * (f.ndim - 1)
    g = c[m] + frac.reshape(shape) * fpad[m]
    out = (g[1:] - g[:-1]) / factor
    return np.moveaxis(out, 0, axis)


def resample_fractions(fractions, affine, resolution):
    """Resample fraction maps to voxels of size ``resolution`` with an area-weighted filter.

    The box filter over each target voxel is the anti-aliasing filter: the result is the
    exact volume fraction of each class in the target voxel, so ``Σ fraction × voxel
    volume`` (and hence the total PD) is preserved when the target grid covers the
    source grid (it is extended by whole voxels as needed).

    Args:
        fractions: (nx, ny, nz, n_classes) volume fractions.
        affine: (4, 4) voxel index → world (any length unit, e.g. mm).
        resolution: (3,) target voxel edge along the array axes in the affine's unit;
            ``None`` entries keep the source spacing.

    Returns:
        ``(fractions_out, affine_out)``; the first target voxel starts at the corner of
        the first source voxel.
    """
    from ..io.nifti import voxel_sizes

    src = voxel_sizes(affine)
    out = np.asarray(fractions, dtype=np.float64)
    scale = np.eye(4)
    for ax in range(3):
        r = resolution[ax]
        if r is None:
            continue
        factor = float(r) / src[ax]
        if abs(factor - 1.0) < 1e-9:
            continue
        out = _box_resample_axis(out, factor, ax)
        scale[ax, ax] = factor
        scale[ax, 3] = (factor - 1.0) / 2.0
    return out, np.asarray(affine, dtype=np.float64) @ scale


@functools.lru_cache(maxsize=32)
def _pattern_cached(n: int):
    unit = Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[1.0],
                t2_prime=[1.0 / (2.0 * math.pi)])
    iso = with_isochromats(unit, n, (1.0, 1.0, 1.0))
    u, q = np.asarray(iso.position, np.float64), np.asarray(iso.delta_f, np.float64)
    u.flags.writeable = False
    q.flags.writeable = False
    return u, q


def isochromat_pattern(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic isochromat pattern of `with_isochromats`, for one voxel.

    Returns:
        ``(offsets, q)``: (n, 3) offsets in units of the voxel edges, in [-½, ½), and
        (n,) Lorentzian quantiles (multiply by ``1/(2π T2')`` for Hz). Taken from
        `with_isochromats` itself so that both always agree.
    """
    return _pattern_cached(int(n))


# --------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------
def _default_dtype():
    return np.float64 if jax.config.jax_enable_x64 else np.float32


def twin_from_labels(
    labels,
    mapping,
    *,
    b0: float = 3.0,
    affine=None,
    spins_per_voxel: int = 1,
    library: TissueLibrary | None = None,
    axis: int = 2,
    slices: int | tuple[int, int] | None = None,
    resolution=None,
    center: bool = False,
    t2_prime: bool = True,
    spread_t2_prime: bool = True,
    min_fraction: float = 1e-9,
    key: jax.Array | None = None,
    dtype=None,
) -> Twin:
    """Build a twin from a label map or partial-volume fraction maps.

    Args:
        labels: a NIfTI path, a nibabel image, or an integer array (2D or 3D) with
            ``affine``; or partial volumes: a 4D float array/NIfTI (last axis = class)
            or a list of 3D fraction maps (paths, images or arrays; a list is always
            read as several maps, so pass a single label array as a NumPy array).
        mapping: ``{label: tissue}`` (tissue = a name in ``library``, a `Tissue`, or
            ``None`` to skip the label), or a convention name: ``"brainweb"``,
            ``"freesurfer"`` (``"aseg"``), ``"fast"`` (``_seg`` labels, or the
            ``pve_0/1/2`` classes for fraction maps). For fraction maps the keys are
            class indices along the last axis.
        b0: main field [T]; selects the tissue values and the chemical shifts
            ``Δf = ppm·1e-6·GAMMA_BAR·b0`` [Hz].
        affine: (4, 4) voxel index → world [mm], RAS+ (NIfTI convention). Required
            for arrays; for NIfTI input it overrides the file's affine.
        spins_per_voxel: isochromats per compartment, spread uniformly over the voxel
            (deterministic R-sequence pattern, or random with ``key``) and, when
            ``spread_t2_prime``, over the Lorentzian T2' distribution (as
            `with_isochromats`).
        library: tissue library (default `DEFAULT_LIBRARY`).
        axis: array axis along which ``slices`` selects (default 2, ``k``).
        slices: ``int`` selects one slice (a 2D twin), ``(start, stop)`` a slab.
        resolution: target voxel size [m]: a float (isotropic) or 3 values along the
            array axes (``None`` keeps the source spacing). Resampling uses an
            area-weighted box filter (exact partial-volume fractions), which preserves
            the total PD ``Σ pd × voxel volume``. A float leaves axes of size 1 alone
            (a 2D map stays 2D).
        center: move the centre of the (selected/resampled) grid to the origin.
        t2_prime: keep the tissues' T2' in ``twin.t2_prime`` (when it is not spread
            over isochromats).
        spread_t2_prime: with ``spins_per_voxel > 1``, spread T2' over the
            isochromats' off-resonance and drop ``t2_prime`` (as `with_isochromats`).
        min_fraction: fractions at or below this are dropped.
        key: optional `jax.random` key for random isochromat positions/offsets.
        dtype: NumPy float dtype of the twin (default float64 with JAX x64, else float32).

    Returns:
        A `Twin` with ``position``, ``pd``, ``t1``, ``t2``, ``t2_prime`` (see above),
        ``delta_f`` (chemical shift [Hz]), ``diffusion`` (ADC [m²/s]), ``label`` and
        ``label_names`` (the tissue names).

    Raises:
        ValueError: labels missing from the mapping (the message lists them with their
            voxel counts), unknown tissue or convention, no tissue values at ``b0``,
            a singular affine, NaN/negative/non-integer labels, NaN/negative fractions
            or fractions summing to more than 1, shape mismatches, bad slices or
            resolution.
        TypeError: unsupported input types.

    Example:
        >>> import numpy as np, mritwin as mt
        >>> lab = np.zeros((4, 4, 1), int); lab[1:3, 1:3] = 2
        >>> twin = mt.twin_from_labels(lab, {2: "gray_matter"}, affine=np.diag([2., 2., 5., 1.]))
        >>> twin.n_spins, twin.label_names
        (4, ('gray_matter',))
    """
    from ..io.nifti import affine_to_metres, check_affine

    library = DEFAULT_LIBRARY if library is None else library
    if int(spins_per_voxel) != spins_per_voxel or spins_per_voxel < 1:
        raise ValueError(f"spins_per_voxel must be an integer >= 1, got {spins_per_voxel}")
    n_iso = int(spins_per_voxel)
    b0 = float(b0)
    if not (math.isfinite(b0) and b0 > 0):
        raise ValueError(f"b0 must be a positive field strength [T], got {b0}")
    dtype = _default_dtype() if dtype is None else np.dtype(dtype)

    data, aff_mm, kind = _load(labels, affine)
    aff_mm = check_affine(aff_mm)
    data = _check_labels(data) if kind == "labels" else _check_fractions(data)
    table = _resolve_mapping(mapping, kind)

    # slice / slab selection
    if slices is not None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        n_ax = data.shape[axis]
        start, stop = (slices, slices + 1) if np.isscalar(slices) else tuple(slices)
        start, stop = int(start), int(stop)
        if not (0 <= start < stop <= n_ax):
            raise ValueError(f"slices {slices!r} is out of range for axis {axis} of size {n_ax}")
        data = np.take(data, np.arange(start, stop), axis=axis)
        shift = np.eye(4)
        shift[axis, 3] = start
        aff_mm = aff_mm @ shift

    # which classes are present, and are they all mapped?
    if kind == "labels":
        if data.size and data.max() < (1 << 20):
            bc = np.bincount(data.ravel())
            counts = {int(v): int(bc[v]) for v in np.flatnonzero(bc)}
        else:  # sparse, large label values (e.g. 32-bit atlas ids)
            vals, cnt = np.unique(data, return_counts=True)
            counts = {int(v): int(c) for v, c in zip(vals, cnt, strict=True)}
        present = [v for v in counts if not (v == 0 and 0 not in table)]
        what = "labels"
    else:
        counts = (data > min_fraction).reshape(-1, data.shape[-1]).sum(axis=0)
        present = [int(c) for c in np.flatnonzero(counts)]
        what = "fraction classes (last-axis indices)"
    missing = [v for v in present if v not in table]
    if missing:
        listing = ", ".join(f"{v} ({int(counts[v])} voxels)" for v in missing)
        raise ValueError(
            f"{what} not in the mapping: {listing}; map each to a tissue name, or to None to skip it"
        )
    classes = []  # (class value, tissue parameters)
    for v in present:
        p = None if table[v] is None else _tissue_params(table[v], b0, library)
        if p is not None:
            classes.append((v, p))

    # resampling -> fractions of the mapped classes
    if resolution is not None:
        if np.isscalar(resolution):  # isotropic; a 2D map (one voxel thick) stays 2D
            res = [resolution if data.shape[a] > 1 else None for a in range(3)]
        else:
            res = list(resolution)
            if len(res) != 3:
                raise ValueError(f"resolution must be a float or 3 values [m], got {resolution!r}")
        res_mm = []
        for r in res:
            if r is None:
                res_mm.append(None)
                continue
            r = float(r)
            if not (math.isfinite(r) and r > 0):
                raise ValueError(f"resolution must be > 0 [m], got {resolution!r}")
            res_mm.append(r * 1000.0)  # the affine is in mm (NIfTI)
        cols = []
        for v, _ in classes or [(None, None)]:  # one class at a time: bounded memory
            if v is None:  # nothing mapped: resample an empty map for the grid
                f = np.zeros(data.shape[:3], bool)
            else:
                f = (data == v) if kind == "labels" else data[..., v]
            out, aff_out = resample_fractions(f[..., None].astype(np.float64), aff_mm, res_mm)
            cols.append(out[..., 0])
        data = np.stack(cols, axis=-1)[..., : len(classes)]
        aff_mm = aff_out
        del cols
        classes = [(i, p) for i, (_, p) in enumerate(classes)]
        kind = "fractions"

    aff_m = affine_to_metres(aff_mm)
    shape = data.shape[:3]
    if center:
        mid = aff_m @ np.array([(n - 1) / 2.0 for n in shape] + [1.0])
        aff_m = aff_m.copy()
        aff_m[:3, 3] -= mid[:3]

    # voxel selection per class
    groups = []  # (flat voxel indices, fractions or None, params)
    for v, p in classes:
        if kind == "labels":
            idx = np.flatnonzero(data.reshape(-1) == v)
            frac = None
        else:
            col = data[..., v].reshape(-1)
            idx = np.flatnonzero(col > min_fraction)
            frac = col[idx]
        if idx.size:
            groups.append((idx, frac, p))

    names = list(dict.fromkeys(p["name"] for _, _, p in groups))
    name_index = {n: i for i, n in enumerate(names)}
    n_total = sum(idx.size * len(p["spectrum_ppm"]) for idx, _, p in groups) * n_iso

    position = np.empty((n_total, 3), dtype)
    pd = np.empty(n_total, dtype)
    t1 = np.empty(n_total, dtype)
    t2 = np.empty(n_total, dtype)
    t2p = np.empty(n_total, dtype)
    df = np.empty(n_total, dtype)
    adc = np.empty(n_total, dtype)
    label = np.empty(n_total, np.int32)

    # isochromat pattern (index-space offsets in [-1/2, 1/2)^3 and Lorentzian quantiles)
    rand_keys = None
    if n_iso > 1:
        if key is None:
            u, q = isochromat_pattern(n_iso)
        else:
            rand_keys = iter(jax.random.split(key, 2 * max(1, len(groups) * 8)))
    a3 = aff_m[:3, :3]
    t3 = aff_m[:3, 3]
    spread = n_iso > 1 and spread_t2_prime

    start = 0
    for idx, frac, p in groups:
        nv = idx.size
        ii, jj, kk = np.unravel_index(idx, shape)
        centre = np.empty((nv, 3))  # (n_vox, 3) [m]: A · (i, j, k) + t
        for c in range(3):
            centre[:, c] = t3[c] + a3[c, 0] * ii + a3[c, 1] * jj + a3[c, 2] * kk
        del ii, jj, kk
        w = 1.0 if frac is None else frac[:, None]
        t2prime = p["t2_prime"]
        first = None  # slice of this group's first compartment (positions are shared)
        for ppm, amp in zip(p["spectrum_ppm"], p["spectrum_amplitude"], strict=True):
            stop = start + nv * n_iso
            sl = slice(start, stop)
            pos_v = position[sl].reshape(nv, n_iso, 3)
            df_v = df[sl].reshape(nv, n_iso)
            shift = ppm * 1e-6 * GAMMA_BAR * b0
            qq = None
            if n_iso > 1 and rand_keys is not None:
                uu = np.asarray(jax.random.uniform(next(rand_keys), (nv, n_iso, 3)), np.float64) - 0.5
                qq = np.asarray(jax.random.cauchy(next(rand_keys), (nv, n_iso)), np.float64)
                np.add(centre[:, None, :], uu @ a3.T, out=pos_v, casting="unsafe")
            elif first is not None:
                pos_v[...] = position[first].reshape(nv, n_iso, 3)
            elif n_iso == 1:
                pos_v[:, 0, :] = centre
            else:
                np.add(centre[:, None, :], (u @ a3.T)[None], out=pos_v, casting="unsafe")
                qq = q[None, :]
            if first is None:
                first = sl
            if spread and math.isfinite(t2prime):
                qq = q[None, :] if qq is None else qq
                df_v[...] = shift + qq / (2 * math.pi * t2prime)
            else:
                df_v[...] = shift
            pd[sl].reshape(nv, n_iso)[...] = p["pd"] * amp / n_iso * w
            t1[sl] = p["t1"]
            t2[sl] = p["t2"]
            t2p[sl] = t2prime
            adc[sl] = p["adc"]
            label[sl] = name_index[p["name"]]
            start = stop

    keep_t2p = t2_prime and not spread
    return Twin(
        position=position,
        pd=pd,
        t1=t1,
        t2=t2,
        t2_prime=t2p if keep_t2p else None,
        delta_f=df,
        diffusion=adc,
        label=label,
        label_names=tuple(names),
    )
