"""Pulseq ``.seq`` reading and writing (format versions 1.2.0 – 1.5.x).

Pulseq stores γ-scaled amplitudes (Hz, Hz/m) and times in µs/ns; mritwin works in SI
(T, T/m, s). The conversion happens here only, with `mritwin.constants.GAMMA_BAR`, so
a read → write → read round trip reproduces the file's numbers. See docs/pulseq.md.
"""

from __future__ import annotations

from ._pulseq_parse import PulseqError
from ._pulseq_read import read as _read
from ._pulseq_write import write as _write

__all__ = ["read_seq", "write_seq", "PulseqError"]


def read_seq(path, *, strict: bool = False, refocusing_threshold_deg: float | None = None):
    """Read a Pulseq file into a `mritwin.Sequence`.

    Supports format versions 1.2.0, 1.2.1, 1.3.x, 1.4.x and 1.5.x: all sections
    ([VERSION], [DEFINITIONS], [BLOCKS], [RF], [GRADIENTS], [TRAP], [ADC], [DELAYS],
    [SHAPES], [EXTENSIONS], [SIGNATURE]) and the extensions LABELSET/LABELINC (-> `Label`
    events of the block), TRIGGERS (-> `Trigger`), soft DELAYS (-> `SoftDelay`),
    ROTATIONS (-> `Rotation`, applied to the gradients by the simulator) and RF_SHIMS
    (-> `RFShim`, kept, not simulated). Blocks that use the same event id share one
    event object.

    Units: RF amplitudes [Hz] and gradients [Hz/m] are divided by ``GAMMA_BAR`` (-> T,
    T/m); µs and ns -> s; RF phase shapes (cycles) -> rad; ADC phase shapes are rad.

    Args:
        path: the ``.seq`` file.
        strict: also fail (instead of warning) on a signature mismatch, a row in
            [SIGNATURE] other than ``Type`` and ``Hash``, an unknown section, a version
            newer than 1.5 or a block shorter than its events.
        refocusing_threshold_deg: files before Pulseq 1.5 do not store what an RF pulse
            is for. ``None`` (default): such pulses keep ``use="undefined"`` and count as
            refocusing from 90.01 degrees on, as in the Pulseq toolboxes' ``detectRFuse``
            (this decides where k-space is reset or negated, and ideal spoiling). A number
            [deg]: they become ``"refocusing"`` at or above it and ``"excitation"`` below,
            for files whose 90 degree pulses come out a little above 90 (a raster that is
            not the one the pulse was designed on: 135 separates 90 from 180).

    Returns:
        The `Sequence`; ``definitions`` holds the [DEFINITIONS] entries (numbers as
        float, several numbers as a tuple of floats, other values as str).

    Raises:
        ValueError: (`PulseqError`) the file is malformed; the message names the file,
            the line and the section.
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> import mritwin as mt
        >>> seq = mt.read_seq("gre.seq")  # doctest: +SKIP
        >>> seq.duration, seq.n_blocks, seq.n_adc_samples  # doctest: +SKIP
    """
    return _read(path, strict=strict, refocusing_threshold_deg=refocusing_threshold_deg)


def write_seq(seq, path, *, version: str = "1.5.1") -> str:
    """Write a `mritwin.Sequence` as a Pulseq file (signed with an md5 [SIGNATURE]).

    Args:
        seq: the sequence; all times must lie on the rasters of its definitions
            (``GradientRasterTime``, ``RadiofrequencyRasterTime``, ``AdcRasterTime``,
            ``BlockDurationRaster``; Pulseq defaults otherwise).
        path: output file.
        version: ``"1.5.x"`` (default ``"1.5.1"``) or ``"1.4.x"``.

    Returns:
        The md5 signature (hex) of the file.

    Raises:
        ValueError: a time is off its raster, or the sequence uses something the
            requested version cannot store (e.g. ppm offsets in 1.4).
    """
    return _write(seq, path, version=version)
