"""Parameter and FLOP accounting: hand-written formulas against what `count_flops` measures,
and the `aptune profile` command (table, JSON Lines, sweep plot)."""
import json

import pytest
import torch

import aptune
from aptune import count_flops, create_model, get_config, list_methods
from aptune.cli import main
from aptune.commands.profile import parse_methods
from aptune.profiling import flop_breakdown


# ---- independent references -----------------------------------------------------------------
def macs(name, num_classes, apt_prompts=0, vpt_prompts=0, apt_blocks=None, T=None, S=None):
    """fvcore-convention multiply-adds of one view, written out by hand:
    patch-embed conv + per block (LayerNorm x2, qkv, Q K^T, A V, proj, MLP) + fc_norm + head.
    APT adds apt_prompts keys/values to the attention of `apt_blocks` blocks (default all);
    VPT-deep adds vpt_prompts tokens that go through every block."""
    c = get_config(name)
    T, S = T or c.num_frames, S or c.img_size
    d, hidden = c.embed_dim, int(c.embed_dim * c.mlp_ratio)
    N = (T // c.tubelet_size) * (S // c.patch_size) ** 2
    total = N * d * (3 * c.tubelet_size * c.patch_size * c.patch_size)       # Conv3d, no bias counted
    apt_blocks = range(c.depth) if apt_blocks is None else apt_blocks
    for i in range(c.depth):
        n = N + vpt_prompts                                  # queries (tokens in the block)
        keys = n + (apt_prompts if i in apt_blocks else 0)   # keys = values
        total += 2 * 5 * n * d                               # norm1, norm2 (fvcore: 5 per element)
        total += n * d * 3 * d                               # qkv
        total += n * keys * d                                # Q K^T over all heads (heads * head_dim = d)
        total += n * keys * d                                # A V
        total += n * d * d                                   # proj
        total += n * d * hidden + n * hidden * d             # fc1, fc2
    total += 5 * d + d * num_classes                         # fc_norm on the pooled vector, head
    return total


def meta_model(name, num_classes, **kw):
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes, **kw)


def total_macs(model, **kw):
    return sum(flop_breakdown(model, **kw).values())


# ---- parameters -------------------------------------------------------------------------------
def test_apt200_vitb_ucf101_trainable_parameters_match_the_paper_formula():
    d, classes, depth, hd, m = 768, 101, 12, 64, 200
    expected = (d * classes + classes) + 2 * d + m * depth * (2 * hd + 2)
    assert expected == 391_205
    net = meta_model("videomae-vit-b", classes, method="apt", num_prompts=m)
    assert aptune.count_parameters(net)["trainable"] == expected


# ---- FLOPs: base model ------------------------------------------------------------------------
def test_tiny_base_flops_equal_hand_formula_real_weights_and_meta():
    real = create_model("tiny", num_classes=7)
    assert total_macs(real) == macs("tiny", 7)
    assert total_macs(meta_model("tiny", 7)) == macs("tiny", 7)
    assert count_flops(real) == pytest.approx(macs("tiny", 7) / 1e9, rel=1e-12)


def test_vitb_base_flops_equal_hand_formula_and_common_quote():
    net = meta_model("videomae-vit-b", 101)
    assert total_macs(net, num_frames=16, img_size=224) == macs("videomae-vit-b", 101)
    g = count_flops(net, 16, 224)
    assert 178 < g < 183, g          # VideoMAE ViT-B 16x224 is commonly quoted as 180 GFLOPs


def test_other_clip_size_and_batch_and_training_state():
    real = create_model("tiny", num_classes=5).train()
    assert total_macs(real, num_frames=8, img_size=48) == macs("tiny", 5, T=8, S=48)
    assert total_macs(real, batch_size=3) == macs("tiny", 5)     # per view
    assert real.training                                         # restored after counting
    with pytest.raises(ValueError, match="batch_size"):
        count_flops(real, batch_size=0)


# ---- FLOPs: methods ---------------------------------------------------------------------------
def test_apt_adds_exactly_attention_over_prompt_keys_values():
    for name, m in (("tiny", 6), ("videomae-vit-b", 200)):
        c = get_config(name)
        N = (c.num_frames // c.tubelet_size) * (c.img_size // c.patch_size) ** 2
        base = total_macs(meta_model(name, 10))
        apt = total_macs(meta_model(name, 10, method="apt", num_prompts=m))
        assert apt - base == c.depth * 2 * N * m * c.embed_dim
        assert apt == macs(name, 10, apt_prompts=m)


def test_apt_on_some_blocks_and_with_real_weights():
    real = create_model("tiny", num_classes=3, method="apt", num_prompts=5, layers=[1, 2])
    assert total_macs(real) == macs("tiny", 3, apt_prompts=5, apt_blocks=[1, 2])


@pytest.mark.skipif("vpt" not in list_methods(), reason="vpt not registered")
def test_vpt_deep_prompts_pay_the_full_block():
    for name, m in (("tiny", 6), ("videomae-vit-b", 50)):
        net = meta_model(name, 10, method="vpt", num_prompts=m, deep=True)
        assert total_macs(net) == macs(name, 10, vpt_prompts=m)


def test_every_registered_method_counts_the_same_on_meta_and_real_weights():
    from aptune.methods import get_method
    for method in list_methods():       # on a tiny backbone whose token layout the method supports
        name = "tiny" if "joint" in get_method(method).layouts else "tiny-clip"
        meta = total_macs(meta_model(name, 4, method=method))
        real = total_macs(create_model(name, num_classes=4, method=method))
        assert meta == real, method
        assert meta >= total_macs(meta_model(name, 4)), method
    base = macs("tiny", 4)
    for method in ("linear", "full"):
        assert total_macs(meta_model("tiny", 4, method=method)) == base


# ---- the command ------------------------------------------------------------------------------
def test_parse_methods_with_options():
    specs = parse_methods(["apt:num_prompts=400,reparam=false,vpt", "lora:rank=8"])
    assert [(s.name, s.options) for s in specs] == [
        ("apt", {"num_prompts": 400, "reparam": False}), ("vpt", {}), ("lora", {"rank": 8})]
    assert specs[0].label == "apt:num_prompts=400,reparam=false"
    with pytest.raises(ValueError, match="before any method"):
        parse_methods(["num_prompts=4"])


def test_profile_json_vitb(capsys):
    assert main(["profile", "--json", "--methods", "apt:num_prompts=200,linear"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [r["method"] for r in rows] == ["backbone", "apt:num_prompts=200", "linear"]
    for r in rows:
        assert {"method", "trainable_params", "total_params", "gflops"} <= set(r)
    assert rows[1]["trainable_params"] == 391_205
    assert rows[2]["trainable_params"] == 768 * 101 + 101 + 2 * 768
    assert rows[1]["total_params"] == rows[0]["total_params"] + 12 * 200 * (2 * 64 + 2)
    assert rows[1]["gflops"] == pytest.approx(macs("videomae-vit-b", 101, apt_prompts=200) / 1e9, rel=1e-12)
    assert rows[2]["gflops"] == pytest.approx(rows[0]["gflops"], rel=1e-12)


def test_profile_table_all_methods_and_set(capsys, tmp_path):
    assert main(["profile", "--model", "tiny", "--num-frames", "4", "--img-size", "32", "--num-classes", "5",
                 "--set", "apt.num_prompts=3", "--methods", "apt,vpt", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "backbone" in out and "apt:num_prompts=3" in out and "GFLOPs" in out
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved["rows"][1]["method_config"]["num_prompts"] == 3
    assert main(["profile", "--model", "tiny", "--num-frames", "4", "--img-size", "32"]) == 0
    out = capsys.readouterr().out
    for method in list_methods():
        assert f"\n{method} " in out


def test_profile_errors(capsys):
    assert main(["profile", "--model", "tiny", "--methods", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["profile", "--model", "tiny", "--methods", "apt", "--set", "vpt.num_prompts=3"]) == 2
    assert "not among the profiled methods" in capsys.readouterr().err
    assert main(["profile", "--model", "tiny", "--methods", "apt:bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["profile", "--model", "tiny", "--sweep", "--methods", "linear"]) == 2
    assert "num_prompts" in capsys.readouterr().err


@pytest.mark.skipif("vpt" not in list_methods(), reason="vpt not registered")
def test_sweep_writes_png_and_monotonic_table(capsys, tmp_path):
    assert main(["profile", "--model", "tiny", "--num-frames", "4", "--img-size", "32", "--sweep",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vpt (deep) GFLOPs" in out and "apt params" in out
    png = tmp_path / "sweep.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    for method in ("vpt (deep)", "apt"):
        pts = sorted((p for p in sweep["points"] if p["method"] == method), key=lambda p: p["num_prompts"])
        assert [p["num_prompts"] for p in pts] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
        g = [p["gflops"] for p in pts]
        assert all(a < b for a, b in zip(g, g[1:])), (method, g)
        assert all(p["gflops"] > sweep["backbone_gflops"] for p in pts)
    # the printed table agrees with the JSON: one row per prompt count, vpt GFLOPs increasing
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    vpt_g = [float(r[2]) for r in rows]
    assert vpt_g == sorted(vpt_g) and vpt_g[0] < vpt_g[-1]
