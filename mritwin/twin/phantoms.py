"""Built-in phantoms (no downloads)."""

from __future__ import annotations

__all__ = ["brain", "shepp_logan"]


def brain(dims: int = 2, **kwargs):
    """Segmented brain-like twin."""
    raise NotImplementedError("phantoms.brain is not implemented yet")


def shepp_logan(n: int = 64, **kwargs):
    """MR Shepp-Logan twin."""
    raise NotImplementedError("phantoms.shepp_logan is not implemented yet")
