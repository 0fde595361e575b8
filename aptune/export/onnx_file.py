"""The whole model (backbone + method + head) as one ONNX file, checked with onnxruntime.

    input  "video"   float32 (batch, 3, T, S, S), normalised clips; batch is dynamic
    output "logits"  float32 (batch, num_classes)

Traced by torch.export (`torch.onnx.export(..., dynamo=True)`), which needs no special case for
`scaled_dot_product_attention` (decomposed into MatMul/Softmax), for prompts joined to keys and
values, or for prompt tokens. The description of `common.describe` (class names, normalisation) is the
model's metadata property `aptune`. Models over 2 GB keep their weights in `FILE.data` beside it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .common import (
    INPUT,
    OUTPUT,
    Exported,
    batch_dim,
    check_logits,
    describe_json,
    example_clip,
    prepare,
    quiet,
    reference,
    require,
    staged,
)


def export_onnx(model, path: str | os.PathLike, opset: int | None = None) -> Exported:
    """Write `model` to `path` as ONNX, after onnxruntime reproduced aptune's logits on a batch of another
    size than the traced one."""
    require("onnx")
    require("onnxscript")
    ort = require("onnxruntime")
    path = Path(path)
    model = prepare(model)
    want_x, want = reference(model)
    with torch.no_grad(), quiet():
        program = torch.onnx.export(model, (example_clip(model, 2),), dynamo=True, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=({0: batch_dim()},),
                                    opset_version=opset, optimize=True, verbose=False)
    program.model.metadata_props["aptune"] = describe_json(model)
    with staged(path) as tmp:
        program.save(tmp / path.name)
        session = ort.InferenceSession(str(tmp / path.name), providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT], {INPUT: want_x.numpy()})[0]
        check = check_logits(want, got, "onnxruntime")
        written = [path.parent / f.name for f in tmp.iterdir()]
    opset_used = next((v for d, v in program.model.opset_imports.items() if d == ""), None)
    return Exported("onnx", sorted(written, key=lambda p: p != path), check,
                    [f"ONNX opset {opset_used}, input {INPUT!r} (batch, ...), output {OUTPUT!r}"])
