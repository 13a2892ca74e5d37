"""Count the SASS instructions of one path through a kernel's loop (no GPU needed).

Reads a SASS listing written by ``kernel_sass.py --sass DIR`` (one ``addr instruction``
per line) and follows it from ``--start`` (the loop's head) until it reaches the loop's
back edge, taking each conditional branch as ``--take`` / ``--skip`` decide (addresses in
hex, as in the listing). A conditional branch not decided stops the walk and prints its
address with the instructions before it, so that the next decision can be read off the
code; ``--fast-paths`` takes, without asking, every branch whose predicate a preceding
``FSETP.GE... 105615`` set (libdevice's sine/cosine: the slow Payne-Hanek reduction is
never needed for the kernel's phases of at most half a cycle). The back edge (a branch
to ``--start``) ends the walk and is counted. Prints the path with ``--show``, then the
count and a histogram of opcodes as JSON.

This is how benchmarks/RESULTS.md counts "a readout step" (a free step whose factors are
all reused, with one ADC sample): the loop's first branches test the ``_fresh`` bits
(skip the factor updates), then ``kind`` (neither RF nor a prepared play), then the ADC
slot (record). A static count, not a timing.

Usage:
    python benchmarks/kernel_sass.py --sass sass
    python benchmarks/sass_path.py sass/mritwin_bloch_steps-b64w1-c1-prep-reuse-libdevice.sass \\
        --start 400 --take 4d0 3480 --skip 3460 6440
"""

from __future__ import annotations

import argparse
import json
import re
import sys

_BRANCH = re.compile(r"(@!?U?P\w+\s+)?BRA\s+(?:\w+,\s*)?0x([0-9a-f]+)")


def read_sass(path: str) -> list[tuple[int, str]]:
    """``(address, instruction)`` pairs of a ``kernel_sass.py --sass`` listing."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            addr, _, text = line.partition(" ")
            try:
                out.append((int(addr, 16), text.strip()))
            except ValueError:
                raise SystemExit(f"{path}:{n}: expected '<hex address> <instruction>', got {line!r}") from None
    return out


def walk(sass, start: int, take: set[int], skip: set[int], fast_paths: bool = False):
    """The path from ``start`` to the back edge: ``(addresses, undecided)``, where
    ``undecided`` is the address of the first undecided conditional branch (None when the
    walk reached the back edge or an ``EXIT``)."""
    index = {a: i for i, (a, _) in enumerate(sass)}
    if start not in index:
        raise SystemExit(f"--start {start:x}: no instruction at that address")
    i, path = index[start], []
    slow_preds = set()
    while i < len(sass):
        a, text = sass[i]
        path.append(a)
        m = re.match(r"FSETP\.GE\.AND (P\d), PT, R\d+(?:\.reuse)?, 105615", text)
        if m:
            slow_preds.add(m.group(1))
        b = _BRANCH.match(text)
        if b:
            target = int(b.group(2), 16)
            if target == start and len(path) > 1:
                return path, None  # the back edge (counted)
            if b.group(1):
                pred = b.group(1).strip().lstrip("@!")
                if a in take or (fast_paths and pred in slow_preds and b.group(1).strip().startswith("@!")):
                    i = index[target]
                    continue
                if a not in skip:
                    return path, a
            else:
                i = index[target]
                continue
        if "EXIT" in text:
            return path, None
        i += 1
    return path, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sass", help="a listing written by kernel_sass.py --sass")
    p.add_argument("--start", required=True, help="the loop head's address (hex)")
    p.add_argument("--take", nargs="*", default=[], help="conditional branches taken (hex addresses)")
    p.add_argument("--skip", nargs="*", default=[], help="conditional branches not taken (hex addresses)")
    p.add_argument("--fast-paths", action="store_true",
                   help="take libdevice's branches around its slow sine/cosine reduction")
    p.add_argument("--show", action="store_true", help="print the path's instructions")
    a = p.parse_args(argv)

    def hexes(values, what):
        try:
            return {int(v, 16) for v in values}
        except ValueError:
            raise SystemExit(f"{what}: expected hex addresses, got {values}") from None

    sass = read_sass(a.sass)
    path, undecided = walk(sass, hexes([a.start], "--start").pop(), hexes(a.take, "--take"),
                           hexes(a.skip, "--skip"), a.fast_paths)
    text = dict(sass)
    if a.show:
        for addr in path:
            print(f"{addr:04x} {text[addr]}")
    if undecided is not None:
        at = [s[0] for s in sass].index(undecided)
        print(f"undecided branch at {undecided:x}: {text[undecided]}", file=sys.stderr)
        for addr, t in sass[max(0, at - 8):at]:
            print(f"    {addr:04x} {t}", file=sys.stderr)
        return 1
    hist: dict[str, int] = {}
    for addr in path:
        t = text[addr]
        op = (t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0]
        hist[op] = hist.get(op, 0) + 1
    print(json.dumps({"instructions": len(path), "opcodes": dict(sorted(hist.items(), key=lambda kv: -kv[1]))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
