"""The training loop: `train(cfg) -> dict`.

One optimizer step = `accum_steps` micro-batches of `batch_size` clips on each of `world_size`
processes. Per step: lr from the schedule, forward/backward per micro-batch, a non-finite loss
check (all ranks agree), gradient all-reduce over trainable parameters, clipping, optimizer step.
Checkpoints every `output.save_every_steps` steps and at every epoch end; a resumed run skips the
batches already consumed in its epoch and restores every rank's RNG states, so on CPU a run killed
at any step and resumed ends with bitwise the same weights as an uninterrupted run.

Data order: each epoch a permutation of the training set (seeded by (seed, epoch), independent of
the global RNG) is cut to a multiple of the global batch; rank r takes items r, r + W, ...; so the
union of the ranks' batches at a step equals the single-process batch of the same total size.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..config import Config
from . import distributed as D
from .evaluate import autocast_for, evaluate_clips, run_test_protocol, summary
from .logging import MetricsLogger
from .optim import build_optimizer, lr_at, scaled_lr, set_lr
from .state import (latest_checkpoint, load_model_state, model_state, prune_checkpoints, rng_state,
                    save_checkpoint, set_rng_state)

KILL_ENV = "APTUNE_TEST_KILL_AT_STEP"   # tests: os._exit(1) right after this optimizer step


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped before the optimizer step."""


class EpochSampler(Sampler):
    """This rank's share of a seeded per-epoch permutation, cut to whole global batches.

    `start` skips that many of this rank's items (resume inside an epoch)."""

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, seed: int, shuffle: bool = True):
        if n < global_batch:
            raise ValueError(f"data.train_list: {n} training videos are fewer than one global batch "
                             f"({global_batch} = batch_size x accum_steps x processes)")
        self.n, self.gb, self.rank, self.world, self.seed, self.shuffle = n, global_batch, rank, world_size, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        perm = perm[: self.n // self.gb * self.gb]
        return perm[self.rank::self.world]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self):
        return self.n // self.gb * self.gb // self.world - self.start


def resolve_device(runtime, local_rank: int = 0) -> torch.device:
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("runtime.device: cuda requested but no GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp(runtime, device: torch.device):
    """Autocast dtype: None (fp32) on CPU or with amp=none; bf16 for auto on GPU."""
    if device.type != "cuda" or runtime.amp == "none":
        return None
    if runtime.amp == "fp16":
        return torch.float16
    return torch.bfloat16


def build_datasets(cfg: Config) -> dict:
    """VideoDatasets for the configured train / val / test lists (None where a list is absent)."""
    from ..data.datasets import VideoDataset
    d = cfg.data
    common = dict(root=d.root, num_frames=d.num_frames, sampling_rate=d.sampling_rate, img_size=d.img_size,
                  sampling=d.sampling, skip_bad_videos=d.skip_bad_videos, short_side=d.short_side,
                  seed=cfg.runtime.seed)
    out = {"train": None, "val": None, "test": None}
    if d.train_list:
        out["train"] = VideoDataset(d.train_list, mode="train", flip=d.flip, num_sample=d.num_sample,
                                    rand_augment=d.rand_augment, **common)
    if d.val_list:
        out["val"] = VideoDataset(d.val_list, mode="val", **common)
    if d.test_list:
        out["test"] = VideoDataset(d.test_list, mode="test", num_clips=d.test_clips, num_crops=d.test_crops, **common)
    return out


def build_model(cfg: Config, num_classes: int):
    from ..api import create_model
    m = cfg.model
    return create_model(m.name, num_classes=num_classes, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size,
                        checkpoint=m.checkpoint, method=cfg.method.name, drop_path_rate=m.drop_path_rate,
                        head_dropout=m.head_dropout, **cfg.method.options)


def _batches(loader, skip_bad: bool):
    """Yield (x, y, skipped) from a loader, dropping all-bad batches when skipping bad videos."""
    for batch in loader:
        if skip_bad:
            batch, skipped = batch
            if batch is None:
                yield None, None, len(skipped)
                continue
            x, y, _ = batch
            yield x, y, len(skipped)
        else:
            x, y, _ = batch
            yield x, y, 0


def train(cfg: Config, datasets: dict | None = None, resume: bool | str = False) -> dict:
    """Train as configured; returns {"run_dir", "adapter_dir", "val", "test", "best_top1", "global_step",
    "model"} (val/test: the last validation and the multi-view test metrics; model: the trained model).

    datasets: optional {"train", "val", "test"} Dataset objects (the data contract of
    aptune.data.datasets) used instead of the list files in cfg.data.
    resume: True = continue from the newest checkpoint in output.dir (error if none),
    "auto" = continue if there is one, False = fresh run (error if output.dir has checkpoints).
    """
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    cfg.validate(world_size=world_env, need_train=datasets is None)
    if cfg.optim.total_batch is not None:
        cfg.optim.batch_size = cfg.optim.total_batch // (world_env * cfg.optim.accum_steps)
    device = resolve_device(cfg.runtime, int(os.environ.get("LOCAL_RANK", "0")))
    with D.process_group(device.type) as info:
        return _train(cfg, datasets, resume, device, info)


def _train(cfg: Config, datasets, resume, device, info) -> dict:
    o, r, d = cfg.optim, cfg.runtime, cfg.data
    run_dir = Path(cfg.output.dir)
    ckpt_dir = run_dir / "checkpoints"
    found = latest_checkpoint(ckpt_dir) if resume else None
    if resume is True and found is None:
        raise FileNotFoundError(f"--resume: no loadable checkpoint in {ckpt_dir}")
    if not resume and any(ckpt_dir.glob("step_*.pt")):
        raise ValueError(f"output.dir: {run_dir} already holds checkpoints; pass --resume (or resume=auto) "
                         "or choose another output.dir")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    D.barrier()

    ds = datasets if datasets is not None else build_datasets(cfg)
    train_set, val_set, test_set = ds.get("train"), ds.get("val"), ds.get("test")
    if train_set is None:
        raise ValueError("data.train_list: no training data")
    class_names = getattr(train_set, "class_names", None)
    num_classes = cfg.model.num_classes or getattr(train_set, "num_classes", None)
    if not num_classes:
        raise ValueError("model.num_classes: not set and the training data does not report num_classes")

    if cfg.model.checkpoint is None and info.is_main:
        print("aptune: warning: model.checkpoint is not set: the backbone is randomly initialised "
              f"(seed {r.seed}); its adapter is only meaningful on this same random backbone")
    torch.manual_seed(r.seed)                       # same initial weights on every rank
    model = build_model(cfg, num_classes).to(device)
    model.grad_checkpointing = r.grad_checkpointing
    amp_dtype = resolve_amp(r, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    params = [p for p in model.parameters() if p.requires_grad]
    base_lr = scaled_lr(o.lr, o.batch_size, o.accum_steps, info.world_size)
    min_lr = scaled_lr(o.min_lr, o.batch_size, o.accum_steps, info.world_size)
    optimizer = build_optimizer(model, o, base_lr)
    eval_bs = cfg.eval.batch_size or o.batch_size
    skip_bad = d.skip_bad_videos and datasets is None

    # linear probing on cached frozen features: train fc_norm + head only
    net, fit_set, val_fit = model, train_set, val_set
    if r.cache_features:
        from .features import HeadOnly, extract_features
        t0 = time.time()
        fit_set = extract_features(model, train_set, device, r.cache_views, eval_bs, d.num_workers, amp_dtype,
                                   "train features")
        val_fit = extract_features(model, val_set, device, 1, eval_bs, d.num_workers, amp_dtype,
                                   "val features") if val_set is not None else None
        net = HeadOnly(model)
        skip_bad = False
        feature_s = time.time() - t0
        if info.is_main:
            print(f"aptune: cached features for {len(fit_set)} videos x {r.cache_views} views in {feature_s:.1f}s")
    fwd = torch.compile(net) if r.compile else net

    global_batch = o.batch_size * o.accum_steps * info.world_size
    sampler = EpochSampler(len(fit_set), global_batch, info.rank, info.world_size, r.seed)
    steps_per_epoch = len(sampler) // (o.batch_size * o.accum_steps)
    total_steps = o.epochs * steps_per_epoch
    warmup_steps = round(o.warmup_epochs * steps_per_epoch)

    start_epoch, start_step, global_step, best = 0, 0, 0, -1.0
    logger = MetricsLogger(run_dir, info.is_main, cfg.output.tensorboard)
    if r.cache_features and found is None:
        logger.log("features", 0, seconds=feature_s, videos=len(fit_set), views=r.cache_views)
    if found is not None:
        path, payload = found
        load_model_state(model, payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        start_epoch, start_step = payload["epoch"], payload["step_in_epoch"]
        global_step, best = payload["global_step"], payload["best"]
        set_rng_state(payload["rng"][info.rank])
        logger.truncate_after(global_step)
        if info.is_main:
            print(f"aptune: resumed from {path} (epoch {start_epoch}, step {global_step})")
    else:
        torch.manual_seed(r.seed + info.rank)       # per-rank dropout / drop-path streams
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        rngs = D.all_gather_object(rng_state())
        if info.is_main:
            save_checkpoint(ckpt_dir / f"step_{global_step:08d}.pt", {
                "model": model_state(model), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "best": best,
                "config": cfg.to_dict(), "world_size": info.world_size})
            prune_checkpoints(ckpt_dir, cfg.output.keep_last)
        D.barrier()

    def save_best() -> None:
        if info.is_main:
            from ..api import save_adapter
            save_adapter(model, run_dir / "best", class_names=class_names, extra={"best_val_top1": best})

    val_metrics: dict = {}
    for epoch in range(start_epoch, o.epochs):
        if hasattr(fit_set, "set_epoch"):
            fit_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        first = start_step if epoch == start_epoch else 0
        sampler.start = first * o.batch_size * o.accum_steps
        kw = {}
        if skip_bad:
            from ..data.datasets import collate_skip_bad
            kw["collate_fn"] = collate_skip_bad
        loader = DataLoader(fit_set, batch_size=o.batch_size, sampler=sampler, drop_last=True,
                            num_workers=d.num_workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(r.seed + epoch), **kw)
        batches = _batches(loader, skip_bad)
        net.train()
        ep_sums = torch.zeros(3, dtype=torch.float64)     # loss_sum, correct, count (this rank)
        t_epoch, skipped_epoch = time.time(), 0
        bar = tqdm(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{o.epochs}", initial=first,
                   total=steps_per_epoch, disable=not info.is_main, dynamic_ncols=True)
        for step_in_epoch in bar:
            t_step = time.time()
            lr = lr_at(global_step, total_steps, warmup_steps, base_lr, min_lr)
            set_lr(optimizer, lr)
            sums = torch.zeros(3, dtype=torch.float64)    # loss_sum, correct, count
            for _ in range(o.accum_steps):
                x, y, nskip = next(batches)
                skipped_epoch += nskip
                if x is None:
                    continue
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lead = x.ndim - (2 if r.cache_features else 5)   # extra leading dim = num_sample views
                if lead:
                    ns = x.shape[1]
                    x = x.flatten(0, 1)                           # (B * num_sample, ...)
                    y = y.repeat_interleave(ns)
                with autocast_for(device, amp_dtype):
                    logits = fwd(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=o.label_smoothing)
                sums += torch.tensor([loss.item() * y.numel(), (logits.argmax(1) == y).sum().item(), y.numel()],
                                     dtype=torch.float64)
                if math.isfinite(loss.item()):
                    scaled = loss / o.accum_steps
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
            tot = D.all_reduce_sum(sums)
            step_loss = tot[0].item() / max(tot[2].item(), 1)
            if not math.isfinite(step_loss):
                last = latest_checkpoint(ckpt_dir)
                where = f"last good checkpoint: {last[0]}" if last else "no checkpoint was written yet"
                raise NonFiniteLossError(f"non-finite loss ({step_loss}) at step {global_step + 1} "
                                         f"(epoch {epoch + 1}); stopped before the update; {where}")
            D.all_reduce_grads(params)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if o.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, o.clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            ep_sums += tot
            clips_s = tot[2].item() / max(time.time() - t_step, 1e-9)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{clips_s:.1f}")
            if global_step % r.log_every_steps == 0 or step_in_epoch == steps_per_epoch - 1:
                logger.log("train", global_step, epoch=epoch, loss=step_loss, lr=lr,
                           top1=100 * tot[1].item() / max(tot[2].item(), 1), clips_per_s=clips_s)
            if cfg.output.save_every_steps and global_step % cfg.output.save_every_steps == 0:
                checkpoint(epoch, step_in_epoch + 1)
            if kill_at and global_step == kill_at:
                os._exit(1)
        bar.close()

        rec = {"epoch": epoch + 1, "lr": lr_at(max(global_step - 1, 0), total_steps, warmup_steps, base_lr, min_lr),
               "epoch_time_s": time.time() - t_epoch, "skipped_videos": int(D.all_reduce_sum(
                   torch.tensor([skipped_epoch])).item())}
        if ep_sums[2] > 0:
            rec.update(train_loss=ep_sums[0].item() / ep_sums[2].item(),
                       train_top1=100 * ep_sums[1].item() / ep_sums[2].item())
        last_epoch = epoch == o.epochs - 1
        if val_fit is not None and ((epoch + 1) % cfg.eval.every_epochs == 0 or last_epoch):
            val_metrics = evaluate_clips(net, val_fit, device, eval_bs, d.num_workers, amp_dtype, skip_bad)
            rec.update(val_top1=val_metrics["top1"], val_top5=val_metrics["top5"], val_loss=val_metrics["loss"])
            if val_metrics["top1"] > best:
                best = val_metrics["top1"]
                save_best()
        logger.log("epoch", global_step, **rec)
        if info.is_main:
            print("aptune: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
        checkpoint(epoch + 1, 0)

    from ..api import save_adapter
    adapter_dir = run_dir / "adapter"
    if info.is_main:
        save_adapter(model, adapter_dir, class_names=class_names,
                     extra={"global_step": global_step, "val": val_metrics or None})
    if val_fit is None and info.is_main:
        save_best()
    test_metrics = None
    if test_set is not None and cfg.eval.test_at_end:
        test_metrics = run_test_protocol(model, test_set, device, run_dir / "eval", 1, d.num_workers, amp_dtype,
                                         d.skip_bad_videos and datasets is None, class_names)
        logger.log("test", global_step, **{k: v for k, v in test_metrics.items()
                                            if k not in ("confusion", "per_class")})
        if info.is_main:
            print("aptune: test " + summary(test_metrics))
    logger.close()
    return {"run_dir": str(run_dir), "adapter_dir": str(adapter_dir), "val": val_metrics, "test": test_metrics,
            "best_top1": best, "global_step": global_step, "model": model}

