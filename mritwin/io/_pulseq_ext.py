"""Pulseq [EXTENSIONS]: extension specifications and the per-block extension lists.

LABELSET/LABELINC -> `Label`, TRIGGERS -> `Trigger`, soft DELAYS -> `SoftDelay`,
ROTATIONS -> `Rotation`, RF_SHIMS -> `RFShim`. Unknown extensions are skipped with a
warning unless [DEFINITIONS] lists them in ``RequiredExtensions``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..sequence.events import LABEL_NAMES, Label, RFShim, Rotation, SoftDelay, Trigger
from ._pulseq_parse import error, parse_table

__all__ = ["KNOWN_EXTENSIONS", "extension_specs", "extension_lists"]

KNOWN_EXTENSIONS = ("LABELSET", "LABELINC", "TRIGGERS", "DELAYS", "ROTATIONS", "RF_SHIMS")


def extension_specs(ctx, ext_secs, required):
    """{type_id: (name, {ref: event})} for the extension specification sections."""
    path = ctx.path
    specs = {}
    for sec in ext_secs:
        parts = sec.name.split()
        if len(parts) != 3 or not parts[2].isdigit():
            raise error(path, sec.line, sec.name, "expected 'extension <NAME> <integer id>'")
        name, tid = parts[1], int(parts[2])
        if tid in specs:
            raise error(path, sec.line, sec.name, f"extension type id {tid} is used twice")
        events = {}
        if name in ("LABELSET", "LABELINC"):
            t = parse_table(sec, path, 3, string_last=True, int_cols=(0, 1), name=sec.name)
            for r in range(len(t.ids)):
                lab = t.strings[r]
                if lab not in LABEL_NAMES:
                    raise error(path, t.linenos[r], sec.name,
                                f"unknown label {lab!r} (known: {', '.join(LABEL_NAMES)})")
                events[int(t.ids[r])] = Label(lab, int(t.data[r, 1]), name == "LABELINC")
        elif name == "TRIGGERS":
            t = parse_table(sec, path, 5, int_cols=(0, 1, 2), name=sec.name)
            for r in range(len(t.ids)):
                row = t.data[r]
                if row[3] < 0 or row[4] < 0:
                    raise error(path, t.linenos[r], sec.name, "negative trigger delay or duration")
                events[int(row[0])] = Trigger(int(row[1]), int(row[2]), float(row[3]) * 1e-6,
                                              float(row[4]) * 1e-6)
        elif name == "DELAYS":
            t = parse_table(sec, path, 5, string_last=True, int_cols=(0, 1), name=sec.name)
            for r in range(len(t.ids)):
                row = t.data[r]
                events[int(row[0])] = SoftDelay(int(row[1]), float(row[2]) * 1e-6, float(row[3]), t.strings[r])
        elif name == "ROTATIONS":
            t = parse_table(sec, path, 5, name=sec.name)
            for r in range(len(t.ids)):
                q = t.data[r, 1:5]
                nq = float(np.sqrt(np.sum(q * q)))
                if not abs(nq - 1.0) < 1e-3:
                    raise error(path, t.linenos[r], sec.name, f"rotation quaternion has norm {nq:.6g}, expected 1")
                events[int(t.ids[r])] = Rotation(tuple((q / nq if abs(nq - 1.0) > 1e-7 else q).tolist()))
        elif name == "RF_SHIMS":
            for ln, row in zip(sec.linenos, sec.rows):
                tok = row.split()
                try:
                    vals = [float(x) for x in tok]
                except ValueError:
                    raise error(path, ln, sec.name, f"not a number in {row[:60]!r}") from None
                if len(vals) < 2 or vals[1] != int(vals[1]) or len(vals) != 2 + 2 * int(vals[1]):
                    raise error(path, ln, sec.name,
                                "expected 'id num_chan mag_1 phase_1 ... mag_n phase_n'")
                ch = np.asarray(vals[2:]).reshape(-1, 2)
                events[int(vals[0])] = RFShim(tuple(ch[:, 0].tolist()), tuple(ch[:, 1].tolist()))
        else:
            if name in required:
                raise error(path, sec.line, sec.name,
                            f"extension {name} is listed in RequiredExtensions but is not supported "
                            f"(supported: {', '.join(KNOWN_EXTENSIONS)})")
            warnings.warn(f"{path}:{sec.line}: skipping unsupported Pulseq extension {name}", stacklevel=4)
            events = None
        specs[tid] = (name, events)
    for name in required:
        if name not in KNOWN_EXTENSIONS:
            raise error(path, 0, "DEFINITIONS",
                        f"RequiredExtensions lists {name}, which is not supported "
                        f"(supported: {', '.join(KNOWN_EXTENSIONS)})")
    return specs


def extension_lists(ctx, sec, specs):
    """{list id: (labels tuple, extensions tuple)} following the next_id chains."""
    path = ctx.path
    t = parse_table(sec, path, 4, int_cols=(0, 1, 2, 3), name="EXTENSIONS")
    rowof = t.row_of(path)
    d = t.data.astype(np.int64)
    resolved = {}
    for r in range(d.shape[0]):
        lid = int(d[r, 0])
        labels, others = [], []
        seen = set()
        cur = r
        while True:
            if cur in seen:
                raise error(path, t.linenos[r], "EXTENSIONS", f"extension list {lid} has a cycle")
            seen.add(cur)
            _, typ, ref, nxt = (int(x) for x in d[cur])
            if typ not in specs:
                raise error(path, t.linenos[cur], "EXTENSIONS",
                            f"extension type {typ} has no 'extension <NAME> {typ}' section")
            name, events = specs[typ]
            if events is not None:
                ev = events.get(ref)
                if ev is None:
                    raise error(path, t.linenos[cur], "EXTENSIONS",
                                f"{name} event {ref} is not defined in 'extension {name} {typ}'")
                (labels if isinstance(ev, Label) else others).append(ev)
            if nxt == 0:
                break
            if nxt not in rowof:
                raise error(path, t.linenos[cur], "EXTENSIONS", f"next extension id {nxt} is not defined")
            cur = rowof[nxt]
        resolved[lid] = (tuple(labels), tuple(others))
    return resolved
