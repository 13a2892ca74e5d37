"""mritwin: MRI digital twins and a differentiable JAX Bloch simulator.

Everything is SI (s, m, T, T/m, T/m/s, Hz, rad). See docs/conventions.md for the
rotating-frame and Fourier sign conventions.
"""

from importlib.metadata import PackageNotFoundError as _PNF, version as _version

from . import optimize as optimize
from .constants import GAMMA_BAR as GAMMA_BAR
from .io import (
    load_twin as load_twin,
    read_fhir_bundle as read_fhir_bundle,
    read_seq as read_seq,
    save_twin as save_twin,
    write_seq as write_seq,
)
from .recon import Image as Image, reconstruct as reconstruct
from .sequence import (
    ADC as ADC,
    RF as RF,
    ArbGrad as ArbGrad,
    Block as Block,
    Delay as Delay,
    DiscreteSequence as DiscreteSequence,
    Label as Label,
    Rotation as Rotation,
    Scanner as Scanner,
    Sequence as Sequence,
    TrapGrad as TrapGrad,
    builders as sequences,  # noqa: F401  (mt.sequences.gre, ...)
    discretize as discretize,
    make_adc as make_adc,
    make_arbitrary_grad as make_arbitrary_grad,
    make_arbitrary_rf as make_arbitrary_rf,
    make_block_pulse as make_block_pulse,
    make_delay as make_delay,
    make_extended_trapezoid as make_extended_trapezoid,
    make_label as make_label,
    make_sinc_pulse as make_sinc_pulse,
    make_trapezoid as make_trapezoid,
)
from .sequence.safety import (
    BodyModel as BodyModel,
    SARReport as SARReport,
    check_gradients as check_gradients,
    check_pns as check_pns,
    check_sar as check_sar,
)
from .sequence.timing import check_timing as check_timing, echo_times as echo_times
from .signal import Signal as Signal
from .signal.noise import ReceiverNoise as ReceiverNoise, add_noise as add_noise
from .simulate import (
    AbstractSimMethod as AbstractSimMethod,
    Bloch as Bloch,
    NUFFTReadout as NUFFTReadout,
    simulate as simulate,
    use_cpu_devices as use_cpu_devices,
)
from .twin import (
    DEFAULT_LIBRARY as DEFAULT_LIBRARY,
    PatientContext as PatientContext,
    Tissue as Tissue,
    TissueLibrary as TissueLibrary,
    Twin as Twin,
    dynamics as dynamics,
    lorentzian_offsets as lorentzian_offsets,
    phantoms as phantoms,
    tissue_parameters as tissue_parameters,
    twin_from_labels as twin_from_labels,
    with_b0_map as with_b0_map,
    with_b1_map as with_b1_map,
    with_coil_sensitivities as with_coil_sensitivities,
    with_isochromats as with_isochromats,
)
from .twin.dynamics import (
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
from .twin.motion import (
    AbstractMotion as AbstractMotion,
    PeriodicTranslation as PeriodicTranslation,
    RigidPath as RigidPath,
    Translation as Translation,
)

try:
    __version__ = _version("mritwin")
except _PNF:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
