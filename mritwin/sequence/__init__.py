"""Pulse sequences: events, blocks, discretization (host side, SI)."""

from .discretize import DiscreteSequence as DiscreteSequence, discretize as discretize
from .events import (
    ADC as ADC,
    RF as RF,
    ArbGrad as ArbGrad,
    Delay as Delay,
    Label as Label,
    RFShim as RFShim,
    Rotation as Rotation,
    SoftDelay as SoftDelay,
    TrapGrad as TrapGrad,
    Trigger as Trigger,
)
from .make import (
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
from .scanner import Scanner as Scanner
from .sequence import Block as Block, Sequence as Sequence
