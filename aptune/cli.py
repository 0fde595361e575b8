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
import re
import sys

from . import commands
from .engine.distributed import exit_worker
from .errors import AptuneError
from .version import __version__

USER_ERRORS = (AptuneError, OSError)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors (unknown option, missing argument) print one line naming the problem, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when the help already says it, nor an empty one (None, False, [])."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


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
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    rc = _main(argv)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_worker(rc)   # a torchrun worker: skip interpreter shutdown (see exit_worker)
    return rc


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")      # section.key=value (or resume=auto)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, with dotted overrides accepted anywhere on the line (after flags too), as
    mmaction2's --cfg-options users expect: `eval CFG --adapter DIR data.test_clips=2`."""
    args, extra = parser.parse_known_args(argv)
    dotted = [e for e in extra if OVERRIDE.match(e)]
    unknown = [e for e in extra if not OVERRIDE.match(e)]
    if unknown or (dotted and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or dotted)}")
    if dotted:
        args.overrides = list(args.overrides) + dotted
    return args


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
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
