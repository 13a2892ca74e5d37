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
from .epi import b_values as b_values
from .epi import dwi as dwi
from .epi import epi as epi
from .epi import stejskal_tanner_b as stejskal_tanner_b
from .gre import gre as gre
from .gre import multi_echo_gre as multi_echo_gre
from .mprage import mprage as mprage
from .noncart import radial as radial
from .noncart import spiral as spiral
from .noncart import spiral_waveform as spiral_waveform
from .se import (
    flair as flair,
)
from .se import (
    flair_null_ti as flair_null_ti,
)
from .se import (
    inversion_recovery as inversion_recovery,
)
from .se import (
    spin_echo as spin_echo,
)
from .se import (
    tse as tse,
)

__all__ = [
    "gre", "multi_echo_gre", "spin_echo", "tse", "inversion_recovery", "flair", "flair_null_ti",
    "epi", "dwi", "b_values", "stejskal_tanner_b", "bssfp", "radial", "spiral", "spiral_waveform",
    "mprage", "minimum_timing",
]
