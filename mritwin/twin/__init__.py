"""Digital twins: spin-wise tissue parameters, the tissue library, builders from label
and partial-volume maps, built-in phantoms, field/coil maps, and per-spin dynamics."""

from . import dynamics as dynamics, fields as fields, phantoms as phantoms
from .dynamics import (
    CardiacWaveform as CardiacWaveform,
    ContrastAgent as ContrastAgent,
    DisplacementField as DisplacementField,
    Flow as Flow,
    RandomWalk as RandomWalk,
    RespiratoryWaveform as RespiratoryWaveform,
    SpinPaths as SpinPaths,
    parker_aif as parker_aif,
    tofts as tofts,
)
from .fields import (
    birdcage_sensitivities as birdcage_sensitivities,
    cylinder_field as cylinder_field,
    loop_coil_sensitivities as loop_coil_sensitivities,
    sample_map as sample_map,
    sphere_field as sphere_field,
    with_b0_map as with_b0_map,
    with_b1_map as with_b1_map,
    with_coil_sensitivities as with_coil_sensitivities,
    with_off_resonance as with_off_resonance,
)
from .isochromats import lorentzian_offsets as lorentzian_offsets, with_isochromats as with_isochromats
from .labels import (
    BRAINWEB_LABELS as BRAINWEB_LABELS,
    FAST_LABELS as FAST_LABELS,
    FAST_PVE_CLASSES as FAST_PVE_CLASSES,
    FREESURFER_LABELS as FREESURFER_LABELS,
    MAPPINGS as MAPPINGS,
    resample_fractions as resample_fractions,
    twin_from_labels as twin_from_labels,
)
from .patient import PatientContext as PatientContext
from .tissues import (
    DEFAULT_LIBRARY as DEFAULT_LIBRARY,
    FAT_SPECTRUM_HAMILTON as FAT_SPECTRUM_HAMILTON,
    SOURCES as SOURCES,
    Tissue as Tissue,
    TissueLibrary as TissueLibrary,
    tissue_parameters as tissue_parameters,
)
from .twin import Twin as Twin
