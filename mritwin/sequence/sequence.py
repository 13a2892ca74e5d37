"""`Block` and `Sequence`: the host-side, block-structured pulse sequence."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import equinox as eqx
import numpy as np

from ..constants import (
    DEFAULT_ADC_RASTER,
    DEFAULT_BLOCK_RASTER,
    DEFAULT_GRADIENT_RASTER,
    DEFAULT_RF_RASTER,
)
from .events import ADC, RF, ArbGrad, Delay, Label, Rotation, TrapGrad

__all__ = ["Block", "Sequence"]

class Block(eqx.Module):
    """One block of a sequence: at most one RF, one gradient per axis, one ADC.

    Args:
        rf: optional `RF`.
        gx, gy, gz: optional gradients (`TrapGrad` or `ArbGrad`) on x, y, z.
        adc: optional `ADC`.
        duration: block duration [s]; default: the longest event (or ``Delay``).
        labels: `Label` events applied at this block.
        extensions: other extension events (`Trigger`, `Rotation`, `SoftDelay`,
            `RFShim`, ...).

    Raises:
        ValueError: a gradient is on the wrong channel, or an explicit duration is
            shorter than an event.
    """

    rf: RF | None = None
    gx: TrapGrad | ArbGrad | None = None
    gy: TrapGrad | ArbGrad | None = None
    gz: TrapGrad | ArbGrad | None = None
    adc: ADC | None = None
    duration: float = eqx.field(static=True, default=None)
    labels: tuple = eqx.field(default=(), converter=tuple)
    extensions: tuple = eqx.field(default=(), converter=tuple)

    def __init__(self, rf=None, gx=None, gy=None, gz=None, adc=None, *, duration=None,
                 delay=None, labels=(), extensions=()):
        self.rf, self.gx, self.gy, self.gz, self.adc = rf, gx, gy, gz, adc
        for ch, g in (("x", gx), ("y", gy), ("z", gz)):
            if g is not None:
                if not isinstance(g, (TrapGrad, ArbGrad)):
                    raise TypeError(f"g{ch} must be a TrapGrad or ArbGrad, got {type(g).__name__}")
                if g.channel != ch:
                    raise ValueError(f"gradient on channel {g.channel!r} passed as g{ch}")
        if rf is not None and not isinstance(rf, RF):
            raise TypeError(f"rf must be an RF event, got {type(rf).__name__}")
        if adc is not None and not isinstance(adc, ADC):
            raise TypeError(f"adc must be an ADC event, got {type(adc).__name__}")
        labels = tuple(labels)
        for lab in labels:
            if not isinstance(lab, Label):
                raise TypeError(f"labels must be Label events, got {type(lab).__name__}")
        self.labels = labels
        self.extensions = tuple(extensions)
        longest = max(
            [e.duration for e in (rf, gx, gy, gz, adc) if e is not None]
            + ([delay.duration] if isinstance(delay, Delay) else [float(delay or 0.0)]),
            default=0.0,
        )
        if duration is None:
            duration = longest
        else:
            duration = float(duration)
            if not math.isfinite(duration) or duration < 0:
                raise ValueError(f"Block.duration must be >= 0 [s], got {duration}")
            if duration < longest - 1e-9:
                raise ValueError(
                    f"Block.duration {duration * 1e6:.3f} us is shorter than its longest event "
                    f"({longest * 1e6:.3f} us)"
                )
        self.duration = duration

    @property
    def gradients(self) -> tuple:
        return (self.gx, self.gy, self.gz)

    @property
    def rotation(self) -> Rotation | None:
        for e in self.extensions:
            if isinstance(e, Rotation):
                return e
        return None


class Sequence(eqx.Module):
    """A pulse sequence: an ordered tuple of `Block` s plus definitions (host side, SI).

    Build one in code with ``Sequence([Block(...), ...])`` or read a Pulseq file with
    `mritwin.read_seq`.

    Args:
        blocks: the blocks, played back to back.
        definitions: free-form metadata (Pulseq [DEFINITIONS]: ``FOV``, ``Name``, ...);
            raster times are taken from ``GradientRasterTime``, ``RadiofrequencyRasterTime``,
            ``AdcRasterTime`` and ``BlockDurationRaster`` when present.
    """

    blocks: tuple[Block, ...] = eqx.field(converter=tuple)
    definitions: dict = eqx.field(static=True, default_factory=dict)

    def __check_init__(self):
        for i, b in enumerate(self.blocks):
            if not isinstance(b, Block):
                raise TypeError(f"Sequence.blocks[{i}] must be a Block, got {type(b).__name__}")

    # -- inspection ------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def block_durations(self) -> np.ndarray:
        """(n_blocks,) block durations [s]."""
        return np.fromiter((b.duration for b in self.blocks), dtype=np.float64, count=self.n_blocks)

    def block_starts(self) -> np.ndarray:
        """(n_blocks,) start time of each block [s]."""
        d = self.block_durations()
        return np.concatenate([[0.0], np.cumsum(d)[:-1]]) if d.size else d

    @property
    def duration(self) -> float:
        """Total duration [s]."""
        return float(self.block_durations().sum())

    @property
    def n_adc_samples(self) -> int:
        return int(sum(b.adc.num_samples for b in self.blocks if b.adc is not None))

    @property
    def n_rf(self) -> int:
        return sum(1 for b in self.blocks if b.rf is not None)

    @property
    def n_adc_events(self) -> int:
        return sum(1 for b in self.blocks if b.adc is not None)

    def raster(self, name: str) -> float:
        """A raster time [s] from the definitions, with the Pulseq defaults."""
        keys = {
            "gradient": ("GradientRasterTime", DEFAULT_GRADIENT_RASTER),
            "rf": ("RadiofrequencyRasterTime", DEFAULT_RF_RASTER),
            "adc": ("AdcRasterTime", DEFAULT_ADC_RASTER),
            "block": ("BlockDurationRaster", DEFAULT_BLOCK_RASTER),
        }
        key, default = keys[name]
        v = self.definitions.get(key, default)
        if isinstance(v, (list, tuple, np.ndarray)):
            v = v[0]
        return float(v)

    def adc_times(self) -> np.ndarray:
        """(n_adc_samples,) ADC sample times from the sequence start [s]."""
        starts = self.block_starts()
        out = [starts[i] + b.adc.sample_times() for i, b in enumerate(self.blocks) if b.adc is not None]
        return np.concatenate(out) if out else np.zeros(0)

    def kspace(self) -> np.ndarray:
        """(n_adc_samples, 3) k-space position of every ADC sample [1/m].

        ``k(t) = γ̄ ∫ G dt`` integrated exactly over the piecewise-linear gradients,
        reset to 0 at the centre of each excitation pulse and negated at the centre of
        each refocusing pulse (RF ``use``; pulses with ``use="undefined"`` are
        classified by flip angle: > 150° refocusing, otherwise excitation).
        """
        from .kspace import kspace_at_adc

        return kspace_at_adc(self)

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequence(self.blocks[i], dict(self.definitions))
        return self.blocks[i]

    def __add__(self, other: Sequence) -> Sequence:
        if not isinstance(other, Sequence):
            return NotImplemented
        defs = dict(self.definitions)
        defs.update(other.definitions)
        return Sequence(self.blocks + other.blocks, defs)

    def __repr__(self) -> str:
        return (f"Sequence(n_blocks={self.n_blocks}, duration={self.duration:.6g} s, "
                f"n_adc_samples={self.n_adc_samples})")

    @classmethod
    def from_blocks(cls, blocks: Iterable[Block], **definitions: Any) -> Sequence:
        return cls(tuple(blocks), dict(definitions))
