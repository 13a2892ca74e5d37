"""`Image`: a reconstructed image with its geometry and acquisition metadata."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Image"]

_SPATIAL = ("x", "y", "z")


def _affine(a):
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"Image.affine must have shape (4, 4), got {a.shape}")
    return a


class Image(eqx.Module):
    """A reconstructed (complex) image.

    Geometry follows NIfTI: ``affine`` maps a voxel index ``(i, j, k, 1)`` to world
    coordinates in millimetres, where the world frame is the scanner frame of the twin
    (world ``x, y, z`` [mm] = 1000 × twin position ``x, y, z`` [m]; mritwin reads this
    frame as RAS+). Image axes 0, 1, 2 run along scanner ``x``, ``y``, ``z`` (2D images
    have only ``x, y``; the affine is still 4×4, its third column the slice direction
    scaled by the slice thickness).

    Attributes:
        data: complex array, shape ``(nx, ny[, nz], *extra)``; voxel values are the
            summed transverse magnetization of the spins in the voxel [a.u., the twin's
            ``pd`` units].
        affine: (4, 4) voxel index -> world [mm].
        dims: axis names, e.g. ``("x", "y", "z", "echo")``.
        te: echo time(s) [s] or ``None`` (one per echo where known).
        tr: repetition time [s] or ``None``.
        flip_angle: excitation flip angle [rad] or ``None``.
        b0: main field [T] or ``None``.
        slice_thickness: slice thickness [m] for 2D images (else ``None``).
        description: free text (what was reconstructed and how).
    """

    data: jax.Array
    affine: np.ndarray = eqx.field(converter=_affine)
    dims: tuple[str, ...] = eqx.field(static=True, converter=tuple, default=("x", "y", "z"))
    te: tuple[float, ...] | float | None = eqx.field(static=True, default=None)
    tr: float | None = eqx.field(static=True, default=None)
    flip_angle: float | None = eqx.field(static=True, default=None)
    b0: float | None = eqx.field(static=True, default=None)
    slice_thickness: float | None = eqx.field(static=True, default=None)
    description: str = eqx.field(static=True, default="")

    def __check_init__(self):
        if self.data.ndim != len(self.dims):
            raise ValueError(
                f"Image.data has {self.data.ndim} axes but dims names {len(self.dims)}: {self.dims}"
            )
        if tuple(self.dims[:2]) != ("x", "y"):
            raise ValueError(f"Image.dims must start with 'x', 'y', got {self.dims}")

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return 3 if len(self.dims) > 2 and self.dims[2] == "z" else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[: self.n_spatial])

    @property
    def voxel_size(self) -> np.ndarray:
        """(3,) voxel size [m] (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0) / 1000.0

    def magnitude(self) -> jax.Array:
        """``|data|``."""
        return jnp.abs(self.data)

    def world(self, index) -> np.ndarray:
        """World coordinates [mm] of voxel indices ``(..., 2 or 3)``."""
        idx = np.asarray(index, dtype=np.float64)
        if idx.shape[-1] == 2:
            idx = np.concatenate([idx, np.zeros(idx.shape[:-1] + (1,))], -1)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def index(self, world_mm) -> np.ndarray:
        """Voxel indices (fractional) of world coordinates [mm], shape ``(..., 3)``."""
        w = np.asarray(world_mm, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return w @ inv[:3, :3].T + inv[:3, 3]

    def __repr__(self) -> str:
        vs = ", ".join(f"{v * 1e3:.3g}" for v in self.voxel_size)
        return f"Image(shape={self.shape}, dims={self.dims}, voxel=({vs}) mm)"
