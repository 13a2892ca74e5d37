"""Shared test configuration: float64 JAX for validation against closed forms."""

import os
import pathlib

import jax
import matplotlib
import pytest

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
SEQ_DIR = SHARED / "data" / "seq"


@pytest.fixture
def seq_dir():
    """The Pulseq corpus beside the checkout (skips when absent, e.g. a user's fresh clone)."""
    if not SEQ_DIR.is_dir():
        pytest.skip(f"Pulseq corpus not found at {SEQ_DIR} (it lives in ../shared beside the checkout)")
    return SEQ_DIR


os.environ.setdefault("MRITWIN_TEST", "1")
