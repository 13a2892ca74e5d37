"""Writing Pulseq: read -> write -> read round trips of the corpus, pypulseq reads our files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pulseq_corpus import corpus_files, corpus_path, sequence_diff

import mritwin as mt
from mritwin.sequence.events import Label

FILES = corpus_files()

# pypulseq 1.5.0 cannot read these features at all (its own limitation, see MANIFEST):
# the ROTATIONS and RF_SHIMS extensions and 1.5.1 half-raster gradients (time_shape_id -1)
PYPULSEQ_CANNOT = ("extension ROTATIONS", "extension RF_SHIMS", " -1 ")


def _read(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mt.read_seq(path, **kw)


def _pypulseq_reads(path):
    pp = pytest.importorskip("pypulseq")
    s = pp.Sequence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.read(str(path))
    return s


def _pypulseq_can(path, seq) -> bool:
    text = path.read_text()
    if "extension ROTATIONS" in text or "extension RF_SHIMS" in text:
        return False
    return not any(isinstance(g, mt.ArbGrad) and g.time is not None and len(g.time) > 2
                   and np.allclose(np.diff(np.asarray(g.time)[1:-1]), seq.raster("gradient") / 2)
                   for b in seq.blocks for g in b.gradients)


@pytest.mark.parametrize("name", FILES)
def test_round_trip_corpus(name, tmp_path):
    seq = _read(corpus_path(name))
    out = tmp_path / "out.seq"
    mt.write_seq(seq, out)
    back = _read(out)
    assert sequence_diff(seq, back) is None, sequence_diff(seq, back)
    if _pypulseq_can(out, seq):
        pp_seq = _pypulseq_reads(out)
        assert len(pp_seq.block_events) == seq.n_blocks
        assert abs(sum(pp_seq.block_durations.values()) - seq.duration) < 1e-6


@pytest.mark.parametrize("name", ["pypulseq_gre.seq", "koma_epi_v131.seq", "pypulseqtests_trufi_v142.seq",
                                  "koma_spiral_v141.seq",
                                  "koma_gre_lbl_v131.seq"])
def test_version_14_output(name, tmp_path):
    """1.4.1 output: pypulseq reads it, we read it back to the same events except the
    1.5-only fields (RF centre/use are recomputed, gradient first/last inferred)."""
    seq = _read(corpus_path(name))
    out = tmp_path / "out14.seq"
    mt.write_seq(seq, out, version="1.4.1")
    text = out.read_text()
    assert "major 1\nminor 4\nrevision 1" in text
    back = _read(out)
    assert back.n_blocks == seq.n_blocks
    assert back.duration == pytest.approx(seq.duration, abs=1e-9)
    assert back.n_adc_samples == seq.n_adc_samples
    k1, k2 = seq.kspace(), back.kspace()
    assert np.allclose(k1, k2, atol=1e-3 * max(1.0, np.abs(k1).max()))
    pp_seq = _pypulseq_reads(out)
    assert len(pp_seq.block_events) == seq.n_blocks


def test_version_14_rejects_15_only_features(tmp_path):
    seq = _read(corpus_path("pypulseqtests_write_gre_label_softdelay_v150.seq"))
    with pytest.raises(ValueError, match="soft delays cannot be stored in Pulseq 1.4"):
        mt.write_seq(seq, tmp_path / "x.seq", version="1.4.1")
    with pytest.raises(ValueError, match="version must be"):
        mt.write_seq(seq, tmp_path / "x.seq", version="1.3.1")


def _built_sequence():
    sc = mt.Scanner()
    rf, gz, gzr = mt.make_sinc_pulse(np.pi / 6, 2e-3, slice_thickness=5e-3, scanner=sc)
    hard = mt.make_block_pulse(np.pi, 500e-6, use="refocusing", scanner=sc)
    gx = mt.make_trapezoid("x", flat_area=64 / 0.2, flat_time=3.2e-3, scanner=sc)
    adc = mt.make_adc(64, duration=3.2e-3, delay=gx.rise_time, scanner=sc)
    spiral = mt.make_arbitrary_grad("y", 1e-3 * np.sin(np.linspace(0, np.pi, 50)), scanner=sc)
    ext = mt.make_extended_trapezoid("z", [0, 1e-4, 3e-4], [0, 5e-3, 0])
    blocks = [
        mt.Block(rf=rf, gz=gz, labels=[Label("LIN", 0)]),
        mt.Block(gz=gzr),
        mt.Block(rf=hard),
        mt.Block(gx=gx, adc=adc, gy=None, labels=[Label("LIN", 1, True)]),
        mt.Block(gy=spiral, gz=ext),
        mt.Block(duration=1e-3),
    ]
    return mt.Sequence(blocks, {"Name": "built", "FOV": (0.2, 0.2, 0.005)})


def test_write_sequence_built_in_code(tmp_path):
    """Events made with make_* (incl. a block pulse held over its whole duration) give a
    valid file: pypulseq reads it and we read back the same physics."""
    seq = _built_sequence()
    out = tmp_path / "built.seq"
    md5 = mt.write_seq(seq, out)
    assert len(md5) == 32 and f"Hash {md5}" in out.read_text()
    back = mt.read_seq(out, strict=True)  # signature verifies
    assert back.n_blocks == seq.n_blocks
    assert back.duration == pytest.approx(seq.duration, abs=1e-12)
    assert back.definitions["Name"] == "built"
    # the 500 us block pulse is written on the 1 us RF raster: same flip angle
    assert back.blocks[2].rf.n_samples == 500
    assert back.blocks[2].rf.flip_angle() == pytest.approx(np.pi, rel=1e-6)
    assert back.blocks[0].rf.flip_angle() == pytest.approx(np.pi / 6, rel=1e-6)
    assert back.blocks[3].labels == (Label("LIN", 1, True),)
    assert np.allclose(back.kspace(), seq.kspace(), atol=1e-6 * np.abs(seq.kspace()).max())
    for i in (4,):
        for ch in ("gy", "gz"):
            t1, w1 = getattr(seq.blocks[i], ch).waveform()
            t2, w2 = getattr(back.blocks[i], ch).waveform()
            assert np.allclose(t1, t2) and np.allclose(w1, w2, atol=1e-9)
    pp_seq = _pypulseq_reads(out)
    assert len(pp_seq.block_events) == seq.n_blocks


def test_off_raster_block_is_rejected(tmp_path):
    seq = mt.Sequence([mt.Block(duration=12.5e-6)])
    with pytest.raises(ValueError, match="block 0: duration 12.5000 us is not a multiple of the block raster"):
        mt.write_seq(seq, tmp_path / "x.seq")


def test_shared_events_are_written_once(tmp_path):
    seq = _read(corpus_path("pulseqmatlab_gre2d_pTxSingleChan_8Tx_v141.seq"))
    out = tmp_path / "big.seq"
    mt.write_seq(seq, out)
    text = out.read_text()
    n_rf_rows = text.split("[RF]\n")[1].split("\n\n")[0].count("\n") + 1
    assert n_rf_rows == len({id(b.rf) for b in seq.blocks if b.rf is not None})
