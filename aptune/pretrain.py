"""VideoMAE self-supervised pre-training of aptune's own VisionTransformer.

    clip (B, 3, T, H, W) -> tubelet tokens + sin-cos positions           (B, N, C)
    tube mask: the same random spatial positions are hidden at every time step (ratio 0.9)
    encoder: aptune's `VisionTransformer` blocks on the visible tokens only (B, N_vis, C) -> norm
    decoder: Linear C -> D, mask tokens at the hidden positions (+ positions), a few light
             `layers.Block`s, norm, Linear D -> 3 * t * p * p for the hidden tokens only
    target: the hidden tubelets' pixels, normalised per patch and channel (mean 0, variance 1)
    loss: mean squared error over the hidden tokens

The checkpoint is written in the official VideoMAE pre-training layout: a dict with `model`
holding `encoder.*` (VideoMAE's names: `encoder.patch_embed.proj.weight`,
`encoder.blocks.{i}.attn.qkv.weight`, `...q_bias`, `...v_bias`, `encoder.norm.*`), `decoder.*`,
`encoder_to_decoder.weight` and `mask_token`; the backbone config and the recipe ride along as
plain data under `aptune` (ignored by VideoMAE's own loader).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.prepare import VIDEO_EXTENSIONS
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .engine.optim import lr_at
from .errors import ConfigError, MissingFileError
from .models.layers import Block, TokenLayout, sinusoid_table, trunc_normal_init
from .models.videomae import VisionTransformer, ViTConfig


@dataclass
class PretrainConfig:
    """Recipe of one pre-training run. `lr` is absolute (not scaled by batch size)."""
    model: str = "videomae-demo"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    mask_ratio: float = 0.9
    decoder_dim: int = 96
    decoder_depth: int = 2
    decoder_heads: int = 3
    norm_pix_loss: bool = True
    norm_pix_eps: float = 1e-6       # variance floor of the per-patch normalisation (VideoMAE: 1e-6)
    frame_stride: int = 2            # temporal stride when sampling num_frames from a longer clip
    min_crop: float = 1.0            # < 1: random resized crop of at least this fraction of the side;
                                     # 1: plain random crop of img_size (clips larger than the model's input)
    seed: int = 0
    max_minutes: float | None = None  # stop early (and save) after this much wall time

    def validate(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"PretrainConfig.mask_ratio: must be in (0, 1), got {self.mask_ratio}")
        for name in ("epochs", "batch_size", "decoder_dim", "decoder_depth", "decoder_heads", "frame_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"PretrainConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"PretrainConfig.decoder_dim {self.decoder_dim} is not divisible by "
                             f"decoder_heads {self.decoder_heads}")


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
                          eps: float = 1e-6) -> torch.Tensor:
    """Pixels in [0, 1] (un-normalised input) per tubelet, (B, N, t*p*p*3); with `norm_pix`
    each patch and channel is standardised: (x - mean) / sqrt(var + eps). VideoMAE (and
    transformers' VideoMAEForPreTraining) divide by sqrt(var) + 1e-6 instead; with eps 1e-6 the two
    differ only on patches whose std is below about 1e-3, and eps inside the root acts as a variance
    floor, so a larger eps keeps flat, noisy patches from becoming unit-variance noise targets."""
    mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=video.device).view(1, 3, 1, 1, 1)
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
    """Encoder = aptune's VisionTransformer (same code as fine-tuning) + final norm; light decoder."""

    def __init__(self, config: ViTConfig, cfg: PretrainConfig):
        super().__init__()
        self.config = replace(config, num_classes=0)
        self.cfg = cfg
        self.encoder = VisionTransformer(self.config)
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

    def loss(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = self.config
        pred = self.forward(video, mask)
        with torch.no_grad():
            target = reconstruction_target(video, c.tubelet_size, c.patch_size, self.cfg.norm_pix_loss,
                                           self.cfg.norm_pix_eps)
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
    """Encoder weights of a VideoMAE pre-training `model` dict, renamed for VisionTransformer
    (prefix `encoder.` dropped; the encoder's final `norm`, decoder and mask token left out)."""
    return {k[len("encoder."):]: v for k, v in state.items()
            if k.startswith("encoder.") and not k.startswith("encoder.norm.")}


def read_pretrain_config(path: str | os.PathLike) -> ViTConfig:
    """The backbone ViTConfig stored by `pretrain` in a checkpoint's `aptune` entry."""
    from .models.checkpoints import read_state
    ckpt = read_state(path)
    meta = ckpt.get("aptune") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise ConfigError(f"{path}: no 'aptune.backbone' entry; not written by `aptune pretrain`")
    return ViTConfig.from_dict(meta["backbone"])


# ---- data ---------------------------------------------------------------------------------
def list_videos(source: str | os.PathLike) -> list[Path]:
    """Video paths from a list file (`relative/path [label]` per line, relative to the file's
    folder) or from a folder (every video file below it, sorted)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    elif source.is_file():
        paths = []
        for line in source.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]
            p = Path(rel) if os.path.isabs(rel) else source.parent / rel
            paths.append(p)
    else:
        raise MissingFileError(f"videos not found: {source} (give a list file or a folder)")
    if not paths:
        raise ConfigError(f"{source}: no videos found")
    return paths


def load_clips(paths: list[Path], progress: bool = True) -> list[np.ndarray]:
    """Decode every video fully into memory: list of (T, H, W, 3) uint8."""
    from tqdm import tqdm

    from .data.synthetic import read_video
    return [read_video(p) for p in tqdm(paths, desc="decode", unit="video", disable=not progress,
                                         dynamic_ncols=True)]


def sample_batch(clips: list[np.ndarray], idx: np.ndarray, num_frames: int, size: int, stride: int,
                 min_crop: float, rng: np.random.Generator) -> torch.Tensor:
    """A normalised batch (B, 3, T, size, size): random temporal window (with `stride`, reduced
    when the clip is short), random square crop of side >= min_crop * short side, resize."""
    out = []
    for i in idx:
        clip = clips[i]
        T, H, W, _ = clip.shape
        s = stride
        while s > 1 and (num_frames - 1) * s + 1 > T:
            s -= 1
        start = int(rng.integers(0, max(T - (num_frames - 1) * s, 1)))
        frames = np.arange(start, start + (num_frames - 1) * s + 1, s).clip(max=T - 1)
        side = min(H, W) if min_crop >= 1.0 else int(min(H, W) * rng.uniform(min_crop, 1.0))
        if min_crop >= 1.0 and min(H, W) >= size:
            side = size                                                     # plain random crop, no resize
        y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
        x_ = torch.from_numpy(clip[frames, y:y + side, x:x + side]).permute(0, 3, 1, 2).float() / 255
        if side != size:
            x_ = F.interpolate(x_, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x_.permute(1, 0, 2, 3))                                   # (3, T, size, size)
    video = torch.stack(out)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (video - mean) / std


# ---- training -----------------------------------------------------------------------------
def save_checkpoint(model: MaskedVideoAutoencoder, cfg: PretrainConfig, path: str | os.PathLike,
                    history: list[dict], half: bool = False, parent: dict | None = None) -> None:
    """Write the official VideoMAE pre-training layout plus aptune's metadata; `parent` (the
    metadata of the checkpoint this run continued from, see `load_autoencoder_weights`) is kept
    under aptune.init so a continued run still records its whole recipe."""
    from .io import atomic_path
    state = model.videomae_state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    ckpt = {"model": state, "aptune": {"backbone": model.config.to_dict(), "pretrain": asdict(cfg),
                                      "history": history}}
    if parent is not None:
        ckpt["aptune"]["init"] = parent
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_autoencoder_weights(model: MaskedVideoAutoencoder, path: str | os.PathLike) -> dict:
    """Start `model` from the encoder, decoder and mask token of a pre-training checkpoint in the
    official VideoMAE layout (one written by `pretrain`, or VideoMAE's own). Every tensor of the
    model except the unused fine-tuning head must be there with the same shape. Returns the
    file's lineage for `save_checkpoint(parent=...)`: its name and aptune metadata, if any."""
    from .models.checkpoints import read_state, unwrap
    state, _, extras = unwrap(read_state(path), str(path))
    own = model.state_dict()
    need = [k for k in own if not k.startswith(("encoder.fc_norm.", "encoder.head."))]
    missing = [k for k in need if k not in state]
    if missing:
        raise ConfigError(f"{path}: not a VideoMAE pre-training checkpoint for this model; missing "
                         f"{len(missing)} tensors, e.g. {missing[:3]}")
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})" for k in need
             if state[k].shape != own[k].shape]
    if wrong:
        raise ConfigError(f"{path}: shapes differ from --model / decoder options: {wrong[:3]}")
    model.load_state_dict({k: state[k].float() for k in need}, strict=False)
    meta = extras.get("aptune")
    return {"file": os.path.basename(os.fspath(path)), **(meta if isinstance(meta, dict) else {})}


def pretrain(config: ViTConfig, clips: list[np.ndarray], cfg: PretrainConfig, out: str | os.PathLike,
             progress: bool = True, half: bool = False, log=print, device: str | torch.device = "cpu",
             bf16: bool = False, init: str | os.PathLike | None = None) -> dict:
    """Pre-train a masked video autoencoder on decoded `clips`, write the checkpoint to `out`
    after every epoch, and return {"history": [...], "seconds": ..., "steps": ...}.
    Batches are cut on the CPU and moved to `device`; `bf16` runs the forward in bfloat16
    autocast (weights and optimizer state stay float32). `init`: continue from the weights of a
    pre-training checkpoint (optimizer and schedule start afresh), e.g. an official VideoMAE
    checkpoint adapted to one's own unlabeled videos."""
    cfg.validate()
    device = torch.device(device)
    from tqdm import tqdm
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = MaskedVideoAutoencoder(config, cfg)
    parent = load_autoencoder_weights(model, init) if init is not None else None
    model = model.to(device)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or n.endswith("mask_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    steps_per_epoch = max(len(clips) // cfg.batch_size, 1)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    grid = config.grid()
    history, step, t0 = [], 0, time.time()
    bar = tqdm(total=total, desc="pretrain", unit="step", disable=not progress, dynamic_ncols=True)
    stop = False
    model.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(clips))
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            video = sample_batch(clips, idx, config.num_frames, config.img_size, cfg.frame_stride,
                                 cfg.min_crop, rng).to(device, non_blocking=True)
            mask = tube_mask(len(idx), grid, cfg.mask_ratio, gen).to(device)
            for g in opt.param_groups:
                # with a time budget, the cosine follows the larger of step and time spent
                g["lr"] = lr_at(step, total, warmup, cfg.lr, cfg.min_lr, 0.0 if cfg.max_minutes is None
                                else (time.time() - t0) / (60 * cfg.max_minutes))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(video, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
                stop = True
                break
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "steps": step,
                        "seconds": round(time.time() - t0, 1)})
        log(f"epoch {epoch}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)")
        save_checkpoint(model, cfg, out, history, half=half, parent=parent)
        if stop:
            log(f"stopped after {cfg.max_minutes} minutes (max_minutes)")
            break
    bar.close()
    return {"history": history, "seconds": time.time() - t0, "steps": step, "model": model}
