"""Twin files (HDF5)."""

from __future__ import annotations

__all__ = ["save_twin", "load_twin"]


def save_twin(twin, path):
    """Save a twin to an HDF5 file."""
    raise NotImplementedError("save_twin is not implemented yet")


def load_twin(path):
    """Load a twin from an HDF5 file."""
    raise NotImplementedError("load_twin is not implemented yet")
