"""Physical constants used throughout mritwin.

Each constant is defined once, in SI units, with its source. Import from here rather
than re-typing a number (pypulseq, MRzero and KomaMRI each use a different γ/2π; a
single constant makes Pulseq round trips exact).
"""

from __future__ import annotations

#: γ/2π of the proton (¹H) [Hz/T].
#: Source: CODATA 2018 recommended value 42.577 478 518(18) MHz/T (NIST SP 961).
GAMMA_BAR: float = 42.577478518e6

#: γ of the proton [rad/s/T].
GAMMA: float = 2.0 * 3.141592653589793 * GAMMA_BAR

#: Default Pulseq raster times [s] (Pulseq specification 1.4, [DEFINITIONS] defaults).
DEFAULT_GRADIENT_RASTER: float = 10e-6
DEFAULT_RF_RASTER: float = 1e-6
DEFAULT_ADC_RASTER: float = 100e-9
DEFAULT_BLOCK_RASTER: float = 10e-6
