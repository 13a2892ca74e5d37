"""MRzero NIfTI phantoms (``nifti_phantom_v1``: a JSON file plus 4D NIfTI files).

Format (MRzero-Core ``documentation/src/nifti-spec.md`` and ``NiftiPhantom``): the JSON
holds ``file_type = "nifti_phantom_v1"``, optional ``units`` (only MRzero's defaults
are accepted) and ``system`` (``gyro`` [MHz/T], ``B0`` [T]), and ``tissues``: a dict of
named tissues, each with

=========  =======================  ==============  =========
key        property                 unit            default
=========  =======================  ==============  =========
density    proton density           a.u.            required
T1, T2     relaxation               s               inf
T2'        reversible dephasing     s               inf
ADC        diffusion                1e-3 mm²/s      0
dB0        off-resonance            Hz              0
B1+        transmit scale (list)    rel.            [1]
B1-        receive sensitivity      rel.            [1]
=========  =======================  ==============  =========

A value is a number, a file reference ``"file.nii.gz[index]"`` (``"file.nii.gz:index"``
is accepted too) into the 4th axis of a NIfTI next to the JSON, or a mapping
``{"file": ref, "func": "x - 420"}`` (arithmetic on ``x, x_min, x_max, x_mean, x_std``;
evaluated by a small safe parser, never ``eval``).

Reading: every voxel with density > 0 of every tissue becomes a spin (``label`` =
tissue). Positions are the NIfTI affine's voxel centres (mm → m, as everywhere in
mritwin); ``positions="mrzero"`` uses MRzero's own convention instead (it ignores the
affine's origin: ``size · fftshift(fftfreq(n))`` per axis, voxel ``n // 2`` at 0).

Writing: a twin is expressible when its spins lie on one voxel grid, with at most one
spin per voxel per tissue compartment (spins sharing a voxel and label, e.g. fat
peaks, become extra tissues ``name_1``, ``name_2``, ...), and one B1+ channel. Maps
are written as float64 (complex128 for complex coil maps), so values round-trip
exactly; positions do when the grid affine [mm] is exact in float32 (NIfTI stores the
affine in float32).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import re
from pathlib import Path

import numpy as np

from ..constants import GAMMA_BAR

__all__ = ["read_mrzero", "write_mrzero"]

_FILE_TYPE = "nifti_phantom_v1"
_UNITS = {"gyro": "MHz/T", "B0": "T", "T1": "s", "T2": "s", "T2'": "s", "ADC": "10^-3 mm^2/s",
          "dB0": "Hz", "B1+": "rel", "B1-": "rel"}
_ADC_SCALE = 1e-9  # 1e-3 mm²/s in m²/s
_REF = re.compile(r"^(?P<file>.+?)(?:\[(?P<i1>\d+)\]|:(?P<i2>\d+))$")


def _parse_ref(ref: str, where: str):
    m = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not m:
        raise ValueError(f"{where}: invalid file reference {ref!r} (expected 'file.nii.gz[index]')")
    return m.group("file"), int(m.group("i1") or m.group("i2"))


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval_func(expr: str, x: np.ndarray, where: str) -> np.ndarray:
    """Evaluate a mapping function (+ - * / parentheses, numbers, x, x_min ...)."""
    env = {"x": x, "x_min": x.min(), "x_max": x.max(), "x_mean": x.mean(), "x_std": x.std()}
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ValueError(f"{where}: cannot parse mapping function {expr!r}") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError(f"{where}: unsupported element in mapping function {expr!r}")

    return np.asarray(ev(tree), dtype=np.float64) * np.ones_like(x)


class _Files:
    def __init__(self, base: Path):
        self.base = base
        self.cache = {}
        self.affine = None
        self.shape = None

    def volume(self, ref: str, where: str) -> np.ndarray:
        from .nifti import load_nifti

        name, idx = _parse_ref(ref, where)
        path = Path(name) if Path(name).is_absolute() else self.base / name
        if path not in self.cache:
            if not path.exists():
                raise ValueError(f"{where}: NIfTI file {name} not found next to the JSON")
            data, aff = load_nifti(path)
            if data.ndim == 3:
                data = data[..., None]
            if data.ndim != 4:
                raise ValueError(f"{where}: {name} must be 4D (x, y, z, tissue), got shape {data.shape}")
            if self.affine is None:
                self.affine, self.shape = aff, data.shape[:3]
            elif data.shape[:3] != self.shape or not np.allclose(aff, self.affine, atol=1e-4):
                raise ValueError(f"{where}: {name} has a different grid (shape or affine) from the density map")
            self.cache[path] = data
        data = self.cache[path]
        if not 0 <= idx < data.shape[3]:
            raise ValueError(f"{where}: index {idx} out of range for {name} with {data.shape[3]} volume(s)")
        return np.asarray(data[..., idx])

    def prop(self, value, default, where: str):
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return self.volume(value, where)
        if isinstance(value, dict) and "file" in value and "func" in value:
            return _eval_func(str(value["func"]), self.volume(value["file"], where).astype(np.float64), where)
        raise ValueError(f"{where}: a property must be a number, a file reference or a mapping, got {value!r}")


def read_mrzero(path, *, positions: str = "affine"):
    """Read an MRzero NIfTI phantom (the ``.json`` file) into a `Twin`.

    Args:
        path: the phantom ``.json``.
        positions: ``"affine"`` (NIfTI voxel centres, mm → m) or ``"mrzero"``
            (MRzero's centred FFT grid, ignoring the affine's origin and rotation).

    Returns:
        A `Twin` with ``label_names`` = the tissue names (extra tissues written by
        `write_mrzero` for shared voxels are folded back into their label).

    Raises:
        ValueError: missing files, wrong ``file_type``, non-default units, bad file
            references or grids, NaN values.
        NotImplementedError: several B1+ channels (pTx), or a ``reslice_to`` grid
            different from the data grid.
    """
    from ..twin.twin import Twin
    from .nifti import affine_to_metres, voxel_sizes

    p = Path(os.fspath(path))
    if not p.exists():
        raise ValueError(f"MRzero phantom file not found: {p}")
    try:
        cfg = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {p} as JSON: {e}") from None
    if cfg.get("file_type") != _FILE_TYPE:
        raise ValueError(f"{p}: file_type must be {_FILE_TYPE!r}, got {cfg.get('file_type')!r}")
    units = cfg.get("units")
    if units is not None and {k: units.get(k) for k in _UNITS if k in units} != {k: _UNITS[k] for k in units if k in _UNITS}:
        raise ValueError(f"{p}: only MRzero's default units are supported ({_UNITS}), got {units}")
    tissues = cfg.get("tissues")
    if not isinstance(tissues, dict) or not tissues:
        raise ValueError(f"{p}: 'tissues' must be a non-empty object")
    fold = (cfg.get("mritwin") or {}).get("labels", {})
    files = _Files(p.parent)
    parts = []
    for tname, t in tissues.items():
        where = f"{p.name}: tissue {tname!r}"
        if "density" not in t or not isinstance(t["density"], str):
            raise ValueError(f"{where}: 'density' must be a file reference")
        dens = files.volume(t["density"], where + " density").astype(np.float64)
        vals = {
            "t1": files.prop(t.get("T1"), math.inf, where + " T1"),
            "t2": files.prop(t.get("T2"), math.inf, where + " T2"),
            "t2_prime": files.prop(t.get("T2'", t.get("T2dash")), math.inf, where + " T2'"),
            "adc": files.prop(t.get("ADC"), 0.0, where + " ADC"),
            "db0": files.prop(t.get("dB0"), 0.0, where + " dB0"),
        }
        b1p = [files.prop(v, 1.0, where + " B1+") for v in t.get("B1+", [1.0])]
        if len(b1p) > 1:
            raise NotImplementedError(f"{where}: {len(b1p)} B1+ channels (pTx) are not supported by mritwin.Twin")
        b1m = [files.prop(v, 1.0, where + " B1-") for v in t.get("B1-", [1.0])]
        parts.append((tname, dens, vals, b1p[0] if b1p else 1.0, b1m))
    shape = files.shape
    rs = cfg.get("reslice_to")
    if rs is not None:
        same = list(rs.get("resolution", [])) == list(shape) and np.allclose(
            np.asarray(rs.get("affine"), float), files.affine[:3, :4], atol=1e-4)
        if not same:
            raise NotImplementedError(f"{p}: 'reslice_to' a different grid is not supported; reslice the NIfTIs first")
    if positions == "affine":
        a = affine_to_metres(files.affine)
    elif positions == "mrzero":
        size = np.asarray(shape) * voxel_sizes(files.affine) / 1000.0
        a = np.eye(4)
        for ax in range(3):
            a[ax, ax] = size[ax] / shape[ax]
            a[ax, 3] = -(shape[ax] // 2) * size[ax] / shape[ax]
    else:
        raise ValueError(f"positions must be 'affine' or 'mrzero', got {positions!r}")

    names = list(dict.fromkeys(fold.get(n, n) for n, *_ in parts))
    cols = {k: [] for k in ("position", "pd", "t1", "t2", "t2_prime", "diffusion", "delta_f", "b1", "label")}
    coils = []
    n_coils = max(len(b) for *_, b in parts)
    for tname, dens, vals, b1p, b1m in parts:
        if np.isnan(dens).any() or (dens < 0).any():
            raise ValueError(f"{p.name}: tissue {tname!r} density has NaN or negative values")
        idx = np.flatnonzero(dens.reshape(-1) > 0)
        ijk = np.stack(np.unravel_index(idx, shape), -1).astype(np.float64)
        cols["position"].append(ijk @ a[:3, :3].T + a[:3, 3])
        cols["pd"].append(dens.reshape(-1)[idx])

        def take(v, idx=idx):
            return np.full(idx.size, v) if np.isscalar(v) else np.asarray(v).reshape(-1)[idx]

        cols["t1"].append(take(vals["t1"]))
        cols["t2"].append(take(vals["t2"]))
        cols["t2_prime"].append(take(vals["t2_prime"]))
        cols["diffusion"].append(take(vals["adc"]) * _ADC_SCALE)
        cols["delta_f"].append(take(vals["db0"]))
        cols["b1"].append(np.real(take(b1p)))
        cols["label"].append(np.full(idx.size, names.index(fold.get(tname, tname)), np.int32))
        b1m = b1m + [1.0] * (n_coils - len(b1m))
        coils.append(np.stack([take(c).astype(np.complex128) for c in b1m]))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    sens = np.concatenate(coils, axis=1)
    has_coils = not np.all(sens == 1.0)
    return Twin(
        position=out["position"], pd=out["pd"], t1=out["t1"], t2=out["t2"],
        t2_prime=out["t2_prime"], delta_f=out["delta_f"], diffusion=out["diffusion"],
        b1=None if np.all(out["b1"] == 1.0) else out["b1"],
        coil_sensitivity=sens if has_coils else None,
        label=out["label"], label_names=tuple(names),
    )


def _infer_grid(pos: np.ndarray, tol: float = 1e-6):
    """Axis-aligned grid affine [mm] through the spin positions [m]."""
    aff = np.eye(4)
    for ax in range(3):
        u = np.unique(pos[:, ax])
        if u.size == 1:
            d = 1e-3  # one voxel thick: 1 mm (position only)
        else:
            d = float(np.diff(u).min())
            k = (u - u[0]) / d
            if np.abs(k - np.round(k)).max() > 1e-4:
                raise ValueError(
                    "spin positions are not on a regular grid along axis "
                    f"{ax}; not expressible as MRzero voxels (pass affine= or use save_twin)"
                )
        aff[ax, ax] = d * 1e3
        aff[ax, 3] = u[0] * 1e3
    return aff


def write_mrzero(twin, path, *, affine=None, b0: float = 3.0) -> None:
    """Write a `Twin` as an MRzero NIfTI phantom: ``path`` (JSON) plus NIfTIs beside it.

    Args:
        twin: the twin; its spins must lie on one voxel grid.
        path: the ``.json`` to write; NIfTIs are named ``<stem>.nii.gz`` (density),
            ``<stem>_T1.nii.gz`` etc. in the same folder.
        affine: (4, 4) grid affine [mm]; default: an axis-aligned grid inferred from the
            spin positions.
        b0: field [T] recorded in ``system``.

    Raises:
        ValueError: the twin is not expressible (positions off the grid, several B1+
            channels are impossible here by construction).
    """
    from .nifti import affine_to_metres, check_affine, save_nifti

    p = Path(os.fspath(path))
    stem = p.name[:-5] if p.name.endswith(".json") else p.stem
    pos = np.asarray(twin.position, np.float64)
    n = twin.n_spins
    if n == 0:
        raise ValueError("cannot write an empty twin as an MRzero phantom")
    aff = _infer_grid(pos) if affine is None else check_affine(affine)
    a_m = affine_to_metres(aff)
    ijk = (pos - a_m[:3, 3]) @ np.linalg.inv(a_m[:3, :3]).T
    ijk_r = np.round(ijk)
    if np.abs(ijk - ijk_r).max() > 1e-3:
        raise ValueError("spin positions are not voxel centres of the grid; not expressible as MRzero voxels")
    ijk_r = ijk_r.astype(np.int64)
    lo = ijk_r.min(0)
    if (lo != 0).any():  # move the grid origin to the first occupied voxel
        ijk_r -= lo
        shift = np.eye(4)
        shift[:3, 3] = lo
        aff = aff @ shift
    shape = tuple(int(v) for v in ijk_r.max(0) + 1)
    flat = np.ravel_multi_index(ijk_r.T, shape)
    names_in = twin.label_names if twin.label_names else ("tissue",)
    label = np.zeros(n, np.int64) if twin.label is None else np.asarray(twin.label, np.int64)

    # compartments: (label, occurrence of the voxel within the label)
    order = np.lexsort((np.arange(n), flat, label))
    key_sorted = label[order] * (int(np.prod(shape)) + 1) + flat[order]
    first = np.r_[True, key_sorted[1:] != key_sorted[:-1]]
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    occ = np.empty(n, np.int64)
    occ[order] = np.arange(n) - run_start

    fields = {
        "T1": np.asarray(twin.t1, np.float64),
        "T2": np.asarray(twin.t2, np.float64),
        "T2'": None if twin.t2_prime is None else np.asarray(twin.t2_prime, np.float64),
        "ADC": None if twin.diffusion is None else np.asarray(twin.diffusion, np.float64) / _ADC_SCALE,
        "dB0": None if twin.delta_f is None else np.asarray(twin.delta_f, np.float64),
    }
    defaults = {"T1": math.inf, "T2": math.inf, "T2'": math.inf, "ADC": 0.0, "dB0": 0.0}
    b1 = None if twin.b1 is None else np.asarray(twin.b1, np.float64)
    cs = None if twin.coil_sensitivity is None else np.asarray(twin.coil_sensitivity)
    stacks = {k: [] for k in ("density", "T1", "T2", "T2'", "ADC", "dB0", "B1+", "B1-")}
    suffix = {"density": "", "T1": "_T1", "T2": "_T2", "T2'": "_T2'", "ADC": "_ADC", "dB0": "_dB0",
              "B1+": "_B1+", "B1-": "_B1-"}
    tissues, fold = {}, {}

    def vol(values, sel, dtype=np.float64):
        v = np.zeros(shape, dtype)
        v.reshape(-1)[flat[sel]] = values[sel]
        return v

    def put(key, values, sel, default):
        if values is None:
            return None
        vs = values[sel]
        if np.all(vs == vs[0]):
            c = vs[0]
            if c == default:
                return None
            if isinstance(c, complex) or np.iscomplexobj(vs):
                if np.imag(c) == 0:
                    return float(np.real(c))
            else:
                return float(c)
        stacks[key].append(vol(values, sel, np.complex128 if np.iscomplexobj(values) else np.float64))
        return f"{stem}{suffix[key]}.nii.gz[{len(stacks[key]) - 1}]"

    for lab in np.unique(label):
        for o in np.unique(occ[label == lab]):
            sel = np.flatnonzero((label == lab) & (occ == o))
            base = names_in[lab] if lab < len(names_in) else f"label_{lab}"
            tname = base if o == 0 else f"{base}_{o}"
            if o:
                fold[tname] = base
            stacks["density"].append(vol(np.asarray(twin.pd, np.float64), sel))
            t = {"density": f"{stem}.nii.gz[{len(stacks['density']) - 1}]"}
            for k, v in fields.items():
                r = put(k, v, sel, defaults[k])
                if r is not None:
                    t[k] = r
            if b1 is not None:
                r = put("B1+", b1, sel, 1.0)
                if r is not None:
                    t["B1+"] = [r]
            if cs is not None:
                t["B1-"] = [put("B1-", c, sel, None) for c in cs]
            tissues[tname] = t
    p.parent.mkdir(parents=True, exist_ok=True)
    for key, vols in stacks.items():
        if vols:
            save_nifti(np.stack(vols, -1), aff, p.parent / f"{stem}{suffix[key]}.nii.gz")
    cfg = {
        "file_type": _FILE_TYPE,
        "units": dict(_UNITS),
        "system": {"gyro": GAMMA_BAR / 1e6, "B0": float(b0)},
        "tissues": tissues,
    }
    if fold:
        cfg["mritwin"] = {"labels": fold}
    p.write_text(json.dumps(cfg, indent=2))
