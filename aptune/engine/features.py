"""Linear probing on cached features.

With a method that trains only the backbone's head modules (linear probing: `caches_features`),
the pooled tokens of the frozen backbone, `model.forward_pooled(x)` (VideoMAE: the token mean,
taken BEFORE fc_norm, which trains), can be computed once and the head trained on them.

Augmentation: the cache holds `cache_views` augmented views per training video; view v is the
clip the dataset returns at epoch v (its randomness is seeded from (seed, epoch, index)), and
training epoch e uses view e % cache_views. With cache_views >= epochs this is exactly the
data an uncached run sees, so both reach the same weights up to float rounding; with fewer views,
later epochs reuse earlier augmentations (1 view = a fixed augmented clip per video). The
validation set is deterministic and cached once. The cache lives in memory (N x views x C floats)
and is rebuilt on resume (deterministically).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..console import progress
from ..errors import DataError
from . import distributed as D
from .runtime import Runtime


class HeadOnly(nn.Module):
    """The part of `model` after pooling (VideoMAE: fc_norm -> dropout -> head), on cached pooled
    features (B, C)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.model.pooled_head(pooled)


class FeatureDataset(Dataset):
    """Items (features, label, index) from a cache of shape (views, N, [num_sample,] C)."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, class_names=None):
        self.feats, self.labels = feats, labels
        self.view = 0
        self.class_names = class_names
        self.num_classes = len(class_names) if class_names else int(labels.max()) + 1

    def set_epoch(self, epoch: int) -> None:
        self.view = epoch % self.feats.shape[0]

    def __len__(self):
        return self.feats.shape[1]

    def __getitem__(self, i):
        return self.feats[self.view, i], int(self.labels[i]), i


@torch.no_grad()
def extract_features(model, dataset, rt: Runtime, views: int = 1, batch_size: int = 8,
                     desc: str = "features") -> FeatureDataset:
    """Pooled frozen tokens for every item of `dataset` at epochs 0..views-1, shared by all ranks. Items
    whose video cannot be decoded are left out: the result's `bad` lists their BadVideo records."""
    model.eval()
    per_view, bad = [], {}
    labels: dict[int, int] = {}
    for v in range(views):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(v)
        loader = rt.loader(dataset, batch_size)
        mine = {}
        for x, y, idx, skipped in progress(rt.batches(loader), desc=f"{desc} (view {v + 1}/{views})",
                                           total=len(loader), show=rt.is_main):
            bad.update((b.index, b) for b in skipped)
            if x is None:
                continue
            lead = x.shape[:-4]                                    # (B,) or (B, num_sample)
            with rt.autocast():
                f = model.forward_pooled(x.flatten(0, len(lead) - 1))  # (B*, C)
            f = f.float().cpu().view(*lead, -1)
            for i, t, fi in zip(idx.tolist(), y.tolist(), f):
                mine[i], labels[i] = fi, t
        merged = {}
        for part in D.all_gather_object(mine):
            merged.update(part)
        per_view.append(merged)
    for part in D.all_gather_object((labels, bad)):
        labels.update(part[0])
        bad.update(part[1])
    keep = [i for i in range(len(dataset)) if i not in bad]
    if not keep:
        raise DataError(f"{desc}: none of the {len(dataset)} videos could be decoded, e.g. {next(iter(bad.values()))}")
    feats = torch.stack([torch.stack([m[i] for i in keep]) for m in per_view])   # (views, N, [ns,] C)
    out = FeatureDataset(feats, torch.tensor([labels[i] for i in keep]), getattr(dataset, "class_names", None))
    out.bad = [bad[i] for i in sorted(bad)]
    return out
