"""Twins from label and partial-volume maps."""

from __future__ import annotations

__all__ = ["twin_from_labels"]


def twin_from_labels(labels, mapping, *, b0=3.0, affine=None, spins_per_voxel=1, **kwargs):
    """Build a twin from a label map."""
    raise NotImplementedError("twin_from_labels is not implemented yet")
