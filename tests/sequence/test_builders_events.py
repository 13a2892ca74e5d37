"""Builders share equal trapezoids: one object per distinct trapezoid in a sequence, so
the tables grouped by event object (`mritwin.sequence.timeline`) hold each once."""

from __future__ import annotations

import pytest
from _builder_cases import CASES, build

import mritwin as mt
from mritwin.sequence import builders as B
from mritwin.sequence.builders import _common as C
from mritwin.sequence.timeline import _group_by_event


def _key(g):
    return (type(g).__name__, g.channel, float(g.amplitude), g.rise_time, g.flat_time, g.fall_time, g.delay)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_distinct_trapezoid_of_a_built_sequence_is_one_object(name):
    seq = build(name)
    traps = {id(g): g for b in seq.blocks for g in b.gradients if isinstance(g, mt.TrapGrad)}
    keys = [_key(g) for g in traps.values()]
    assert len(set(keys)) == len(keys), f"{name}: equal trapezoids as separate objects"


def test_a_gre_has_its_read_and_slice_lobes_once_and_a_phase_lobe_per_line():
    seq = build("gre", matrix=32)
    counts = {a: len(_group_by_event(seq, a)) for a in ("gx", "gy", "gz")}
    # read: prephaser, readout, spoiler; slice: select, rephaser, spoiler; phase: each
    # line's encoding lobe and its rewinder (the spoiler's timing): two per line
    assert counts == {"gx": 3, "gy": 64, "gz": 3}


def test_trapezoids_made_outside_a_builder_are_each_their_own_object():
    a = C.trap("x", 1e-3, 1e-4, 1e-3, 1e-4)
    assert a is not C.trap("x", 1e-3, 1e-4, 1e-3, 1e-4)
    # two builds share nothing: the memo lives for one builder call
    s1, s2 = (B.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=15, slice_thickness=5e-3)
              for _ in range(2))
    assert s1.blocks[1].gx is not s2.blocks[1].gx
    assert _key(s1.blocks[1].gx) == _key(s2.blocks[1].gx)
