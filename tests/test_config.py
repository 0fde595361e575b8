"""Config: YAML + _base_ + overrides, errors naming the file/key, validation naming the field, presets."""
from pathlib import Path

import pytest

import aptune
from aptune.config import Config, load_config
from aptune.methods import make_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRESETS = sorted(p for p in CONFIGS.glob("*/vit_b_*.yaml") if not p.parent.name.startswith("_"))


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_overrides_parse_as_yaml_scalars(tmp_path):
    p = write(tmp_path, "method:\n  name: apt\n  num_prompts: 200\noptim:\n  lr: 0.1\n")
    cfg = load_config(p, ["method.num_prompts=400", "optim.lr=5e-2", "data.flip=false", "optim.betas=[0.9, 0.95]",
                          "model.checkpoint=null", "optim.clip_grad=1"])
    assert cfg.method.options == {"num_prompts": 400}
    assert cfg.optim.lr == 0.05 and cfg.data.flip is False and cfg.optim.betas == [0.9, 0.95]
    assert cfg.model.checkpoint is None and cfg.optim.clip_grad == 1.0 and isinstance(cfg.optim.clip_grad, float)
    # round trip through the saved config.yaml
    cfg.save(tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_base_includes_merge_and_later_wins(tmp_path):
    write(tmp_path, "optim:\n  lr: 0.5\n  epochs: 7\ndata:\n  num_frames: 8\n", "base.yaml")
    p = write(tmp_path, "_base_: base.yaml\noptim:\n  lr: 0.25\n")
    cfg = load_config(p)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.data.num_frames) == (0.25, 7, 8)


@pytest.mark.parametrize("text, overrides, match", [
    ("optim:\n  lrr: 0.1\n", [], r"unknown key 'optim.lrr'; did you mean 'optim.lr'\?"),
    ("optimm:\n  lr: 0.1\n", [], r"unknown key 'optimm'; did you mean 'optim'\?"),
    ("optim:\n  lr: [0.1\n", [], r"c.yaml:.*line \d+.*malformed YAML"),
    ("optim:\n  epochs: ten\n", [], r"optim.epochs: expected int"),
    ("", ["data.num_framez=8"], r"unknown key 'data.num_framez'; did you mean 'data.num_frames'"),
    ("", ["optim=1"], r"key must be section.key"),
])
def test_bad_yaml_and_keys_name_file_and_key(tmp_path, text, overrides, match):
    p = write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as e:
        load_config(p, overrides)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def tiny(tmp_path, **sections):
    lst = write(tmp_path, "a.mp4 0\n", "train.csv")
    d = {"model": {"name": "tiny"}, "method": {"name": "apt", "num_prompts": 2},
         "data": {"train_list": str(lst), "num_frames": 4, "img_size": 32}}
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return Config.from_dict(d, source="t.yaml")


@pytest.mark.parametrize("sections, field", [
    ({"method": {"layers": [2, 3, 4]}}, "method.layers"),            # tiny has 4 blocks (0..3)
    ({"method": {"name": "nosuch"}}, "method.name"),
    ({"method": {"num_promts": 3}}, "method"),
    ({"data": {"num_frames": 5}}, "data.num_frames"),                 # tubelet 2
    ({"data": {"img_size": 36}}, "data.img_size"),                    # patch 8
    ({"data": {"train_list": "/no/such/list.csv"}}, "data.train_list"),
    ({"data": {"val_list": "/no/such/val.csv"}}, "data.val_list"),
    ({"optim": {"total_batch": 1}}, "optim.total_batch"),             # world size 2 below
    ({"optim": {"optimizer": "lamb"}}, "optim.optimizer"),
    ({"optim": {"warmup_epochs": 200}}, "optim.warmup_epochs"),
    ({"runtime": {"cache_features": True}}, "runtime.cache_features"),  # only for linear probing
    ({"model": {"name": "vit-z"}}, "model.name"),
])
def test_impossible_configs_name_the_field(tmp_path, sections, field):
    cfg = tiny(tmp_path, **sections)
    with pytest.raises(ValueError, match=f"t.yaml: {field}"):
        cfg.validate(world_size=2)


def test_valid_tiny_config_passes(tmp_path):
    tiny(tmp_path, method={"layers": [1, 2, 3]}, optim={"total_batch": 4}).validate(world_size=2)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_presets_load_and_validate(path):
    cfg = load_config(path)
    cfg.validate(check_files=False)
    assert cfg.method.name in aptune.list_methods()
    make_config(cfg.method.name, **cfg.method.options)
    ds, name = path.parent.name, path.stem.removeprefix("vit_b_")
    assert cfg.model.name == "videomae-vit-b" and cfg.data.num_frames == 16 and cfg.data.img_size == 224
    assert cfg.data.test_crops == 3
    assert cfg.data.test_clips == {"ucf101": 5, "hmdb51": 10, "ssv2": 2}[ds]
    assert (cfg.data.sampling, cfg.data.flip) == (("segment", False) if ds == "ssv2" else ("dense", True))
    o = cfg.optim
    if name.startswith("apt"):
        assert cfg.method.options["num_prompts"] == int(name[3:])
        # the rest of the APT recipe: against the authors' scripts in tests/test_presets_authors.py
    if name == "full":
        assert (o.lr, o.weight_decay, o.layer_decay, o.warmup_epochs) == (5e-4, 0.05, 0.75, 5)
        assert cfg.model.drop_path_rate == 0.1
    # linear probing and full tuning against the authors' and VideoMAE's scripts: tests/test_presets_authors.py


def test_every_dataset_has_every_method_preset():
    names = {"linear", "vpt", "adaptformer", "apt1", "apt5", "apt100", "apt200", "apt400", "full", "approx_prompt"}
    for ds in ("ucf101", "hmdb51", "ssv2"):
        assert {p.stem.removeprefix("vit_b_") for p in (CONFIGS / ds).glob("vit_b_*.yaml")} == names
