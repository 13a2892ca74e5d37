"""The Bloch simulation engine."""

from .engine import simulate as simulate, trace_count as trace_count
from .methods import AbstractSimMethod as AbstractSimMethod, Bloch as Bloch, NUFFTReadout as NUFFTReadout
