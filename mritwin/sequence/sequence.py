"""`Block` and `Sequence`: the host-side, block-structured pulse sequence."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from ..constants import (
    DEFAULT_ADC_RASTER,
    DEFAULT_BLOCK_RASTER,
    DEFAULT_GRADIENT_RASTER,
    DEFAULT_RF_RASTER,
)
from .events import ADC, RF, ArbGrad, Delay, Label, Rotation, TrapGrad

__all__ = ["Block", "Sequence"]

@jax.tree_util.register_pytree_node_class
class Block:
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

    __slots__ = ("rf", "gx", "gy", "gz", "adc", "duration", "labels", "extensions")

    def __init__(self, rf=None, gx=None, gy=None, gz=None, adc=None, *, duration=None,
                 delay=None, labels=(), extensions=()):
        _set = object.__setattr__
        _set(self, "rf", rf)
        _set(self, "gx", gx)
        _set(self, "gy", gy)
        _set(self, "gz", gz)
        _set(self, "adc", adc)
        for ch, g in (("x", gx), ("y", gy), ("z", gz)):
            if g is not None:
                if not isinstance(g, (TrapGrad, ArbGrad)):
                    raise TypeError(f"g{ch} must be a TrapGrad or ArbGrad, got {type(g).__name__}")
                if g.channel != ch:
                    raise ValueError(f"gradient on channel {g.channel!r} passed as g{ch}")
        if rf is not None and not isinstance(rf, RF):
            raise TypeError(f"rf must be an RF event, got {type(rf).__name__}")
        if rf is not None and rf.n_plays is not None:
            raise ValueError(f"rf is a pulse train of {rf.n_plays} plays (a vector amplitude or phase): "
                             "put one play in each block, Block(rf=train.play(k))")
        if adc is not None and not isinstance(adc, ADC):
            raise TypeError(f"adc must be an ADC event, got {type(adc).__name__}")
        labels = tuple(labels)
        for lab in labels:
            if not isinstance(lab, Label):
                raise TypeError(f"labels must be Label events, got {type(lab).__name__}")
        _set(self, "labels", labels)
        _set(self, "extensions", tuple(extensions))
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
        _set(self, "duration", duration)

    def __setattr__(self, name, value):
        raise AttributeError(f"Block is immutable: cannot set {name!r}")

    def __repr__(self) -> str:
        parts = [f"{k}={type(getattr(self, k)).__name__}" for k in ("rf", "gx", "gy", "gz", "adc")
                 if getattr(self, k) is not None]
        return f"Block({', '.join(parts)}, duration={self.duration:.6g})"

    def replace(self, **changes) -> Block:
        """A copy with some events (or ``duration``, ``labels``, ``extensions``) replaced."""
        kw = {k: getattr(self, k) for k in ("rf", "gx", "gy", "gz", "adc", "labels", "extensions")}
        kw["duration"] = self.duration
        kw.update(changes)
        return Block(**kw)

    # pytree protocol: events are children (their value leaves can be traced)
    def tree_flatten(self):
        return (self.rf, self.gx, self.gy, self.gz, self.adc, self.labels, self.extensions), self.duration

    @classmethod
    def tree_unflatten(cls, duration, children):
        obj = object.__new__(cls)
        for k, v in zip(("rf", "gx", "gy", "gz", "adc", "labels", "extensions"), children):
            object.__setattr__(obj, k, v)
        object.__setattr__(obj, "duration", duration)
        return obj

    @property
    def gradients(self) -> tuple:
        return (self.gx, self.gy, self.gz)

    @property
    def rotation(self) -> Rotation | None:
        for e in self.extensions:
            if isinstance(e, Rotation):
                return e
        return None


@jax.tree_util.register_pytree_node_class
class Sequence:
    """A pulse sequence: an ordered tuple of `Block` s plus definitions (host side, SI).

    Build one in code with ``Sequence([Block(...), ...])`` or read a Pulseq file with
    `mritwin.read_seq`.

    Args:
        blocks: the blocks, played back to back.
        definitions: free-form metadata (Pulseq [DEFINITIONS]: ``FOV``, ``Name``, ...);
            raster times are taken from ``GradientRasterTime``, ``RadiofrequencyRasterTime``,
            ``AdcRasterTime`` and ``BlockDurationRaster`` when present.
    """

    __slots__ = ("blocks", "definitions", "_durations", "_starts", "__weakref__")

    def __init__(self, blocks: Iterable[Block], definitions: dict | None = None):
        blocks = tuple(blocks)
        for i, b in enumerate(blocks):
            if not isinstance(b, Block):
                raise TypeError(f"Sequence.blocks[{i}] must be a Block, got {type(b).__name__}")
        _set = object.__setattr__
        _set(self, "blocks", blocks)
        _set(self, "definitions", dict(definitions or {}))
        d = np.fromiter((b.duration for b in blocks), dtype=np.float64, count=len(blocks))
        d.flags.writeable = False
        starts = np.concatenate([[0.0], np.cumsum(d)[:-1]]) if d.size else d.copy()
        starts.flags.writeable = False
        _set(self, "_durations", d)
        _set(self, "_starts", starts)

    def __setattr__(self, name, value):
        raise AttributeError(f"Sequence is immutable: cannot set {name!r}")

    def tree_flatten(self):
        return (self.blocks,), self.definitions

    @classmethod
    def tree_unflatten(cls, definitions, children):
        return cls(children[0], definitions)

    # -- inspection ------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def block_durations(self) -> np.ndarray:
        """(n_blocks,) block durations [s] (read-only)."""
        return self._durations

    def block_starts(self) -> np.ndarray:
        """(n_blocks,) start time of each block [s] (read-only)."""
        return self._starts

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
        out = [starts[i] + type(b.adc).sample_times(b.adc) for i, b in enumerate(self.blocks) if b.adc is not None]
        return np.concatenate(out) if out else np.zeros(0)

    def adc_labels(self) -> dict[str, np.ndarray]:
        """Pulseq label values (counters and flags) at every ADC event, in order.

        Returns:
            ``{name: (n_adc_events,) int array}`` for every Pulseq label name (see
            `mritwin.sequence.labels.adc_labels`).
        """
        from .labels import adc_labels

        return adc_labels(self)

    def kspace(self) -> np.ndarray:
        """(n_adc_samples, 3) k-space position of every ADC sample [1/m].

        ``k(t) = γ̄ ∫ G dt`` integrated exactly over the piecewise-linear gradients,
        reset to 0 at the centre of each excitation pulse and negated at the centre of
        each refocusing pulse (RF ``use``; pulses with ``use="undefined"`` are
        classified by flip angle as the Pulseq toolboxes do: from 90.01° refocusing,
        otherwise excitation; other uses leave k-space alone).
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
