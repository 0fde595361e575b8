"""`VideoDataset`: list of (video, label) -> decoded, sampled, transformed clips.

Items by mode (S = img_size, T = num_frames):
  train: (clip, label, index), clip (3, T, S, S), or (num_sample, 3, T, S, S) when
         num_sample > 1 (repeated augmentation: several views of ONE decoded clip);
         with defer_augment=True (the trainer's loaders): (views, label, index, drawn), views the
         uint8 crops (T, S, S, 3) (or (num_sample, T, S, S, 3)) and `drawn` their rows of random
         choices; `augment_batch(views, drawn)` finishes a collated batch on the training device
         (flip, RandAugment, float, normalisation: transforms.augment_batch), equal to the clips above;
  val:   (clip, label, index), one view (3, T, S, S): frames drawn as in training (as the
         authors' `validation` mode does) but from a generator fixed per item, the same
         every epoch; short side to S, centre crop;
  test:  (views, label, index), views (num_clips * num_crops, 3, T, S, S) from one decode,
         clip-major: view v = temporal clip v // num_crops, spatial crop v % num_crops.
Frames and views follow the APT authors' code (see sampling.py and transforms.py); only the
frames the views use are decoded (frame-accurate seeks), the same frames their loader takes.

Determinism: every random choice of item `index` comes from `random.Random` seeded with
(seed, epoch, index, sample_k), never from global state, so the same (epoch, index) gives
the same tensor in any worker process and after a resume. Call `set_epoch(epoch)` before
each epoch (in the process that owns the dataset copy: DataLoader workers started with
persistent_workers=True keep the epoch they were started with).

Bad videos raise `BadVideoError` naming the path; with skip_bad_videos=True the item is a
`BadVideo` record instead (list file:line, path, reason), which `collate_skip_bad` takes out of
the batch and hands to the main process (DataLoader workers cannot warn once for the run: the
engine's `BadVideoLog` names each bad video once, counts and lists them).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from ..console import progress as bar
from ..errors import ConfigError, DataError, MissingFileError
from . import sampling
from .decode import BadVideoError, decode_all, read_sampled
from .prepare import read_class_names, read_list_lines, scan_folder
from .transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransformConfig, augment_batch, multi_view, train_view

MODES = ("train", "val", "test")


@dataclass(frozen=True)
class BadVideo:
    """An item whose video cannot be used: `where` is 'list_file:line' (1-based) or 'entry N'."""
    index: int
    where: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.reason}"


class VideoDataset(Dataset):
    def __init__(self, entries_or_list_file, root=None, mode: str = "train", num_frames: int = 16,
                 sampling_rate: int = 4, img_size: int = 224, sampling: str = "dense",
                 num_clips: int = 5, num_crops: int = 3, flip: bool = True, num_sample: int = 1,
                 rand_augment: bool | str | None = None, skip_bad_videos: bool = False,
                 short_side: int | None = None, seed: int = 0, scale=(0.08, 1.0), ratio=(0.75, 1.3333),
                 class_names: list[str] | None = None, threads: int = 1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 defer_augment: bool = False):
        """`entries_or_list_file`: [(relative_path, label)] or a VideoMAE list file; paths
        are relative to `root` (None: as written). `class_names` default to a classes.txt
        beside the list file. `threads`: FFmpeg threads per decode (1 suits DataLoader
        workers; 0 lets FFmpeg choose). `mean`/`std`: the backbone's input normalisation.
        `rand_augment`: timm's policy string (True: the APT authors'). `defer_augment`: train items
        carry uint8 views for `augment_batch` on the device (see the module doc)."""
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if sampling not in ("dense", "segment"):
            raise ConfigError(f"sampling must be 'dense' or 'segment', got {sampling!r}")
        for name, v in (("num_frames", num_frames), ("sampling_rate", sampling_rate),
                        ("img_size", img_size), ("num_clips", num_clips),
                        ("num_crops", num_crops), ("num_sample", num_sample)):
            if int(v) < 1:
                raise ConfigError(f"{name} must be >= 1, got {v}")
        names_from = "class_names"
        if isinstance(entries_or_list_file, (str, os.PathLike)):
            list_file = Path(entries_or_list_file)
            if not list_file.exists():
                raise MissingFileError(f"list file {list_file} not found")
            lines = read_list_lines(list_file)
            if not lines:
                raise DataError(f"list file {list_file} is empty: no 'relative/path label' lines")
            self.entries = [(rel, y) for rel, y, _ in lines]
            self.where = [f"{list_file}:{n}" for _, _, n in lines]
            if class_names is None and (list_file.parent / "classes.txt").is_file():
                class_names = read_class_names(list_file.parent / "classes.txt")
                names_from = list_file.parent / "classes.txt"
        else:
            self.entries = [(str(p), int(y)) for p, y in entries_or_list_file]
            self.where = [f"entry {i + 1}" for i in range(len(self.entries))]
        if not self.entries:
            raise DataError("VideoDataset: no entries")
        self.class_names = list(class_names) if class_names is not None else None
        top = max(y for _, y in self.entries)
        if self.class_names is not None and top >= len(self.class_names):
            self._refuse_label(len(self.class_names), names_from)
        self.num_classes = len(self.class_names) if self.class_names is not None else top + 1
        self.root = Path(root) if root is not None else None
        self.mode, self.num_frames, self.sampling_rate = mode, int(num_frames), int(sampling_rate)
        self.img_size, self.sampling = int(img_size), sampling
        self.num_clips, self.num_crops, self.num_sample = int(num_clips), int(num_crops), int(num_sample)
        self.skip_bad_videos, self.seed, self.epoch, self.threads = skip_bad_videos, int(seed), 0, threads
        self.mean, self.std, self.defer_augment = tuple(mean), tuple(std), bool(defer_augment)
        self._memory = None                       # decoded videos, after preload()
        # items whose video is shorter than min_frames (padded); in shared memory, so DataLoader
        # workers' flags reach the main process
        self.padded = torch.zeros(len(self.entries), dtype=torch.bool).share_memory_()
        self.train_cfg = TrainTransformConfig(img_size=self.img_size, scale=tuple(scale), ratio=tuple(ratio),
                                              flip=flip,
                                              short_side=short_side, rand_augment=rand_augment,
                                              mean=self.mean, std=self.std)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_folder(cls, root, **kwargs) -> "VideoDataset":
        """`root/class_name/video.ext`, classes sorted by name (label = position)."""
        entries, names = scan_folder(root)
        return cls(entries, root=root, class_names=names, **kwargs)

    def _refuse_label(self, n: int, names_from) -> None:
        """DataError naming the list line of the first label past the `n` class names, and their source."""
        where, y = next((w, y) for (_, y), w in zip(self.entries, self.where) if y >= n)
        raise DataError(f"{where}: label {y} >= number of class names ({n}, from {names_from})")

    # ------------------------------------------------------------ protocol
    def check_labels(self, num_classes: int) -> None:
        """DataError naming the list file and line of the first label outside 0..num_classes-1 (the
        model's classes), before any work is done with a label the head cannot have."""
        for (_, y), where in zip(self.entries, self.where):
            if not 0 <= y < num_classes:
                raise DataError(f"{where}: label {y}, but the model has {num_classes} classes (0..{num_classes - 1}); "
                                "set model.num_classes or fix the list (classes.txt beside it names the classes)")

    def missing_entries(self) -> list[BadVideo]:
        """Every listed video that is not there, is a directory or has 0 bytes: a cheap check (no
        decoding) before any work."""
        out = []
        if self._memory is not None:
            return out
        for i, where in enumerate(self.where):
            p = self.path(i)
            if os.path.isdir(p):
                reason = "is a directory, not a video file"
            elif not os.path.isfile(p):
                reason = "missing"
            elif os.path.getsize(p) == 0:
                reason = "empty, 0 bytes"
            else:
                continue
            out.append(BadVideo(i, where, p, reason))
        return out

    def missing_files(self) -> list[str]:
        """'<list>:<line>: <path> (missing | empty, 0 bytes | is a directory...)' per `missing_entries`."""
        return [f"{b.where}: {b.path} ({b.reason})" for b in self.missing_entries()]

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def path(self, index: int) -> str:
        rel = self.entries[index][0]
        return str(self.root / rel) if self.root is not None else rel

    def rng(self, index: int, sample_k) -> random.Random:
        """The generator for item `index`, draw `sample_k` ('t' = temporal) this epoch."""
        return random.Random(f"aptune/{self.seed}/{self.epoch}/{index}/{sample_k}")

    @property
    def min_frames(self) -> int:
        """Video length below which the test views repeat frames (`sampling.min_frames`):
        shorter videos are padded as the authors' loader pads them, never rejected;
        `aptune check-videos` reports them as too short."""
        return sampling.min_frames(self.num_frames, self.sampling_rate, self.sampling)

    def clip_indices(self, video_frames: int, index: int) -> list[list[int]]:
        """Frame indices per temporal clip for this mode: train one random clip, val one
        clip drawn the same way from a generator fixed per item, test the K views."""
        T, r = self.num_frames, self.sampling_rate
        if self.mode != "test":
            rng = (self.rng(index, "t") if self.mode == "train"
                   else random.Random(f"aptune/{self.seed}/val/{index}"))
            if self.sampling == "dense":
                return [sampling.dense_train(video_frames, T, r, rng)]
            return [sampling.segment_train(video_frames, T, rng)]
        if self.sampling == "dense":
            return sampling.dense_test(video_frames, T, r, self.num_clips)
        return sampling.segment_test(video_frames, T, self.num_clips)

    @classmethod
    def from_frames(cls, videos, labels=None, **kwargs) -> "VideoDataset":
        """A dataset over videos already decoded (uint8 (T, H, W, 3) tensors or arrays), e.g. clips
        rendered in memory; `labels` default to 0."""
        labels = [0] * len(videos) if labels is None else list(labels)
        ds = cls([(f"<memory {i}>", int(y)) for i, y in enumerate(labels)], **kwargs)
        ds._memory = [torch.as_tensor(v) for v in videos]
        return ds

    def _read(self, index: int, path: str, choose):
        """Decode the frames `choose(num_frames)` asks for (from memory when preloaded); flag the item
        as padded when the video is shorter than `min_frames`."""
        if self._memory is not None:
            video = self._memory[index]                                  # (N, H, W, 3) uint8
            if isinstance(video, BadVideoError):
                raise video
            wanted = [int(i) for i in choose(video.shape[0])]
            frames, n = video[wanted], video.shape[0]
        else:
            n_box = []
            frames, wanted = read_sampled(path, lambda n: n_box.append(n) or choose(n), self.threads)
            n = n_box[0]
        if n < self.min_frames:
            self.padded[index] = True
        return frames, wanted

    def preload(self, progress: bool = True) -> "VideoDataset":
        """Decode every video once into memory (uint8); items then sample from memory, for small
        clips that many epochs reuse (the demo, pre-training). A bad video raises when its item is
        read (or is skipped, with skip_bad_videos), as when decoding from the file."""
        memory = []
        for i in bar(range(len(self)), desc="decode", unit="video", show=progress):
            try:
                memory.append(decode_all(self.path(i), threads=0))
            except BadVideoError as e:
                memory.append(e)
        self._memory = memory
        return self

    def __getitem__(self, index: int):
        label = self.entries[index][1]
        path = self.path(index)
        clips: list[list[int]] = []

        def choose(n):  # frame indices to decode: the sorted union of all clips
            clips.extend(self.clip_indices(n, index))
            return sorted({i for c in clips for i in c})

        try:
            frames, unique = self._read(index, path, choose)  # (U, H, W, 3) uint8
        except BadVideoError as e:
            if self.skip_bad_videos:
                return BadVideo(index, self.where[index], path, e.reason)
            raise
        pos = {f: j for j, f in enumerate(unique)}
        if self.mode == "train":
            order = [pos[i] for i in clips[0]]
            video = frames if order == list(range(len(frames))) else frames[order]  # (T, H, W, 3)
            S, ns = self.img_size, self.num_sample
            x = torch.empty(ns, video.shape[0], S, S, 3, dtype=torch.uint8)      # the views, written in place
            drawn = torch.stack([train_view(video, self.train_cfg, self.rng(index, k), x[k])[1] for k in range(ns)])
            if ns == 1:
                x, drawn = x[0], drawn[0]
            if self.defer_augment:
                return x, label, index, drawn
            return self.augment_batch(x, drawn), label, index
        crops = self.num_crops if self.mode == "test" else 1
        views = multi_view(frames, [[pos[i] for i in c] for c in clips], self.img_size,
                           crops, self.mean, self.std)  # (clips * crops, 3, T, S, S), clip-major
        return (views[0] if self.mode == "val" else views), label, index

    def augment_batch(self, views: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """Finish deferred train views (uint8 (..., T, S, S, 3), on any device) with their drawn rows
        (..., width) into normalised float clips (..., 3, T, S, S)."""
        return augment_batch(views, drawn, self.train_cfg)

    def __repr__(self) -> str:
        return (f"VideoDataset({len(self)} videos, {self.num_classes} classes, mode={self.mode}, "
                f"{self.sampling} {self.num_frames}x{self.sampling_rate}, {self.img_size}px)")


def collate_skip_bad(batch):
    """Collate that takes the `BadVideo` items (bad videos the dataset skipped) out of the batch.
    Returns (collated batch, or None when every item was bad; the BadVideo records), so the
    records reach the main process from DataLoader workers."""
    bad = [item for item in batch if isinstance(item, BadVideo)]
    good = [item for item in batch if not isinstance(item, BadVideo)]
    return (default_collate(good) if good else None), bad
