"""Tiny in-memory datasets following the VideoDataset contract (for engine tests).

Each class has a fixed random "prototype" clip; items are the prototype plus noise drawn from a
generator seeded by (seed, epoch, index), like the real dataset's per-item randomness.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorVideos(Dataset):
    def __init__(self, n: int = 24, num_classes: int = 3, mode: str = "train", frames: int = 4, size: int = 32,
                 views: int = 2, num_sample: int = 1, seed: int = 0, noise: float = 0.5):
        g = torch.Generator().manual_seed(1234)
        self.protos = torch.randn(num_classes, 3, frames, size, size, generator=g)
        self.labels = [i % num_classes for i in range(n)]
        self.mode, self.views, self.num_sample, self.seed, self.noise = mode, views, num_sample, seed, noise
        self.epoch = 0
        self.num_classes = num_classes
        self.class_names = [f"class_{c}" for c in range(num_classes)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def _clip(self, i: int, salt: int) -> torch.Tensor:
        epoch = self.epoch if self.mode == "train" else 0
        g = torch.Generator().manual_seed(hash((self.seed, epoch, i, salt)) % (2 ** 31))
        y = self.labels[i]
        return self.protos[y] + self.noise * torch.randn(self.protos[y].shape, generator=g)

    def __getitem__(self, i):
        y = self.labels[i]
        if self.mode == "test":
            return torch.stack([self._clip(i, v) for v in range(self.views)]), y, i
        if self.mode == "train" and self.num_sample > 1:
            return torch.stack([self._clip(i, s) for s in range(self.num_sample)]), y, i
        return self._clip(i, 0), y, i


def tiny_cfg(tmp_path, method: str = "apt", **sections):
    """A Config for the tiny model; `sections` = {"optim": {...}, ...} merged over the defaults."""
    from aptune.config import Config
    d = {"model": {"name": "tiny"}, "method": {"name": method},
         "data": {"num_frames": 4, "img_size": 32, "num_workers": 0},
         "optim": {"epochs": 2, "warmup_epochs": 1, "batch_size": 4, "lr": 1.0, "label_smoothing": 0.0},
         "output": {"dir": str(tmp_path / "run"), "tensorboard": False},
         "runtime": {"device": "cpu", "log_every_steps": 1}}
    if method == "apt":
        d["method"].update(num_prompts=4, prompt_dropout=0.0)
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return Config.from_dict(d)


def make_video_lists(folder, n_train: int = 8, n_val: int = 4, n_test: int = 3, num_classes: int = 2):
    """Tiny real mp4 files (tests/videos.py) and VideoMAE list files train/val/test.csv + classes.txt.
    Returns {"train", "val", "test", "root"} paths (as strings)."""
    from pathlib import Path

    from videos import make_video
    root = Path(folder)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    out = {"root": str(root / "videos")}
    k = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        lines = []
        for i in range(n):
            name = f"v{k:03d}.mp4"
            make_video(root / "videos" / name, num_frames=24 + 2 * (k % 5))
            lines.append(f"{name} {i % num_classes}\n")
            k += 1
        (root / f"{split}.csv").write_text("".join(lines))
        out[split] = str(root / f"{split}.csv")
    (root / "classes.txt").write_text("".join(f"class_{c}\n" for c in range(num_classes)))
    return out


def write_video_config(path, lists: dict, run_dir, **sections) -> str:
    """A YAML config for the tiny model on `lists` (make_video_lists); returns its path."""
    import yaml
    d = {"model": {"name": "tiny"}, "method": {"name": "apt", "num_prompts": 4, "prompt_dropout": 0.1},
         "data": {"train_list": lists["train"], "val_list": lists["val"], "test_list": lists["test"],
                  "root": lists["root"], "num_frames": 4, "sampling_rate": 2, "img_size": 32, "num_workers": 0,
                  "test_clips": 2, "test_crops": 3},
         "optim": {"epochs": 2, "warmup_epochs": 1, "batch_size": 2, "lr": 1.0},
         "output": {"dir": str(run_dir), "tensorboard": False},
         "runtime": {"device": "cpu", "log_every_steps": 1}}
    for k, v in sections.items():
        if k == "method":
            d[k] = v            # a method section replaces the default one (options differ per method)
        else:
            d.setdefault(k, {}).update(v)
    with open(path, "w") as f:
        yaml.safe_dump(d, f)
    return str(path)


def run_process(cmd: list[str], env: dict | None = None, timeout: float = 300):
    """subprocess.run in its own process group; on timeout the whole group is killed, so no
    torchrun worker outlives a failed test. Returns a CompletedProcess."""
    import os
    import signal
    import subprocess
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
