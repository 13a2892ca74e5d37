"""One small case of every builder (`mritwin.sequences`), for tests over all of them."""

from __future__ import annotations

import mritwin as mt
from mritwin.sequence import builders as B

SC = mt.Scanner(b0=3.0)

CASES = {  # name: (builder, its keyword arguments but the scanner)
    "gre": (B.gre, dict(fov=0.2, matrix=16, flip_angle_deg=15, slice_thickness=5e-3)),
    "gre3d": (B.gre, dict(fov=(0.2, 0.2, 0.1), matrix=(16, 16, 4), dims=3, flip_angle_deg=10, slice_thickness=0.1)),
    "multi_echo_gre": (B.multi_echo_gre, dict(fov=0.2, matrix=16, n_echoes=2, flip_angle_deg=15,
                                              slice_thickness=5e-3)),
    "spin_echo": (B.spin_echo, dict(fov=0.2, matrix=16, te=20e-3, tr=0.3, slice_thickness=5e-3)),
    "tse": (B.tse, dict(fov=0.2, matrix=16, etl=4, te=40e-3, tr=1.0, slice_thickness=5e-3)),
    "flair": (B.flair, dict(fov=0.2, matrix=16, etl=8, te=80e-3, tr=9.0, slice_thickness=5e-3)),
    "epi": (B.epi, dict(fov=0.2, matrix=16, slice_thickness=5e-3)),
    "dwi": (B.dwi, dict(fov=0.2, matrix=16, directions=[(0, 0, 1)], slice_thickness=5e-3)),
    "bssfp": (B.bssfp, dict(fov=0.2, matrix=16, flip_angle_deg=40, slice_thickness=5e-3)),
    "radial": (B.radial, dict(fov=0.2, matrix=16, n_spokes=8, flip_angle_deg=10, slice_thickness=5e-3)),
    "spiral": (B.spiral, dict(fov=0.2, matrix=16, n_interleaves=2, flip_angle_deg=10, slice_thickness=5e-3)),
    "mprage": (B.mprage, dict(fov=(0.2, 0.2, 0.16), matrix=(16, 4, 4), ti=0.9, tr=2.3, flip_angle_deg=9,
                              n_dummy=0)),
}


def build(name: str, **overrides) -> mt.Sequence:
    """The case ``name`` with ``overrides`` of its keyword arguments."""
    builder, kwargs = CASES[name]
    return builder(scanner=SC, **{**kwargs, **overrides})
