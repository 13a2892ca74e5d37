"""Opening HDF5 files for reading, with errors that name the file."""

from __future__ import annotations

import os


def open_h5(path, what: str):
    """Open ``path`` read-only with h5py; ``ValueError`` naming ``what`` and the file otherwise.

    Returns:
        ``(h5py.File, path as str)``.
    """
    import h5py

    p = os.fspath(path)
    if not os.path.exists(p):
        raise ValueError(f"{what} not found: {p}")
    try:
        return h5py.File(p, "r"), p
    except OSError as e:
        raise ValueError(f"cannot open {p} as HDF5: {e}") from None
