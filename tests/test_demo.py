"""The embedded demo: the shipped backbone loads, and a tiny end-to-end run writes the table files."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import aptune.commands.demo as command
from aptune import count_parameters, create_model, get_config
from aptune.cli import main
from aptune.config import Config
from aptune.demo import (
    DemoConfig,
    DemoRow,
    all_rows,
    default_rows,
    demo_checkpoint,
    demo_datasets,
    ensure_dataset,
    extra_rows,
    run_demo,
    train_seed,
)
from aptune.demo_report import format_table, plot_results
from aptune.pretrain import MaskedVideoAutoencoder, read_pretrain_config, save_pretrain_checkpoint
from aptune.stats import bootstrap_ci_seeds


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
                     num_test=5, frames=8, size=32, epochs=1, batch_size=5, test_clips=2, files=True, seeds=1, jobs=1,
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


def test_quick_demo_results_schema_seeds_and_overall_progress(tmp_path, capsys):
    cfg = DemoConfig.quick(str(tmp_path / "demo"))
    cfg.num_train, cfg.num_val, cfg.num_test, cfg.jobs = 20, 10, 12, 2        # two worker processes
    rows = run_demo(cfg)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["total_seconds"] > 0
    names = [r.label for r in default_rows(quick=True)]
    assert [r["name"] for r in saved["rows"]] == names == [r["name"] for r in rows]
    for r in saved["rows"]:
        for key, kind in (("name", str), ("pretrained", bool), ("top1", float), ("top5", float), ("test_videos", int),
                          ("tunable_params", int), ("gflops", float), ("train_seconds", float), ("top1_seeds", list)):
            assert isinstance(r[key], kind), (key, r[key])
        low, high = r["top1_ci"]
        assert r["test_videos"] == 12
        assert 0 <= low <= r["top1"] <= high <= 100
        for top1 in r["top1_seeds"]:         # top-1 over 12 videos is a whole number of videos, for every seed
            assert abs(top1 * 12 / 100 - round(top1 * 12 / 100)) < 1e-6
    # seeds: 3 for the rows that decide a comparison, 1 for full tuning; the row's numbers are the seeds' runs
    assert {r["name"]: r["seeds"] for r in saved["rows"]} == {"Linear probing": [0, 1, 2], "APT (16)": [0, 1, 2],
                                                             "Full fine-tuning": [0]}
    for r in saved["rows"]:
        runs = sorted(d for d in (tmp_path / "demo" / "runs").glob(f"{r['name'].lower().split(' ')[0]}*/seed_*")
                      if d.is_dir())
        metrics = [json.loads((d / "eval" / "metrics.json").read_text()) for d in runs]
        assert [d.name for d in runs] == [f"seed_{k}" for k in r["seeds"]]
        assert r["top1_seeds"] == [m["video_top1"] for m in metrics]
        assert r["top1"] == pytest.approx(sum(r["top1_seeds"]) / len(r["top1_seeds"]))
        assert r["top1_range"] == [min(r["top1_seeds"]), max(r["top1_seeds"])]
        assert r["top1_ci"] == list(bootstrap_ci_seeds([m["video_correct"] for m in metrics]))
        assert r["ci_over"] == ("seeds x test videos" if len(runs) > 1 else "test videos")
        assert [yaml.safe_load((d / "config.yaml").read_text())["runtime"]["seed"] for d in runs] == r["seeds"]
    # a worker's run is the run of this process: APT (16) seed 1 again, here, gives the same test answers
    row = next(r for r in cfg.rows if r.label == "APT (16)")
    again = train_seed(cfg, row, demo_datasets(cfg), tmp_path / "again", str(demo_checkpoint()), seed=1)
    metrics = json.loads((tmp_path / "demo" / "runs" / "apt_16" / "seed_1" / "eval" / "metrics.json").read_text())
    assert again["video_correct"] == metrics["video_correct"]
    assert "aptune: test" in (tmp_path / "demo" / "runs" / "apt_16" / "seed_1.log").read_text()   # the worker's log
    # the seeds train differently: APT's prompts after training differ between seed 0 and seed 1
    apt = [load_file(str(tmp_path / "demo" / "runs" / "apt_16" / f"seed_{k}" / "adapter" / "adapter.safetensors"))
           for k in (0, 1)]
    assert not torch.equal(apt[0]["blocks.0.kv_prompts.key"], apt[1]["blocks.0.kv_prompts.key"])
    # each row trains its own recipe's epochs (PE rows: cfg.epochs); the table says how many, and the seeds
    md = (tmp_path / "demo" / "results.md").read_text()
    for row, r in zip(default_rows(quick=True), saved["rows"]):
        assert r["epochs"] == (row.epochs or cfg.epochs)
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row.label} |")).split(" | ")
        assert line[4] == str(r["epochs"]) and line[5] == str(len(r["seeds"])), line
        low, high = r["top1_ci"]
        assert line[6] == f"{r['top1']:.1f} [{low:.1f}, {high:.1f}]"
        assert line[7] == (f"{r['top1_range'][0]:.1f}-{r['top1_range'][1]:.1f}" if len(r["seeds"]) > 1 else "-")
    assert {r["epochs"] for r in saved["rows"]} == {1, 5}
    # the overall bar: training runs done / total (a log file gets plain lines, tests have no terminal)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("aptune demo: ")]
    assert lines and lines[-1].startswith("aptune demo: 7/7 run (100%)"), lines
    assert "aptune demo: 1/7 run" in err and "ETA" in err


def test_demo_methods_select_rows_in_table_order(monkeypatch):
    # the default table, --methods all (every row, the three left out too), one method's rows, a bad name
    ran = []
    monkeypatch.setattr(command, "run_demo", lambda cfg: ran.append([r.label for r in cfg.rows]))
    every = [r.label for r in all_rows()]
    assert main(["demo"]) == 0 and ran[-1] == [r.label for r in default_rows()] == [
        "Linear probing", "Linear probing (random init)", "VPT-deep (32)", "AdaptFormer (16)", "APT (16)",
        "Full fine-tuning"]
    assert {r.label for r in extra_rows()} == {"APT (64)", "Approx. prompt (16)", "LoRA (8)"}
    assert main(["demo", "--methods", "all"]) == 0 and ran[-1] == every and len(every) == 9
    assert main(["demo", "--methods", "full,apt"]) == 0 and ran[-1] == ["APT (16)", "APT (64)", "Full fine-tuning"]
    assert main(["demo", "--methods", "apt,nope"]) == 2 and len(ran) == 3
