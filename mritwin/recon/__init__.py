"""Image reconstruction: Cartesian FFT (2D, multi-slice, 3D, EPI, partial Fourier),
non-Cartesian NUFFT, coil combination."""

from .coils import (
    combine_rss as combine_rss,
    combine_sensitivity as combine_sensitivity,
    estimate_sensitivities as estimate_sensitivities,
)
from .image import Image as Image
from .nufft import nufft_adjoint as nufft_adjoint, pipe_dcf as pipe_dcf
from .reconstruct import reconstruct as reconstruct
