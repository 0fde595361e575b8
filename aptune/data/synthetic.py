"""Synthetic action videos whose class needs the ORDER of frames.

Each labeled class comes in a pair with its time reversal: a clip of "moving right" played
backwards is a clip of "moving left", and the generator makes the second class of every
pair exactly that way (render the forward motion, then reverse the frames). The frame
distribution of the two classes of a pair is therefore the same, so no single frame tells
them apart; only the order does. Clips vary in shape, colour, texture, background, speed,
start position and pixel noise, and are written as real H.264 mp4 files with PyAV.

    labeled  (`generate_dataset`): train/val/test lists in VideoMAE format + classes.txt
    unlabeled (`generate_unlabeled`): a list of clips for self-supervised pre-training, from
              a different seed, mixing the labeled motions with motions the labeled set lacks
              (diagonal drift, bouncing, orbiting, zoom-while-moving, still objects)

Every clip is a pure function of (seed, split, index): the rendered frames are deterministic and
independent of the order in which clips are made. The mp4 files are nearly so: libx264 was seen
to code a clip slightly differently now and then (even single-threaded), so two runs decode to
the same frames up to coding noise (a fraction of a grey level on average).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from ..console import progress
from ..errors import ConfigError
from ..io import atomic_path, write_json

# (forward motion, class of the forward clip, class of the reversed clip)
PAIRS = [("translate_h", "moving_right", "moving_left"),
         ("translate_v", "moving_down", "moving_up"),
         ("rotate", "rotating_clockwise", "rotating_anticlockwise"),
         ("scale", "growing", "shrinking"),
         ("meet", "two_objects_meeting", "two_objects_parting")]
CLASSES = [name for _, fwd, rev in PAIRS for name in (fwd, rev)]
EXTRA_MOTIONS = ["diagonal", "bounce", "orbit", "zoom_move", "still"]
SPLITS = {"train": 0, "val": 1, "test": 2, "unlabeled": 3}

SHAPES = ["disc", "square", "triangle", "cross", "ell", "ring", "tee"]
ASYMMETRIC = ["triangle", "ell", "tee"]          # shapes whose rotation is visible
TEXTURES = ["solid", "stripes", "checker"]
BACKGROUNDS = ["plain", "gradient", "stripes", "noise"]


@dataclass
class SynthConfig:
    """How clips look. `frames` and `size` give (T, size, size) RGB clips."""
    frames: int = 16
    size: int = 96
    fps: int = 8
    crf: int = 18            # H.264 quality (lower = closer to the rendered pixels)
    object_scale: float = 1.0    # multiplies object sizes
    motion_scale: float = 1.0    # multiplies path lengths, rotation angles and growth (within the frame)
    max_noise: float = 0.05      # pixel noise std is drawn from [0.01, max_noise]
    backgrounds: tuple = tuple(BACKGROUNDS)
    textures: tuple = tuple(TEXTURES)        # object textures to draw from

    def validate(self) -> None:
        if self.frames < 4:
            raise ConfigError(f"SynthConfig.frames: need at least 4 frames, got {self.frames}")
        if self.size < 32 or self.size % 2:
            raise ConfigError(f"SynthConfig.size: need an even size >= 32, got {self.size}")


# ---- drawing ------------------------------------------------------------------------------
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in the object's local frame, (u, v) in units of its radius."""
    au, av_ = np.abs(u), np.abs(v)
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av_) <= 0.8
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "triangle":                       # apex at v = -0.9
        return (v <= 0.7) & (au <= (v + 0.9) * 0.6)
    if shape == "cross":
        return ((au <= 0.3) & (av_ <= 1.0)) | ((av_ <= 0.3) & (au <= 1.0))
    if shape == "ell":
        return ((u >= -0.9) & (u <= -0.3) & (av_ <= 0.9)) | ((v >= 0.3) & (v <= 0.9) & (au <= 0.9))
    if shape == "tee":
        return ((v >= -0.9) & (v <= -0.4) & (au <= 0.9)) | ((au <= 0.25) & (v >= -0.9) & (v <= 0.9))
    raise ValueError(f"unknown shape {shape!r}")


def _random_object(rng: np.random.Generator, shapes=SHAPES, textures=TEXTURES) -> dict:
    colour = rng.uniform(0.05, 1.0, 3)
    return {"shape": str(rng.choice(shapes)), "texture": str(rng.choice(list(textures))),
            "c1": colour, "c2": np.clip(1.0 - colour + rng.normal(0, 0.1, 3), 0, 1),
            "period": float(rng.uniform(0.3, 0.7))}


def _background(rng: np.random.Generator, S: int, kinds=BACKGROUNDS) -> np.ndarray:
    """A static background (S, S, 3) in [0, 1]: plain, gradient, stripes or smooth noise."""
    kind = rng.choice(list(kinds))
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    if kind == "plain":
        return np.broadcast_to(a, (S, S, 3)).copy()
    theta = rng.uniform(0, 2 * math.pi)
    t = (x - 0.5) * math.cos(theta) + (y - 0.5) * math.sin(theta)           # (S, S) in ~[-0.7, 0.7]
    if kind == "gradient":
        w = np.clip(t + 0.5, 0, 1)[..., None]
    elif kind == "stripes":
        w = (0.5 + 0.5 * np.sin(2 * math.pi * t * rng.uniform(3, 8)))[..., None] * 0.5
    else:                                                                   # smooth noise
        coarse = rng.uniform(0, 1, (6, 6, 3))
        idx = np.minimum((np.arange(S) * 6) // S, 5)
        w = coarse[idx][:, idx] * 0.6
    return (a * (1 - w) + b * w).astype(np.float32)


def _draw(img: np.ndarray, obj: dict, cx: float, cy: float, r: float, angle: float) -> None:
    """Paint `obj` centred at (cx, cy) with radius r and rotation `angle` (radians, clockwise
    on screen since y points down) into img (S, S, 3) in place."""
    S = img.shape[0]
    y, x = np.mgrid[0:S, 0:S].astype(np.float32)
    dx, dy = (x + 0.5 - cx) / r, (y + 0.5 - cy) / r
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy                            # rotate into the object frame
    mask = _shape_mask(obj["shape"], u, v)
    if obj["texture"] == "solid":
        pick2 = np.zeros_like(mask)
    elif obj["texture"] == "stripes":
        pick2 = np.floor(u / obj["period"]).astype(int) % 2 == 1
    else:
        pick2 = (np.floor(u / obj["period"]) + np.floor(v / obj["period"])).astype(int) % 2 == 1
    colour = np.where(pick2[..., None], obj["c2"], obj["c1"])               # (S, S, 3)
    img[mask] = colour[mask]


# ---- motions: each returns per-frame lists of (object, cx, cy, r, angle) ------------------
@dataclass
class _Scene:
    """What every motion draws from: the generator, normalised time t (T,), the frame size S, the
    size and motion scales, the textures, the moving object and its angle."""
    rng: np.random.Generator
    t: np.ndarray
    S: int
    size_k: float
    motion_k: float
    textures: tuple
    obj: dict
    ang0: float

    def straight(self, r: float, length: float, direction: float) -> tuple[np.ndarray, np.ndarray]:
        """Centre positions for a straight path of `length` pixels that stays inside the frame."""
        dx, dy = math.cos(direction), math.sin(direction)
        span_x, span_y = abs(dx) * length, abs(dy) * length
        mx = self.rng.uniform(r + span_x / 2, self.S - r - span_x / 2)
        my = self.rng.uniform(r + span_y / 2, self.S - r - span_y / 2)
        return mx + (self.t - 0.5) * length * dx, my + (self.t - 0.5) * length * dy


def _translate(s: _Scene, kind: str) -> list[list[tuple]]:
    r = s.rng.uniform(0.08, 0.16) * s.S * s.size_k
    length = min(s.rng.uniform(0.3, 0.6) * s.motion_k, 0.95) * (s.S - 2 * r)
    direction = {"translate_h": 0.0, "translate_v": math.pi / 2}.get(kind, s.rng.uniform(0, 2 * math.pi))
    xs, ys = s.straight(r, length, direction)
    return [[(s.obj, x, y, r, s.ang0)] for x, y in zip(xs, ys)]


def _rotate(s: _Scene, kind: str) -> list[list[tuple]]:
    r = min(s.rng.uniform(0.18, 0.3) * s.size_k, 0.45) * s.S
    cx, cy = s.rng.uniform(r, s.S - r, 2)
    total = math.radians(s.rng.uniform(90, 200)) * s.motion_k
    return [[(s.obj, cx, cy, r, s.ang0 + total * ti)] for ti in s.t]


def _scale(s: _Scene, kind: str) -> list[list[tuple]]:
    S = s.S
    r0 = s.rng.uniform(0.06, 0.12) * S * s.size_k
    r1 = min(r0 * (1 + (s.rng.uniform(1.8, 3.0) - 1) * s.motion_k), 0.34 * S * max(s.size_k, 1.0), 0.45 * S)
    cx, cy = s.rng.uniform(r1, S - r1, 2)
    return [[(s.obj, cx, cy, r0 + (r1 - r0) * ti, s.ang0)] for ti in s.t]


def _meet(s: _Scene, kind: str) -> list[list[tuple]]:
    """Two objects approach each other along a line through the frame's middle."""
    rng, S = s.rng, s.S
    other = _random_object(rng, SHAPES, s.textures)
    r = min(rng.uniform(0.09, 0.13) * s.size_k, 0.2) * S
    direction = rng.uniform(0, math.pi)
    d0, d1 = rng.uniform(0.55, 0.7) * S, rng.uniform(2.1, 2.6) * r
    dx, dy = math.cos(direction), math.sin(direction)
    if s.motion_k > 1:                                                      # start further apart, inside the frame
        d0 = max(min(d0 * s.motion_k, 0.95 * (S - 2 * r) / max(abs(dx), abs(dy))), d0)
    half = d0 / 2 + r
    mx = rng.uniform(S / 2 - 0.1 * S, S / 2 + 0.1 * S)
    my = rng.uniform(S / 2 - 0.1 * S, S / 2 + 0.1 * S)
    mx, my = np.clip(mx, abs(dx) * half, S - abs(dx) * half), np.clip(my, abs(dy) * half, S - abs(dy) * half)
    frames = []
    for ti in s.t:
        d = (d0 + (d1 - d0) * ti) / 2
        frames.append([(s.obj, mx - d * dx, my - d * dy, r, s.ang0), (other, mx + d * dx, my + d * dy, r, s.ang0)])
    return frames


def _bounce(s: _Scene, kind: str) -> list[list[tuple]]:
    """Fast, reflecting off the walls."""
    r = s.rng.uniform(0.08, 0.14) * s.S
    lo, hi = r, s.S - r
    p0 = s.rng.uniform(lo, hi, 2)
    vel = s.rng.uniform(0.8, 1.6) * (hi - lo) * np.array([math.cos(s.ang0), math.sin(s.ang0)])
    frames = []
    for ti in s.t:
        p = (p0 - lo + vel * ti) % (2 * (hi - lo))                          # unfold the reflections
        p = lo + np.where(p > hi - lo, 2 * (hi - lo) - p, p)
        frames.append([(s.obj, p[0], p[1], r, s.ang0)])
    return frames


def _orbit(s: _Scene, kind: str) -> list[list[tuple]]:
    r = s.rng.uniform(0.07, 0.12) * s.S
    R = s.rng.uniform(0.15, 0.3) * s.S
    cx, cy = s.rng.uniform(R + r, s.S - R - r, 2)
    sweep = s.rng.choice([-1, 1]) * math.radians(s.rng.uniform(120, 300))
    return [[(s.obj, cx + R * math.cos(s.ang0 + sweep * ti), cy + R * math.sin(s.ang0 + sweep * ti), r, s.ang0)]
            for ti in s.t]


def _zoom_move(s: _Scene, kind: str) -> list[list[tuple]]:
    r0 = s.rng.uniform(0.06, 0.1) * s.S
    r1 = r0 * s.rng.uniform(1.5, 2.2)
    xs, ys = s.straight(r1, s.rng.uniform(0.2, 0.4) * (s.S - 2 * r1), s.rng.uniform(0, 2 * math.pi))
    return [[(s.obj, x, y, r0 + (r1 - r0) * ti, s.ang0)] for x, y, ti in zip(xs, ys, s.t)]


def _still(s: _Scene, kind: str) -> list[list[tuple]]:
    r = s.rng.uniform(0.1, 0.25) * s.S
    cx, cy = s.rng.uniform(r, s.S - r, 2)
    return [[(s.obj, cx, cy, r, s.ang0)] for _ in s.t]


_MOVES = {"translate_h": _translate, "translate_v": _translate, "diagonal": _translate, "rotate": _rotate,
          "scale": _scale, "meet": _meet, "bounce": _bounce, "orbit": _orbit, "zoom_move": _zoom_move,
          "still": _still}


def _motion(kind: str, rng: np.random.Generator, T: int, S: int, size_k: float = 1.0,
            motion_k: float = 1.0, textures=TEXTURES) -> list[list[tuple]]:
    if kind not in _MOVES:
        raise ValueError(f"unknown motion {kind!r}")
    t = np.linspace(0.0, 1.0, T)                                            # normalised time
    obj = _random_object(rng, ASYMMETRIC if kind == "rotate" else SHAPES, textures)
    ang0 = rng.uniform(0, 2 * math.pi)
    return _MOVES[kind](_Scene(rng, t, S, size_k, motion_k, textures, obj, ang0), kind)


def render_clip(kind: str, reverse: bool, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """One clip (T, S, S, 3) uint8 of motion `kind`, played backwards when `reverse`."""
    T, S = cfg.frames, cfg.size
    bg = _background(rng, S, cfg.backgrounds)
    plan = _motion(kind, rng, T, S, cfg.object_scale, cfg.motion_scale, cfg.textures)
    noise_std = rng.uniform(0.01, max(cfg.max_noise, 0.01))
    noise = rng.normal(0.0, noise_std, (T, S, S, 3)).astype(np.float32)     # iid per frame: time-symmetric
    bg_mean = bg.mean(axis=(0, 1))
    for obj in {id(o[0]): o[0] for items in plan for o in items}.values():  # keep objects visible
        if np.abs(obj["c1"] - bg_mean).sum() < 0.6:
            obj["c1"] = np.where(bg_mean > 0.5, bg_mean - 0.45, bg_mean + 0.45).clip(0, 1)
    clip = np.empty((T, S, S, 3), np.float32)
    for i, items in enumerate(plan):
        img = bg.copy()
        for obj, cx, cy, r, angle in items:
            _draw(img, obj, cx, cy, r, angle)
        clip[i] = img
    clip += noise
    if reverse:
        clip = clip[::-1]
    return (np.clip(clip, 0, 1) * 255 + 0.5).astype(np.uint8)


def labeled_clip(seed: int, split: str, index: int, cfg: SynthConfig) -> tuple[np.ndarray, int]:
    """The clip and label of item `index` of labeled split `split` (labels cycle over CLASSES)."""
    label = index % len(CLASSES)
    kind = PAIRS[label // 2][0]
    rng = np.random.default_rng([seed, SPLITS[split], index])
    return render_clip(kind, reverse=bool(label % 2), rng=rng, cfg=cfg), label


MOTIONS = [k for k, _, _ in PAIRS] + EXTRA_MOTIONS     # the pool's motion kinds (direction-blind labels)


def pool_clip(seed: int, index: int, cfg: SynthConfig) -> tuple[np.ndarray, int]:
    """Item `index` of the pre-training pool and its motion kind (an index into MOTIONS); the
    direction is random and not part of the label."""
    rng = np.random.default_rng([seed, SPLITS["unlabeled"], index])
    kind = int(rng.integers(len(MOTIONS)))
    return render_clip(MOTIONS[kind], reverse=bool(rng.integers(2)), rng=rng, cfg=cfg), kind


def unlabeled_clip(seed: int, index: int, cfg: SynthConfig) -> np.ndarray:
    """Item `index` of the pre-training pool: any labeled or extra motion, either direction."""
    return pool_clip(seed, index, cfg)[0]


# ---- files --------------------------------------------------------------------------------
def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, crf: int = 18) -> None:
    """Write frames (T, H, W, 3) uint8 as an H.264 mp4 (yuv420p) with PyAV, atomically."""
    T, H, W, _ = frames.shape
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.codec_context.thread_count = 1                           # one thread: as repeatable as x264 gets
            stream.codec_context.thread_type = "NONE"
            stream.options = {"crf": str(crf), "preset": "medium", "threads": "1",
                              "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0"}
            for i, f in enumerate(frames):
                # convert to yuv420p ourselves: the encoder's implicit conversion was seen to vary run to run
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _progress(total: int, desc: str, show: bool):
    return progress(total=total, desc=desc, unit="clip", show=show)


def generate_dataset(out: str | os.PathLike, num_train: int = 400, num_val: int = 100, num_test: int = 100,
                     seed: int = 0, cfg: SynthConfig | None = None, progress: bool = True) -> Path:
    """Write the labeled dataset under `out`: <split>/<class>/<index>.mp4, train.txt, val.txt,
    test.txt (`relative/path label`), classes.txt and dataset.json (recipe + `hflip: false`,
    since the classes name directions). Returns the folder."""
    cfg = cfg or SynthConfig()
    cfg.validate()
    out = Path(out)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in sizes.items():
        if n < 0:
            raise ConfigError(f"num_{split} must be >= 0, got {n}")
    with _progress(sum(sizes.values()), "synth", progress) as bar:
        for split, n in sizes.items():
            lines = []
            for i in range(n):
                clip, label = labeled_clip(seed, split, i, cfg)
                rel = f"{split}/{CLASSES[label]}/{i:05d}.mp4"
                write_video(out / rel, clip, cfg.fps, cfg.crf)
                lines.append(f"{rel} {label}\n")
                bar.update()
            (out / f"{split}.txt").write_text("".join(lines))
    (out / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    write_json(out / "dataset.json", {"name": "aptune-synthetic-actions", "kind": "labeled", "seed": seed,
                                      "sizes": sizes, "config": asdict(cfg), "classes": CLASSES,
                                      "direction_sensitive": True, "hflip": False,
                                      "pairs": [[fwd, rev] for _, fwd, rev in PAIRS]})
    return out


def generate_unlabeled(out: str | os.PathLike, num: int = 2000, seed: int = 1000,
                       cfg: SynthConfig | None = None, progress: bool = True) -> Path:
    """Write `num` unlabeled clips under out/unlabeled/ and out/unlabeled.txt (`path -1`)."""
    cfg = cfg or SynthConfig()
    cfg.validate()
    out = Path(out)
    lines = []
    with _progress(num, "synth-unlabeled", progress) as bar:
        for i in range(num):
            rel = f"unlabeled/{i:06d}.mp4"
            write_video(out / rel, unlabeled_clip(seed, i, cfg), cfg.fps, cfg.crf)
            lines.append(f"{rel} -1\n")
            bar.update()
    (out / "unlabeled.txt").write_text("".join(lines))
    write_json(out / "dataset.json", {"name": "aptune-synthetic-motions", "kind": "unlabeled", "seed": seed,
                                      "size": num, "config": asdict(cfg),
                                      "motions": [k for k, _, _ in PAIRS] + EXTRA_MOTIONS})
    return out
