"""`aptune synth`: write the synthetic action dataset (or an unlabeled pre-training pool)."""
from __future__ import annotations

from ..data.synthetic import BACKGROUNDS, CLASSES, TEXTURES, SynthConfig, generate_dataset, generate_unlabeled
from ..errors import ConfigError

HELP = "generate synthetic action videos whose classes need frame order (labeled or unlabeled)"


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--unlabeled", type=int, default=None, metavar="N",
                   help="write N unlabeled clips (labeled and extra motions, either direction) for pre-training "
                        "instead of the labeled splits")
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--num-test", type=int, default=100)
    p.add_argument("--seed", type=int, default=None, help="default 0 (labeled) or 1000 (unlabeled)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=96, help="frame side in pixels (even)")
    p.add_argument("--object-scale", type=float, default=1.0, help="multiplies object sizes")
    p.add_argument("--motion-scale", type=float, default=1.0, help="multiplies path lengths, rotations, growth")
    p.add_argument("--max-noise", type=float, default=0.05, help="largest pixel-noise std")
    p.add_argument("--backgrounds", default=None,
                   help="comma-separated background kinds to draw from (plain,gradient,stripes,noise; default all)")
    p.add_argument("--textures", default=None,
                   help="comma-separated object textures to draw from (solid,stripes,checker; default all)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    def kinds(value, known, name):
        if value is None:
            return tuple(known)
        got = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = sorted(set(got) - set(known))
        if bad or not got:
            raise ConfigError(f"--{name}: unknown {bad or 'empty list'}; choose from {','.join(known)}")
        return got
    cfg = SynthConfig(frames=args.frames, size=args.size, object_scale=args.object_scale,
                      motion_scale=args.motion_scale, max_noise=args.max_noise,
                      backgrounds=kinds(args.backgrounds, BACKGROUNDS, "backgrounds"),
                      textures=kinds(args.textures, TEXTURES, "textures"))
    if args.unlabeled is not None:
        out = generate_unlabeled(args.out, args.unlabeled, 1000 if args.seed is None else args.seed, cfg,
                                 progress=not args.no_progress)
        print(f"wrote {args.unlabeled} unlabeled clips and {out / 'unlabeled.txt'}")
    else:
        out = generate_dataset(args.out, args.num_train, args.num_val, args.num_test,
                               0 if args.seed is None else args.seed, cfg, progress=not args.no_progress)
        print(f"wrote {len(CLASSES)} classes to {out}: train.txt, val.txt, test.txt, classes.txt "
              "(direction-sensitive: keep horizontal flip off)")
    return 0
