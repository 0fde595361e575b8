"""`aptune prepare DATASET --root RAW --out LISTS`: list files from official splits."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import warn
from ..data.prepare import class_changes, prepare, read_class_names, write_prepared
from ..errors import DataError

HELP = "write train/val/test list files (+ classes.txt) from a dataset's official split files"

EPILOG = """Datasets and what --root must hold:
  ucf101    classInd.txt, trainlist0N.txt, testlist0N.txt (anywhere up to 2 folders down) and the
            videos (Class/v_*.avi under --root or --root/UCF-101). No val split: val = test.
  hmdb51    <class>_test_split{1,2,3}.txt (0 unused, 1 train, 2 test) and <class>/video.avi.
            No val split: val = test.
  ssv2      labels.json, train.json, validation.json and <id>.webm videos. Test labels are not
            public: val = test = validation.
  kinetics  train.csv, validate.csv (or val.csv), optional labelled test.csv with columns
            label,youtube_id,time_start,time_end,split; videos <id>_<start:06d>_<end:06d>.mp4 under
            <split>/<label>/, <split>/, <label>/ or --root. Missing videos are left out (counted).
            Without a labelled test.csv: test = val.
  folder    <class>/video.ext (classes sorted), or train/ val/ test/ folders of those. Without
            split folders every k-th video per class goes to val (= test), see --val-fraction.
Paths in the list files are relative to --root: pass the same --root to training."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dataset", choices=["ucf101", "hmdb51", "ssv2", "kinetics", "folder"])
    parser.add_argument("--root", required=True, help="raw dataset folder (videos + split files)")
    parser.add_argument("--out", required=True, help="folder for train.csv, val.csv, test.csv, classes.txt")
    parser.add_argument("--split", type=int, default=1, choices=[1, 2, 3],
                        help="official split number (UCF101, HMDB51) (default: 1)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="folder without split folders: fraction of each class for val (default: 0.2)")


def run(args: argparse.Namespace) -> int:
    prep = prepare(args.dataset, args.root, split=args.split, val_fraction=args.val_fraction)
    old = Path(args.out) / "classes.txt"
    if old.is_file():
        try:
            change = class_changes(read_class_names(old), prep.class_names)
        except DataError as e:
            change = f"the old list is not readable ({e}); it is replaced"
        if change:
            warn(f"{old}: {change}")
    paths = write_prepared(prep, args.out)
    for note in prep.notes:
        if note.startswith("warning: "):
            warn(note[len("warning: "):])
        else:
            print(note)
    for split in ("train", "val", "test"):
        print(f"{split:5s}: {len(prep.splits[split]):7d} videos -> {paths[split]}")
    print(f"{len(prep.class_names)} classes -> {paths['classes']}")
    return 0
