"""`mritwin` command line: a thin layer over the public API.

Exit status 0 on success; 2 with a one-line message on bad input (never a traceback for
user errors).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main", "UserError"]

#: subcommand name -> module implementing ``add_parser(subparsers)`` and ``run(args) -> int``
COMMANDS = {
    "demo": "mritwin.cli.demo",
    "simulate": "mritwin.cli.simulate_cmd",
    "twin": "mritwin.cli.twin_cmd",
    "seq-info": "mritwin.cli.seq_info",
    "bench": "mritwin.cli.bench",
}


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="mritwin",
        description="MRI digital twins and a differentiable JAX Bloch simulator.",
    )
    parser.add_argument("--version", action="version", version=f"mritwin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # command not available in this build
            raise
        mod.add_parser(sub)
        modules[name] = mod
    return parser, modules


def main(argv=None) -> int:
    parser, modules = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed a one-line usage error
        return int(e.code or 0) if e.code in (0, None) else 2
    if not args.command:
        parser.print_help()
        return 2
    mod = modules[args.command]
    from ..simulate.devices import use_cpu_devices_by_default

    use_cpu_devices_by_default()  # one JAX device per CPU core: large twins use every core
    try:
        return int(mod.run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, ImportError) as e:  # ImportError: a missing optional extra
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mritwin {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print(f"mritwin {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
