"""Twin files: a documented HDF5 schema (h5py, imported lazily).

Schema ``mritwin.twin`` version 1 (all quantities SI, one row per spin)::

    /                      attributes: format = "mritwin.twin", version = 1 (int),
                           n_spins (int), label_names (JSON list of strings),
                           mritwin_version (str, informative)
    /position              (n_spins, 3) float   [m], scanner frame        required
    /pd                    (n_spins,)   float   [a.u.]                    required
    /t1, /t2               (n_spins,)   float   [s], inf allowed          required
    /t2_prime              (n_spins,)   float   [s], inf allowed          optional
    /delta_f               (n_spins,)   float   [Hz]                      optional
    /diffusion             (n_spins,)   float   [m^2/s]                   optional
    /b1                    (n_spins,)   float   [1] relative B1+          optional
    /coil_sensitivity      (n_coils, n_spins) complex [a.u.]              optional
    /label                 (n_spins,)   int32   index into label_names    optional

Each dataset carries a ``unit`` attribute. Arrays are stored with the twin's dtype
(float32 or float64), so a save/load round trip is exact (``inf`` included) when JAX's
x64 setting is the same on both sides. Readers must reject a ``version`` newer than
they know; optional datasets may be absent.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ._h5 import open_h5

__all__ = ["save_twin", "load_twin", "FORMAT", "VERSION"]

FORMAT = "mritwin.twin"
VERSION = 1

_FIELDS = {  # name: (unit, required)
    "position": ("m", True),
    "pd": ("a.u.", True),
    "t1": ("s", True),
    "t2": ("s", True),
    "t2_prime": ("s", False),
    "delta_f": ("Hz", False),
    "diffusion": ("m^2/s", False),
    "b1": ("1", False),
    "coil_sensitivity": ("a.u.", False),
    "label": ("1", False),
}


def save_twin(twin, path, *, compression: str | None = None) -> None:
    """Save ``twin`` to an HDF5 file in the ``mritwin.twin`` v1 schema (see module doc).

    Args:
        twin: a `mritwin.Twin`.
        path: output file (overwritten).
        compression: optional h5py compression filter (e.g. ``"gzip"``); lossless.

    Raises:
        TypeError: ``twin`` is not a Twin.
    """
    import h5py

    from ..twin.twin import Twin

    if not isinstance(twin, Twin):
        raise TypeError(f"save_twin needs a mritwin.Twin, got {type(twin).__name__}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        mv = version("mritwin")
    except PackageNotFoundError:  # running from a source tree
        mv = "unknown"
    with h5py.File(os.fspath(path), "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = np.int64(VERSION)
        f.attrs["n_spins"] = np.int64(twin.n_spins)
        f.attrs["label_names"] = json.dumps(list(twin.label_names))
        f.attrs["mritwin_version"] = mv
        for name, (unit, _) in _FIELDS.items():
            v = getattr(twin, name)
            if v is None:
                continue
            arr = np.asarray(v)
            kw = {"compression": compression} if compression and arr.size else {}
            ds = f.create_dataset(name, data=arr, **kw)
            ds.attrs["unit"] = unit


def load_twin(path):
    """Load a twin saved by `save_twin`.

    Raises:
        ValueError: missing file, not an mritwin twin file, a newer schema version, a
            missing required dataset, or invalid values (the message names the file).
    """
    from ..twin.twin import Twin

    f, p = open_h5(path, "twin file")
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise ValueError(f"{p} is not an mritwin twin file (format attribute {fmt!r})")
        ver = int(f.attrs.get("version", -1))
        if ver < 1 or ver > VERSION:
            raise ValueError(f"{p}: twin file version {ver} is not supported (this mritwin reads 1..{VERSION})")
        kwargs = {}
        for name, (_, required) in _FIELDS.items():
            if name in f:
                kwargs[name] = np.asarray(f[name][()])
            elif required:
                raise ValueError(f"{p}: required dataset /{name} is missing")
        names = f.attrs.get("label_names", "[]")
        if isinstance(names, bytes):
            names = names.decode()
        kwargs["label_names"] = tuple(json.loads(names))
    try:
        return Twin(**kwargs)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
