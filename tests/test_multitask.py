"""Many tasks on one frozen backbone (aptune.multitask): mixed batches equal each task's own model, over
every registered method (each is served exactly or refused by its own declaration) and toy methods."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import aptune
from aptune.errors import CheckpointError, ConfigError, UnknownNameError
from aptune.methods import get_method, register, serve_rows, unregister
from aptune.models.layers import Attention
from aptune.multitask import load_adapters

# (task, method, options, classes) on the tiny backbones (4 blocks): APT of two lengths on different
# block ranges, VPT deep and shallow, AdaptFormer, LoRA on two targets, Approximated PT, ST-Adapter,
# linear probing
TASKS = [
    ("apt4", "apt", {"num_prompts": 4}, 3),
    ("apt7_mid", "apt", {"num_prompts": 7, "layers": [1, 2], "reparam": False}, 5),
    ("vpt_deep", "vpt", {"num_prompts": 3}, 4),
    ("vpt_shallow", "vpt", {"num_prompts": 5, "deep": False, "layers": [1, 2, 3]}, 2),
    ("adaptformer", "adaptformer", {"bottleneck": 8}, 6),
    ("lora", "lora", {"rank": 4, "targets": ["qkv", "fc1"], "layers": [0, 2]}, 3),
    ("approx", "approx_prompt", {"num_prompts": 6, "rank": 2}, 4),
    ("st", "st_adapter", {"width": 8, "pre_attn": True}, 5),
    ("linear", "linear", {}, 7),
]
# small options for the registered methods on the tiny backbones (a method not listed runs its defaults)
SMALL = {"apt": {"num_prompts": 5}, "vpt": {"num_prompts": 4}, "adaptformer": {"bottleneck": 8},
         "approx_prompt": {"num_prompts": 6, "rank": 2}, "st_adapter": {"width": 8, "pre_attn": True},
         "lora": {"rank": 2, "targets": ["qkv", "proj", "fc1", "fc2"]}}
MODELS = ("tiny", "tiny-clip")      # the joint (VideoMAE) and the frames (CLIP) layout


def backbone_file(path, model="tiny", seed=0):
    torch.manual_seed(seed)
    net = aptune.create_model(model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file(net.state_dict(), str(path))
    return path


def make_adapter(directory, backbone, method, options, classes, model="tiny", seed=0, **create):
    """An adapter whose every tensor is random (so zero-init branches such as LoRA's B count too)."""
    torch.manual_seed(seed)
    net = aptune.create_model(model, num_classes=classes, checkpoint=backbone, method=method, **options, **create)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if n.endswith(("scale", "gain")) else 0.0))
    aptune.save_adapter(net, directory, class_names=[f"{directory.name}-{i}" for i in range(classes)])
    return directory


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """model -> the backbone file and the TASKS adapters on it (built once per model)."""
    cache = {}

    def get(model):
        if model not in cache:
            tmp = tmp_path_factory.mktemp(model)
            ckpt = backbone_file(tmp / "backbone.safetensors", model)
            dirs = {name: make_adapter(tmp / name, ckpt, method, opts, classes, model, seed=i)
                    for i, (name, method, opts, classes) in enumerate(TASKS)}
            cache[model] = {"model": model, "ckpt": ckpt, "dirs": dirs, "tmp": tmp}
        return cache[model]
    return get


@pytest.fixture(params=MODELS)
def adapters(request, built):
    return built(request.param)


def video(n, seed=0):
    return torch.randn(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def assert_served_exactly(dirs: dict, ckpt, order: list[str], **load):
    """A mixed batch of `order` (one clip per entry) equals each clip through its own task's model."""
    mt = load_adapters(dirs, checkpoint=ckpt, **load)
    x = video(len(order))
    with torch.no_grad():
        outs = mt(x, tasks=order)
        for i, task in enumerate(order):                    # the plain loop: each clip through its own model
            own = aptune.load_adapter(dirs[task], checkpoint=ckpt, **load).eval()
            want = own(x[i:i + 1])[0]
            assert outs[i].shape == want.shape
            torch.testing.assert_close(outs[i], want, atol=1e-5, rtol=1e-5, msg=f"clip {i} task {task}")
    return mt


def test_mixed_batch_equals_each_tasks_own_model(adapters):
    names = [t[0] for t in TASKS]
    assert_served_exactly(adapters["dirs"], adapters["ckpt"], names + names[::-1][:4])   # some tasks twice


def _layout(model: str) -> str:
    with torch.device("meta"):
        return aptune.create_model(model).layout


PAIRS = [pytest.param(m, name, id=f"{m}-{name}") for m in MODELS for name in aptune.list_methods()
         if _layout(m) in get_method(name).layouts]


def served_exactly_or_refused_by_its_declaration(built, model: str, method: str, tmp_path) -> None:
    """`method`, with random adapter tensors, next to APT and VPT tasks (padding and key masks in play):
    its clips equal its own model's, or it is refused with the reason it declares (`cannot_share`)."""
    b = built(model)
    d = make_adapter(tmp_path / "m", b["ckpt"], method, SMALL.get(method, {}), 3, model, seed=7)
    dirs = {"m": d, "apt4": b["dirs"]["apt4"], "vpt": b["dirs"]["vpt_deep"]}
    reason = get_method(method).cannot_share
    if reason:
        with pytest.raises(ConfigError, match=rf"task 'm' .*method '{method}' {re.escape(reason)}"):
            load_adapters(dirs, checkpoint=b["ckpt"])
        return
    assert_served_exactly(dirs, b["ckpt"], ["m", "apt4", "m", "vpt"])


@pytest.mark.parametrize("model, method", PAIRS)
def test_every_method_is_served_exactly_or_refused_by_its_declaration(built, model, method, tmp_path):
    served_exactly_or_refused_by_its_declaration(built, model, method, tmp_path)


def test_padding_is_invisible(adapters):
    """An APT adapter with 4 prompts gives the same logits alone and in a batch padded to 7 prompts
    (and a VPT adapter with 3 prompts in a batch padded to 5): padding takes no softmax mass."""
    mt = load_adapters(adapters["dirs"], checkpoint=adapters["ckpt"])
    x = video(2, seed=3)
    with torch.no_grad():
        alone = mt(x[:1], tasks=["apt4"])[0]
        padded = mt(x, tasks=["apt4", "apt7_mid"])[0]
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
        alone = mt(x[:1], tasks="vpt_deep")[0]
        padded = mt(x, tasks=["vpt_deep", "vpt_shallow"])[0]
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_masked_attention_equals_attention_over_the_real_keys_only():
    """Attention with padded prompts and a key mask, against an explicit softmax over the real keys."""
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    B, N, M, H, hd = 2, 5, 3, 4, 8
    x = torch.randn(B, N, 32)
    pk, pv = torch.randn(B, 1, M, hd), torch.randn(B, 1, M, hd)
    pmask = torch.tensor([[True, False, False], [True, True, True]])
    kmask = torch.tensor([[True] * N, [True, True, False, True, True]])
    with torch.no_grad():
        got = attn(x, (pk, pv, pmask), kmask)
        qkv = F.linear(x, attn.qkv.weight) + torch.cat((attn.q_bias, torch.zeros(32), attn.v_bias))
        q, k, v = qkv.view(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
        for b in range(B):
            keys = torch.cat((k[b][:, kmask[b]], pk[b].expand(H, M, hd)[:, pmask[b]]), dim=1)
            vals = torch.cat((v[b][:, kmask[b]], pv[b].expand(H, M, hd)[:, pmask[b]]), dim=1)
            w = torch.softmax(q[b] @ keys.transpose(-1, -2) / hd ** 0.5, dim=-1)
            want = attn.proj((w @ vals).transpose(0, 1).reshape(N, 32))
            torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


def test_add_and_remove_cost_exactly_the_adapters_tensors(adapters):
    from safetensors.torch import load_file
    dirs = adapters["dirs"]
    mt = load_adapters({"apt4": dirs["apt4"]}, checkpoint=adapters["ckpt"])
    base = sum(p.numel() for p in mt.parameters())
    sizes = {t: sum(v.numel() for v in load_file(str(d / "adapter.safetensors")).values()) for t, d in dirs.items()}
    for t in ("lora", "vpt_shallow", "linear"):
        mt.add_adapter(t, dirs[t])
    assert mt.tasks == ["apt4", "lora", "vpt_shallow", "linear"]
    assert sum(p.numel() for p in mt.parameters()) == base + sizes["lora"] + sizes["vpt_shallow"] + sizes["linear"]
    x = video(2, seed=5)
    with torch.no_grad():
        before = mt(x, tasks=["lora", "linear"])
        mt.remove_adapter("vpt_shallow")
        after = mt(x, tasks=["lora", "linear"])
    assert sum(p.numel() for p in mt.parameters()) == base + sizes["lora"] + sizes["linear"]
    assert mt.tasks == ["apt4", "lora", "linear"]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    with pytest.raises(UnknownNameError, match="vpt_shallow.*apt4, lora, linear"):
        mt(x[:1], tasks=["vpt_shallow"])
    mt.remove_adapter("lora")                           # no task left at LoRA's places: the plain Linears return
    assert type(mt.backbone.blocks[0].attn.qkv) is nn.Linear and mt.backbone.blocks[1].tokens_in is None
    assert sum(p.numel() for p in mt.parameters()) == base + sizes["linear"]


def test_forwards_in_several_threads_each_serve_their_own_batch(built):
    """A server may run forwards at once: each thread's clips are routed by its own task list."""
    b = built("tiny")
    mt = load_adapters({t: b["dirs"][t] for t in ("apt4", "vpt_deep", "lora", "st")}, checkpoint=b["ckpt"])
    orders = [["apt4", "lora", "st"], ["vpt_deep", "apt4", "apt4"], ["lora", "st", "lora"], ["st", "vpt_deep", "st"]]
    jobs = [(video(3, seed=s), order) for s, order in enumerate(orders)]

    def run(job):
        with torch.no_grad():                           # grad mode is per thread
            return [mt(job[0], tasks=job[1]) for _ in range(6)]
    with torch.no_grad():
        want = [mt(x, tasks=order) for x, order in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(run, jobs))
    for w, runs in zip(want, got):
        for outs in runs:
            for got_one, want_one in zip(outs, w):
                torch.testing.assert_close(got_one, want_one, atol=1e-6, rtol=1e-6)


def test_eight_vit_s_apt_tasks_cost_under_five_percent_of_the_backbone(tmp_path):
    """ViT-S (16x224): each APT task (the paper's small prompt sets, UCF/HMDB/SSv2 class counts) adds
    only its own tensors; eight of them stay under 5% of the backbone's parameters."""
    from safetensors.torch import load_file
    ckpt = backbone_file(tmp_path / "vit-s.safetensors", "videomae-vit-s")
    dirs, own = {}, 0
    for i, (m, classes) in enumerate([(8, 101), (16, 51), (32, 174), (50, 101)] * 2):
        d = make_adapter(tmp_path / f"task{i}", ckpt, "apt", {"num_prompts": m}, classes, "videomae-vit-s", seed=i)
        dirs[f"task{i}"] = d
        own += sum(v.numel() for v in load_file(str(d / "adapter.safetensors")).values())
    mt = load_adapters(dirs, checkpoint=ckpt)
    backbone = sum(p.numel() for n, p in mt.backbone.named_parameters() if ".tasks." not in n)
    total = sum(p.numel() for p in mt.parameters())
    assert total == backbone + own                      # the backbone's weights are held once
    assert backbone == sum(p.numel() for p in aptune.create_model("videomae-vit-s").parameters())
    assert own < 0.05 * backbone, f"{own / backbone:.2%}"


# ---- errors ------------------------------------------------------------------------------------
def test_wrong_batches_and_task_names_are_errors(adapters):
    mt = load_adapters({"apt4": adapters["dirs"]["apt4"]}, checkpoint=adapters["ckpt"])
    with pytest.raises(ConfigError, match="2 names for a batch of 3"):
        mt(video(3), tasks=["apt4", "apt4"])
    with pytest.raises(UnknownNameError, match="'hmdb'.*apt4"):
        mt(video(2), tasks=["apt4", "hmdb"])
    with pytest.raises(ConfigError, match="already loaded"):
        mt.add_adapter("apt4", adapters["dirs"]["lora"])
    with pytest.raises(UnknownNameError, match="'nope'"):
        mt.remove_adapter("nope")
    with pytest.raises(ConfigError, match="inference"):
        mt.train()


def test_adapters_of_another_backbone_are_refused_naming_both(adapters, tmp_path):
    other = backbone_file(tmp_path / "other.safetensors", adapters["model"], seed=9)
    d = make_adapter(tmp_path / "elsewhere", other, "apt", {"num_prompts": 2}, 3, adapters["model"])
    with pytest.raises(CheckpointError, match=r"'elsewhere'.*other\.safetensors.*backbone\.safetensors"):
        load_adapters({"apt4": adapters["dirs"]["apt4"], "elsewhere": d}, checkpoint=adapters["ckpt"])
    mt = load_adapters({"apt4": adapters["dirs"]["apt4"], "elsewhere": d}, checkpoint=adapters["ckpt"],
                       allow_other_backbone=True)
    assert mt.tasks == ["apt4", "elsewhere"]
    with pytest.raises(CheckpointError, match=r"'apt4'.*backbone\.safetensors.*other\.safetensors"):
        load_adapters({"apt4": adapters["dirs"]["apt4"]}, checkpoint=other)


def test_adapters_of_another_clip_size_are_refused_naming_both(adapters, tmp_path):
    d = make_adapter(tmp_path / "big", adapters["ckpt"], "apt", {"num_prompts": 2}, 3, adapters["model"],
                     num_frames=8)
    with pytest.raises(ConfigError, match=r"'big'.*num_frames=8.*'apt4'.*num_frames=4"):
        load_adapters({"apt4": adapters["dirs"]["apt4"], "big": d}, checkpoint=adapters["ckpt"])


def test_head_modules_that_act_before_the_blocks_are_refused(tmp_path):
    """The joint image layout's temporal embedding trains with every method and is added before the blocks."""
    ckpt = backbone_file(tmp_path / "joint.safetensors", "tiny-clip-joint")
    d = make_adapter(tmp_path / "joint", ckpt, "apt", {"num_prompts": 2}, 3, "tiny-clip-joint")
    with pytest.raises(ConfigError, match=r"task 'joint' .*method 'apt'.*temporal_embed.*before the blocks"):
        load_adapters({"joint": d}, checkpoint=ckpt)


# ---- methods registered from outside the package ---------------------------------------------------
class GainAct(nn.Module):
    """The frozen MLP activation times a trained gain per hidden unit."""

    def __init__(self, act: nn.Module, hidden: int):
        super().__init__()
        self.act, self.gain = act, nn.Parameter(torch.ones(hidden))

    def forward(self, h):
        return self.act(h) * self.gain


class ServedGainAct(GainAct):
    mixed_forward = staticmethod(serve_rows)        # each task's gain on its own rows, the plain GELU elsewhere


class ScaledBranch(nn.Module):
    """mlp_adapter seam: h * s, served by a mixed_forward of its own (not AdaptFormer's)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x, h, layout):
        return h * self.scale

    @staticmethod
    def mixed_forward(batch, tasks, plain, x, h, layout):
        return serve_rows(batch, tasks, plain, x, h, layout)


class FixedProjection(nn.Module):
    """mlp_adapter seam: a trained scale on a fixed random projection that is not saved with the adapter."""
    mixed_forward = staticmethod(serve_rows)

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("proj", torch.randn(dim, dim))

    def forward(self, x, h, layout):
        return self.scale * h @ self.proj


class WholeBlock(nn.Module):
    """wrap seam: runs the block itself (the plain pre-norm block, then a trained gain)."""
    mixed_forward = staticmethod(serve_rows)

    def __init__(self, dim: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, block, x, layout):
        x = x + block.attention(block.norm1(x), layout)
        return (x + block.feed_forward(x, layout)) * self.gain, layout


def _seam(seam, cls):
    def apply(model, cfg):
        for blk in model.blocks:
            setattr(blk, seam, cls(model.embed_dim))
        return [getattr(blk, seam) for blk in model.blocks]
    return apply


def _gain(cls):
    def apply(model, cfg):
        for blk in model.blocks:
            blk.mlp.act = cls(blk.mlp.act, blk.mlp.fc1.out_features)
        return [blk.mlp.act for blk in model.blocks]
    return apply


def _hooked_gain(model, cfg):
    """The gain kept on the frozen activation itself and applied by a hook: no module changes type."""
    for blk in model.blocks:
        blk.mlp.act.gain = nn.Parameter(torch.ones(blk.mlp.fc1.out_features))
        blk.mlp.act.register_forward_hook(lambda m, inputs, out: out * m.gain)
    return [blk.mlp.act for blk in model.blocks]


def _norm1_in_place(model, cfg):
    return [blk.norm1 for blk in model.blocks]


def _norm1_eps(model, cfg):
    for blk in model.blocks:
        blk.norm1.eps = 0.1
    return []


@dataclass
class ToyConfig:
    pass


TOYS = {"toy_gain": _gain(GainAct), "toy_gain_served": _gain(ServedGainAct), "toy_gain_hooked": _hooked_gain,
        "toy_norm1": _norm1_in_place, "toy_norm1_eps": _norm1_eps, "toy_branch": _seam("mlp_adapter", ScaledBranch),
        "toy_buffer": _seam("mlp_adapter", FixedProjection), "toy_wrap": _seam("wrap", WholeBlock)}


@pytest.fixture
def toys():
    for name, fn in TOYS.items():
        register(name, ToyConfig, "a toy method registered by tests/test_multitask.py")(fn)
    yield
    for name in TOYS:
        unregister(name)


@pytest.mark.parametrize("model", MODELS)
def test_a_toy_method_that_says_how_to_serve_is_served_exactly(toys, built, model, tmp_path):
    served_exactly_or_refused_by_its_declaration(built, model, "toy_gain_served", tmp_path)


@pytest.mark.parametrize("method, message", [
    ("toy_gain", r"puts GainAct at blocks\.0\.mlp\.act, .*blocks\.0\.mlp\.act\.gain, .*no `mixed_forward`"),
    ("toy_gain_hooked", r"trains blocks\.0\.mlp\.act\.gain, blocks\.1\.mlp\.act\.gain, .*no module with a "
                        r"`mixed_forward`"),
    ("toy_norm1", r"trains blocks\.0\.norm1\.weight, blocks\.0\.norm1\.bias, .* in place: .*every task shares"),
    ("toy_norm1_eps", r"changes the frozen backbone .*blocks\.0\.norm1\.eps = 0\.1"),
    ("toy_buffer", r"builds blocks\.0\.mlp_adapter\.proj, .*neither in its adapter file nor the backbone's"),
    ("toy_wrap", r"puts WholeBlock at blocks\.0\.wrap, where the plain backbone has no module or seam"),
])
def test_what_a_shared_backbone_cannot_serve_is_refused_naming_it(toys, built, method, message, tmp_path):
    """Trained tensors no serving code holds (a gain on the frozen activation, norm1 trained in place), tensors
    the adapter cannot rebuild, a seam with no plain form and other changes to the frozen modules refuse the
    adapter with the real reason, also where other weights are allowed, and leave the model as it was."""
    b = built("tiny")
    d = make_adapter(tmp_path / "t", b["ckpt"], method, {}, 3)
    mt = load_adapters({"apt4": b["dirs"]["apt4"]}, checkpoint=b["ckpt"])
    before = {n: p.clone() for n, p in mt.state_dict().items()}
    for allow in (False, True):
        mt.allow_other_backbone = allow
        with pytest.raises(ConfigError, match=rf"task 't' \(.*\): method '{method}' {message}") as e:
            mt.add_adapter("t", d)
        assert "fingerprint" not in str(e.value)
    assert mt.tasks == ["apt4"] and mt.state_dict().keys() == before.keys()
    assert all(torch.equal(before[n], t) for n, t in mt.state_dict().items())


def test_two_kinds_of_module_at_one_place_are_refused_naming_both(toys, built, tmp_path):
    b = built("tiny")
    d = make_adapter(tmp_path / "branch", b["ckpt"], "toy_branch", {}, 3)
    assert_served_exactly({"branch": d, "apt4": b["dirs"]["apt4"]}, b["ckpt"], ["branch", "apt4", "branch"])
    with pytest.raises(ConfigError, match=r"task 'branch' .*ScaledBranch at blocks\.0\.mlp_adapter, where "
                                          r"task\(s\) 'adaptformer' have Adapter"):
        load_adapters({"adaptformer": b["dirs"]["adaptformer"], "branch": d}, checkpoint=b["ckpt"])


def test_a_missing_recorded_backbone_is_an_error(adapters, tmp_path):
    import shutil
    ckpt = tmp_path / "moved.safetensors"
    shutil.copy(adapters["ckpt"], ckpt)
    d = make_adapter(tmp_path / "a", ckpt, "apt", {"num_prompts": 2}, 3, adapters["model"])
    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match=r"'a'.*moved\.safetensors"):
        load_adapters({"a": d})
    assert load_adapters({"a": d}, checkpoint=adapters["ckpt"]).tasks == ["a"]


# ---- command line --------------------------------------------------------------------------------
def test_predict_prints_each_tasks_top_classes_from_one_decode(built, tmp_path, capsys, monkeypatch):
    from aptune.cli import main
    from aptune.data.datasets import VideoDataset

    from videos import make_video
    adapters = built("tiny")                            # one backbone family is enough for the command line
    clip = tmp_path / "clip.mp4"
    make_video(clip, num_frames=12)
    dirs = adapters["dirs"]
    decodes = []
    real = VideoDataset.__getitem__
    monkeypatch.setattr(VideoDataset, "__getitem__", lambda self, i: decodes.append(i) or real(self, i))
    args = ["predict", str(clip), "--checkpoint", str(adapters["ckpt"]), "--adapter", f"a={dirs['apt4']}",
            "--adapter", f"v={dirs['vpt_deep']}", "--top", "2", "--clips", "1", "--crops", "1", "--json"]
    assert main(args) == 0
    assert len(decodes) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["task"] for r in rows] == ["a", "v"]
    assert all(r["video"] == str(clip) and len(r["top"]) == 2 for r in rows)
    assert rows[0]["top"][0][0].startswith("apt4-") and rows[1]["top"][0][0].startswith("vpt_deep-")
    # the same answer as the one-adapter command
    assert main(["predict", str(clip), "--checkpoint", str(adapters["ckpt"]), "--adapter", str(dirs["vpt_deep"]),
                 "--top", "2", "--clips", "1", "--crops", "1", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert [n for n, _ in single["top"]] == [n for n, _ in rows[1]["top"]]
    assert [p for _, p in single["top"]] == pytest.approx([p for _, p in rows[1]["top"]], abs=1e-5)
    assert main(["predict", str(clip), "--checkpoint", str(adapters["ckpt"]), "--adapter", f"a={dirs['apt4']}",
                 "--adapter", f"a={dirs['lora']}"]) == 2
    assert "task 'a'" in capsys.readouterr().err


def test_the_benchmark_agrees_with_the_per_task_models(tmp_path):
    """benchmarks/bench_multitask.py --smoke: its mixed batch matches the per-task models and holds the
    backbone once (the speed numbers themselves are printed, never asserted)."""
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import bench_multitask
        out = tmp_path / "rows.json"
        assert bench_multitask.main(["--smoke", "--methods", "apt,lora,st_adapter", "--json", str(out)]) == 0
    finally:
        sys.path.remove(str(bench))
    rows = json.loads(out.read_text())
    assert [(r["method"], r["tasks"]) for r in rows] == [("apt", 2), ("lora", 2), ("st_adapter", 2)]
    for r in rows:
        assert r["max_logit_diff"] < 1e-5
        # two tasks: one backbone instead of two (the shared one also keeps its own unused fc_norm)
        assert r["per_task_mib"] - r["multi_mib"] == pytest.approx(r["backbone_mib"], rel=0.01)
