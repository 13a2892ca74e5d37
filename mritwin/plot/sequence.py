"""Sequence diagrams and k-space trajectories with matplotlib.

Example:
    >>> import mritwin as mt
    >>> from mritwin.plot.sequence import plot_sequence, plot_kspace
    >>> seq = mt.read_seq("gre.seq")  # doctest: +SKIP
    >>> fig = plot_sequence(seq, time_range=(0, 0.02))  # doctest: +SKIP
    >>> fig = plot_kspace(seq)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_sequence", "plot_kspace", "sequence_waveforms"]


def _blocks_in(seq, time_range):
    starts = seq.block_starts()
    ends = starts + seq.block_durations()
    if time_range is None:
        return np.arange(seq.n_blocks), (0.0, float(seq.duration))
    t0, t1 = float(time_range[0]), float(time_range[1])
    if not t1 > t0:
        raise ValueError(f"time_range must be (start, stop) with stop > start [s], got {time_range!r}")
    idx = np.flatnonzero((ends > t0) & (starts < t1))
    return idx, (t0, t1)


def sequence_waveforms(seq, time_range=None) -> dict:
    """Waveforms of the blocks that overlap ``time_range`` (absolute times [s]).

    Returns:
        dict with ``rf``: list of (t [s], complex B1 [T]) per pulse (step waveform:
        sample edges and held values, phase offset and frequency offset applied);
        ``gx``/``gy``/``gz``: (t [s], G [T/m]) piecewise-linear waveforms (logical
        axes), NaN-separated between events; ``adc``: (n,) sample times [s];
        ``blocks``: (n,) block start times [s]; ``time_range``.
    """
    idx, tr = _blocks_in(seq, time_range)
    starts = seq.block_starts()
    out = {"rf": [], "gx": None, "gy": None, "gz": None, "adc": [], "blocks": starts[idx],
           "time_range": tr}
    g = {"gx": ([], []), "gy": ([], []), "gz": ([], [])}
    for i in idx.tolist():
        b = seq.blocks[i]
        t0 = starts[i]
        if b.rf is not None:
            rf = b.rf
            edges = rf.sample_edges()
            tc = rf.sample_times()
            sig = (np.asarray(rf.amplitude) * np.asarray(rf.shape)
                   * np.exp(1j * (float(np.asarray(rf.phase_offset)) + 2 * np.pi * rf.freq_offset * tc)))
            t = t0 + rf.delay + np.repeat(edges, 2)[1:-1]
            out["rf"].append((t, np.repeat(sig, 2)))
        for ch in ("gx", "gy", "gz"):
            ev = getattr(b, ch)
            if ev is not None:
                t, w = ev.waveform()
                g[ch][0].extend([t0 + np.asarray(t), [np.nan]])
                g[ch][1].extend([np.asarray(w, dtype=float), [np.nan]])
        if b.adc is not None:
            out["adc"].append(t0 + b.adc.sample_times())
    for ch, (ts, ws) in g.items():
        out[ch] = (np.concatenate(ts), np.concatenate(ws)) if ts else (np.zeros(0), np.zeros(0))
    out["adc"] = np.concatenate(out["adc"]) if out["adc"] else np.zeros(0)
    return out


def plot_sequence(seq, time_range=None, *, figsize=(10, 8), show_blocks=False, title=None):
    """Sequence diagram: RF magnitude and phase, Gx, Gy, Gz and ADC over time.

    Args:
        seq: a `mritwin.Sequence`.
        time_range: ``(start, stop)`` [s] to show (default: the whole sequence; use a
            window for long sequences, only overlapping blocks are drawn).
        figsize: figure size [inch].
        show_blocks: draw block boundaries as faint vertical lines.
        title: optional figure title.

    Returns:
        The matplotlib `Figure` (time axis in ms, RF in µT, gradients in mT/m).
    """
    import matplotlib.pyplot as plt

    w = sequence_waveforms(seq, time_range)
    fig, axes = plt.subplots(6, 1, sharex=True, figsize=figsize, constrained_layout=True)
    ax_adc, ax_mag, ax_ph, ax_gx, ax_gy, ax_gz = axes
    ms = 1e3
    if w["adc"].size:
        ax_adc.plot(w["adc"] * ms, np.zeros(w["adc"].size), "|", color="tab:red", ms=12)
    ax_adc.set_ylabel("ADC")
    ax_adc.set_yticks([])
    for t, sig in w["rf"]:
        ax_mag.plot(t * ms, np.abs(sig) * 1e6, color="tab:blue")
        ph = np.where(np.abs(sig) > 0, np.angle(sig), np.nan)
        ax_ph.plot(t * ms, ph, color="tab:orange")
    ax_mag.set_ylabel("|B1| [µT]")
    ax_ph.set_ylabel("RF phase [rad]")
    ax_ph.set_ylim(-np.pi * 1.1, np.pi * 1.1)
    for ax, ch, color in ((ax_gx, "gx", "tab:green"), (ax_gy, "gy", "tab:purple"), (ax_gz, "gz", "tab:brown")):
        t, g = w[ch]
        if t.size:
            ax.plot(t * ms, g * 1e3, color=color)
        ax.set_ylabel(f"G{ch[1]} [mT/m]")
        ax.axhline(0, color="0.8", lw=0.5)
    if show_blocks:
        for ax in axes:
            for s in w["blocks"]:
                ax.axvline(s * ms, color="0.9", lw=0.5, zorder=0)
    t0, t1 = w["time_range"]
    ax_gz.set_xlim(t0 * ms, t1 * ms if t1 > t0 else t0 * ms + 1)
    ax_gz.set_xlabel("time [ms]")
    if title:
        fig.suptitle(title)
    return fig


def plot_kspace(seq, *, figsize=(6, 6), title=None, projection="2d"):
    """The k-space trajectory at the ADC samples.

    Args:
        seq: a `mritwin.Sequence`.
        figsize: figure size [inch].
        title: optional title.
        projection: ``"2d"`` (kx-ky, colour = sample order) or ``"3d"``.

    Returns:
        The matplotlib `Figure` (k in 1/m).
    """
    import matplotlib.pyplot as plt

    k = np.asarray(seq.kspace())
    fig = plt.figure(figsize=figsize, constrained_layout=True)
    if projection == "3d":
        ax = fig.add_subplot(projection="3d")
        if k.size:
            ax.scatter(k[:, 0], k[:, 1], k[:, 2], s=2, c=np.arange(k.shape[0]), cmap="viridis")
        ax.set_zlabel("kz [1/m]")
    elif projection == "2d":
        ax = fig.add_subplot()
        if k.size:
            ax.plot(k[:, 0], k[:, 1], color="0.85", lw=0.5)
            ax.scatter(k[:, 0], k[:, 1], s=2, c=np.arange(k.shape[0]), cmap="viridis")
        ax.set_aspect("equal", adjustable="datalim")
    else:
        raise ValueError(f"projection must be '2d' or '3d', got {projection!r}")
    ax.set_xlabel("kx [1/m]")
    ax.set_ylabel("ky [1/m]")
    ax.set_title(title or f"k-space ({k.shape[0]} samples)")
    return fig
