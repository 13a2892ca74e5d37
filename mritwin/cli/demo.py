"""`mritwin demo`: the whole pipeline on the embedded brain twin.

Builds the 2D brain twin (3 T), a T1-weighted spoiled GRE and a T2-weighted TSE from the
sequence library, simulates both, reconstructs the images and writes, per sequence,
``raw.mrd``, ``image.nii.gz``, ``image.png`` and the ``.seq`` file, plus ``twin.h5``,
a one-page ``summary.png`` and ``summary.json`` (what was done, with timings).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

__all__ = ["add_parser", "run"]


def add_parser(sub):
    p = sub.add_parser("demo", help="simulate the embedded brain twin with built-in sequences",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", default="mritwin-demo", help="output folder (default: mritwin-demo)")
    p.add_argument("--matrix", type=int, default=128, help="image matrix (default: 128)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _stage(quiet, i, n, text):
    if not quiet:
        print(f"[{i}/{n}] {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import mritwin as mt
    from mritwin.io.images import write_nifti, write_png
    from mritwin.io.mrd import write_mrd
    from mritwin.plot.summary import plot_summary

    if args.matrix < 16 or args.matrix > 512:
        raise ValueError(f"--matrix must be between 16 and 512, got {args.matrix}")
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out) or "."
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {args.out} exists and is not a folder")
    if not os.access(parent if not os.path.isdir(out) else out, os.W_OK):
        raise PermissionError(f"cannot write to {args.out}")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".mritwin-demo-", dir=out)
    quiet = args.quiet
    t_all = time.perf_counter()
    timings = {}
    n_stages = 5
    try:
        scanner = mt.Scanner(b0=3.0)
        t0 = time.perf_counter()
        _stage(quiet, 1, n_stages, "building the 2D brain twin (3 T)")
        twin = mt.phantoms.brain(2, b0=3.0, matrix=args.matrix, t2_prime=False)
        mt.save_twin(twin, os.path.join(work, "twin.h5"))
        timings["twin_s"] = time.perf_counter() - t0
        fov, n = 0.22, args.matrix
        protocols = [
            dict(name="t1w_gre", label="T1w spoiled GRE: TR 250 ms, TE 4 ms, 70°",
                 seq=mt.sequences.gre(scanner=scanner, fov=fov, matrix=n, te=4e-3, tr=0.25,
                                      flip_angle_deg=70, slice_thickness=5e-3),
                 method=mt.Bloch(rf_dt=20e-6, ideal_spoiling=True)),
            dict(name="t2w_tse", label="T2w TSE: TR 4 s, TE 100 ms, ETL 16",
                 seq=mt.sequences.tse(scanner=scanner, fov=fov, matrix=n, etl=16, te=0.1, tr=4.0,
                                      slice_thickness=5e-3),
                 method=mt.Bloch(rf_dt=20e-6)),
        ]
        results = []
        for i, p in enumerate(protocols):
            _stage(quiet, 2 + i, n_stages, f"simulating {p['label']}")
            d = os.path.join(work, p["name"])
            os.makedirs(d)
            t0 = time.perf_counter()
            sig = mt.simulate(twin, p["seq"], scanner=scanner, method=p["method"])
            sig.samples.block_until_ready()
            t_sim = time.perf_counter() - t0
            t0 = time.perf_counter()
            img = mt.reconstruct(sig, p["seq"])
            t_rec = time.perf_counter() - t0
            mt.write_seq(p["seq"], os.path.join(d, p["name"] + ".seq"))
            write_mrd(os.path.join(d, "raw.mrd"), sig, p["seq"], image=img, b0=scanner.b0)
            write_nifti(img, os.path.join(d, "image.nii.gz"))
            write_png(img, os.path.join(d, "image.png"))
            timings[p["name"]] = {"simulate_s": round(t_sim, 3), "reconstruct_s": round(t_rec, 3)}
            results.append(dict(name=p["name"], label=p["label"], seq=p["seq"], image=img, sig=sig,
                                method=p["method"]))
        _stage(quiet, 4, n_stages, "writing summary.png")
        fig = plot_summary(twin, results, title=f"mritwin demo: 2D brain twin, 3 T, {n}x{n}")
        fig.savefig(os.path.join(work, "summary.png"), dpi=80)
        summary = {
            "mritwin_version": mt.__version__,
            "twin": {"phantom": "brain", "dims": 2, "b0_T": 3.0, "n_spins": twin.n_spins,
                     "tissues": list(twin.label_names)},
            "sequences": [
                {"name": r["name"], "description": r["label"], "n_blocks": r["seq"].n_blocks,
                 "duration_s": r["seq"].duration, "n_adc_samples": r["seq"].n_adc_samples,
                 "method": r["method"].describe(), "image_shape": list(r["image"].data.shape),
                 "files": [f"{r['name']}/{f}" for f in (r["name"] + ".seq", "raw.mrd", "image.nii.gz", "image.png")]}
                for r in results
            ],
            "timings_s": timings,
            "device": __import__("jax").devices()[0].device_kind,
        }
        _stage(quiet, 5, n_stages, "done")
        timings["total_s"] = round(time.perf_counter() - t_all, 3)
        with open(os.path.join(work, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        # move everything into place only now: nothing half-written looks like success
        for name in os.listdir(work):
            dst = os.path.join(out, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            os.replace(os.path.join(work, name), dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(f"wrote {out}/summary.png, summary.json, twin.h5 and "
              f"{', '.join(r['name'] for r in results)} ({timings['total_s']:.1f} s)")
    return 0
