"""The embedded demo: the shipped backbone loads, and a tiny end-to-end run writes the table files."""
import json

import torch

from aptune import count_parameters, create_model, get_config
from aptune.config import Config
from aptune.demo import (
    DemoConfig,
    DemoRow,
    default_rows,
    demo_checkpoint,
    ensure_dataset,
    format_table,
    plot_results,
    run_demo,
)
from aptune.pretrain import MaskedVideoAutoencoder, read_pretrain_config, save_pretrain_checkpoint


def test_demo_backbone_loads_into_the_zoo_model():
    path = demo_checkpoint()
    assert path.name == "vit-demo.pth" and path.stat().st_size < 20 * 2 ** 20
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["aptune"]["model"] == DemoConfig().model == "vit-demo"
    net = create_model("vit-demo", num_classes=10, checkpoint=path)
    assert net.checkpoint_report["missing"] == ["head.weight", "head.bias"]     # every backbone tensor loaded
    torch.testing.assert_close(net.blocks[3].mlp.fc1.weight, ckpt["model"]["blocks.3.mlp.fc1.weight"])
    c = get_config("vit-demo")
    assert net(torch.randn(2, 3, c.num_frames, c.img_size, c.img_size)).shape == (2, 10)


def test_embedded_mae_backbone_loads_and_matches_the_zoo():
    path = demo_checkpoint().parent / "videomae-demo.pth"      # the MAE-pre-trained asset (docs/PRETRAIN.md)
    assert path.stat().st_size < 20 * 2 ** 20
    assert read_pretrain_config(path) == get_config("videomae-demo")
    net = create_model("videomae-demo", num_classes=10, checkpoint=path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.blocks[5].mlp.fc1.weight, ckpt["model"]["encoder.blocks.5.mlp.fc1.weight"].float())
    assert ckpt["aptune"]["history"][-1]["loss"] < ckpt["aptune"]["history"][0]["loss"]   # it did learn
    c = get_config("videomae-demo")
    x = torch.randn(1, 3, c.num_frames, c.img_size, c.img_size)
    assert net(x).shape == (1, 10)


def test_tiny_demo_end_to_end(tmp_path):
    ckpt = tmp_path / "tiny.pth"
    cfg = Config.from_dict({"model": {"name": "tiny"},
                            "pretrain": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "half": True}})
    save_pretrain_checkpoint(MaskedVideoAutoencoder(get_config("tiny"), cfg.pretrain), cfg, ckpt, [])
    cfg = DemoConfig(out=str(tmp_path / "demo"), model="tiny", checkpoint=str(ckpt), num_train=10, num_val=4,
                     num_test=5, frames=8, size=32, epochs=1, batch_size=5, test_clips=2, files=True,
                     rows=[DemoRow("Linear probing", "linear", epochs=2, cache_features=True),
                           DemoRow("APT (4)", "apt", {"num_prompts": 4})])
    rows = run_demo(cfg)
    out = tmp_path / "demo"
    for name in ("results.md", "results.json", "results.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in saved] == ["Linear probing", "APT (4)"] == [r["name"] for r in rows]
    apt = create_model("tiny", num_classes=10, method="apt", num_prompts=4)
    assert saved[1]["tunable_params"] == count_parameters(apt)["trainable"]
    # APT trains 4 key + 4 value prompts of head_dim 16 and a (2, 4) scale per block, plus fc_norm and head
    assert saved[1]["tunable_params"] - saved[0]["tunable_params"] == 4 * (2 * 4 * 16 + 2 * 4)
    for r in saved:
        assert 0 <= r["top1"] <= r["top5"] + 1e-4 <= 100 + 1e-4 and r["views"] == 2 and r["gflops"] > 0
    assert saved[1]["gflops"] > saved[0]["gflops"]                  # prompts add attention work
    assert "| APT (4) |" in (out / "results.md").read_text() and "| Method |" in format_table(saved)
    # the labeled clips are cached: a second call does not regenerate them
    stamp = (out / "data" / "train.txt").stat().st_mtime_ns
    ensure_dataset(cfg)
    assert (out / "data" / "train.txt").stat().st_mtime_ns == stamp


def test_plot_labels_do_not_collide(tmp_path):
    # two methods at the same place (as AdaptFormer and Approx. prompt were in a real run) and one at the
    # right edge: every label must stay readable inside the frame
    rows = [{"name": m, "method": n, "pretrained": True, "tunable_params": p, "top1": t, "top1_ci": [t - 4, t + 4]}
            for m, n, p, t in [("AdaptFormer (16)", "adaptformer", 40426, 27.0),
                               ("Approx. prompt (16)", "approx_prompt", 29968, 27.0),
                               ("APT (16)", "apt", 14794, 21.0), ("Full fine-tuning", "full", 2744266, 24.0)]]
    boxes = plot_results(rows, tmp_path / "p.png")
    assert len(boxes) == 4 and (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for i in range(4):
        for j in range(i):
            assert not boxes[i].overlaps(boxes[j]), (rows[i]["name"], rows[j]["name"])


def test_quick_demo_results_schema_and_overall_progress(tmp_path, capsys):
    cfg = DemoConfig.quick(str(tmp_path / "demo"))
    cfg.num_train, cfg.num_val, cfg.num_test = 20, 10, 12
    rows = run_demo(cfg)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["total_seconds"] > 0
    names = [r.label for r in default_rows(quick=True)]
    assert [r["name"] for r in saved["rows"]] == names == [r["name"] for r in rows]
    for r in saved["rows"]:
        for key, kind in (("name", str), ("pretrained", bool), ("top1", float), ("top5", float), ("test_videos", int),
                          ("tunable_params", int), ("gflops", float), ("train_seconds", float)):
            assert isinstance(r[key], kind), (key, r[key])
        low, high = r["top1_ci"]
        assert r["test_videos"] == 12
        assert 0 <= low <= r["top1"] <= high <= 100
        # top-1 over 12 videos is a whole number of videos
        assert abs(r["top1"] * 12 / 100 - round(r["top1"] * 12 / 100)) < 1e-6
    # each row trains its own recipe's epochs (PE rows: cfg.epochs) and the table says how many
    md = (tmp_path / "demo" / "results.md").read_text()
    for row, r in zip(default_rows(quick=True), saved["rows"]):
        assert r["epochs"] == (row.epochs or cfg.epochs)
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row.label} |"))
        assert line.split(" | ")[4] == str(r["epochs"]) and "[" in line, line
    assert {r["epochs"] for r in saved["rows"]} == {1, 5}
    # the overall bar: rows done / total (a log file gets plain lines, tests have no terminal)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("aptune demo: ")]
    assert lines and lines[-1].startswith(f"aptune demo: {len(rows)}/{len(rows)} row (100%)"), lines
    assert f"aptune demo: 1/{len(rows)} row" in err and "ETA" in err
