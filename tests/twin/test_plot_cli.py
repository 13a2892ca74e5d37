import argparse

import nibabel as nib
import numpy as np
import pytest

import mritwin as mt
from mritwin.cli import twin_cmd
from mritwin.plot.twin import plot_twin, twin_maps
from mritwin.twin import phantoms


def test_plot_twin_returns_a_figure():
    from matplotlib.figure import Figure

    twin = phantoms.brain(dims=2, matrix=32)
    fig = plot_twin(twin)
    assert isinstance(fig, Figure) and len(fig.axes) == 10  # 5 maps + 5 colour bars
    maps, extent = twin_maps(twin, ("pd", "t1", "label"))
    pos = np.asarray(twin.position)
    assert maps["pd"].shape == (np.unique(pos[:, 1]).size, np.unique(pos[:, 0]).size)  # one pixel per voxel
    wm = maps["label"] == twin.label_names.index("white_matter")
    np.testing.assert_allclose(maps["t1"][wm], mt.tissue_parameters("wm", 3.0)["t1"])
    fig3 = plot_twin(phantoms.brain(dims=3, matrix=16), ("pd", "t2"), axis=0)
    assert isinstance(fig3, Figure)


def _run(argv):
    parser = argparse.ArgumentParser(prog="mritwin")
    sub = parser.add_subparsers()
    twin_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_builds_a_twin(tmp_path, capsys):
    lab, aff = phantoms.brain_labels(dims=3, matrix=32)
    nib.save(nib.Nifti1Image(lab.astype(np.int16), aff), tmp_path / "seg.nii.gz")
    out = tmp_path / "twin.h5"
    assert _run(["twin", "--labels", str(tmp_path / "seg.nii.gz"), "--b0", "3", "--out", str(out),
                 "--mapping", "brainweb", "--slice", "2:16"]) == 2  # label 12 (lesion) is not BrainWeb
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "12 (" in err and "Traceback" not in err
    (tmp_path / "map.json").write_text('{"0": null, "1": "csf", "2": "gm", "3": "wm", "4": "fat", "5": "muscle",'
                                       ' "6": "skin", "7": "skull", "8": "vessels", "11": "marrow", "12": "lesion"}')
    assert _run(["twin", "--labels", str(tmp_path / "seg.nii.gz"), "--b0", "1.5", "--out", str(out),
                 "--mapping", str(tmp_path / "map.json"), "--slice", "2:16", "--spins-per-voxel", "2"]) == 0
    twin = mt.load_twin(out)
    assert "ms_lesion" in twin.label_names and twin.n_spins > 0


@pytest.mark.parametrize("argv, msg", [
    (["--labels", "missing.nii.gz", "--out", "x.h5"], "label file not found"),
    (["--labels", "SEG", "--out", "x.h5", "--b0", "9.4"], "no T1/T2/T2* values at b0 = 9.4 T"),
    (["--labels", "SEG", "--out", "x.h5", "--slice", "a:b"], "--slice must look like"),
    (["--labels", "SEG", "--out", "x.h5", "--mapping", "nope"], "unknown label convention"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, msg):
    lab = np.zeros((4, 4, 2), np.int16)
    lab[1:3, 1:3] = 2
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "seg.nii.gz")
    argv = [str(tmp_path / "seg.nii.gz") if a == "SEG" else a for a in argv]
    assert _run(["twin", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and err.startswith("mritwin twin: error:")
