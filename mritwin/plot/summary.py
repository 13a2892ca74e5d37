"""A one-page summary figure: twin maps, images, a sequence diagram and k-space."""

from __future__ import annotations

import numpy as np

from .sequence import sequence_waveforms
from .twin import twin_maps

__all__ = ["plot_summary"]


def plot_summary(twin, results, *, title="mritwin", figsize=(16, 11)):
    """One page: parameter maps of the twin, reconstructed images, for the first result a
    sequence diagram of one repetition and its k-space trajectory.

    Args:
        twin: the simulated `mritwin.Twin`.
        results: list of dicts with ``name`` (str), ``seq`` (`Sequence`), ``image``
            (`mritwin.Image`) and optional ``label`` (str shown above the image).
        title: figure title.
        figsize: inches.

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    maps, extent = twin_maps(twin, ("pd", "t1", "t2", "label"))
    ext_mm = [1e3 * e for e in extent]
    fig = plt.figure(figsize=figsize, constrained_layout=True)
    grid = fig.add_gridspec(3, 4)
    fig.suptitle(title, fontsize=14)
    specs = [("pd", "PD [a.u.]", "gray"), ("t1", "T1 [s]", "magma"), ("t2", "T2 [s]", "viridis"),
             ("label", "tissue label", "tab10")]
    for j, (f, lab, cmap) in enumerate(specs):
        ax = fig.add_subplot(grid[0, j])
        m = maps.get(f)
        if m is None:
            ax.axis("off")
            continue
        vmax = np.nanpercentile(m, 99) if f in ("t1", "t2") else None
        im = ax.imshow(m, origin="lower", extent=ext_mm, cmap=cmap, vmax=vmax, interpolation="nearest")
        ax.set_title(f"twin: {lab}")
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    for j, r in enumerate(results[:2]):
        ax = fig.add_subplot(grid[1, 2 * j:2 * j + 2])
        data = np.abs(np.asarray(r["image"].data))
        while data.ndim > 2:
            data = data[..., data.shape[-1] // 2] if data.shape[-1] > 1 else data[..., 0]
        aff = np.asarray(r["image"].affine)
        nx, ny = data.shape
        x0, y0 = aff[0, 3], aff[1, 3]
        ext = [x0 - aff[0, 0] / 2, x0 + aff[0, 0] * (nx - 0.5), y0 - aff[1, 1] / 2, y0 + aff[1, 1] * (ny - 0.5)]
        ax.imshow(data.T, origin="lower", cmap="gray", extent=ext, vmax=np.percentile(data, 99.5))
        ax.set_title(r.get("label", r["name"]))
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
    if results:
        seq = results[0]["seq"]
        _diagram(fig, grid[2, 0:2], seq)
        ax = fig.add_subplot(grid[2, 2])
        k = np.asarray(seq.kspace())
        ax.plot(k[:, 0], k[:, 1], ".", ms=1)
        ax.set_title(f"k-space: {results[0]['name']}")
        ax.set_xlabel("kx [1/m]")
        ax.set_ylabel("ky [1/m]")
        ax.set_aspect("equal")
        if len(results) > 1:
            ax = fig.add_subplot(grid[2, 3])
            k = np.asarray(results[1]["seq"].kspace())
            ax.plot(k[:, 0], k[:, 1], ".", ms=1)
            ax.set_title(f"k-space: {results[1]['name']}")
            ax.set_xlabel("kx [1/m]")
            ax.set_aspect("equal")
    return fig


def _diagram(fig, spec, seq):
    """RF, gradients and ADC of the first repetition (up to the second excitation)."""
    starts = seq.block_starts()
    rf_blocks = [i for i, b in enumerate(seq.blocks) if b.rf is not None and b.rf.use in ("excitation", "undefined")]
    t_end = starts[rf_blocks[1]] if len(rf_blocks) > 1 else seq.duration
    w = sequence_waveforms(seq, (0.0, t_end))
    sub = spec.subgridspec(4, 1, hspace=0.05)
    axes = [fig.add_subplot(sub[0])]
    axes += [fig.add_subplot(sub[i], sharex=axes[0]) for i in range(1, 4)]
    for t, b1 in w["rf"]:
        axes[0].plot(1e3 * t, 1e6 * np.abs(b1), "k", lw=1)
    axes[0].set_ylabel("|B1| [uT]")
    axes[0].set_title("sequence diagram (one repetition)")
    for ax, ch in zip(axes[1:], ("gx", "gy", "gz")):
        t, g = w[ch]
        ax.plot(1e3 * t, 1e3 * g, lw=1)
        ax.set_ylabel(f"{ch} [mT/m]")
    if len(w["adc"]):
        for ax in axes[1:2]:
            lo, hi = 1e3 * w["adc"].min(), 1e3 * w["adc"].max()
            ax.axvspan(lo, hi, color="tab:red", alpha=0.15, label="ADC")
            ax.legend(loc="upper right", fontsize=7)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time [ms]")
