"""The training loop: `train(cfg) -> dict`, a recipe in small steps (`Trainer`).

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

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..adapters import backbone_record, clip_record, record_results, save_pretrained
from ..config import Config, loggers_of
from ..console import progress, warn
from ..errors import CheckpointError, ConfigError, DataError, MissingFileError
from ..model_card import invocation, test_summary
from . import distributed as D
from .bad_videos import BadVideoLog, check_listed_videos, stop_message
from .build import build_datasets, build_model, check_backbone_source, resolve_checkpoint
from .evaluate import evaluate_clips, run_test_protocol, summary
from .features import HeadOnly, extract_features
from .logging import MetricsLogger, read_metrics
from .optim import build_optimizer, lr_at, scaled_lr, set_lr
from .resume import check_resume_classes, resume_changes, schedule_change
from .runtime import Runtime, resolve_device
from .state import (
    latest_checkpoint,
    list_checkpoints,
    load_model_state,
    model_state,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .summary import eta_line, print_summary


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped before the optimizer step."""


class BadVideoStop(DataError):
    """A training video could not be decoded and the run may not skip it (or too many were bad); the
    last completed step was saved first."""


class Sums(NamedTuple):
    """A step's (or an epoch's) totals over every rank, read from the float64 vector the ranks all-reduce
    at once (one host sync per step): loss x clips, correct clips, clips, bad videos."""
    loss_sum: float
    correct: float
    count: float
    bad: float

    @classmethod
    def of(cls, t: torch.Tensor) -> "Sums":
        return cls(*t.tolist())

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def top1(self) -> float:
        return 100 * self.correct / max(self.count, 1)


class EpochSampler(Sampler):
    """This rank's share of a seeded per-epoch permutation, cut to whole global batches.

    `start` skips that many of this rank's items (resume inside an epoch)."""

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, seed: int, shuffle: bool = True):
        if n < global_batch:
            raise DataError(f"data.train_list: {n} training videos are fewer than one global batch "
                            f"({global_batch} = batch_size x accum_steps x processes)")
        self.n, self.gb, self.rank, self.world = n, global_batch, rank, world_size
        self.seed, self.shuffle = seed, shuffle
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


def train(cfg: Config, datasets: dict | None = None, resume: bool | str = False) -> dict:
    """Train as configured; returns {"run_dir", "adapter_dir", "val", "test", "best_top1", "global_step",
    "model"} (val/test: the last validation and the multi-view test metrics; model: the trained model).

    datasets: optional {"train", "val", "test"} Dataset objects (the data contract of
    aptune.data.datasets) used instead of the list files in cfg.data; a VideoDataset among them is put in
    the mode that reports bad videos (cfg.data.skip_bad_videos then decides: skip or stop).
    resume: True = continue from the newest checkpoint in output.dir (error if none),
    "auto" = continue if there is one, False = fresh run (error if output.dir has checkpoints).
    """
    cfg = copy.deepcopy(cfg)           # the run resolves fields (batch_size from total_batch): never the caller's
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    cfg.validate(world_size=world_env, need_train=datasets is None)
    check_backbone_source(cfg.model)
    if cfg.optim.total_batch is not None:
        cfg.optim.batch_size = cfg.optim.total_batch // (world_env * cfg.optim.accum_steps)
    device = resolve_device(cfg.runtime.device, int(os.environ.get("LOCAL_RANK", "0")))
    with D.process_group(device.type):
        rt = Runtime.create(cfg.runtime, cfg.data.num_workers)
        return Trainer(cfg, rt, datasets, resume).run()


class Trainer:
    """setup -> (resume) -> train_epoch x epochs (train_step x steps, evaluate, save_checkpoint) -> finish."""

    def __init__(self, cfg: Config, rt: Runtime, datasets: dict | None = None, resume: bool | str = False):
        self.cfg, self.rt, self.given, self.resume_mode = cfg, rt, datasets, resume
        self.run_dir = Path(cfg.output.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.global_step, self.best, self.start_epoch, self.start_step = 0, -1.0, 0, 0
        self.val_metrics: dict = {}
        self.was_complete = False               # resumed from the last step: the test may have run already
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)
        self.bad = BadVideoLog(rt.is_main, note="skipped (data.skip_bad_videos)")

    def run(self) -> dict:
        found = self.setup()
        if found is not None:
            self.resume(*found)
        else:
            torch.manual_seed(self.cfg.runtime.seed + self.rt.rank)   # per-rank dropout / drop-path streams
        print_summary(self)
        self.t_start, self.step_start = time.time(), self.global_step
        for epoch in range(self.start_epoch, self.cfg.optim.epochs):
            self.train_epoch(epoch)
        return self.finish()

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self):
        """Data, run folder, model, optimizer and schedule; returns the checkpoint to resume from.
        Everything that can be refused (a config a resume may not change, labels, missing files) is
        checked before the run folder is written."""
        found = self._find_checkpoint()
        changes = self._check_resume_config(found[1]) if found is not None else []
        self._setup_data()
        if found is not None:
            check_resume_classes(self.run_dir, found[1], self.num_classes, self.class_names)
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._clean_stale_temp_files()
            self.cfg.save(self.run_dir / "config.yaml")
        self.bad.attach(self.run_dir, resumed=found is not None)
        D.barrier()
        self._setup_model()
        self._setup_optimizer()
        loggers = loggers_of(self.cfg.output)
        self.logger = MetricsLogger(self.run_dir, self.rt.is_main, "tensorboard" in loggers, loggers,
                                    self.cfg.to_dict(), self.cfg.output.project, resumed=found is not None)
        if found is None:
            self.logger.start_afresh()
        for key, old, new in changes:
            self.logger.log("config_change", found[1]["global_step"], field=key, old=old, new=new)
        if self.cfg.runtime.cache_features and found is None:
            self.logger.log("features", 0, seconds=self.feature_s, videos=len(self.fit_set),
                            views=self.cfg.runtime.cache_views)
        return found

    def _find_checkpoint(self):
        snapshots = list_checkpoints(self.ckpt_dir)
        if not self.resume_mode:
            if snapshots:
                raise ConfigError(f"output.dir: {self.run_dir} already holds checkpoints; pass --resume (or "
                                  "resume=auto) or choose another output.dir")
            return None
        found = latest_checkpoint(self.ckpt_dir)
        if found is None and snapshots:     # never restart silently over a run whose snapshots are all bad
            raise CheckpointError(f"resume: none of the {len(snapshots)} snapshot(s) in {self.ckpt_dir} can be read "
                                  f"({', '.join(p.name for p in snapshots[-3:])}); move them away to start afresh")
        if self.resume_mode is True and found is None:
            raise MissingFileError(f"--resume: no loadable checkpoint in {self.ckpt_dir}")
        return found

    def _check_resume_config(self, payload: dict) -> list:
        """Refuse what a resume may not change (model, method, clip shape, batch geometry) by name;
        return the other changes, which apply and are logged."""
        stored = Config.from_dict(payload["config"], source=f"{self.run_dir}/checkpoints")
        if "random_init" not in payload["config"].get("model", {}):    # a snapshot from before the field
            stored.model.random_init = self.cfg.model.random_init
        self.stored_cfg = stored
        refused, changed = resume_changes(stored, self.cfg)
        if refused:
            own = self.run_dir / "config.yaml"
            raise ConfigError(f"resume: {self.run_dir} was trained with other settings that a resume cannot change: "
                              f"{'; '.join(refused)}. Resume with the run's own config ({own}), or start a new run "
                              "in another output.dir")
        if changed and self.rt.is_main:
            print("aptune: resume changes " + "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in changed))
        return changed

    def _clean_stale_temp_files(self) -> None:
        """Half-written snapshots of a killed run (atomic writes leave `.step_*.pt.*.tmp`)."""
        for p in self.ckpt_dir.glob(".step_*.tmp"):
            p.unlink(missing_ok=True)

    def _setup_data(self) -> None:
        ds = self.given if self.given is not None else build_datasets(self.cfg)
        for s in ds.values():
            if hasattr(s, "skip_bad_videos"):
                s.skip_bad_videos = True        # report bad videos as records: the policy is applied here
        self.train_set, self.val_set, self.test_set = ds.get("train"), ds.get("val"), ds.get("test")
        if self.train_set is None:
            raise DataError("data.train_list: no training data")
        self.class_names = getattr(self.train_set, "class_names", None)
        self.num_classes = self.cfg.model.num_classes or getattr(self.train_set, "num_classes", None)
        if not self.num_classes:
            raise ConfigError("model.num_classes: not set and the training data does not report num_classes")
        self._check_data()

    def _check_data(self) -> None:
        """Before any work: every label fits the model's classes (naming file and line), and every
        listed video is there and not empty (cheap; decoding problems surface while training)."""
        sets = {k: s for k, s in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set))
                if s is not None}
        for s in sets.values():
            if hasattr(s, "check_labels"):
                s.check_labels(self.num_classes)
        check_listed_videos(sets, self.cfg.data, self.bad)

    def _setup_model(self) -> None:
        cfg, rt, r = self.cfg, self.rt, self.cfg.runtime
        if cfg.model.checkpoint is None and rt.is_main:
            warn(f"model.checkpoint is not set: the backbone is randomly initialised (seed {r.seed}); its adapter "
                 "is only meaningful on this same random backbone (load it with --random-backbone in aptune eval and "
                 "predict, allow_random_backbone=True in Python)")
        torch.manual_seed(r.seed)                       # same initial weights on every rank
        self.model = build_model(cfg, self.num_classes).to(rt.device)
        d = cfg.data
        self.clip = clip_record(self.model, d.sampling, d.sampling_rate, d.num_frames, d.img_size)
        if not self.model.tuning.method.full_state:     # what the adapter needs under it, hashed once
            seed = None if cfg.model.checkpoint else r.seed
            self.model.backbone_record = backbone_record(self.model, resolve_checkpoint(cfg.model), seed)
        self.model.grad_checkpointing = r.grad_checkpointing
        self.eval_bs = cfg.eval.batch_size or cfg.optim.batch_size
        self.net, self.fit_set, self.val_fit = self.model, self.train_set, self.val_set
        if r.cache_features:                            # train the head modules on cached pooled features
            early = [n for n in self.model.tuning.trainable_names if n.startswith(self.model.stem + ("blocks.",))]
            if early:       # e.g. the joint layout's temporal embedding: the cache would freeze it at its init
                raise ConfigError(f"runtime.cache_features: {early[:3]} train before the pooling on this "
                                  f"{self.model.family} backbone ({self.model.layout} layout); cached features "
                                  "would keep them at their init: set runtime.cache_features=false")
            t0 = time.time()
            self.fit_set = extract_features(self.model, self.train_set, rt, r.cache_views, self.eval_bs,
                                            "train features")
            self.val_fit = (extract_features(self.model, self.val_set, rt, 1, self.eval_bs, "val features")
                            if self.val_set is not None else None)
            self.net = HeadOnly(self.model)
            self.feature_s = time.time() - t0
            self._bad_in_features()
            if rt.is_main:
                print(f"aptune: cached features for {len(self.fit_set)} videos x {r.cache_views} views in "
                      f"{self.feature_s:.1f}s")
        self.fwd = torch.compile(self.net) if r.compile else self.net

    def _bad_in_features(self) -> None:
        """Videos left out of the feature cache: named once; skipping off (or over the limit) stops the run
        before its first step here (a resumed run loses nothing: it re-extracts at every start)."""
        self.bad.report(getattr(self.val_fit, "bad", []), "val", note="left out of val (counted in its report)")
        bad = getattr(self.fit_set, "bad", [])
        self.bad.report(bad, "train", quiet=not self.cfg.data.skip_bad_videos)
        why = self._bad_stop_reason()
        if bad and why:
            raise BadVideoStop(stop_message(bad, why, "Stopped while caching features, before any step.",
                                            f"aptune train {self.run_dir / 'config.yaml'} resume=auto"))

    def _bad_stop_reason(self) -> str | None:
        """Why bad training videos stop the run (None: they are skipped)."""
        d, n = self.cfg.data, self.bad.count("train")
        if not d.skip_bad_videos:
            return "data.skip_bad_videos is false."
        if n > d.max_bad_fraction * len(self.train_set):
            return (f"{n} of the {len(self.train_set)} training videos are bad, more than "
                    f"data.max_bad_fraction={d.max_bad_fraction:g} (raise it to go on).")
        return None

    def _setup_optimizer(self) -> None:
        o, rt = self.cfg.optim, self.rt
        self.scaler = torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.base_lr = scaled_lr(o.lr, o.batch_size, o.accum_steps, rt.world_size)
        self.min_lr = scaled_lr(o.min_lr, o.batch_size, o.accum_steps, rt.world_size)
        self.warmup_lr = scaled_lr(o.warmup_lr, o.batch_size, o.accum_steps, rt.world_size)
        self.optimizer = build_optimizer(self.model, o, self.base_lr)
        global_batch = o.batch_size * o.accum_steps * rt.world_size
        self.sampler = EpochSampler(len(self.fit_set), global_batch, rt.rank, rt.world_size, self.cfg.runtime.seed)
        self.steps_per_epoch = len(self.sampler) // (o.batch_size * o.accum_steps)
        self.total_steps = o.epochs * self.steps_per_epoch
        self.warmup_steps = round(o.warmup_epochs * self.steps_per_epoch)

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr,
                     warmup_lr=self.warmup_lr)

    # ---- resume --------------------------------------------------------------------------------
    def resume(self, path: Path, payload: dict) -> None:
        load_model_state(self.model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.start_epoch, self.start_step = payload["epoch"], payload["step_in_epoch"]
        self.global_step, self.best = payload["global_step"], payload["best"]
        if payload.get("epoch_sums") and self.start_step:       # the epoch's sums so far (train loss, bad videos)
            self.epoch_sums = torch.tensor(payload["epoch_sums"], dtype=torch.float64)
        set_rng_state(payload["rng"][self.rt.rank])
        self.logger.truncate_after(self.global_step)
        self.was_complete = self.global_step >= self.total_steps
        if self.rt.is_main:
            print(f"aptune: resumed from {path} (epoch {self.start_epoch}, step {self.global_step})"
                  + ("; the run is complete: nothing to train" if self.was_complete else ""))
            jump = schedule_change(self.stored_cfg, self.steps_per_epoch, self.rt.world_size, self.global_step,
                                   (self.total_steps, self.warmup_steps, self.base_lr, self.min_lr, self.warmup_lr))
            if jump:
                warn(jump)

    # ---- one epoch -----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> None:
        o, r = self.cfg.optim, self.cfg.runtime
        if hasattr(self.fit_set, "set_epoch"):
            self.fit_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        first = self.start_step if epoch == self.start_epoch else 0
        self.sampler.start = first * o.batch_size * o.accum_steps
        loader = self.rt.loader(self.fit_set, o.batch_size, self.sampler, drop_last=True, seed=r.seed + epoch)
        batches = self.rt.batches(loader)
        self.net.train()
        if epoch != self.start_epoch or not self.start_step:      # a resume inside an epoch keeps its sums
            self.epoch_sums = torch.zeros(4, dtype=torch.float64)  # loss_sum, correct, count, bad (all ranks)
        t_epoch = time.time()
        bar = progress(range(first, self.steps_per_epoch), desc=f"epoch {epoch + 1}/{o.epochs}", unit="step",
                       initial=first, total=self.steps_per_epoch, show=self.rt.is_main)
        for step_in_epoch in bar:
            t_step, lr = time.time(), self.lr(self.global_step)
            sums = self.train_step(batches, lr, epoch, step_in_epoch)
            clips_s = sums.count / max(time.time() - t_step, 1e-9)
            bar.set_postfix(loss=f"{sums.loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{clips_s:.1f}")
            self.end_step(epoch, step_in_epoch, sums, lr, clips_s)
        bar.close()
        self.end_epoch(epoch, time.time() - t_epoch)

    def end_step(self, epoch: int, step_in_epoch: int, sums: Sums, lr: float, clips_s: float) -> None:
        """After an optimizer step: its log record, a checkpoint when one is due, the ETA line once."""
        r = self.cfg.runtime
        if self.global_step % r.log_every_steps == 0 or step_in_epoch == self.steps_per_epoch - 1:
            self.logger.log("train", self.global_step, epoch=epoch, loss=sums.loss, lr=lr, top1=sums.top1,
                            clips_per_s=clips_s)
        if self.cfg.output.save_every_steps and self.global_step % self.cfg.output.save_every_steps == 0:
            self.save_checkpoint(epoch, step_in_epoch + 1)
        self._eta_once()

    def _eta_once(self) -> None:
        """After the first (up to) 10 steps of this process: one line with the time the rest takes."""
        done = self.global_step - self.step_start
        if done == min(10, self.steps_per_epoch) and self.global_step < self.total_steps and self.rt.is_main:
            print(eta_line(done, time.time() - self.t_start, self.total_steps - self.global_step))

    def train_step(self, batches, lr: float, epoch: int, step_in_epoch: int) -> Sums:
        """One optimizer step over accum_steps micro-batches; returns its totals over ranks."""
        o = self.cfg.optim
        set_lr(self.optimizer, lr)
        start_rng = rng_state()       # a stop on a bad video saves the state before this step
        # loss_sum, correct, count, bad, kept on the device: one host sync per step, not four per micro-batch
        sums = torch.zeros(4, dtype=torch.float64, device=self.rt.device)
        clip_ndim = 2 if self.cfg.runtime.cache_features else 5     # (B, C) features or (B, 3, T, H, W) clips
        bad = []
        for _ in range(o.accum_steps):
            x, y, _, skipped = next(batches)
            bad += skipped
            sums[3] += len(skipped)
            if x is None:
                continue
            if x.ndim != clip_ndim:                                   # (B, num_sample, ...): views per video
                ns = x.shape[1]
                x, y = x.flatten(0, 1), y.repeat_interleave(ns)       # (B * num_sample, ...)
            with self.rt.autocast():
                logits = self.fwd(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=o.label_smoothing)
            n = y.new_tensor(y.numel(), dtype=torch.float64)
            sums[:3] += torch.stack((loss.detach().double() * n, (logits.argmax(1) == y).sum().double(), n))
            scaled = loss / o.accum_steps       # a non-finite loss stops the step below, before any update
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        tot = D.all_reduce_sum(sums).cpu()
        step = Sums.of(tot)
        if step.bad > 0:
            self._bad_in_step(bad, epoch, step_in_epoch, start_rng)
        step_loss = step.loss
        if not math.isfinite(step_loss):
            last = latest_checkpoint(self.ckpt_dir)
            where = f"last good checkpoint: {last[0]}" if last else "no checkpoint was written yet"
            raise NonFiniteLossError(f"non-finite loss ({step_loss}) at step {self.global_step + 1} "
                                     f"(epoch {epoch + 1}); stopped before the update; {where}")
        self._update()
        self.global_step += 1
        self.epoch_sums += tot
        return step

    def _bad_in_step(self, bad: list, epoch: int, step_in_epoch: int, start_rng: dict) -> None:
        """Bad videos in this step (from any rank): named once and listed; the step goes on without
        them, unless skipping is off or over data.max_bad_fraction of the training list: then a
        checkpoint of the last completed step is written (with the RNG states from before this step,
        so the resume is exact) and the run stops."""
        bad = [b for part in D.all_gather_object(bad) for b in part]
        self.bad.report(bad, "train", quiet=not self.cfg.data.skip_bad_videos)
        why = self._bad_stop_reason()
        if why is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save_checkpoint(epoch, step_in_epoch, rngs=D.all_gather_object(start_rng))
        saved = (f"Stopped before step {self.global_step + 1} (epoch {epoch + 1}); the last completed step "
                 f"({self.global_step}) is saved in {path}.")
        resume = f"aptune train {self.run_dir / 'config.yaml'} --resume"
        raise BadVideoStop(stop_message(bad, why, saved, resume))

    def _update(self) -> None:
        D.all_reduce_grads(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self, epoch: int, seconds: float) -> None:
        """The epoch's record (train loss/top-1, skipped videos, validation), then a checkpoint."""
        s = Sums.of(self.epoch_sums)
        rec = {"epoch": epoch + 1, "lr": self.lr(max(self.global_step - 1, 0)), "epoch_time_s": seconds,
               "skipped_videos": int(s.bad)}
        padded = getattr(self.train_set, "padded", None)      # videos shorter than a clip: padded, counted
        if padded is not None and not self.cfg.runtime.cache_features:
            rec["padded_videos"] = int((D.all_reduce_sum(padded.to(torch.int64)) > 0).sum().item())   # union of ranks
        if s.count > 0:
            rec.update(train_loss=s.loss, train_top1=s.top1)
        last = epoch == self.cfg.optim.epochs - 1
        if self.val_fit is not None and ((epoch + 1) % self.cfg.eval.every_epochs == 0 or last):
            rec.update(self.evaluate())
        self.logger.log("epoch", self.global_step, **rec)
        if self.rt.is_main:
            topk = f"top{min(5, self.num_classes)}"     # val_top5 is top-k, k = min(5, classes)
            print("aptune: " + "  ".join(f"{k.replace('top5', topk)} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in rec.items()))
        self.save_checkpoint(epoch + 1, 0)

    # ---- evaluate / save -----------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Clip-level validation; a new best top-1 saves the adapter under best/."""
        self.val_metrics = evaluate_clips(self.net, self.val_fit, self.rt, self.eval_bs, bad_log=self.bad)
        if self.val_metrics["top1"] > self.best:
            self.best = self.val_metrics["top1"]
            self.save_best()
        m = self.val_metrics
        skipped = m["skipped"] + len(getattr(self.val_fit, "bad", []))   # left out of the feature cache
        return {"val_top1": m["top1"], "val_top5": m["top5"], "val_loss": m["loss"], "val_skipped": skipped}

    def save_best(self) -> None:
        if self.rt.is_main:
            save_pretrained(self.model, self.run_dir / "best", class_names=self.class_names, clip=self.clip,
                            extra={"best_val_top1": self.best, "training": self.training_record()})

    def training_record(self) -> dict:
        """What an adapter's model card says about its training: command, data, resolved config."""
        d = self.cfg.data
        return {"command": invocation(), "config": self.cfg.to_dict(),
                "data": {"train_list": d.train_list, "val_list": d.val_list, "test_list": d.test_list, "root": d.root,
                         "num_train_videos": len(self.train_set) if self.train_set is not None else None}}

    def save_checkpoint(self, epoch: int, step_in_epoch: int, rngs: list | None = None) -> Path:
        """Snapshot at the data position (epoch, step_in_epoch); `rngs`: every rank's RNG states (default:
        now). Returns its path."""
        rngs = rngs if rngs is not None else D.all_gather_object(rng_state())
        path = self.ckpt_dir / f"step_{self.global_step:08d}.pt"
        if self.rt.is_main:
            save_checkpoint(path, {
                "model": model_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": rngs,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step, "best": self.best,
                "epoch_sums": self.epoch_sums.tolist() if step_in_epoch else None,
                "classes": {"num_classes": self.num_classes, "names": self.class_names},
                "config": self.cfg.to_dict(), "world_size": self.rt.world_size})
            prune_checkpoints(self.ckpt_dir, self.cfg.output.keep_last)
        D.barrier()
        return path

    # ---- finish --------------------------------------------------------------------------------
    def _earlier_test(self) -> dict | None:
        """The test a completed run already recorded at its last step (eval/metrics.json), if any."""
        report = self.run_dir / "eval" / "metrics.json"
        done = any(r["kind"] == "test" and r["step"] == self.global_step for r in read_metrics(self.run_dir))
        return json.loads(report.read_text()) if done and report.is_file() else None

    def finish(self) -> dict:
        """The final adapter, the multi-view test, and the run's summary."""
        adapter_dir = self.run_dir / "adapter"
        if self.rt.is_main:
            save_pretrained(self.model, adapter_dir, class_names=self.class_names, clip=self.clip,
                            extra={"global_step": self.global_step, "val": self.val_metrics or None,
                                   "training": self.training_record()})
            if self.val_fit is None:
                self.save_best()
        test = self._earlier_test() if self.was_complete else None
        if test is not None:
            if self.rt.is_main:
                print("aptune: test (of the completed run, not run again) " + summary(test))
        elif self.test_set is not None and self.cfg.eval.test_at_end:
            test = run_test_protocol(self.model, self.test_set, self.rt, self.run_dir / "eval", 1, self.class_names,
                                     bad_log=self.bad)
            self.logger.log("test", self.global_step, **{k: v for k, v in test.items() if k not in
                                                          ("confusion", "per_class", "video_correct", "bad_videos")})
            if self.rt.is_main:
                print("aptune: test " + summary(test))
                record_results(adapter_dir, test=test_summary(test))     # the model card shows it
        self.logger.log_artifact(adapter_dir, "adapter")
        self.logger.close()
        return {"run_dir": str(self.run_dir), "adapter_dir": str(adapter_dir), "val": self.val_metrics,
                "test": test, "best_top1": self.best, "global_step": self.global_step, "model": self.model}
