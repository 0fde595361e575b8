"""`aptune demo`: the embedded end-to-end demo (what `make demo` runs)."""
from __future__ import annotations

from ..demo import DemoConfig, all_rows, run_demo
from ..errors import ConfigError
from ..methods import list_methods

HELP = ("fine-tune linear/VPT/AdaptFormer/APT/full from the embedded pre-trained backbone on synthetic "
        "actions and print the comparison table (minutes on a CPU, nothing downloaded)")


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (data cache, runs, results.*)")
    p.add_argument("--quick", action="store_true", help="a tiny run (few clips, 1 epoch, 3 methods) to check the setup")
    p.add_argument("--epochs", type=int, default=None, help="epochs per method (linear probing keeps its own)")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds of every row that decides a comparison (default 3); the random-init "
                        "and full-tuning reference rows keep 1")
    p.add_argument("--num-train", type=int, default=None, help="training videos")
    p.add_argument("--num-test", type=int, default=None, help="test videos")
    p.add_argument("--methods", default=None,
                   help="comma-separated method names to run, each with all its rows (e.g. linear,apt,full: apt "
                        "runs APT (16) and APT (64)); 'all': every row, also the three that make demo leaves out "
                        "(APT (64), Approx. prompt (16), LoRA (8); about 21 min on 2 cores); default: the "
                        "table of make demo")
    p.add_argument("--checkpoint", default=None, help="backbone checkpoint (default: the embedded one)")
    p.add_argument("--jobs", type=int, default=None,
                   help="training runs at a time, each in its own process (default: the CPU cores; 1: in this process)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per training run (default 1)")


def run(args) -> int:
    cfg = DemoConfig.quick(args.out) if args.quick else DemoConfig(out=args.out)
    for name in ("jobs", "threads", "seeds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name}: must be >= 1, got {value}")
    cfg.jobs, cfg.threads, cfg.seeds = args.jobs or cfg.jobs, args.threads or cfg.threads, args.seeds or cfg.seeds
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.num_train is not None:
        cfg.num_train = args.num_train
    if args.num_test is not None:
        cfg.num_test = args.num_test
    if args.checkpoint is not None:
        cfg.checkpoint = args.checkpoint
    known = set(list_methods())
    if args.methods:
        keep = {m.strip() for m in args.methods.split(",") if m.strip()}
        offered = cfg.rows if args.quick else all_rows()
        unknown = keep - {r.method for r in offered} - {"all"}
        if unknown:
            raise ConfigError(f"--methods: {sorted(unknown)} not in the demo; it runs "
                             f"{sorted({r.method for r in offered})} (or 'all')")
        cfg.rows = [r for r in offered if r.method in keep or "all" in keep]
    cfg.rows = [r for r in cfg.rows if r.method in known]     # methods this install registers
    run_demo(cfg)
    return 0
