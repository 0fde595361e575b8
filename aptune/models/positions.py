"""Position tables: resizing a learned table to another token grid."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import CheckpointError


def source_grid(n: int, target: tuple[int, int, int], hint: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The (t, h, w) grid of a table of n tokens: the hint if it fits, else keep the target's spatial
    or temporal size, else the only square factorisation."""
    t, h, w = target
    if hint is not None and math.prod(hint) == n:
        return hint
    if n % (h * w) == 0:
        return n // (h * w), h, w
    if n % t == 0 and math.isqrt(n // t) ** 2 == n // t:
        s = math.isqrt(n // t)
        return t, s, s
    options = [(tt, math.isqrt(n // tt), math.isqrt(n // tt)) for tt in range(1, n + 1)
               if n % tt == 0 and math.isqrt(n // tt) ** 2 == n // tt]
    if len(options) == 1:
        return options[0]
    raise CheckpointError(f"pos_embed has {n} tokens: cannot tell its (t, h, w) grid (candidates {options}) "
                          f"for the model's grid {target}; the checkpoint states no num_frames/input_size "
                          "(args) or config.json to decide")


def interpolate_pos_embed(pos: torch.Tensor, target_grid: tuple[int, int, int],
                          source: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Resize a learned position table (1, N', C) to `target_grid` (t, h, w) by trilinear
    interpolation over its own (t', h', w') grid (align_corners=False). Returns (1, t*h*w, C)."""
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise CheckpointError(f"pos_embed must be (1, N, C), got {tuple(pos.shape)}")
    _, n, c = pos.shape
    src = source_grid(n, target_grid, source)
    if tuple(src) == tuple(target_grid):
        return pos
    grid = pos.reshape(1, *src, c).permute(0, 4, 1, 2, 3).float()          # (1, C, t', h', w')
    grid = F.interpolate(grid, size=tuple(target_grid), mode="trilinear", align_corners=False)
    return grid.permute(0, 2, 3, 4, 1).reshape(1, -1, c).to(pos.dtype)     # (1, t*h*w, C)
