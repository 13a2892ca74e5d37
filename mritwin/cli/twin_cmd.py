"""``mritwin twin``: build a twin from a segmentation and save it as HDF5.

Usage::

    mritwin twin --labels SEG.nii.gz --b0 3 --out twin.h5
        [--mapping brainweb|freesurfer|aseg|fast|MAP.json] [--spins-per-voxel N]
        [--slice [AXIS:]INDEX|[AXIS:]START-STOP] [--resolution MM] [--center]

``--labels`` may be given several times for partial-volume maps (one 3D fraction map
per class, e.g. FAST ``pve_0 pve_1 pve_2``). A mapping JSON file holds
``{"label": "tissue name" | null}``. Exit status 0 on success, 2 with a one-line
message on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``twin`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "twin",
        help="build a twin from a label map (NIfTI) and save it as HDF5",
        description="Build a digital twin from a segmentation (NIfTI label map or "
                    "partial-volume maps) and save it in mritwin's HDF5 twin format.",
    )
    p.add_argument("--labels", required=True, action="append", metavar="SEG.nii.gz",
                   help="label map; repeat for one fraction map per class")
    p.add_argument("--b0", type=float, default=3.0, help="main field [T] (default 3)")
    p.add_argument("--out", required=True, metavar="twin.h5", help="output HDF5 file")
    p.add_argument("--mapping", default="brainweb",
                   help="brainweb, freesurfer (aseg), fast, or a JSON file {label: tissue}")
    p.add_argument("--spins-per-voxel", type=int, default=1, help="isochromats per compartment")
    p.add_argument("--slice", default=None, metavar="[AXIS:]INDEX",
                   help="select one slice (e.g. 90 or 2:90) or a slab (2:80-100); axis default 2")
    p.add_argument("--resolution", type=float, default=None, metavar="MM",
                   help="resample to this isotropic voxel size [mm]")
    p.add_argument("--center", action="store_true", help="centre the field of view at the origin")
    p.set_defaults(func=run)
    return p


def _parse_slice(text: str):
    axis = 2
    if ":" in text:
        a, text = text.split(":", 1)
        axis = int(a)
    if "-" in text:
        lo, hi = text.split("-", 1)
        return axis, (int(lo), int(hi))
    return axis, int(text)


def _mapping(text: str):
    if text.lower().endswith(".json"):
        if not os.path.exists(text):
            raise ValueError(f"mapping file not found: {text}")
        try:
            raw = json.load(open(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"mapping file {text} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"mapping file {text} must hold an object {{label: tissue}}")
        return {int(k): v for k, v in raw.items()}
    return text


def run(args) -> int:
    """Run ``mritwin twin`` with parsed ``args``; returns the exit status."""
    try:
        import mritwin as mt

        labels = args.labels[0] if len(args.labels) == 1 else list(args.labels)
        for path in args.labels:
            if not os.path.exists(path):
                raise ValueError(f"label file not found: {path}")
        kw = {}
        if args.slice is not None:
            try:
                kw["axis"], kw["slices"] = _parse_slice(args.slice)
            except ValueError:
                raise ValueError(f"--slice must look like 90, 2:90 or 2:80-100, got {args.slice!r}") from None
        if args.resolution is not None:
            kw["resolution"] = args.resolution * 1e-3
        twin = mt.twin_from_labels(labels, _mapping(args.mapping), b0=args.b0,
                                   spins_per_voxel=args.spins_per_voxel, center=args.center, **kw)
        mt.save_twin(twin, args.out)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"mritwin twin: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {twin.n_spins} spins, tissues: {', '.join(twin.label_names)}")
    return 0
