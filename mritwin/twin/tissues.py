"""Tissue library."""

from __future__ import annotations

__all__ = ["tissue_parameters"]


def tissue_parameters(name: str, b0: float = 3.0) -> dict:
    """Tissue parameters at field b0 [T]."""
    raise NotImplementedError("tissue_parameters is not implemented yet")
