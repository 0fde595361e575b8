"""Video decoding behind one small interface (PyAV, which bundles FFmpeg).

    probe(path)               -> VideoInfo(num_frames, fps, width, height)
    read_frames(path, idx)    -> uint8 tensor (len(idx), H, W, 3), RGB, exactly the frames asked for

Frame identity. Frame i is the i-th presentation timestamp (pts) of the video stream in
sorted order. The pts list comes from demuxing the packets (no decoding: cheap), so
`read_frames` is frame-accurate for constant and variable frame rates alike: it seeks to
the keyframe at or before the first wanted pts, decodes forward, keeps the frames whose
pts are wanted and stops after the last one. It never counts frames after a seek.

Frame count (`probe`). For MP4/MOV (and the other ISO-BMFF variants) the stream's frame
count comes from the sample table and is exact for an intact file, so we use it. For
every other container (WebM/MKV usually store none, AVI headers can be stale) we count
the video packets by demuxing, which reads the file but decodes nothing.

Every failure (missing, zero bytes, not a video, undecodable, frames that cannot be
decoded because the file is cut short) raises `BadVideoError(path, reason)`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import av
import numpy as np
import torch

from ..errors import DataError

# ISO-BMFF demuxer name in FFmpeg ("mov,mp4,m4a,3gp,3g2,mj2"): the sample table is exact.
_EXACT_COUNT_FORMATS = ("mov", "mp4")


class BadVideoError(DataError):
    """A video that cannot be used. `path` and `reason` are kept as attributes; the
    message names the path, e.g. `bad video data/a.mp4: empty file (0 bytes)`."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad video {self.path}: {reason}")

    def __reduce__(self):  # survives pickling across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


def _open(path):
    """Open `path` and return (container, video stream), or raise BadVideoError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadVideoError(path, "missing (no such file)")
    if os.path.isdir(path):
        raise BadVideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise BadVideoError(path, "empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise BadVideoError(path, f"undecodable (cannot open container: {e})") from None
    if not container.streams.video:
        container.close()
        raise BadVideoError(path, "undecodable (no video stream)")
    return container, container.streams.video[0]


def _is_exact_count_format(container) -> bool:
    return any(n in _EXACT_COUNT_FORMATS for n in container.format.name.split(","))


def _packet_pts(container, stream) -> list[int]:
    """Sorted presentation timestamps of the stream's packets (demux only). Falls back to
    dts for packets without pts (some AVI files)."""
    out = []
    for pkt in container.demux(stream):
        if pkt.size == 0:  # flush packet at end of stream
            continue
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        if ts is not None:
            out.append(ts)
    out.sort()
    return out


def _index_truncation(container, stream, pts: list[int]) -> str | None:
    """Cheap truncation test from the demuxed pts index: fewer packets than the MP4/MOV
    sample table lists, or packets ending well before the duration in the header."""
    listed = stream.frames if _is_exact_count_format(container) else 0
    if listed > len(pts):
        return f"{len(pts)} of {listed} listed frames present"
    tb, fps = float(stream.time_base or 0), _fps(stream)
    dur = (stream.duration * tb if stream.duration and tb else
           container.duration / 1e6 if container.duration else 0.0)
    if dur and tb and fps:
        end = (pts[-1] - (stream.start_time or 0)) * tb + 1 / fps
        if end < 0.9 * dur - 1 / fps:
            return f"frames end at {end:.2f}s of a stated {dur:.2f}s"
    return None


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(path) -> VideoInfo:
    """Frame count, frame rate and size of the first video stream (see module doc for how
    the frame count is obtained)."""
    container, stream = _open(path)
    try:
        n = stream.frames if _is_exact_count_format(container) else 0
        if n <= 0:
            n = len(_packet_pts(container, stream))
        cc = stream.codec_context
        return VideoInfo(num_frames=int(n), fps=_fps(stream), width=cc.width, height=cc.height)
    except av.FFmpegError as e:
        raise BadVideoError(path, f"undecodable ({e})") from None
    finally:
        container.close()


def _decode_range(container, stream, wanted: set[int], first: int, last: int, seek: bool):
    """Decode from the keyframe at/before `first` up to `last`; return {pts: frame}."""
    got = {}
    if seek:
        container.seek(first, stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        ts = frame.pts
        if ts is None:
            continue
        if ts in wanted and ts not in got:
            got[ts] = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
        if ts >= last or len(got) == len(wanted):
            break
    return got


def read_frames(path, indices, threads: int = 0) -> torch.Tensor:
    """Return frames `indices` (0-based, repeats allowed, any order) as a uint8 tensor
    (len(indices), H, W, 3), RGB. Indices outside [0, num_frames) raise IndexError;
    clamping short videos is the sampler's job. `threads`: FFmpeg decoding threads
    (0 = FFmpeg's choice, 1 = single-threaded, best inside many DataLoader workers)."""
    indices = [int(i) for i in indices]
    return read_sampled(path, lambda n: indices, threads)[0]


def read_sampled(path, choose, threads: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Open `path` once, call `choose(num_frames) -> indices`, decode those frames.
    Returns (frames (len(indices), H, W, 3) uint8, indices). `num_frames` is the number
    of video packets (the length of the pts index)."""
    container, stream = _open(path)
    try:
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        stream.codec_context.thread_count = threads
        pts = _packet_pts(container, stream)
        if not pts:
            raise BadVideoError(path, "undecodable (no video packets)")
        short = _index_truncation(container, stream, pts)
        if short:
            raise BadVideoError(path, f"truncated: {short}")
        indices = [int(i) for i in choose(len(pts))]
        if not indices:
            raise ValueError("read_frames: empty index list")
        bad = [i for i in indices if not 0 <= i < len(pts)]
        if bad:
            raise IndexError(f"{path}: frame indices {bad[:5]} out of range [0, {len(pts)})")
        wanted = {pts[i] for i in indices}
        first, last = pts[min(indices)], pts[max(indices)]
        got = _decode_range(container, stream, wanted, first, last, seek=True)
        if min(got, default=last + 1) > first and len(got) < len(wanted):
            # The seek landed after the first wanted frame (bad index in the file):
            # decode again from the very start.
            container.seek(0, stream=stream, backward=True, any_frame=False)
            got = _decode_range(container, stream, wanted, first, last, seek=False)
    except av.FFmpegError as e:
        raise BadVideoError(path, f"undecodable ({e})") from None
    finally:
        container.close()
    missing = [i for i in indices if pts[i] not in got]
    if missing:
        raise BadVideoError(path, f"truncated or corrupt: frames {sorted(set(missing))[:5]} "
                            f"of {len(pts)} could not be decoded")
    return torch.from_numpy(np.stack([got[pts[i]] for i in indices])), indices  # (N, H, W, 3)


def decode_all(path, threads: int = 0) -> torch.Tensor:
    """Every frame in presentation order, (N, H, W, 3) uint8 (reference / baseline)."""
    container, stream = _open(path)
    try:
        stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        stream.codec_context.thread_count = threads
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    except av.FFmpegError as e:
        raise BadVideoError(path, f"undecodable ({e})") from None
    finally:
        container.close()
    if not frames:
        raise BadVideoError(path, "undecodable (no frame could be decoded)")
    frames.sort(key=lambda x: -1 if x[0] is None else x[0])
    return torch.from_numpy(np.stack([f for _, f in frames]))


def check_video(path, min_frames: int = 1) -> tuple[str | None, str]:
    """Decode every frame of `path` and classify it: returns (problem, detail), problem one
    of None (good), 'missing', 'empty', 'undecodable', 'truncated', 'too_short'.
    Truncated: decoding fails after some frames, fewer frames decode than the container's
    index lists (MP4/MOV sample table, or the packets read), or the decoded frames end well
    before the duration stated in the header."""
    try:
        container, stream = _open(path)
    except BadVideoError as e:
        kind = ("missing" if e.reason.startswith("missing") else
                "empty" if e.reason.startswith("empty") else "undecodable")
        return kind, e.reason
    decoded, packets, last_ts, error = 0, 0, None, None
    try:
        listed = stream.frames if _is_exact_count_format(container) else 0
        tb = float(stream.time_base) if stream.time_base else 0.0
        dur = (stream.duration * tb if stream.duration and tb else
               container.duration / 1e6 if container.duration else 0.0)
        try:
            for pkt in container.demux(stream):
                if pkt.size:
                    packets += 1
                for frame in pkt.decode():
                    decoded += 1
                    if frame.pts is not None:
                        last_ts = frame.pts if last_ts is None else max(last_ts, frame.pts)
        except av.FFmpegError as e:
            error = str(e)
    finally:
        container.close()
    if decoded == 0:
        return "undecodable", f"no frame could be decoded{f' ({error})' if error else ''}"
    if error:
        return "truncated", f"decoding failed after {decoded} frames ({error})"
    expected = max(listed, packets)
    if expected > decoded:
        return "truncated", f"{decoded} of {expected} frames decodable"
    fps = _fps(stream)
    if dur and last_ts is not None and tb and fps:
        end = (last_ts - (stream.start_time or 0)) * tb + 1 / fps
        if end < 0.9 * dur - 1 / fps:
            return "truncated", f"frames end at {end:.2f}s of a stated {dur:.2f}s"
    if decoded < min_frames:
        return "too_short", f"{decoded} frames, a clip needs {min_frames}"
    return None, f"{decoded} frames"
