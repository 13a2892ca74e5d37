"""Hardware checks: limits, rasters and dead times reported per block."""

from __future__ import annotations

import numpy as np
import pytest

import mritwin as mt
from mritwin.sequence.checks import CheckReport, Violation, check_sequence

SC = mt.Scanner(max_grad=40e-3, max_slew=150.0, max_b1=20e-6, rf_dead_time=100e-6,
                rf_ringdown_time=30e-6, adc_dead_time=10e-6)


def _ok_block():
    rf = mt.make_block_pulse(np.pi / 2, 400e-6, scanner=SC)  # 14.7 uT
    return mt.Block(rf=rf, duration=rf.delay + 400e-6 + 30e-6 + 10e-6)


def test_a_clean_sequence_passes():
    gx = mt.make_trapezoid("x", amplitude=20e-3, flat_time=1e-3, scanner=SC)
    adc = mt.make_adc(64, dwell=10e-6, delay=20e-6, scanner=SC)
    seq = mt.Sequence([_ok_block(), mt.Block(gx=gx, adc=adc, duration=gx.duration + 10e-6)])
    rep = check_sequence(seq, SC)
    assert isinstance(rep, CheckReport) and rep.ok and len(rep) == 0
    assert str(rep) == "sequence check passed: no violations"


def test_gradient_amplitude_and_slew():
    g = mt.TrapGrad("y", 50e-3, 100e-6, 1e-3, 200e-6)  # 500 T/m/s rise, 250 fall
    seq = mt.Sequence([_ok_block(), mt.Block(gy=g), mt.Block(gy=g)])
    rep = check_sequence(seq, SC)
    by = {v.what: v for v in rep.violations}
    assert by["gy amplitude"] == Violation(1, "gy amplitude", 50e-3, 40e-3, "T/m", 2)
    assert by["gy slew (rise)"].value == pytest.approx(500.0)
    assert by["gy slew (fall)"].value == pytest.approx(250.0)
    assert "block 1: gy amplitude 50 mT/m > limit 40 mT/m (and 1 more blocks)" in str(rep)


def test_arbitrary_gradient_slew():
    w = np.array([0.0, 30e-3, 0.0])
    seq = mt.Sequence([mt.Block(gz=mt.ArbGrad("z", 1.0, w, raster=10e-6))])
    rep = check_sequence(seq, SC)
    v = next(v for v in rep if v.what == "gz slew")
    assert v.value == pytest.approx(30e-3 / 10e-6)


def test_rf_dead_ringdown_and_b1():
    rf = mt.RF(30e-6, np.ones(100, complex), delay=20e-6, raster=1e-6)
    seq = mt.Sequence([mt.Block(rf=rf, duration=130e-6)])
    rep = check_sequence(seq, SC)
    whats = {v.what: v for v in rep}
    assert whats["rf amplitude"].value == pytest.approx(30e-6)
    assert whats["rf dead time (delay)"].value == pytest.approx(20e-6)
    assert whats["rf ringdown time (after the pulse)"].value == pytest.approx(10e-6)
    assert "< limit 100 us" in str(rep)


def test_adc_and_rasters():
    adc = mt.ADC(10, 1.05e-7 * 3, delay=5e-6)
    g = mt.TrapGrad("x", 1e-3, 15e-6, 100e-6, 20e-6)
    seq = mt.Sequence([mt.Block(adc=adc, gx=g, duration=215e-6)])
    whats = {v.what for v in check_sequence(seq, SC)}
    assert {"adc dwell raster", "adc dead time (delay)", "gx rise time raster",
            "block duration raster"} <= whats


def test_corpus_file_within_its_limits():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "seq" / "pypulseq_gre.seq"
    if not p.is_file():
        pytest.skip("Pulseq corpus not found (../shared/data/seq)")
    seq = mt.read_seq(p)
    # pypulseq's gre example uses max slew 150 T/m/s ... check a stricter scanner fails
    strict = mt.Scanner(max_grad=30e-3, max_slew=100.0, rf_dead_time=0, rf_ringdown_time=0,
                        adc_dead_time=0)
    rep = check_sequence(seq, strict)
    assert not rep.ok and all(v.block >= 0 for v in rep)
    loose = mt.Scanner(max_grad=1.0, max_slew=1e4, rf_dead_time=0, rf_ringdown_time=0, adc_dead_time=0)
    assert check_sequence(seq, loose).ok
