"""Reproduce a table of the APT paper with one command: `aptune reproduce table5`.

A table definition (YAML, configs/reproduce/*.yaml) is data: its columns (a dataset or a backbone,
with the preset pattern, the checkpoint it needs and its video counts), its checkpoints (what they
are, their Hub id) and its rows (a preset per column, optional overrides, the paper's top-1 and
top-5 per column; null where not verified). Each (row, column) is one cell: one preset run.

    table = load_table("table5")                        # or a path to a YAML file
    cells = select(table, rows=None, columns=None)
    estimate_cell(table, cell, config)                  # counted FLOPs -> compute of the whole run
    run_cells(table, cells, inputs, out)                # trains and tests each cell, resumably

A real run keeps one run folder per cell under <out>/runs/<column>/<row>; a cell is finished when its
result.json is there (it is not run again), and a killed cell resumes from its last checkpoint.
The report (aptune/reproduce_report.py) puts the measured top-1 with its 95% bootstrap interval
over test videos beside the paper's, as Markdown, JSON and PNG.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .config import Config, load_config
from .console import progress, warn
from .engine.build import build_model
from .engine.train import train
from .errors import ConfigError, MissingFileError
from .factory import count_parameters
from .io import write_json
from .profiling.flops import count_flops
from .stats import bootstrap_ci

TABLES = Path(__file__).resolve().parent.parent / "configs" / "reproduce"
COLUMN_KEYS = {"label", "presets", "checkpoint", "num_classes", "train_videos", "val_videos", "test_videos"}
ROW_KEYS = {"name", "preset", "presets", "columns", "overrides", "paper"}


@dataclass
class Cell:
    """One run: a table row in one column."""
    row: str
    column: str
    preset: Path
    checkpoint: str                        # a key of Table.checkpoints
    overrides: list[str] = field(default_factory=list)
    paper_top1: float | None = None
    paper_top5: float | None = None

    @property
    def key(self) -> str:                  # the cell's run folder, relative to <out>/runs
        return f"{self.column}/{slug(self.row)}"


@dataclass
class Table:
    name: str
    title: str
    source: str
    path: Path
    columns: dict[str, dict]
    checkpoints: dict[str, dict]
    rows: list[str]
    cells: list[Cell]
    aliases: dict[str, str] = field(default_factory=dict)     # a row's `preset` key -> its name


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def list_tables() -> list[str]:
    return sorted(p.stem for p in TABLES.glob("*.yaml"))


def table_path(name: str) -> Path:
    """A built-in table's name (configs/reproduce/NAME.yaml) or a path to a table file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise MissingFileError(f"table file not found: {p}")
        return p
    if not (TABLES / f"{name}.yaml").is_file():
        raise ConfigError(f"unknown table {name!r}; built in: {', '.join(list_tables())} (or a path to a YAML file)")
    return TABLES / f"{name}.yaml"


def load_table(name: str) -> Table:
    """Read and check a table definition; every error names the file and the row or field."""
    path = table_path(name)
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("columns"), dict) or not isinstance(d.get("rows"), list):
        raise ConfigError(f"{path}: a table needs 'columns' (a mapping) and 'rows' (a list)")
    presets_dir = (path.parent / d.get("presets_dir", "..")).resolve()
    checkpoints = d.get("checkpoints") or {}
    for col, spec in d["columns"].items():
        _check_column(path, col, spec, checkpoints)
    cells, rows = [], []
    for i, row in enumerate(d["rows"]):
        name = _check_row(path, i, row, d["columns"])
        if name in rows:
            raise ConfigError(f"{path}: row {name!r} appears twice")
        rows.append(name)
        cells += _row_cells(path, row, d["columns"], presets_dir)
    aliases = {str(r["preset"]): str(r["name"]) for r in d["rows"] if r.get("preset")}
    return Table(name=path.stem, title=str(d.get("title", path.stem)), source=str(d.get("source", "")), path=path,
                 columns=d["columns"], checkpoints=checkpoints, rows=rows, cells=cells, aliases=aliases)


def _check_column(path: Path, col: str, spec, checkpoints: dict) -> None:
    where = f"{path}: column {col!r}"
    if not isinstance(spec, dict) or set(spec) - COLUMN_KEYS:
        raise ConfigError(f"{where}: must be a mapping of {', '.join(sorted(COLUMN_KEYS))}")
    if spec.get("checkpoint") not in checkpoints:
        raise ConfigError(f"{where}: checkpoint {spec.get('checkpoint')!r} is not one of the table's checkpoints "
                          f"({', '.join(checkpoints) or 'none'})")
    for k in ("num_classes", "train_videos", "val_videos", "test_videos"):
        if not isinstance(spec.get(k), int) or spec[k] < 1:
            raise ConfigError(f"{where}: {k} must be a positive integer (the compute estimate needs it)")


def _check_row(path: Path, i: int, row, columns: dict) -> str:
    if not isinstance(row, dict) or not row.get("name") or set(row) - ROW_KEYS:
        raise ConfigError(f"{path}: row {i + 1}: must be a mapping with a name and only {', '.join(sorted(ROW_KEYS))}")
    name = str(row["name"])
    unknown = set(row.get("columns") or []) | set(row.get("paper") or {}) | set(row.get("presets") or {})
    unknown -= set(columns)
    if unknown:
        raise ConfigError(f"{path}: row {name!r}: unknown column(s) {sorted(unknown)}; columns: {', '.join(columns)}")
    return name


def _paper(path: Path, row: str, col: str, value) -> tuple[float | None, float | None]:
    """A paper entry: null, a top-1, or {top1, top5}; numbers in [0, 100]."""
    top1, top5 = (value.get("top1"), value.get("top5")) if isinstance(value, dict) else (value, None)
    for v in (top1, top5):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100):
            raise ConfigError(f"{path}: row {row!r}, column {col!r}: paper value {v!r} is not a percentage")
    return (None if top1 is None else float(top1)), (None if top5 is None else float(top5))


def _row_cells(path: Path, row: dict, columns: dict, presets_dir: Path) -> list[Cell]:
    name, cells = str(row["name"]), []
    for col in row.get("columns") or list(columns):
        preset = (row.get("presets") or {}).get(col)
        if preset is None:
            if not row.get("preset") or not columns[col].get("presets"):
                raise ConfigError(f"{path}: row {name!r}, column {col!r}: no preset (give 'preset' with the "
                                  "column's 'presets' pattern, or 'presets: {column: file}')")
            preset = columns[col]["presets"].format(row["preset"])
        file = presets_dir / preset
        if not file.is_file():
            raise ConfigError(f"{path}: row {name!r}, column {col!r}: preset {file} not found")
        top1, top5 = _paper(path, name, col, (row.get("paper") or {}).get(col))
        cells.append(Cell(name, col, file, columns[col]["checkpoint"], list(row.get("overrides") or []), top1, top5))
    return cells


def select(table: Table, rows: list[str] | None = None, columns: list[str] | None = None) -> list[Cell]:
    """The cells of the chosen rows (names, any case, or their preset keys such as apt200) and columns;
    unknown names fail."""
    def pick(wanted, known, what, aliases=None):
        if not wanted:
            return set(known)
        by = {slug(k): k for k in known} | {slug(a): k for a, k in (aliases or {}).items()}
        bad = [w for w in wanted if slug(w) not in by]
        if bad:
            raise ConfigError(f"--{what}: {bad} not in table {table.name}; it has: {', '.join(known)}")
        return {by[slug(w)] for w in wanted}
    keep_rows, keep_cols = pick(rows, table.rows, "rows", table.aliases), pick(columns, list(table.columns), "columns")
    return [c for c in table.cells if c.row in keep_rows and c.column in keep_cols]


# ---- the run configuration of a cell -------------------------------------------------------------
@dataclass
class Inputs:
    """What a real run is given: per column a folder of list files (and of videos), per checkpoint key
    a file (or a Hub id where model.checkpoint takes one); overrides applied to every cell."""
    data: dict[str, str] = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


def _set_data(cfg: Config, column: str, inputs: Inputs) -> None:
    """--data COLUMN=DIR: DIR/{train,val,test}.csv (aptune prepare's output; .txt as aptune synth writes),
    videos under --videos COLUMN=DIR, else DIR/videos if that is a folder, else DIR."""
    folder = Path(inputs.data[column])
    for split in ("train", "val", "test"):
        found = [folder / f"{split}{ext}" for ext in (".csv", ".txt") if (folder / f"{split}{ext}").is_file()]
        if not found:
            raise MissingFileError(f"--data {column}={folder}: no {split}.csv (or {split}.txt) there; write the "
                                   f"lists with `aptune prepare ... --out {folder}`")
        setattr(cfg.data, f"{split}_list", str(found[0]))
    root = inputs.videos.get(column) or (folder / "videos" if (folder / "videos").is_dir() else folder)
    cfg.data.root = str(root)


def cell_config(table: Table, cell: Cell, inputs: Inputs, out: Path | None) -> Config:
    """The preset of a cell with the row's overrides and the overrides given for every cell, then the
    run's data (--data), checkpoint (--checkpoint, else the table's Hub id for it) and run folder."""
    cfg = load_config(cell.preset, list(cell.overrides) + list(inputs.overrides))
    cfg.source = f"{table.name}: {cell.row} / {cell.column} ({cell.preset.name})"
    if cell.column in inputs.data:
        _set_data(cfg, cell.column, inputs)
    if cell.checkpoint in inputs.checkpoints:
        cfg.model.checkpoint = inputs.checkpoints[cell.checkpoint]
    elif not cfg.model.checkpoint:                # the table's Hub id (fetched into the HF cache when run)
        cfg.model.checkpoint = table.checkpoints[cell.checkpoint].get("hub")
    if out is not None:
        cfg.output.dir = str(out / "runs" / cell.key)
    return cfg


def check_inputs(table: Table, cells: list[Cell], inputs: Inputs, out: Path) -> list[Config]:
    """Before any work: every cell has its checkpoint and its list files (the error names the cell and
    the flag to pass). Returns the cells' configs."""
    unknown = sorted(set(inputs.checkpoints) - set(table.checkpoints))
    if unknown:
        raise ConfigError(f"--checkpoint: {unknown} not used by table {table.name}; its checkpoints: "
                          f"{', '.join(table.checkpoints)}")
    unknown = sorted((set(inputs.data) | set(inputs.videos)) - set(table.columns))
    if unknown:
        raise ConfigError(f"--data/--videos: {unknown} not columns of table {table.name}: {', '.join(table.columns)}")
    configs = []
    for cell in cells:
        cfg = cell_config(table, cell, inputs, out)
        if not cfg.model.checkpoint:
            ck = table.checkpoints[cell.checkpoint]
            raise ConfigError(f"{cfg.source}: needs the checkpoint {cell.checkpoint!r} ({ck.get('about', '')}): "
                              f"pass --checkpoint {cell.checkpoint}=PATH")
        if cell.column not in inputs.data and cfg.data.train_list and not Path(cfg.data.train_list).is_file():
            raise MissingFileError(f"{cfg.source}: no list file {cfg.data.train_list}; pass --data {cell.column}=DIR "
                                   "(the folder `aptune prepare --out DIR` wrote)")
        cfg.validate()
        configs.append(cfg)
    return configs


# ---- compute estimate (counted FLOPs) -----------------------------------------------------------
def model_cost(cfg: Config, num_classes: int, cache: dict) -> tuple[int, float]:
    """(tunable parameters, GFLOPs per view) of a cell's model, counted on a shape-only (meta) model.
    The cost without the head's classes is counted once per backbone, method and clip (cached): the
    head is one Linear on the pooled feature, dim + 1 parameters and dim multiply-adds per class."""
    key = (cfg.model.name, cfg.model.layout, cfg.method.name, repr(sorted(cfg.method.options.items())),
           cfg.data.num_frames, cfg.data.img_size)
    if key not in cache:
        with torch.device("meta"):                     # shapes only: no memory, no weights
            model = build_model(cfg, num_classes=1, checkpoint=None)
        cache[key] = (count_parameters(model)["trainable"], count_flops(model), model.embed_dim)
    params, gflops, dim = cache[key]
    return params + (dim + 1) * (num_classes - 1), gflops + dim * (num_classes - 1) / 1e9


def estimate_cell(table: Table, cell: Cell, cfg: Config, cache: dict) -> dict:
    """Tunable parameters, GFLOPs per view (aptune.count_flops: fvcore's convention, one multiply-add =
    one FLOP) and the run's compute in PFLOPs of that convention: training clips x epochs x 3 forward
    passes (forward + backward), one validation view per video every eval.every_epochs, and the
    multi-view test. Linear probing on cached features: one forward pass per cached view (the head's
    training is negligible)."""
    col, d, o = table.columns[cell.column], cfg.data, cfg.optim
    params, gflops = model_cost(cfg, col["num_classes"], cache)
    if cfg.runtime.cache_features:
        train = col["train_videos"] * cfg.runtime.cache_views * gflops
    else:
        train = 3 * col["train_videos"] * d.num_sample * o.epochs * gflops
    val = (o.epochs // max(cfg.eval.every_epochs, 1)) * col["val_videos"] * gflops if d.val_list else 0.0
    test = col["test_videos"] * d.test_clips * d.test_crops * gflops
    return {"tunable_params": params, "gflops_view": gflops, "train_pflops": train / 1e6, "val_pflops": val / 1e6,
            "test_pflops": test / 1e6, "total_pflops": (train + val + test) / 1e6}


# ---- running ---------------------------------------------------------------------------------------
def result_path(out: Path, cell: Cell) -> Path:
    return out / "runs" / cell.key / "result.json"


def run_cell(cell: Cell, cfg: Config) -> dict:
    """Train (resuming a killed run) and test one cell; its result.json, written last (atomically)."""
    t0 = time.time()
    res = train(cfg, resume="auto")
    test = res["test"]
    if test is None:
        raise ConfigError(f"{cfg.source}: the run has no test set (data.test_list), nothing to report")
    model = res["model"]
    out = {"row": cell.row, "column": cell.column, "preset": str(cell.preset), "top1": test["video_top1"],
           "top1_ci": list(bootstrap_ci(test["video_correct"])), "top5": test["video_top5"],
           "test_videos": test["num_videos"], "views": test["num_views"] // max(test["num_videos"], 1),
           "tunable_params": count_parameters(model)["trainable"], "gflops": count_flops(model),
           "seconds": time.time() - t0, "run_dir": res["run_dir"], "config": cfg.to_dict()}
    write_json(Path(res["run_dir"]) / "result.json", out)
    return out


def read_result(out: Path, cell: Cell, cfg: Config) -> dict | None:
    """A finished cell's result.json (None if the cell has not finished); warns when the cell was run
    with other settings than asked now (the finished result is kept: delete its folder to run it again)."""
    path = result_path(out, cell)
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    now = _flat(cfg.to_dict())
    was = _flat(res.get("config") or {})
    changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
    if changed:
        warn(f"{cfg.source}: finished earlier with other settings ({', '.join(changed[:4])}); keeping that result "
             f"(delete {path.parent} to run it again)")
    return res


def _flat(d: dict) -> dict:
    return {f"{s}.{k}": v for s, fields in d.items() if isinstance(fields, dict) for k, v in fields.items()}


def run_table(table: Table, cells: list[Cell], inputs: Inputs, out: Path, report) -> list[dict]:
    """Run every cell not finished yet, in order; `report(results)` after each cell, so the table on disk
    always holds what is done. Returns the cells' results (finished ones read back)."""
    configs = check_inputs(table, cells, inputs, out)
    results = [read_result(out, c, cfg) for c, cfg in zip(cells, configs)]
    todo = sum(r is None for r in results)
    print(f"aptune reproduce {table.name}: {len(cells)} runs ({len(cells) - todo} finished, {todo} to run) "
          f"in {out}/runs; report in {out}/results.{{md,json,png}}", flush=True)
    for cell, cfg in {c.checkpoint: (c, cfg) for c, cfg in zip(cells, configs)}.values():
        print(f"  checkpoint {cell.checkpoint}: {cfg.model.checkpoint}")
    with progress(total=len(cells), desc=f"aptune reproduce {table.name}", unit="run") as bar:
        for i, (cell, cfg) in enumerate(zip(cells, configs)):
            if results[i] is None:
                print(f"\naptune reproduce [{i + 1}/{len(cells)}] {cell.row} / {cell.column}: {cell.preset}",
                      flush=True)
                results[i] = run_cell(cell, cfg)
                report(results)
            bar.update(1)
    report(results)
    return results
