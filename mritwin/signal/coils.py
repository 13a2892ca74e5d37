"""Synthetic receive-coil sensitivities (a ring of loop coils around the z axis)."""

from __future__ import annotations

import numpy as np

__all__ = ["ring_coil_sensitivities"]


def ring_coil_sensitivities(position, n_coils: int, *, radius: float | None = None,
                            length: float | None = None) -> np.ndarray:
    """Smooth complex sensitivities of ``n_coils`` loop coils on a ring around z.

    Coil ``c`` sits at angle ``2π c / n_coils`` on a circle of ``radius`` in the xy plane;
    its sensitivity at a point at distance ``d`` from the coil is the on-axis field of a
    loop, ``(1 + (d / a)²)^(-3/2)`` with loop radius ``a = radius / 2``, times a
    Gaussian fall-off along z of width ``length``, with the phase of the point's
    azimuth seen from the coil (a simple, smooth model — not an EM simulation). Maps
    are normalized so that the root-sum-of-squares is 1 at the centre.

    Args:
        position: (n_spins, 3) positions [m].
        n_coils: number of coils, >= 1 (1 gives a uniform coil of sensitivity 1).
        radius: ring radius [m]; default 1.5 × the largest in-plane |r| (at least 5 cm).
        length: z fall-off [m]; default 2 × radius.

    Returns:
        (n_coils, n_spins) complex128 sensitivities.
    """
    pos = np.asarray(position, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"position must have shape (n_spins, 3), got {pos.shape}")
    if int(n_coils) != n_coils or n_coils < 1:
        raise ValueError(f"n_coils must be a positive integer, got {n_coils!r}")
    n_coils = int(n_coils)
    if n_coils == 1:
        return np.ones((1, pos.shape[0]), np.complex128)
    rmax = float(np.hypot(pos[:, 0], pos[:, 1]).max()) if pos.size else 0.0
    radius = float(radius) if radius is not None else max(0.05, 1.5 * rmax)
    length = float(length) if length is not None else 2.0 * radius
    a = radius / 2
    out = np.empty((n_coils, pos.shape[0]), np.complex128)
    ang = 2 * np.pi * np.arange(n_coils) / n_coils
    centre = np.zeros(n_coils)
    for c, th in enumerate(ang):
        cx, cy = radius * np.cos(th), radius * np.sin(th)
        dx, dy = pos[:, 0] - cx, pos[:, 1] - cy
        d = np.sqrt(dx**2 + dy**2)
        mag = (1 + (d / a) ** 2) ** -1.5 * np.exp(-0.5 * (pos[:, 2] / length) ** 2)
        out[c] = mag * np.exp(1j * (np.arctan2(dy, dx) - th))
        centre[c] = (1 + (radius / a) ** 2) ** -1.5
    out /= np.sqrt(np.sum(centre**2))
    return out
