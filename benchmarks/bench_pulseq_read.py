"""Benchmark: reading Pulseq files with mritwin vs pypulseq, side by side.

Reads (1) the largest file of the corpus (../shared/data/seq) and (2) a generated 3D
spoiled-GRE sequence with >= 10^5 blocks (written with mritwin's writer into a temp
dir), each with `mritwin.read_seq` and `pypulseq.Sequence.read`, and prints JSON with
the median wall time of the repeats and the speed-up.

Usage::

    python benchmarks/bench_pulseq_read.py [--repeats 5] [--pypulseq-repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np

import mritwin as mt

SEQ_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seq"


def make_3d_gre(ny=128, nz=160, fov=(0.256, 0.256, 0.2), nx=128):
    """A 3D RF-spoiled GRE: 5 blocks per TR, ny * nz TRs (default 102400 blocks)."""
    sc = mt.Scanner(max_grad=30e-3, max_slew=120.0)
    gb = sc.gamma_bar
    rf = mt.make_block_pulse(np.deg2rad(8), 100e-6, scanner=sc)
    rf_block_dur = rf.delay + rf.shape_duration + sc.rf_ringdown_time
    rf_block_dur = np.ceil(rf_block_dur / 10e-6 - 1e-9) * 10e-6
    dkx, dky, dkz = 1 / fov[0], 1 / fov[1], 1 / fov[2]
    ro_time = 2.56e-3
    gx = mt.make_trapezoid("x", flat_area=nx * dkx, flat_time=ro_time, scanner=sc)
    adc0 = dict(num_samples=nx, dwell=ro_time / nx, delay=gx.rise_time)
    pre_dur = 1.0e-3
    gxpre = mt.make_trapezoid("x", area=-gx.area * gb / 2, duration=pre_dur, scanner=sc)
    spoil = mt.make_trapezoid("x", area=4 * nx * dkx, scanner=sc)
    rf_spoil_deg = 117  # pypulseq's RF spoiling (integer degrees, modulo 360)
    rfs, adcs = {}, {}
    gys, gzs, gyr, gzr = {}, {}, {}, {}
    blocks = []
    phase_deg = 0
    inc_deg = 0
    for iz in range(nz):
        kz = (iz - nz // 2) * dkz
        if iz not in gzs:
            gzs[iz] = mt.make_trapezoid("z", area=kz, duration=pre_dur, scanner=sc)
            gzr[iz] = mt.make_trapezoid("z", area=-kz, duration=pre_dur, scanner=sc)
        for iy in range(ny):
            ky = (iy - ny // 2) * dky
            if iy not in gys:
                gys[iy] = mt.make_trapezoid("y", area=ky, duration=pre_dur, scanner=sc)
                gyr[iy] = mt.make_trapezoid("y", area=-ky, duration=pre_dur, scanner=sc)
            key = round(np.deg2rad(phase_deg), 9)
            if key not in rfs:
                rfs[key] = mt.RF(rf.amplitude, rf.shape, phase_offset=key, delay=rf.delay,
                                 raster=rf.raster, center=rf.center, use="excitation")
                adcs[key] = mt.ADC(phase_offset=key, **adc0)
            blocks.append(mt.Block(rf=rfs[key], duration=rf_block_dur))
            blocks.append(mt.Block(gx=gxpre, gy=gys[iy], gz=gzs[iz]))
            blocks.append(mt.Block(gx=gx, adc=adcs[key]))
            blocks.append(mt.Block(gy=gyr[iy], gz=gzr[iz], duration=pre_dur))
            blocks.append(mt.Block(gx=spoil))
            inc_deg = (inc_deg + rf_spoil_deg) % 360
            phase_deg = (phase_deg + inc_deg) % 360
    return mt.Sequence(blocks, {"Name": "gre3d_bench", "FOV": fov})


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def bench_file(path, repeats, pp_repeats):
    import pypulseq as pp

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mt.read_seq(path)

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = pp.Sequence()
            s.read(str(path))
            return s

    seq = ours()  # warm-up (imports, caches)
    t_ours, all_ours = _median_time(ours, repeats)
    t_pp, all_pp = _median_time(theirs, pp_repeats)
    return {
        "file": os.path.basename(str(path)),
        "bytes": os.path.getsize(path),
        "n_blocks": seq.n_blocks,
        "mritwin_s": t_ours,
        "pypulseq_s": t_pp,
        "speedup": t_pp / t_ours,
        "mritwin_all_s": all_ours,
        "pypulseq_all_s": all_pp,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pypulseq-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller generated sequence (~10^4 blocks)")
    args = ap.parse_args()
    import pypulseq

    results = []
    if SEQ_DIR.is_dir():
        largest = max(SEQ_DIR.glob("*.seq"), key=lambda p: p.stat().st_size)
        results.append(bench_file(largest, args.repeats, args.pypulseq_repeats))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        seq = make_3d_gre(ny=32, nz=64) if args.quick else make_3d_gre()
        path = pathlib.Path(d) / "gre3d.seq"
        mt.write_seq(seq, path)
        t_gen = time.perf_counter() - t
        r = bench_file(path, args.repeats, args.pypulseq_repeats)
        r["generated"] = True
        r["generate_and_write_s"] = t_gen
        results.append(r)
    print(json.dumps({
        "benchmark": "pulseq_read",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mritwin": mt.__version__,
        "pypulseq": pypulseq.__version__,
        "statistic": "median wall time of repeats [s]",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
