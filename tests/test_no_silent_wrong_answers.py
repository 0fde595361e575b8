"""Every run uses what the user asked for, or says why not (issue: no silent wrong answers).

Each test reproduces one way aptune used to give a confident wrong answer, or lose a run record,
without a word, on tiny real videos through the command line.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch
import yaml
from safetensors.torch import save_file

import aptune
from aptune.cli import main

from engine_data import make_video_lists, run_process, write_video_config


def tiny_backbone(path, seed):
    torch.manual_seed(seed)
    model = aptune.create_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file(model.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny APT run on real videos over a backbone file (4 frames of 32x32, stride 2)."""
    tmp = tmp_path_factory.mktemp("trained")
    lists = make_video_lists(tmp / "data", n_train=6, n_val=2, n_test=3, num_classes=3)
    backbone = tiny_backbone(tmp / "backbone.safetensors", 1)
    run = tmp / "run"
    cfg = write_video_config(tmp / "c.yaml", lists, run, optim={"epochs": 1, "batch_size": 3},
                             model={"checkpoint": str(backbone)})
    assert main(["train", cfg]) == 0
    return {"tmp": tmp, "lists": lists, "backbone": backbone, "run": run, "cfg": cfg,
            "metrics": json.loads((run / "eval" / "metrics.json").read_text())}


def predict_json(capsys, *args):
    capsys.readouterr()
    rc = main(["predict", *args, "--json"])
    out = capsys.readouterr()
    return rc, [json.loads(line) for line in out.out.splitlines() if line.strip()], out.err


# ---- blocker 1: a silent random backbone -----------------------------------------------------------
def test_the_adapter_records_its_backbone_and_clip(trained):
    meta = json.loads((trained["run"] / "adapter" / "adapter.json").read_text())
    rec = meta["backbone_weights"]
    assert rec["path"] == str(trained["backbone"]) and rec["size"] == trained["backbone"].stat().st_size
    assert rec["fingerprint"].startswith("sha256:") and len(rec["fingerprint"]) == 71
    model = aptune.create_model("tiny", num_classes=3, method="apt", num_prompts=4, checkpoint=trained["backbone"])
    assert aptune.adapters.backbone_fingerprint(model) == rec["fingerprint"]     # of the weights, as loaded
    assert meta["clip"] == {"num_frames": 4, "img_size": 32, "sampling": "dense", "sampling_rate": 2,
                            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_predict_and_load_adapter_use_the_recorded_backbone_or_refuse(trained, capsys, tmp_path):
    adapter, video = str(trained["run"] / "adapter"), str(trained["tmp"] / "data" / "videos" / "v000.mp4")
    rc, given, _ = predict_json(capsys, video, "--adapter", adapter, "--checkpoint", str(trained["backbone"]))
    assert rc == 0
    rc, recorded, _ = predict_json(capsys, video, "--adapter", adapter)       # no --checkpoint: the recorded one
    assert rc == 0 and recorded == given
    moved = tmp_path / "elsewhere.safetensors"
    shutil.move(trained["backbone"], moved)
    try:
        rc, _, err = predict_json(capsys, video, "--adapter", adapter)
        assert rc == 2 and "backbone.safetensors" in err and "--checkpoint" in err and "--random-backbone" in err
        with pytest.raises(FileNotFoundError, match="backbone.safetensors"):
            aptune.load_adapter(adapter)
        rc, rand, err = predict_json(capsys, video, "--adapter", adapter, "--random-backbone")
        assert rc == 0 and "warning" in err and "random backbone" in err and rand != given
        # another backbone is refused by its fingerprint, unless asked
        other = tiny_backbone(tmp_path / "other.safetensors", 2)
        with pytest.raises(ValueError, match=r"fingerprint.*allow_other_backbone"):
            aptune.load_adapter(adapter, checkpoint=other)
        assert aptune.load_adapter(adapter, checkpoint=other, allow_other_backbone=True).tuning.name == "apt"
        loaded = aptune.load_adapter(adapter, checkpoint=moved)                    # the same weights, moved
        assert loaded.class_names == ["class_0", "class_1", "class_2"]
    finally:
        shutil.move(moved, trained["backbone"])


def test_eval_with_a_null_checkpoint_uses_the_adapters_backbone_and_clip(trained, tmp_path, capsys):
    """The preset says model.checkpoint: null and 8x64 clips; the adapter was trained at 4x32 on a file."""
    cfg = yaml.safe_load(open(trained["cfg"]))
    cfg["model"]["checkpoint"] = None
    cfg["data"].update(num_frames=8, img_size=64, sampling_rate=4)
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["eval", str(path), "--adapter", str(trained["run"] / "adapter"), "--out", str(tmp_path / "e")]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["confusion"] == trained["metrics"]["confusion"]
    assert m["video_top1"] == pytest.approx(trained["metrics"]["video_top1"])
    assert "warning" not in capsys.readouterr().err
    # another clip shape only when asked, with a warning (the override comes after the flags)
    assert main(["eval", str(path), "--adapter", str(trained["run"] / "adapter"), "--out", str(tmp_path / "f"),
                 "data.num_frames=8"]) == 0
    err = capsys.readouterr().err
    assert "data.num_frames is 8, the adapter was trained at 4" in err


# ---- blocker 3: hand-written lists ----------------------------------------------------------------
def test_hand_written_lists_without_classes_txt(tmp_path, capsys):
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=2, num_classes=3)
    os.remove(tmp_path / "data" / "classes.txt")
    test = tmp_path / "data" / "test.csv"
    assert {line.split()[1] for line in test.read_text().splitlines()} == {"0", "1"}   # no label 2
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 3},
                             model={"num_classes": 3})
    assert main(["train", cfg]) == 0
    assert main(["eval", cfg, "--adapter", str(tmp_path / "run" / "adapter"), "--random-backbone"]) == 0
    # a label the model cannot have fails before any work, naming file and line
    test.write_text(test.read_text() + "v000.mp4 7\n")
    cfg = write_video_config(tmp_path / "d.yaml", lists, tmp_path / "run2", optim={"epochs": 1, "batch_size": 3},
                             model={"num_classes": 3})
    capsys.readouterr()
    assert main(["train", cfg]) == 2
    err = capsys.readouterr().err
    assert f"{test}:3: label 7, but the model has 3 classes" in err
    assert not (tmp_path / "run2").exists()


# ---- blocker 4: resume and the run record -----------------------------------------------------------
def test_resume_refuses_what_it_cannot_change_and_logs_the_rest(tmp_path, capsys):
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=0)
    run = tmp_path / "run"
    cfg = write_video_config(tmp_path / "c.yaml", lists, run, optim={"epochs": 1, "batch_size": 3},
                             data={"test_list": None})
    assert main(["train", cfg]) == 0
    stored = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(["train", cfg, "method.num_prompts=16", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "method.num_prompts: 4 -> 16" in err and "config.yaml" in err
    assert (run / "config.yaml").read_bytes() == stored
    assert main(["train", cfg, "--resume", "optim.epochs=2"]) == 0     # may change: applied and logged
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    change = [r for r in recs if r["kind"] == "config_change"]
    assert change == [{"kind": "config_change", "step": 2, "field": "optim.epochs", "old": 1, "new": 2}]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4]
    # every snapshot unreadable: resume=auto must not restart and append to the old metrics
    before = (run / "metrics.jsonl").read_text()
    for p in (run / "checkpoints").glob("step_*.pt"):
        p.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["train", cfg, "resume=auto", "optim.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "can be read" in err and "step_00000004.pt" in err and "skipping unreadable checkpoint" in err
    assert (run / "metrics.jsonl").read_text() == before


# ---- also wrong or misleading ------------------------------------------------------------------------
def test_missing_or_empty_videos_fail_before_the_first_step(tmp_path, capsys):
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=0)
    train = tmp_path / "data" / "train.csv"
    train.write_text(train.read_text() + "gone.mp4 0\nzero.mp4 1\n")
    (tmp_path / "data" / "videos" / "zero.mp4").write_bytes(b"")
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 3},
                             data={"test_list": None})
    capsys.readouterr()
    assert main(["train", cfg, "data.skip_bad_videos=false"]) == 2
    err = capsys.readouterr().err
    assert f"{train}:7:" in err and "gone.mp4 (missing)" in err and "zero.mp4 (empty" in err
    assert "data.skip_bad_videos" in err and "check-videos" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert main(["train", cfg]) == 2          # skipping, but 2 of 8 is over data.max_bad_fraction
    assert "data.max_bad_fraction=0.1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["train", cfg, "data.max_bad_fraction=0.25"]) == 0
    assert "2 listed video(s) missing or empty, skipped" in capsys.readouterr().err


def test_training_reports_padded_videos(tmp_path):
    from videos import make_video
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=0)
    for name in ("v000.mp4", "v001.mp4"):      # shorter than a clip of 4 frames at stride 4 (13 frames)
        make_video(tmp_path / "data" / "videos" / name, num_frames=9)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 3},
                             data={"test_list": None, "sampling_rate": 4})
    assert main(["train", cfg]) == 0
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["padded_videos"] for r in recs if r["kind"] == "epoch"] == [2]


def test_prepare_folder_gives_a_small_class_val_and_test_videos(tmp_path, capsys):
    from videos import make_video
    for cls, n in (("big", 10), ("small", 4), ("single", 1)):
        (tmp_path / "raw" / cls).mkdir(parents=True)
        for i in range(n):
            make_video(tmp_path / "raw" / cls / f"{i}.mp4", num_frames=4)
    capsys.readouterr()
    assert main(["prepare", "folder", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "lists")]) == 0
    out = capsys.readouterr()
    val = [line.split()[0] for line in (tmp_path / "lists" / "val.csv").read_text().splitlines()]
    assert any(v.startswith("small/") for v in val) and not any(v.startswith("single/") for v in val)
    assert "warning" in out.err and "small (4)" in out.err and "single" in out.err and "warning" not in out.out


def test_eval_of_the_test_split_needs_no_val_list(trained, tmp_path):
    cfg = yaml.safe_load(open(trained["cfg"]))
    cfg["data"]["val_list"] = str(tmp_path / "no_such_val.csv")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["eval", str(path), "--adapter", str(trained["run"] / "adapter"), "--out", str(tmp_path / "e")]) == 0


def test_inspect_checkpoint_describes_snapshots_and_adapters(trained, capsys):
    snap = sorted((trained["run"] / "checkpoints").glob("step_*.pt"))[-1]
    capsys.readouterr()
    assert main(["inspect-checkpoint", str(snap), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "training snapshot" and info["method"] == "apt" and info["global_step"] == 2
    assert main(["inspect-checkpoint", str(trained["run"] / "adapter"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "adapter" and info["method"] == "apt" and info["classes"] == 3
    assert info["backbone_found"] == str(trained["backbone"]) and info["clip"]["num_frames"] == 4
    assert info["parameters"] == aptune.count_parameters(aptune.load_adapter(trained["run"] / "adapter"))["trainable"]


def test_corrupt_adapter_files_name_the_file(trained, tmp_path, capsys):
    bad = tmp_path / "adapter"
    shutil.copytree(trained["run"] / "adapter", bad)
    (bad / "adapter.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match=r"adapter\.safetensors: not a readable safetensors file"):
        aptune.load_adapter(bad)
    (bad / "adapter.json").write_text("{not json")
    capsys.readouterr()
    assert main(["predict", str(trained["tmp"] / "data" / "videos" / "v000.mp4"), "--adapter", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "adapter.json: not valid JSON" in err and "Traceback" not in err


def test_file_modes_and_stale_temp_snapshots(trained, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("adapter.safetensors", "adapter.json"):
        assert (trained["run"] / "adapter" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=0)
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / ".step_00000001.pt.abc123.tmp").write_bytes(b"half a snapshot")    # a killed write
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 3},
                             data={"test_list": None})
    assert main(["train", cfg]) == 0
    assert not list(ckpts.glob("*.tmp"))


def test_help_shows_each_default_once(capsys):
    from aptune.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        text = parser.format_help().replace("\n", " ")
        for entry in text.split("  --")[1:]:
            assert entry.lower().count("default") <= 1, (name, entry[:120])


def test_warnings_on_stderr_and_progress_as_plain_lines_in_logs(tmp_path):
    """In a log (stderr not a terminal) progress is plain periodic lines, no carriage returns, and
    warnings go to stderr; stdout keeps the results."""
    lists = make_video_lists(tmp_path / "data", n_train=6, n_val=2, n_test=0)
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 3},
                             data={"test_list": None})
    r = run_process([sys.executable, "-m", "aptune", "train", cfg])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stderr and "epoch 1/1: 2/2 step (100%)" in r.stderr
    assert "aptune: warning: model.checkpoint is not set" in r.stderr and "aptune: warning" not in r.stdout
