"""Tunable parameters and GFLOPs per method, side by side: rows, tables, the prompt-length sweep
and its two-panel plot (tunable parameters and GFLOPs against the number of prompts).

Models are built on the meta device (shapes only, no weights, no memory), so profiling every
method on ViT-B takes about a second. Parameter counts are exact; FLOPs follow
`aptune.profiling.flops` (fvcore's convention, one multiply-add = one FLOP, per view).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..console import progress as bar
from ..errors import ConfigError
from ..factory import count_parameters, create_model
from ..io import atomic_path, pyplot
from ..methods import get_method
from .flops import count_flops

BACKBONE = "backbone"                         # label of the row without any method
DEFAULT_PROMPTS = tuple(2 ** i for i in range(9))   # 1, 2, 4, ..., 256


@dataclass
class MethodSpec:
    """A method to profile: a registered name plus option overrides (empty = its defaults)."""
    name: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        def show(v):
            return str(v).lower() if isinstance(v, bool) or v is None else str(v).replace(" ", "")
        return self.name + ":" + ",".join(f"{k}={show(v)}" for k, v in self.options.items())


@dataclass
class ProfileRow:
    method: str                        # label: "apt", "apt:num_prompts=400", or "backbone"
    trainable_params: int | None       # None for the backbone row (no method applied)
    total_params: int
    gflops: float                      # per view, fvcore convention
    delta_gflops: float                # gflops minus the backbone row's
    trainable_percent: float | None
    method_config: dict | None         # the method's full config (defaults filled in)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build(model: str, spec: MethodSpec | None, num_classes: int, num_frames: int | None = None,
          img_size: int | None = None) -> torch.nn.Module:
    """The model with the method applied, on the meta device when the method allows it
    (a method whose construction needs real numbers falls back to the CPU)."""
    kwargs = dict(num_classes=num_classes, num_frames=num_frames, img_size=img_size)
    if spec is not None:
        kwargs.update(method=spec.name, **spec.options)
    try:
        with torch.device("meta"):
            return create_model(model, **kwargs)
    except (NotImplementedError, RuntimeError):
        return create_model(model, **kwargs)


def _row(label: str, net, num_frames, img_size, base_gflops: float | None) -> ProfileRow:
    counts = count_parameters(net)
    gflops = count_flops(net, num_frames, img_size)
    applied = net.tuning is not None
    cfg = dataclasses.asdict(net.tuning.config) if applied else None
    return ProfileRow(
        method=label, trainable_params=counts["trainable"] if applied else None, total_params=counts["total"],
        gflops=gflops, delta_gflops=gflops - (gflops if base_gflops is None else base_gflops),
        trainable_percent=100.0 * counts["trainable"] / counts["total"] if applied else None,
        method_config=cfg)


def profile(model: str, specs: list[MethodSpec], num_classes: int, num_frames: int | None = None,
            img_size: int | None = None, progress: bool | None = None) -> list[ProfileRow]:
    """One row for the backbone alone (first), then one per spec, in the given order."""
    for s in specs:
        get_method(s.name)                       # unknown names fail before any work
    base = _row(BACKBONE, build(model, None, num_classes, num_frames, img_size), num_frames, img_size, None)
    rows = [base]
    for s in bar(specs, desc="profile", unit="method", show=progress is not False):
        net = build(model, s, num_classes, num_frames, img_size)
        rows.append(_row(s.label, net, num_frames, img_size, base.gflops))
    return rows


def format_table(rows: list[ProfileRow]) -> str:
    """A plain-text table: method, trainable params, % of total, total params, GFLOPs, delta."""
    header = ("method", "trainable", "% total", "total params", "GFLOPs", "dGFLOPs")
    body = []
    for r in rows:
        body.append((r.method,
                     "-" if r.trainable_params is None else f"{r.trainable_params:,}",
                     "-" if r.trainable_percent is None else f"{r.trainable_percent:.3f}",
                     f"{r.total_params:,}", f"{r.gflops:.2f}", f"{r.delta_gflops:+.2f}"))
    return _tabulate(header, body)


def _tabulate(header, body) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    def line(cells):
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])])
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(b) for b in body])


# ---- prompt-length sweep --------------------------------------------------------------------
@dataclass
class SweepPoint:
    method: str
    num_prompts: int
    trainable_params: int
    total_params: int
    gflops: float
    delta_gflops: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sweep(model: str, methods: list[MethodSpec], num_classes: int, prompts=DEFAULT_PROMPTS,
          num_frames: int | None = None, img_size: int | None = None,
          progress: bool | None = None) -> tuple[float, list[SweepPoint]]:
    """(backbone GFLOPs, points): each method (its other options kept) at each prompt count.
    Every method must have a `num_prompts` option."""
    for s in methods:
        known = {f.name for f in dataclasses.fields(get_method(s.name).config)}
        if "num_prompts" not in known:
            raise ConfigError(f"--sweep: method {s.name!r} has no num_prompts option; its options are {sorted(known)}")
    base = count_flops(build(model, None, num_classes, num_frames, img_size), num_frames, img_size)
    jobs = [(s, m) for s in methods for m in prompts]
    points = []
    for s, m in bar(jobs, desc="sweep", unit="model", show=progress is not False):
        net = build(model, MethodSpec(s.name, {**s.options, "num_prompts": m}), num_classes, num_frames, img_size)
        counts = count_parameters(net)
        g = count_flops(net, num_frames, img_size)
        label = s.label
        if isinstance(getattr(net.tuning.config, "deep", None), bool):   # VPT: say which variant
            label += " (deep)" if net.tuning.config.deep else " (shallow)"
        points.append(SweepPoint(label, m, counts["trainable"], counts["total"], g, g - base))
    return base, points


def format_sweep_table(points: list[SweepPoint]) -> str:
    """Rows = prompt counts; per method two columns: tunable parameters and GFLOPs."""
    methods = list(dict.fromkeys(p.method for p in points))
    prompts = sorted({p.num_prompts for p in points})
    at = {(p.method, p.num_prompts): p for p in points}
    header = ["prompts"] + [h for m in methods for h in (f"{m} params", f"{m} GFLOPs")]
    body = []
    for n in prompts:
        cells = [str(n)]
        for m in methods:
            p = at.get((m, n))
            cells += ["-", "-"] if p is None else [f"{p.trainable_params:,}", f"{p.gflops:.2f}"]
        body.append(cells)
    return _tabulate(header, body)


def plot_sweep(points: list[SweepPoint], path: str | Path, base_gflops: float | None = None,
               title: str | None = None) -> Path:
    """Two panels against the number of prompts (log2 axis): left tunable parameters (millions),
    right GFLOPs per view, one line per method; the backbone's GFLOPs as a dashed line. PNG."""
    plt = pyplot()
    path = Path(path)
    fig, (ax_p, ax_f) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    markers = "os^Dvx*"
    for i, m in enumerate(dict.fromkeys(p.method for p in points)):
        pts = sorted((p for p in points if p.method == m), key=lambda p: p.num_prompts)
        xs = [p.num_prompts for p in pts]
        ax_p.plot(xs, [p.trainable_params / 1e6 for p in pts], marker=markers[i % len(markers)], label=m)
        ax_f.plot(xs, [p.gflops for p in pts], marker=markers[i % len(markers)], label=m)
    if base_gflops is not None:
        ax_f.axhline(base_gflops, color="gray", linestyle="--", linewidth=1, label="backbone")
    for ax, ylabel, t in ((ax_p, "tunable parameters (M)", "Tunable parameters"), (ax_f, "GFLOPs per view", "GFLOPs")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.set_xlabel("number of prompts")
        ax.set_ylabel(ylabel)
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
