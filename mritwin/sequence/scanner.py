"""`Scanner`: field strength, hardware limits and raster times (SI)."""

from __future__ import annotations

import equinox as eqx

from ..constants import (
    DEFAULT_ADC_RASTER,
    DEFAULT_BLOCK_RASTER,
    DEFAULT_GRADIENT_RASTER,
    DEFAULT_RF_RASTER,
    GAMMA_BAR,
)

__all__ = ["Scanner"]


class Scanner(eqx.Module):
    """An MR system: main field, gradient and RF limits, raster and dead times. SI units.

    Passed explicitly to builders, checks and `simulate` (there is no global default
    system). All fields are static metadata.

    Args:
        b0: main field [T].
        max_grad: maximum gradient amplitude per axis [T/m].
        max_slew: maximum slew rate per axis [T/m/s].
        max_b1: maximum RF amplitude [T].
        grad_raster: gradient raster time [s].
        rf_raster: RF raster time [s].
        adc_raster: ADC dwell-time raster [s].
        block_raster: block duration raster [s].
        rf_dead_time: minimum time before an RF pulse in its block [s].
        rf_ringdown_time: minimum time after an RF pulse in its block [s].
        adc_dead_time: minimum time before and after an ADC in its block [s].
        gamma_bar: γ/2π of the imaged nucleus [Hz/T].

    Example:
        >>> import mritwin as mt
        >>> mt.Scanner(b0=1.5, max_grad=40e-3, max_slew=150.0).b0
        1.5
    """

    b0: float = eqx.field(default=3.0, static=True)
    max_grad: float = eqx.field(default=40e-3, static=True)
    max_slew: float = eqx.field(default=170.0, static=True)
    max_b1: float = eqx.field(default=20e-6, static=True)
    grad_raster: float = eqx.field(default=DEFAULT_GRADIENT_RASTER, static=True)
    rf_raster: float = eqx.field(default=DEFAULT_RF_RASTER, static=True)
    adc_raster: float = eqx.field(default=DEFAULT_ADC_RASTER, static=True)
    block_raster: float = eqx.field(default=DEFAULT_BLOCK_RASTER, static=True)
    rf_dead_time: float = eqx.field(default=100e-6, static=True)
    rf_ringdown_time: float = eqx.field(default=30e-6, static=True)
    adc_dead_time: float = eqx.field(default=10e-6, static=True)
    gamma_bar: float = eqx.field(default=GAMMA_BAR, static=True)

    def __check_init__(self):
        for name in ("b0", "max_grad", "max_slew", "max_b1", "grad_raster", "rf_raster",
                     "adc_raster", "block_raster", "gamma_bar"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"Scanner.{name} must be a positive number, got {v!r}")
        for name in ("rf_dead_time", "rf_ringdown_time", "adc_dead_time"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"Scanner.{name} must be >= 0 [s], got {v!r}")
