"""The whole model as a torch.export program (`.pt2`): `torch.export.load(FILE).module()(video)` gives
the logits, with no aptune installed; the batch dimension is dynamic. The description of
`common.describe` is its extra file `aptune.json`:

    extra = {"aptune.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    logits = program.module()(video)                 # (batch, 3, T, S, S) -> (batch, num_classes)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError
from .common import Exported, batch_dim, check_logits, describe_json, example_clip, prepare, quiet, reference, staged

EXTRA = "aptune.json"


def export_program(model, path: str | os.PathLike) -> Exported:
    """Write `model` to `path` as a torch.export program, after the program loaded back from the file
    reproduced aptune's logits on a batch of another size than the traced one."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"{path}: a torch.export program is a .pt2 file (torch.export.load wants the suffix)")
    model = prepare(model)
    want_x, want = reference(model)
    with torch.no_grad(), quiet():
        program = torch.export.export(model, (example_clip(model, 2),), dynamic_shapes=({0: batch_dim()},))
    with staged(path) as tmp:
        torch.export.save(program, tmp / path.name, extra_files={EXTRA: describe_json(model)})
        with torch.no_grad():
            got = torch.export.load(tmp / path.name).module()(want_x)
        check = check_logits(want, got, "torch.export.load")
    return Exported("torch", [path], check, [f"load with torch.export.load({str(path)!r}).module()"])
