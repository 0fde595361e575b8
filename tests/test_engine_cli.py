"""The train / eval / predict / plot commands end to end on tiny real videos, their --help,
and one-line errors for malformed YAML and unknown keys."""
import json
import subprocess
import sys

import pytest
import torch

from aptune.cli import build_parser, main

from engine_data import make_video_lists, write_video_config


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "aptune", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_and_describes_commands(capsys):
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("train", "eval", "predict", "plot"):
        assert cmd in r.stdout
    expect = {"train": ["--resume", "KEY=VALUE", "--output"], "eval": ["--adapter", "--checkpoint", "--split"],
              "predict": ["--adapter", "--top", "--clips"], "plot": ["run_dir", "--out"]}
    for cmd, options in expect.items():
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        for opt in options:
            assert opt in out, (cmd, opt)


def test_bad_yaml_and_bad_key_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1,\n")
    r = run_cli("train", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.yaml" in lines[0] and "malformed YAML" in lines[0]
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  name: tiny\n")
    r = run_cli("train", str(good), "optim.lrr=0.1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "optim.lrr" in lines[0] and "optim.lr" in lines[0]
    r = run_cli("train", str(good), "--bogus-option")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--bogus-option" in lines[0]
    r = run_cli("train", str(good), "data.num_frames=5")      # validation fails before any work
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "data.num_frames" in lines[0]


def test_train_eval_predict_plot(tmp_path, capsys):
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=3, num_classes=3)
    run = tmp_path / "run"
    # a fixed backbone file: eval/predict rebuild the model from it plus the adapter
    from safetensors.torch import save_file

    from aptune import create_model
    backbone = tmp_path / "backbone.safetensors"
    save_file(create_model("tiny").state_dict(), str(backbone))
    cfg = write_video_config(tmp_path / "c.yaml", lists, run, optim={"epochs": 1, "batch_size": 3},
                             model={"checkpoint": str(backbone)})
    assert main(["train", cfg]) == 0
    train_metrics = json.loads((run / "eval" / "metrics.json").read_text())

    # eval from the adapter and from the training checkpoint: same numbers as the end-of-training test
    assert main(["eval", cfg, "--adapter", str(run / "adapter"), "--out", str(tmp_path / "ev1")]) == 0
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    assert main(["eval", cfg, "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev2")]) == 0
    for d in ("ev1", "ev2"):
        m = json.loads((tmp_path / d / "metrics.json").read_text())
        assert (tmp_path / d / "confusion.png").stat().st_size > 1000
        assert m["num_videos"] == 3 and m["num_views"] == 3 * 2 * 3
        assert m["confusion"] == train_metrics["confusion"]
        assert m["video_top1"] == pytest.approx(train_metrics["video_top1"])
        assert m["clip_top1"] == pytest.approx(train_metrics["clip_top1"])
        assert set(m["per_class"]) <= {"class_0", "class_1", "class_2"}

    # predict: class names from adapter.json, probabilities = softmax averaged over the views
    video = tmp_path / "data" / "videos" / "v000.mp4"
    capsys.readouterr()
    assert main(["predict", str(video), "--adapter", str(run / "adapter"), "--checkpoint", str(backbone),
                 "--top", "2", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out.strip())
    assert len(pred["top"]) == 2 and all(name.startswith("class_") for name, _ in pred["top"])
    from aptune import load_adapter
    from aptune.data.datasets import VideoDataset
    model = load_adapter(run / "adapter", checkpoint=backbone).eval()
    clip = json.loads((run / "adapter" / "adapter.json").read_text())["clip"]    # predict uses the trained clip
    assert clip["sampling_rate"] == 2 and clip["num_frames"] == 4 and clip["img_size"] == 32
    views = VideoDataset([(str(video), 0)], mode="test", num_frames=4, sampling_rate=2, img_size=32,
                         num_clips=2, num_crops=3)[0][0]
    with torch.no_grad():
        probs = model(views).softmax(1).mean(0)
    top = probs.topk(2)
    assert [n for n, _ in pred["top"]] == [f"class_{i}" for i in top.indices.tolist()]
    assert [p for _, p in pred["top"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert main(["predict", str(video.parent), "--adapter", str(run / "adapter"), "--checkpoint", str(backbone)]) == 0
    out = capsys.readouterr().out
    assert out.count(".mp4") == 11 and "%" in out

    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 5000
