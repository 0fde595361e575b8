"""Out of aptune: a trained adapter (with its backbone) as a file other tools run.

    export_adapter("runs/ucf101/adapter", "onnx", "ucf101.onnx", checkpoint="videomae_vit_b.pth")
    export_model(model, "torch", "ucf101.pt2")

Formats (FORMATS): "onnx" (onnx_file.py: any method, checked with onnxruntime), "torch" (program.py: a
torch.export program, any method), "hf" (hf.py: a transformers VideoMAEForVideoClassification folder,
for what transformers can represent). Every export is checked against aptune's own logits before
its files are put in place. The exporters are imported only when used: `import aptune` stays light.
"""
from __future__ import annotations

import os

from ..adapters import load_adapter
from ..errors import UnknownNameError
from .common import Exported
from .hf import export_hf
from .onnx_file import export_onnx
from .program import export_program

FORMATS = {"onnx": "ONNX file (onnxruntime and other ONNX runtimes)", "torch": "torch.export program (.pt2)",
           "hf": "transformers VideoMAEForVideoClassification folder"}


def export_model(model, format: str, out: str | os.PathLike, opset: int | None = None) -> Exported:
    """Export `model` (a Backbone with its method, in place: LoRA is merged for "hf") to `out`."""
    if format == "onnx":
        return export_onnx(model, out, opset=opset)
    if format == "torch":
        return export_program(model, out)
    if format == "hf":
        return export_hf(model, out)
    raise UnknownNameError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")


def export_adapter(directory: str | os.PathLike, format: str, out: str | os.PathLike,
                   checkpoint: str | os.PathLike | None = None, allow_random_backbone: bool = False,
                   allow_other_backbone: bool = False, opset: int | None = None) -> Exported:
    """Load the adapter folder `directory` on its backbone (`checkpoint`, default: the one it records)
    and export the whole model."""
    if format not in FORMATS:
        raise UnknownNameError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    model = load_adapter(directory, checkpoint=checkpoint, allow_random_backbone=allow_random_backbone,
                         allow_other_backbone=allow_other_backbone)
    return export_model(model, format, out, opset=opset)


__all__ = ["FORMATS", "Exported", "export_adapter", "export_model"]
