"""The Bloch simulation engine."""

from .devices import use_cpu_devices as use_cpu_devices
from .engine import simulate as simulate, trace_count as trace_count
from .methods import AbstractSimMethod as AbstractSimMethod, Bloch as Bloch, NUFFTReadout as NUFFTReadout
