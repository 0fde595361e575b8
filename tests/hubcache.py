"""Lay out a Hugging Face Hub cache on disk as huggingface_hub documents it (no network):

    <cache>/models--ORG--NAME/blobs/<sha256 of the content>
                              snapshots/<commit>/<file>  -> ../../blobs/<sha256>   (relative symlinks)
                              refs/<branch or tag>       the commit hash, no newline
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def put(cache: Path, repo: str, files: dict[str, Path | bytes | str], refs: tuple[str, ...] = ("main",),
        commit: str | None = None) -> str:
    """Store `files` (name -> a file to copy, bytes or text) as one commit of `repo`; every ref in `refs`
    points at it. Returns the commit hash."""
    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    data = {n: c.read_bytes() if isinstance(c, Path) else c.encode() if isinstance(c, str) else c
            for n, c in files.items()}
    commit = commit or hashlib.sha1(repo.encode() + b"".join(data[n] for n in sorted(data))).hexdigest()
    snap = root / "snapshots" / commit
    for name, content in data.items():
        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return commit


def folder_files(folder: Path) -> dict[str, Path]:
    """Every file of a saved model folder, by its name relative to the folder."""
    return {str(p.relative_to(folder)): p for p in Path(folder).rglob("*") if p.is_file()}
