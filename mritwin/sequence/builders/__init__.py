"""Parameterized clinical sequences (`mritwin.sequences`).

Every builder takes protocol parameters in SI units (flip angles in rad, or in degrees
via ``flip_angle_deg``) and an explicit `mritwin.Scanner`, checks them against the
scanner's limits (``ValueError`` saying what is possible), and returns a
`mritwin.Sequence` carrying the Pulseq labels a reconstruction needs and
``definitions`` (``Name``, ``FOV``, ``MatrixSize``, ``TE``, ``TR``, ...). See
``docs/sequences.md``.
"""

from ..timing import minimum_timing as minimum_timing
from .bssfp import bssfp as bssfp
from .epi import b_values as b_values, dwi as dwi, epi as epi, stejskal_tanner_b as stejskal_tanner_b
from .gre import gre as gre, multi_echo_gre as multi_echo_gre
from .mprage import mprage as mprage
from .noncart import radial as radial, spiral as spiral, spiral_waveform as spiral_waveform
from .se import (
    flair as flair,
    flair_null_ti as flair_null_ti,
    inversion_recovery as inversion_recovery,
    spin_echo as spin_echo,
    tse as tse,
)

__all__ = [
    "gre", "multi_echo_gre", "spin_echo", "tse", "inversion_recovery", "flair", "flair_null_ti",
    "epi", "dwi", "b_values", "stejskal_tanner_b", "bssfp", "radial", "spiral", "spiral_waveform",
    "mprage", "minimum_timing",
]
