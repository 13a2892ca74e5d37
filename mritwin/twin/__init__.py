"""Digital twins: spin-wise tissue parameters."""

from .isochromats import lorentzian_offsets as lorentzian_offsets, with_isochromats as with_isochromats
from .twin import Twin as Twin
from . import phantoms as phantoms
from .labels import twin_from_labels as twin_from_labels
from .tissues import tissue_parameters as tissue_parameters
