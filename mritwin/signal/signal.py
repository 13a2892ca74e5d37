"""`Signal`: simulated receive data with its k-space positions and times."""

from __future__ import annotations

import equinox as eqx
import jax

__all__ = ["Signal"]


class Signal(eqx.Module):
    """Simulated ADC data.

    Attributes:
        samples: (n_coils, n_adc_samples) complex demodulated signal [a.u.: sum of the
            spins' transverse magnetization, in units of their proton density].
        kspace: (n_adc_samples, 3) k-space position of each sample [1/m] (NumPy float64;
            a JAX array when the sequence's gradients are traced).
        time: (n_adc_samples,) sample time from the sequence start [s] (NumPy float64:
            timing is static and float32 would be too coarse for long sequences).
        magnetization: optional (n_spins, 3) magnetization (Mx, My, Mz) at the end of
            the sequence, in units of proton density (only when requested).
        adc_event: (n_adc_samples,) index of the ADC event each sample belongs to
            (NumPy; ``None`` when simulating a `DiscreteSequence`).
    """

    samples: jax.Array
    kspace: jax.Array
    time: jax.Array
    adc_event: jax.Array | None = None
    magnetization: jax.Array | None = None

    @property
    def n_coils(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])
