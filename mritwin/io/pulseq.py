"""Pulseq .seq reading and writing."""

from __future__ import annotations

__all__ = ["read_seq", "write_seq"]


def read_seq(path, *, strict: bool = False):
    """Read a Pulseq file into a `mritwin.Sequence`."""
    raise NotImplementedError("read_seq is not implemented yet")


def write_seq(seq, path, *, version: str = "1.5.1"):
    """Write a `mritwin.Sequence` as a Pulseq file."""
    raise NotImplementedError("write_seq is not implemented yet")
