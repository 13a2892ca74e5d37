"""Bad Pulseq input: clean ValueErrors naming file, line and section; never a hang."""

from __future__ import annotations

import random
import time
import warnings

import pytest
from pulseq_corpus import corpus_path

import mritwin as mt

GOOD = """# test
[VERSION]
major 1
minor 4
revision 1

[DEFINITIONS]
BlockDurationRaster 1e-05
GradientRasterTime 1e-05

# blocks
[BLOCKS]
1 100 1 0 0 0 0 0
2 50 0 1 0 2 1 0

[RF]
1 250 1 2 0 10 0 0

[GRADIENTS]
2 1000 3 0 0

[TRAP]
1 1000 10 100 10 0

[ADC]
1 16 10000 10 0 0

[SHAPES]

shape_id 1
num_samples 100
1
0
0
97

shape_id 2
num_samples 100
0
0
98

shape_id 3
num_samples 4
0
0.5
1
0.5
"""


def _write(tmp_path, text, name="bad.seq"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_template_is_valid(tmp_path):
    seq = mt.read_seq(_write(tmp_path, GOOD), strict=True)
    assert seq.n_blocks == 2 and seq.duration == pytest.approx(1.5e-3)
    assert seq.blocks[0].rf.n_samples == 100


def _line_of(text, needle):
    return text.splitlines().index(needle) + 1


@pytest.mark.parametrize("old,new,section,what", [
    ("1 100 1 0 0 0 0 0", "1 100 1 0 0 0 0", "BLOCKS", "expected 8 columns"),
    ("1 100 1 0 0 0 0 0", "1 100 1 0 0 0 0 0 0", "BLOCKS", "expected 8 columns"),
    ("1 100 1 0 0 0 0 0", "1 100 x 0 0 0 0 0", "BLOCKS", "column 3 is not a number: 'x'"),
    ("1 100 1 0 0 0 0 0", "1 100 1.5 0 0 0 0 0", "BLOCKS", "column 3 must be an integer"),
    ("1 100 1 0 0 0 0 0", "1 100 7 0 0 0 0 0", "BLOCKS", "uses RF event 7, which is not defined in \\[RF\\]"),
    ("2 50 0 1 0 2 1 0", "2 50 0 1 0 9 1 0", "BLOCKS", "gz gradient 9, which is not defined"),
    ("2 50 0 1 0 2 1 0", "2 50 0 1 0 2 3 0", "BLOCKS", "ADC event 3, which is not defined"),
    ("2 50 0 1 0 2 1 0", "2 50 0 1 0 2 1 4", "BLOCKS", "extension list 4, which is not defined"),
    ("1 250 1 2 0 10 0 0", "1 250 1 5 0 10 0 0", "RF", "phase shape id 5 is not defined in \\[SHAPES\\]"),
    ("1 250 1 2 0 10 0 0", "1 250 1 2 0 10 0", "RF", "expected 8 or 10 columns"),
    ("1 250 1 2 0 10 0 0", "1 nan 1 2 0 10 0 0", "RF", "not a finite number|not a number"),
    ("2 1000 3 0 0", "2 1000 8 0 0", "GRADIENTS", "amplitude shape id 8 is not defined"),
    ("1 1000 10 100 10 0", "1 1000 10 100 10", "TRAP", "expected 6 columns"),
    ("1 16 10000 10 0 0", "1 16 10000 10 0 0 0 0 0", "ADC", "expected 6 columns"),
    ("1 16 10000 10 0 0", "1 0 10000 10 0 0", "ADC", "need num >= 1"),
    ("num_samples 100\n0\n0\n98", "num_samples 100\n0\n0\n90", "SHAPES", "expands to 92 samples"),
    ("shape_id 3", "shape_id three", "SHAPES", "expected 'shape_id <integer>'"),
    ("num_samples 4\n0\n0.5", "num_samples 4\n0\n0.5 0.7", "SHAPES", "expected one number per line"),
    ("major 1", "major one", "VERSION", "'major' must be an integer"),
    # block ids: positive, increasing (the toolboxes place a block by its id)
    ("2 50 0 1 0 2 1 0", "1 50 0 1 0 2 1 0", "BLOCKS", "block id 1 repeats block id 1 \\(line 13\\)"),
    ("2 50 0 1 0 2 1 0", "0 50 0 1 0 2 1 0", "BLOCKS", "block id 0 follows block id 1"),
    ("1 100 1 0 0 0 0 0", "0 100 1 0 0 0 0 0", "BLOCKS", "block ids must be positive, got 0"),
    ("1 100 1 0 0 0 0 0", "1 100 90071992547409930 0 0 0 0 0", "BLOCKS",
     "column 3: integer 90071992547409930 is too large"),
    ("2 1000 3 0 0", "99999999999999999999 1000 3 0 0", "GRADIENTS", "column 1: integer .* is too large"),
])
def test_bad_input_names_file_line_and_section(tmp_path, old, new, section, what):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    p = _write(tmp_path, text)
    first_new_line = new.splitlines()[0] if section != "SHAPES" or "shape_id" in new else None
    with pytest.raises(ValueError, match=rf"bad\.seq:\d+: \[{section}\] .*({what})") as e:
        mt.read_seq(p)
    # the line number points at the offending row (or the shape/RF row referring to it)
    line = int(str(e.value).split(":")[1])
    lines = text.splitlines()
    assert 1 <= line <= len(lines)
    if first_new_line is not None and section in ("BLOCKS", "RF", "TRAP", "ADC", "GRADIENTS"):
        assert lines[line - 1].strip() == first_new_line.strip()


def test_out_of_order_block_ids_are_an_error(tmp_path):
    text = GOOD.replace("1 100 1 0 0 0 0 0\n2 50", "2 100 1 0 0 0 0 0\n1 50")
    with pytest.raises(ValueError, match=r"bad\.seq:14: \[BLOCKS\] block id 1 follows block id 2 "
                                         r"\(line 13\); block ids must increase"):
        mt.read_seq(_write(tmp_path, text))
    # gaps are fine: the rows are played in order
    seq = mt.read_seq(_write(tmp_path, GOOD.replace("2 50 0 1", "7 50 0 1"), "gap.seq"), strict=True)
    assert seq.n_blocks == 2 and seq.duration == pytest.approx(1.5e-3)


def test_large_event_ids_read_like_small_ones(tmp_path):
    """Ids are labels, not sizes: lookup tables must not be allocated by the largest id
    (an RF id of 3e9 once asked NumPy for 22 GiB)."""
    big = (GOOD.replace("1 100 1 0 0 0 0 0", "1 100 3000000000 0 0 0 0 0")
           .replace("1 250 1 2 0 10 0 0", "3000000000 250 1 2 0 10 0 0")
           .replace("2 50 0 1 0 2 1 0", "4000000000 50 0 2000000001 0 7000000002 9000000001 0")
           .replace("2 1000 3 0 0", "7000000002 1000 3 0 0")
           .replace("1 1000 10 100 10 0", "2000000001 1000 10 100 10 0")
           .replace("1 16 10000 10 0 0", "9000000001 16 10000 10 0 0"))
    a = mt.read_seq(_write(tmp_path, GOOD, "small.seq"), strict=True)
    b = mt.read_seq(_write(tmp_path, big, "big.seq"), strict=True)
    assert b.n_blocks == a.n_blocks and b.duration == a.duration
    for x, y in zip(a.blocks, b.blocks):
        for f in ("rf", "gx", "gy", "gz", "adc"):
            ex, ey = getattr(x, f), getattr(y, f)
            assert (ex is None) == (ey is None), f
            if ex is not None:
                assert type(ex) is type(ey) and ex.duration == ey.duration, f
    assert (a.kspace() == b.kspace()).all()


def test_indented_section_header_is_a_header(tmp_path):
    seq = mt.read_seq(_write(tmp_path, GOOD.replace("\n[BLOCKS]\n", "\n   [BLOCKS]\n")), strict=True)
    assert seq.n_blocks == 2


def test_bad_raster_names_its_line(tmp_path):
    text = GOOD.replace("GradientRasterTime 1e-05", "GradientRasterTime -1e-05")
    with pytest.raises(ValueError, match=r"bad\.seq:9: \[DEFINITIONS\] GradientRasterTime must be a positive"):
        mt.read_seq(_write(tmp_path, text))


def test_empty_file(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.seq: empty file"):
        mt.read_seq(_write(tmp_path, "", "empty.seq"))
    with pytest.raises(ValueError, match=r"blank\.seq: empty file"):
        mt.read_seq(_write(tmp_path, "\n  \n", "blank.seq"))


def test_missing_sections(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.seq: \[VERSION\] missing \[VERSION\] section"):
        mt.read_seq(_write(tmp_path, "# only a comment\n[BLOCKS]\n1 0 0 0 0 0 0 0\n"))
    with pytest.raises(ValueError, match=r"bad\.seq: \[BLOCKS\] missing \[BLOCKS\] section"):
        mt.read_seq(_write(tmp_path, "[VERSION]\nmajor 1\nminor 4\nrevision 1\n"))
    with pytest.raises(ValueError, match=r"bad\.seq:2: data before the first section"):
        mt.read_seq(_write(tmp_path, "# x\nhello\n[VERSION]\nmajor 1\n"))


def test_truncated_file(tmp_path):
    text = GOOD[: GOOD.index("num_samples 100\n0\n0\n98") + 20]
    with pytest.raises(ValueError, match=r"bad\.seq:37: \[SHAPES\] shape 2: stores 2 values for num_samples=100, so it "
                       r"is read as compressed, but (run-length|.*expands to)"):
        mt.read_seq(_write(tmp_path, text))
    text = GOOD[: GOOD.index("2 50 0 1 0 2 1 0") + 9]  # cut inside a block row
    with pytest.raises(ValueError, match=r"bad\.seq:14: \[BLOCKS\] expected 8 columns"):
        mt.read_seq(_write(tmp_path, text))


def test_binary_and_unsupported_version(tmp_path):
    p = tmp_path / "bin.seq"
    p.write_bytes(b"[VERSION]\nmajor 1\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bin\.seq:3: not a text file"):
        mt.read_seq(p)
    old = GOOD.replace("minor 4", "minor 1")
    with pytest.raises(ValueError, match=r"bad\.seq:\d+: \[VERSION\] version 1.1.1 is not supported"):
        mt.read_seq(_write(tmp_path, old))


def test_required_unknown_extension_is_an_error(tmp_path):
    text = corpus_path("koma_unknown_ext_v150.seq").read_text()
    text = text.replace("TotalDuration 0", "TotalDuration 0\nRequiredExtensions UNKNOWN1")
    with pytest.raises(ValueError, match=r"bad\.seq:\d+: \(extension UNKNOWN1 1\) extension UNKNOWN1 "
                                         r"is listed in RequiredExtensions"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mt.read_seq(_write(tmp_path, text))


def test_extension_list_cycle_does_not_hang(tmp_path):
    text = corpus_path("koma_label_test_v140.seq").read_text()
    assert "[EXTENSIONS]\n1 1 1 0" in text or "[EXTENSIONS]" in text
    lines = text.splitlines()
    i = lines.index("[EXTENSIONS]")
    j = i + 1
    while lines[j].startswith("#"):
        j += 1
    first_id = lines[j].split()[0]
    parts = lines[j].split()
    parts[3] = first_id  # next_id -> itself
    lines[j] = " ".join(parts)
    with pytest.raises(ValueError, match=r"\[EXTENSIONS\] extension list \d+ has a cycle"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mt.read_seq(_write(tmp_path, "\n".join(lines) + "\n"))


FUZZ_FILES = ["pypulseq_gre.seq", "koma_epi_v131.seq", "koma_fid_v120.seq", "pypulseqtests_write_gre_label_softdelay_v150.seq",
              "koma_spiral_v151.seq", "koma_rotation_radial_tiny_v151.seq", "koma_gr_time_shaped_v141.seq"]


@pytest.mark.parametrize("name", FUZZ_FILES)
def test_fuzz_truncate_and_corrupt(tmp_path, name):
    """Random seeded truncations and corruptions: either a clean ValueError (with the
    file name in it) or a successful read, and never a hang (a corrupt count such as
    99999999999 must not make the reader loop or allocate without bound). The time
    bound is a hang guard ~1000x above a normal read, not a speed test: reading speed
    is measured in benchmarks/bench_pulseq_read.py."""
    src = corpus_path(name).read_text()
    rng = random.Random(hash(name) % 1000)
    junk = ["", "x", "-1", "1e400", "nan", " 0 0", "\n", "[BLOCKS]", "[SHAPES]\nshape_id 1\n",
            "extension LABELSET 9\n", "99999999999", "0.5", "#", "\x00"]
    p = tmp_path / "fuzz.seq"
    outcomes = {"ok": 0, "error": 0}
    for trial in range(40):
        if trial % 2 == 0:
            text = src[: rng.randrange(len(src))]
        else:
            pos = rng.randrange(len(src))
            cut = rng.randrange(0, 12)
            text = src[:pos] + rng.choice(junk) + src[pos + cut:]
        p.write_text(text)
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mt.read_seq(p)
            outcomes["ok"] += 1
        except ValueError as e:
            assert "fuzz.seq" in str(e), str(e)
            outcomes["error"] += 1
        assert time.perf_counter() - t < 30.0, f"read hung on trial {trial}"
    assert outcomes["error"] > 0
