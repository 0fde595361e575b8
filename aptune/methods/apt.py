"""Attention Prompt Tuning (Bandara & Patel, arXiv 2403.06978).

Per prompted block: key prompts Pk and value prompts Pv, each (m, head_dim), shared by all
heads and all samples, joined to the frozen block's keys and values: K' = [K; Pk], V' = [V; Pv].
Queries are unchanged, so each block still outputs N tokens. With reparameterisation a scale
s (2, m), initialised to 1, gives the prompts used: Pk * max(s_k, 1) and Pv * max(s_v, 1)
(`torch.maximum`, as the authors: at s = 1 the gradient is split between the two branches).
Prompt dropout is one mask for the whole batch, as in the authors' code.
Init: uniform(-a, a), a = sqrt(6 / (3 * p * p + head_dim)). The scales are never weight-decayed.
Trains: the prompts, the scales and the backbone's head modules (VideoMAE: fc_norm, head).
Many tasks on one backbone: each sequence gets its task's prompts, padded and masked (`mixed_forward`).
Parameters per block: m * (2 * head_dim + 2) with reparameterisation, m * 2 * head_dim without.

This file also reads the authors' training checkpoints (format `apt-official`): `model` holds the
backbone, `head_norm.*` (their name for fc_norm), `head.*`, `prompt_embeddings_k`/`_v` of shape
(blocks prompted, m, head_dim) and, with reparameterisation, `prompt_scale` (blocks prompted, 2, m);
`args` (an argparse Namespace) holds prompt_start / prompt_end / prompt_num_tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..models.checkpoints import Converted, Source, register_format
from ..models.layers import uniform_prompt_bound
from ..models.videomae.formats import add_native, convert_native, infer_hints
from .registry import check_int, check_layers, check_prob, register, resolve_layers


@dataclass
class APTConfig:
    num_prompts: int = 200
    layers: list[int] | None = None   # block indices (a contiguous range); None = all blocks
    reparam: bool = True
    prompt_dropout: float = 0.1

    def __post_init__(self):
        check_int("apt", "num_prompts", self.num_prompts, 0)
        check_prob("apt", "prompt_dropout", self.prompt_dropout)
        check_layers("apt", self.layers)


class KVPrompts(nn.Module):
    """The key/value prompts of one block (kv_prompts seam): layout -> (k, v), each (m, head_dim)."""

    def __init__(self, num_prompts: int, head_dim: int, bound: float, reparam: bool, dropout: float):
        super().__init__()
        self.key = nn.Parameter(torch.empty(num_prompts, head_dim).uniform_(-bound, bound))
        self.value = nn.Parameter(torch.empty(num_prompts, head_dim).uniform_(-bound, bound))
        self.scale = nn.Parameter(torch.ones(2, num_prompts)) if reparam else None
        self.dropout = nn.Dropout(dropout)

    def no_weight_decay(self) -> set[str]:
        return {"scale"}

    def forward(self, layout=None) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.dropout(self.key), self.dropout(self.value)          # (m, hd), one mask for the batch
        if self.scale is not None:
            s = torch.maximum(self.scale, torch.ones_like(self.scale))  # (2, m)
            k, v = k * s[0, :, None], v * s[1, :, None]
        return k, v

    @staticmethod
    def mixed_forward(batch, tasks: dict, plain, layout):
        """A mixed batch (methods/registry.py): each sequence gets its own task's prompts, padded to the
        batch's longest m; the mask keeps the padding out of the softmax. -> K, V (S, 1, M, hd), mask (S, M)."""
        kvs = {i: mod(layout) for i, mod in tasks.items()}                 # i -> (k (m, hd), v (m, hd))
        k0 = next(iter(kvs.values()))[0]
        M = max(k.shape[0] for k, _ in kvs.values())
        K, V = k0.new_zeros(2, batch.num_tasks, M, k0.shape[1])            # one row per task index
        valid = torch.zeros(batch.num_tasks, M, dtype=torch.bool, device=k0.device)
        for i, (k, v) in kvs.items():
            K[i, :k.shape[0]], V[i, :k.shape[0]], valid[i, :k.shape[0]] = k, v, True
        B = batch.clip_task.shape[0]
        ids = batch.ids(B * layout.frames if layout.folded else B)         # (S,)
        return K[ids][:, None], V[ids][:, None], valid[ids]

    def extra_repr(self) -> str:
        return f"num_prompts={self.key.shape[0]}, head_dim={self.key.shape[1]}, reparam={self.scale is not None}"


@register("apt", APTConfig, "Attention Prompt Tuning: learnable key/value prompts in every attention block")
def apply(model, cfg: APTConfig) -> list[nn.Module]:
    layers = resolve_layers(cfg.layers, model.depth, "apt", contiguous=True)
    bound = uniform_prompt_bound(model.patch_size, model.head_dim, model.in_chans)
    added = []
    for i in layers:
        blk = model.blocks[i]
        blk.kv_prompts = KVPrompts(cfg.num_prompts, model.head_dim, bound, cfg.reparam, cfg.prompt_dropout)
        added.append(blk.kv_prompts)
    return added


# ---- the authors' checkpoints --------------------------------------------------------------------
def _official_prompts(state: dict, source: Source):
    """(k, v, scale or None, first block, last block, notes): the prompts of an official file, checked
    against each other and against its `args` (prompt_start, prompt_end, prompt_num_tokens, prompt_reparam)."""
    pk, pv = state["prompt_embeddings_k"], state.get("prompt_embeddings_v")
    ps = state.get("prompt_scale")
    if pv is None or pv.shape != pk.shape or pk.ndim != 3:
        raise CheckpointError(f"apt-official: prompt_embeddings_k {tuple(pk.shape)} and prompt_embeddings_v "
                              f"{None if pv is None else tuple(pv.shape)} must both be (blocks prompted, m, head_dim)")
    n_blocks, m, _ = pk.shape
    if ps is not None and tuple(ps.shape) != (n_blocks, 2, m):
        raise CheckpointError(f"apt-official: prompt_scale has shape {tuple(ps.shape)}, expected {(n_blocks, 2, m)} "
                              "(blocks prompted, 2, m)")
    args = source.extras.get("args")
    notes = []
    start, end = getattr(args, "prompt_start", None), getattr(args, "prompt_end", None)
    if start is None:
        start = 0
        notes.append("apt-official: no args.prompt_start in the checkpoint; prompts assumed to start at block 0")
    if end is None:
        end = start + n_blocks - 1
    if end - start + 1 != n_blocks:
        raise CheckpointError(f"apt-official: args.prompt_start={start}, prompt_end={end} give {end - start + 1} "
                              f"blocks but prompt_embeddings_k holds {n_blocks}")
    m_args = getattr(args, "prompt_num_tokens", m)
    if m_args != m:
        raise CheckpointError(f"apt-official: args.prompt_num_tokens={m_args} but the prompts hold {m} tokens")
    reparam_args = getattr(args, "prompt_reparam", ps is not None)
    if bool(reparam_args) != (ps is not None):
        raise CheckpointError(f"apt-official: args.prompt_reparam={reparam_args} but prompt_scale is "
                              f"{'absent' if ps is None else 'present'}")
    return pk, pv, ps, start, end, notes


def _convert_official(state: dict, source: Source) -> Converted:
    pk, pv, ps, start, end, notes = _official_prompts(state, source)
    n_blocks, m, _ = pk.shape
    rest = {k: v for k, v in state.items() if not k.startswith(("prompt_", "head_norm."))}
    out = convert_native(rest, source, "apt-official")
    out.notes[:0] = notes
    out.unknown += [k for k in state if k.startswith("prompt_")
                    and k not in ("prompt_embeddings_k", "prompt_embeddings_v", "prompt_scale")]
    for k, v in state.items():
        if k.startswith("head_norm."):
            add_native("fc_norm." + k[len("head_norm."):], v, out)
    for j in range(n_blocks):
        prefix = f"blocks.{start + j}.kv_prompts."
        out.state[prefix + "key"] = pk[j]                  # (m, head_dim)
        out.state[prefix + "value"] = pv[j]
        if ps is not None:
            out.state[prefix + "scale"] = ps[j]            # (2, m)
    out.hints = infer_hints(out.state)
    out.info["apt"] = {"num_prompts": int(m), "layers": f"{start}..{end}", "reparam": ps is not None}
    out.check = _official_check(int(m), int(start), int(end), ps is not None)
    return out


def _official_check(m: int, start: int, end: int, reparam: bool):
    """`Converted.check` of an official file: the model must have APT with these prompts, in these blocks."""
    layers = list(range(start, end + 1))
    want = f"method='apt', num_prompts={m}, layers=list(range({start}, {end + 1})), reparam={reparam}"

    def check(model, src: str) -> None:
        tuning = model.tuning
        if tuning is None or tuning.method.apply is not apply:
            raise CheckpointError(f"{src}: an official APT checkpoint (prompts in blocks {start}..{end}) needs a "
                                  f"model with the APT method; this one has method="
                                  f"{tuning.name if tuning else None!r}. Use create_model(..., {want})")
        have_layers = sorted(i for i, b in enumerate(model.blocks) if isinstance(b.kv_prompts, KVPrompts))
        for option, have, ckpt, where in [("num_prompts", tuning.config.num_prompts, m, "args.prompt_num_tokens"),
                                          ("layers", have_layers, layers, "args.prompt_start..prompt_end"),
                                          ("reparam", tuning.config.reparam, reparam, "prompt_scale present")]:
            if have != ckpt:
                raise CheckpointError(f"{src}: apt.{option} is {have} in the model but {ckpt} in the checkpoint "
                                      f"({where}); use create_model(..., {want})")

    return check


register_format("apt-official", "official APT training checkpoint (model: backbone + head_norm + head + "
                "prompt_embeddings_k/v [+ prompt_scale]; args: prompt_start/prompt_end)",
                lambda state, source: "prompt_embeddings_k" in state, _convert_official, priority=10)
