"""FLOPs of one forward pass, measured by running the model (any method, no per-method formulas).

Convention: fvcore's `FlopCountAnalysis` defaults, which the APT paper's GFLOPs use:
one multiply-add counts as ONE FLOP, and only these operations are counted:

    convolution            batch * prod(weight.shape) * prod(output spatial size)   (bias not counted)
    linear / mm / addmm    rows * in_features * out_features                          (bias not counted)
    bmm / matmul / einsum  the multiply-adds of the product
    attention (SDPA)       what fvcore sees in VideoMAE's explicit attention: Q K^T plus A V,
                           i.e. 2 * B * heads * N_q * N_k * head_dim (softmax and scaling not counted)
    layer_norm             5 * numel(input) with affine weights, 4 * numel without (fvcore's rough estimate)

Everything else (GELU, softmax, additions, scaling, mean pooling, concatenation, dropout)
counts zero, as in fvcore. fvcore also counts batch/group/instance norm, upsampling,
adaptive average pooling and grid sampling; our video ViT has none of them, and neither
do the methods, so they are left out here.

The model runs once on fake (shape-only) tensors, so counting ViT-B at 16x224x224 is
instant and needs no real weights: a model built under `torch.device("meta")` works too.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..errors import ConfigError

aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # the CPU fused kernel, which torch's own table does not know; 2 FLOPs per multiply-add there
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _layer_norm_flop(input_shape, normalized_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    # returned in torch's convention (2 per multiply-add) so that halving gives fvcore's 5 or 4 per element
    numel = 1
    for s in input_shape:
        numel *= s
    return 2 * numel * (5 if weight_shape is not None else 4)


_EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    aten.native_layer_norm: _layer_norm_flop,
}

# op packet name -> kind shown in breakdowns
_KINDS = {
    "convolution": "conv", "_convolution": "conv", "mm": "linear", "addmm": "linear",
    "bmm": "matmul", "baddbmm": "matmul", "native_layer_norm": "layer_norm",
}


def _kind(op) -> str:
    name = str(op).split(".")[-1]
    if "scaled_dot_product" in name or "attention" in name:
        return "matmul"      # fused attention on real/fake tensors; on meta it decomposes into bmm anyway
    return _KINDS.get(name, name)


def _resolve_clip(model: nn.Module, num_frames: int | None, img_size: int | None) -> tuple[int, int, int]:
    config = getattr(model, "config", None)
    T = num_frames if num_frames is not None else getattr(config, "num_frames", 16)
    S = img_size if img_size is not None else getattr(config, "img_size", 224)
    C = getattr(config, "in_chans", 3)
    for name, v in (("num_frames", T), ("img_size", S)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"count_flops: {name} must be a positive integer, got {v!r}")
    return C, T, S


def flop_breakdown(model: nn.Module, num_frames: int | None = None, img_size: int | None = None,
                   batch_size: int = 1) -> dict[str, float]:
    """Multiply-adds per view (fvcore convention, see the module docstring), split by kind of
    operation: {"conv", "linear", "matmul", "layer_norm"} -> FLOPs (not GFLOPs); "matmul" holds the
    attention products (Q K^T, A V) and any other batched product a method adds.

    Runs `model` once in eval mode, without autograd, on a fake input of shape
    (batch_size, in_chans, num_frames, img_size, img_size); None takes the model's configured
    clip size. The model's train/eval state is restored afterwards.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"count_flops: batch_size must be a positive integer, got {batch_size!r}")
    C, T, S = _resolve_clip(model, num_frames, img_size)
    params = list(model.parameters()) + list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if device.type == "meta":
                x = torch.empty(batch_size, C, T, S, S, device="meta")       # (B, C, T, H, W), no data
            else:
                # real weights are wrapped as fake tensors on the fly: nothing is computed
                stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
                x = torch.empty(batch_size, C, T, S, S, device=device)
            counter = stack.enter_context(FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS))
            model(x)
        counts = counter.get_flop_counts().get("Global", {})
    finally:
        model.train(was_training)
    out: dict[str, float] = defaultdict(float)
    for op, flops in counts.items():
        out[_kind(op)] += flops / 2 / batch_size     # torch counts 2 per multiply-add; per view
    return dict(out)


def count_flops(model: nn.Module, num_frames: int | None = None, img_size: int | None = None,
                batch_size: int = 1) -> float:
    """GFLOPs of one forward pass per view, in fvcore's convention (one multiply-add = one FLOP;
    convolutions, matrix products, attention and LayerNorm counted; see aptune.profiling.flops).

    num_frames / img_size default to the model's configured clip (16 x 224 x 224 for the VideoMAE
    zoo models). The model runs once on fake tensors, so this is instant for any size and works
    for models built on the meta device. Works for every registered method, since it measures.
    """
    return sum(flop_breakdown(model, num_frames, img_size, batch_size).values()) / 1e9
