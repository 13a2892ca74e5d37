"""B0 off-resonance, B1+ scale and receive-coil sensitivities on a twin.

Every function returns a *new* twin (twins are immutable). Maps come as

- a NIfTI path or nibabel image (read by `mritwin.io.nifti`; affine in mm, RAS+),
- an array with its ``affine`` (4×4, voxel index → world [mm], NIfTI convention),
- a callable ``f(position) -> values`` with ``position`` (n_spins, 3) [m], or
- per-spin values, shape (n_spins,) (for coils (n_coils, n_spins)).

Gridded maps are sampled at the spin positions by trilinear interpolation in voxel
index space (spins outside the map: ``ValueError`` unless ``outside=`` gives a fill
value).

Analytic models:

- `sphere_field` / `cylinder_field`: closed-form field perturbation ΔBz of a sphere
  or infinite cylinder of susceptibility difference ``delta_chi`` (SI volume
  susceptibility) in B0 along z, Lorentz-corrected (e.g. Haacke et al., *Magnetic
  Resonance Imaging: Physical Principles and Sequence Design*, ch. 25):
  sphere, outside: ``Δχ B0/3 (a/r)³ (3cos²θ − 1)``, inside: 0;
  cylinder at angle α to B0, outside: ``Δχ B0/2 sin²α (a/ρ)² cos 2φ``, inside:
  ``Δχ B0/6 (3cos²α − 1)``.
  An air cavity in tissue has ``delta_chi = χ_air − χ_tissue ≈ 0.36 + 9.05 = 9.41 ppm``
  (`AIR_TISSUE_DELTA_CHI`; Schenck JF, Med Phys 1996;23:815-850).
- `loop_coil_sensitivities`: circular loop coils by Biot–Savart (numerical line
  integral); receive sensitivity ``Bx − i·By`` of each loop's unit-current field.
- `birdcage_sensitivities`: the simple ``exp(iφ)/r`` array model of the ISMRMRD
  tools (coils on a ring around z).
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import GAMMA_BAR
from .twin import Twin

__all__ = [
    "AIR_TISSUE_DELTA_CHI",
    "MU0",
    "sample_map",
    "with_off_resonance",
    "with_b0_map",
    "with_b1_map",
    "with_coil_sensitivities",
    "sphere_field",
    "cylinder_field",
    "loop_coil_sensitivities",
    "birdcage_sensitivities",
]

#: χ_air − χ_tissue (SI volume susceptibility): air +0.36 ppm, water/tissue −9.05 ppm (Schenck 1996).
AIR_TISSUE_DELTA_CHI: float = 9.41e-6
#: Vacuum permeability [T·m/A] (CODATA 2018, 1.25663706212e-6).
MU0: float = 1.25663706212e-6


def _positions(twin_or_pos) -> np.ndarray:
    if isinstance(twin_or_pos, Twin):
        return np.asarray(twin_or_pos.position, dtype=np.float64)
    p = np.asarray(twin_or_pos, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"position must have shape (n_spins, 3) [m], got {p.shape}")
    return p


def sample_map(field_map, position, *, affine=None, outside=None, name: str = "map") -> np.ndarray:
    """Sample a gridded map (3D, or 4D with a trailing channel axis) at ``position`` [m].

    Args:
        field_map: NIfTI path / nibabel image, or an array with ``affine``.
        position: (n_spins, 3) [m].
        affine: (4, 4) voxel index → world [mm] for array maps.
        outside: value for spins outside the map; ``None`` raises.
        name: used in error messages.

    Returns:
        (n_spins,) or (n_spins, n_channels) values (trilinear interpolation).

    Raises:
        ValueError: NaN in the map, singular affine, spins outside the map.
    """
    from ..io.nifti import _is_image, affine_to_metres, load_nifti

    if isinstance(field_map, (str, bytes)) or hasattr(field_map, "__fspath__") or _is_image(field_map):
        data, aff = load_nifti(field_map)
        if affine is not None:
            aff = affine
    else:
        data, aff = np.asarray(field_map), affine
        if aff is None:
            raise ValueError(f"{name} is an array: pass affine= (4x4, voxel index -> world [mm])")
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise ValueError(f"{name} must be 2D, 3D or 4D (channels last), got shape {data.shape}")
    if np.iscomplexobj(data):
        bad = ~np.isfinite(data.real) | ~np.isfinite(data.imag)
    else:
        data = data.astype(np.float64, copy=False)
        bad = ~np.isfinite(data)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf at {int(bad.sum())} value(s)")
    a_m = affine_to_metres(aff)
    pos = _positions(position)
    ijk = (pos - a_m[:3, 3]) @ np.linalg.inv(a_m[:3, :3]).T  # fractional voxel indices
    shape = np.array(data.shape[:3])
    tol = 1e-6
    inside = ((ijk >= -0.5 - tol) & (ijk <= shape - 0.5 + tol)).all(axis=1)
    if not inside.all() and outside is None:
        raise ValueError(
            f"{int((~inside).sum())} spin(s) lie outside the {name} grid "
            f"(shape {tuple(data.shape[:3])}); pass outside=<value> to fill them"
        )
    # trilinear interpolation with edge clamping (nearest outside the centre lattice)
    ijk_c = np.clip(ijk, 0, shape - 1)
    i0 = np.floor(ijk_c).astype(np.int64)
    i0 = np.minimum(i0, np.maximum(shape - 2, 0))
    t = ijk_c - i0
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                ii = np.minimum(i0 + np.array([dx, dy, dz]), shape - 1)
                w = (np.where(dx, t[:, 0], 1 - t[:, 0]) * np.where(dy, t[:, 1], 1 - t[:, 1])
                     * np.where(dz, t[:, 2], 1 - t[:, 2]))
                v = data[ii[:, 0], ii[:, 1], ii[:, 2]]
                out = out + (w[:, None] * v if v.ndim == 2 else w * v)
    if not inside.all():
        out = np.asarray(out).copy()
        out[~inside] = outside
    return np.asarray(out)


def _is_map_like(spec) -> bool:
    return isinstance(spec, (str, bytes)) or hasattr(spec, "__fspath__") or hasattr(spec, "dataobj")


def _values(spec, twin: Twin, *, affine, outside, name) -> np.ndarray:
    if callable(spec):
        return np.asarray(spec(np.asarray(twin.position)))
    if _is_map_like(spec) or affine is not None:
        return sample_map(spec, twin.position, affine=affine, outside=outside, name=name)
    return np.asarray(spec)


def with_off_resonance(twin: Twin, delta_f, *, add: bool = True) -> Twin:
    """Set (or, with ``add``, add to) ``twin.delta_f`` [Hz]; ``delta_f`` (n_spins,) or scalar."""
    df = np.broadcast_to(np.asarray(delta_f, dtype=np.float64), (twin.n_spins,))
    if not np.isfinite(df).all():
        raise ValueError("delta_f contains NaN or inf")
    if add and twin.delta_f is not None:
        df = np.asarray(twin.delta_f, dtype=np.float64) + df
    return twin.replace(delta_f=df.astype(np.asarray(twin.pd).dtype))


def with_b0_map(twin: Twin, field_map, *, affine=None, unit: str = "Hz", b0: float | None = None,
                add: bool = True, outside=None) -> Twin:
    """Add a B0 off-resonance map to the twin.

    Args:
        twin: the twin.
        field_map: NIfTI path/image, array (+ ``affine`` [mm]), callable of position [m],
            or per-spin values.
        affine: (4, 4) [mm] for array maps.
        unit: ``"Hz"`` (frequency offset), ``"ppm"`` (of ``b0``; needs ``b0``) or
            ``"T"`` (field offset ΔBz).
        b0: main field [T] for ``unit="ppm"``.
        add: add to the existing ``delta_f`` (chemical shift) instead of replacing it.
        outside: fill value for spins outside a gridded map (default: error).

    Raises:
        ValueError: unknown unit, ppm without b0, NaN in the map, shape mismatch.
    """
    v = _values(field_map, twin, affine=affine, outside=outside, name="B0 map").astype(np.float64)
    if v.shape != (twin.n_spins,):
        raise ValueError(f"B0 map gives shape {v.shape}, expected ({twin.n_spins},) (one value per spin)")
    if unit == "Hz":
        hz = v
    elif unit == "ppm":
        if b0 is None or not b0 > 0:
            raise ValueError("unit='ppm' needs b0 [T] > 0")
        hz = v * 1e-6 * GAMMA_BAR * b0
    elif unit == "T":
        hz = v * GAMMA_BAR
    else:
        raise ValueError(f"unit must be 'Hz', 'ppm' or 'T', got {unit!r}")
    return with_off_resonance(twin, hz, add=add)


def with_b1_map(twin: Twin, b1_map, *, affine=None, outside=None) -> Twin:
    """Set the relative B1+ scale per spin (1 = nominal flip angle) from a map or values.

    Raises:
        ValueError: NaN or negative values, shape mismatch.
    """
    v = _values(b1_map, twin, affine=affine, outside=outside, name="B1 map").astype(np.float64)
    v = np.broadcast_to(v, (twin.n_spins,)) if v.ndim == 0 else v
    if v.shape != (twin.n_spins,):
        raise ValueError(f"B1 map gives shape {v.shape}, expected ({twin.n_spins},)")
    if np.isnan(v).any():
        raise ValueError("B1 map contains NaN")
    if (v < 0).any():
        raise ValueError(f"B1 map must be >= 0 (relative scale), got {int((v < 0).sum())} negative value(s)")
    return twin.replace(b1=v.astype(np.asarray(twin.pd).dtype))


def with_coil_sensitivities(twin: Twin, sensitivities, *, affine=None, outside=None,
                            normalize: bool = False) -> Twin:
    """Set receive sensitivities: (n_coils, n_spins) values, a callable of position
    returning that, or gridded maps (4D, coil axis last) with ``affine`` [mm].

    Args:
        normalize: scale so that the largest magnitude over all coils and spins is 1.

    Raises:
        ValueError: NaN, or a shape that does not match the twin.
    """
    if callable(sensitivities) or (affine is None and not _is_map_like(sensitivities)):
        v = np.asarray(sensitivities(np.asarray(twin.position)) if callable(sensitivities) else sensitivities)
    else:  # gridded maps, coil axis last -> (n_spins, n_coils)
        v = sample_map(sensitivities, twin.position, affine=affine, outside=outside, name="coil maps")
        v = v.T
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != twin.n_spins:
        raise ValueError(f"coil sensitivities must have shape (n_coils, {twin.n_spins}), got {v.shape}")
    if not (np.isfinite(v.real).all() and np.isfinite(np.imag(v)).all()):
        raise ValueError("coil sensitivities contain NaN or inf")
    v = v.astype(np.complex128)
    if normalize:
        m = np.abs(v).max()
        if m > 0:
            v = v / m
    cdt = np.complex128 if np.asarray(twin.pd).dtype == np.float64 else np.complex64
    return twin.replace(coil_sensitivity=v.astype(cdt))


def sphere_field(position, *, center=(0.0, 0.0, 0.0), radius: float, delta_chi: float,
                 b0: float) -> np.ndarray:
    """ΔBz [T] of a sphere (radius [m], susceptibility difference ``delta_chi``) in B0 ∥ z.

    Outside: ``Δχ B0/3 (a/r)³ (3cos²θ − 1)``; inside: 0 (Lorentz-corrected).
    Convert to Hz with ``GAMMA_BAR * ΔB``.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0 [m], got {radius}")
    d = _positions(position) - np.asarray(center, float)
    r2 = (d**2).sum(1)
    r = np.sqrt(r2)
    out = np.zeros(len(d))
    m = r > radius
    cos2 = d[m, 2] ** 2 / r2[m]
    out[m] = delta_chi * b0 / 3.0 * (radius / r[m]) ** 3 * (3 * cos2 - 1)
    return out


def cylinder_field(position, *, center=(0.0, 0.0, 0.0), axis=(1.0, 0.0, 0.0), radius: float,
                   delta_chi: float, b0: float) -> np.ndarray:
    """ΔBz [T] of an infinite cylinder (axis direction, radius [m], ``delta_chi``) in B0 ∥ z.

    With α the angle between the axis and B0 and φ the azimuth about the axis measured
    from the plane containing the axis and B0: outside ``Δχ B0/2 sin²α (a/ρ)² cos 2φ``,
    inside ``Δχ B0/6 (3cos²α − 1)``.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0 [m], got {radius}")
    n = np.asarray(axis, float)
    if not np.linalg.norm(n) > 0:
        raise ValueError("axis must be a non-zero vector")
    n = n / np.linalg.norm(n)
    z = np.array([0.0, 0.0, 1.0])
    cos_a = float(n @ z)
    sin2 = 1 - cos_a**2
    d = _positions(position) - np.asarray(center, float)
    perp = d - np.outer(d @ n, n)
    rho = np.linalg.norm(perp, axis=1)
    out = np.full(len(d), delta_chi * b0 / 6.0 * (3 * cos_a**2 - 1))
    m = rho > radius
    if sin2 > 1e-15:
        e1 = z - cos_a * n  # B0 projected perpendicular to the axis
        e1 /= np.linalg.norm(e1)
        cosphi = (perp[m] @ e1) / rho[m]
        out[m] = delta_chi * b0 / 2.0 * sin2 * (radius / rho[m]) ** 2 * (2 * cosphi**2 - 1)
    else:
        out[m] = 0.0
    return out


def loop_coil_sensitivities(position, centers, normals, radius: float, *, n_segments: int = 64,
                            normalize: bool = True) -> np.ndarray:
    """Receive sensitivities of circular loop coils by Biot–Savart.

    Each loop (centre [m], normal, radius [m]) carries 1 A; its field B [T] at the spins
    is integrated over ``n_segments`` straight segments. The sensitivity is
    ``Bx − i·By`` (the component that couples to transverse magnetization precessing
    as ``exp(−i2πΔf t)`` in our convention, by reciprocity), scaled by ``1/max|·|``
    over all coils with ``normalize``.

    Returns:
        (n_coils, n_spins) complex.
    """
    pos = _positions(position)
    centers = np.atleast_2d(np.asarray(centers, float))
    normals = np.atleast_2d(np.asarray(normals, float))
    if centers.shape[1] != 3 or normals.shape != centers.shape:
        raise ValueError(f"centers and normals must have shape (n_coils, 3), got {centers.shape}, {normals.shape}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 [m], got {radius}")
    phi = 2 * np.pi * np.arange(n_segments + 1) / n_segments
    out = np.zeros((len(centers), len(pos)), complex)
    for c, (ctr, nrm) in enumerate(zip(centers, normals, strict=True)):
        nrm = nrm / np.linalg.norm(nrm)
        helper = np.array([1.0, 0, 0]) if abs(nrm[0]) < 0.9 else np.array([0, 1.0, 0])
        e1 = np.cross(nrm, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(nrm, e1)
        pts = ctr + radius * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
        dl = np.diff(pts, axis=0)  # (n_seg, 3)
        mid = 0.5 * (pts[1:] + pts[:-1])
        b = np.zeros((len(pos), 3))
        for s in range(n_segments):
            rvec = pos - mid[s]
            r3 = np.maximum(np.linalg.norm(rvec, axis=1), 1e-6) ** 3
            b += np.cross(dl[s], rvec) / r3[:, None]
        b *= MU0 / (4 * np.pi)
        out[c] = b[:, 0] - 1j * b[:, 1]
    if normalize:
        m = np.abs(out).max()
        if m > 0:
            out /= m
    return out


def birdcage_sensitivities(position, n_coils: int, *, radius: float, relative_radius: float = 1.5,
                           normalize: bool = True) -> np.ndarray:
    """Simple ring-array ("birdcage") sensitivities, the model of the ISMRMRD tools.

    Coil ``c`` sits at angle ``2πc/n`` on a circle of radius ``relative_radius·radius``
    [m] around z; its sensitivity at in-plane offset ``d`` from the coil is
    ``exp(i(atan2(dx, −dy) − 2πc/n)) / (|d|/radius)``.

    Returns:
        (n_coils, n_spins) complex.
    """
    if int(n_coils) != n_coils or n_coils < 1:
        raise ValueError(f"n_coils must be an integer >= 1, got {n_coils}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 [m], got {radius}")
    pos = _positions(position)
    out = np.zeros((int(n_coils), len(pos)), complex)
    for c in range(int(n_coils)):
        a = 2 * math.pi * c / n_coils
        cx, cy = relative_radius * radius * math.cos(a), relative_radius * radius * math.sin(a)
        dx, dy = (pos[:, 0] - cx) / radius, (pos[:, 1] - cy) / radius
        rr = np.maximum(np.hypot(dx, dy), 1e-6)
        out[c] = np.exp(1j * (np.arctan2(dx, -dy) - a)) / rr
    if normalize:
        out /= np.abs(out).max()
    return out
