"""Readers for the official split files of UCF101, HMDB51, SSv2, Kinetics and for plain
`class_name/video.ext` folders, producing VideoMAE list files.

List file format (VideoMAE): one `relative/path label` per line, space separated, labels
0-indexed, no header; paths relative to the dataset root. `classes.txt` holds one class
name per line, line i = label i. `prepare(...)` returns a `Prepared` (entries per split,
class names, notes for the user); `write_prepared` writes train.csv, val.csv, test.csv and
classes.txt (the `.csv` names follow VideoMAE; the separator is a space).
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, MissingFileError
from ..io import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
SPLIT_FILES = ("train.csv", "val.csv", "test.csv")

Entry = tuple[str, int]


@dataclass
class Prepared:
    splits: dict[str, list[Entry]]          # "train" / "val" / "test" -> [(rel_path, label)]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ text files
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")   # none of these belongs in a text file


def read_text(path, what: str = "list file") -> str:
    """The text of a file aptune reads as lines (list files, classes.txt, split files): UTF-8 with or
    without a byte-order mark, or UTF-16/32 with one. Anything else is refused in one line naming the
    file and the line and byte where it stops being text (a DataError, never a UnicodeDecodeError)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory, not a text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} not found") from None
    except OSError as e:
        raise DataError(f"{what} {path}: cannot be read ({e.strerror or e})") from None
    encoding, start = "utf-8", 0
    for bom, enc in _BOMS:
        if data.startswith(bom):
            encoding, start = enc, len(bom)
            break
    try:
        text = data[start:].decode(encoding)
    except UnicodeDecodeError as e:
        at = start + e.start
        prefix = data[start:at].decode(encoding)
        _refuse_control(path, prefix)           # a control character before the undecodable byte
        raise DataError(f"{path}:{prefix.count(chr(10)) + 1}: not a text file: byte {at} (0x{data[at]:02x}) is "
                        f"not {encoding.upper()} (save it as UTF-8)") from None
    _refuse_control(path, text)
    return text


def _refuse_control(path, text: str) -> None:
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - text.rfind("\n", 0, bad.start())
        raise DataError(f"{path}:{line}: not a text file: control character {bad.group()!r} at column {column}")


def text_lines(path, what: str = "list file") -> list[str]:
    """`read_text` split into lines at \\n, \\r\\n or \\r only (str.splitlines also splits at form
    feeds and other characters, which would shift the line numbers errors report)."""
    return read_text(path, what).replace("\r\n", "\n").replace("\r", "\n").split("\n")


# ------------------------------------------------------------------ list files
def read_list_file(path) -> list[Entry]:
    """Parse a VideoMAE list file. Paths may contain spaces: the label is the last field."""
    return [(p, label) for p, label, _ in read_list_lines(path)]


def read_list_lines(path) -> list[tuple[str, int, int]]:
    """read_list_file, keeping each entry's line number: [(relative_path, label, line)]."""
    entries = []
    for n, line in enumerate(text_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise DataError(f"{path}:{n}: expected 'relative/path label', got {line!r}")
        label = int(parts[1])
        if label < 0:
            raise DataError(f"{path}:{n}: negative label {label}")
        entries.append((parts[0], label, n))
    return entries


def write_list_file(path, entries: list[Entry]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{p} {label}\n" for p, label in entries))


def read_class_names(path) -> list[str]:
    """classes.txt: one class name per line (line i = label i), blank lines ignored."""
    return [ln.strip() for ln in text_lines(path, "class list") if ln.strip()]


def write_prepared(prep: Prepared, out) -> dict[str, Path]:
    """Write train.csv, val.csv, test.csv and classes.txt into `out`; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, entries in prep.splits.items():
        paths[split] = out / f"{split}.csv"
        write_list_file(paths[split], entries)
    with atomic_path(out / "classes.txt") as tmp:
        tmp.write_text("".join(f"{c}\n" for c in prep.class_names))
    paths["classes"] = out / "classes.txt"
    return paths


# ------------------------------------------------------------------ helpers
def _find_file(root: Path, name: str, depth: int = 2) -> Path | None:
    """`root/name`, or the first match in sub-folders up to `depth` levels down."""
    level = [root]
    for _ in range(depth + 1):
        for d in level:
            if (d / name).is_file():
                return d / name
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    return None


def _read_json(path: Path):
    try:
        return json.loads(read_text(path, "annotation file"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _require(root: Path, name: str, hint: str) -> Path:
    p = _find_file(root, name)
    if p is None:
        raise MissingFileError(f"{name} not found under {root} ({hint})")
    return p


def _video_prefix(root: Path, rel_paths: list[str], candidates=("",)) -> tuple[str, str | None]:
    """Find the folder (relative to root) under which the listed videos lie: the first of
    `candidates` or of root's sub-folders holding the first few listed files. Returns
    (prefix, note); the note warns when no candidate holds them."""
    sample = rel_paths[:5]
    if not sample:
        return "", None
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for cand in list(candidates) + subdirs:
        if any((root / cand / r).is_file() for r in sample):
            return cand, None
    return "", (f"warning: none of the first listed videos (e.g. {sample[0]}) exist under {root}; "
                "list paths are written as in the split files (run `aptune check-videos`)")


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _missing_note(root: Path, entries: list[Entry], split: str) -> list[str]:
    missing = sum(not (root / p).is_file() for p, _ in entries)
    return [f"warning: {missing} of {len(entries)} {split} videos not found under {root}"] if missing else []


# ------------------------------------------------------------------ UCF101
def prepare_ucf101(root, split: int = 1) -> Prepared:
    """classInd.txt (`1 ApplyEyeMakeup`, 1-indexed), trainlist0N.txt (`Class/v_x.avi 1`),
    testlist0N.txt (`Class/v_x.avi`). No separate val split: val = test."""
    root = Path(root)
    hint = "UCF101 split files: extract UCF101TrainTestSplits-RecognitionTask.zip into --root"
    class_file = _require(root, "classInd.txt", hint)
    names = {}
    for n, ln in enumerate(text_lines(class_file, "class index"), 1):
        if ln.strip():
            parts = ln.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError(f"{class_file}:{n}: expected 'id ClassName', got {ln.strip()!r}")
            names[parts[1]] = int(parts[0]) - 1
    class_names = [n for n, _ in sorted(names.items(), key=lambda kv: kv[1])]
    if sorted(names.values()) != list(range(len(names))):
        raise DataError(f"{class_file}: class ids are not 1..{len(names)}")

    def read(name, labelled):
        out = []
        f = _require(root, name, hint)
        for n, ln in enumerate(text_lines(f, "split file"), 1):
            parts = ln.split()
            if not parts:
                continue
            rel = parts[0].replace("\\", "/")
            cls = rel.split("/")[0]
            if cls not in names:
                raise DataError(f"{f}:{n}: class {cls!r} is not in {class_file.name}")
            if labelled and len(parts) > 1 and parts[1] != str(names[cls] + 1):
                raise DataError(f"{f}:{n}: label {parts[1]} disagrees with classInd for {cls}")
            out.append((rel, names[cls]))
        return out

    train, test = read(f"trainlist0{split}.txt", True), read(f"testlist0{split}.txt", False)
    prefix, note = _video_prefix(root, [p for p, _ in train], ("", "UCF-101", "UCF101", "videos"))
    train = [(_join(prefix, p), y) for p, y in train]
    test = [(_join(prefix, p), y) for p, y in test]
    notes = ["UCF101 has no separate validation split: val.csv = test.csv (official test split)"]
    notes += [note] if note else _missing_note(root, train + test, "listed")
    return Prepared({"train": train, "val": test, "test": test}, class_names, notes)


# ------------------------------------------------------------------ HMDB51
def prepare_hmdb51(root, split: int = 1) -> Prepared:
    """Per-class `<class>_test_split{N}.txt`, lines `video.avi 0|1|2` (0 unused, 1 train,
    2 test). Classes sorted by name. No separate val split: val = test."""
    root = Path(root)
    suffix = f"_test_split{split}.txt"
    any_split = _require(root, f"brush_hair{suffix}",
                         "HMDB51 split files: extract test_train_splits.rar into --root")
    files = sorted(any_split.parent.glob(f"*{suffix}"))
    class_names = [f.name[:-len(suffix)] for f in files]
    splits = {"train": [], "test": []}
    for label, (cls, f) in enumerate(zip(class_names, files)):
        for n, ln in enumerate(text_lines(f, "split file"), 1):
            parts = ln.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{f}:{n}: expected 'video.avi 0|1|2', got {ln.strip()!r}")
            if parts[1] == "1":
                splits["train"].append((f"{cls}/{parts[0]}", label))
            elif parts[1] == "2":
                splits["test"].append((f"{cls}/{parts[0]}", label))
    rels = [p for p, _ in splits["train"]]
    prefix, note = _video_prefix(root, rels, ("", "hmdb51_org", "hmdb51", "videos"))
    fix = lambda r: _join(prefix, r)  # noqa: E731
    if note:  # maybe stored flat, without class folders
        flat_prefix, flat_note = _video_prefix(root, [r.split("/", 1)[1] for r in rels], ("", "videos"))
        if flat_note is None:
            note = None
            fix = lambda r: _join(flat_prefix, r.split("/", 1)[1])  # noqa: E731
    train = [(fix(p), y) for p, y in splits["train"]]
    test = [(fix(p), y) for p, y in splits["test"]]
    notes = ["HMDB51 has no separate validation split: val.csv = test.csv (official test split)"]
    notes += [note] if note else _missing_note(root, train + test, "listed")
    return Prepared({"train": train, "val": test, "test": test}, class_names, notes)


# ------------------------------------------------------------------ SSv2
def ssv2_label_name(template: str) -> str:
    """SSv2 class name = annotation template with the placeholder brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root, split: str) -> tuple[list[Entry], list[str], list[str]]:
    """Entries for split 'train' or 'validation' (alias 'val'), class names by id, notes."""
    root = Path(root)
    hint = "SSv2 annotations: labels.json, train.json, validation.json"
    labels = _read_json(_require(root, "labels.json", hint))
    ids = {name: int(i) for name, i in labels.items()}
    if sorted(ids.values()) != list(range(len(ids))):
        raise DataError(f"labels.json: ids are not 0..{len(ids) - 1}")
    class_names = [n for n, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    fname = {"train": "train.json", "val": "validation.json", "validation": "validation.json"}[split]
    ann_path = _require(root, fname, hint)
    entries = []
    for k, item in enumerate(_read_json(ann_path)):
        try:
            name = ssv2_label_name(item["template"])
            entries.append((f"{item['id']}.webm", ids[name]))
        except KeyError as e:
            raise DataError(f"{ann_path}: item {k}: unknown class or missing field {e}") from None
    prefix, note = _video_prefix(root, [p for p, _ in entries],
                                 ("", "20bn-something-something-v2", "videos"))
    if note:  # maybe converted to mp4
        mp4 = [p.replace(".webm", ".mp4") for p, _ in entries]
        p2, n2 = _video_prefix(root, mp4, ("", "20bn-something-something-v2", "videos"))
        if n2 is None:
            prefix, note = p2, None
            entries = [(m, y) for m, (_, y) in zip(mp4, entries)]
    return [(_join(prefix, p), y) for p, y in entries], class_names, [note] if note else []


def prepare_ssv2(root) -> Prepared:
    root = Path(root)
    train, class_names, notes = read_ssv2(root, "train")
    val, _, notes2 = read_ssv2(root, "validation")
    notes = ["SSv2 test labels are not public: val.csv = test.csv (validation.json)"] + notes + notes2
    if not notes2 and not notes[1:]:
        notes += _missing_note(root, train + val, "listed")
    return Prepared({"train": train, "val": val, "test": val}, class_names, notes)


# ------------------------------------------------------------------ Kinetics
def prepare_kinetics(root) -> Prepared:
    """CSV `label,youtube_id,time_start,time_end,split` (train.csv, validate.csv or val.csv,
    optional test.csv with labels); file `<id>_<start:06d>_<end:06d>.mp4` found under
    `<split>/<label>/`, `<split>/`, `<label>/` or the root (the first that exists).
    Listed videos not found are left out and counted in the notes."""
    root = Path(root)
    hint = "Kinetics annotation CSVs (train.csv, validate.csv)"
    csvs = {"train": _require(root, "train.csv", hint)}
    csvs["val"] = _find_file(root, "validate.csv") or _require(root, "val.csv", hint)
    test = _find_file(root, "test.csv")
    rows = {}
    for split, path in csvs.items():
        rows[split] = list(csv.DictReader(io.StringIO(read_text(path, "annotation file"), newline="")))
        need = {"label", "youtube_id", "time_start", "time_end"}
        if rows[split] and not need <= set(rows[split][0]):
            raise DataError(f"{path}: expected columns {sorted(need)}, got {list(rows[split][0])}")
    if test is not None:
        t = list(csv.DictReader(io.StringIO(read_text(test, "annotation file"), newline="")))
        if t and "label" in t[0]:
            rows["test"] = t
    class_names = sorted({r["label"] for r in rows["train"]})
    ids = {c: i for i, c in enumerate(class_names)}
    notes, splits = [], {}
    dirs_cache: dict[str, bool] = {}

    def isdir(p):
        if p not in dirs_cache:
            dirs_cache[p] = (root / p).is_dir() if p else True
        return dirs_cache[p]

    for split, rs in rows.items():
        out, missing, unknown = [], 0, 0
        for k, r in enumerate(rs):
            if r["label"] not in ids:
                unknown += 1
                continue
            try:
                name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}.mp4"
            except (TypeError, ValueError):
                raise DataError(f"{csvs.get(split, test)}:{k + 2}: time_start/time_end are not numbers: "
                                f"{r['time_start']!r}, {r['time_end']!r}") from None
            sdirs = [d for d in dict.fromkeys([r.get("split", ""), split, "validate" if split == "val" else split,
                                               "val" if split == "val" else split]) if d]
            cands = [f"{d}/{r['label']}" for d in sdirs] + sdirs + [r["label"], ""]
            for c in cands:
                if isdir(c) and (root / c / name).is_file():
                    out.append((_join(c, name), ids[r["label"]]))
                    break
            else:
                missing += 1
        if missing:
            notes.append(f"{split}: {missing} of {len(rs)} listed videos not found, left out")
        if unknown:
            notes.append(f"{split}: {unknown} rows with a label not in train.csv, left out")
        splits[split] = out
    if "test" not in splits:
        splits["test"] = splits["val"]
        notes.insert(0, "no labelled Kinetics test.csv: test.csv = val.csv (validation split)")
    return Prepared(splits, class_names, notes)


# ------------------------------------------------------------------ plain folders
def videos_in(folder) -> list[Path]:
    """Video files below `folder`, sorted, leaving out hidden files and folders (`.x.mp4`, the `._x.mp4`
    files macOS leaves on shared drives)."""
    folder = Path(folder)
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def class_folders(root) -> tuple[dict[str, list[Path]], list[str]]:
    """({class name: its videos} for the sub-folders of `root` that hold videos (sorted by name), the
    names of the sub-folders that hold none: these are not classes)."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {p.name: videos_in(p) for p in folders}
    return {c: v for c, v in found.items() if v}, [c for c, v in found.items() if not v]


def scan_folder(root) -> tuple[list[Entry], list[str]]:
    """`root/class_name/video.ext` (classes sorted by name) -> entries relative to root. Folders
    without videos are not classes; hidden files are left out."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root} is not a directory")
    classes, _ = class_folders(root)
    entries = [(f.relative_to(root).as_posix(), label) for label, c in enumerate(classes) for f in classes[c]]
    if not entries:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found in class folders under {root}")
    return entries, list(classes)


def _empty_note(root: Path) -> list[str]:
    empty = class_folders(root)[1]
    return ([f"warning: {len(empty)} folder(s) under {root} hold no videos and are not classes: "
             + ", ".join(empty[:10])] if empty else [])


def class_changes(old: list[str], new: list[str]) -> str | None:
    """What changed from the class list `old` (a classes.txt already there) to `new`, in words, or None:
    labels are positions, so any change renumbers what runs and adapters trained on the old list mean."""
    if old == new:
        return None
    moved = [f"{c} {old.index(c)}->{i}" for i, c in enumerate(new) if c in old and old.index(c) != i]
    added, removed = [c for c in new if c not in old], [c for c in old if c not in new]
    parts = ([f"renumbered {', '.join(moved[:5])}" + (" ..." if len(moved) > 5 else "")] if moved else [])
    parts += [f"added {', '.join(added[:5])}"] if added else []
    parts += [f"removed {', '.join(removed[:5])}"] if removed else []
    return (f"the classes changed ({len(old)} -> {len(new)}): " + "; ".join(parts) + ". Runs and adapters "
            "trained on the old lists used the old labels: do not resume them on the new lists")


def prepare_folder(root, val_fraction: float = 0.2) -> Prepared:
    """Either `root/{train,val,test}/class/video` (splits as given) or `root/class/video`,
    then every k-th video of each class (k = round(1 / val_fraction)) goes to val (= test)."""
    root = Path(root)
    split_dirs = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if "train" in split_dirs:
        train, classes = scan_folder(root / "train")
        ids = {c: i for i, c in enumerate(classes)}
        splits = {"train": [(f"train/{p}", y) for p, y in train]}
        for s in split_dirs[1:]:
            ents, cls = scan_folder(root / s)
            bad = sorted(set(cls) - set(ids))
            if bad:
                raise DataError(f"{root / s}: classes {bad[:5]} are not in {root / 'train'}")
            splits[s] = [(f"{s}/{p}", ids[cls[y]]) for p, y in ents]
        notes = _empty_note(root / "train")
        for s in ("val", "test"):
            if s not in splits:
                other = "test" if s == "val" else "val"
                splits[s] = splits.get(other, [])
                notes.append(f"no {s}/ folder: {s}.csv = {other}.csv" if splits[s]
                             else f"no {s}/ folder: {s}.csv is empty")
        return Prepared(splits, classes, notes)
    entries, classes = scan_folder(root)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    k = max(2, int(round(1 / val_fraction)))
    train, val, few, alone = [], [], [], []
    for label in range(len(classes)):
        mine = [e for e in entries if e[1] == label]
        picked = [j % k == k - 1 for j in range(len(mine))]
        if len(mine) >= 2 and not any(picked):        # fewer than k videos: still one for val/test
            picked[-1] = True
            few.append(f"{classes[label]} ({len(mine)})")
        elif len(mine) < 2:
            alone.append(classes[label])
        for e, to_val in zip(mine, picked):
            (val if to_val else train).append(e)
    notes = [f"no train/val/test folders: every {k}-th video of each class went to val.csv (= test.csv)"]
    notes += _empty_note(root)
    if few:
        notes.append(f"warning: {len(few)} class(es) had fewer than {k} videos, so their last video went to val/test: "
                     + ", ".join(few[:10]))
    if alone:
        notes.append(f"warning: {len(alone)} class(es) have a single video and no val/test video: "
                     + ", ".join(alone[:10]))
    return Prepared({"train": train, "val": val, "test": val}, classes, notes)


def prepare(dataset: str, root, split: int = 1, val_fraction: float = 0.2) -> Prepared:
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"--root {root} is not a directory")
    if dataset in ("ucf101", "hmdb51") and split not in (1, 2, 3):
        raise ConfigError(f"--split must be 1, 2 or 3, got {split}")
    if dataset == "ucf101":
        return prepare_ucf101(root, split)
    if dataset == "hmdb51":
        return prepare_hmdb51(root, split)
    if dataset == "ssv2":
        return prepare_ssv2(root)
    if dataset == "kinetics":
        return prepare_kinetics(root)
    if dataset == "folder":
        return prepare_folder(root, val_fraction)
    raise ConfigError(f"unknown dataset {dataset!r}")
