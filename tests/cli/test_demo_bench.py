"""`mritwin demo` (the main job) and `mritwin bench` run end to end."""

import json
import os
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np

from mritwin.cli.main import main


def test_demo_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--matrix", "32", "--quiet"]) == 0
    for f in ("summary.png", "summary.json", "twin.h5"):
        assert (out / f).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["sequences"]] == ["t1w_gre", "t2w_tse"]
    for s in summary["sequences"]:
        for f in s["files"]:
            assert (out / f).is_file(), f
        img = nib.load(out / s["name"] / "image.nii.gz")
        assert img.shape[:2] == (32, 32)
        assert np.isfinite(np.asarray(img.dataobj)).all()
    assert not [p for p in os.listdir(out) if p.startswith(".mritwin-demo-")]  # no leftovers


def test_demo_bad_output_folder_exits_2_with_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder" in err


def test_bench_prints_json_lines():
    r = subprocess.run([sys.executable, "-m", "mritwin.cli.main", "bench", "--quick", "--no-numpy",
                        "--scenario", "gre-64", "gre-128"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["scenario"] for row in rows] == ["gre-64", "gre-128"]
    assert all(row["spin_steps_per_s"] > 0 and row["run_s"] > 0 for row in rows)


def test_bench_with_the_pallas_kernel_agrees_with_numpy():
    # on a CPU the kernel runs in Pallas's interpreter: the record says so, and its signal
    # matches the plain-NumPy reference on the same stepped sequence
    from mritwin.benchmarking import run_scenario

    rec = run_scenario("gre-64", quick=True, repeats=1, kernel="pallas")
    assert rec["kernel"] == "pallas-interpret"
    assert rec["n_steps"] == rec["numpy_n_steps"]  # every ADC sample a step
    assert rec["max_rel_diff_vs_numpy"] < 1e-4
    assert main(["bench", "--quick", "--kernel", "cuda"]) == 2


def test_bench_auto_kernel_is_what_simulate_would_run(monkeypatch):
    # `mritwin bench`'s default --kernel auto: the XLA engine on a CPU; as if on a GPU, the
    # fused kernel where Bloch(kernel="auto") would pick it, the XLA engine for long signals
    from mritwin.bench_scenarios import build_case
    from mritwin.benchmarking import _auto_kernel
    from mritwin.simulate.methods import PALLAS_AUTO_MAX_OUTPUTS

    spiral, gre = build_case("koma-brain-spiral", True), build_case("gre-256", False)
    assert _auto_kernel(spiral, "float32", None, None) == "xla"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _auto_kernel(spiral, "float32", None, None) == "pallas"
    assert gre.seq.n_adc_samples > PALLAS_AUTO_MAX_OUTPUTS
    assert _auto_kernel(gre, "float32", None, None) == "xla"
    assert _auto_kernel(spiral, "float32", 1e-6, None) == "xla"  # the NUFFT readout is XLA's
    assert _auto_kernel(spiral, "float64", None, None) == "xla"
