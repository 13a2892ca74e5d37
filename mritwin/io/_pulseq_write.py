"""Write a `mritwin.Sequence` as a Pulseq ``.seq`` file (format 1.5.x or 1.4.x).

Events are deduplicated into the event tables by their written text, shapes by their
stored (compressed) values. SI values are converted with `GAMMA_BAR` (T -> Hz,
T/m -> Hz/m) and s -> µs/ns; RF phases are stored in cycles, ADC phase shapes in rad.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..constants import GAMMA_BAR
from ..sequence.events import ADC, RF, Label, RFShim, Rotation, SoftDelay, TrapGrad, Trigger
from ..sequence.sequence import Sequence
from ._pulseq_shapes import compress_shape

__all__ = ["write"]

_EXT_ORDER = ("TRIGGERS", "LABELSET", "LABELINC", "DELAYS", "ROTATIONS", "RF_SHIMS")


def _num(x: float) -> str:
    """A number as Pulseq writers print it: integers plainly, others with 12 digits."""
    x = float(x)
    r = round(x)
    if abs(x - r) <= 1e-9 * max(1.0, abs(x)):
        return str(int(r))
    return f"{x:.12g}"


def _g(x: float) -> str:
    return f"{float(x):.9g}"


class _Writer:
    def __init__(self, seq: Sequence, version: tuple[int, int, int]):
        self.seq = seq
        self.version = version
        self.v15 = version[1] >= 5
        self.gr = seq.raster("gradient")
        self.rfr = seq.raster("rf")
        self.br = seq.raster("block")
        self.shapes: dict = {}  # key -> id
        self.shape_rows: list = []  # (id, num, stored)
        self.libs = {k: {} for k in ("rf", "grad", "adc")}
        self.rows = {k: [] for k in ("rf", "trap", "arb", "adc")}
        self.by_obj: dict = {}
        self.ext_types: dict = {}  # name -> {key: id}
        self.ext_rows: dict = {n: [] for n in _EXT_ORDER}
        self.lists: dict = {}  # tuple of (type, ref) -> list id
        self.list_rows: list = []

    # shapes -----------------------------------------------------------------------
    def shape(self, w) -> int:
        w = np.asarray(w, dtype=np.float64).ravel()
        stored = compress_shape(w)
        key = (w.size, stored.tobytes())
        sid = self.shapes.get(key)
        if sid is None:
            sid = self.shapes[key] = len(self.shapes) + 1
            self.shape_rows.append((sid, w.size, stored))
        return sid

    def _lib(self, kind, table, row):
        lib = self.libs[kind]
        i = lib.get(row)
        if i is None:
            i = lib[row] = len(lib) + 1
            self.rows[table].append((i, row))
        return i

    # events -----------------------------------------------------------------------
    def rf(self, ev: RF, where: str) -> int:
        shape = np.asarray(ev.shape).astype(np.complex128)
        amp = float(np.asarray(ev.amplitude))
        time = ev.time
        if time is None and abs(ev.raster - self.rfr) > 1e-12:
            m = ev.raster / self.rfr
            if abs(m - round(m)) > 1e-6 or round(m) < 1:
                raise ValueError(f"{where}: RF raster {ev.raster * 1e6:g} us is not a multiple of the "
                                 f"file's RF raster {self.rfr * 1e6:g} us")
            shape = np.repeat(shape, int(round(m)))  # held samples: exact on the finer raster
        mag = np.abs(shape)
        ph = np.mod(np.angle(shape) / (2 * np.pi), 1.0)
        ph[(ph > 1 - 1e-12) | (mag == 0)] = 0.0
        mag_id = self.shape(mag)
        ph_id = self.shape(ph)
        time_id = 0
        if time is not None:
            time_id = self.shape(np.asarray(time) / self.rfr)
        delay = _num(ev.delay * 1e6)
        freq, phase = _g(ev.freq_offset), _g(float(np.asarray(ev.phase_offset)))
        if self.v15:
            use = ev.use[0]
            row = (f"{_g(amp * GAMMA_BAR)} {mag_id} {ph_id} {time_id} {_num(ev.center * 1e6)} {delay} "
                   f"{_g(ev.freq_ppm)} {_g(ev.phase_ppm)} {freq} {phase} {use}")
        else:
            if ev.freq_ppm or ev.phase_ppm:
                raise ValueError(f"{where}: RF ppm offsets cannot be stored in Pulseq 1.4; write 1.5")
            row = f"{_g(amp * GAMMA_BAR)} {mag_id} {ph_id} {time_id} {delay} {freq} {phase}"
        return self._lib("rf", "rf", row)

    def grad(self, ev, where: str) -> int:
        if isinstance(ev, TrapGrad):
            row = ("t", f"{_g(float(np.asarray(ev.amplitude)) * GAMMA_BAR)} {_num(ev.rise_time * 1e6)} "
                        f"{_num(ev.flat_time * 1e6)} {_num(ev.fall_time * 1e6)} {_num(ev.delay * 1e6)}")
            return self._grad_lib(row)
        amp = float(np.asarray(ev.amplitude))
        w = np.asarray(ev.shape, dtype=np.float64)
        first = float(np.asarray(ev.first)) * GAMMA_BAR
        last = float(np.asarray(ev.last)) * GAMMA_BAR
        if ev.time is None:
            if abs(ev.raster - self.gr) > 1e-12:
                raise ValueError(f"{where}: arbitrary gradient raster {ev.raster * 1e6:g} us differs from "
                                 f"GradientRasterTime {self.gr * 1e6:g} us")
            sid, tid = self.shape(w), 0
        else:
            t = np.asarray(ev.time) / self.gr
            n = t.size - 2
            over = (n >= 1 and t[0] == 0 and np.allclose(t[1:-1], (np.arange(n) + 1) / 2, atol=1e-9)
                    and abs(t[-1] - (n + 1) / 2) < 1e-9 and n % 2 == 1)
            if over and self.v15:
                sid, tid = self.shape(w[1:-1]), -1
            else:
                sid, tid = self.shape(w), self.shape(t)
        if self.v15:
            row = ("g", f"{_g(amp * GAMMA_BAR)} {_g(first)} {_g(last)} {sid} {tid} {_num(ev.delay * 1e6)}")
        else:
            if tid == -1:  # pragma: no cover - only in 1.5
                raise AssertionError
            row = ("g", f"{_g(amp * GAMMA_BAR)} {sid} {tid} {_num(ev.delay * 1e6)}")
        return self._grad_lib(row)

    def _grad_lib(self, row):
        lib = self.libs["grad"]
        i = lib.get(row)
        if i is None:
            i = lib[row] = len(lib) + 1
            self.rows["trap" if row[0] == "t" else "arb"].append((i, row[1]))
        return i

    def adc(self, ev: ADC, where: str) -> int:
        ph_id = 0
        if ev.phase_modulation is not None:
            if not self.v15:
                raise ValueError(f"{where}: ADC phase modulation cannot be stored in Pulseq 1.4; write 1.5")
            ph_id = self.shape(np.asarray(ev.phase_modulation))
        head = f"{ev.num_samples} {_num(ev.dwell * 1e9)} {_num(ev.delay * 1e6)}"
        tail = f"{_g(ev.freq_offset)} {_g(float(np.asarray(ev.phase_offset)))}"
        if self.v15:
            row = f"{head} {_g(ev.freq_ppm)} {_g(ev.phase_ppm)} {tail} {ph_id}"
        else:
            if ev.freq_ppm or ev.phase_ppm:
                raise ValueError(f"{where}: ADC ppm offsets cannot be stored in Pulseq 1.4; write 1.5")
            row = f"{head} {tail}"
        return self._lib("adc", "adc", row)

    def ext(self, ev, where: str):
        if isinstance(ev, Label):
            name, row = ("LABELINC" if ev.increment else "LABELSET"), f"{int(ev.value)} {ev.name}"
        elif isinstance(ev, Trigger):
            name = "TRIGGERS"
            row = f"{ev.trigger_type} {ev.channel} {_num(ev.delay * 1e6)} {_num(ev.duration * 1e6)}"
        elif isinstance(ev, SoftDelay):
            if not self.v15:
                raise ValueError(f"{where}: soft delays cannot be stored in Pulseq 1.4; write 1.5")
            name = "DELAYS"
            row = f"{ev.num} {_num(ev.offset * 1e6)} {_g(ev.factor)} {ev.hint}"
        elif isinstance(ev, Rotation):
            name = "ROTATIONS"
            row = " ".join(f"{q:.12g}" for q in ev.quaternion)
        elif isinstance(ev, RFShim):
            name = "RF_SHIMS"
            row = f"{len(ev.magnitudes)} " + " ".join(
                f"{m:.12g} {p:.12g}" for m, p in zip(ev.magnitudes, ev.phases))
        else:
            raise ValueError(f"{where}: extension event {type(ev).__name__} cannot be written to Pulseq")
        lib = self.ext_types.setdefault(name, {})
        ref = lib.get(row)
        if ref is None:
            ref = lib[row] = len(lib) + 1
            self.ext_rows[name].append((ref, row))
        return name, ref

    def ext_list(self, entries) -> int:
        key = tuple(entries)
        lid = self.lists.get(key)
        if lid is None:
            base = len(self.list_rows)
            for j, (name, ref) in enumerate(entries):
                nxt = base + j + 2 if j + 1 < len(entries) else 0
                self.list_rows.append([base + j + 1, name, ref, nxt])
            lid = self.lists[key] = base + 1
        return lid

    # main -------------------------------------------------------------------------
    def block_rows(self):
        cache = self.by_obj
        out = []
        for i, b in enumerate(self.seq.blocks):
            where = f"block {i}"
            ids = []
            for kind, ev in (("rf", b.rf), ("gx", b.gx), ("gy", b.gy), ("gz", b.gz), ("adc", b.adc)):
                if ev is None:
                    ids.append(0)
                    continue
                k = id(ev)
                got = cache.get(k)
                if got is None or got[0] is not ev:
                    if kind == "rf":
                        eid = self.rf(ev, where)
                    elif kind == "adc":
                        eid = self.adc(ev, where)
                    else:
                        eid = self.grad(ev, where)
                    cache[k] = got = (ev, eid)
                ids.append(got[1])
            ext = 0
            if b.labels or b.extensions:
                entries = [self.ext(e, where) for e in (*b.labels, *b.extensions)]
                ext = self.ext_list(entries)
            d = b.duration / self.br
            dr = round(d)
            if abs(d - dr) > 1e-6:
                raise ValueError(f"{where}: duration {b.duration * 1e6:.4f} us is not a multiple of the "
                                 f"block raster {self.br * 1e6:g} us")
            out.append((i + 1, dr, *ids, ext))
        return out

    def text(self) -> str:
        blocks = self.block_rows()
        v = self.version
        L = ["# Pulseq sequence file", "# Created by mritwin", "", "[VERSION]",
             f"major {v[0]}", f"minor {v[1]}", f"revision {v[2]}", ""]
        defs = dict(self.seq.definitions)
        defs.setdefault("AdcRasterTime", self.seq.raster("adc"))
        defs.setdefault("BlockDurationRaster", self.br)
        defs.setdefault("GradientRasterTime", self.gr)
        defs.setdefault("RadiofrequencyRasterTime", self.rfr)
        defs["TotalDuration"] = float(self.seq.duration)
        if "ROTATIONS" in self.ext_types:
            req = str(defs.get("RequiredExtensions", "")).split()
            if "ROTATIONS" not in req:
                defs["RequiredExtensions"] = " ".join([*req, "ROTATIONS"])
        L.append("[DEFINITIONS]")
        for k in sorted(defs):
            val = defs[k]
            if isinstance(val, str):
                s = val
            elif isinstance(val, (tuple, list, np.ndarray)):
                s = " ".join(f"{x:.12g}" if isinstance(x, (int, float, np.number)) else str(x) for x in val)
            elif isinstance(val, (int, float, np.number)):
                s = f"{float(val):.12g}"
            else:
                raise ValueError(f"definition {k!r} has an unsupported type {type(val).__name__}")
            if not k or any(c.isspace() for c in k) or "\n" in s:
                raise ValueError(f"definition {k!r} cannot be written (whitespace in the key or a newline)")
            L.append(f"{k} {s}")
        L += ["", "# Format of blocks:", "# NUM DUR RF  GX  GY  GZ  ADC  EXT", "[BLOCKS]"]
        L.extend(" ".join(map(str, r)) for r in blocks)
        L.append("")
        if self.rows["rf"]:
            if self.v15:
                L += ["# Format of RF events:",
                      "# id ampl. mag_id phase_id time_shape_id center delay freqPPM phasePPM freq phase use",
                      "# ..   Hz      ..       ..            ..     us    us     ppm  rad/MHz   Hz   rad  ..",
                      "# Field 'use' is the initial of: excitation refocusing inversion saturation "
                      "preparation other undefined"]
            else:
                L += ["# Format of RF events:", "# id amplitude mag_id phase_id time_shape_id delay freq phase",
                      "# ..        Hz   ....     ....          ....    us   Hz   rad"]
            L.append("[RF]")
            L.extend(f"{i} {r}" for i, r in self.rows["rf"])
            L.append("")
        if self.rows["arb"]:
            L += ["# Format of arbitrary gradients:",
                  "#   time_shape_id of 0 means default timing (stepping with grad_raster starting at 1/2 of grad_raster)"]
            if self.v15:
                L += ["# id amplitude first last amp_shape_id time_shape_id delay",
                      "# ..      Hz/m  Hz/m Hz/m        ..         ..          us"]
            else:
                L += ["# id amplitude amp_shape_id time_shape_id delay", "# ..      Hz/m       ..         ..          us"]
            L.append("[GRADIENTS]")
            L.extend(f"{i} {r}" for i, r in self.rows["arb"])
            L.append("")
        if self.rows["trap"]:
            L += ["# Format of trapezoid gradients:", "# id amplitude rise flat fall delay",
                  "# ..      Hz/m   us   us   us    us", "[TRAP]"]
            L.extend(f"{i} {r}" for i, r in self.rows["trap"])
            L.append("")
        if self.rows["adc"]:
            if self.v15:
                L += ["# Format of ADC events:", "# id num dwell delay freqPPM phasePPM freq phase phase_id",
                      "# ..  ..    ns    us     ppm  rad/MHz   Hz   rad       .."]
            else:
                L += ["# Format of ADC events:", "# id num dwell delay freq phase", "# ..  ..    ns    us   Hz   rad"]
            L.append("[ADC]")
            L.extend(f"{i} {r}" for i, r in self.rows["adc"])
            L.append("")
        if self.list_rows:
            type_id = {n: k + 1 for k, n in enumerate(n for n in _EXT_ORDER if n in self.ext_types)}
            L += ["# Format of extension lists:", "# id type ref next_id", "# next_id of 0 terminates the list",
                  "# Extension list is followed by extension specifications", "[EXTENSIONS]"]
            L.extend(f"{i} {type_id[n]} {ref} {nxt}" for i, n, ref, nxt in self.list_rows)
            L.append("")
            heads = {
                "TRIGGERS": ["# Extension specification for digital output and input triggers:",
                             "# id type channel delay (us) duration (us)"],
                "LABELSET": ["# Extension specification for setting labels:", "# id set labelstring"],
                "LABELINC": ["# Extension specification for setting labels:", "# id set labelstring"],
                "DELAYS": ["# Extension specification for soft delays:", "# id num offset factor hint",
                           "# ..  ..     us     ..   .."],
                "ROTATIONS": ["# Extension specification for rotation events:",
                              "# id RotQuat0 RotQuatX RotQuatY RotQuatZ"],
                "RF_SHIMS": ["# Extension specification for RF shimming:",
                             "# id num_chan magn_c1 phase_c1 magn_c2 phase_c2 ..."],
            }
            for n, tid in type_id.items():
                L += heads[n] + [f"extension {n} {tid}"]
                L.extend(f"{i} {r}" for i, r in self.ext_rows[n])
                L.append("")
        if self.shape_rows:
            L += ["# Sequence Shapes", "[SHAPES]", ""]
            for sid, num, stored in self.shape_rows:
                L.append(f"shape_id {sid}")
                L.append(f"num_samples {num}")
                L.extend(f"{x:.9g}" for x in stored.tolist())
                L.append("")
        return "\n".join(L) + "\n"


def _parse_version(version: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in str(version).split("."))
    except ValueError:
        parts = ()
    if len(parts) == 2:
        parts = (*parts, 0)
    if len(parts) != 3 or parts[0] != 1 or parts[1] not in (4, 5):
        raise ValueError(f"write_seq: version must be '1.4.x' or '1.5.x', got {version!r}")
    return parts


def write(seq: Sequence, path, *, version: str = "1.5.1") -> str:
    if not isinstance(seq, Sequence):
        raise TypeError(f"write_seq needs a mritwin.Sequence, got {type(seq).__name__}")
    v = _parse_version(version)
    w = _Writer(seq, v)
    body = w.text()
    md5 = hashlib.md5(body.encode("utf-8")).hexdigest()
    sig = ("\n[SIGNATURE]\n"
           "# This is the hash of the Pulseq file, calculated right before the [SIGNATURE] section was added\n"
           "# It can be reproduced/verified with md5sum if the file trimmed to the position right above [SIGNATURE]\n"
           "# The new line character preceding [SIGNATURE] BELONGS to the signature (and needs to be stripped "
           "away for recalculating/verification)\n"
           f"Type md5\nHash {md5}\n")
    Path(path).write_bytes((body + sig).encode("utf-8"))
    return md5
