"""Evaluation: clip-level validation and the multi-view video protocol.

Multi-view protocol: each test video gives V = clips x crops views; the model's softmax is taken
per view and averaged per video. Reported: top-1/top-5 over views (clip level) and over videos
(video level), per-class video accuracy and the confusion matrix. Across ranks the per-view
logits are gathered and de-duplicated by video index.

Bad videos: a video that cannot be decoded is left out, never replaced: it is named once (through a
`BadVideoLog`), and its count is in the metrics ("skipped" for validation; "skipped_videos" and
"bad_videos", each with its list:line, video and reason, for the test protocol).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..console import progress
from ..errors import DataError
from ..io import pyplot, write_json
from . import distributed as D
from .bad_videos import BadVideoLog
from .runtime import Runtime


def _topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def average_views(view_logits: torch.Tensor) -> torch.Tensor:
    """The multi-view protocol's video score: softmax per view, mean over views. (V, C) -> (C,)."""
    return view_logits.float().softmax(dim=-1).mean(dim=0)


def video_level_metrics(view_logits: dict[int, torch.Tensor], labels: dict[int, int] | list | torch.Tensor,
                        num_classes: int | None = None) -> dict:
    """Metrics of the multi-view protocol.

    view_logits: video index -> logits of its V views, (V, C). labels: video index -> class.
    Clip level: every view is scored on its own. Video level: softmax per view, mean over views.
    Returns clip_top1, clip_top5, video_top1, video_top5 (percent), num_videos, num_views,
    per_class (class -> video top-1 percent, classes present only) and confusion (C x C list,
    rows = true class, columns = predicted) and video_correct (1/0 per video, in index order: what a
    bootstrap over test videos resamples).
    """
    if not view_logits:
        raise DataError("no videos to evaluate")
    idx = sorted(view_logits)
    C = num_classes or view_logits[idx[0]].shape[1]
    y = torch.tensor([int(labels[i]) for i in idx])                                   # (N,)
    views = [view_logits[i].float() for i in idx]
    clip_logits = torch.cat(views)                                                    # (sum V, C)
    clip_y = torch.cat([torch.full((v.shape[0],), int(t)) for v, t in zip(views, y)])
    video_probs = torch.stack([average_views(v) for v in views])                      # (N, C)
    pred = video_probs.argmax(dim=1)
    conf = torch.zeros(C, C, dtype=torch.long)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    per_class = {int(c): 100.0 * conf[c, c].item() / conf[c].sum().item()
                 for c in range(C) if conf[c].sum() > 0}
    return {
        "clip_top1": 100.0 * _topk_correct(clip_logits, clip_y, 1).float().mean().item(),
        "clip_top5": 100.0 * _topk_correct(clip_logits, clip_y, 5).float().mean().item(),
        "video_top1": 100.0 * (pred == y).float().mean().item(),
        "video_top5": 100.0 * _topk_correct(video_probs, y, 5).float().mean().item(),
        "num_videos": len(idx), "num_views": int(clip_logits.shape[0]),
        "per_class": per_class, "confusion": conf.tolist(), "video_correct": (pred == y).int().tolist(),
    }


def _report_bad(bad: list, log: BadVideoLog | None, rt: Runtime, split: str) -> BadVideoLog:
    """Every rank's bad videos into `log` (a new one when None), which names each once."""
    log = log if log is not None else BadVideoLog(rt.is_main)
    log.report([b for part in D.all_gather_object(bad) for b in part], split,
               note=f"left out of {split} (counted in its report)")
    return log


@torch.no_grad()
def evaluate_clips(model, dataset, rt: Runtime, batch_size: int = 8, desc: str = "val",
                   bad_log: BadVideoLog | None = None) -> dict:
    """Clip-level top-1/top-5 and mean loss on a val set (one clip per video), summed over ranks;
    "skipped": the videos left out (bad, named once through `bad_log`)."""
    loader = rt.loader(dataset, batch_size)
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)   # correct1, correct5, loss_sum, count, skipped
    bad = []
    for x, y, _, skipped in progress(rt.batches(loader), desc=desc, total=len(loader), leave=False,
                                     show=rt.is_main):
        sums[4] += len(skipped)
        bad += skipped
        if x is None:
            continue
        with rt.autocast():
            logits = model(x)
        logits = logits.float()
        sums[0] += _topk_correct(logits, y, 1).sum().item()
        sums[1] += _topk_correct(logits, y, 5).sum().item()
        sums[2] += F.cross_entropy(logits, y, reduction="sum").item()
        sums[3] += y.numel()
    model.train(was_training)
    sums = D.all_reduce_sum(sums)
    _report_bad(bad, bad_log, rt, desc)
    n = max(sums[3].item(), 1)
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "loss": sums[2].item() / n,
            "count": int(sums[3].item()), "skipped": int(sums[4].item())}


@torch.no_grad()
def collect_view_logits(model, dataset, rt: Runtime, batch_size: int = 1) -> tuple[dict[int, torch.Tensor],
                                                                                    dict[int, int], list]:
    """Run every view of every test video; returns (index -> (V, C) logits, index -> label, the
    BadVideo records of the videos left out), gathered from all ranks and de-duplicated by index."""
    loader = rt.loader(dataset, batch_size)
    was_training = model.training
    model.eval()
    logits, labels, bad = {}, {}, []
    for x, y, idx, skipped in progress(rt.batches(loader), desc="test views", total=len(loader),
                                       show=rt.is_main):
        bad += skipped
        if x is None:
            continue
        B, V = x.shape[:2]                                   # x: (B, V, 3, T, S, S)
        with rt.autocast():
            out = model(x.flatten(0, 1))                     # (B * V, C)
        out = out.float().cpu().view(B, V, -1)
        for i, t, o in zip(idx.tolist(), y.tolist(), out):
            logits[i], labels[i] = o, t
    model.train(was_training)
    all_logits, all_labels, all_bad = {}, {}, {}
    for lg, lb, bd in D.all_gather_object((logits, labels, bad)):
        all_logits.update(lg)       # a video seen by two ranks keeps one entry
        all_labels.update(lb)
        all_bad.update((b.index, b) for b in bd)
    return all_logits, all_labels, [all_bad[i] for i in sorted(all_bad)]


def save_confusion_png(confusion: list[list[int]], path: str | os.PathLike, class_names=None) -> None:
    plt = pyplot()
    conf = torch.tensor(confusion, dtype=torch.float64)
    norm = conf / conf.sum(dim=1, keepdim=True).clamp(min=1)
    C = conf.shape[0]
    size = min(4 + C * 0.12, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised)")
    if class_names and C <= 60:
        ax.set_xticks(range(C), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(C), class_names, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_test_protocol(model, dataset, rt: Runtime, out_dir: str | os.PathLike, batch_size: int = 1,
                      class_names=None, bad_log: BadVideoLog | None = None) -> dict:
    """Multi-view evaluation; rank 0 writes out_dir/metrics.json and out_dir/confusion.png. Videos that
    cannot be decoded are left out, named once (through `bad_log`) and listed in "bad_videos"."""
    logits, labels, bad = collect_view_logits(model, dataset, rt, batch_size)
    log = bad_log if bad_log is not None else BadVideoLog(rt.is_main)
    log.report(bad, "test", note="left out of the test (counted in its report)")
    if not logits:
        shown = "; ".join(str(b) for b in bad[:3])
        raise DataError(f"no test video could be decoded ({len(bad)} bad: {shown})" if bad else "no videos to evaluate")
    num_classes = next(iter(logits.values())).shape[1]      # the model's classes, not the labels present
    m = video_level_metrics(logits, labels, num_classes)
    m["skipped_videos"] = len(bad)
    m["bad_videos"] = [{"where": b.where, "video": b.path, "reason": b.reason} for b in bad]
    if class_names:
        m["per_class"] = {class_names[c] if c < len(class_names) else str(c): v for c, v in m["per_class"].items()}
    if rt.is_main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", m)
        save_confusion_png(m["confusion"], out / "confusion.png", class_names)
    return m


def summary(m: dict) -> str:
    """One line of the test metrics; top-k with k = min(5, classes) (the "*_top5" values are top-k)."""
    k = min(5, len(m["confusion"]))
    return (f"video top-1 {m['video_top1']:.2f}  top-{k} {m['video_top5']:.2f}  |  clip top-1 {m['clip_top1']:.2f}"
            f"  top-{k} {m['clip_top5']:.2f}  ({m['num_videos']} videos, {m['num_views']} views)"
            + (f"; {m['skipped_videos']} left out (could not be decoded)" if m.get("skipped_videos") else ""))


