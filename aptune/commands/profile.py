"""`aptune profile`: tunable parameters and GFLOPs per method, or against the number of prompts.

Methods are given as `name` or `name:opt=val,opt=val`, separated by commas; a comma-separated
piece that holds `=` but no `:` continues the previous method's options:

    aptune profile --methods apt:num_prompts=400,reparam=false,vpt,linear
    aptune profile --methods apt --set apt.num_prompts=400 --set apt.layers=[0,1,2]

Values are read as YAML scalars/lists (400, 0.1, true, [0, 1]). `--json` prints one JSON object
per line (JSON Lines): first the backbone (method "backbone", trainable_params null), then one per
method, each with keys method, trainable_params, total_params, gflops, delta_gflops,
trainable_percent, method_config. With `--sweep`, one object per (method, num_prompts) point
with keys method, num_prompts, trainable_params, total_params, gflops, delta_gflops.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..factory import resolve_layout
from ..io import write_json
from ..methods import get_method, list_methods
from ..models.checkpoints import read_checkpoint
from ..models.zoo import get_config, is_model
from ..profiling.report import MethodSpec, format_sweep_table, format_table, plot_sweep, profile, sweep

HELP = "tunable parameters and GFLOPs (fvcore convention, per view) of each method"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="videomae-vit-b", help="backbone name from the model zoo")
    p.add_argument("--layout", choices=("frames", "joint"), default=None,
                   help="token layout (default: the backbone's; image ViTs: frames, VideoMAE: joint only)")
    p.add_argument("--methods", action="append", default=None, metavar="LIST",
                   help="comma-separated methods, each `name` or `name:opt=val,...` (repeatable); "
                        "default: every registered method (with --sweep: vpt,apt)")
    p.add_argument("--num-classes", type=int, default=101, help="classes of the head (counted as tunable)")
    p.add_argument("--num-frames", type=int, default=None,
                   help="frames of the one view that FLOPs are counted for (default: the model's own clip, "
                        "e.g. 16 for videomae-vit-b, 4 for videomae-demo-4f)")
    p.add_argument("--img-size", type=int, default=None, help="height = width of that view (default: the model's own)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.OPT=VAL",
                   help="override one method option, e.g. apt.num_prompts=400 (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON Lines instead of a table")
    p.add_argument("--sweep", action="store_true",
                   help="tunable params and GFLOPs against prompt length (1..256) for VPT (deep) and APT; "
                        "writes a table and sweep.png/sweep.json into --out")
    p.add_argument("--prompts", default=None, metavar="N,N,...",
                   help="prompt counts for --sweep (default 1,2,4,...,256)")
    p.add_argument("--out", default=None,
                   help="folder for sweep.png and sweep.json (--sweep; default profile_out/) or "
                        "profile.json (without --sweep; nothing is written unless given)")


def _value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read option value {text!r}: {e}") from None


def _option(piece: str, where: str) -> tuple[str, object]:
    key, eq, val = piece.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{where}: expected opt=val, got {piece!r}")
    return key.strip(), _value(val.strip())


def parse_methods(texts: list[str]):
    """['apt:num_prompts=400,reparam=false,vpt'] -> [MethodSpec('apt', {...}), MethodSpec('vpt')]."""
    specs: list[MethodSpec] = []
    for text in texts:
        for piece in (x.strip() for x in text.split(",")):
            if not piece:
                continue
            if ":" in piece:
                name, _, first = piece.partition(":")
                spec = MethodSpec(name.strip())
                if first.strip():
                    k, v = _option(first, f"--methods {name}")
                    spec.options[k] = v
                specs.append(spec)
            elif "=" in piece:
                if not specs:
                    raise ConfigError(f"--methods: option {piece!r} comes before any method name")
                k, v = _option(piece, f"--methods {specs[-1].name}")
                specs[-1].options[k] = v
            else:
                specs.append(MethodSpec(piece))
    return specs


def apply_sets(specs, sets: list[str]) -> None:
    """--set METHOD.OPT=VAL onto every spec of that method; a method not listed is an error."""
    for s in sets:
        target, eq, val = s.partition("=")
        name, dot, opt = target.partition(".")
        if not eq or not dot or not name or not opt:
            raise ConfigError(f"--set: expected METHOD.OPT=VAL, got {s!r}")
        hits = [sp for sp in specs if sp.name == name.strip()]
        if not hits:
            raise ConfigError(f"--set {s!r}: method {name!r} is not among the profiled methods "
                             f"({', '.join(sp.name for sp in specs)})")
        for sp in hits:
            sp.options[opt.strip()] = _value(val.strip())


def own_clip(model: str, num_frames: int | None, img_size: int | None) -> tuple[int, int]:
    """The clip to count: what was asked, else the model's own (a zoo config, or the config a checkpoint
    folder or file states)."""
    if num_frames is None or img_size is None:
        own = get_config(model) if is_model(model) else read_checkpoint(model).config
        num_frames = num_frames or getattr(own, "num_frames", 16)
        img_size = img_size or getattr(own, "img_size", 224)
    return num_frames, img_size


def _check_sizes(args: argparse.Namespace) -> None:
    """Positive sizes; the clip defaults to the model's own."""
    for name in ("num_classes", "num_frames", "img_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    args.num_frames, args.img_size = own_clip(args.model, args.num_frames, args.img_size)


def run(args: argparse.Namespace) -> int:
    _check_sizes(args)
    model, layout = args.model, None          # a path (a Hugging Face folder) goes to create_model as it is
    if is_model(args.model) or args.layout is not None:
        config, layout = resolve_layout(get_config(args.model), args.layout)
        model = args.model if args.layout is None else config
    unsupported = []            # by default, the methods that refuse this layout are listed, not profiled
    if args.methods:
        specs = parse_methods(args.methods)
    else:
        names = ["vpt", "apt"] if args.sweep else list_methods()
        unsupported = [n for n in names if n in list_methods() and layout not in get_method(n).layouts + (None,)]
        specs = [MethodSpec(n) for n in names if n in list_methods() and n not in unsupported]
    apply_sets(specs, args.set)
    common = dict(num_classes=args.num_classes, num_frames=args.num_frames, img_size=args.img_size)

    if args.sweep:
        prompts = tuple(int(x) for x in args.prompts.split(",")) if args.prompts else None
        if prompts is not None and any(n < 0 for n in prompts):
            raise ConfigError(f"--prompts: counts must be >= 0, got {args.prompts}")
        base, points = sweep(model, specs, prompts=prompts or (1, 2, 4, 8, 16, 32, 64, 128, 256), **common)
        out = Path(args.out or "profile_out")
        png = plot_sweep(points, out / "sweep.png", base_gflops=base,
                         title=f"{args.model}, {args.num_frames}x{args.img_size}x{args.img_size}, "
                               f"{args.num_classes} classes")
        write_json(out / "sweep.json", {"model": args.model, **common, "backbone_gflops": base,
                                        "points": [p.to_dict() for p in points]})
        if args.json:
            for p in points:
                print(json.dumps(p.to_dict()))
        else:
            clip = f"{args.num_frames}x{args.img_size}x{args.img_size}"
            print(f"{args.model}: backbone {base:.2f} GFLOPs per {clip} view")
            print(format_sweep_table(points))
            print(f"wrote {png} and {out / 'sweep.json'}")
        return 0

    rows = profile(model, specs, **common)
    if args.out:
        write_json(Path(args.out) / "profile.json", {"model": args.model, "layout": layout, **common,
                                                     "rows": [r.to_dict() for r in rows]})
    if args.json:
        for r in rows:
            print(json.dumps(r.to_dict()))
    else:
        shown = f"{args.model} ({layout} layout)" if layout else args.model
        print(f"{shown}, {args.num_classes} classes, one {args.num_frames}x{args.img_size}x{args.img_size} view "
              "(GFLOPs: fvcore convention, 1 multiply-add = 1 FLOP)")
        print(format_table(rows))
        if unsupported:
            print(f"not profiled: methods without the {layout} token layout")
            for n in unsupported:
                print(f"{n}  -  supports {', '.join(get_method(n).layouts)}")
    return 0
