"""`aptune pretrain`: VideoMAE self-supervised pre-training (tube masking, MSE on hidden tubelets)."""
from __future__ import annotations

from ..errors import ConfigError

HELP = "VideoMAE self-supervised pre-training of a backbone on unlabeled videos"


def add_arguments(p) -> None:
    from ..pretrain import PretrainConfig
    d = PretrainConfig()
    p.add_argument("--videos", required=True, help="list file (`path [label]` per line) or folder of videos")
    p.add_argument("--out", required=True, help="checkpoint to write (official VideoMAE pre-training layout)")
    p.add_argument("--model", default=d.model, help="zoo name of the backbone (see `aptune.list_models()`)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (absolute)")
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio)
    p.add_argument("--decoder-dim", type=int, default=d.decoder_dim)
    p.add_argument("--decoder-depth", type=int, default=d.decoder_depth)
    p.add_argument("--decoder-heads", type=int, default=d.decoder_heads)
    p.add_argument("--frame-stride", type=int, default=d.frame_stride)
    p.add_argument("--min-crop", type=float, default=d.min_crop,
                   help="< 1: random resized crops of at least this fraction of the side; 1: plain random crops")
    p.add_argument("--no-norm-pix-loss", action="store_true", help="reconstruct raw pixels, not per-patch normalised")
    p.add_argument("--norm-pix-eps", type=float, default=d.norm_pix_eps,
                   help="variance floor of the per-patch target normalisation")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from the encoder and decoder of this pre-training checkpoint (official VideoMAE "
                        "layout, or one `aptune pretrain` wrote); optimizer and schedule start afresh")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this much wall time")
    p.add_argument("--half", action="store_true", help="store weights in float16 (half the file size)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass (GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import torch

    from ..models.zoo import get_config
    from ..pretrain import PretrainConfig, list_videos, load_clips, pretrain
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         min_lr=args.min_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                         mask_ratio=args.mask_ratio, decoder_dim=args.decoder_dim,
                         decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads,
                         norm_pix_loss=not args.no_norm_pix_loss, norm_pix_eps=args.norm_pix_eps,
                         frame_stride=args.frame_stride, min_crop=args.min_crop,
                         seed=args.seed, max_minutes=args.max_minutes)
    cfg.validate()
    config = get_config(args.model)
    clips = load_clips(list_videos(args.videos), progress=not args.no_progress)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device is available on this machine")
    result = pretrain(config, clips, cfg, args.out, progress=not args.no_progress, half=args.half,
                      device=args.device, bf16=args.bf16, init=args.init)
    h = result["history"]
    print(f"wrote {args.out}: {result['steps']} steps in {result['seconds'] / 60:.1f} min, "
          f"loss {h[0]['loss']:.4f} -> {h[-1]['loss']:.4f}")
    return 0
