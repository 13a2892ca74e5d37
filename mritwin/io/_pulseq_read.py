"""Read Pulseq ``.seq`` files (1.2.0 – 1.5.x) into a `mritwin.Sequence`.

Pulseq units are converted here, once: Hz -> T and Hz/m -> T/m by dividing by
`mritwin.constants.GAMMA_BAR`, µs/ns -> s, RF phase shapes (stored in cycles) -> rad.
Every unique event of the file is built once and shared (same Python object) by all
blocks that use its id, which is what the discretizer groups on.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import re
import types
import warnings
from pathlib import Path

import numpy as np

from ..constants import (
    DEFAULT_ADC_RASTER,
    DEFAULT_BLOCK_RASTER,
    DEFAULT_GRADIENT_RASTER,
    DEFAULT_RF_RASTER,
    GAMMA_BAR,
)
from ..sequence.events import (
    ADC,
    RF,
    ArbGrad,
    RFShim,
    TrapGrad,
)
from ..sequence.kspace import undefined_rf_use
from ..sequence.sequence import Block, Sequence
from ._pulseq_ext import KNOWN_EXTENSIONS, extension_lists, extension_specs
from ._pulseq_parse import (
    PulseqError,
    Section,
    Table,
    error,
    parse_definitions,
    parse_shapes,
    parse_table,
    parse_version,
    split_sections,
)
from ._pulseq_shapes import decompress_shape

__all__ = ["read", "RF_USE_CODES", "KNOWN_EXTENSIONS"]

RF_USE_CODES = {"e": "excitation", "r": "refocusing", "i": "inversion", "s": "saturation",
                "p": "preparation", "o": "other", "u": "undefined"}
_KNOWN_SECTIONS = ("VERSION", "DEFINITIONS", "BLOCKS", "RF", "GRADIENTS", "TRAP", "ADC",
                   "DELAYS", "SHAPES", "EXTENSIONS", "SIGNATURE")
_TIME_TOL = 1e-9  # [s] slack when comparing event ends with block durations


# -- fast construction of immutable modules ---------------------------------------------
def _field_names(cls):
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    slots = getattr(cls, "__slots__", ())  # Block/Sequence are slotted classes
    return frozenset(n for n in slots if n not in ("__weakref__", "__dict__"))


_FIELDS = {cls: _field_names(cls) for cls in (RF, ArbGrad, TrapGrad, ADC, Block, Sequence)}
_HAS_DICT = {cls: not hasattr(cls, "__slots__") or "__dict__" in getattr(cls, "__slots__", ())
             for cls in _FIELDS}


def _new(cls, slow, **fields):
    """Build ``cls`` from already validated fields, bypassing the checking constructor.

    Falls back to ``slow()`` (the public constructor) if the class' fields changed.
    """
    if fields.keys() != _FIELDS[cls]:
        return slow()
    obj = object.__new__(cls)
    if _HAS_DICT[cls]:
        obj.__dict__.update(fields)
    else:
        for k, v in fields.items():
            object.__setattr__(obj, k, v)
    return obj


def _arr(x):
    return np.asarray(x, dtype=np.float64)


# -- context ----------------------------------------------------------------------------
class _Ctx:
    def __init__(self, path, version, defs, def_lines=None):
        self.path = path
        self.def_lines = def_lines or {}  # {definition key: its line}, for error messages
        self.version = version
        self.v = version[0] * 1_000_000 + version[1] * 1000 + version[2]
        self.defs = defs
        self.grad_raster = self._raster("GradientRasterTime", DEFAULT_GRADIENT_RASTER)
        self.rf_raster = self._raster("RadiofrequencyRasterTime", DEFAULT_RF_RASTER)
        self.adc_raster = self._raster("AdcRasterTime", DEFAULT_ADC_RASTER)
        self.block_raster = self._raster("BlockDurationRaster", DEFAULT_BLOCK_RASTER)
        self.shapes = {}
        self._shape_cache = {}
        self.ptx_warned = set()

    def _raster(self, key, default):
        v = self.defs.get(key, default)
        if isinstance(v, tuple):
            v = v[0]
        if not isinstance(v, float) or not (v > 0 and np.isfinite(v)):
            raise error(self.path, self.def_lines.get(key, 0), "DEFINITIONS",
                        f"{key} must be a positive number [s], got {v!r}")
        return v

    def shape(self, sid, table, row, what):
        """Decompressed shape ``sid`` (cached), erroring at the referencing row."""
        got = self._shape_cache.get(sid)
        if got is not None:
            return got
        if sid not in self.shapes:
            raise error(self.path, table.linenos[row], table.section,
                        f"event {int(table.ids[row])}: {what} shape id {sid} is not defined in [SHAPES]")
        num, stored, line, force = self.shapes[sid]
        try:
            w = decompress_shape(stored, num, force=force)
        except ValueError as e:
            raise error(self.path, line, "SHAPES", f"shape {sid}: {e}") from None
        self._shape_cache[sid] = w
        return w


# -- events -----------------------------------------------------------------------------
def _rf_events(ctx, t: Table, uses):
    """{id: RF}; ``t`` has the columns of its version (ids first)."""
    path = ctx.path
    v = ctx.v
    out, durations = {}, {}
    shims = {}
    d = t.data
    ncol = d.shape[1]
    rows = d.tolist()
    cshape_cache = {}
    for r in range(d.shape[0]):
        row = rows[r]
        rid = int(row[0])
        amp_hz = row[1]
        mag_id, ph_id = int(row[2]), int(row[3])
        extra = None
        if v >= 1_005_000:
            time_id, center_us, delay_us = int(row[4]), row[5], row[6]
            freq_ppm, phase_ppm, freq, phase = row[7], row[8], row[9], row[10]
            use = RF_USE_CODES.get(uses[r]) if uses is not None else "undefined"
            if use is None:
                raise error(path, t.linenos[r], "RF",
                            f"RF {rid}: unknown use {uses[r]!r} (expected one of {''.join(RF_USE_CODES)})")
            if ncol > 11:
                extra = row[11:13]
        elif v >= 1_004_000:
            time_id, delay_us, freq, phase = int(row[4]), row[5], row[6], row[7]
            center_us, freq_ppm, phase_ppm, use = None, 0.0, 0.0, "undefined"
            if ncol > 8:
                extra = row[8:10]
        else:
            time_id, delay_us, freq, phase = 0, row[4], row[5], row[6]
            center_us, freq_ppm, phase_ppm, use = None, 0.0, 0.0, "undefined"
            if ncol > 7:
                extra = row[7:9]
        if delay_us < 0:
            raise error(path, t.linenos[r], "RF", f"RF {rid}: negative delay {delay_us} us")
        key = (mag_id, ph_id)
        shp = cshape_cache.get(key)
        if shp is None:
            if mag_id <= 0:
                raise error(path, t.linenos[r], "RF", f"RF {rid}: magnitude shape id must be > 0, got {mag_id}")
            mag = ctx.shape(mag_id, t, r, "magnitude")
            if ph_id > 0:
                ph = ctx.shape(ph_id, t, r, "phase")
                if ph.size != mag.size:
                    raise error(path, t.linenos[r], "RF",
                                f"RF {rid}: phase shape {ph_id} has {ph.size} samples, "
                                f"magnitude shape {mag_id} has {mag.size}")
                shp = mag * np.exp(2j * np.pi * ph)
            else:
                shp = mag.astype(np.complex128)
            if shp.size == 0:
                raise error(path, t.linenos[r], "RF", f"RF {rid}: empty shape")
            cshape_cache[key] = shp
        n = shp.size
        raster = ctx.rf_raster
        if time_id > 0:
            tt = ctx.shape(time_id, t, r, "time") * raster
            if tt.size != n:
                raise error(path, t.linenos[r], "RF",
                            f"RF {rid}: time shape {time_id} has {tt.size} samples, the pulse has {n}")
            if np.any(np.diff(tt) < 0) or tt[0] < 0:
                k = _channel_count(tt)
                if k is None:
                    raise error(path, t.linenos[r], "RF",
                                f"RF {rid}: time shape {time_id} is not non-decreasing from >= 0")
                # multi-channel (pTx) pulse: channel waveforms stored one after another
                # with the same time points; without transmit maps we simulate their sum
                if time_id not in ctx.ptx_warned:
                    ctx.ptx_warned.add(time_id)
                    warnings.warn(f"{path}:{t.linenos[r]}: [RF] RF {rid} holds {k} transmit channels "
                                  "(pTx); their waveforms are summed", stacklevel=4)
                n = tt.size // k
                tt = tt[:n]
                shp = shp.reshape(k, n).sum(axis=0)
                cshape_cache[(key, "ptx")] = shp
            times = tuple(tt.tolist())
            shape_dur = np.ceil(tt[-1] / raster - 1e-9) * raster
            st = tt
        elif time_id == 0:
            times = None
            shape_dur = n * raster
            st = (np.arange(n) + 0.5) * raster
        else:
            raise error(path, t.linenos[r], "RF", f"RF {rid}: invalid time shape id {time_id}")
        if center_us is None:
            a = np.abs(shp)
            pk = np.flatnonzero(a >= a.max() * 0.99999)
            center = 0.5 * (st[pk[0]] + st[pk[-1]])
        else:
            center = center_us * 1e-6
        delay = delay_us * 1e-6
        amp = amp_hz / GAMMA_BAR

        def slow(amp=amp, shp=shp, phase=phase, freq=freq, delay=delay, times=times,
                 shape_dur=shape_dur, center=center, use=use, freq_ppm=freq_ppm,
                 phase_ppm=phase_ppm):
            return RF(amp, shp, phase_offset=phase, freq_offset=freq, delay=delay,
                      raster=ctx.rf_raster, time=times, shape_duration=shape_dur, center=center,
                      use=use, freq_ppm=freq_ppm, phase_ppm=phase_ppm)

        out[rid] = _new(
            RF, slow, amplitude=_arr(amp), shape=shp, phase_offset=_arr(phase),
            freq_offset=float(freq), delay=float(delay), raster=float(raster), time=times,
            shape_duration=float(shape_dur), center=float(center), use=use, dead_time=0.0,
            ringdown_time=0.0, freq_ppm=float(freq_ppm), phase_ppm=float(phase_ppm))
        durations[rid] = delay + shape_dur
        if extra is not None and extra[0] > 0 and extra[1] > 0:
            mags = ctx.shape(int(extra[0]), t, r, "shim magnitude")
            phs = ctx.shape(int(extra[1]), t, r, "shim phase")
            shims[rid] = RFShim(tuple(mags.tolist()), tuple(phs.tolist()))
    return out, durations, shims


def _channel_count(tt):
    """k when ``tt`` is k > 1 copies of one non-decreasing time axis, else None."""
    n = tt.size
    for k in range(2, 65):
        if n % k == 0:
            seg = tt[: n // k]
            if np.all(np.diff(seg) >= 0) and seg[0] >= 0 and np.array_equal(np.tile(seg, k), tt):
                return k
    return None


def _trap_events(ctx, t):
    out = {}
    for r, row in enumerate(t.data.tolist()):
        gid = int(row[0])
        amp, rise, flat, fall, delay = row[1:6]
        if min(rise, flat, fall, delay) < 0:
            raise error(ctx.path, t.linenos[r], "TRAP", f"trapezoid {gid}: negative time")
        out[gid] = (amp / GAMMA_BAR, rise * 1e-6, flat * 1e-6, fall * 1e-6, delay * 1e-6)
    return out


def _arb_grad_data(ctx, t):
    """{id: dict(amp, shape, time, delay, first, last, duration)} (channel-free)."""
    out = {}
    v = ctx.v
    for r, row in enumerate(t.data.tolist()):
        gid = int(row[0])
        amp = row[1] / GAMMA_BAR
        if v >= 1_005_000:
            first, last = row[2] / GAMMA_BAR, row[3] / GAMMA_BAR
            sid, tid, delay_us = int(row[4]), int(row[5]), row[6]
        elif v >= 1_004_000:
            first = last = None
            sid, tid, delay_us = int(row[2]), int(row[3]), row[4]
        else:
            first = last = None
            sid, tid, delay_us = int(row[2]), 0, row[3]
        if delay_us < 0:
            raise error(ctx.path, t.linenos[r], t.section, f"gradient {gid}: negative delay")
        if sid <= 0:
            raise error(ctx.path, t.linenos[r], t.section, f"gradient {gid}: shape id must be > 0, got {sid}")
        w = ctx.shape(sid, t, r, "amplitude")
        if w.size == 0:
            raise error(ctx.path, t.linenos[r], t.section, f"gradient {gid}: empty shape")
        gr = ctx.grad_raster
        time = None
        if tid > 0:
            tt = ctx.shape(tid, t, r, "time") * gr
            if tt.size != w.size:
                raise error(ctx.path, t.linenos[r], t.section,
                            f"gradient {gid}: time shape {tid} has {tt.size} samples, amplitude shape has {w.size}")
            if tt[0] < 0 or np.any(np.diff(tt) < 0):
                raise error(ctx.path, t.linenos[r], t.section,
                            f"gradient {gid}: time shape {tid} is not non-decreasing from >= 0")
            time = tt
            dur = tt[-1]
            if first is None:
                first, last = amp * w[0], amp * w[-1]
        elif tid == -1:
            # oversampled (Pulseq 1.5.1): samples at (k + 1) * raster / 2, first/last at the edges
            n = w.size
            if first is None:
                first = 0.0
                last = amp * w[-1]
            dur = (n + 1) * gr / 2
            time = np.concatenate([[0.0], (np.arange(n) + 1) * gr / 2, [dur]])
            w = np.concatenate([[first / amp if amp else 0.0], w, [last / amp if amp else 0.0]])
        elif tid == 0:
            dur = w.size * gr
            if last is None:
                last = amp * ((3 * w[-1] - w[-2]) * 0.5 if w.size > 1 else w[-1])
        else:
            raise error(ctx.path, t.linenos[r], t.section, f"gradient {gid}: invalid time shape id {tid}")
        out[gid] = dict(amp=amp, shape=w, time=time, delay=delay_us * 1e-6, first=first,
                        last=last, duration=delay_us * 1e-6 + dur, line=t.linenos[r], tid=tid)
    return out


def _make_grad(ch, spec, raster):
    if isinstance(spec, tuple):
        amp, rise, flat, fall, delay = spec
        return _new(TrapGrad, lambda: TrapGrad(ch, amp, rise, flat, fall, delay), channel=ch,
                    amplitude=_arr(amp), rise_time=float(rise), flat_time=float(flat),
                    fall_time=float(fall), delay=float(delay))
    time = None if spec["time"] is None else tuple(spec["time"].tolist())
    first = 0.0 if spec["first"] is None else spec["first"]
    return _new(
        ArbGrad,
        lambda: ArbGrad(ch, spec["amp"], spec["shape"], raster=raster, time=time,
                        delay=spec["delay"], first=first, last=spec["last"]),
        channel=ch, amplitude=_arr(spec["amp"]), shape=_arr(spec["shape"]), first=_arr(first),
        last=_arr(spec["last"]), raster=float(raster), time=time, delay=float(spec["delay"]))


def _adc_events(ctx, t):
    out, durations = {}, {}
    for r, row in enumerate(t.data.tolist()):
        aid = int(row[0])
        num, dwell_ns, delay_us = row[1], row[2], row[3]
        if ctx.v >= 1_005_000:
            freq_ppm, phase_ppm, freq, phase, ph_id = row[4], row[5], row[6], row[7], int(row[8])
        else:
            freq_ppm, phase_ppm, freq, phase, ph_id = 0.0, 0.0, row[4], row[5], 0
        if num < 1 or dwell_ns <= 0 or delay_us < 0:
            raise error(ctx.path, t.linenos[r], "ADC",
                        f"ADC {aid}: need num >= 1, dwell > 0 and delay >= 0, got {num:g}, {dwell_ns:g} ns, {delay_us:g} us")
        pm = None
        if ph_id > 0:
            pm = ctx.shape(ph_id, t, r, "phase")
            if pm.size != int(num):
                raise error(ctx.path, t.linenos[r], "ADC",
                            f"ADC {aid}: phase shape {ph_id} has {pm.size} samples, num_samples is {int(num)}")
        n = int(num)
        dwell = dwell_ns * 1e-9
        delay = delay_us * 1e-6
        out[aid] = _new(
            ADC, lambda n=n, dwell=dwell, delay=delay, phase=phase, freq=freq, fp=freq_ppm,
            pp=phase_ppm, pm=pm: ADC(n, dwell, delay=delay, phase_offset=phase, freq_offset=freq,
                                     freq_ppm=fp, phase_ppm=pp, phase_modulation=pm),
            num_samples=n, dwell=float(dwell), delay=float(delay), phase_offset=_arr(phase),
            freq_offset=float(freq), dead_time=0.0, freq_ppm=float(freq_ppm),
            phase_ppm=float(phase_ppm), phase_modulation=None if pm is None else _arr(pm))
        durations[aid] = delay + n * dwell
    return out, durations


# -- signature --------------------------------------------------------------------------
def _check_signature(path, raw: bytes, sec: Section, strict: bool):
    kv = {}
    for row, ln in zip(sec.rows, sec.linenos):
        p = row.split()
        if len(p) == 2 and p[0] in ("Type", "Hash") and p[0] not in kv:
            kv[p[0]] = p[1]
            continue
        # the toolboxes read only 'Type <name>' and 'Hash <hex>': anything else in the
        # section is not covered by the hash (it follows the signed part of the file)
        msg = (f"{path}:{ln}: [SIGNATURE] unexpected row {row[:60]!r} (expected 'Type <name>' or "
               f"'Hash <hex>', once each); ignored")
        if strict:
            raise PulseqError(msg)
        warnings.warn(msg, stacklevel=4)
    typ, want = kv.get("Type", "").lower(), kv.get("Hash", "").lower()
    if not typ or not want:
        raise error(path, sec.line, "SIGNATURE", "needs 'Type' and 'Hash' entries")
    if typ not in ("md5", "sha1", "sha256"):
        msg = f"{path}:{sec.line}: [SIGNATURE] unsupported hash type {typ!r}; not verified"
        if strict:
            raise PulseqError(msg)
        warnings.warn(msg, stacklevel=4)
        return
    idx = raw.rfind(b"\n[SIGNATURE]") + 1
    if idx == 0:
        m = re.search(rb"^[ \t]*\[SIGNATURE\]", raw, re.M)
        idx = m.start() if m else 0
    mv = memoryview(raw)
    cands = [mv[:idx - 1] if idx > 0 else mv[:0], mv[:idx]]
    if idx > 1 and raw[idx - 2:idx] == b"\r\n":
        cands.append(mv[:idx - 2])
    if any(hashlib.new(typ, c).hexdigest() == want for c in cands):
        return
    msg = f"{path}:{sec.line}: [SIGNATURE] {typ} hash mismatch: the file was modified after it was signed"
    if strict:
        raise PulseqError(msg)
    warnings.warn(msg, stacklevel=4)


# -- main -------------------------------------------------------------------------------
def _resolve_use(rf: RF, threshold_deg: float) -> RF:
    """A pulse of undefined use as refocusing at or above ``threshold_deg``, else excitation."""
    if rf.use != "undefined":
        return rf
    return dataclasses.replace(rf, use=undefined_rf_use(rf, threshold_deg))


def read(path, *, strict: bool = False, refocusing_threshold_deg: float | None = None) -> Sequence:
    # the reader allocates many small immutable objects and no cycles: pausing the
    # cyclic garbage collector (restored afterwards) saves repeated full scans
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read(path, strict, refocusing_threshold_deg)
    finally:
        if enabled:
            gc.enable()


def _read(path, strict: bool, refocusing_threshold_deg: float | None = None) -> Sequence:
    path_s = str(path)
    if refocusing_threshold_deg is not None and not (
            isinstance(refocusing_threshold_deg, (int, float)) and 0 < refocusing_threshold_deg <= 360):
        raise ValueError(f"refocusing_threshold_deg must be a number of degrees in (0, 360], "
                         f"got {refocusing_threshold_deg!r}")
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise PulseqError(f"{path_s}: is a directory, not a Pulseq file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(path_s, line, "", f"not a text file (invalid UTF-8 byte {raw[e.start]:#04x})") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise error(path_s, line, "", "not a text file (NUL byte)")
    if not text.strip():
        raise error(path_s, 0, "", "empty file")
    sections = split_sections(text, path_s)
    by_name: dict[str, Section] = {}
    ext_secs = []
    for sec in sections:
        if sec.name.startswith("extension"):
            ext_secs.append(sec)
            continue
        if sec.name not in _KNOWN_SECTIONS:
            msg = f"{path_s}:{sec.line}: unknown section [{sec.name}]"
            if strict:
                raise PulseqError(msg)
            warnings.warn(msg + " skipped", stacklevel=3)
            continue
        if sec.name in by_name:
            raise error(path_s, sec.line, sec.name, f"section appears twice (first at line {by_name[sec.name].line})")
        by_name[sec.name] = sec
    if "VERSION" not in by_name:
        raise error(path_s, 0, "VERSION", "missing [VERSION] section (not a Pulseq 1.2+ file?)")
    version = parse_version(by_name["VERSION"], path_s)
    vnum = version[0] * 1_000_000 + version[1] * 1000 + version[2]
    if vnum < 1_002_000:
        raise error(path_s, by_name["VERSION"].line, "VERSION",
                    f"version {'.'.join(map(str, version))} is not supported (need 1.2.0 or later)")
    if version[0] > 1 or (version[0] == 1 and version[1] > 5):
        msg = (f"{path_s}: Pulseq version {'.'.join(map(str, version))} is newer than the supported "
               "1.5.x; reading it as 1.5")
        if strict:
            raise PulseqError(msg)
        warnings.warn(msg, stacklevel=3)
        version = (1, 5, 1)
    dsec = by_name.get("DEFINITIONS")
    defs = parse_definitions(dsec, path_s) if dsec is not None else {}
    def_lines = {r.split()[0]: ln for r, ln in zip(dsec.rows, dsec.linenos)} if dsec is not None else {}
    ctx = _Ctx(path_s, version, defs, def_lines)
    v = ctx.v
    if "SIGNATURE" in by_name:
        _check_signature(path_s, raw, by_name["SIGNATURE"], strict)
    if "SHAPES" in by_name:
        ctx.shapes = parse_shapes(by_name["SHAPES"], path_s, force_compressed=v < 1_004_000)
    if "BLOCKS" not in by_name:
        raise error(path_s, 0, "BLOCKS", "missing [BLOCKS] section")

    # event tables -------------------------------------------------------------------
    empty = Section("", 0)
    rf_cols = (12, 14) if v >= 1_005_000 else (8, 10) if v >= 1_004_000 else (7, 9)
    rf_t = parse_table(by_name.get("RF", empty), path_s, rf_cols, string_last=v >= 1_005_000,
                       int_cols=(0, 2, 3, 4), name="RF")
    if v >= 1_005_000 and rf_t.data.shape[1] == 13:  # pTx variant: shim ids before 'use'
        pass
    rf_t.row_of(path_s)  # duplicate ids
    rfs, rf_dur, rf_shims = _rf_events(ctx, rf_t, rf_t.strings)
    if refocusing_threshold_deg is not None:
        rfs = {rid: _resolve_use(rf, refocusing_threshold_deg) for rid, rf in rfs.items()}

    g_cols = 7 if v >= 1_005_000 else 5 if v >= 1_004_000 else 4
    g_t = parse_table(by_name.get("GRADIENTS", empty), path_s, g_cols,
                      int_cols=(0, 4, 5) if v >= 1_005_000 else (0, 2, 3), name="GRADIENTS")
    g_t.row_of(path_s)
    tr_t = parse_table(by_name.get("TRAP", empty), path_s, 6, name="TRAP")
    tr_t.row_of(path_s)
    grads: dict = {}
    arb = _arb_grad_data(ctx, g_t)
    traps = _trap_events(ctx, tr_t)
    both = set(arb) & set(traps)
    if both:
        gid = min(both)
        raise error(path_s, tr_t.linenos[tr_t.row_of(path_s)[gid]], "TRAP",
                    f"gradient id {gid} is defined in both [GRADIENTS] and [TRAP]")
    grads.update(traps)
    grads.update(arb)
    adc_t = parse_table(by_name.get("ADC", empty), path_s, 9 if v >= 1_005_000 else 6,
                        int_cols=(0, 1, 2, 8) if v >= 1_005_000 else (0, 1, 2), name="ADC")
    adc_t.row_of(path_s)
    adcs, adc_dur = _adc_events(ctx, adc_t)

    delays = {}
    if "DELAYS" in by_name:
        if v >= 1_004_000:
            raise error(path_s, by_name["DELAYS"].line, "DELAYS",
                        "a [DELAYS] section is not allowed in Pulseq 1.4 and later")
        dt = parse_table(by_name["DELAYS"], path_s, 2, name="DELAYS")
        dt.row_of(path_s)
        for r in range(len(dt.ids)):
            if dt.data[r, 1] < 0:
                raise error(path_s, dt.linenos[r], "DELAYS", "negative delay")
            delays[int(dt.ids[r])] = dt.data[r, 1] * 1e-6

    required = ()
    if "RequiredExtensions" in defs:
        required = tuple(str(defs["RequiredExtensions"]).split())
    specs = extension_specs(ctx, ext_secs, required)
    ext_lists = extension_lists(ctx, by_name["EXTENSIONS"], specs) if "EXTENSIONS" in by_name else {}

    # blocks ---------------------------------------------------------------------------
    bsec = by_name["BLOCKS"]
    b_cols = (8,) if v >= 1_003_000 else (7, 8)
    bt = parse_table(bsec, path_s, b_cols, int_cols=tuple(range(8)), name="BLOCKS")
    d = bt.data.astype(np.int64)
    nb = d.shape[0]
    if nb == 0:
        raise error(path_s, bsec.line, "BLOCKS", "no blocks")
    if d.shape[1] == 7:
        d = np.concatenate([d, np.zeros((nb, 1), np.int64)], axis=1)
    if np.any(d < 0):
        r, c = np.argwhere(d < 0)[0]
        raise error(path_s, bt.linenos[r], "BLOCKS", f"column {c + 1} must be >= 0, got {d[r, c]}")
    # block ids: positive and increasing row by row. The toolboxes place a block by its id
    # (MATLAB: at index id) while the file is played row by row: a repeated or
    # out-of-order id makes the two disagree, so it is an error, not a guess.
    if d[0, 0] < 1:
        raise error(path_s, bt.linenos[0], "BLOCKS", f"block ids must be positive, got {d[0, 0]}")
    back = np.flatnonzero(d[1:, 0] <= d[:-1, 0])
    if back.size:
        r = int(back[0]) + 1
        what = "repeats" if d[r, 0] == d[r - 1, 0] else "follows"
        raise error(path_s, bt.linenos[r], "BLOCKS",
                    f"block id {d[r, 0]} {what} block id {d[r - 1, 0]} (line {bt.linenos[r - 1]}); "
                    "block ids must increase from row to row")

    def lookup(col, table, what, section_name):
        ids = np.fromiter(table.keys(), dtype=np.int64, count=len(table))
        ok = (col == 0) | np.isin(col, ids)
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise error(path_s, bt.linenos[r], "BLOCKS",
                        f"block {d[r, 0]} uses {what} {col[r]}, which is not defined in {section_name}")

    lookup(d[:, 2], rfs, "RF event", "[RF]")
    for c, ch in ((3, "x"), (4, "y"), (5, "z")):
        lookup(d[:, c], grads, f"g{ch} gradient", "[GRADIENTS] or [TRAP]")
    lookup(d[:, 6], adcs, "ADC event", "[ADC]")
    lookup(d[:, 7], ext_lists, "extension list", "[EXTENSIONS]")
    if v < 1_004_000:
        lookup(d[:, 1], delays, "delay", "[DELAYS]")

    # durations (vectorized through lookup tables indexed by an id's rank, not by the id:
    # ids may be as large as the file likes)
    def dur_of(col, table_dur):
        if col.size == 0 or not table_dur:
            return np.zeros(col.size)
        keys = np.fromiter(table_dur, dtype=np.int64, count=len(table_dur))
        order = np.argsort(keys)
        lut = np.concatenate([[0.0], np.fromiter(table_dur.values(), dtype=np.float64,
                                                 count=len(table_dur))[order]])
        return lut[_rank(col, keys[order])]

    g_dur = {k: (s[4] + s[1] + s[2] + s[3]) if isinstance(s, tuple) else s["duration"]
             for k, s in grads.items()}
    longest = np.max(np.stack([
        dur_of(d[:, 2], rf_dur), dur_of(d[:, 3], g_dur), dur_of(d[:, 4], g_dur),
        dur_of(d[:, 5], g_dur), dur_of(d[:, 6], adc_dur)]), axis=0)
    if v >= 1_004_000:
        bdur = d[:, 1] * ctx.block_raster
        short = np.flatnonzero(bdur < longest - _TIME_TOL)
        if short.size:
            r = int(short[0])
            msg = (f"{path_s}:{bt.linenos[r]}: [BLOCKS] block {d[r, 0]} lasts {bdur[r] * 1e6:.3f} us "
                   f"but its longest event ends at {longest[r] * 1e6:.3f} us "
                   f"({short.size} such block(s)); keeping the file's block durations")
            if strict:
                raise PulseqError(msg)
            warnings.warn(msg, stacklevel=3)
    else:
        bdur = np.maximum(longest, dur_of(d[:, 1], delays))

    # pre-1.5 arbitrary gradients: 'first' continues the previous block's 'last'
    if v < 1_005_000 and arb:
        _infer_first(d, arb, grads, bdur)

    grad_objs = {}

    def grad_obj(gid, ch):
        key = (gid, ch)
        g = grad_objs.get(key)
        if g is None:
            g = grad_objs[key] = _make_grad(ch, grads[gid], ctx.grad_raster)
        return g

    # identical rows (same events, duration and extension list) share one Block: build
    # each distinct row once, then index
    dense = d[:, 1:].copy()  # event ids as ranks, so that rows pack into one integer key
    for c in range(1, dense.shape[1]):
        used = np.unique(dense[:, c])
        dense[:, c] = np.searchsorted(used, dense[:, c])
    first_row, inverse = _unique_rows(dense)
    du = d[first_row]
    n_u = du.shape[0]
    gcols = []
    for c, ch in ((3, "x"), (4, "y"), (5, "z")):
        col = du[:, c]
        used = np.unique(col[col > 0])
        objs = np.empty(used.size + 1, dtype=object)
        for j, gid in enumerate(used.tolist()):
            objs[j + 1] = grad_obj(gid, ch)
        gcols.append(objs[_rank(col, used)].tolist())

    def lut_of(table, col):
        used = np.unique(col[col > 0])
        lut = np.empty(used.size + 1, dtype=object)
        for j, k in enumerate(used.tolist()):
            lut[j + 1] = table[k]
        return lut[_rank(col, used)].tolist()

    rf_col = lut_of(rfs, du[:, 2])
    adc_col = lut_of(adcs, du[:, 6])
    ext_col = du[:, 7].tolist()
    rf_ids = du[:, 2].tolist()
    durs = bdur[first_row].tolist()
    empty_ext = ((), ())
    exts = [ext_lists[e] if e else empty_ext for e in ext_col]
    if rf_shims:
        exts = [(lab, oth + (rf_shims[r],)) if r in rf_shims else (lab, oth)
                for (lab, oth), r in zip(exts, rf_ids)]
    setters = _block_setters()
    gx_col, gy_col, gz_col = gcols
    ublocks = np.empty(n_u, dtype=object)
    rows = zip(rf_col, gx_col, gy_col, gz_col, adc_col, durs, exts)
    if setters is not None:
        s_rf, s_gx, s_gy, s_gz, s_adc, s_dur, s_lab, s_ext = setters
        new = object.__new__
        for i, (rf, gx, gy, gz, adc, dur, (lab, oth)) in enumerate(rows):
            b = new(Block)
            s_rf(b, rf)
            s_gx(b, gx)
            s_gy(b, gy)
            s_gz(b, gz)
            s_adc(b, adc)
            s_dur(b, dur)
            s_lab(b, lab)
            s_ext(b, oth)
            ublocks[i] = b
    else:
        for i, (rf, gx, gy, gz, adc, dur, (lab, oth)) in enumerate(rows):
            ublocks[i] = Block(rf, gx, gy, gz, adc, duration=dur, labels=lab, extensions=oth)
    ul = ublocks.tolist()
    blocks = tuple(map(ul.__getitem__, inverse.tolist()))
    return _make_sequence(blocks, defs, bdur)


_BLOCK_FIELDS = ("rf", "gx", "gy", "gz", "adc", "duration", "labels", "extensions")


def _block_setters():
    """Slot setters of `Block` (fast construction), or None if its layout changed."""
    if _FIELDS[Block] != frozenset(_BLOCK_FIELDS):
        return None
    out = []
    for k in _BLOCK_FIELDS:
        d = getattr(Block, k, None)
        if not isinstance(d, types.MemberDescriptorType):
            return None
        out.append(d.__set__)
    return out


def _rank(col, keys):
    """0 where ``col`` is 0 (no event), else 1 + the position of the id in sorted ``keys``
    (which holds every nonzero id of ``col``)."""
    return np.where(col > 0, np.searchsorted(keys, col) + 1, 0)


def _unique_rows(a):
    """(first index of each distinct row, inverse map) of a non-negative int table."""
    key = np.zeros(a.shape[0], dtype=np.int64)
    span = 1
    for c in range(a.shape[1]):
        m = int(a[:, c].max()) + 1 if a.shape[0] else 1
        span *= m
        if span >= 2**62:  # cannot pack exactly: no sharing
            n = a.shape[0]
            return np.arange(n), np.arange(n)
        key = key * m + a[:, c]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _make_sequence(blocks, defs, durations):
    """A `Sequence` without re-validating the blocks we just built (when its layout is
    the known slotted one), else through its constructor."""
    if _FIELDS[Sequence] == {"blocks", "definitions", "_durations", "_starts"}:
        d = np.ascontiguousarray(durations, dtype=np.float64).copy()
        d.flags.writeable = False
        starts = np.concatenate([[0.0], np.cumsum(d)[:-1]]) if d.size else d.copy()
        starts.flags.writeable = False
        seq = object.__new__(Sequence)
        for k, v in (("blocks", blocks), ("definitions", defs), ("_durations", d), ("_starts", starts)):
            object.__setattr__(seq, k, v)
        return seq
    return Sequence(blocks, defs)


def _infer_first(d, arb, grads, bdur):
    """Fill 'first' of pre-1.5 arbitrary gradients from the block before their first use.

    Follows the Pulseq toolboxes: a gradient with a delay, or whose previous block on
    the same axis has no arbitrary gradient ending at the block boundary, starts at 0.
    """
    cols = d[:, 3:6]
    nb = d.shape[0]
    for gid, spec in arb.items():
        if spec["first"] is not None:
            continue
        hits = np.argwhere(cols == gid)
        if hits.size == 0:
            spec["first"] = 0.0
            continue
        i, c = (int(x) for x in hits[0])
        first = 0.0
        if spec["delay"] == 0 and i > 0:
            prev = int(cols[i - 1, c])
            ps = grads.get(prev) if prev else None
            if isinstance(ps, dict) and ps["duration"] + 1e-12 >= bdur[i - 1]:
                first = ps["last"]
        spec["first"] = first
    del nb
