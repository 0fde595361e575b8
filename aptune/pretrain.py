"""VideoMAE self-supervised pre-training of aptune's own VideoMAEViT.

    clip (B, 3, T, H, W) -> tubelet tokens + sin-cos positions           (B, N, C)
    tube mask: the same random spatial positions are hidden at every time step (ratio 0.9)
    encoder: aptune's `VideoMAEViT` blocks on the visible tokens only (B, N_vis, C) -> norm
    decoder: Linear C -> D, mask tokens at the hidden positions (+ positions), a few light
             `layers.Block`s, norm, Linear D -> 3 * t * p * p for the hidden tokens only
    target: the hidden tubelets' pixels, normalised per patch and channel (mean 0, variance 1)
    loss: mean squared error over the hidden tokens

The checkpoint is written in the official VideoMAE pre-training layout: a dict with `model`
holding `encoder.*` (VideoMAE's names: `encoder.patch_embed.proj.weight`,
`encoder.blocks.{i}.attn.qkv.weight`, `...q_bias`, `...v_bias`, `encoder.norm.*`), `decoder.*`,
`encoder_to_decoder.weight` and `mask_token`; the backbone config and the recipe ride along as
plain data under `aptune` (ignored by VideoMAE's own loader).

The run is configured like training (one YAML: the `pretrain:` section plus model, data, optim and
runtime, see `aptune.config.PretrainConfig`) and reuses its pieces: the data pipeline's decoding,
dense sampling, crops and normalisation (every video decoded once into memory), the optimizer's
parameter groups and schedule, the runtime's device, autocast and loaders, the atomic checkpoint writer.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config, PretrainConfig, validate_pretrain
from .console import progress as console_progress
from .data.datasets import VideoDataset
from .data.prepare import text_lines, videos_in
from .engine.bad_videos import BadVideoLog
from .engine.optim import build_optimizer, lr_at, scaled_lr, set_lr
from .engine.runtime import Runtime
from .engine.state import save_checkpoint
from .engine.train import EpochSampler
from .errors import CheckpointError, DataError, MissingFileError
from .models.checkpoints import read_state, unwrap
from .models.layers import Block, TokenLayout, sinusoid_table, trunc_normal_init
from .models.videomae import VideoMAEConfig, VideoMAEViT
from .models.zoo import get_config
from .normalization import IMAGENET_MEAN, IMAGENET_STD


# ---- masking and targets ------------------------------------------------------------------
def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator=None) -> torch.Tensor:
    """(B, N) bool, True = hidden. The same spatial positions are hidden at every time step,
    exactly round(ratio * h * w) of them per sample (at least one stays visible)."""
    t, h, w = grid
    hw = h * w
    n_hide = min(int(round(ratio * hw)), hw - 1)
    order = torch.rand(batch, hw, generator=generator).argsort(dim=1)
    spatial = torch.zeros(batch, hw, dtype=torch.bool)
    spatial.scatter_(1, order[:, :n_hide], True)
    return spatial.unsqueeze(1).expand(batch, t, hw).reshape(batch, t * hw)   # tokens ordered (t, h, w)


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, N, t*p*p, 3) in the token order of PatchEmbed."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)                                   # (B, T', H', W', t, p, p, C)
    return x.reshape(B, -1, tubelet * patch * patch, C)


def reconstruction_target(video: torch.Tensor, tubelet: int, patch: int, norm_pix: bool = True,
                          eps: float = 1e-6, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Pixels in [0, 1] (un-normalised input) per tubelet, (B, N, t*p*p*3); with `norm_pix`
    each patch and channel is standardised: (x - mean) / sqrt(var + eps). VideoMAE (and
    transformers' VideoMAEForPreTraining) divide by sqrt(var) + 1e-6 instead; with eps 1e-6 the two
    differ only on patches whose std is below about 1e-3, and eps inside the root acts as a variance
    floor, so a larger eps keeps flat, noisy patches from becoming unit-variance noise targets."""
    mean = torch.tensor(mean, device=video.device).view(1, 3, 1, 1, 1)    # the input's normalisation, undone
    std = torch.tensor(std, device=video.device).view(1, 3, 1, 1, 1)
    x = patchify(video * std + mean, tubelet, patch)                        # (B, N, P, 3)
    if norm_pix:
        x = (x - x.mean(dim=2, keepdim=True)) / (x.var(dim=2, unbiased=True, keepdim=True) + eps).sqrt()
    return x.flatten(2)                                                      # (B, N, P*3)


# ---- model --------------------------------------------------------------------------------
class Decoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, out_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, "qv", norm_eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, n_out: int) -> torch.Tensor:
        layout = TokenLayout(frames=1, grid=(1, 1, x.shape[1]))            # one flat sequence
        for blk in self.blocks:
            x, layout = blk(x, layout)
        return self.head(self.norm(x[:, -n_out:]))                          # the last n_out tokens


class MaskedVideoAutoencoder(nn.Module):
    """Encoder = aptune's VideoMAEViT (same code as fine-tuning) + final norm; light decoder."""

    def __init__(self, config: VideoMAEConfig, cfg: PretrainConfig):
        """`config`: the encoder; `cfg`: the `pretrain` section (decoder, mask, targets)."""
        super().__init__()
        self.config = replace(config, num_classes=0)
        self.cfg = cfg
        self.encoder = VideoMAEViT(self.config)
        self.encoder.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        out_dim = 3 * config.tubelet_size * config.patch_size ** 2
        self.encoder_to_decoder = nn.Linear(config.embed_dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.decoder = Decoder(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, out_dim, config.norm_eps)
        self.decoder.apply(trunc_normal_init)
        trunc_normal_init(self.encoder_to_decoder)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) normalised, mask (B, N) True = hidden -> predictions for the
        hidden tokens in their original order, (B, N_hidden, 3*t*p*p)."""
        enc = self.encoder
        x = self.embed_visible(video, mask)                                 # (B, N_vis, C)
        B, N = mask.shape
        layout = TokenLayout(frames=video.shape[2], grid=(1, 1, x.shape[1]))  # the visible tokens
        for blk in enc.blocks:
            x, layout = blk(x, layout)
        x = self.encoder_to_decoder(enc.norm(x))                            # (B, N_vis, D)
        D = x.shape[-1]
        pos = sinusoid_table(N, D).to(x).expand(B, N, D)
        pos_vis, pos_hid = pos[~mask].reshape(B, -1, D), pos[mask].reshape(B, -1, D)
        n_hid = pos_hid.shape[1]
        x = torch.cat([x + pos_vis, self.mask_token + pos_hid], dim=1)      # (B, N, D)
        return self.decoder(x, n_hid)

    def embed_visible(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """patch_embed + positions for the visible tokens only, (B, N_vis, C). The Conv3d of
        `encoder.patch_embed` (kernel = stride) is applied as the equal matrix product on the
        visible tubelets alone, which skips the 90% of its work that masking would discard."""
        enc, c = self.encoder, self.config
        proj = enc.patch_embed.proj
        B, N = mask.shape
        tubes = patchify(video, c.tubelet_size, c.patch_size)               # (B, N, t*p*p, 3)
        tubes = tubes.transpose(2, 3).flatten(2)                            # (B, N, 3*t*p*p): Conv3d weight order
        tubes = tubes[~mask].reshape(B, -1, tubes.shape[-1])                # (B, N_vis, 3*t*p*p)
        x = F.linear(tubes, proj.weight.flatten(1), proj.bias)              # (B, N_vis, C)
        pos = enc.position_embedding(N).to(x.dtype).expand(B, N, -1)
        return x + pos[~mask].reshape(B, -1, x.shape[-1])

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def loss(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = self.config
        pred = self.forward(video, mask)
        with torch.no_grad():
            target = reconstruction_target(video, c.tubelet_size, c.patch_size, self.cfg.norm_pix_loss,
                                           self.cfg.norm_pix_eps, c.mean, c.std)
            target = target[mask].reshape(pred.shape)                       # (B, N_hidden, P*3)
        return F.mse_loss(pred, target)

    # ---- official layout ----------------------------------------------------------------
    def videomae_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under VideoMAE pre-training names (no fc_norm / head: they start fresh)."""
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("encoder.fc_norm.") or k.startswith("encoder.head."):
                continue
            out[k] = v.detach().float().cpu().clone()
        return out


def backbone_state_from_pretrain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder weights of a VideoMAE pre-training `model` dict, renamed for VideoMAEViT
    (prefix `encoder.` dropped; the encoder's final `norm`, decoder and mask token left out)."""
    return {k[len("encoder."):]: v for k, v in state.items()
            if k.startswith("encoder.") and not k.startswith("encoder.norm.")}


def read_pretrain_config(path: str | os.PathLike) -> VideoMAEConfig:
    """The backbone VideoMAEConfig stored by `pretrain` in a checkpoint's `aptune` entry."""
    ckpt = read_state(path)
    meta = ckpt.get("aptune") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise CheckpointError(f"{path}: no 'aptune.backbone' entry; not written by `aptune pretrain`")
    return VideoMAEConfig.from_dict(meta["backbone"])


# ---- data ---------------------------------------------------------------------------------
def pretrain_entries(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """[(path, 0)] for a list file (`relative/path [label]` per line, relative to `root`, default the
    file's folder; labels ignored) or a folder (every video file below it, sorted)."""
    source = Path(source)
    if source.is_dir():
        paths = videos_in(source)
    elif source.is_file():
        paths = []
        for line in text_lines(source):
            if line.strip():
                rel = line.split()[0]
                paths.append(Path(rel) if os.path.isabs(rel) else Path(root or source.parent) / rel)
    else:
        raise MissingFileError(f"videos not found: {source} (give a list file or a folder)")
    if not paths:
        raise DataError(f"{source}: no videos found")
    return [(str(p), 0) for p in paths]


def pretrain_dataset(cfg: Config, videos=None, progress: bool = True) -> VideoDataset:
    """The training clips: the data pipeline's dense sampling (stride data.sampling_rate), a random
    square crop of at least pretrain.min_crop of the side resized to data.img_size, no flip, the
    backbone's normalisation; every video decoded once into memory (`videos`: decoded already)."""
    d, p = cfg.data, cfg.pretrain
    vit = get_config(cfg.model.name)
    kw = dict(mode="train", num_frames=d.num_frames, sampling_rate=d.sampling_rate, img_size=d.img_size,
              flip=False, scale=(p.min_crop ** 2, 1.0), ratio=(1.0, 1.0), seed=cfg.runtime.seed,
              mean=vit.mean, std=vit.std, skip_bad_videos=d.skip_bad_videos)
    if videos is not None:
        return VideoDataset.from_frames(videos, **kw)
    return VideoDataset(pretrain_entries(d.train_list, d.root), **kw).preload(progress)


def save_pretrain_checkpoint(model: MaskedVideoAutoencoder, cfg: Config, path: str | os.PathLike,
                             history: list[dict], parent: dict | None = None) -> None:
    """Write the official VideoMAE pre-training layout plus aptune's metadata (the backbone config, the
    whole run config as `recipe`, the loss history), atomically; `parent` (the metadata of the
    checkpoint this run continued from, see `load_autoencoder_weights`) is kept under aptune.init so a
    continued run still records its whole recipe."""
    state = model.videomae_state_dict()
    if cfg.pretrain.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {"backbone": model.config.to_dict(), "pretrain": asdict(cfg.pretrain), "recipe": cfg.to_dict(),
            "history": history}
    if parent is not None:
        meta["init"] = parent
    save_checkpoint(path, {"model": state, "aptune": meta})


def load_autoencoder_weights(model: MaskedVideoAutoencoder, path: str | os.PathLike) -> dict:
    """Start `model` from the encoder, decoder and mask token of a pre-training checkpoint in the
    official VideoMAE layout (one written by `pretrain`, or VideoMAE's own). Every tensor of the
    model except the unused fine-tuning head must be there with the same shape. Returns the
    file's lineage for `save_checkpoint(parent=...)`: its name and aptune metadata, if any."""
    state, _, extras = unwrap(read_state(path), str(path))
    own = model.state_dict()
    need = [k for k in own if not k.startswith(("encoder.fc_norm.", "encoder.head."))]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a VideoMAE pre-training checkpoint for this model; missing "
                         f"{len(missing)} tensors, e.g. {missing[:3]}")
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})" for k in need
             if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: shapes differ from the model / pretrain.decoder_* options: {wrong[:3]}")
    model.load_state_dict({k: state[k].float() for k in need}, strict=False)
    meta = extras.get("aptune")
    return {"file": os.path.basename(os.fspath(path)), **(meta if isinstance(meta, dict) else {})}


def _step(model: MaskedVideoAutoencoder, opt, video: torch.Tensor, mask: torch.Tensor, lr: float,
          clip_grad: float | None, rt: Runtime) -> float:
    """One optimizer step on a batch of clips and their tube masks; returns the loss."""
    set_lr(opt, lr)
    with rt.autocast():
        loss = model.loss(video, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    opt.step()
    return loss.item()


def pretrain(cfg: Config, videos=None, progress: bool = True, log=print) -> dict:
    """Pre-train a masked video autoencoder as `cfg` says (its `pretrain` section plus model, data,
    optim, runtime), write the checkpoint (pretrain.out, default <output.dir>/pretrain.pth) after
    every epoch, and return {"history", "seconds", "steps", "model", "out"}. `videos`: decoded clips
    (uint8 (T, H, W, 3)) instead of data.train_list. The forward runs under the runtime's autocast
    (bf16 on a GPU with runtime.amp auto/bf16); weights and optimizer state stay float32.
    pretrain.init continues from the weights of a pre-training checkpoint (optimizer and schedule
    start afresh), e.g. an official VideoMAE checkpoint adapted to one's own unlabeled videos."""
    validate_pretrain(cfg, need_videos=videos is None)
    p, o, r = cfg.pretrain, cfg.optim, cfg.runtime
    rt = Runtime.create(r, cfg.data.num_workers)
    bad_log = BadVideoLog(rt.is_main, note="skipped (data.skip_bad_videos)")
    out = Path(p.out or Path(cfg.output.dir) / "pretrain.pth")
    config = get_config(cfg.model.name, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size)
    torch.manual_seed(r.seed)
    gen = torch.Generator().manual_seed(r.seed)
    model = MaskedVideoAutoencoder(config, p)
    parent = load_autoencoder_weights(model, p.init) if p.init else None
    model = model.to(rt.device)
    dataset = pretrain_dataset(cfg, videos, progress)
    base_lr, min_lr, warmup_lr = (scaled_lr(v, o.batch_size, 1, rt.world_size) for v in (o.lr, o.min_lr, o.warmup_lr))
    opt = build_optimizer(model, o, base_lr)
    sampler = EpochSampler(len(dataset), min(o.batch_size, len(dataset)), rt.rank, rt.world_size, r.seed)
    steps_per_epoch = len(sampler) // min(o.batch_size, len(dataset))
    total, warmup = steps_per_epoch * o.epochs, int(o.warmup_epochs * steps_per_epoch)
    history, step, t0, stop = [], 0, time.time(), False
    bar = console_progress(total=total, desc="pretrain", unit="step", show=progress)
    model.train()
    for epoch in range(o.epochs):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        losses = []
        for video, _, _, bad in rt.batches(rt.loader(dataset, min(o.batch_size, len(dataset)), sampler,
                                                     drop_last=True, seed=r.seed + epoch)):
            bad_log.report(bad, "train")                 # named once; skipped (data.skip_bad_videos)
            if video is None:
                continue
            mask = tube_mask(video.shape[0], config.grid(), p.mask_ratio, gen).to(rt.device)
            # with a time budget, the cosine follows the larger of step and time spent
            spent = 0.0 if p.max_minutes is None else (time.time() - t0) / (60 * p.max_minutes)
            loss = _step(model, opt, video, mask, lr_at(step, total, warmup, base_lr, min_lr, spent, warmup_lr),
                         o.clip_grad, rt)
            losses.append(loss)
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            if p.max_minutes is not None and time.time() - t0 > 60 * p.max_minutes:
                stop = True
                break
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "steps": step,
                        "seconds": round(time.time() - t0, 1)})
        log(f"epoch {epoch}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)")
        save_pretrain_checkpoint(model, cfg, out, history, parent=parent)
        if stop:
            log(f"stopped after {p.max_minutes} minutes (pretrain.max_minutes)")
            break
    bar.close()
    return {"history": history, "seconds": time.time() - t0, "steps": step, "model": model, "out": str(out)}
