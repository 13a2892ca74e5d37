"""`mritwin bench` suite (issue 8): listing, record fields, errors, and physics of two scenarios."""

import json

import numpy as np
import pytest

import mritwin as mt
from mritwin.bench_scenarios import SCENARIOS, build_case, mrf_train, scenario_names
from mritwin.benchmarking import RECORD_FIELDS, numpy_reference, records_to_markdown
from mritwin.cli.main import main


def test_list_prints_every_scenario_once(capsys):
    assert main(["bench", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == scenario_names()
    assert len(set(scenario_names())) == len(SCENARIOS) >= 13
    for required in ("koma-column", "koma-sphere-cs", "koma-brain-suscept", "koma-brain-motion",
                     "koma-brain-spiral", "koma-epi", "mrilab-spiral", "gre-64", "gre-128", "gre-256",
                     "brain3d-gre", "mrf-train", "scale-10m"):
        assert required in scenario_names()


def test_unknown_scenario_exits_2_with_one_line(capsys):
    assert main(["bench", "--quick", "--scenario", "koma-column", "no-such-case"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.count("\n") == 0 and "'no-such-case'" in err and "koma-column" in err
    assert cap.out == ""  # nothing ran: names are checked before the first scenario


def test_bad_repeats_exits_2(capsys):
    assert main(["bench", "--quick", "--scenario", "koma-column", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_quick_column_record_fields_and_values(capsys):
    assert main(["bench", "--quick", "--scenario", "koma-column", "--repeats", "2"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 1 and "koma-column" in cap.err  # progress on stderr only
    rec = json.loads(lines[0])
    assert set(RECORD_FIELDS) <= set(rec)
    assert rec["scenario"] == "koma-column" and rec["quick"] is True and rec["precision"] == "float32"
    assert rec["platform"] in ("cpu", "gpu", "tpu") and isinstance(rec["device"], str) and rec["device"]
    # n_steps / n_samples are the engine's step count and ADC samples of the scenario's sequence
    case = build_case("koma-column", quick=True)
    assert rec["n_spins"] == case.twin.n_spins == 200
    assert rec["n_steps"] == mt.discretize(case.seq, case.scanner).n_real_steps > 0
    assert rec["n_steps_padded"] >= rec["n_steps"]
    assert rec["n_samples"] == case.seq.n_adc_samples == 32 * 32
    assert rec["run_s"] > 0 and len(rec["run_s_all"]) == rec["repeats"] == 2
    assert rec["run_s"] == pytest.approx(float(np.median(rec["run_s_all"])), abs=1e-7)  # both rounded to 1e-7 s
    assert rec["spin_steps_per_s"] == pytest.approx(rec["n_spins"] * rec["n_steps"] / rec["run_s"], rel=1e-12)
    assert rec["compile_s"] >= 0 and rec["first_call_s"] >= rec["run_s"] * 0.5
    assert rec["recompiled_on_new_values"] is False
    assert rec["peak_host_mb"] is None or rec["peak_host_mb"] > 10
    assert rec["peak_device_mb"] is None or rec["peak_device_mb"] > 0
    # an independent plain-NumPy Bloch implementation, same steps but one per ADC sample
    assert rec["numpy_run_s"] > 0 and rec["speedup_vs_numpy"] > 0
    assert 1 <= len(rec["numpy_run_s_all"]) <= 3  # timed like ours: a median
    assert rec["numpy_run_s"] == pytest.approx(float(np.median(rec["numpy_run_s_all"])), abs=1e-4)
    assert rec["max_rel_diff_vs_numpy"] < 1e-3


def test_nufft_readout_option_matches_numpy_reference(capsys):
    """``--nufft TOL`` runs the scenario with the NUFFT readout; its signal still matches the
    independent NumPy stepping (to float32 rounding plus the tolerance)."""
    assert main(["bench", "--quick", "--scenario", "koma-column", "--repeats", "1", "--nufft", "1e-5"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert rec["readout"] == "nufft tol=1e-05"
    assert rec["max_rel_diff_vs_numpy"] < 1e-3
    assert main(["bench", "--quick", "--scenario", "koma-column", "--nufft", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--nufft tolerance must be in (0, 1)" in err


def test_rf_interpolation_option_matches_numpy_reference(capsys):
    """``--rf-interp TOL`` interpolates the pulse of the susceptibility case (a field map: no
    two spins see the pulse alike); its signal still matches the independent NumPy stepping."""
    assert main(["bench", "--quick", "--scenario", "koma-brain-suscept", "--repeats", "1",
                 "--rf-interp", "1e-6"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert rec["rf"] == "interpolated tol=1e-06" and rec["readout"] == "exact"
    assert rec["max_rel_diff_vs_numpy"] < 1e-3
    assert "RF interpolated tol=1e-06" in records_to_markdown([rec])
    assert main(["bench", "--quick", "--scenario", "koma-column", "--rf-interp", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--rf-interp tolerance must be in (0, 0.1)" in err


def test_motion_scenario_matches_numpy_reference():
    """Rigid motion (per-step phase ``cyc0``) against the NumPy reference stepping the same moments."""
    case = build_case("koma-brain-motion", quick=True)
    assert isinstance(case.motion, mt.Translation)
    d = mt.discretize(case.seq, case.scanner, windows=False, motion=case.motion)
    ours = np.asarray(mt.simulate(case.twin, case.seq, motion=case.motion).samples[0])
    ref = numpy_reference(case.twin, d)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-3, rel
    # the motion matters: the static twin gives a clearly different signal
    static = np.asarray(mt.simulate(case.twin, case.seq).samples[0])
    assert np.abs(static - ours).max() / np.abs(ref).max() > 1e-2


def test_mrf_train_closed_form_without_relaxation():
    """MRF scenario sequence, one spin at the origin, T1 = T2 = inf: pure rotations about x.

    Idealization: none besides no relaxation. The spin sits at r = 0 with no off-resonance, so
    gradients do nothing; every pulse has phase 0, so after the 180° inversion and pulses
    1..i the magnetization is (0, sin θ, cos θ) with θ = π + Σ α_j (left-handed frame: a 90°
    pulse about x tips Mz to +y, signal +i). Every sample of TR i is then ``i sin θ_i``.
    """
    seq, flips = mrf_train(1000)
    twin = mt.Twin(position=np.zeros((1, 3)), pd=np.ones(1), t1=np.full(1, np.inf), t2=np.full(1, np.inf))
    # every step rotated (prepare_pulses=False): the composition of the steps' own angles
    sig = np.asarray(mt.simulate(twin, seq, dtype=np.float64, method=mt.Bloch(prepare_pulses=False))
                     .samples[0]).reshape(1000, 64)
    # discretize rounds step boundaries to 1 ps, so each 200 us pulse's angle (the sum over
    # its 10 us steps, all at phase 0) is exact to alpha * 2 ps / 200 us <= 1.1e-8 rad: check
    # that bound, then the engine against the closed form with those angles (rotation
    # composition must then be exact to rounding)
    d = mt.discretize(seq, mt.Scanner())
    kind = np.asarray(d.kind)[: d.n_real_steps]
    rf = np.flatnonzero(kind == 0)
    pulse = np.cumsum(np.r_[1, np.diff(rf) > 1]) - 1  # RF steps in a row: one pulse
    b1 = np.asarray(d.b1dt)[: d.n_real_steps][rf]
    assert np.abs(np.angle(b1)).max() < 1e-12  # (phase 0)
    angles = 2 * np.pi * np.bincount(pulse, weights=np.abs(b1))
    assert np.bincount(pulse).tolist() == [100] + [20] * 1000  # 1 ms and 200 us in 10 us steps
    assert angles.size == 1001 and abs(angles[0] - np.pi) < 1e-8
    assert np.abs(angles[1:] - flips).max() < 1.1e-8
    expected = 1j * np.sin(np.cumsum(angles)[1:])  # theta_i = pi + sum of the first i flips
    assert np.abs(sig - expected[:, None]).max() < 1e-10
    # and against the requested flips: 1000 pulses accumulate at most 1000 * 1.1e-8 rad
    assert np.abs(sig - 1j * np.sin(np.pi + np.cumsum(flips))[:, None]).max() < 1.1e-5
    # by default the flips that repeat (|sin| is periodic) are prepared pulses: a play whose
    # steps equal the prepared one's to the rounding of their absolute times (at most
    # 16 eps x 10 s / 10 us relative, `prepared_rf._match_tol`) applies its map (measured:
    # 1.7e-9 from the steps' own angles after 1 000 pulses)
    prepared = np.asarray(mt.simulate(twin, seq, dtype=np.float64).samples[0]).reshape(1000, 64)
    assert np.abs(prepared - sig).max() < 1e-8
    assert np.abs(prepared - 1j * np.sin(np.pi + np.cumsum(flips))[:, None]).max() < 1.1e-5
    assert flips.min() >= np.radians(10) - 1e-12 and flips.max() <= np.radians(60) + 1e-12


def test_multihost_example_two_processes_sum_to_single_process():
    """benchmarks/multihost_example.py: 2 CPU processes, disjoint spin slices, gathered sum."""
    import pathlib
    import socket
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "multihost_example.py"
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(script), "--matrix", "16", "--check", "--coordinator", f"localhost:{port}",
           "--num-processes", "2", "--process-id"]
    procs = [subprocess.Popen(cmd + [str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    rec = json.loads(outs[0][0].strip().splitlines()[-1])
    assert not [ln for ln in outs[1][0].splitlines() if ln.startswith("{")]  # only process 0 reports
    assert rec["process_count"] == 2 and rec["n_spins"] == 256 and rec["spins_this_process"] == 128
    assert rec["max_rel_diff_vs_single_process"] < 1e-5  # float32 sums in another order


def test_step_layout_benchmark_runs_and_agrees_with_the_generic_scan(capsys, monkeypatch):
    """benchmarks/bench_step_layout.py: one small size; its two variants give the same
    signal (the timing itself is the benchmark's business)."""
    import pathlib
    import runpy

    from mritwin.simulate import engine

    monkeypatch.setattr(engine, "MAX_STEP_PERIOD", engine.MAX_STEP_PERIOD)  # (restored after)
    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_step_layout.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--sizes", "8", "--calls", "1"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["n_spins"] == 64 and rec["period"] == 4
    assert rec["layout_s"] > 0 and rec["generic_s"] > 0 and rec["max_rel_diff"] < 1e-5


def test_rf_rotation_benchmark_runs_and_agrees_with_the_general_rotation(capsys):
    """benchmarks/bench_rf_rotation.py on gre-64: the engine picks the series for the 10 us
    steps of its 15° hard pulse (stepped, not prepared, by the benchmark: one held step per
    play, `held_rf`), and the general rotation gives the same signal (float32 rounding)."""
    import pathlib
    import runpy

    from mritwin.simulate import engine

    own = engine._rf_rotation_mode
    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rf_rotation.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--scenario", "gre-64", "--calls", "1"]) == 0
    assert engine._rf_rotation_mode is own  # restored
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # (no single or fused RF steps and no prepared pulses are left: their modes are the
    # unused defaults; the held steps' last)
    assert rec["scenario"] == "gre-64" and rec["modes"] == ["auto", "general", "auto", "small"]
    assert rec["chosen_s"] > 0 and rec["general_s"] > 0 and rec["max_rel_diff"] < 1e-5


def test_one_fusion_benchmark_runs_and_agrees_with_the_plain_outputs(capsys):
    """benchmarks/bench_one_fusion.py: the fused RF kernel and gre-64 compiled with and
    without `kernels.one_fusion` give the same magnetization and signal."""
    import pathlib
    import runpy

    from mritwin.simulate import kernels

    own = kernels.one_fusion
    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_one_fusion.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--kernels", "fused", "--scenario", "gre-64", "--calls", "1"]) == 0
    assert kernels.one_fusion is own  # restored
    kernel, scenario = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:])
    assert kernel["case"] == "kernel:fused" and kernel["max_abs_diff"] < 1e-5
    assert scenario["case"] == "gre-64" and scenario["max_rel_diff"] < 1e-5
    assert min(kernel["one_fusion_s"], kernel["plain_s"], scenario["one_fusion_s"], scenario["plain_s"]) > 0


def test_rf_peer_benchmark_runs_without_its_peers(capsys):
    """benchmarks/bench_peers_rf.py in mritwin's own venv (SigPy and blochsimulator absent):
    mritwin's slice-profile record, then one "skipped" record per peer. The slice profile
    itself: the 90 degree sinc tips the spin at the slice centre fully, spins three slice
    thicknesses away not at all."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_peers_rf.py"
    mod = runpy.run_path(str(script))
    assert mod["main"](["--sizes", "101", "--repeats", "1"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    ours = recs[0]
    assert ours["simulator"] == "mritwin" and ours["n_spins"] == 101 and ours["n_steps"] == 2001
    assert ours["run_s"] > 0 and ours["spin_steps_per_s"] > 0
    for rec in recs[1:]:
        assert rec["simulator"] in ("sigpy", "blochsimulator")
        assert "skipped" in rec or "max_err_vs_mritwin" in rec
    seq, scanner = mod["slice_sequence"]()
    twin, z = mod["line_twin"](101)
    m = np.asarray(mt.simulate(twin, seq, scanner=scanner, return_magnetization=True).magnetization)
    assert abs(np.hypot(m[50, 0], m[50, 1]) - 1) < 1e-5 and abs(m[50, 2]) < 1e-5  # z = 0
    assert np.all(m[[0, -1], 2] > 0.9999)  # z = +-15 mm


def test_gradient_peer_benchmark_runs_without_its_peer(capsys):
    """benchmarks/bench_peers_grad.py in mritwin's own venv (MRzeroCore absent): mritwin's
    gradient record, then one "skipped" record."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_peers_grad.py"
    mod = runpy.run_path(str(script))
    assert mod["main"](["--sizes", "8", "--repeats", "1"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert recs[0]["simulator"] == "mritwin" and recs[0]["n_spins"] == 64
    assert recs[0]["gradient_s"] > 0 and recs[0]["forward_s"] > 0 and recs[0]["loss"] > 0
    assert recs[-1]["simulator"] == "MRzeroCore" and ("skipped" in recs[-1] or "gradient_s" in recs[-1])


@pytest.mark.parametrize("name", ["brain3d-ms", "brain3d-slab"])
def test_3d_brain_scenarios_match_numpy_reference_and_excite_only_their_slices(name):
    """The 3D-brain scenarios with several slices (2D multi-slice) or a slab (3D GRE), quick
    size: the engine against the independent NumPy stepping; and the slice selection holds
    with the scenarios' 50 us RF groups (the off-centre slices' pulses averaged in the frame
    that follows their frequency offsets): the spins far outside every slice (or the slab)
    give at most a few percent of the signal, those in and near them the rest."""
    case = build_case(name, quick=True)
    d = mt.discretize(case.seq, case.scanner, rf_dt=case.method.rf_dt, windows=False)
    ours = np.asarray(mt.simulate(case.twin, case.seq, scanner=case.scanner, method=case.method).samples[0])
    ref = numpy_reference(case.twin, d)
    peak = np.abs(ref).max()
    assert np.abs(ours - ref).max() / peak < 1e-3
    assert case.seq.n_adc_samples == 4 * 16 * 16  # 4 slices or 4 partitions of 16 x 16
    # slices: 4 x 5 mm with 5 mm gaps about z = 0 (|z| <= 17.5 mm); slab: 40 mm (|z| <= 20 mm)
    edge = 17.5e-3 if name == "brain3d-ms" else 20e-3
    z = np.asarray(case.twin.position)[:, 2]
    far, near = case.twin[np.abs(z) > edge + 10e-3], case.twin[np.abs(z) <= edge + 10e-3]
    assert far.n_spins > 1000 and near.n_spins > 1000
    s_far = np.asarray(mt.simulate(far, case.seq, scanner=case.scanner, method=case.method).samples[0])
    s_near = np.asarray(mt.simulate(near, case.seq, scanner=case.scanner, method=case.method).samples[0])
    # 50 us RF groups leave up to ~3 % of a slice profile's peak outside the slice (the
    # envelope's variation within a group; tests/physics/test_rf.py); the replicas of the
    # off-centre slices that averaging their modulated samples gave held 26 % here
    assert np.abs(s_far).max() < 0.03 * peak
    assert np.abs(s_near - ours).max() < 0.03 * peak


def test_precision_benchmark_reports_float32_against_float64(capsys):
    """benchmarks/bench_precision.py (a stage of gpu_check.sh): on 16 CSF-like spins under
    the library's sinc GRE, float32 prepared pulses within 1e-4 of the float64 peak and
    stepped pulses within 1.5e-4 (as tests/simulate/test_prepared_rf.py checks directly)."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_precision.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--cases", "csf", "--methods", "prepared", "stepped"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert [r["method"] for r in recs] == ["prepared", "stepped"]
    assert recs[0]["max_rel_diff_vs_float64"] < 1e-4 and recs[1]["max_rel_diff_vs_float64"] < 1.5e-4
    assert all(r["device"] and r["n_spins"] == 16 for r in recs)


def test_sass_path_counts_one_path_through_a_loop(tmp_path):
    """benchmarks/sass_path.py follows a SASS listing through decided branches to the back
    edge (counted), takes libdevice's slow-path branches with --fast-paths, and stops at an
    undecided branch naming its address."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "sass_path.py"
    spec = importlib.util.spec_from_file_location("sass_path", path)
    sp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sp)
    listing = tmp_path / "k.sass"
    listing.write_text("\n".join([
        "0000 MOV R1, c[0x0][0x28]",
        "0010 LDG.E R2, desc[UR4][R4.64]",           # loop head
        "0020 LOP3.LUT P0, RZ, R2, 0x2, RZ, 0xc0, !PT",
        "0030 @!P0 BRA 0x60",                        # skip the factor update
        "0040 FMUL R3, R3, R3",
        "0050 FSETP.GE.AND P1, PT, R3, 105615, PT",
        "0060 FSETP.GE.AND P2, PT, R3.reuse, 105615, PT",
        "0070 @!P2 BRA 0x90",                        # libdevice's slow path
        "0080 FADD R3, R3, 1",
        "0090 FADD R5, R5, R3",
        "00a0 @P3 BRA 0x10",                         # back edge
        "00b0 EXIT",
    ]) + "\n")
    sass = sp.read_sass(str(listing))
    p, undecided = sp.walk(sass, 0x10, take={0x30}, skip=set(), fast_paths=True)
    assert undecided is None and p == [0x10, 0x20, 0x30, 0x60, 0x70, 0x90, 0xa0]
    p, undecided = sp.walk(sass, 0x10, take={0x30}, skip=set())
    assert undecided == 0x70
    p, undecided = sp.walk(sass, 0x10, take=set(), skip={0x30, 0x70})
    assert undecided is None and p == [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0]
    bad = tmp_path / "bad.sass"
    bad.write_text("zz MOV R1\n")
    with pytest.raises(SystemExit, match="bad.sass:1: expected"):
        sp.read_sass(str(bad))
