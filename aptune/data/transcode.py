"""Re-encode videos for fast training reads (what mmaction2's resize tool does), with PyAV.

    transcode_video(src, dst, short_side=320, keyframe_interval=16)   -> (width, height, frames)
    transcode(jobs, workers=0, progress=True)                         -> {dst: error or None}

Why: decoding is the loader's CPU cost, and it grows with the pixels per frame and with the frames
decoded between the keyframe a seek lands on and the last frame a clip needs. A 720p Kinetics video
with a keyframe every 250 frames costs many times what the same clip costs at 320 px with a keyframe
every 16 (benchmarks/bench_data.py measures both).

Output: H.264 (libx264, yuv420p, crf 23, preset veryfast) in MP4 with the index at the front; the short
side scaled to `short_side` (never enlarged), the long side in proportion, both even; upright (a
display matrix, as phones write, is applied as aptune's decoder applies it: decode.upright_ops); every decoded
frame written once, in order, with its own timestamp, so frame counts and frame rates (variable ones
too) stay those of the source and clips sample the same moments; a keyframe every `keyframe_interval`
frames (no scene-cut keyframes in between); audio dropped (training reads none). A file is written
under a temporary name and renamed when complete: an interrupted run never leaves a half video, and a
second run skips the outputs already there.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..console import progress as bar
from ..errors import DataError, MissingFileError
from ..io import atomic_path
from .decode import BadVideoError, UprightRGB, _open, display_matrix, upright_ops
from .prepare import VIDEO_EXTENSIONS, read_list_lines, videos_in, write_list_file

_TURNS = ("clock", "cclock", "clock_flip", "cclock_flip")      # upright steps that swap width and height


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side min(short_side, its own), the long side in proportion, both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def transcode_video(src, dst, short_side: int = 320, keyframe_interval: int = 16,
                    crf: int = 23, preset: str = "veryfast") -> tuple[int, int, int]:
    """Re-encode `src` to `dst` (see the module doc); returns (width, height, frames written). Raises
    BadVideoError naming `src` when it cannot be read; `dst` is then left untouched."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    container, stream = _open(src)
    try:
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            size, n = _encode(container, stream, out, short_side, (keyframe_interval, crf, preset))
    except (av.FFmpegError, BadVideoError) as e:
        tmp.unlink(missing_ok=True)
        raise e if isinstance(e, BadVideoError) else BadVideoError(src, f"undecodable ({e})") from None
    finally:
        container.close()
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise BadVideoError(src, "undecodable (no frame could be decoded)")
    os.replace(tmp, dst)
    return (*size, n)


def _encode(container, stream, out, short_side: int, x264: tuple) -> tuple[tuple[int, int], int]:
    """Decode every frame of `stream`, make it upright, scale it (swscale, bicubic) and encode it into
    `out`; the output stream is made at the first frame, when its upright size is known."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    o, ops, n, last_pts, to_rgb = None, (), 0, None, UprightRGB()
    for frame in container.decode(stream):
        if o is None:
            ops = upright_ops(display_matrix(frame))
            w, h = (frame.height, frame.width) if set(ops) & set(_TURNS) else (frame.width, frame.height)
            o = _add_stream(out, rate, stream.time_base or Fraction(1, int(rate)), output_size(w, h, short_side),
                            *x264)
        if ops:            # rotate in RGB (as decode.py does), then back to YUV at the output size
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(to_rgb(frame)), format="rgb24")
        pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + 1)
        pts = pts if last_pts is None or pts > last_pts else last_pts + 1     # strictly increasing
        small = frame.reformat(width=o.width, height=o.height, format="yuv420p", interpolation="BICUBIC")
        small.pts, small.time_base, last_pts = pts, stream.time_base, pts
        small.pict_type = av.video.frame.PictureType.NONE   # the source's keyframes would force keyframes
        out.mux(o.encode(small))
        n += 1
    if o is None:
        return (0, 0), 0
    out.mux(o.encode(None))
    return (o.width, o.height), n


def _add_stream(out, rate, time_base, size: tuple[int, int], gop: int, crf: int, preset: str):
    """libx264, yuv420p, a keyframe exactly every `gop` frames (no scene-cut keyframes)."""
    o = out.add_stream("libx264", rate=rate)
    o.width, o.height = size
    o.pix_fmt, o.time_base = "yuv420p", time_base
    o.codec_context.gop_size = gop
    o.options = {"crf": str(crf), "preset": preset, "sc_threshold": "0", "keyint_min": str(gop), "threads": "1"}
    return o


def _job(args):
    src, dst, kw = args
    try:
        transcode_video(src, dst, **kw)
        return dst, None
    except BadVideoError as e:
        return dst, e.reason
    except Exception as e:                                   # noqa: BLE001 (a worker must report, not die)
        return dst, f"{type(e).__name__}: {e}"


def transcode(jobs: list[tuple[str, str]], workers: int = 0, show_progress: bool = True,
              overwrite: bool = False, **kw) -> dict[str, str | None]:
    """Transcode (src, dst) pairs in `workers` processes (0: one per CPU core this process may use),
    with a progress bar; returns {dst: None when written or already there, else why src failed}.
    Existing outputs are kept unless `overwrite`."""
    todo = [(s, d, kw) for s, d in jobs if overwrite or not Path(d).is_file()]
    done: dict[str, str | None] = {d: None for s, d in jobs}
    workers = workers or len(os.sched_getaffinity(0))
    if not todo:
        return done
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as ex:
        for dst, err in bar(ex.map(_job, todo, chunksize=1), total=len(todo), desc="transcode", unit="video",
                            show=show_progress):
            done[dst] = err
    return done


# ---- what to transcode: folders and list files ---------------------------------------------------------
@dataclass
class Plan:
    """Jobs (source, output) with unique outputs, and per list file its entries (new relative path,
    label, output, where) for the rewritten list."""
    out: Path
    jobs: list[tuple[str, str]] = field(default_factory=list)
    lists: dict[Path, list[tuple[str, int, str, str]]] = field(default_factory=dict)
    list_sources: list[Path] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)           # output -> 'list:line' or the source path


def plan(sources: list[str], out, root=None) -> Plan:
    """Every video under a folder (its layout kept), or every entry of a list file (`relative/path label`
    lines, paths relative to `root`); outputs are `out/<relative path>.mp4`."""
    out, seen = Path(out), {}
    p = Plan(out)

    def add(src: str, rel: str, where: str) -> str:
        dst = str(out / Path(rel).with_suffix(".mp4"))
        if seen.setdefault(dst, src) != src:
            raise DataError(f"{where}: {src} and {seen[dst]} would both be written to {dst}")
        if dst not in p.where:
            p.jobs.append((src, dst))
            p.where[dst] = where
        return dst

    for source in map(Path, sources):
        if source.is_dir():
            for f in videos_in(source):
                add(str(f), f.relative_to(source).as_posix(), str(f))
        elif source.is_file():
            if out / source.name in p.lists:
                raise DataError(f"{source}: another list of that name is already written to {out}")
            rows = p.lists.setdefault(out / source.name, [])
            p.list_sources.append(source)
            for rel, label, line in read_list_lines(source):
                where = f"{source}:{line}"
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise DataError(f"{where}: {rel} is not a path inside the dataset; give --root and "
                                    "list paths relative to it")
                dst = add(str(Path(root) / rel) if root else rel, rel, where)
                rows.append((Path(rel).with_suffix(".mp4").as_posix(), label, dst, where))
        else:
            raise MissingFileError(f"{source}: no such folder or list file")
    if not p.jobs:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {', '.join(map(str, sources))}")
    return p


def write_lists(p: Plan, failed: dict[str, str | None]) -> dict[Path, int]:
    """The rewritten list files (bad videos left out), classes.txt copied beside them; {list: entries}."""
    written = {}
    for path, rows in p.lists.items():
        keep = [(rel, label) for rel, label, dst, _ in rows if not failed.get(dst)]
        write_list_file(path, keep)
        written[path] = len(keep)
    for src in p.list_sources:
        classes, target = src.parent / "classes.txt", p.out / "classes.txt"
        if classes.is_file() and not target.is_file():
            with atomic_path(target) as tmp:
                tmp.write_text(classes.read_text())
    return written
