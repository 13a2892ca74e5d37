"""Parameterized clinical sequences (`mritwin.sequences`).

Every builder takes protocol parameters in SI units (flip angles in rad, or in degrees
via ``flip_angle_deg``) and an explicit `mritwin.Scanner`, checks them against the
scanner's limits (``ValueError`` saying what is possible), and returns a
`mritwin.Sequence` carrying the Pulseq labels a reconstruction needs and
``definitions`` (``Name``, ``FOV``, ``MatrixSize``, ``TE``, ``TR``, ...). See
``docs/sequences.md``.
"""

from .gre import gre as gre, multi_echo_gre as multi_echo_gre
