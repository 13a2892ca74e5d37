"""Simulation methods: strategy objects passed to `simulate` (not strings)."""

from __future__ import annotations

import abc

import equinox as eqx

__all__ = ["AbstractSimMethod", "Bloch"]


class AbstractSimMethod(eqx.Module):
    """Base of all simulation methods."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what the method does."""


class Bloch(AbstractSimMethod):
    """Isochromat Bloch simulation with exact free precession.

    Args:
        rf_dt: group RF raster samples into steps of at least this duration [s] (B1
            averaged). ``None`` (default): one step per RF raster sample, merging runs of
            equal samples (a block pulse is one step).
        windows: evaluate ADC events on a constant gradient as one window step (exact;
            samples from powers of the per-interval precession factor and one matrix
            product) instead of one step per sample.
        chunk_size: spins simulated at once (peak memory is proportional to it).
            ``None``: up to 65 536 (CPU) or 2 097 152 (GPU) spins.
        analytic_diffusion: attenuate each spin's transverse magnetization by
            ``exp(-D b)`` with the diffusion weighting ``b`` accumulated along the k-space
            pathway (``twin.diffusion``; k reset at excitations, negated at refocusing
            pulses). Exact for single-pathway sequences (PGSE, spin and gradient echoes);
            stimulated-echo pathways are not tracked. Off by default: ``twin.diffusion`` is
            then not simulated.
        shard: split the spins over all local JAX devices (``jax.local_devices()``) when
            there is more than one; results equal a single-device run to float rounding.
        ideal_spoiling: null the transverse magnetization at the start of every
            excitation pulse (the idealization behind the Ernst formula). Use it to model a
            well-spoiled sequence with one isochromat per voxel, which cannot dephase.
        checkpoint: memory-bounded reverse mode: the steps are split into about
            ``sqrt(n_steps)`` segments that are recomputed in the backward pass, so
            `jax.grad` stores ``O(sqrt(n_steps))`` magnetization states instead of every
            step's intermediates (about one extra forward pass of compute).

    Accuracy: free precession, relaxation between RF pulses and windows are exact for
    static spins and piecewise-linear gradients; RF steps use Strang splitting
    (relax ``dt/2`` – exact rotation – relax ``dt/2``), a second-order method whose
    error per pulse scales as ``(dt/T2) · (flip per step)``, negligible at the RF raster.
    """

    rf_dt: float | None = eqx.field(default=None, static=True)
    windows: bool = eqx.field(default=True, static=True)
    chunk_size: int | None = eqx.field(default=None, static=True)
    checkpoint: bool = eqx.field(default=True, static=True)
    ideal_spoiling: bool = eqx.field(default=False, static=True)
    shard: bool = eqx.field(default=True, static=True)
    analytic_diffusion: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if self.rf_dt is not None and not self.rf_dt > 0:
            raise ValueError(f"Bloch.rf_dt must be > 0 [s], got {self.rf_dt}")
        if self.chunk_size is not None and (int(self.chunk_size) != self.chunk_size or self.chunk_size < 1):
            raise ValueError(f"Bloch.chunk_size must be a positive integer, got {self.chunk_size}")

    def describe(self) -> str:
        rf = "RF raster" if self.rf_dt is None else f"RF steps >= {self.rf_dt * 1e6:g} us"
        spoil = ", ideal spoiling" if self.ideal_spoiling else ""
        return f"Bloch ({rf}, windows={'on' if self.windows else 'off'}{spoil})"
