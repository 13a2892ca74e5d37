"""``mritwin seq-info FILE.seq``: summarize a Pulseq file.

Prints the duration, number of blocks, ADC samples and RF pulses, TE/TR estimates
where they exist (see `mritwin.sequence.inspect.estimate_te_tr`) and the file's
[DEFINITIONS]. ``--json`` prints the same as one JSON object (SI units). Exit status 0
on success, 2 with a one-line message on bad input (missing or malformed file).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``seq-info`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "seq-info",
        help="summarize a Pulseq .seq file (duration, blocks, ADC samples, TE/TR)",
        description="Read a Pulseq file (versions 1.2-1.5) and print its duration, blocks, "
                    "ADC samples, RF pulses, TE/TR where known and its definitions.",
    )
    p.add_argument("file", metavar="FILE.seq", help="Pulseq sequence file")
    p.add_argument("--json", action="store_true", help="print one JSON object (SI units)")
    p.add_argument("--strict", action="store_true",
                   help="fail on a signature mismatch or unknown section instead of warning")
    p.add_argument("--refocusing-threshold", type=float, default=None, metavar="DEG",
                   help="files before Pulseq 1.5: RF pulses of at least DEG degrees refocus, "
                        "smaller ones excite (default: the toolboxes' 90.01)")
    p.set_defaults(func=run)
    return p


def _ms(x):
    return "n/a" if x is None else f"{x * 1e3:.3f} ms"


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def run(args) -> int:
    """Run ``seq-info``; returns the exit status."""
    import mritwin as mt
    from mritwin.sequence.inspect import summary

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            seq = mt.read_seq(args.file, strict=getattr(args, "strict", False),
                              refocusing_threshold_deg=getattr(args, "refocusing_threshold", None))
        except (ValueError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if isinstance(e, OSError) and e.filename is not None:
                msg = f"{e.filename}: {e.strerror or msg}"
            print(f"mritwin seq-info: error: {msg}", file=sys.stderr)
            return 2
        s = summary(seq)
    for w in caught[:5]:
        print(f"warning: {str(w.message).splitlines()[0]}", file=sys.stderr)
    if len(caught) > 5:
        print(f"warning: ... and {len(caught) - 5} more", file=sys.stderr)
    if getattr(args, "json", False):
        out = {k: v for k, v in s.items() if k != "definitions"}
        out["file"] = str(args.file)
        out["definitions"] = {k: _jsonable(v) for k, v in s["definitions"].items()}
        print(json.dumps(out, indent=2))
        return 0
    lines = [
        f"file            {args.file}",
        f"duration        {s['duration']:.6f} s",
        f"blocks          {s['n_blocks']}",
        f"ADC samples     {s['n_adc_samples']} ({s['n_adc_events']} readouts)",
        f"RF pulses       {s['n_rf']} ({s['n_excitations']} excitations)",
        f"TE              {_ms(s['te'])}",
        f"TR              {_ms(s['tr'])}",
    ]
    if len(s["echo_times"]) > 1:
        lines.append("echo times      " + ", ".join(f"{t * 1e3:.3f}" for t in s["echo_times"]) + " ms")
    if s["definitions"]:
        lines.append("definitions")
        for k in sorted(s["definitions"]):
            v = s["definitions"][k]
            if isinstance(v, tuple):
                v = " ".join(f"{x:g}" for x in v)
            elif isinstance(v, float):
                v = f"{v:g}"
            lines.append(f"  {k:<26} {v}")
    print("\n".join(lines))
    return 0
