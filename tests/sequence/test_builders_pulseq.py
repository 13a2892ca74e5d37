"""Builders -> Pulseq file -> pypulseq: same duration and ADC count; pypulseq's timing check passes.

Needs `mritwin.write_seq` (another engineer's module); skipped while it is a stub.
"""

from __future__ import annotations

import numpy as np
import pytest
from _builder_cases import CASES, SC, build

import mritwin as mt

pp = pytest.importorskip("pypulseq")


def _write(seq, path):
    try:
        mt.write_seq(seq, str(path))
    except NotImplementedError as e:
        pytest.skip(f"mritwin.write_seq is not implemented yet: {e}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_pypulseq_reads_builder_output(name, tmp_path):
    seq = build(name)
    path = tmp_path / f"{name}.seq"
    _write(seq, path)
    system = pp.Opts(max_grad=SC.max_grad * 1e3, grad_unit="mT/m", max_slew=SC.max_slew, slew_unit="T/m/s",
                     rf_ringdown_time=SC.rf_ringdown_time, rf_dead_time=SC.rf_dead_time,
                     adc_dead_time=SC.adc_dead_time, gamma=SC.gamma_bar)
    ps = pp.Sequence(system=system)
    ps.read(str(path))
    dur, n_blocks, _ = ps.duration()
    assert dur == pytest.approx(seq.duration, abs=1e-6)
    n_adc = sum(int(ps.get_block(i).adc.num_samples) for i in ps.block_events
                if ps.get_block(i).adc is not None)
    assert n_adc == seq.n_adc_samples
    ok, report = ps.check_timing()
    assert ok, report


@pytest.mark.parametrize("name", ["gre3d", "tse", "epi", "dwi", "multi_echo_gre"])
def test_labels_survive_a_pulseq_round_trip(name, tmp_path):
    from mritwin.sequence.labels import adc_labels

    seq = build(name)
    path = tmp_path / f"{name}.seq"
    _write(seq, path)
    try:
        back = mt.read_seq(str(path))
    except NotImplementedError as e:
        pytest.skip(f"mritwin.read_seq is not implemented yet: {e}")
    a, b = adc_labels(seq), adc_labels(back)
    for k in ("LIN", "PAR", "SLC", "ECO", "REP", "SEG", "SET", "REV"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert back.duration == pytest.approx(seq.duration, abs=1e-9)
    np.testing.assert_allclose(back.kspace(), seq.kspace(), atol=1e-6 * np.abs(seq.kspace()).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_output_passes_hardware_checks(name):
    """Gradient amplitude/slew, peak B1, rasters and dead times (mritwin.sequence.checks)."""
    from mritwin.sequence.checks import check_sequence

    rep = check_sequence(build(name), SC)
    assert rep.ok, str(rep)
