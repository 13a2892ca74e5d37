"""Reading the real Pulseq corpus (../shared/data/seq): every file, against ground truth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pulseq_corpus import corpus_files, corpus_path, manifest

import mritwin as mt
from mritwin.constants import GAMMA_BAR
from mritwin.sequence.events import ArbGrad, RFShim, Rotation

FILES = corpus_files()
MANIFEST = manifest()


def _read(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mt.read_seq(corpus_path(name), **kw)


@pytest.mark.parametrize("name", FILES)
def test_every_corpus_file_is_read_and_matches_ground_truth(name):
    seq = _read(name)
    assert seq.n_blocks > 0
    assert np.isfinite(seq.duration)
    row = MANIFEST.get(name)
    if row is None or row["n_blocks"] == "":
        # no pypulseq ground truth: see test_files_pypulseq_cannot_read; the file's
        # own TotalDuration (when present) must still agree
        total = seq.definitions.get("TotalDuration")
        if isinstance(total, float) and total > 0:
            assert seq.duration == pytest.approx(total, abs=1e-6)
        return
    assert seq.n_blocks == int(row["n_blocks"])
    assert abs(seq.duration - float(row["duration_s"])) <= 1e-6
    assert seq.n_adc_samples == int(row["n_adc_samples"])
    assert seq.n_rf == int(row["n_rf"])
    if row["def_total_duration"] not in ("", "0"):
        assert abs(seq.duration - float(row["def_total_duration"])) <= 1e-6


@pytest.mark.parametrize("name", FILES)
def test_blocks_share_event_objects_by_id(name):
    """Blocks that use the same Pulseq event id share one Python event object."""
    seq = _read(name)
    n_rf_objects = len({id(b.rf) for b in seq.blocks if b.rf is not None})
    n_adc_objects = len({id(b.adc) for b in seq.blocks if b.adc is not None})
    text = corpus_path(name).read_text()
    # never more objects than table rows
    assert n_rf_objects <= max(1, text.count("\n")) and n_adc_objects <= text.count("\n")
    if seq.n_rf > 1:
        assert n_rf_objects <= seq.n_rf


# -- the eight files pypulseq 1.5 fails on (MANIFEST 'error' column) -------------------
def test_pypulseq_failures_are_the_documented_eight():
    if not MANIFEST:
        pytest.skip("MANIFEST.tsv not found")
    failing = sorted(n for n, r in MANIFEST.items() if r["error"])
    assert failing == sorted([
        "koma_gr_time_shaped_v141.seq", "koma_rotation_radial_tiny_v151.seq",
        "koma_spiral_v131.seq", "koma_spiral_v151.seq", "koma_unknown_ext_v150.seq",
        "mrzero_flash_pTx_CP_v139.seq", "pulseqmatlab_make_radial_v151.seq",
        "pulseqrs_grappa_acs_v146.seq"])


def test_gr_time_shaped_v141_where_pypulseq_hangs():
    """pypulseq loops forever (no blank line after the last shape). We read it quickly,
    and it is the same sequence as its 1.5.1 twin, which pypulseq reads."""
    seq = _read("koma_gr_time_shaped_v141.seq")
    twin = _read("koma_gr_time_shaped_v151.seq")
    assert seq.n_blocks == 1 and seq.duration == pytest.approx(180e-6, abs=1e-12)
    gx = seq.blocks[0].gx
    assert isinstance(gx, ArbGrad) and gx.time is not None and len(gx.time) == 10
    assert float(gx.amplitude) == pytest.approx(1257918.64134 / GAMMA_BAR, rel=1e-12)
    assert np.allclose(np.asarray(gx.time), np.array([0, 1, 3, 6, 7, 9, 12, 13, 15, 18]) * 10e-6)
    t1, w1 = gx.waveform()
    t2, w2 = twin.blocks[0].gx.waveform()
    assert np.allclose(t1, t2) and np.allclose(w1, w2, atol=1e-6 * np.abs(w1).max())


@pytest.mark.parametrize("name", ["koma_rotation_radial_tiny_v151.seq",
                                  "pulseqmatlab_make_radial_v151.seq"])
def test_rotation_extension(name):
    """pypulseq 1.5.0 does not know the ROTATIONS extension; we read the quaternions and
    apply them: a rotated radial spoke points along the rotated readout axis."""
    seq = _read(name)
    rots = [b.rotation for b in seq.blocks if b.rotation is not None]
    assert rots and all(isinstance(r, Rotation) for r in rots)
    for r in rots:
        assert np.allclose(r.matrix @ r.matrix.T, np.eye(3), atol=1e-9)
    if name.startswith("koma"):
        assert seq.definitions["RequiredExtensions"] == "ROTATIONS"
        # 5 spokes of 8 samples, rotated by 0, 45, 90, 45, 0 degrees about z
        assert (seq.n_blocks, seq.n_adc_samples) == (5, 40)
        assert seq.duration == pytest.approx(5 * 400e-6, abs=1e-12)
        k = seq.kspace().reshape(5, 8, 3)
        for spoke, deg in zip(k, (0, 45, 90, 45, 0)):
            direction = spoke[-1] - spoke[0]
            ang = np.degrees(np.arctan2(direction[1], direction[0]))
            assert ang == pytest.approx(deg, abs=1e-3)
    else:
        assert seq.duration == pytest.approx(0.01098, abs=1e-9)
        assert seq.n_rf == 6


def test_spiral_v131_equals_its_v141_version():
    """pypulseq raises a TypeError on this 1.3.1 file; its 1.4.1 re-export (which pypulseq
    reads: 4 blocks, 61.38 ms, 28000 ADC samples, 2 RF) gives the same sequence."""
    old = _read("koma_spiral_v131.seq")
    new = _read("koma_spiral_v141.seq")
    assert (old.n_blocks, old.n_adc_samples, old.n_rf) == (4, 28000, 2)
    assert old.duration == pytest.approx(new.duration, abs=1e-9)
    # same spiral readouts (the two exports differ slightly in the RF: 3030 vs 3000
    # samples, which moves the excitation centre by 15 us)
    k_old, k_new = old.kspace(), new.kspace()
    assert np.allclose(k_old, k_new, atol=5e-3 * np.abs(k_new).max())
    g_old, g_new = old.blocks[2].gx, new.blocks[2].gx
    assert np.allclose(g_old.waveform()[1], g_new.waveform()[1])


def test_spiral_v151_half_raster_time_shape():
    """pypulseq fails (KeyError -1) on the 1.5.1 'time_shape_id -1' (oversampled)
    gradients. We read them as samples at (k+1)*raster/2 with first/last at the edges;
    the sequence duration equals the file's TotalDuration and the waveforms are
    continuous with the following block's gradients."""
    seq = _read("koma_spiral_v151.seq")
    assert seq.duration == pytest.approx(0.18676, abs=1e-9)
    assert seq.n_adc_samples == 4 * 13000
    n_checked = 0
    for i, b in enumerate(seq.blocks[:-1]):
        for ch in ("gx", "gy"):
            g = getattr(b, ch)
            if isinstance(g, ArbGrad) and g.time is not None and len(g.time) > 100:
                t = np.asarray(g.time) / 10e-6
                assert t[0] == 0 and np.allclose(np.diff(t[1:-1]), 0.5)
                nxt = getattr(seq.blocks[i + 1], ch)
                _, w = g.waveform()
                _, w2 = nxt.waveform()
                assert float(w[-1]) == pytest.approx(float(w2[0]), rel=1e-5)
                n_checked += 1
    assert n_checked >= 4


def test_unknown_extension_is_skipped_with_a_warning():
    """pypulseq raises on the unknown extension; we warn and skip it (it is not in
    RequiredExtensions)."""
    with pytest.warns(UserWarning, match="unsupported Pulseq extension") as rec:
        seq = mt.read_seq(corpus_path("koma_unknown_ext_v150.seq"))
    names = sorted({str(w.message).rsplit(" ", 1)[-1] for w in rec})
    assert names == ["UNKNOWN1", "UNKNOWN2"]
    assert seq.n_blocks == 6 and seq.duration == 0.0


def test_ptx_rf_shim_columns():
    """pypulseq rejects the extra 'shim_mag_ID shim_phase_ID' RF columns of MRzero's pTx
    export; we keep them as an `RFShim` (8 channels) on each RF block; the duration is
    the file's 'Total duration' (a definition with a space in its name)."""
    seq = _read("mrzero_flash_pTx_CP_v139.seq")
    assert seq.duration == pytest.approx(1.42208, abs=1e-9)
    assert seq.definitions["Total"] == "duration 1.42208"
    assert (seq.n_rf, seq.n_adc_samples) == (64, 4096)
    shims = [e for b in seq.blocks if b.rf is not None for e in b.extensions]
    assert len(shims) == 64 and all(isinstance(s, RFShim) for s in shims)
    assert len(shims[0].magnitudes) == 8 and np.allclose(shims[0].magnitudes, 0.35)


def test_grappa_acs_extra_zero_shim_columns():
    """pypulseq rejects the 10-column 1.4.6 [RF] rows (two trailing zero shim ids): we
    read them, with no shim, and reproduce TotalDuration."""
    seq = _read("pulseqrs_grappa_acs_v146.seq")
    assert seq.duration == pytest.approx(seq.definitions["TotalDuration"], abs=1e-9)
    assert (seq.n_blocks, seq.n_rf, seq.n_adc_samples) == (194, 64, 4096)
    assert not any(b.extensions for b in seq.blocks)


# -- details of the format ------------------------------------------------------------
def test_units_are_si():
    seq = _read("koma_rf_time_shaped_v151.seq")
    rf = seq.blocks[0].rf
    assert float(rf.amplitude) == pytest.approx(281.633 / GAMMA_BAR)
    assert rf.center == pytest.approx(75e-6) and rf.use == "excitation"
    assert rf.time[-1] == pytest.approx(180e-6)
    # phase shape 0.5 (cycles) -> pi rad
    ph = np.angle(np.asarray(rf.shape))
    assert np.allclose(np.abs(ph[[0, 2, 3]]), np.pi)
    epi = _read("koma_epi_v131.seq")
    adc = next(b.adc for b in epi.blocks if b.adc is not None)
    assert adc.dwell == pytest.approx(adc.dwell) and adc.dwell < 1e-4


def test_pre14_rf_use_is_undefined_and_15_use_is_kept():
    assert all(b.rf.use == "undefined" for b in _read("koma_epi_v131.seq").blocks if b.rf)
    uses = {b.rf.use for b in _read("koma_spiral_v151.seq").blocks if b.rf}
    assert uses == {"saturation", "excitation"}


def test_labels_and_soft_delays():
    seq = _read("pypulseqtests_write_gre_label_softdelay_v150.seq")
    labels = [lab for b in seq.blocks for lab in b.labels]
    assert {lab.name for lab in labels} >= {"LIN", "SLC", "REV"}
    assert any(lab.increment for lab in labels) and any(not lab.increment for lab in labels)
    soft = [e for b in seq.blocks for e in b.extensions if type(e).__name__ == "SoftDelay"]
    assert {s.hint for s in soft} == {"TE", "TR"}


def test_definitions_are_parsed():
    seq = _read("pypulseq_gre.seq")
    d = seq.definitions
    assert isinstance(d["FOV"], tuple) and len(d["FOV"]) == 3
    assert isinstance(d["GradientRasterTime"], float)
    assert seq.raster("gradient") == pytest.approx(10e-6)


def test_signature_is_verified(tmp_path):
    seq_file = corpus_path("pypulseq_fid.seq")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mt.read_seq(seq_file, strict=True)  # valid signature: no warning
    bad = tmp_path / "tampered.seq"
    bad.write_text(seq_file.read_text().replace("Name fid", "Name fix", 1)
                   if "Name fid" in seq_file.read_text()
                   else seq_file.read_text().replace("[BLOCKS]", "[BLOCKS]\n# edited", 1))
    with pytest.warns(UserWarning, match="hash mismatch"):
        mt.read_seq(bad)
    with pytest.raises(ValueError, match=r"tampered.seq:\d+: \[SIGNATURE\] md5 hash mismatch"):
        mt.read_seq(bad, strict=True)


@pytest.mark.parametrize("algo", ["sha1", "sha256"])
def test_other_signature_types(tmp_path, algo):
    import hashlib

    text = corpus_path("pypulseq_fid.seq").read_text()
    body = text[: text.index("\n[SIGNATURE]")]
    digest = hashlib.new(algo, body.encode()).hexdigest()
    p = tmp_path / "signed.seq"
    p.write_text(body + f"\n[SIGNATURE]\nType {algo}\nHash {digest}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mt.read_seq(p, strict=True)
    p.write_text(body + f"\n[SIGNATURE]\nType {algo}\nHash {'0' * len(digest)}\n")
    with pytest.raises(ValueError, match=rf"signed.seq:\d+: \[SIGNATURE\] {algo} hash mismatch"):
        mt.read_seq(p, strict=True)


@pytest.mark.parametrize("extra", ["Hash 0123 trailing", "Comment unsigned text", "Type md5"])
def test_unexpected_signature_rows_warn_or_fail_in_strict_mode(tmp_path, extra):
    """Rows after the signed part of the file other than one 'Type' and one 'Hash' are not
    covered by the hash: named with their line, not silently dropped."""
    import hashlib

    text = corpus_path("pypulseq_fid.seq").read_text()
    body = text[: text.index("\n[SIGNATURE]")]
    digest = hashlib.md5(body.encode()).hexdigest()
    p = tmp_path / "extra.seq"
    p.write_text(body + f"\n[SIGNATURE]\nType md5\nHash {digest}\n{extra}\n")
    n_line = body.count("\n") + 5
    with pytest.warns(UserWarning, match=rf"extra.seq:{n_line}: \[SIGNATURE\] unexpected row"):
        seq = mt.read_seq(p)
    assert seq.n_blocks == 3
    with pytest.raises(ValueError, match=rf"extra.seq:{n_line}: \[SIGNATURE\] unexpected row"):
        mt.read_seq(p, strict=True)


def test_unknown_section_warns_or_fails_in_strict_mode(tmp_path):
    text = corpus_path("pypulseq_fid.seq").read_text()
    text = text[: text.index("\n[SIGNATURE]")] + "\n[FOO]\n1 2 3\n"
    p = tmp_path / "foo.seq"
    p.write_text(text)
    with pytest.warns(UserWarning, match=r"foo.seq:\d+: unknown section \[FOO\]"):
        seq = mt.read_seq(p)
    assert seq.n_blocks == 3
    with pytest.raises(ValueError, match=r"unknown section \[FOO\]"):
        mt.read_seq(p, strict=True)


def test_adc_phase_modulation_and_ppm_round_trip(tmp_path):
    """1.5 ADC phase shapes (rad) and ppm offsets survive write -> read."""
    adc = mt.ADC(8, 10e-6, delay=20e-6, phase_offset=0.3, freq_ppm=-3.45, phase_ppm=0.1,
                 phase_modulation=np.linspace(0, 1, 8))
    rf = mt.RF(1e-6, np.ones(10, complex), delay=100e-6, freq_ppm=1.5, use="saturation")
    seq = mt.Sequence([mt.Block(rf=rf, duration=200e-6), mt.Block(adc=adc, duration=200e-6)])
    p = tmp_path / "ppm.seq"
    mt.write_seq(seq, p)
    back = mt.read_seq(p, strict=True)
    a = back.blocks[1].adc
    assert np.allclose(np.asarray(a.phase_modulation), np.linspace(0, 1, 8), atol=1e-7)
    assert (a.freq_ppm, a.phase_ppm, float(a.phase_offset)) == (-3.45, 0.1, 0.3)
    r = back.blocks[0].rf
    assert r.freq_ppm == 1.5 and r.use == "saturation"


def test_triggers_labels_and_soft_delays_of_matlab_epi():
    seq = _read("pulseqmatlab_epi_rs_v151.seq")
    trig = [e for b in seq.blocks for e in b.extensions if type(e).__name__ == "Trigger"]
    # "1 1 1 0 100": type 1, channel 1, delay 0, duration 100 us
    assert trig and (trig[0].trigger_type, trig[0].channel) == (1, 1)
    assert trig[0].delay == 0.0 and trig[0].duration == pytest.approx(100e-6)
    assert any(b.labels for b in seq.blocks)
