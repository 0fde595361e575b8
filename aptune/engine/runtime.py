"""Where and how a model runs: device, autocast, this process's rank, and its data loaders.

Training, evaluation, the linear-probe feature cache, prediction and pre-training all run through
one `Runtime`:

    rt = Runtime.create(cfg.runtime, num_workers=cfg.data.num_workers)
    loader = rt.loader(dataset, batch_size=8)                 # this rank's shard, in order
    for x, y, index, bad in rt.batches(loader):               # x, y on rt.device; x None if all were bad
        with rt.autocast():
            logits = model(x)

Bad videos: a dataset built with skip_bad_videos=True returns a `BadVideo` record for an unreadable
video; the loader's collate takes it out of the batch and `batches` yields the records (from worker
processes too), for the engine's `BadVideoLog` to name, count and list.
Loader workers are capped at the CPU cores this process may use (more only compete for them).

Deferred augmentation: a dataset with `defer_augment` (the trainer's training set) yields uint8 views
and their drawn random choices; `batches` moves the uint8 batch to the device and finishes it there
with the dataset's `augment_batch` (flip, RandAugment, float, normalisation), so the loader's CPU only
decodes and crops.
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.datasets import collate_skip_bad
from ..errors import ConfigError
from . import distributed as D


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> the torch device of this process."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("runtime.device: cuda requested but no GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device):
    """Autocast dtype: None (fp32) with amp=none, and for auto/fp16 on the CPU; bf16 when asked for (the
    CPU too); for auto on a GPU bf16, or fp16 (with loss scaling) on a GPU without bf16 (before Ampere)."""
    if amp == "bf16":
        return torch.bfloat16
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


class ShardSampler(Sampler):
    """Indices rank, rank + world, ... of range(n): no padding, no duplicates."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.idx = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self):
        return len(self.idx)


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    asked_workers: int = 0          # data.num_workers as configured (num_workers: capped at the CPU cores)

    @classmethod
    def create(cls, runtime_cfg=None, num_workers: int = 0) -> "Runtime":
        """From a config's `runtime` section (None: CPU, fp32) and torchrun's environment; loader
        workers capped at the usable CPU cores, with one line saying so."""
        device = resolve_device(getattr(runtime_cfg, "device", "cpu"), int(os.environ.get("LOCAL_RANK", "0")))
        amp = resolve_amp(getattr(runtime_cfg, "amp", "none"), device)
        rank, world = D.torch_dist_rank_world()
        workers = min(num_workers, usable_cpus())
        if workers < num_workers and rank == 0:
            print(f"aptune: data.num_workers={num_workers} capped at the {workers} CPU cores of this machine",
                  file=sys.stderr)
        return cls(device, amp, rank, world, workers, num_workers)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def loader(self, dataset, batch_size: int, sampler: Sampler | None = None, drop_last: bool = False,
               seed: int = 0) -> DataLoader:
        """A DataLoader over `sampler` (default: this rank's shard of the dataset, in order). Its own
        seeded generator keeps the global RNG untouched (bitwise resume). A dataset that skips bad
        videos gets the collate that takes them out of the batch."""
        skip = bool(getattr(dataset, "skip_bad_videos", False))
        kw = {}
        if skip:
            kw["collate_fn"] = collate_skip_bad
        if sampler is None:
            sampler = ShardSampler(len(dataset), self.rank, self.world_size)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed), **kw)
        loader.skips_bad = skip
        loader.augment = dataset.augment_batch if getattr(dataset, "defer_augment", False) else None
        return loader

    def batches(self, loader: DataLoader):
        """Yield (x, y, index, bad) per batch, x and y on the device, `bad` the BadVideo records of the
        videos skipped in it; x is None when every video of the batch was bad."""
        for batch in loader:
            bad = []
            if loader.skips_bad:
                batch, bad = batch
                if batch is None:
                    yield None, None, None, bad
                    continue
            x, y, index, *drawn = batch
            x = x.to(self.device, non_blocking=True)
            if getattr(loader, "augment", None) is not None:
                x = loader.augment(x, *drawn)
            yield x, y.to(self.device, non_blocking=True), index, bad
