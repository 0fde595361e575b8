"""`aptune reproduce TABLE`: a table of the APT paper, every row trained and tested, beside the paper's."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import reproduce as R
from ..errors import ConfigError
from ..reproduce_report import format_plan, format_results, report_rows, write_report

HELP = "reproduce a table of the APT paper (table5, table6, ...): plan it (--dry-run) or train and test every row"

EPILOG = """Examples:
  aptune reproduce --list
  aptune reproduce table5 --dry-run                     # presets, paper numbers, compute; no data, no weights
  aptune reproduce table5 --columns ucf101 --data ucf101=data/ucf101 \\
      --checkpoint videomae-k400=videomae_b_k400_pretrain.pth  # default: its Hub id, MCG-NJU/videomae-base
  aptune reproduce table5 ... optim.epochs=1            # dotted overrides apply to every run (a smoke test)

A run is finished when <out>/runs/<column>/<row>/result.json exists: it is not run again (delete that
folder to re-run it); a killed run resumes from its last checkpoint. After each run the report is
rewritten: <out>/results.md, results.json, results.png (aptune's top-1 with its 95% interval over test
videos beside the paper's)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("table", nargs="?", help="a built-in table (see --list) or a table YAML file")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted config overrides applied to every run, e.g. optim.epochs=1")
    p.add_argument("--list", action="store_true", help="list the built-in tables and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print each run's preset, the paper's numbers and the compute it needs; run nothing")
    p.add_argument("--out", default=None, help="output folder (default: reproduce/<table>)")
    p.add_argument("--data", action="append", default=[], metavar="COLUMN=DIR",
                   help="a column's list files (DIR/train.csv, val.csv, test.csv from `aptune prepare --out DIR`); "
                        "default: the presets' data/<dataset>/ paths")
    p.add_argument("--videos", action="append", default=[], metavar="COLUMN=DIR",
                   help="a column's video root (default: DIR/videos of --data if it is a folder, else DIR)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="KEY=PATH",
                   help="a backbone checkpoint (file, folder or Hub id) by the table's key; default: the table's "
                        "Hub id for it, fetched into the Hugging Face cache (--dry-run lists keys and ids)")
    p.add_argument("--rows", default=None,
                   help="comma-separated rows to run, by name or preset key (e.g. apt200,full; default all)")
    p.add_argument("--columns", default=None, help="comma-separated columns to run (default all)")
    p.add_argument("--gpu-tflops", type=float, default=400.0,
                   help="sustained TFLOP/s for the dry run's GPU-hours (default 400: about 40%% of an H100's "
                        "dense bf16 peak)")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    if args.list or not args.table:
        for name in R.list_tables():
            print(f"{name:10s} {R.load_table(name).title}")
        return 0 if args.list else 2
    table = R.load_table(args.table)
    cells = R.select(table, _names(args.rows), _names(args.columns))
    inputs = R.Inputs(data=_pairs(args.data, "--data"), videos=_pairs(args.videos, "--videos"),
                      checkpoints=_pairs(args.checkpoint, "--checkpoint"), overrides=list(args.overrides))
    if args.dry_run:
        cache: dict = {}
        estimates = [R.estimate_cell(table, c, R.cell_config(table, c, inputs, None), cache) for c in cells]
        print(format_plan(table, cells, estimates, args.gpu_tflops))
        return 0
    out = Path(args.out or Path("reproduce") / table.name)
    results = R.run_table(table, cells, inputs, out,
                          lambda res: write_report(out, table, cells, res, inputs.overrides))
    print("\n" + format_results(table, report_rows(cells, results)))
    print(f"\naptune reproduce: results in {out}/results.md, results.json, results.png")
    return 0
