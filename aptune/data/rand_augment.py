"""RandAugment from timm's policy string, drawn once per clip view and applied batched on the device.

Policy strings are timm's (`rand_augment_transform`): `rand-m4-n2-mstd0.2-inc1` is magnitude 4 (of 10),
2 ops per clip, magnitude noise N(0, 0.2), the "increasing" op set; the APT authors' run scripts pass
exactly that (`--aa rand-m4-n2-mstd0.2-inc1`). Sections, as timm reads them: m (int), n (int), p (float,
the chance that each chosen op is applied, default 0.5), mstd (float; above 100 means uniform in [0, m]),
mmax (int, the magnitude's upper clip, default 10), inc (0/1). Not supported: timm's transform sets
(`t...`, which the authors do not use); a malformed section is an error, where timm would skip it.

How a clip is augmented, as the authors' video loader does (`create_random_augment` + their copy of
timm's RandAugment, called on the list of frames): one draw per view, the same ops and arguments for
every frame. The draw follows timm's calls one for one, from the item's own `random.Random`: n ops
uniform with replacement (timm: numpy's choice), then per op: skip if random() > p, magnitude gauss(m,
mstd) clipped to [0, mmax or 10], the op's level argument with a random sign where timm negates. The
authors' hyper-parameters: bicubic resampling, fill (128, 128, 128), translations 0.45 of the side.

A draw is a row of 2n numbers (op index or -1 when skipped, argument); `RandAugment.apply` runs the rows
of a batch on the device, op by op on the views that drew it (image_ops.py, equal to PIL's results).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from . import image_ops as I

AUTHORS_POLICY = "rand-m4-n2-mstd0.2-inc1"     # wgcban/apt scripts/*/finetune_viu2.sh `--aa`
LEVEL_MAX = 10.0                               # timm's _LEVEL_DENOM
FILL = 128.0                                   # timm's _FILL (the authors pass no img_mean)
TRANSLATE_PCT = 0.45                           # timm's default translate_pct

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order
OPS_PLAIN = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
             "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
OPS_INCREASING = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")
_SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel") + tuple(e + "Increasing" for e in _ENHANCE)


def resolve_policy(value) -> str | None:
    """`data.rand_augment` as written -> a policy string or None: false / null / "" off, true the authors'
    policy; a string is checked (ConfigError naming what is wrong) and returned as given."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return AUTHORS_POLICY
    if not isinstance(value, str):
        raise ConfigError(f"expected a RandAugment policy string such as {AUTHORS_POLICY!r}, true or false, "
                          f"got {value!r}")
    RandAugment.parse(value)
    return value


def _negate(v: float, rng: random.Random) -> float:
    return -v if rng.random() > 0.5 else v        # timm's _randomly_negate


def level_arg(name: str, magnitude: float, rng: random.Random) -> float:
    """timm's LEVEL_TO_ARG[name](magnitude), drawing its random sign from `rng` where timm does."""
    f = magnitude / LEVEL_MAX
    base = name.removesuffix("Increasing")
    if name in ("AutoContrast", "Equalize", "Invert"):
        return 0.0
    if name == "Rotate":
        return _negate(f * 30.0, rng)
    if name in ("ShearX", "ShearY"):
        return _negate(f * 0.3, rng)
    if name in ("TranslateXRel", "TranslateYRel"):
        return _negate(f * TRANSLATE_PCT, rng)
    if name == "Posterize":
        return int(f * 4)                                   # bits kept
    if name == "PosterizeIncreasing":
        return 4 - int(f * 4)
    if name == "Solarize":
        return min(256, int(f * 256))                       # threshold
    if name == "SolarizeIncreasing":
        return 256 - min(256, int(f * 256))
    if name == "SolarizeAdd":
        return min(128, int(f * 110))
    if base in _ENHANCE and name != base:
        return max(0.1, 1.0 + _negate(f * 0.9, rng))        # blend factor around 1
    if name in _ENHANCE:
        return f * 1.8 + 0.1
    raise KeyError(name)


@dataclass(frozen=True)
class RandAugment:
    policy: str
    ops: tuple[str, ...]
    num_layers: int = 2
    magnitude: int = 10
    magnitude_std: float = 0.0
    magnitude_max: int | None = None
    prob: float = 0.5

    @classmethod
    def parse(cls, policy: str) -> "RandAugment":
        """timm's policy string -> RandAugment (ConfigError naming the section at fault)."""
        sections = policy.split("-")
        if sections[0] != "rand":
            raise ConfigError(f"RandAugment policy {policy!r} must start with 'rand-' (e.g. {AUTHORS_POLICY!r})")
        kw, seen, increasing = {}, set(), False
        for c in sections[1:]:
            key, val = (re.split(r"(\d.*)", c) + [""])[:2]             # timm's split: name, number
            if c.startswith("t") or key not in ("m", "n", "p", "mstd", "mmax", "inc") or not val or key in seen:
                why = ("transform sets are not supported" if c.startswith("t") else
                       "repeated" if key in seen else "known sections: m, n, p, mstd, mmax, inc (each with a number)")
                raise ConfigError(f"RandAugment policy {policy!r}: section {c!r}: {why}")
            seen.add(key)
            try:
                num = float(val) if key in ("p", "mstd") else int(val)
            except ValueError:
                raise ConfigError(f"RandAugment policy {policy!r}: section {c!r}: {val!r} is not "
                                  f"{'a number' if key in ('p', 'mstd') else 'an integer'}") from None
            if key == "inc":
                increasing = bool(num)
            else:
                kw[{"m": "magnitude", "n": "num_layers", "p": "prob", "mstd": "magnitude_std",
                    "mmax": "magnitude_max"}[key]] = num
        if kw.get("magnitude_std", 0) > 100:
            kw["magnitude_std"] = math.inf                   # timm: uniform magnitude in [0, m]
        if not 0 <= kw.get("prob", 0.5) <= 1:
            raise ConfigError(f"RandAugment policy {policy!r}: p must be in [0, 1]")
        return cls(policy, OPS_INCREASING if increasing else OPS_PLAIN, **kw)

    @property
    def width(self) -> int:
        """Numbers per drawn row: (op index, argument) per layer."""
        return 2 * self.num_layers

    # ---- drawing (CPU, in the loader) ------------------------------------------------------------------
    def choose(self, rng: random.Random) -> list[int]:
        """The ops of one view: num_layers indices, uniform with replacement (timm's choice)."""
        return [rng.randrange(len(self.ops)) for _ in range(self.num_layers)]

    def draw_levels(self, chosen: list[int], rng: random.Random) -> list[float]:
        """(op, argument) per chosen op, in timm's AugmentOp.__call__ order; op -1 = not applied."""
        row = []
        for k in chosen:
            if self.prob < 1.0 and rng.random() > self.prob:
                row += [-1.0, 0.0]
                continue
            m = self.magnitude
            if self.magnitude_std == math.inf:
                m = rng.uniform(0, m)
            elif self.magnitude_std > 0:
                m = rng.gauss(m, self.magnitude_std)
            m = max(0.0, min(m, self.magnitude_max or LEVEL_MAX))
            row += [float(k), float(level_arg(self.ops[k], m, rng))]
        return row

    def draw(self, rng: random.Random) -> list[float]:
        return self.draw_levels(self.choose(rng), rng)

    # ---- applying (batched, on the device) -------------------------------------------------------------
    def apply(self, x: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """x: float (N, T, 3, H, W) of whole numbers 0..255 (any device); drawn: (N, width) rows from
        `draw` (CPU). Each op runs once per layer on the views that drew it."""
        for layer in range(self.num_layers):
            ops, args = drawn[:, 2 * layer].long(), drawn[:, 2 * layer + 1]
            for k in sorted(set(ops.tolist()) - {-1}):
                sel = (ops == k).nonzero().flatten()
                idx = sel.to(x.device)
                x[idx] = apply_op(self.ops[k], x[idx], args[sel].tolist())
        return x


def apply_op(name: str, x: torch.Tensor, args: list[float]) -> torch.Tensor:
    """One op on views x (N, T, 3, H, W) with one argument per view, as timm's op of that name on PIL."""
    base = name.removesuffix("Increasing")
    H, W = x.shape[-2:]
    if name == "AutoContrast":
        return I.autocontrast(x)
    if name == "Equalize":
        return I.equalize(x)
    if name == "Invert":
        return 255.0 - x
    if base == "Posterize":                                  # keep the top `bits` bits (bits 0: black)
        mask = [(0xFF << (8 - int(b))) & 0xFF if b < 8 else 0xFF for b in args]
        return (x.to(torch.uint8) & I._per_view(mask, x, torch.uint8)).to(x.dtype)
    if base == "Solarize":                                   # invert levels >= threshold
        return torch.where(x < I._per_view(args, x), x, 255.0 - x)
    if name == "SolarizeAdd":                                # add to levels < 128, saturating
        return torch.where(x < 128, (x + I._per_view(args, x)).clamp_(max=255), x)
    if base in _ENHANCE:
        f = I._per_view(args, x)
        if base == "Brightness":
            return I.blend(torch.zeros_like(x), x, f)
        if base == "Color":
            return I.blend(I.grey(x).expand_as(x), x, f)
        if base == "Contrast":
            total = I.grey(x).to(torch.int64).sum(dim=(2, 3, 4), keepdim=True)
            mean = (total.to(I.F64) / (H * W) + 0.5).floor().to(x.dtype)   # int(ImageStat mean + 0.5)
            return I.blend(mean.expand_as(x), x, f)
        return I.blend(I.smooth(x), x, f)
    return I.affine_bicubic(x, [affine_coeffs(name, a, W, H) for a in args], FILL)


def affine_coeffs(name: str, arg: float, width: int, height: int) -> list[float]:
    """PIL's affine data (output -> input) for timm's geometric ops on a width x height image."""
    if name == "ShearX":
        return [1.0, arg, 0.0, 0.0, 1.0, 0.0]
    if name == "ShearY":
        return [1.0, 0.0, 0.0, arg, 1.0, 0.0]
    if name == "TranslateXRel":
        return [1.0, 0.0, arg * width, 0.0, 1.0, 0.0]
    if name == "TranslateYRel":
        return [1.0, 0.0, 0.0, 0.0, 1.0, arg * height]
    if name != "Rotate":
        raise KeyError(name)
    # Image.rotate(arg) about the centre, no expand: the matrix exactly as Pillow computes it
    cx, cy = width / 2, height / 2
    a = -math.radians(arg % 360.0)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m
