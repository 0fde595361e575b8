"""What a run says before its first step: the start-up summary and the warnings that belong there.

    aptune: data      12 train videos (data/train.csv), 3 val, 3 test; 2 classes: class_0, class_1
    aptune: clip      16 frames x stride 4 (dense), 224x224 px; test 5 clips x 3 crops
    aptune: backbone  videomae-vit-b from videomae_b.pth (made for 16x224x224 clips: 1,568 tokens; this run: 1,568)
    aptune: method    apt (num_prompts=200)
    aptune: device    cuda:0, amp bf16, 1 process, 8 loader workers
    aptune: tunable   391,205 of 86,616,869 parameters (0.45%)
    aptune: schedule  100 epochs x 1,192 steps = 119,200 steps of 8 clips (batch 8 x accum 1 x 1 process) ...
"""
from __future__ import annotations

from ..console import format_duration, warn
from ..factory import count_parameters
from ..models.zoo import get_config
from .build import resolve_checkpoint

TOKEN_RATIO = 4     # a clip with this many times more (or fewer) tokens than the backbone's own warns


def clip_tokens(config, num_frames: int, img_size: int) -> int:
    t, h, w = config.grid(num_frames, img_size)
    return t * h * w


def token_warning(model_name: str, num_frames: int, img_size: int) -> str | None:
    """A warning when the run's clip has more than TOKEN_RATIO times more (or fewer) tokens than the clip
    the backbone's config (and its checkpoints) were made for; None otherwise."""
    own = get_config(model_name)
    n_own, n = clip_tokens(own, own.num_frames, own.img_size), clip_tokens(own, num_frames, img_size)
    if n_own / TOKEN_RATIO <= n <= n_own * TOKEN_RATIO:
        return None
    how = f"{n / n_own:.0f}x more" if n > n_own else f"{n_own / n:.0f}x fewer"
    return (f"data.num_frames={num_frames}, data.img_size={img_size}: {n:,} tokens per clip, {how} than the "
            f"{n_own:,} of the {own.num_frames}x{own.img_size}x{own.img_size} clips {model_name} was made for "
            f"({'slower by about that much, and ' if n > n_own else ''}its position table is stretched to fit); "
            f"data.num_frames={own.num_frames} data.img_size={own.img_size} uses its own clip")


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def _classes(t) -> str:
    names, n = t.class_names, t.num_classes
    if names:
        return f"{n} classes: {', '.join(names[:8])}{', ...' if n > 8 else ''}"
    return f"{n} classes, numbered 0..{n - 1} (no class names)"


def _backbone(t) -> str:
    m, d = t.cfg.model, t.cfg.data
    own = get_config(m.name)
    source = f"from {resolve_checkpoint(m)}" if m.checkpoint else f"random init (seed {t.cfg.runtime.seed})"
    return (f"{m.name}, {source} (made for {own.num_frames}x{own.img_size}x{own.img_size} clips: "
            f"{clip_tokens(own, own.num_frames, own.img_size):,} tokens; this run: "
            f"{clip_tokens(own, d.num_frames, d.img_size):,})")


def summary_lines(t) -> list[str]:
    """The summary of Trainer `t` after its setup, one 'name  text' per line."""
    cfg, rt, d, o = t.cfg, t.rt, t.cfg.data, t.cfg.optim
    sizes = ", ".join(f"{len(s)} {k}" for k, s in (("val", t.val_set), ("test", t.test_set)) if s is not None)
    listed = f" ({d.train_list})" if t.given is None and d.train_list else ""
    sampling = f"x stride {d.sampling_rate} (dense)" if d.sampling == "dense" else "(one per segment)"
    test = f"; test {d.test_clips} clips x {d.test_crops} crops" if t.test_set is not None else ""
    method = ", ".join(f"{k}={v}" for k, v in cfg.method.options.items())
    amp = {None: "off (fp32)"}.get(rt.amp_dtype, str(rt.amp_dtype).replace("torch.", ""))
    workers = _n(rt.num_workers, "loader worker") + (
        f" (data.num_workers={rt.asked_workers} capped at the CPU cores)" if rt.asked_workers > rt.num_workers else "")
    c = count_parameters(t.model)
    clips = o.batch_size * o.accum_steps * rt.world_size
    return [
        f"data      {len(t.train_set)} train videos{listed}{', ' + sizes if sizes else ''}; {_classes(t)}",
        f"clip      {d.num_frames} frames {sampling}, {d.img_size}x{d.img_size} px{test}",
        f"backbone  {_backbone(t)}",
        f"method    {cfg.method.name}{f' ({method})' if method else ''}",
        f"device    {rt.device}, amp {amp}, {_n(rt.world_size, 'process')}, {workers}",
        f"tunable   {c['trainable']:,} of {c['total']:,} parameters ({100 * c['trainable'] / max(c['total'], 1):.2f}%)",
        f"schedule  {_n(o.epochs, 'epoch')} x {_n(t.steps_per_epoch, 'step')} = {_n(t.total_steps, 'step')} of "
        f"{clips} clips (batch {o.batch_size} x accum {o.accum_steps} x {_n(rt.world_size, 'process')}); lr "
        f"{t.base_lr:.3g} ({o.lr:g} per 256), {o.warmup_epochs:g} warm-up "
        f"epoch{'' if o.warmup_epochs == 1 else 's'}, cosine to {t.min_lr:.3g}",
    ]


def print_summary(t) -> None:
    """Print the summary (rank 0), then the warnings a user should see before the run starts."""
    if not t.rt.is_main:
        return
    for line in summary_lines(t):
        print(f"aptune: {line}")
    if t.given is None and not t.class_names:
        warn(f"no classes.txt beside {t.cfg.data.train_list}: the classes are numbered 0..{t.num_classes - 1} and "
             "the adapter will name them so (write one class name per line, in label order, into that classes.txt)")
    w = token_warning(t.cfg.model.name, t.cfg.data.num_frames, t.cfg.data.img_size)
    if w:
        warn(w)


def eta_line(steps_done: int, seconds: float, steps_left: int) -> str:
    """One line: the time the remaining steps take at the pace so far (validation and test not counted)."""
    per = seconds / max(steps_done, 1)
    return (f"aptune: {steps_done} steps in {format_duration(seconds)} ({per:.2f} s/step): about "
            f"{format_duration(per * steps_left)} for the remaining {steps_left:,} steps (validation and test not "
            "counted)")
