"""Inspecting Pulseq files: TE/TR estimates, `mritwin seq-info`, sequence and k-space plots."""

from __future__ import annotations

import argparse
import json
import warnings

import matplotlib
import numpy as np
import pytest
from pulseq_corpus import corpus_path

import mritwin as mt
from mritwin.cli import seq_info
from mritwin.sequence.inspect import estimate_te_tr, summary

matplotlib.use("Agg")


def _read(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mt.read_seq(corpus_path(name))


@pytest.mark.parametrize("name,te,tr", [
    ("pypulseq_gre.seq", 5e-3, 15e-3),          # pypulseq example: TE 5 ms, TR 15 ms
    ("pypulseq_se.seq", 20e-3, 500e-3),
    ("pypulseq_gre_multiecho.seq", 4e-3, 25e-3),
    ("jemris_gre_v140.seq", 8e-3, 50e-3),       # 1.4.0, RF use undefined: classified by flip
])
def test_te_tr_estimates(name, te, tr):
    r = estimate_te_tr(_read(name))
    assert r["te"] == pytest.approx(te, abs=20e-6)
    assert r["tr"] == pytest.approx(tr, abs=20e-6)


def test_multi_echo_lists_its_echoes():
    r = estimate_te_tr(_read("pypulseq_gre_multiecho.seq"))
    assert len(r["echo_times"]) >= 4 and r["echo_times"][0] == pytest.approx(4e-3, abs=20e-6)


def test_no_te_tr_without_excitation_or_adc():
    r = estimate_te_tr(_read("koma_gr_trapezoidal_v151.seq"))
    assert r["te"] is None and r["tr"] is None and r["n_excitations"] == 0


def _cli(argv):
    ap = argparse.ArgumentParser(prog="mritwin")
    sub = ap.add_subparsers()
    seq_info.add_parser(sub)
    args = ap.parse_args(argv)
    return args.func(args)


def test_seq_info_prints_summary(capsys):
    path = corpus_path("pypulseq_gre.seq")
    assert _cli(["seq-info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "duration        0.480000 s" in out and "blocks          160" in out
    assert "ADC samples     1024" in out and "TE              5.000 ms" in out
    assert "TR              15.000 ms" in out and "Name" in out
    assert _cli(["seq-info", "--json", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_blocks"] == 160 and d["definitions"]["FOV"] == [0.256, 0.256, 0.005]
    assert d == {**d, **{k: v for k, v in summary(_read("pypulseq_gre.seq")).items()
                         if k not in ("definitions",)}}


def test_seq_info_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert _cli(["seq-info", str(tmp_path / "missing.seq")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.seq" in err and "Traceback" not in err
    bad = tmp_path / "bad.seq"
    bad.write_text("[VERSION]\nmajor 1\nminor 4\nrevision 1\n[BLOCKS]\n1 2 3\n")
    assert _cli(["seq-info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mritwin seq-info: error: ") and "bad.seq:6: [BLOCKS]" in err
    assert _cli(["seq-info", str(tmp_path)]) == 2  # a directory
    capsys.readouterr()


def test_seq_info_refocusing_threshold(tmp_path, capsys):
    """A 1.4.1 file of 91 degree excitations: refocusing under the toolboxes' 90.01 rule,
    excitations with --refocusing-threshold 135; a bad value exits 2 with one line."""
    rf = mt.make_block_pulse(np.radians(91.0), 0.2e-3, use="excitation")
    adc = mt.make_adc(16, dwell=10e-6)
    seq = mt.Sequence([mt.Block(rf), mt.Block(adc=adc), mt.Block(duration=5e-3)] * 3)
    path = tmp_path / "v141.seq"
    mt.write_seq(seq, path, version="1.4.1")
    assert _cli(["seq-info", str(path)]) == 0
    assert "RF pulses       3 (0 excitations)" in capsys.readouterr().out
    assert _cli(["seq-info", "--refocusing-threshold", "135", str(path)]) == 0
    assert "RF pulses       3 (3 excitations)" in capsys.readouterr().out
    assert _cli(["seq-info", "--refocusing-threshold", "-1", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refocusing_threshold_deg must be" in err


def test_plot_sequence_and_kspace():
    from mritwin.plot.sequence import plot_kspace, plot_sequence, sequence_waveforms

    seq = _read("pypulseq_gre.seq")
    fig = plot_sequence(seq, time_range=(0.0, 0.03), show_blocks=True, title="gre")
    assert len(fig.axes) == 6
    w = sequence_waveforms(seq, (0.0, 0.015))
    assert len(w["rf"]) == 1 and w["adc"].size == 32
    assert np.nanmax(np.abs(w["gx"][1])) > 0
    with pytest.raises(ValueError, match="time_range"):
        plot_sequence(seq, time_range=(0.01, 0.0))
    fig2 = plot_kspace(seq)
    assert fig2.axes[0].get_xlabel() == "kx [1/m]"
    fig3 = plot_kspace(_read("koma_spiral_v151.seq"), projection="3d")
    assert fig3.axes
    import matplotlib.pyplot as plt

    plt.close("all")
