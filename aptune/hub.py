"""Hugging Face Hub ids wherever aptune takes a checkpoint or adapter path.

    resolve("MCG-NJU/videomae-base")             -> the cached snapshot folder (downloaded if missing)
    resolve("MCG-NJU/videomae-base@<revision>")  -> a branch, tag or commit of it
    resolve("runs/x/adapter")                    -> itself: a local path that exists always wins

An id is `namespace/name[@revision]` given as a string (a `Path` is always a path, as in
huggingface_hub). What is fetched depends on the repository: a model (`config.json`, the optional
`preprocessor_config.json`, then the first of `model.safetensors`, its sharded index,
`pytorch_model.bin`, its index, already cached ones first) or an aptune adapter (`adapter.json`,
`adapter.safetensors`, the optional `README.md`). Everything goes through huggingface_hub's own
cache, so `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_TOKEN` and `HF_ENDPOINT` mean what they
mean there; its errors become one line naming the id and what to do. huggingface_hub is imported
only when an id is used (it adds about 0.4 s to every command's start otherwise).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import CheckpointError, MissingFileError

MODEL_FILE, ADAPTER_FILE = "config.json", "adapter.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
OPTIONAL = {MODEL_FILE: ("preprocessor_config.json",), ADAPTER_FILE: ("README.md",)}
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[^@\s]+))?$")


def parse_id(ref) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `ref` is a string of the form namespace/name[@revision] that
    huggingface_hub accepts as a repo id; else None. Says nothing about whether it exists."""
    if not isinstance(ref, str):
        return None
    m = _ID.match(ref)
    if m is None:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(m.group("repo"))
    except HFValidationError:
        return None
    return m.group("repo"), m.group("rev")


def is_hub_id(ref) -> bool:
    """A reference that is not an existing local path but reads as a Hub id."""
    return ref is not None and not os.path.exists(ref) and parse_id(ref) is not None


def resolve(ref: str | os.PathLike) -> str:
    """The local path `ref` names: itself if it exists, else the cached snapshot of the Hub id (see the
    module docstring). A missing path that is no Hub id raises MissingFileError naming it."""
    if os.path.exists(ref):
        return os.fspath(ref)
    parsed = parse_id(ref)
    if parsed is None:
        raise MissingFileError(f"checkpoint not found: {os.fspath(ref)}")
    namespace = parsed[0].split("/")[0]
    if os.path.isdir(namespace):       # runs/typo: a local path with a mistake, not a Hub id (no network call)
        raise MissingFileError(f"checkpoint not found: {ref} (read as a local path, since the folder {namespace}/ "
                               "is here; a Hub id of that name needs another working directory)")
    return snapshot(*parsed)


def snapshot(repo: str, revision: str | None = None) -> str:
    """Fetch what aptune reads of `repo` at `revision` into the cache; returns the snapshot folder."""
    ref = repo + (f"@{revision}" if revision else "")
    for marker in (MODEL_FILE, ADAPTER_FILE):
        path = _fetch(ref, repo, revision, marker, missing_ok=True)
        if path is not None:
            break
    else:
        raise MissingFileError(f"{ref}: the Hub repository has neither {MODEL_FILE} (a model) nor {ADAPTER_FILE} "
                               "(an aptune adapter)")
    folder = Path(path).parent
    for name in OPTIONAL[marker]:
        _fetch(ref, repo, revision, name, missing_ok=True)
    if marker == ADAPTER_FILE:
        _fetch(ref, repo, revision, "adapter.safetensors")
    else:
        _fetch_weights(ref, repo, revision, folder)
    return str(folder)


def _fetch_weights(ref: str, repo: str, revision: str | None, folder: Path) -> None:
    from huggingface_hub import try_to_load_from_cache
    cached = [n for n in WEIGHTS if isinstance(try_to_load_from_cache(repo, n, revision=folder.name), str)]
    for name in cached + [n for n in WEIGHTS if n not in cached]:      # what is cached first: no second download
        path = _fetch(ref, repo, revision, name, missing_ok=True)
        if path is None:
            continue
        if name.endswith(".index.json"):
            for shard in sorted(set(json.loads(Path(path).read_text())["weight_map"].values())):
                _fetch(ref, repo, revision, shard)
        return
    raise MissingFileError(f"{ref}: the Hub repository has {MODEL_FILE} but none of {', '.join(WEIGHTS)}"
                           + ("" if not _offline() else " in the cache (HF_HUB_OFFLINE=1)"))


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _fetch(ref: str, repo: str, revision: str | None, name: str, missing_ok: bool = False) -> str | None:
    """hf_hub_download of one file; None when it is not in the repository (or, offline, not cached) and
    `missing_ok`; any other failure is one line naming `ref`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    try:
        return hf_hub_download(repo, name, revision=revision)
    except LocalEntryNotFoundError:
        if missing_ok and _is_cached(repo, revision):
            return None                          # the snapshot is here, this file is not: absent or not needed
        raise MissingFileError(_not_cached(ref, repo, revision)) from None
    except GatedRepoError:
        raise MissingFileError(f"{ref}: the Hub repository is gated; accept its terms on huggingface.co and log in "
                               "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise MissingFileError(f"{ref}: neither a local path nor a Hub repository you can access (not found, or "
                               "private: log in with `hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise MissingFileError(f"{ref}: the Hub repository {repo} has no revision {revision!r}") from None
    except EntryNotFoundError:
        if missing_ok:
            return None
        raise MissingFileError(f"{ref}: the Hub repository has no file {name}") from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"{ref}: the Hub refused {name}: {str(e).splitlines()[0]}") from None


def _is_cached(repo: str, revision: str | None) -> bool:
    """Whether the cache holds a snapshot of `repo` at `revision` (a commit, or a ref such as main)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name
    root = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    rev = revision or "main"
    ref_file = root / "refs" / rev
    commit = ref_file.read_text().strip() if ref_file.is_file() else rev
    return (root / "snapshots" / commit).is_dir()


def _not_cached(ref: str, repo: str, revision: str | None) -> str:
    from huggingface_hub import constants
    offline = _offline()
    why = "HF_HUB_OFFLINE=1 forbids downloading" if offline else "the Hub could not be reached"
    get = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
    return (f"{ref}: not a local path, and this Hugging Face Hub model is not in the cache "
            f"({constants.HF_HUB_CACHE}) while {why}; run `{get}` where there is network"
            + (" (or this command without HF_HUB_OFFLINE)" if offline else "")
            + ", point HF_HOME at a cache that holds it, or pass a local path")


def commit_of(folder: str | os.PathLike) -> str | None:
    """The commit hash of a cached snapshot folder (`.../snapshots/<commit>`), else None."""
    p = Path(folder)
    return p.name if p.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", p.name) else None


def record(ref) -> dict | None:
    """{"id", "revision", "commit"} for a Hub id (resolved through the cache), else None."""
    if not is_hub_id(ref):
        return None
    repo, revision = parse_id(ref)
    return {"id": repo, "revision": revision or "main", "commit": commit_of(resolve(ref))}
