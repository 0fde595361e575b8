"""Many tasks on one frozen backbone: adapters of different methods and sizes in one mixed batch.

    mt = aptune.load_adapters({"ucf101": "runs/ucf101/adapter", "hmdb51": "runs/hmdb51/adapter"},
                              checkpoint="videomae_vit_b.pth")
    outs = mt(video, tasks=["ucf101", "hmdb51", "ucf101"])   # per sample: logits (classes of its task,)
    mt.add_adapter("ssv2", "runs/ssv2/adapter"); mt.remove_adapter("hmdb51"); mt.tasks

The backbone is built once, without a method, and its weights are held once. Each task's own
modules are built from its adapter file (on the meta device first, so no second backbone is ever
allocated) and put into *routers* in the block seams. A forward says which task each sequence
belongs to; every router applies each task's module to that task's sequences only:

    kv_prompts     APT          keys/values per sequence (S, 1, M, hd), padded to the batch's longest
                                M; a mask (S, M) keeps the padding out of the softmax
    tokens_in/out  VPT          a prompt area after the class tokens, as wide as the batch needs; the
                                slots a sequence does not use are masked as keys (`layout.key_mask`),
                                and columns no sequence uses any more are dropped
    attn_adapter, mlp_adapter   Approximated Prompt Tuning, AdaptFormer: on the rows of their task
    LoRA           each target Linear computes W x + b once, then each task's B A on its rows
    head           per task: the backbone's head modules (fc_norm, head) swapped for the task's

Padding never changes a real token: it is masked out of attention, every other operation works per
token, and a block does not see token order (positions are added at the embedding), so each
sample's logits are those of its own task's model. Methods that change the frozen stream elsewhere
(pre_attn / pre_mlp / wrap: ST-Adapter, AIM), train something before the blocks (the joint image
layout's temporal embedding) or train the whole backbone (full fine-tuning) are refused.
Inference only: the model stays in eval mode.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adapters import WEIGHTS, _fill, backbone_fingerprint, read_adapter_meta, recorded_backbone
from .errors import CheckpointError, ConfigError, MissingFileError, UnknownNameError
from .methods.lora import TARGETS, LoRALinear
from .methods.vpt import PrependPrompts, RemovePrompts

ROUTED_SEAMS = ("kv_prompts", "tokens_in", "tokens_out", "attn_adapter", "mlp_adapter")
REFUSED_SEAMS = ("pre_attn", "pre_mlp", "wrap")
# config fields that may differ between tasks on one backbone: the head, training-only dropouts, and the
# clip (checked between tasks: one batch holds one clip shape; the backbones fit positions to any clip)
PER_TASK = {"num_classes", "init_scale", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_dropout",
            "num_frames", "img_size"}


class Route:
    """Which task each sample of the current batch belongs to (shared by every router)."""

    def __init__(self):
        self.sample_task: torch.Tensor | None = None     # (B,) index into the model's task list
        self.present: list[int] = []                     # task indices in this batch

    def ids(self, num_sequences: int) -> torch.Tensor:
        """(S,) task index per sequence; frames folded into the batch repeat their clip's index."""
        B = self.sample_task.shape[0]
        return self.sample_task.repeat_interleave(num_sequences // B) if num_sequences != B else self.sample_task


class Router(nn.Module):
    """Holds one seam's module per task (`tasks[name]`); subclasses route a batch through them."""

    def __init__(self, route: Route, order: list[str]):
        super().__init__()
        self.route, self.order = route, order            # `order`: the model's task list, shared
        self.tasks = nn.ModuleDict()

    def active(self):
        """(task index, module) for the tasks of this batch that have a module here."""
        return [(i, self.tasks[self.order[i]]) for i in self.route.present if self.order[i] in self.tasks]


class KVRouter(Router):
    """kv_prompts seam: layout -> (K, V, mask), K and V (S, 1, M, hd), mask (S, M); or None."""

    def forward(self, layout):
        active = self.active()
        if not active:
            return None
        kvs = [(i, *mod(layout)) for i, mod in active]                      # (i, k (m, hd), v (m, hd))
        M, hd = max(k.shape[0] for _, k, _ in kvs), kvs[0][1].shape[1]
        n = len(self.order)
        k_all, v_all = kvs[0][1].new_zeros(2, n, M, hd)                      # one row per task
        valid = torch.zeros(n, M, dtype=torch.bool, device=k_all.device)
        for i, k, v in kvs:
            k_all[i, :k.shape[0]], v_all[i, :k.shape[0]], valid[i, :k.shape[0]] = k, v, True
        B = self.route.sample_task.shape[0]
        ids = self.route.ids(B * layout.frames if layout.folded else B)    # (S,)
        return k_all[ids][:, None], v_all[ids][:, None], valid[ids]         # (S, 1, M, hd) x2, (S, M)


class PromptsInRouter(Router):
    """tokens_in seam (VPT): each sequence's prompts join a prompt area right after the class tokens,
    padded to the longest; the padding is masked as keys."""

    def forward(self, x, layout):
        active = self.active()
        if not active:
            return x, layout
        S, L, C = x.shape
        ids = self.route.ids(S)
        W = max(mod.prompts.shape[0] for _, mod in active)
        area, valid = x.new_zeros(S, W, C), torch.zeros(S, W, dtype=torch.bool, device=x.device)
        for i, mod in active:
            rows = ids == i
            m = mod.prompts.shape[0]
            area[rows, :m], valid[rows, :m] = mod.prompts.to(x.dtype), True       # eval: no prompt dropout
        c = layout.prefix
        mask = layout.key_mask if layout.key_mask is not None else torch.ones(S, L, dtype=torch.bool,
                                                                             device=x.device)
        x = torch.cat((x[:, :c], area, x[:, c:]), dim=1)                         # (S, L + W, C)
        mask = torch.cat((mask[:, :c], valid, mask[:, c:]), dim=1)
        return x, replace(layout, prompts=layout.prompts + W, key_mask=None if bool(mask.all()) else mask)


class PromptsOutRouter(Router):
    """tokens_out seam (VPT): the tasks whose prompts leave here mark their slots unused; prompt-area
    columns no sequence uses are dropped, and the mask with them once nothing is padding."""

    def forward(self, x, layout):
        active = self.active()
        if not active:
            return x, layout
        ids = self.route.ids(x.shape[0])
        c, W = layout.prefix, layout.prompts
        mask = (layout.key_mask.clone() if layout.key_mask is not None else
                torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        for i, _ in active:
            mask[ids == i, c:c + W] = False              # a task's sequences hold only its own prompts
        keep = torch.cat((torch.ones(c, dtype=torch.bool, device=x.device), mask[:, c:c + W].any(0),
                          torch.ones(mask.shape[1] - c - W, dtype=torch.bool, device=x.device)))
        x, mask = x[:, keep], mask[:, keep]
        layout = replace(layout, prompts=W - int((~keep).sum()), key_mask=None if bool(mask.all()) else mask)
        return x, layout


class AttnAdapterRouter(Router):
    """attn_adapter seam: (h, a, layout) -> a', each task's module on its own rows."""

    def forward(self, h, a, layout):
        active = self.active()
        if not active:
            return a
        ids, out = self.route.ids(h.shape[0]), a.clone()
        for i, mod in active:
            rows = ids == i
            out[rows] = mod(h[rows], a[rows], layout)
        return out


class MlpAdapterRouter(Router):
    """mlp_adapter seam: (x, h, layout) -> delta, each task's module on its own rows (zero elsewhere)."""

    def forward(self, x, h, layout):
        ids, delta = self.route.ids(x.shape[0]), torch.zeros_like(x)
        for i, mod in self.active():
            rows = ids == i
            delta[rows] = mod(x[rows], h[rows], layout).to(x.dtype)
        return delta


class LoRARouter(nn.Linear):
    """A frozen Linear (same parameter names) plus each task's LoRA update on its rows."""

    def __init__(self, base: nn.Linear, route: Route, order: list[str]):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.route, self.order = route, order
        self.tasks = nn.ModuleDict()

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        ids = self.route.ids(x.shape[0])
        for i in self.route.present:
            if self.order[i] in self.tasks:
                rows = ids == i
                y[rows] = y[rows] + self.tasks[self.order[i]](x[rows])
        return y


ROUTERS = {"kv_prompts": KVRouter, "tokens_in": PromptsInRouter, "tokens_out": PromptsOutRouter,
           "attn_adapter": AttnAdapterRouter, "mlp_adapter": MlpAdapterRouter}


@dataclass
class Task:
    name: str
    directory: Path
    method: str
    meta: dict
    class_names: list[str] | None
    num_classes: int

    @property
    def clip(self) -> dict:
        return self.meta.get("clip") or {}


class MultiTaskModel(nn.Module):
    """One frozen backbone and many adapters; see the module docstring."""

    def __init__(self, backbone, checkpoint=None, allow_other_backbone: bool = False):
        super().__init__()
        if backbone.tuning is not None:
            raise ConfigError(f"MultiTaskModel needs a plain backbone; this one has method {backbone.tuning.name!r}")
        self.backbone = backbone.requires_grad_(False).eval()
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.allow_other_backbone = allow_other_backbone
        heads = {id(m) for m in backbone.head_modules()}
        self.head_attrs = [n for n, m in backbone.named_children() if id(m) in heads]
        if len(self.head_attrs) != len(heads):
            raise ConfigError(f"{backbone.family}: head modules must be direct children of the backbone to be "
                              "swapped per task")
        head_params = {n for a in self.head_attrs for n, _ in getattr(backbone, a).named_parameters(prefix=a)}
        self.fingerprint = backbone_fingerprint(backbone, skip=head_params)
        self.route, self.order = Route(), []
        self._tasks: dict[str, Task] = {}
        self.heads = nn.ModuleDict()                    # task -> ModuleDict(attr -> module)

    # ---- tasks ----------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(self.order)

    def task(self, name: str) -> Task:
        if name not in self._tasks:
            raise UnknownNameError(f"unknown task {name!r}; loaded tasks: {', '.join(self.order) or 'none'}")
        return self._tasks[name]

    def add_adapter(self, name: str, directory: str | os.PathLike) -> "MultiTaskModel":
        """Load the adapter folder `directory` as task `name` (its tensors only; the backbone is shared)."""
        from .methods import apply_method, get_method, make_config
        from .models.zoo import build_backbone, config_from_dict
        if not isinstance(name, str) or not name:
            raise ConfigError(f"task name must be a non-empty string, got {name!r}")
        if name in self._tasks:
            raise ConfigError(f"task {name!r} is already loaded (from {self._tasks[name].directory}); "
                              "remove_adapter it first")
        directory = Path(directory)
        meta = read_adapter_meta(directory)
        method = get_method(meta["method"])
        if method.full_state:
            raise ConfigError(f"task {name!r} ({directory}): method {method.name!r} trains the whole backbone, so "
                              "it cannot share one; load it on its own with aptune.load_adapter")
        config = config_from_dict(meta.get("family", "videomae"), meta["backbone"])
        with torch.device("meta"):                      # the task's own modules only; no second backbone
            skel = build_backbone(config)
            apply_method(skel, method.name, make_config(method.name, **meta["method_config"]))
        seams = self._collect(name, directory, method.name, skel)
        early = [n for n in skel.tuning.trainable_names if n.startswith(skel.stem)]
        if early:
            raise ConfigError(f"task {name!r} ({directory}): {early[:3]} train before the blocks on this "
                              f"{skel.family} backbone ({skel.layout} layout), so it cannot share the embedding "
                              "with other tasks; load it alone with aptune.load_adapter")
        self._check_backbone(name, directory, meta)
        _fill(skel, directory / WEIGHTS, method.name)
        heads = nn.ModuleDict({a: getattr(skel, a) for a in self.head_attrs})
        self.order.append(name)
        self._install(name, seams)
        self.heads[name] = heads
        self._tasks[name] = Task(name, directory, method.name, meta, meta.get("class_names"),
                                 config.num_classes)
        self.requires_grad_(False).eval()
        return self

    def remove_adapter(self, name: str) -> "MultiTaskModel":
        """Drop task `name` and its tensors."""
        self.task(name)
        for mod in self.modules():
            if isinstance(mod, (Router, LoRARouter)) and name in mod.tasks:
                del mod.tasks[name]
        del self.heads[name], self._tasks[name]
        self.order.remove(name)
        return self

    def _check_backbone(self, name: str, directory: Path, meta: dict) -> None:
        """The adapter must have been trained on this backbone (fingerprint, config) and clip size."""
        from .models.zoo import config_from_dict
        family = meta.get("family", "videomae")
        if family != self.backbone.family:
            raise ConfigError(f"task {name!r} ({directory}) was trained on a {family} backbone; this model's "
                              f"backbone is {self.backbone.family}")
        theirs = config_from_dict(family, meta["backbone"]).to_dict()
        ours = self.backbone.config.to_dict()
        diff = sorted(k for k in set(theirs) | set(ours) if k not in PER_TASK and theirs.get(k) != ours.get(k))
        if diff:
            raise ConfigError(f"task {name!r} ({directory}): backbone config differs in "
                              + ", ".join(f"{k} ({theirs.get(k)!r} vs {ours.get(k)!r} here)" for k in diff))
        rec = meta.get("backbone_weights") or {}
        if rec.get("fingerprint") and rec["fingerprint"] != self.fingerprint and not self.allow_other_backbone:
            raise CheckpointError(
                f"task {name!r} ({directory}) was trained on the backbone {rec.get('path') or 'a random init'} "
                f"(fingerprint {rec['fingerprint'][:19]}), not on this model's {self.checkpoint or 'random init'} "
                f"(fingerprint {self.fingerprint[:19]}); pass allow_other_backbone=True (--allow-other-backbone) "
                "to use it anyway")
        clip = meta.get("clip") or {}
        for other in self._tasks.values():
            for key in ("num_frames", "img_size"):
                a, b = clip.get(key), other.clip.get(key)
                if a is not None and b is not None and a != b:
                    raise ConfigError(f"task {name!r} ({directory}) was trained on clips with {key}={a}, task "
                                      f"{other.name!r} ({other.directory}) on {key}={b}: one batch cannot hold both")

    def _collect(self, name: str, directory: Path, method: str, skel) -> dict:
        """{(block, seam or LoRA target): module} of the task's skeleton, materialised (empty) on the
        backbone's device; refuses seams a shared backbone cannot route."""
        device = next(self.backbone.parameters()).device
        seams = {}
        for b, blk in enumerate(skel.blocks):
            for seam in REFUSED_SEAMS:
                if getattr(blk, seam) is not None:
                    raise ConfigError(f"task {name!r} ({directory}): method {method!r} uses the {seam} seam (it "
                                      "changes the frozen stream itself), which a shared backbone cannot route; "
                                      "load it alone with aptune.load_adapter")
            for seam in ROUTED_SEAMS:
                mod = getattr(blk, seam)
                if mod is None:
                    continue
                if seam in ("tokens_in", "tokens_out") and not isinstance(mod, (PrependPrompts, RemovePrompts)):
                    raise ConfigError(f"task {name!r} ({directory}): its {seam} module {type(mod).__name__} is "
                                      "not VPT's; a shared backbone routes only VPT prompts")
                seams[(b, seam)] = mod.to_empty(device=device)
            for target, (parent, child) in TARGETS.items():
                lin = getattr(getattr(blk, parent), child)
                if isinstance(lin, LoRALinear):
                    seams[(b, target)] = lin.lora.to_empty(device=device)
        for a in self.head_attrs:
            getattr(skel, a).to_empty(device=device)
        return seams

    def _install(self, name: str, seams: dict) -> None:
        for (b, seam), mod in seams.items():
            blk = self.backbone.blocks[b]
            if seam in TARGETS:
                parent_name, child = TARGETS[seam]
                parent = getattr(blk, parent_name)
                if not isinstance(getattr(parent, child), LoRARouter):
                    setattr(parent, child, LoRARouter(getattr(parent, child), self.route, self.order))
                getattr(parent, child).tasks[name] = mod
            else:
                if getattr(blk, seam) is None:
                    setattr(blk, seam, ROUTERS[seam](self.route, self.order))
                getattr(blk, seam).tasks[name] = mod

    # ---- forward --------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        if mode:
            raise ConfigError("MultiTaskModel is for inference; train each task with aptune train")
        return super().train(False)

    def _task_ids(self, tasks, batch: int) -> torch.Tensor:
        if isinstance(tasks, str):
            tasks = [tasks] * batch
        tasks = list(tasks)
        if len(tasks) != batch:
            raise ConfigError(f"tasks: {len(tasks)} names for a batch of {batch} clips; give one per clip")
        for t in tasks:
            self.task(t)
        return torch.tensor([self.order.index(t) for t in tasks], dtype=torch.long)

    def forward(self, video: torch.Tensor, tasks) -> list[torch.Tensor]:
        """video (B, 3, T, H, W); tasks: one task name per clip (or one name for all). Returns a list of B
        logit vectors, each (num_classes of its task,)."""
        if not self.order:
            raise ConfigError("no adapters loaded; add_adapter(name, directory) first")
        ids = self._task_ids(tasks, video.shape[0])
        self.route.sample_task = ids.to(video.device)
        self.route.present = sorted(set(ids.tolist()))
        try:
            pooled = self.backbone.forward_pooled(video)                     # (B, C)
        finally:
            self.route.sample_task, self.route.present = None, []
        out: list[torch.Tensor | None] = [None] * video.shape[0]
        for i in sorted(set(ids.tolist())):
            rows = (ids == i).nonzero().flatten().tolist()
            logits = self._head(self.order[i], pooled[rows])
            for r, row in zip(rows, logits):
                out[r] = row
        return out

    def _head(self, name: str, pooled: torch.Tensor) -> torch.Tensor:
        """The task's head on pooled features (n, C): the backbone's head modules swapped for its own."""
        bb, saved = self.backbone, {a: getattr(self.backbone, a) for a in self.head_attrs}
        try:
            for a, mod in self.heads[name].items():
                bb._modules[a] = mod
            return bb.forward_head(bb.normalize_pooled(pooled))
        finally:
            for a, mod in saved.items():
                bb._modules[a] = mod


def load_adapters(adapters: dict[str, str | os.PathLike], checkpoint: str | os.PathLike | None = None,
                  allow_other_backbone: bool = False, device: str | torch.device = "cpu") -> MultiTaskModel:
    """One backbone (`checkpoint`, default: the file the first adapter records) and every adapter of
    `adapters` ({task name: adapter folder}) on it. Adapters of another backbone, or of clips of
    another size, are errors naming both (`allow_other_backbone=True` accepts other weights)."""
    from .api import create_model
    from .models.zoo import config_from_dict
    if not adapters:
        raise ConfigError("load_adapters: give at least one {task name: adapter folder}")
    first_name, first_dir = next(iter(adapters.items()))
    meta = read_adapter_meta(first_dir)
    if checkpoint is None:
        checkpoint = recorded_backbone(meta)
        if checkpoint is None:
            rec = meta.get("backbone_weights") or {}
            raise MissingFileError(f"task {first_name!r} ({first_dir}): its backbone {rec.get('path')!r} is not "
                                   "there; pass checkpoint= (--checkpoint) with the weights the adapters were "
                                   "trained on")
    config = replace(config_from_dict(meta.get("family", "videomae"), meta["backbone"]), num_classes=0)
    with warnings.catch_warnings():     # the file's classification head is skipped: every task brings its own
        warnings.filterwarnings("ignore", message=".*classification head.*skipped")
        backbone = create_model(config, checkpoint=checkpoint).to(device)
    mt = MultiTaskModel(backbone, checkpoint, allow_other_backbone)
    for name, directory in adapters.items():
        mt.add_adapter(name, directory)
    return mt
