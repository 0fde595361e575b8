"""The `aptune` command. Each subcommand is one module in aptune/commands/ defining

    HELP = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int      # exit status

and is found automatically (the module name, with '_' as '-', is the subcommand).
Expected errors (`aptune.errors.AptuneError`: a bad file, field or option) and errors of the system
(`OSError`: a missing file, a file in the way, permissions, a full disk) print one line,
`aptune: error: ...`, and exit 2. Anything else is a bug and shows its traceback; with
APTUNE_DEBUG=1 every error shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__, commands
from .errors import AptuneError

USER_ERRORS = (AptuneError, OSError)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors (unknown option, missing argument) print one line naming the problem, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="aptune", description="Parameter-efficient fine-tuning of video transformers "
        "(Attention Prompt Tuning and baselines).")
    parser.add_argument("--version", action="version", version=f"aptune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(info.name.replace("_", "-"), help=mod.HELP, description=mod.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    rc = _main(argv)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .engine.distributed import exit_worker
        exit_worker(rc)   # a torchrun worker: skip interpreter shutdown (see exit_worker)
    return rc


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("APTUNE_DEBUG", "") not in ("", "0"):
            raise
        print(f"aptune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aptune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
