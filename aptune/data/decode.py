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

Orientation. Frames come out upright, as ffmpeg and players show them: the display matrix a
frame carries (phone videos: rotation 90/180/270, sometimes a mirror; FFmpeg attaches the
stream's matrix to every decoded frame) is applied with ffmpeg's own autorotate rule
(`upright_ops`) after the conversion to RGB; the first frame's matrix holds for the whole read.
`probe` reports the upright size. Angles that are not a multiple of 90 degrees (ffmpeg's lossy
`rotate` filter) are left as stored.

Every failure (missing, zero bytes, not a video, undecodable, frames that cannot be
decoded because the file is cut short) raises `BadVideoError(path, reason)`.
"""
from __future__ import annotations

import errno
import math
import os
import struct
from dataclasses import dataclass

import av
import numpy as np
import torch
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

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


# ------------------------------------------------------------------ orientation
def display_matrix(frame) -> tuple[int, ...] | None:
    """The 3x3 display matrix (9 ints, FFmpeg's layout) a decoded frame carries, or None."""
    sd = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if sd is None or sd.buffer_size < 36:
        return None
    return struct.unpack("=9i", bytes(sd)[:36])


def upright_ops(matrix) -> tuple[str, ...]:
    """The steps ffmpeg's autorotate inserts for `matrix` (fftools: get_rotation, then transpose /
    hflip / vflip): each of 'clock', 'cclock', 'clock_flip', 'cclock_flip' (transpose modes),
    'hflip', 'vflip'. () for no matrix, the identity, or an angle that is not a quarter turn."""
    if matrix is None:
        return ()
    a, b, _, c, d = matrix[:5]
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if not sx or not sy:                                   # singular: av_display_rotation_get is NaN
        return ()
    theta = _c_round(math.degrees(math.atan2(b / sy, a / sx)))  # -round(av_display_rotation_get)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("cclock_flip" if c > 0 else "clock",)
    if abs(theta - 180) < 1:
        return (("hflip",) if a < 0 else ()) + (("vflip",) if d < 0 else ())
    if abs(theta - 270) < 1:
        return ("clock_flip" if c < 0 else "cclock",)
    if abs(theta) < 1 and d < 0:
        return ("vflip",)
    return ()


def _c_round(x: float) -> float:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


_OPS = {
    "clock": lambda x: np.rot90(x, -1),                  # quarter turn clockwise
    "cclock": lambda x: np.rot90(x, 1),                  # quarter turn counter-clockwise
    "cclock_flip": lambda x: x.transpose(1, 0, 2),       # transpose (cclock, then vflip)
    "clock_flip": lambda x: np.rot90(x, -1)[::-1],       # anti-transpose (clock, then vflip)
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1],
}


def upright(img: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """Apply `upright_ops` steps to a (H, W, C) frame (a view; callers stack/copy)."""
    for op in ops:
        img = _OPS[op](img)
    return img


class UprightRGB:
    """Frames of one decode call -> upright (H, W, 3) uint8 RGB arrays. One converter for the call:
    `frame.to_ndarray(format=...)` would keep a converter with its own threads on each frame. The
    display matrix is read from the first frame (containers store one per stream): reading side data
    ties a frame in a reference cycle that holds its buffers until the garbage collector runs, and a
    forked DataLoader worker that collected a frame holding a converter hung freeing its threads."""

    def __init__(self):
        self.reformatter, self.ops = VideoReformatter(), None

    def __call__(self, frame) -> np.ndarray:
        if self.ops is None:
            self.ops = upright_ops(display_matrix(frame))
        return upright(self.reformatter.reformat(frame, format="rgb24").to_ndarray(), self.ops)


# ------------------------------------------------------------------ open / index
def _open(path):
    """Open `path` and return (container, video stream), or raise BadVideoError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadVideoError(path, "missing (no such file)")
    if os.path.isdir(path):
        raise BadVideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise BadVideoError(path, "empty file (0 bytes)")
    container = _av_open(path)
    name = container.format.name
    if name.startswith("image2") or name.endswith("_pipe") or (name in _ANIMATED_IMAGES and _one_frame(container)):
        container.close()                                      # png_pipe, jpeg_pipe, a GIF of one frame, ...
        raise BadVideoError(path, f"not a video: a still image ({container.format.long_name})")
    if name in _ANIMATED_IMAGES:                               # _one_frame read packets: start again
        container.close()
        container = _av_open(path)
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        found = f"only {', '.join(kinds)}" if kinds else "no streams"
        raise BadVideoError(path, f"undecodable: no video stream ({found} found: a damaged header, or not a video)")
    return container, container.streams.video[0]


def _av_open(path: str):
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise BadVideoError(path, f"undecodable: cannot open container ({_open_reason(e)})") from None


_ANIMATED_IMAGES = ("gif", "apng")


def _one_frame(container) -> bool:
    """Whether an animated-image file holds a single picture (reads at most two packets)."""
    try:
        packets = (p for p in container.demux(video=0) if p.size)
        return sum(1 for _ in zip(range(2), packets)) < 2
    except (av.FFmpegError, IndexError):   # IndexError: no video stream (reported by the caller)
        return False


def ffmpeg_reason(e: Exception) -> str:
    """FFmpeg's message without its error number and the call or file it names ('[Errno 1094995529]
    Invalid data found when processing input: ...' -> 'invalid data found when processing input')."""
    msg = str(getattr(e, "strerror", None) or e).strip()
    return msg[:1].lower() + msg[1:]


def _open_reason(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return "metadata that is not text"
    if getattr(e, "errno", None) == errno.EIO:   # the demuxer hit the end of the file inside the header
        return "the file ends inside its header: cut short?"
    return ffmpeg_reason(e) + ": a damaged header, or not a video"


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


_TRANSPOSES = {"clock", "cclock", "clock_flip", "cclock_flip"}


def _first_frame_ops(container, stream) -> tuple[str, ...]:
    """`upright_ops` of the first frame that decodes (the matrix rides on decoded frames only);
    () when none decodes (probe reports the size; reading the frames reports the damage)."""
    try:
        container.seek(0, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            return upright_ops(display_matrix(frame))
    except av.FFmpegError:
        pass
    return ()


def probe(path) -> VideoInfo:
    """Frame count, frame rate and upright size (as shown, see Orientation) of the first video
    stream (see module doc for how the frame count is obtained)."""
    container, stream = _open(path)
    try:
        n = stream.frames if _is_exact_count_format(container) else 0
        if n <= 0:
            n = len(_packet_pts(container, stream))
        cc = stream.codec_context
        width, height = cc.width, cc.height
        if set(_first_frame_ops(container, stream)) & _TRANSPOSES:
            width, height = height, width
        return VideoInfo(num_frames=int(n), fps=_fps(stream), width=width, height=height)
    except av.FFmpegError as e:
        raise BadVideoError(path, f"undecodable ({ffmpeg_reason(e)})") from None
    finally:
        container.close()


def _decode_range(container, stream, wanted: set[int], first: int, last: int, seek: bool):
    """Decode from the keyframe at/before `first` up to `last`; return {pts: frame}. A frame nobody
    wants and no other frame refers to (most B-frames) is not decoded at all: FFmpeg's skip_frame is
    set per packet, NONREF unless the packet's pts is wanted (decode order = packet order, and a
    skipped frame is no other frame's reference, so every frame decoded is bit for bit the same)."""
    got, to_rgb, ctx = {}, UprightRGB(), stream.codec_context
    if seek:
        container.seek(first, stream=stream, backward=True, any_frame=False)
    try:
        for packet in container.demux(stream):
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            for frame in packet.decode():
                ts = frame.pts
                if ts is None:
                    continue
                if ts in wanted and ts not in got:
                    got[ts] = to_rgb(frame)  # (H, W, 3) uint8, upright
                if ts >= last or len(got) == len(wanted):
                    return got
    finally:
        ctx.skip_frame = "DEFAULT"
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
        raise BadVideoError(path, f"undecodable ({ffmpeg_reason(e)})") from None
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
        to_rgb = UprightRGB()
        frames = [(f.pts, to_rgb(f)) for f in container.decode(stream)]
    except av.FFmpegError as e:
        raise BadVideoError(path, f"undecodable ({ffmpeg_reason(e)})") from None
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
        kind = ("missing" if e.reason.startswith(("missing", "is a directory")) else
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
            error = ffmpeg_reason(e)
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
