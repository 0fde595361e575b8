"""Linear probing: only the backbone's head modules train (VideoMAE: fc_norm and the head).

Nothing before them trains, so the engine may train on pooled features computed once
(`runtime.cache_features`)."""
from __future__ import annotations

from dataclasses import dataclass

from .registry import register


@dataclass
class LinearConfig:
    pass


@register("linear", LinearConfig, "Linear probing: only the head (VideoMAE: fc_norm and the head) trains",
          caches_features=True)
def apply(model, cfg: LinearConfig):
    return []
