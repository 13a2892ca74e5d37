"""KomaMRI ``.phantom`` files (HDF5; h5py imported lazily).

Layout written by KomaMRIFiles ``write_phantom`` (KomaMRI.jl)::

    /            attributes: Version (str), Name (str), Ns (int, spins), Dims (int)
    /position/   x, y, z                 (Ns,) [m]
    /contrast/   ρ, T1, T2, T2s, Δw      (Ns,) [a.u.], [s], [s], [s], [rad/s]
                 optional Dλ1, Dλ2, Dθ (diffusion), B1 (complex transmit scale)
    /motion/     optional motion description (not supported here)

Conversion to a `Twin`: ``delta_f = Δw / 2π`` [Hz] (Koma precesses as
``exp(−iΔw t)``, our ``exp(−i2πΔf t)``); ``1/T2' = 1/T2s − 1/T2`` (``inf`` when
``T2s >= T2``); isotropic diffusion ``Dλ1 == Dλ2`` → ``diffusion``; a real ``B1`` →
``b1``. Koma writes "no relaxation" as 1e6 s: pass ``infinite_threshold=1e6`` to turn
such values into ``inf``. Spins with ``ρ == 0`` are dropped (Koma phantoms may give them
T1 = T2 = 0, which a Twin rejects).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ._h5 import open_h5

__all__ = ["read_koma", "write_koma"]


def _read(g, name):
    return np.asarray(g[name][()]) if name in g else None


def read_koma(path, *, infinite_threshold: float | None = None, ignore_motion: bool = False):
    """Read a KomaMRI ``.phantom`` file into a `Twin`.

    Args:
        path: the ``.phantom`` file.
        infinite_threshold: T1/T2/T2s values >= this [s] become ``inf`` (Koma's
            convention for "no relaxation" is 1e6 s). Default: keep values as stored.
        ignore_motion: read a phantom with a ``/motion`` group, dropping the motion
            (otherwise `NotImplementedError`).

    Raises:
        ValueError: missing file, missing datasets, length mismatch, invalid values.
        NotImplementedError: motion, anisotropic diffusion or a complex B1 (a Twin
            holds a real B1+ scale).
    """
    from ..twin.twin import Twin

    f, p = open_h5(path, "Koma phantom file")
    with f:
        if "position" not in f or "contrast" not in f:
            raise ValueError(f"{p}: not a KomaMRI phantom (needs /position and /contrast groups)")
        if "motion" in f and not ignore_motion:
            raise NotImplementedError(
                f"{p}: phantom motion is not supported by mritwin.Twin; pass ignore_motion=True to drop it"
            )
        pos, con = f["position"], f["contrast"]
        x, y, z = (_read(pos, k) for k in ("x", "y", "z"))
        rho = _read(con, "ρ")
        if rho is None:
            raise ValueError(f"{p}: /contrast/ρ is missing")
        n = rho.shape[0]

        def vec(v, default):
            if v is None:
                return np.full(n, default, dtype=np.float64)
            v = np.asarray(v).reshape(-1)
            if v.shape != (n,):
                raise ValueError(f"{p}: dataset has {v.shape[0]} values, expected Ns = {n}")
            return v

        x, y, z = vec(x, 0.0), vec(y, 0.0), vec(z, 0.0)
        t1 = vec(_read(con, "T1"), 1e6).astype(np.float64)
        t2 = vec(_read(con, "T2"), 1e6).astype(np.float64)
        t2s = vec(_read(con, "T2s"), 1e6).astype(np.float64)
        dw = vec(_read(con, "Δw"), 0.0).astype(np.float64)
        d1, d2 = _read(con, "Dλ1"), _read(con, "Dλ2")
        b1 = _read(con, "B1")
    keep = np.asarray(rho) != 0
    if infinite_threshold is not None:
        for a in (t1, t2, t2s):
            a[a >= infinite_threshold] = math.inf
    for name, a in (("T1", t1), ("T2", t2), ("T2s", t2s)):
        bad = keep & ~(a > 0)
        if bad.any():
            raise ValueError(f"{p}: {name} must be > 0 where ρ != 0, got {int(bad.sum())} invalid value(s)")
    with np.errstate(divide="ignore", invalid="ignore"):  # dropped (rho = 0) spins may hold zeros
        rate = np.where(np.isinf(t2s), 0.0, 1.0 / t2s) - np.where(np.isinf(t2), 0.0, 1.0 / t2)
        t2p = np.where(rate > 1e-12, 1.0 / np.where(rate > 1e-12, rate, 1.0), math.inf)
    diffusion = None
    if d1 is not None:
        d1 = vec(d1, 0.0)
        d2 = d1 if d2 is None else vec(d2, 0.0)
        if not np.allclose(d1, d2):
            raise NotImplementedError(f"{p}: anisotropic diffusion (Dλ1 != Dλ2) is not supported")
        diffusion = d1
    b1r = None
    if b1 is not None:
        b1 = np.asarray(b1).reshape(-1)
        if np.iscomplexobj(b1):
            if np.any(np.imag(b1) != 0):
                raise NotImplementedError(f"{p}: a complex B1 is not supported (Twin.b1 is a real scale)")
            b1 = b1.real
        b1r = vec(b1, 1.0)
    sel = np.flatnonzero(keep)
    return Twin(
        position=np.stack([x, y, z], axis=1)[sel],
        pd=np.asarray(rho, np.float64)[sel],
        t1=t1[sel],
        t2=t2[sel],
        t2_prime=t2p[sel],
        delta_f=(dw / (2 * math.pi))[sel],
        diffusion=None if diffusion is None else diffusion[sel],
        b1=None if b1r is None else b1r[sel],
    )


def write_koma(twin, path, *, name: str = "mritwin", version: str = "0.9.0") -> None:
    """Write a `Twin` as a KomaMRI ``.phantom`` file (position, ρ, T1, T2, T2s, Δw, Dλ1/2, B1).

    ``T2s`` is ``1/(1/T2 + 1/T2')`` (= T2 without ``t2_prime``); ``inf`` values are
    written as ``inf``. Coil sensitivities and labels are not part of the format.
    """
    import h5py

    pos = np.asarray(twin.position, np.float64)
    t2 = np.asarray(twin.t2, np.float64)
    if twin.t2_prime is None:
        t2s = t2
    else:
        t2p = np.asarray(twin.t2_prime, np.float64)
        r = np.where(np.isinf(t2), 0.0, 1.0 / t2) + np.where(np.isinf(t2p), 0.0, 1.0 / t2p)
        with np.errstate(divide="ignore"):
            t2s = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), math.inf)
    n = twin.n_spins
    with h5py.File(os.fspath(path), "w") as f:
        f.attrs["Version"] = version
        f.attrs["Name"] = name
        f.attrs["Ns"] = np.int64(n)
        f.attrs["Dims"] = np.int64(int(sum(bool(np.any(pos[:, a] != 0)) for a in range(3))))
        g = f.create_group("position")
        for a, k in enumerate("xyz"):
            g[k] = pos[:, a]
        c = f.create_group("contrast")
        c["ρ"] = np.asarray(twin.pd, np.float64)
        c["T1"] = np.asarray(twin.t1, np.float64)
        c["T2"] = t2
        c["T2s"] = t2s
        df = np.zeros(n) if twin.delta_f is None else np.asarray(twin.delta_f, np.float64)
        c["Δw"] = 2 * math.pi * df
        if twin.diffusion is not None:
            c["Dλ1"] = np.asarray(twin.diffusion, np.float64)
            c["Dλ2"] = np.asarray(twin.diffusion, np.float64)
            c["Dθ"] = np.zeros(n)
        if twin.b1 is not None:
            c["B1"] = np.asarray(twin.b1, np.float64).astype(np.complex128)
