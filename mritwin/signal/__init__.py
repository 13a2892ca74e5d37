"""Simulated signals."""

from .signal import Signal as Signal
