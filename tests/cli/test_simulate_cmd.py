"""``mritwin simulate`` (mritwin.cli.simulate_cmd): outputs, summary, and bad input -> exit 2."""

import argparse
import json
import pathlib
import sys

import numpy as np
import pytest

import mritwin as mt
from mritwin.cli import simulate_cmd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "recon"))
from recon_helpers import gre, smooth_disk  # noqa: E402


def _parse(argv):
    parser = argparse.ArgumentParser(prog="mritwin")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    return parser.parse_args(["simulate", *argv])


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A fake .seq and twin file: read_seq / load_twin are monkeypatched to build them in code."""
    seq_file = tmp_path / "gre.seq"
    seq_file.write_text("# stands in for a Pulseq file\n")
    empty_file = tmp_path / "noadc.seq"
    empty_file.write_text("# no ADC\n")
    bad_file = tmp_path / "bad.seq"
    bad_file.write_text("garbage\n")
    twin_file = tmp_path / "twin.h5"
    twin_file.write_text("stands in for a twin file")
    twin, _ = smooth_disk(16, 0.2, sub=1)

    def fake_read_seq(path, **kw):
        name = pathlib.Path(path).name
        if name == "gre.seq":
            return gre(16, 0.2)
        if name == "noadc.seq":
            return mt.Sequence([mt.Block(duration=1e-3)])
        raise ValueError(f"{path}: line 1: not a Pulseq file")

    def fake_load_twin(path):
        if pathlib.Path(path).name == "twin.h5":
            return twin
        raise ValueError(f"{path}: not a twin file")

    monkeypatch.setattr(mt, "read_seq", fake_read_seq)
    monkeypatch.setattr(mt, "load_twin", fake_load_twin)
    monkeypatch.setattr(mt.phantoms, "disk16", lambda: twin, raising=False)
    return {"seq": str(seq_file), "noadc": str(empty_file), "bad": str(bad_file), "twin": str(twin_file)}


def test_writes_raw_image_preview_and_summary(tmp_path, files, capsys):
    out = tmp_path / "out"
    args = _parse(["--twin", files["twin"], "--seq", files["seq"], "--out", str(out),
                   "--coils", "2", "--snr", "200", "--dicom"])
    assert args.func is simulate_cmd.run
    assert simulate_cmd.run(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dicom", "image.nii.gz", "image.png", "raw.mrd", "summary.json"]  # no temp folder left
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coils"] == 2 and summary["noise"]["snr"] == 200
    assert summary["image"]["shape"] == [16, 16]
    assert set(summary["timings_s"]) >= {"load", "simulate", "noise", "reconstruct", "write"}
    err = capsys.readouterr().err
    assert "simulate" in err and "done" in err  # progress on stderr
    import ismrmrd
    import nibabel as nib

    with ismrmrd.Dataset(str(out / "raw.mrd"), "dataset", create_if_needed=False) as d:
        assert d.number_of_acquisitions() == 16 and d.read_acquisition(0).data.shape == (2, 16)
    assert nib.load(out / "image.nii.gz").shape == (16, 16, 1)


def test_builtin_twin_quiet_and_overwrite(tmp_path, files, capsys):
    out = tmp_path / "out"
    for _ in range(2):  # a second run replaces the files
        args = _parse(["--twin", "builtin:disk16", "--seq", files["seq"], "--out", str(out), "--quiet"])
        assert simulate_cmd.run(args) == 0
    assert capsys.readouterr().err == ""
    assert (out / "summary.json").exists()


def test_nufft_readout_option_gives_the_exact_raw_data(tmp_path, files):
    """``--nufft 1e-5`` writes the same raw data as the exact readout, to the tolerance."""
    import ismrmrd
    import numpy as np

    raw = {}
    for name, extra in (("exact", []), ("nufft", ["--nufft", "1e-5"])):
        out = tmp_path / name
        argv = ["--twin", files["twin"], "--seq", files["seq"], "--out", str(out), "--quiet", *extra]
        assert simulate_cmd.run(_parse(argv)) == 0
        with ismrmrd.Dataset(str(out / "raw.mrd"), "dataset", create_if_needed=False) as d:
            raw[name] = np.stack([d.read_acquisition(i).data for i in range(d.number_of_acquisitions())])
    assert raw["exact"].shape == raw["nufft"].shape == (16, 1, 16)
    # the tolerance plus float32 rounding of both simulations
    assert np.max(np.abs(raw["nufft"] - raw["exact"])) <= 2e-5 * np.max(np.abs(raw["exact"]))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_twin", "twin file not found"),
        ("bad_twin", "cannot read twin"),
        ("unknown_builtin", "unknown built-in twin 'nope'"),
        ("missing_seq", "sequence file not found"),
        ("bad_seq", "cannot read sequence .*line 1"),
        ("no_adc", "has no ADC events"),
        ("out_is_file", "output path exists and is not a folder"),
        ("out_unwritable", "cannot write to output folder"),
        ("bad_coils", "--coils must be >= 1"),
        ("bad_nufft", r"--nufft tolerance must be in \[1e-06, 1\) in single precision, got 1e-09"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, files, capsys, case, message):
    out = tmp_path / "out"
    twin, seq = files["twin"], files["seq"]
    if case == "missing_twin":
        twin = str(tmp_path / "nothere.h5")
    elif case == "bad_twin":
        twin = files["seq"]
    elif case == "unknown_builtin":
        twin = "builtin:nope"
    elif case == "missing_seq":
        seq = str(tmp_path / "nothere.seq")
    elif case == "bad_seq":
        seq = files["bad"]
    elif case == "no_adc":
        seq = files["noadc"]
    elif case == "out_is_file":
        out = pathlib.Path(files["bad"])
    elif case == "out_unwritable":
        out = pathlib.Path(files["bad"]) / "sub"  # below a regular file: cannot be created
    argv = ["--twin", twin, "--seq", seq, "--out", str(out)]
    if case == "bad_coils":
        argv += ["--coils", "0"]
    if case == "bad_nufft":
        argv += ["--nufft", "1e-9"]
    assert simulate_cmd.run(_parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(message, err), err
    if case not in ("out_is_file", "out_unwritable"):
        assert not out.exists() or not any(out.iterdir())


def test_failure_while_writing_leaves_nothing_presented_as_success(tmp_path, files, monkeypatch, capsys):
    import mritwin.io.images as images

    def broken_png(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images, "write_png", broken_png)
    out = tmp_path / "out"
    assert simulate_cmd.run(_parse(["--twin", files["twin"], "--seq", files["seq"], "--out", str(out)])) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no summary.json, no raw.mrd, no temp folder


def test_ring_coils_are_smooth_and_normalized():
    from mritwin.signal.coils import ring_coil_sensitivities

    pos = np.zeros((1, 3))
    s = ring_coil_sensitivities(pos, 8, radius=0.2)
    assert s.shape == (8, 1)
    assert np.sqrt(np.sum(np.abs(s) ** 2)) == pytest.approx(1.0)
    np.testing.assert_allclose(ring_coil_sensitivities(pos, 1), 1.0)
    with pytest.raises(ValueError, match="n_coils must be a positive integer"):
        ring_coil_sensitivities(pos, 0)


def test_chunked_simulation_equals_one_call():
    twin, _ = smooth_disk(16, 0.2, sub=2)
    seq = gre(16, 0.2)
    coils = np.stack([np.ones(twin.n_spins), np.linspace(0, 1, twin.n_spins)]).astype(complex)
    progress = simulate_cmd._Progress(quiet=True)
    chunked = simulate_cmd._simulate_chunked(twin, seq, coils=coils, dtype=None, progress=progress,
                                             min_spins=0, granule=256)
    direct = mt.simulate(twin, seq, coils=coils)
    scale = np.abs(np.asarray(direct.samples)).max()
    np.testing.assert_allclose(np.asarray(chunked.samples), np.asarray(direct.samples), atol=1e-5 * scale)
