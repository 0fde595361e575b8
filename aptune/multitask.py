"""Many tasks on one frozen backbone: adapters of different methods and sizes in one mixed batch.

    mt = aptune.load_adapters({"ucf101": "runs/ucf101/adapter", "hmdb51": "runs/hmdb51/adapter"},
                              checkpoint="videomae_vit_b.pth")
    outs = mt(video, tasks=["ucf101", "hmdb51", "ucf101"])   # per sample: logits (classes of its task,)
    mt.add_adapter("ssv2", "runs/ssv2/adapter"); mt.remove_adapter("hmdb51"); mt.tasks

The backbone is built once, without a method, and its weights are held once. For each adapter, the
task's model is rebuilt on the meta device (no second backbone is ever allocated) and compared with the
same backbone without the method: every place where the method put a module (a block seam) or replaced
one (LoRA's Linear) becomes a `Place` of the shared backbone, holding each task's module there. A
forward says which task each clip belongs to; every place serves the mixed batch through its modules'
`mixed_forward`, which the method's own file defines (methods/registry.py). Each task's head modules
then run on its own pooled features. This file names no method.

Nothing trained is dropped, and nothing is served that its method did not say how to serve. An adapter
is refused, naming the task, the method and the reason, when its method declares it cannot share a
backbone (`cannot_share`); when a module it adds has no `mixed_forward`; when a tensor of its file is
held by no such module and no head (a gain trained on a frozen module, a norm trained in place); when
it changes anything else of the frozen modules (hooks, attributes); or when its head modules act before
the blocks (the joint image layout's temporal embedding).

Padding (prompts of different lengths) never changes a real token: it is masked out of attention, every
other operation works per token, and a block does not see token order (positions are added at the
embedding), so each sample's logits are those of its own task's model. Inference only: eval mode.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from .adapter_files import WEIGHTS, adapter_folder, backbone_fingerprint, read_adapter_meta, recorded_backbone
from .adapters import fill_adapter
from .errors import CheckpointError, ConfigError, MissingFileError, UnknownNameError
from .factory import create_model
from .methods import MixedBatch, apply_method, get_method, make_config
from .models.layers import EMPTY_SEAMS
from .models.zoo import build_backbone, config_from_dict

# config fields that may differ between tasks on one backbone: the head, training-only dropouts, and the
# clip (checked between tasks: one batch holds one clip shape; the backbones fit positions to any clip)
PER_TASK = {"num_classes", "init_scale", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_dropout",
            "num_frames", "img_size"}


class Place(nn.Module):
    """A place of the shared backbone where tasks have modules (`tasks[name]`): a forward serves the
    batch through their `mixed_forward` (`serve`); `base` is the shared frozen module a method replaced
    there, None for a block seam (named `seam`: the empty seam's output is the plain one)."""

    def __init__(self, batch: MixedBatch, order: list[str], serve, base: nn.Module | None, seam: str):
        super().__init__()
        self.batch, self.order, self.serve = batch, order, serve    # `order`: the model's task list, shared
        self.base, self.seam = base, seam
        self.tasks = nn.ModuleDict()

    def forward(self, *args):
        plain = self.base if self.base is not None else EMPTY_SEAMS[self.seam]
        tasks = {i: self.tasks[self.order[i]] for i in self.batch.present if self.order[i] in self.tasks}
        return self.serve(self.batch, tasks, plain, *args) if tasks else plain(*args)


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
        self.batch, self.order = MixedBatch(), []
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
        """Load the adapter folder `directory` as task `name` (its tensors only; the backbone is shared).
        Every check runs before anything is installed, so a refused adapter leaves the model as it was."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"task name must be a non-empty string, got {name!r}")
        if name in self._tasks:
            raise ConfigError(f"task {name!r} is already loaded (from {self._tasks[name].directory}); "
                              "remove_adapter it first")
        directory = adapter_folder(directory)           # a folder, or an adapter's Hub id
        meta = read_adapter_meta(directory)
        method = get_method(meta["method"])
        where = f"task {name!r} ({directory}): method {method.name!r}"
        if method.cannot_share:
            raise ConfigError(f"{where} {method.cannot_share}; load it alone with aptune.load_adapter")
        config = self._check_config(name, directory, meta)
        with torch.device("meta"):                      # the task's own modules only; no second backbone
            plain = build_backbone(config)
            skel = apply_method(build_backbone(config), method.name,
                                make_config(method.name, **meta["method_config"]))
        places = self._plan(where, plain, skel)
        self._check_fingerprint(name, directory, meta)
        heads = self._materialise(directory, skel, places)
        self.order.append(name)
        self._install(name, places)
        self.heads[name] = nn.ModuleDict(heads)
        self._tasks[name] = Task(name, directory, method.name, meta, meta.get("class_names"), config.num_classes)
        self.requires_grad_(False).eval()
        return self

    def remove_adapter(self, name: str) -> "MultiTaskModel":
        """Drop task `name` and its tensors; a place no task uses any more gives back its plain module."""
        self.task(name)
        places = [(p, m) for p, m in self.backbone.named_modules() if isinstance(m, Place)]
        for path, place in reversed(places):            # inner places first: their paths run through outer ones
            if name in place.tasks:
                del place.tasks[name]
            if not len(place.tasks):
                parent, _, leaf = path.rpartition(".")
                setattr(_unplace(self.backbone.get_submodule(parent)), leaf, place.base)
        del self.heads[name], self._tasks[name]
        self.order.remove(name)
        return self

    # ---- checks ---------------------------------------------------------------------------------
    def _check_config(self, name: str, directory: Path, meta: dict):
        """The adapter's backbone config (same family and architecture as ours) and clip (same as the other tasks')."""
        family = meta["family"]
        if family != self.backbone.family:
            raise ConfigError(f"task {name!r} ({directory}) was trained on a {family} backbone; this model's "
                              f"backbone is {self.backbone.family}")
        config = config_from_dict(family, meta["backbone"])
        theirs, ours = config.to_dict(), self.backbone.config.to_dict()
        diff = sorted(k for k in set(theirs) | set(ours) if k not in PER_TASK and theirs.get(k) != ours.get(k))
        if diff:
            raise ConfigError(f"task {name!r} ({directory}): backbone config differs in "
                              + ", ".join(f"{k} ({theirs.get(k)!r} vs {ours.get(k)!r} here)" for k in diff))
        clip = meta.get("clip") or {}
        for other in self._tasks.values():
            for key in ("num_frames", "img_size"):
                a, b = clip.get(key), other.clip.get(key)
                if a is not None and b is not None and a != b:
                    raise ConfigError(f"task {name!r} ({directory}) was trained on clips with {key}={a}, task "
                                      f"{other.name!r} ({other.directory}) on {key}={b}: one batch cannot hold both")
        return config

    def _check_fingerprint(self, name: str, directory: Path, meta: dict) -> None:
        """The adapter must have been trained on this backbone's weights (unless allow_other_backbone)."""
        rec = meta.get("backbone_weights") or {}
        if rec.get("fingerprint") and rec["fingerprint"] != self.fingerprint and not self.allow_other_backbone:
            raise CheckpointError(
                f"task {name!r} ({directory}) was trained on the backbone {rec.get('path') or 'a random init'} "
                f"(fingerprint {rec['fingerprint'][:19]}), not on this model's {self.checkpoint or 'random init'} "
                f"(fingerprint {self.fingerprint[:19]}); pass allow_other_backbone=True (--allow-other-backbone) "
                "to use it anyway")

    def _plan(self, where: str, plain, skel) -> dict[str, nn.Module]:
        """{path: the task's module there} for every place where `skel` (the task's model, on meta) differs
        from `plain` (the same backbone without the method); refuses what a shared backbone cannot serve."""
        heads = list(self.head_attrs)
        places = {p: skel.get_submodule(p) for p in changed_modules(plain, skel, heads)}
        unserved = [p for p, mod in places.items() if getattr(type(mod), "mixed_forward", None) is None]
        if unserved:
            kinds = sorted({type(places[p]).__name__ for p in unserved})
            tensors = [f"{p}.{n}" for p in unserved for n, _ in places[p].named_parameters()]
            raise ConfigError(f"{where} puts {', '.join(kinds)} at {_names(unserved)} (trained tensors: "
                              f"{_names(tensors)}), which declare no `mixed_forward` to serve a batch of several "
                              "tasks (methods/registry.py); load it alone with aptune.load_adapter")
        trained, plain_names = skel.tuning.trainable_names, {n for n, _ in plain.named_parameters()}
        loose = [n for n in trained if not _under(n, heads + list(places))]
        if any(n in plain_names for n in loose):
            raise ConfigError(f"{where} trains {_names([n for n in loose if n in plain_names])} in place: they "
                              "are weights of the backbone every task shares; load it alone with aptune.load_adapter")
        if loose:
            raise ConfigError(f"{where} trains {_names(loose)}, which no module with a `mixed_forward` "
                              "(methods/registry.py) and no head holds, so a shared backbone would drop them; "
                              "load it alone with aptune.load_adapter")
        other = other_changes(plain, skel, heads + list(places))
        if other:
            raise ConfigError(f"{where} changes the frozen backbone outside its modules ({'; '.join(other[:4])}), "
                              "which every task shares; load it alone with aptune.load_adapter")
        early = [n for n in trained if _under(n, heads) and n.startswith(skel.stem)]
        if early:
            raise ConfigError(f"{where}: {_names(early)} train before the blocks on this {skel.family} backbone "
                              f"({skel.layout} layout), so it cannot share the embedding with other tasks; load it "
                              "alone with aptune.load_adapter")
        for path, mod in places.items():
            self._check_place(where, path, mod, plain)
        frozen = {n for n, _ in _tensors(plain)}
        unfilled = [f"{p}.{n}" for p in heads + list(places) for n, _ in _tensors(skel.get_submodule(p))
                    if f"{p}.{n}" not in frozen and f"{p}.{n}" not in trained]
        if unfilled:
            raise ConfigError(f"{where} builds {_names(unfilled)}, which are neither in its adapter file nor the "
                              "backbone's, so a shared backbone cannot rebuild them; load it alone with "
                              "aptune.load_adapter")
        return places

    def _check_place(self, where: str, path: str, mod: nn.Module, plain) -> None:
        """The module the task has at `path` can serve the other tasks' rows there too, and mixes with theirs."""
        parent, _, leaf = path.rpartition(".")
        if not isinstance(getattr(plain.get_submodule(parent), leaf, None), nn.Module) and leaf not in EMPTY_SEAMS:
            raise ConfigError(f"{where} puts {type(mod).__name__} at {path}, where the plain backbone has no module "
                              "or seam to serve the other tasks' rows; load it alone with aptune.load_adapter")
        have = self._walk(path)
        if isinstance(have, Place) and have.serve != type(mod).mixed_forward:
            theirs = next(iter(have.tasks.values()))
            raise ConfigError(f"{where} puts {type(mod).__name__} at {path}, where task(s) "
                              f"{', '.join(map(repr, have.tasks))} have {type(theirs).__name__}, served another way; "
                              "one place serves one kind of module; load it alone with aptune.load_adapter")

    # ---- building ---------------------------------------------------------------------------------
    def _materialise(self, directory: Path, skel, places: dict[str, nn.Module]) -> dict:
        """The task's modules (in place) and head modules (returned, by attribute) on the backbone's device:
        the frozen tensors a module keeps (LoRA's W, b) are the shared backbone's, the trained ones come from
        the adapter file."""
        device = next(self.backbone.parameters()).device
        trained = set(skel.tuning.trainable_names)
        heads = {a: getattr(skel, a) for a in self.head_attrs}
        for path, mod in {**places, **heads}.items():
            for rel, t in _tensors(mod):
                full = f"{path}.{rel}"
                if full not in trained:                 # _plan: then the backbone has it
                    _set_tensor(mod, rel, self._shared_tensor(full))
                elif t.is_meta:
                    _set_tensor(mod, rel, _empty_like(t, device))
        fill_adapter(skel, directory / WEIGHTS, skel.tuning.name)
        return heads

    def _walk(self, path: str) -> nn.Module | None:
        """The module at `path` of the shared backbone, looking through places to their plain modules."""
        mod = self.backbone
        for part in filter(None, path.split(".")):
            mod = getattr(_unplace(mod), part, None)
        return mod

    def _shared_tensor(self, name: str) -> torch.Tensor:
        path, _, leaf = name.rpartition(".")
        return getattr(_unplace(self._walk(path)), leaf)

    def _install(self, name: str, places: dict[str, nn.Module]) -> None:
        for path, mod in places.items():
            parent_path, _, leaf = path.rpartition(".")
            parent = _unplace(self._walk(parent_path))
            place = getattr(parent, leaf)
            if not isinstance(place, Place):
                place = Place(self.batch, self.order, type(mod).mixed_forward, place, leaf)
                setattr(parent, leaf, place)
            place.tasks[name] = mod

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
        present = sorted(set(ids.tolist()))
        self.batch.clip_task, self.batch.present = ids.to(video.device), present
        self.batch.num_tasks = len(self.order)
        try:
            pooled = self.backbone.forward_pooled(video)                     # (B, C)
        finally:
            self.batch.clip_task, self.batch.present = None, []
        out: list[torch.Tensor | None] = [None] * video.shape[0]
        for i in present:
            rows = (ids == i).nonzero().flatten().tolist()
            logits = self._head(self.order[i], pooled[rows])
            for r, row in zip(rows, logits):
                out[r] = row
        return out

    def _head(self, name: str, pooled: torch.Tensor) -> torch.Tensor:
        """The task's head on pooled features (n, C): the backbone's own head code, on a view of the
        backbone that holds the task's head modules (swapping them on the shared backbone would race
        between threads)."""
        view = copy.copy(self.backbone)                 # shallow: the same weights and state
        view._modules = {**self.backbone._modules, **self.heads[name]}
        return view.pooled_head(pooled)


# ---- comparing a task's model with the plain backbone ------------------------------------------------
def changed_modules(plain: nn.Module, skel: nn.Module, skip: list[str]) -> list[str]:
    """Paths where `skel` has a module that `plain` has not, or one of another type (outermost only;
    paths under `skip` left out)."""
    theirs = dict(plain.named_modules())
    found: list[str] = []
    for path, mod in skel.named_modules():
        if path and not _under(path, skip + found) and (path not in theirs or type(theirs[path]) is not type(mod)):
            found.append(path)
    return found


def other_changes(plain: nn.Module, skel: nn.Module, skip: list[str]) -> list[str]:
    """What else differs outside `skip`: modules removed, forward hooks added, plain attributes changed."""
    ours, theirs = dict(skel.named_modules()), dict(plain.named_modules())
    out = [f"{p} removed" for p in theirs if p not in ours and not _under(p, skip)]
    for path, mod in ours.items():
        if _under(path, skip):
            continue
        ref, at = theirs[path], path or "the backbone"
        if _hooks(mod) != _hooks(ref):
            out.append(f"forward hooks on {at}")
        mine, plain_attrs = vars(mod), vars(ref)
        out += [f"{at}.{k} = {v!r} (plain: {plain_attrs[k]!r})" for k, v in mine.items()
                if k != "training" and not k.startswith("_") and k in plain_attrs and _simple(v)
                and _simple(plain_attrs[k]) and v != plain_attrs[k]]
    return out


def _hooks(m: nn.Module) -> int:
    return len(m._forward_hooks) + len(m._forward_pre_hooks)


def _simple(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, tuple))


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r + ".") for r in roots)


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def _unplace(mod):
    return mod.base if isinstance(mod, Place) else mod


def _tensors(mod: nn.Module):
    """(name, tensor) of every parameter and buffer of `mod`, by name relative to it."""
    return list(mod.named_parameters(remove_duplicate=False)) + list(mod.named_buffers(remove_duplicate=False))


def _set_tensor(mod: nn.Module, name: str, t: torch.Tensor) -> None:
    path, _, leaf = name.rpartition(".")
    owner = mod.get_submodule(path)
    store = owner._parameters if leaf in owner._parameters else owner._buffers
    store[leaf] = t


def _empty_like(t: torch.Tensor, device) -> torch.Tensor:
    new = torch.empty_like(t, device=device)
    return nn.Parameter(new, requires_grad=False) if isinstance(t, nn.Parameter) else new


def load_adapters(adapters: dict[str, str | os.PathLike], checkpoint: str | os.PathLike | None = None,
                  allow_other_backbone: bool = False, device: str | torch.device = "cpu") -> MultiTaskModel:
    """One backbone (`checkpoint`, default: the file the first adapter records) and every adapter of
    `adapters` ({task name: adapter folder}) on it. Adapters of another backbone, or of clips of
    another size, are errors naming both (`allow_other_backbone=True` accepts other weights)."""
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
    config = replace(config_from_dict(meta["family"], meta["backbone"]), num_classes=0)
    with warnings.catch_warnings():     # the file's classification head is skipped: every task brings its own
        warnings.filterwarnings("ignore", message=".*classification head.*skipped")
        backbone = create_model(config, checkpoint=checkpoint).to(device)
    mt = MultiTaskModel(backbone, checkpoint, allow_other_backbone)
    for name, directory in adapters.items():
        mt.add_adapter(name, directory)
    return mt
