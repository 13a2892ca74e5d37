"""Pulseq text parsing: sections, tables and shapes, with positioned errors.

This module turns the text of a ``.seq`` file into plain NumPy tables (no events):
section bodies with their line numbers, numeric tables checked for column counts and
numbers, and the [SHAPES] library. Every problem raises `PulseqError` (a `ValueError`)
naming the file, the line and the section.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PulseqError", "Section", "Table", "split_sections", "parse_table", "parse_shapes",
           "parse_definitions", "parse_version", "parse_kv"]


class PulseqError(ValueError):
    """A malformed Pulseq file: the message names the file, line and section."""


def error(path, line, section, msg) -> PulseqError:
    where = f"{path}:{line}" if line else f"{path}"
    sec = f" [{section}]" if section and not section.startswith("extension ") else (
        f" ({section})" if section else "")
    return PulseqError(f"{where}:{sec} {msg}")


@dataclass
class Section:
    """A section: its header name, header line number and body (line numbers, texts)."""

    name: str  # "BLOCKS", "RF", ..., or "extension LABELSET 2"
    line: int  # 1-based line of the header
    linenos: list = field(default_factory=list)  # 1-based line numbers of data rows
    rows: list = field(default_factory=list)  # stripped data rows (comments/blank removed)


_HEADER = re.compile(r"^[ \t]*(\[[^\]\n]*\]|extension[ \t]+[^\n]*?)[ \t]*\r?$", re.M)


def split_sections(text: str, path) -> list[Section]:
    """Split the file text into sections (data rows only, comments and blanks dropped)."""
    lines = text.split("\n")
    heads = []
    for m in _HEADER.finditer(text):
        heads.append((text.count("\n", 0, m.start()), m.group(1).strip()))
    # text.count from 0 each time is O(n * n_sections); sections are few (< 30).
    sections = []
    first_data = _first_data_line(lines, 0, heads[0][0] if heads else len(lines))
    if first_data is not None:
        raise error(path, first_data + 1, "", f"data before the first section: {lines[first_data][:60]!r}")
    for k, (i, name) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        sec = Section(name.strip("[]") if name.startswith("[") else " ".join(name.split()), i + 1)
        body = lines[i + 1:end]
        for j, raw in enumerate(body):
            s = raw.strip()
            if s and s[0] != "#":
                sec.linenos.append(i + 2 + j)
                sec.rows.append(s)
        sections.append(sec)
    return sections


def _first_data_line(lines, a, b):
    for j in range(a, b):
        s = lines[j].strip()
        if s and s[0] != "#":
            return j
    return None


def parse_kv(sec: Section, path) -> dict:
    """Rows ``key value...`` -> {key: 'value...'} (first occurrence wins)."""
    out = {}
    for ln, row in zip(sec.linenos, sec.rows):
        parts = row.split(None, 1)
        out.setdefault(parts[0], (ln, parts[1].strip() if len(parts) > 1 else ""))
    return out


def parse_version(sec: Section, path) -> tuple[int, int, int]:
    kv = parse_kv(sec, path)
    vals = {}
    for key in ("major", "minor", "revision"):
        if key not in kv:
            raise error(path, sec.line, "VERSION", f"missing '{key}'")
        ln, v = kv[key]
        m = re.match(r"^(\d+)", v)
        if not m:
            raise error(path, ln, "VERSION", f"'{key}' must be an integer, got {v!r}")
        vals[key] = int(m.group(1))
    for ln, row in zip(sec.linenos, sec.rows):
        if row.split()[0] not in ("major", "minor", "revision"):
            raise error(path, ln, "VERSION", f"unexpected entry {row[:60]!r}")
    return vals["major"], vals["minor"], vals["revision"]


def parse_definitions(sec: Section, path) -> dict:
    """[DEFINITIONS]: numbers -> float, several numbers -> tuple of floats, else str."""
    out = {}
    for ln, row in zip(sec.linenos, sec.rows):
        parts = row.split()
        key, vals = parts[0], parts[1:]
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            out[key] = row[len(key):].strip()
            continue
        if not vals:
            out[key] = ""
        elif len(nums) == 1:
            out[key] = nums[0]
        else:
            out[key] = tuple(nums)
    return out


@dataclass
class Table:
    """A numeric table: ``data`` (n_rows, n_cols) float64, ids, line numbers, strings."""

    data: np.ndarray
    linenos: list
    ids: np.ndarray  # int64 (first column)
    strings: list | None = None  # trailing string column, when asked for
    section: str = ""

    def row_of(self, path) -> dict:
        """{id: row index}; duplicate ids raise."""
        idx = {}
        for r, i in enumerate(self.ids.tolist()):
            if i in idx:
                raise error(path, self.linenos[r], self.section, f"duplicate event id {i}")
            idx[i] = r
        return idx


def parse_table(sec: Section, path, ncols, *, string_last=False, int_cols=(0,),
                name=None) -> Table:
    """Parse a whitespace table with one of the allowed column counts.

    Args:
        ncols: allowed numbers of columns (including the id), an int or a tuple; all
            rows must have the same count.
        string_last: the last column is text (not parsed as a number).
        int_cols: columns that must hold integers.
    """
    name = name or sec.name
    allowed = (ncols,) if isinstance(ncols, int) else tuple(ncols)
    rows = sec.rows
    if not rows:
        return Table(np.zeros((0, allowed[0])), [], np.zeros(0, np.int64),
                     [] if string_last else None, name)
    toks = [r.split() for r in rows]
    lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    n0 = int(lens[0])
    if n0 not in allowed:
        exp = " or ".join(str(a) for a in allowed)
        raise error(path, sec.linenos[0], name, f"expected {exp} columns, got {n0}: {rows[0][:80]!r}")
    bad = np.flatnonzero(lens != n0)
    if bad.size:
        r = int(bad[0])
        raise error(path, sec.linenos[r], name,
                    f"expected {n0} columns (like the first row), got {int(lens[r])}: {rows[r][:80]!r}")
    strings = None
    if string_last:
        strings = [t[-1] for t in toks]
        numcols = n0 - 1
        flat = [x for t in toks for x in t[:-1]]
    else:
        numcols = n0
        flat = None
    if numcols == 0:
        data = np.zeros((len(rows), 0))
    else:
        data = _to_float(rows if flat is None else flat, numcols, sec, path, name, toks,
                         joined=flat is None)
    if not np.all(np.isfinite(data)):
        r, c = np.argwhere(~np.isfinite(data))[0]
        raise error(path, sec.linenos[r], name, f"column {c + 1} is not a finite number: {toks[r][c]!r}")
    for c in int_cols:
        if c < numcols:
            col = data[:, c]
            bad = np.flatnonzero(col != np.round(col))
            if bad.size:
                r = int(bad[0])
                raise error(path, sec.linenos[r], name,
                            f"column {c + 1} must be an integer, got {toks[r][c]!r}")
    ids = data[:, 0].astype(np.int64) if numcols else np.zeros(0, np.int64)
    return Table(data, sec.linenos, ids, strings, name)


def _to_float(rows_or_tokens, numcols, sec, path, name, toks, joined):
    n = len(toks)
    text = " ".join(rows_or_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = np.fromstring(text, dtype=np.float64, sep=" ")
        except ValueError:
            arr = np.zeros(0)
    if arr.size == n * numcols and not _has_odd_tokens(text):
        return arr.reshape(n, numcols)
    # slow path: locate the bad token
    for r, t in enumerate(toks):
        for c, x in enumerate(t[:numcols]):
            try:
                float(x)
            except ValueError:
                raise error(path, sec.linenos[r], name,
                            f"column {c + 1} is not a number: {x!r}") from None
    try:
        return np.array([t[:numcols] for t in toks], dtype=np.float64)
    except ValueError as e:  # pragma: no cover - defensive
        raise error(path, sec.linenos[0], name, f"cannot parse numbers: {e}") from None


_ODD = re.compile(r"[^0-9eE+\-. \t\r]")


def _has_odd_tokens(text: str) -> bool:
    # np.fromstring accepts e.g. 'nan', 'inf' and hex; keep to plain decimal numbers
    return _ODD.search(text) is not None


def parse_shapes(sec: Section, path, *, force_compressed: bool) -> dict:
    """[SHAPES] -> {shape_id: (num_samples, stored values (np), line of 'shape_id')}."""
    rows, lns = sec.rows, sec.linenos
    starts = [k for k, r in enumerate(rows) if r.startswith("shape_id")]
    if rows and (not starts or starts[0] != 0):
        k0 = 0
        raise error(path, lns[k0], "SHAPES", f"expected 'shape_id <id>', got {rows[k0][:60]!r}")
    out = {}
    for s_i, k in enumerate(starts):
        end = starts[s_i + 1] if s_i + 1 < len(starts) else len(rows)
        t = rows[k].split()
        if len(t) != 2 or not t[1].lstrip("-").isdigit():
            raise error(path, lns[k], "SHAPES", f"expected 'shape_id <integer>', got {rows[k][:60]!r}")
        sid = int(t[1])
        if sid in out:
            raise error(path, lns[k], "SHAPES", f"duplicate shape_id {sid}")
        if k + 1 >= end:
            raise error(path, lns[k], "SHAPES", f"shape {sid} has no 'num_samples' line")
        t2 = rows[k + 1].split()
        if len(t2) != 2 or t2[0] != "num_samples" or not t2[1].isdigit():
            raise error(path, lns[k + 1], "SHAPES",
                        f"expected 'num_samples <integer>' for shape {sid}, got {rows[k + 1][:60]!r}")
        num = int(t2[1])
        vals = rows[k + 2:end]
        text = " ".join(vals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.fromstring(text, dtype=np.float64, sep=" ") if vals else np.zeros(0)
        if arr.size != len(vals) or _has_odd_tokens(text) or not np.all(np.isfinite(arr)):
            for j, v in enumerate(vals):
                try:
                    x = float(v)
                    if not np.isfinite(x):
                        raise ValueError
                    if len(v.split()) != 1:
                        raise ValueError
                except ValueError:
                    raise error(path, lns[k + 2 + j], "SHAPES",
                                f"shape {sid}: expected one number per line, got {v[:60]!r}") from None
        out[sid] = (num, arr, lns[k], force_compressed)
    return out
