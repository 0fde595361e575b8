"""Adapter folders on disk: `adapter.safetensors` (only what trains) + `adapter.json` (how to rebuild it),
and with `save_pretrained` (PEFT's name) a model card, README.md (model_card.py); `push_to_hub` uploads a
folder with huggingface_hub. Writing and reading the folder needs no model code (a model is read through
its `tuning`, `config` and `family`), so the backbone's own save_pretrained can use it; rebuilding a model
from a folder (`load_adapter`, `from_pretrained`) is adapters.py.

adapter.json records what the adapter needs to mean anything:
  family, backbone        the backbone family and its config
  method, method_config   the tuning method and its options
  backbone_weights        the weights it was trained on: `path` as given and `resolved` (absolute),
                          for a Hugging Face Hub id also `hub` (id, revision asked, commit used),
                          `size` in bytes, `fingerprint` (sha256 over the frozen tensors as loaded, so the
                          same weights in another file format match) and, for a backbone that was a
                          seeded random init, `random_seed`
  clip                    how its clips looked: num_frames, img_size, sampling, sampling_rate, mean, std
  class_names             label names (or null)
A method that trains the whole model (`full_state`) needs no backbone: every weight is in the file.

"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError, MissingFileError
from .hub import is_hub_id, resolve
from .hub import record as hub_record
from .io import atomic_path, write_json
from .model_card import CARD, write_card

ADAPTER_FORMAT = "aptune-adapter"
ADAPTER_VERSION = 2     # 2: family, backbone_weights, clip (version 1 files are VideoMAE, without them)
META, WEIGHTS = "adapter.json", "adapter.safetensors"

def adapter_state(model) -> dict[str, torch.Tensor]:
    """Exactly what the method trains (its parameters and the head modules), by parameter name."""
    if model.tuning is None:
        raise ConfigError("model has no method applied; nothing to save as an adapter")
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in model.tuning.trainable_names}


def backbone_fingerprint(model, skip: set[str] | None = None) -> str:
    """sha256 over the frozen tensors (name, shape, float32 bytes), sorted by name: the same weights
    give the same fingerprint whatever file format they came from. `skip`: names to leave out (default:
    what the model's method trains)."""
    trainable = set(model.tuning.trainable_names) if model.tuning is not None else set()
    trainable |= skip or set()
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        if name in trainable:
            continue
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()


def backbone_record(model, path=None, random_seed: int | None = None) -> dict:
    """The `backbone_weights` entry for `model` loaded from `path` (None: a random init with `random_seed`)."""
    rec = {"path": None if path is None else os.fspath(path), "resolved": None, "size": None,
           "fingerprint": backbone_fingerprint(model), "random_seed": random_seed}
    if path is not None:
        p = Path(resolve(path))
        rec["resolved"] = str(p.resolve())
        rec["size"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        hub = hub_record(path)
        if hub is not None:
            rec["hub"] = hub
    return rec


def clip_record(model, sampling: str | None = None, sampling_rate: int | None = None, num_frames=None,
                img_size=None) -> dict:
    """The `clip` entry: the clip shape and normalisation the adapter was trained with."""
    c = model.config
    return {"num_frames": num_frames or c.num_frames, "img_size": img_size or c.img_size, "sampling": sampling,
            "sampling_rate": sampling_rate, "mean": list(c.mean), "std": list(c.std)}


def save_adapter(model, directory: str | os.PathLike, class_names: list[str] | None = None,
                 extra: dict | None = None, backbone: dict | None = None, clip: dict | None = None) -> Path:
    """Write adapter.safetensors (only what trains) and adapter.json (how to rebuild the model).
    `backbone`: its `backbone_record` (default: `model.backbone_record`, set when training or loading);
    `clip`: its `clip_record` (default: the model's configured clip)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = adapter_state(model)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())             # safetensors creates the file 0600
    full = model.tuning.method.full_state
    if full:
        record = None
    else:
        record = backbone or getattr(model, "backbone_record", None) or backbone_record(
            model, getattr(model, "checkpoint_path", None), getattr(model, "random_seed", None))
    meta = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "family": model.family,
            "backbone": model.config.to_dict(), "method": model.tuning.name,
            "method_config": asdict(model.tuning.config), "backbone_weights": record,
            "clip": clip or clip_record(model),
            "class_names": class_names if class_names is not None else getattr(model, "class_names", None),
            **(extra or {})}
    write_json(directory / META, meta)
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def adapter_folder(ref: str | os.PathLike) -> Path:
    """The local folder of an adapter: `ref` itself, or the cached snapshot of an adapter's Hub id."""
    return Path(resolve(ref)) if is_hub_id(ref) else Path(ref)


def read_adapter_meta(directory: str | os.PathLike) -> dict:
    """adapter.json of an adapter folder (or Hub id), checked; errors name the file."""
    directory = adapter_folder(directory)
    meta_path, weights_path = directory / META, directory / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.exists():
            raise MissingFileError(f"{p} not found: not an aptune adapter folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: field 'format' is {got!r}, expected {ADAPTER_FORMAT!r}")
    for key in ("backbone", "method", "method_config"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: field {key!r} is missing")
    _check_class_names(meta_path, meta)
    meta["family"] = adapter_family(meta)
    return meta


def adapter_family(meta: dict) -> str:
    """The backbone family adapter.json names; version 1 files (before image backbones) are VideoMAE's.
    `read_adapter_meta` fills it in, so what reads its result finds meta["family"]."""
    return meta.get("family", "videomae")


def _check_class_names(meta_path: Path, meta: dict) -> None:
    """class_names, when recorded, are one string per class of the head (backbone.num_classes)."""
    names, backbone = meta.get("class_names"), meta["backbone"]
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{meta_path}: field 'class_names' must be a list of strings or null")
    classes = backbone.get("num_classes") if isinstance(backbone, dict) else None
    if isinstance(classes, int) and len(names) != classes:
        raise CheckpointError(f"{meta_path}: {len(names)} class_names for a head of {classes} classes "
                              "(backbone.num_classes); fix the list or set it to null")


def recorded_backbone(meta: dict) -> str | None:
    """The recorded backbone if it is there (as given, else its absolute path), else, for one taken from
    the Hub, that id at the recorded commit (fetched through the cache: errors say what to do); else None."""
    rec = meta.get("backbone_weights") or {}
    for p in (rec.get("path"), rec.get("resolved")):
        if p and os.path.exists(p):
            return p
    hub = rec.get("hub")
    if hub:
        pinned = f"{hub['id']}@{hub.get('commit') or hub.get('revision') or 'main'}"
        resolve(pinned)
        return pinned
    return None


def read_weights(path: Path) -> dict:
    """adapter.safetensors; a file that is not one is a CheckpointError naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


# ---- PEFT's words: save_pretrained / push_to_hub ---------------------------------------------------
def save_pretrained(model, directory: str | os.PathLike, class_names: list[str] | None = None,
                    extra: dict | None = None, backbone: dict | None = None, clip: dict | None = None) -> Path:
    """The adapter folder (`save_adapter`) plus its model card, README.md (model_card.py). `extra` may
    hold `training` (command, data, resolved config), `val`, `test` and `global_step`: the card shows them."""
    saved = sum(t.numel() for t in adapter_state(model).values())
    extra = {"parameters": {"trainable": saved, "total": sum(p.numel() for p in model.parameters())}, **(extra or {})}
    directory = save_adapter(model, directory, class_names, extra, backbone, clip)
    write_card(directory, read_adapter_meta(directory))
    return directory


def record_results(directory: str | os.PathLike, **results) -> dict:
    """Add results to adapter.json (e.g. `test` metrics after training) and re-render the card."""
    directory = Path(directory)
    meta = {**read_adapter_meta(directory), **results}
    write_json(directory / META, meta)
    write_card(directory, meta)
    return meta


def push_to_hub(directory: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str | None = None) -> str:
    """Upload an adapter folder (adapter.json, adapter.safetensors, README.md) to the Hub repository
    `repo_id`, creating it if needed, with huggingface_hub's HfApi; returns the commit URL. Thin by design:
    authentication, endpoints and retries are huggingface_hub's (HF_TOKEN, HF_ENDPOINT)."""
    # huggingface_hub: imported when used, as in hub.py (it adds about 0.3 s to every command's start)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    directory = Path(directory)
    meta = read_adapter_meta(directory)
    if not (directory / CARD).exists():
        write_card(directory, meta)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(directory), repo_id=repo_id, allow_patterns=[META, WEIGHTS, CARD],
                                 commit_message=commit_message or f"aptune {meta['method']} adapter")
    except OfflineModeIsEnabled:
        raise MissingFileError(f"{directory}: cannot push to {repo_id}: HF_HUB_OFFLINE=1 forbids network access; "
                               "unset it (and log in: `hf auth login` or HF_TOKEN)") from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"{directory}: the Hub refused the push to {repo_id}: {str(e).splitlines()[0]}") from None
    return str(getattr(info, "commit_url", info))
