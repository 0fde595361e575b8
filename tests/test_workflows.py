"""aptune.train / evaluate / predict: the command line's work as Python calls returning dataclasses, and
the commands giving the same answers through them."""
from __future__ import annotations

import json

import pytest
import torch

import aptune
from aptune.errors import ConfigError
from aptune.workflows import EvalResult, Prediction, TrainResult, make_config

from engine_data import TensorVideos, make_video_lists, tiny_cfg


def test_overrides_in_all_three_spellings_and_a_bad_key(tmp_path):
    base = tiny_cfg(tmp_path).to_dict()
    a = make_config(base, {"optim.lr": 0.3})
    b = make_config(base, {"optim__lr": 0.3})
    c = make_config(base, {"optim": {"lr": 0.3}})
    assert a.optim.lr == b.optim.lr == c.optim.lr == 0.3 and a.optim.epochs == base["optim"]["epochs"]
    with pytest.raises(ConfigError, match="override 'lr': expected section.key"):
        make_config(base, {"lr": 0.3})
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'; did you mean 'optim.lr'"):
        make_config(base, {"optim.lrr": 0.3})


def test_train_returns_a_result_and_evaluate_reproduces_its_test(tmp_path):
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=2, n_test=3)
    cfg = tiny_cfg(tmp_path, data={"train_list": lists["train"], "val_list": lists["val"], "test_list": lists["test"],
                                   "root": lists["root"], "test_clips": 2, "test_crops": 1})
    result = aptune.train(cfg.to_dict(), optim__epochs=1)
    assert isinstance(result, TrainResult) and result.global_step == 1
    assert (result.adapter_dir / "adapter.json").exists() and result.test["num_videos"] == 3
    ev = aptune.evaluate(cfg.to_dict(), adapter=result.adapter_dir, random_backbone=True, out=tmp_path / "ev")
    assert isinstance(ev, EvalResult) and ev.top1 == result.test["video_top1"]
    assert ev.metrics["video_correct"] == result.test["video_correct"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["video_top1"] == ev.top1
    with pytest.raises(ConfigError, match="exactly one of adapter="):
        aptune.evaluate(cfg.to_dict())


def test_prediction_record():
    p = Prediction("a.mp4", [("run", 0.9)])
    assert p.ok and p.as_dict() == {"video": "a.mp4", "top": [("run", 0.9)]}
    bad = Prediction("b.mp4", error="truncated")
    assert not bad.ok and bad.as_dict() == {"video": "b.mp4", "error": "truncated"}


def test_train_takes_datasets_in_memory(tmp_path):
    result = aptune.train(tiny_cfg(tmp_path), datasets={"train": TensorVideos(8), "val": TensorVideos(4, mode="val")},
                          optim={"epochs": 1})
    assert result.test is None and result.val["top1"] >= 0 and isinstance(result.model, torch.nn.Module)


def linear_adapter(tmp_path, classes=("left", "right")):
    """A tiny linear-probe adapter on a backbone file, with a non-trivial head and class names."""
    from safetensors.torch import save_file
    plain = aptune.create_model("tiny", num_classes=0)
    save_file(plain.state_dict(), str(tmp_path / "backbone.safetensors"))
    model = aptune.create_model("tiny", num_classes=len(classes), checkpoint=tmp_path / "backbone.safetensors",
                                method="linear")
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    model.class_names = list(classes)
    return model.save_pretrained(tmp_path / "adapter")


def test_predict_returns_records_and_the_command_prints_the_same(tmp_path, capsys):
    from aptune.cli import main
    lists = make_video_lists(tmp_path / "data", n_train=0, n_val=0, n_test=2)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    adapter = linear_adapter(tmp_path)
    videos = [lists["root"], str(tmp_path / "bad.mp4")]
    preds = aptune.predict(videos, adapter=adapter, clips=1, crops=1, top=2)
    assert [p.video.rsplit("/", 1)[1] for p in preds] == ["v000.mp4", "v001.mp4", "bad.mp4"]
    assert all(p.ok for p in preds[:2]) and not preds[2].ok and preds[2].top == []
    assert {n for n, _ in preds[0].top} == {"left", "right"} and sum(v for _, v in preds[0].top) == pytest.approx(1)
    assert main(["predict", *videos, "--adapter", str(adapter), "--clips", "1", "--crops", "1", "--top", "2",
                 "--json"]) == 1                                        # one video could not be decoded
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [json.loads(json.dumps(p.as_dict())) for p in preds]
    two = aptune.predict(lists["root"], adapter={"a": adapter, "b": adapter}, clips=1, crops=1, top=2)
    assert [p.task for p in two[:2]] == ["a", "b"]
    for p in two[:2]:                                   # one backbone, two tasks: each as the model alone
        assert [n for n, _ in p.top] == [n for n, _ in preds[0].top]
        assert [v for _, v in p.top] == pytest.approx([v for _, v in preds[0].top], abs=1e-5)
