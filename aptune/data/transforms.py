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
(area 0.08-1, aspect 0.75-1.3333, bilinear without antialiasing) -> optional horizontal
flip -> optional light RandAugment (aptune's own, one set of parameters for all frames of
a clip) -> normalise. All randomness comes from the `random.Random` passed in, never from
global state.

Resizing runs on uint8 frames (PyTorch's channels-last uint8 kernel, several times faster
than float on CPU); its rounding is within one grey level of OpenCV's fixed-point result.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TrainTransformConfig:
    img_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)        # area fraction of the crop
    ratio: tuple[float, float] = (0.75, 1.3333)     # aspect ratio w/h of the crop (the authors' values)
    flip: bool = True                               # off for direction-sensitive data (SSv2)
    short_side: int | None = None                   # resize short side first (None: crop the original)
    rand_augment: bool = False
    ra_num_ops: int = 2
    ra_magnitude: float = 0.5                       # in [0, 1]
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the backbone's input normalisation
    std: tuple[float, float, float] = IMAGENET_STD


def to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [0, 1]."""
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected uint8 video (T, H, W, 3), got {tuple(video.shape)} {video.dtype}")
    return video.permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, H, W)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the short side = size and the long side int(size * long / short),
    truncated as the authors' `get_resize_sizes` (320 x 240 at 224 -> 298 x 224)."""
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_uint8(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, no antialiasing, like OpenCV's INTER_LINEAR) of
    uint8 (T, H, W, 3) -> (T, height, width, 3), rounded to uint8; unchanged if the size
    already matches."""
    if tuple(video.shape[1:3]) == (height, width):
        return video
    x = video.permute(0, 3, 1, 2)  # (T, 3, H, W), channels-last in memory
    x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(height, width),
                      mode="bilinear", align_corners=False, antialias=False)
    return x.permute(0, 2, 3, 1).contiguous()  # (T, h, w, 3)


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


# ---------------------------------------------------------------- light RandAugment
def _gray(x):  # (T, 3, H, W) -> (T, 1, H, W)
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a, b, f):
    return (b + (a - b) * f).clamp_(0, 1)


def _brightness(x, m, sign):
    return _blend(x, torch.zeros_like(x), 1 + sign * 0.9 * m)


def _contrast(x, m, sign):
    return _blend(x, _gray(x).mean().expand_as(x), 1 + sign * 0.9 * m)


def _saturation(x, m, sign):
    return _blend(x, _gray(x).expand_as(x), 1 + sign * 0.9 * m)


def _sharpness(x, m, sign):
    kernel = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], dtype=x.dtype) / 13
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                       kernel.expand(3, 1, 3, 3).contiguous(), groups=3)
    return _blend(x, blurred, 1 + sign * 0.9 * m)


def _solarize(x, m, sign):
    thr = 1.0 - m
    return torch.where(x >= thr, 1.0 - x, x)


def _posterize(x, m, sign):
    bits = 8 - int(round(4 * m))
    levels = 2 ** bits
    return torch.floor(x * 255 / (256 // levels)) * (256 // levels) / 255


def _autocontrast(x, m, sign):
    lo = x.amin(dim=(0, 2, 3), keepdim=True)
    hi = x.amax(dim=(0, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp_(0, 1)


RAND_AUGMENT_OPS = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation,
                    "sharpness": _sharpness, "solarize": _solarize, "posterize": _posterize,
                    "autocontrast": _autocontrast, "identity": lambda x, m, s: x}


def rand_augment(x: torch.Tensor, rng: random.Random, num_ops: int = 2,
                 magnitude: float = 0.5) -> torch.Tensor:
    """Apply `num_ops` random colour ops to float (T, 3, H, W) in [0, 1]; each op draws
    its parameters once, so every frame of the clip gets the same change."""
    names = sorted(RAND_AUGMENT_OPS)
    for _ in range(num_ops):
        name = names[rng.randrange(len(names))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        x = RAND_AUGMENT_OPS[name](x, magnitude, sign)
    return x


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> normalised (3, T, H, W) with the backbone's mean/std."""
    mean = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)


def train_transform(video: torch.Tensor, cfg: TrainTransformConfig, rng: random.Random) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, S, S), one random augmentation drawn from `rng`."""
    if cfg.short_side:
        video = resize_uint8(video, *short_side_size(video.shape[1], video.shape[2], cfg.short_side))
    H, W = video.shape[1:3]
    top, left, h, w = random_resized_crop_box(H, W, cfg.scale, cfg.ratio, rng)
    crop = resize_uint8(video[:, top:top + h, left:left + w], cfg.img_size, cfg.img_size)
    x = to_float(crop)  # (T, 3, S, S) in [0, 1]
    if cfg.flip and rng.random() < 0.5:
        x = x.flip(-1)
    if cfg.rand_augment:
        x = rand_augment(x, rng, cfg.ra_num_ops, cfg.ra_magnitude)
    return normalize(x, cfg.mean, cfg.std)


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
