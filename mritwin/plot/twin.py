"""Parameter maps of a twin (PD, T1, T2, T2', Δf, ADC, B1, labels) with matplotlib.

Spins are binned onto a pixel grid in one plane: ``pd`` is summed per pixel, the
relaxation times, Δf, ADC and B1 are PD-weighted means, and the label is that of the
spin with the largest PD (the dominant compartment).

Example:
    >>> import mritwin as mt
    >>> from mritwin.plot.twin import plot_twin
    >>> fig = plot_twin(mt.phantoms.brain(dims=2, matrix=32))
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_twin", "twin_maps"]

_UNITS = {"pd": "a.u.", "t1": "s", "t2": "s", "t2_prime": "s", "delta_f": "Hz", "diffusion": "m²/s",
          "b1": "1", "label": ""}
_AXES = "xyz"


def _bin_edges(c: np.ndarray, bins):
    if bins is None:
        u = np.unique(np.round(c, 9))
        if 1 < u.size <= 512:
            d = np.diff(u).min()
            k = (u - u[0]) / d
            if np.abs(k - np.round(k)).max() < 1e-3:
                n = int(round(k[-1])) + 1
                return u[0] - d / 2 + d * np.arange(n + 1)
        bins = 128 if u.size > 1 else 1
    lo, hi = float(c.min()), float(c.max())
    if hi <= lo:
        hi = lo + 1e-3
    return np.linspace(lo, hi + 1e-12, int(bins) + 1)


def twin_maps(twin, fields=("pd", "t1", "t2", "delta_f", "label"), *, axis: int = 2,
              plane: float | None = None, bins=None):
    """Bin a twin's spins into 2D maps of one plane.

    Args:
        twin: the twin.
        fields: field names (``pd``, ``t1``, ``t2``, ``t2_prime``, ``delta_f``,
            ``diffusion``, ``b1``, ``label``); absent optional fields are skipped.
        axis: the through-plane axis (0 = x, 1 = y, 2 = z).
        plane: through-plane coordinate [m] (default: the middle of the occupied range);
            spins within half a voxel of it are used.
        bins: pixels per in-plane axis (default: the spins' own grid when there is one).

    Returns:
        ``(maps, extent)``: {field: (n_rows, n_cols) array} (rows = second in-plane
        axis) and the imshow extent [m].
    """
    pos = np.asarray(twin.position, np.float64)
    if twin.n_spins == 0:
        raise ValueError("the twin has no spins to plot")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    a, b = [i for i in range(3) if i != axis]
    c = pos[:, axis]
    u = np.unique(np.round(c, 9))
    if u.size > 1:
        half = (np.diff(u).min() / 2) if u.size <= 4096 else (u[-1] - u[0]) / 128
        target = (u[0] + u[-1]) / 2 if plane is None else float(plane)
        target = u[np.argmin(np.abs(u - target))]
        sel = np.abs(c - target) <= half + 1e-12
    else:
        sel = np.ones(len(c), bool)
    p = pos[sel]
    ea, eb = _bin_edges(p[:, a], bins), _bin_edges(p[:, b], bins)
    ia = np.clip(np.searchsorted(ea, p[:, a], side="right") - 1, 0, len(ea) - 2)
    ib = np.clip(np.searchsorted(eb, p[:, b], side="right") - 1, 0, len(eb) - 2)
    shape = (len(eb) - 1, len(ea) - 1)
    flat = ib * shape[1] + ia
    pd = np.asarray(twin.pd, np.float64)[sel]
    wsum = np.bincount(flat, weights=pd, minlength=shape[0] * shape[1])
    maps = {}
    for f in fields:
        v = getattr(twin, f, None)
        if v is None and f != "pd":
            continue
        if f == "pd":
            maps[f] = wsum.reshape(shape)
        elif f == "label":
            lab = np.asarray(v)[sel]
            img = np.full(shape[0] * shape[1], -1.0)
            order = np.lexsort((pd, flat))  # by pixel, then pd: the last per pixel wins
            last = np.r_[flat[order][1:] != flat[order][:-1], True]
            img[flat[order][last]] = lab[order][last]
            maps[f] = np.where(img < 0, np.nan, img).reshape(shape)
        else:
            val = np.asarray(v, np.float64)[sel]
            if f in ("t1", "t2", "t2_prime"):
                val = np.where(np.isinf(val), np.nan, val)
            num = np.bincount(flat, weights=np.nan_to_num(val) * pd, minlength=wsum.size)
            with np.errstate(invalid="ignore", divide="ignore"):
                maps[f] = np.where(wsum > 0, num / wsum, np.nan).reshape(shape)
    extent = (ea[0], ea[-1], eb[0], eb[-1])
    return maps, extent


def plot_twin(twin, fields=("pd", "t1", "t2", "delta_f", "label"), *, axis: int = 2,
              plane: float | None = None, bins=None, figsize=None):
    """Plot parameter maps of ``twin`` in one plane; returns a matplotlib ``Figure``.

    Args: as `twin_maps`, plus ``figsize`` (inches). Times are shown in ms.
    """
    from matplotlib.figure import Figure

    maps, extent = twin_maps(twin, fields, axis=axis, plane=plane, bins=bins)
    n = len(maps)
    fig = Figure(figsize=figsize or (3.2 * n, 3.2))
    a, b = [_AXES[i] for i in range(3) if i != axis]
    for k, (f, img) in enumerate(maps.items()):
        ax = fig.add_subplot(1, n, k + 1)
        scale, unit = (1e3, "ms") if f in ("t1", "t2", "t2_prime") else (1.0, _UNITS.get(f, ""))
        kw = {}
        if f == "label":
            kw = {"cmap": "tab20", "interpolation": "nearest", "vmin": 0, "vmax": max(19, len(twin.label_names) - 1)}
        elif f == "delta_f":
            m = np.nanmax(np.abs(img)) if np.isfinite(img).any() else 1.0
            kw = {"cmap": "RdBu_r", "vmin": -m, "vmax": m}
        else:
            kw = {"cmap": "gray"}
        ext = tuple(e * 1e3 for e in extent)
        im = ax.imshow(img * scale, origin="lower", extent=ext, **kw)
        ax.set_title(f"{f} [{unit}]" if unit else f)
        ax.set_xlabel(f"{a} [mm]")
        ax.set_ylabel(f"{b} [mm]")
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if f == "label" and twin.label_names:
            present = [int(v) for v in np.unique(img[np.isfinite(img)])]
            cb.set_ticks(present)
            cb.set_ticklabels([twin.label_names[i] for i in present])
    fig.tight_layout()
    return fig
