"""Differentiable sequence optimization and twin calibration.

Losses (`contrast`, `cnr`, `image_mse`, `signal_mse`, `signal_magnitude`,
`sar_penalty`, `duration_penalty`) and a small optax driver (`optimize`) with
projections as constraints (`Box`, `SARLimit`). See docs/optimize.md.
"""

from .driver import (
    Box as Box,
    NonFiniteError as NonFiniteError,
    OptimizeResult as OptimizeResult,
    SARLimit as SARLimit,
    optimize as optimize,
)
from .losses import (
    cnr as cnr,
    contrast as contrast,
    duration_penalty as duration_penalty,
    image_mse as image_mse,
    region_mask as region_mask,
    region_signals as region_signals,
    sar_b1_rms_limit as sar_b1_rms_limit,
    sar_penalty as sar_penalty,
    signal_magnitude as signal_magnitude,
    signal_mse as signal_mse,
)
