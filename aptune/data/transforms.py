"""Spatial transforms on decoded clips, in plain torch (no torchvision).

Input: uint8 tensor (T, H, W, 3) from `decode.read_frames`.
Output: float tensor (3, T, S, S), scaled to [0, 1] then normalised with the backbone's mean/std
(ImageNet's for VideoMAE; each backbone config carries its own).

As the APT authors' code (wgcban/apt `kinetics.py`, `ssv2.py`, `video_transforms.py`):
Test: resize the short side to S (skipped when it is S already), the long side to
int(S * long / short), bilinear without antialiasing (their OpenCV INTER_LINEAR); then
`num_crops` crops of S x S along the long side (the height when H >= W) at offsets
int(c * (long - S) / (C - 1)); one crop: centred, offset round((long - S) / 2).
Training: (optional short-side resize, off in the authors' runs) -> random resized crop
(area 0.08-1, aspect 0.75-1.3333, bilinear without antialiasing) -> optional RandAugment
(timm's policy string, the same ops for every frame of a view: rand_augment.py) -> optional
horizontal flip -> normalise. All randomness comes from the `random.Random` passed in, never
from global state, drawn in that order: crop box, flip, RandAugment.

Training runs in two halves so that the loader's CPU does only the geometric work on uint8:
`train_view` (in the loader) draws a view's random choices and crops/resizes it, giving uint8
(T, S, S, 3) and a row of drawn numbers; `augment_batch` (after collation, on the training device)
turns a batch of such views into normalised float clips. `train_transform` is both on one clip.

Resizing runs on uint8 frames (PyTorch's channels-last uint8 kernel, several times faster
than float on CPU); its rounding is within one grey level of OpenCV's fixed-point result.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..normalization import IMAGENET_MEAN, IMAGENET_STD
from .rand_augment import RandAugment, resolve_policy


@dataclass
class TrainTransformConfig:
    img_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)        # area fraction of the crop
    ratio: tuple[float, float] = (0.75, 1.3333)     # aspect ratio w/h of the crop (the authors' values)
    flip: bool = True                               # off for direction-sensitive data (SSv2)
    short_side: int | None = None                   # resize short side first (None: crop the original)
    rand_augment: str | bool | None = None          # timm policy string; True: the authors' (rand_augment.py)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the backbone's input normalisation
    std: tuple[float, float, float] = IMAGENET_STD
    ra: RandAugment | None = field(init=False, repr=False, default=None)

    def __post_init__(self):
        self.rand_augment = resolve_policy(self.rand_augment)
        self.ra = RandAugment.parse(self.rand_augment) if self.rand_augment else None

    @property
    def width(self) -> int:
        """Drawn numbers per view: flip, then RandAugment's (op, argument) per layer."""
        return 1 + (self.ra.width if self.ra is not None else 0)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the short side = size and the long side int(size * long / short),
    truncated as the authors' `get_resize_sizes` (320 x 240 at 224 -> 298 x 224)."""
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_uint8(video: torch.Tensor, height: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, no antialiasing, like OpenCV's INTER_LINEAR) of
    uint8 (T, H, W, 3) -> (T, height, width, 3), rounded to uint8; unchanged if the size
    already matches. `out`: a contiguous (T, height, width, 3) uint8 tensor to write into."""
    if tuple(video.shape[1:3]) == (height, width):
        return video if out is None else out.copy_(video)
    x = video.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # (T, 3, H, W)
    if out is None:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        return x.permute(0, 2, 3, 1).contiguous()  # (T, h, w, 3)
    # the same kernel as F.interpolate above, writing into `out` (channels-last, so no copy after)
    torch.ops.aten.upsample_bilinear2d.out(x, [height, width], False, None, None, out=out.permute(0, 3, 1, 2))
    return out


def random_resized_crop_box(height: int, width: int, scale, ratio, rng: random.Random):
    """(top, left, h, w) of a crop with area fraction in `scale` and aspect ratio (w/h)
    log-uniform in `ratio`; 10 tries, then the largest centred crop with a clamped ratio."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def crop_offsets(long_side: int, size: int, num_crops: int) -> list[int]:
    """Offsets of `num_crops` windows of `size` along a side of `long_side`:
    int(c * (long - size) / (C - 1)) (3 crops of 224 along 298: 0, 37, 74); one crop:
    round((long - size) / 2), Python's round as the authors' CenterCrop (75 -> 38)."""
    room = max(long_side - size, 0)
    if num_crops == 1:
        return [int(round(room / 2.0))]
    step = room / (num_crops - 1)
    return [int(c * step) for c in range(num_crops)]


# ---------------------------------------------------------------- training views
def draw_view(height: int, width: int, cfg: TrainTransformConfig, rng: random.Random):
    """One training view's random choices, in the order they have always been drawn: crop box
    (top, left, h, w), then the row [flip, RandAugment's (op, argument) per layer]."""
    box = random_resized_crop_box(height, width, cfg.scale, cfg.ratio, rng)
    flip = 1.0 if cfg.flip and rng.random() < 0.5 else 0.0
    return box, [flip, *(cfg.ra.draw(rng) if cfg.ra is not None else [])]


def train_view(video: torch.Tensor, cfg: TrainTransformConfig, rng: random.Random, out: torch.Tensor | None = None):
    """The loader's half of a training view: uint8 (T, H, W, 3) -> (uint8 (T, S, S, 3) random resized
    crop (written into `out` when given), float64 (cfg.width,) drawn row for `augment_batch`)."""
    if cfg.short_side:
        video = resize_uint8(video, *short_side_size(video.shape[1], video.shape[2], cfg.short_side))
    (top, left, h, w), row = draw_view(video.shape[1], video.shape[2], cfg, rng)
    crop = resize_uint8(video[:, top:top + h, left:left + w], cfg.img_size, cfg.img_size, out)
    return crop, torch.tensor(row, dtype=torch.float64)


def augment_batch(x: torch.Tensor, drawn: torch.Tensor, cfg: TrainTransformConfig) -> torch.Tensor:
    """The device's half, batched over every view: uint8 (..., T, S, S, 3) on any device and the drawn
    rows (..., cfg.width) (CPU) -> float (..., 3, T, S, S): RandAugment, /255, flip, mean/std. The
    arithmetic of the float steps is the per-clip pipeline's, so results do not depend on batching."""
    lead = x.shape[:-4]
    x = x.reshape(-1, *x.shape[-4:]).permute(0, 1, 4, 2, 3).float()      # (N, T, 3, S, S), 0..255
    drawn = drawn.reshape(-1, drawn.shape[-1])
    if cfg.ra is not None:
        x = cfg.ra.apply(x, drawn[:, 1:])
    x = x.div_(255.0)
    flip = drawn[:, 0].nonzero().flatten().to(x.device)
    if len(flip):
        x[flip] = x[flip].flip(-1)
    mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    x = ((x - mean) / std).permute(0, 2, 1, 3, 4).contiguous()            # (N, 3, T, S, S)
    return x.view(*lead, *x.shape[1:])


def train_transform(video: torch.Tensor, cfg: TrainTransformConfig, rng: random.Random) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, S, S), one random augmentation drawn from `rng` (both halves)."""
    crop, row = train_view(video, cfg, rng)
    return augment_batch(crop[None], row[None], cfg)[0]


def test_views(video: torch.Tensor, img_size: int, num_crops: int = 3, mean=IMAGENET_MEAN,
               std=IMAGENET_STD) -> torch.Tensor:
    """Short side to S, then `num_crops` S x S crops along the long side.
    uint8 (T, H, W, 3) -> float (num_crops, 3, T, S, S)."""
    return multi_view(video, [list(range(video.shape[0]))], img_size, num_crops, mean, std)


def multi_view(frames: torch.Tensor, clips: list[list[int]], img_size: int,
               num_crops: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """All test views from one set of decoded frames: the frames are resized once (short
    side to S, uint8), then every clip (a list of positions into `frames`) gets `num_crops`
    S x S crops along the long side, the height when h >= w as in the authors' code (see
    crop_offsets; the short side is S, so it is taken whole). Each crop is converted to
    float and normalised in one pass straight into the output (x * 1/(255 std) - mean/std).
    uint8 (U, H, W, 3) -> float (len(clips) * num_crops, 3, T, S, S), clip-major."""
    small = resize_uint8(frames, *short_side_size(frames.shape[1], frames.shape[2], img_size))
    h, w = small.shape[1:3]
    T, S = len(clips[0]), img_size
    std = torch.tensor(std).view(3, 1, 1, 1)
    scale, shift = 1.0 / (255.0 * std), -torch.tensor(mean).view(3, 1, 1, 1) / std
    out = torch.empty(len(clips) * num_crops, 3, T, S, S)
    offsets = crop_offsets(max(h, w), S, num_crops)
    for c, idx in enumerate(clips):
        sel = small[idx]  # (T, h, w, 3) uint8
        for j, off in enumerate(offsets):
            crop = sel[:, off:off + S, :S] if h >= w else sel[:, :S, off:off + S]  # (T, S, S, 3)
            torch.addcmul(shift, crop.permute(3, 0, 1, 2), scale, out=out[c * num_crops + j])
    return out
