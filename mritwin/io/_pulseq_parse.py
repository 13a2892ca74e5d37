"""Pulseq text parsing: sections, tables and shapes, with positioned errors.

This module turns the text of a ``.seq`` file into plain NumPy tables (no events):
section bodies with their line numbers, numeric tables checked for column counts and
numbers, and the [SHAPES] library. Every problem raises `PulseqError` (a `ValueError`)
naming the file, the line and the section.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

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


class Section:
    """A section: header name and line, and its body text.

    ``rows`` (stripped data rows, comments and blank lines dropped) and ``linenos``
    (their 1-based line numbers) are computed on first use; big integer tables are
    parsed straight from ``text`` (see `parse_table`).
    """

    __slots__ = ("name", "line", "text", "first_line", "_rows", "_linenos")

    def __init__(self, name, line, text="", first_line=0):
        self.name = name  # "BLOCKS", "RF", ..., or "extension LABELSET 2"
        self.line = line  # 1-based line of the header
        self.text = text  # body text (after the header line, up to the next header)
        self.first_line = first_line  # 1-based line number of the body's first line
        self._rows = None
        self._linenos = None

    def _split(self):
        rows, lns = [], []
        if self.text:
            ln0 = self.first_line
            for j, raw in enumerate(self.text.split("\n")):
                st = raw.strip()
                if st and st[0] != "#":
                    rows.append(st)
                    lns.append(ln0 + j)
        self._rows, self._linenos = rows, lns

    @property
    def rows(self) -> list:
        if self._rows is None:
            self._split()
        return self._rows

    @property
    def linenos(self) -> list:
        if self._linenos is None:
            self._split()
        return self._linenos


_HEADER = re.compile(r"(\[[^\]\n]*\]|extension[ \t]+[^\n]*?)[ \t]*\r?$")


def _header_starts(text: str) -> list:
    """Offsets of the '[' or 'extension' that may open a section header (first on its
    line, after any spaces or tabs, as the Pulseq toolboxes accept)."""
    out = [0] if text.startswith(("[", "extension")) else []
    for needle in ("\n[", "\nextension"):
        i = text.find(needle)
        while i >= 0:
            out.append(i + 1)
            i = text.find(needle, i + 1)
    out.extend(m.end() for m in _INDENTED_HEADER.finditer(text))
    return sorted(out)


_INDENTED_HEADER = re.compile(r"(?:^|\n)[ \t]+(?=\[|extension)")


def split_sections(text: str, path) -> list[Section]:
    """Split the file text into sections (bodies kept as text; rows parsed lazily).

    Section headers start at the beginning of a line: ``[NAME]`` or
    ``extension NAME id``.
    """
    heads = []
    line = 1
    pos = 0
    for start in _header_starts(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        m = _HEADER.match(text, start, end)
        if m is None:
            continue
        line += text.count("\n", pos, start)
        pos = start
        heads.append((line, m.group(1).strip(), start, min(end + 1, len(text))))
    pre = Section("", 1, text[: heads[0][2]] if heads else text, 1)
    if pre.rows:
        raise error(path, pre.linenos[0], "", f"data before the first section: {pre.rows[0][:60]!r}")
    sections = []
    for k, (ln, name, _, b0) in enumerate(heads):
        b1 = heads[k + 1][2] if k + 1 < len(heads) else len(text)
        nm = name.strip("[]") if name.startswith("[") else " ".join(name.split())
        sections.append(Section(nm, ln, text[b0:b1], ln + 1))
    return sections


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
    for row in sec.rows:
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


_MAX_INT = 2**53  # integers in tables: exact in float64, and ids far beyond any real file


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
    if not string_last and len(sec.text) > 4096:
        fast = _fast_int_table(sec, allowed)
        if fast is not None:
            return Table(fast, _LazyLines(sec), fast[:, 0].astype(np.int64), None, name)
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
            big = np.flatnonzero(np.abs(col) >= _MAX_INT)
            if big.size:
                r = int(big[0])
                raise error(path, sec.linenos[r], name,
                            f"column {c + 1}: integer {toks[r][c]} is too large (the limit is 2**53)")
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


_DIGIT_LUT = np.zeros(256, dtype=np.int8)  # 1 digit, 0 blank, -1 anything else
_DIGIT_LUT[:] = -1
_DIGIT_LUT[[9, 10, 13, 32]] = 0
_DIGIT_LUT[48:58] = 1


_POW10 = 10.0 ** np.arange(16)


class _LazyLines:
    """Line numbers of a section's rows, computed only if an error needs one."""

    def __init__(self, sec):
        self.sec = sec

    def __getitem__(self, i):
        return self.sec.linenos[i]

    def __len__(self):
        return len(self.sec.linenos)


def _fast_int_table(sec, allowed):
    """Vectorized parse of a table of non-negative integers without comments.

    Returns the (n_rows, n_cols) float64 table, or None when the body has anything
    else (comments, signs, decimals, a ragged row): the caller then takes the careful
    path, which finds and reports the offending line.
    """
    text = sec.text
    # drop trailing comment/blank lines (the next section's "# Format of ..." header)
    # without copying the body
    end = len(text)
    while end > 0:
        k = text.rfind("\n", 0, end - 1) if text[end - 1] == "\n" else text.rfind("\n", 0, end)
        line = text[k + 1:end].strip()
        if line == "" or line.startswith("#"):
            end = k + 1 if k >= 0 else 0
        else:
            break
    if end < len(text):
        text = text[:end]
    b = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    if b.size == 0:
        return None
    kind = _DIGIT_LUT[b]
    if (kind < 0).any():
        # blank out comment lines (first non-blank character '#'), then re-check
        line_of = np.cumsum(b == 10, dtype=np.int32)
        nonblank = np.flatnonzero(b > 32)
        if nonblank.size == 0:
            return None
        ln = line_of[nonblank]
        firsts = nonblank[np.concatenate(([True], ln[1:] != ln[:-1]))]
        comment = np.zeros(int(line_of[-1]) + 1, dtype=bool)
        comment[line_of[firsts[b[firsts] == 35]]] = True
        drop = comment[line_of]
        kind = np.where(drop, 0, kind)
        if (kind < 0).any():
            return None
        b = np.where(drop, 32, b).astype(np.uint8)
        text = b.tobytes().decode("latin-1")
    digit = kind == 1
    starts = np.flatnonzero(digit & ~np.concatenate(([False], digit[:-1])))
    if starts.size == 0:
        return None
    # tokens per line: token starts between consecutive newlines
    nl = np.flatnonzero(b == 10)
    per_line = np.diff(np.searchsorted(starts, np.concatenate(([-1], nl, [b.size]))))
    per_line = per_line[per_line > 0]
    if not np.all(per_line == per_line[0]) or int(per_line[0]) not in allowed:
        return None
    ncol = int(per_line[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vals = np.fromstring(text, dtype=np.int64, sep=" ")
        except ValueError:
            return None
    if vals.size != starts.size or (vals < 0).any() or (vals >= _MAX_INT).any():
        return None  # (overflowing integers: the careful path names them)
    return vals.reshape(-1, ncol).astype(np.float64)


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
            try:
                arr = np.fromstring(text, dtype=np.float64, sep=" ") if vals else np.zeros(0)
            except ValueError:
                arr = np.zeros(0)
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
