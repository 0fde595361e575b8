"""What `aptune reproduce` shows: the plan of a dry run, and the measured table beside the paper's
(<out>/results.md, results.json, results.png)."""
from __future__ import annotations

from pathlib import Path

from .io import atomic_path, pyplot, write_json
from .reproduce import Cell, Table


def _paper(cell: Cell) -> str:
    if cell.paper_top1 is None:
        return "-"
    return f"{cell.paper_top1:.1f}" + (f" ({cell.paper_top5:.1f})" if cell.paper_top5 is not None else "")


def gpu_hours(pflops: float, tflops: float) -> float:
    """Hours at `tflops` sustained (real FLOPs, 2 per multiply-add) for `pflops` of fvcore's multiply-adds."""
    return 2 * pflops * 1e15 / (tflops * 1e12) / 3600


def format_plan(table: Table, cells: list[Cell], estimates: list[dict], tflops: float) -> str:
    """The dry run's table: each cell's preset, the paper's top-1 (top-5) and the compute it needs."""
    lines = [f"# {table.title}", f"source: {table.source}; table file: {table.path}", "",
             "| Method | Column | Preset | Paper top-1 (top-5) | Tunable params | GFLOPs/view | Train+val PFLOP "
             f"| Test PFLOP | GPU-h at {tflops:g} TFLOP/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for c, e in zip(cells, estimates):
        preset = " ".join([_short(c.preset), *c.overrides])
        lines.append(f"| {c.row} | {c.column} | {preset} | {_paper(c)} | {e['tunable_params']:,} "
                     f"| {e['gflops_view']:.1f} | {e['train_pflops'] + e['val_pflops']:,.0f} | {e['test_pflops']:,.1f} "
                     f"| {gpu_hours(e['total_pflops'], tflops):,.1f} |")
    total = sum(e["total_pflops"] for e in estimates)
    known = sum(c.paper_top1 is not None for c in cells)
    lines += ["", f"{len(cells)} runs, {total:,.0f} PFLOP in all (one multiply-add = one FLOP, as the GFLOPs; "
              f"training = clips x epochs x 3 forward passes, plus validation and the multi-view test), about "
              f"{gpu_hours(total, tflops):,.0f} GPU-hours at {tflops:g} TFLOP/s sustained.",
              f"Paper numbers: {known} of {len(cells)} given in {table.path.name} ('-': not verified, to fill in).",
              "Checkpoints it needs (--checkpoint KEY=PATH; without it, the Hub id):"]
    for key in sorted({c.checkpoint for c in cells}):
        ck = table.checkpoints[key]
        lines.append(f"  {key}: {ck.get('about', '')}" + (f" (Hub: {ck['hub']})" if ck.get("hub") else ""))
    return "\n".join(lines)


def _short(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def report_rows(cells: list[Cell], results: list[dict | None]) -> list[dict]:
    """One record per cell: what the table says and what was measured (None where not run yet)."""
    out = []
    for c, r in zip(cells, results):
        rec = {"row": c.row, "column": c.column, "preset": str(c.preset), "paper_top1": c.paper_top1,
               "paper_top5": c.paper_top5}
        keys = ("top1", "top1_ci", "top5", "test_videos", "views", "tunable_params", "gflops", "seconds", "run_dir")
        rec.update({k: (r or {}).get(k) for k in keys})
        out.append(rec)
    return out


def format_results(table: Table, rows: list[dict]) -> str:
    """Markdown: per method, per column the paper's top-1 and aptune's with its 95% interval."""
    cols = [c for c in table.columns if any(r["column"] == c for r in rows)]
    head = "| Method | " + " | ".join(f"{table.columns[c].get('label', c)} paper | aptune [95% CI]"
                                     for c in cols) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(cols)]
    for name in table.rows:
        mine = {r["column"]: r for r in rows if r["row"] == name}
        if not mine:
            continue
        cells = []
        for c in cols:
            r = mine.get(c)
            paper = "-" if r is None or r["paper_top1"] is None else f"{r['paper_top1']:.1f}"
            if r is None or r["top1"] is None:
                got = "" if r is None else "not run"
            else:
                got = f"{r['top1']:.1f} [{r['top1_ci'][0]:.1f}, {r['top1_ci'][1]:.1f}]"
            cells += [paper, got]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, table: Table, cells: list[Cell], results: list[dict | None],
                 overrides: list[str]) -> None:
    rows = report_rows(cells, results)
    done = sum(r["top1"] is not None for r in rows)
    note = (f"{table.source}. aptune: video top-1 of the multi-view test, [low, high] = 95% percentile bootstrap "
            f"interval over test videos; {done} of {len(rows)} runs finished; '-': paper number not given in "
            f"{table.path.name}." + (f" Overrides on every run: {' '.join(overrides)}." if overrides else ""))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(f"# {table.title}\n\n{note}\n\n{format_results(table, rows)}\n")
    write_json(out / "results.json", {"table": table.name, "title": table.title, "source": table.source,
                                      "overrides": overrides, "cells": rows})
    plot_results(table, rows, out / "results.png")


def plot_results(table: Table, rows: list[dict], path: Path) -> None:
    """One line per run: aptune's top-1 with its 95% interval (dot and bar) and the paper's (open diamond)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(rows)))
    for y, r in enumerate(rows):
        if r["top1"] is not None:
            low, high = r["top1_ci"]
            ax.errorbar(r["top1"], y, xerr=[[r["top1"] - low], [high - r["top1"]]], fmt="o", color="C0", capsize=3,
                        label="aptune, 95% CI")
        if r["paper_top1"] is not None:
            ax.scatter(r["paper_top1"], y, marker="D", facecolors="none", edgecolors="C3", zorder=3, label="paper")
    ax.set_yticks(range(len(rows)), [f"{r['row']} / {table.columns[r['column']].get('label', r['column'])}"
                                     for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 (%)")
    ax.set_title(table.title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if labels:                                        # one legend entry per kind
        keep = {label: h for h, label in zip(handles, labels)}
        ax.legend(keep.values(), keep.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
