"""Full fine-tuning: every parameter trains (drop path and layer-wise lr decay live in the recipe).

Checkpoints keep the whole model state, not an adapter."""
from __future__ import annotations

from dataclasses import dataclass

from .registry import register


@dataclass
class FullConfig:
    pass


@register("full", FullConfig, "Full fine-tuning: every parameter trains", full_state=True,
          cannot_share="trains the whole backbone, so no other task can share it")
def apply(model, cfg: FullConfig):
    return [model]
