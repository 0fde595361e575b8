"""Videos that cannot be used in a run: named once, counted, listed in the run folder.

`data.skip_bad_videos` (default true) decides what training does with a training video that cannot
be decoded: skip it, or stop. Either way each bad video is named once for the run (list file:line,
path, reason, `aptune: warning:`), counted per epoch in metrics.jsonl and listed in
`<run>/bad_videos.txt` (tab-separated: where, video, reason; rewritten atomically). Skipping is
bounded: when more than `data.max_bad_fraction` of a list's videos are bad (a wrong `data.root`, a
codec this FFmpeg lacks) the run stops, up front when the files are missing, else when the limit is
crossed. Evaluation never stops on a bad video: it leaves it out and reports it, with the count.
Never is a bad video replaced by another one (the authors' loader retries a random other video).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import relative_note
from ..console import warn
from ..data.datasets import BadVideo
from ..errors import DataError
from ..io import atomic_path

FILE = "bad_videos.txt"
HEADER = "# videos aptune could not use in this run: list_file:line<TAB>video<TAB>reason\n"


class BadVideoLog:
    """What a run knows of its bad videos, by 'list:line'; every process keeps the same records (they
    are gathered from all ranks), rank 0 warns and writes the file."""

    def __init__(self, is_main: bool = True, note: str = "skipped"):
        self.path: Path | None = None          # set by attach(): nothing is written before the run folder is
        self.is_main, self.note = is_main, note
        self.known: dict[str, BadVideo] = {}
        self.splits: dict[str, set[str]] = {}

    def attach(self, run_dir: str | os.PathLike, resumed: bool) -> None:
        """Write into run_dir/bad_videos.txt from now on: a resumed run keeps the videos found bad
        before (not named again), a fresh one replaces an old list."""
        self.path = Path(run_dir) / FILE
        if resumed and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                parts = line.split("\t")
                if len(parts) == 3 and not line.startswith("#"):
                    self.known.setdefault(parts[0], BadVideo(-1, *parts))
        elif self.is_main:
            self.path.unlink(missing_ok=True)
        if self.known:
            self.write()

    def report(self, items, split: str, quiet: bool = False, note: str | None = None) -> list[BadVideo]:
        """Record `items` (BadVideo) of `split`; warn once for each one not seen before in this run,
        saying `note` (default: the log's) about it (quiet: the caller names them itself); returns
        the new ones."""
        new = []
        for b in items:
            self.splits.setdefault(split, set()).add(b.where)
            if b.where not in self.known:
                self.known[b.where] = b
                new.append(b)
        if new and self.is_main:
            if not quiet:
                listed = f", listed in {self.path}" if self.path is not None else ""
                for b in new:
                    warn(f"bad video {b}; {note or self.note}{listed}")
            self.write()
        return new

    def count(self, split: str) -> int:
        """Distinct bad videos of `split` met so far."""
        return len(self.splits.get(split, ()))

    def write(self) -> None:
        if self.path is None or not self.is_main:
            return
        with atomic_path(self.path) as tmp:
            tmp.write_text(HEADER + "".join(f"{b.where}\t{b.path}\t{b.reason}\n" for b in self.known.values()),
                           encoding="utf-8")


def check_listed_videos(sets: dict, data_cfg, log: BadVideoLog) -> None:
    """Before any work: the listed videos that are missing, empty or directories. Strict
    (data.skip_bad_videos=false): any is an error. Skipping: more than data.max_bad_fraction of a list
    is an error (most likely data.root is wrong); fewer are named and recorded in `log`."""
    found = {split: s.missing_entries() for split, s in sets.items() if hasattr(s, "missing_entries")}
    for split, bad in found.items():
        if not bad:
            continue
        n, total = len(bad), len(sets[split])
        shown = "; ".join(f"{b.where}: {b.path} ({b.reason})" for b in bad[:5]) + (
            f"; ... ({n} in all)" if n > 5 else "")
        if not data_cfg.skip_bad_videos:
            raise DataError(f"{n} listed video(s) missing or empty: {shown}. Fix the lists, or set "
                            "data.skip_bad_videos=true to skip bad videos; `aptune check-videos LIST` finds every "
                            "unreadable one")
        if n > data_cfg.max_bad_fraction * total:
            root = data_cfg.root
            where = f"{root!r}{relative_note(root)}" if root else "not set (paths as listed, relative to the working " \
                f"directory {os.getcwd()})"
            raise DataError(f"{n} of the {total} videos of data.{split}_list are missing or empty, more than "
                            f"data.max_bad_fraction={data_cfg.max_bad_fraction:g}: {shown}. Is data.root right? It "
                            f"is {where}. `aptune check-videos LIST --root ROOT` lists every unreadable video")
    bad = [b for split in found for b in found[split]]
    if bad and log.is_main:
        warn(f"{len(bad)} listed video(s) missing or empty, skipped (data.skip_bad_videos): "
             + "; ".join(f"{b.where}: {b.path} ({b.reason})" for b in bad[:10])
             + (f"; ... {len(bad) - 10} more (all in the run folder's {FILE})" if len(bad) > 10 else ""))
    for split, items in found.items():
        log.report(items, split, quiet=True)


def stop_message(bad: list[BadVideo], why: str, saved: str, resume: str) -> str:
    """The one-line error of a run stopped by bad videos: which, why, what was saved, what to do."""
    named = "; ".join(str(b) for b in bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
    return (f"bad video {named}. {why} {saved} `aptune check-videos LIST` finds every unreadable video: fix or "
            f"remove them, or set data.skip_bad_videos=true to skip them; then resume: {resume}")
