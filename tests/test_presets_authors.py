"""Every APT preset, resolved, against the APT authors' recipe: their run scripts (wgcban/apt
`scripts/<dataset>/videomae_vpt_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_2400/finetune_viu2.sh`)
and, for what a script leaves out, `run_class_apt.py`'s argparse defaults and `utils.cosine_scheduler`.

The values below were read from those files by hand; each says where it comes from. aptune's names:
`optim.lr` / `min_lr` / `warmup_lr` are per 256 clips as the authors' (they scale all three by
batch x update_freq x GPUs / 256, the repeated views not counted).
"""
from pathlib import Path

import pytest

from aptune.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCRIPT = "scripts/{}/videomae_vpt_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_2400/finetune_viu2.sh"
DEFAULTS = "run_class_apt.py default"

# field -> (value, source): the same in the three scripts (UCF101, HMDB51, SSv2)
RECIPE = {
    "optim.optimizer": ("adamw", "script: --opt adamw"),
    "optim.lr": (0.05, "script: --lr 0.05"),
    "optim.min_lr": (1e-6, f"{DEFAULTS}: --min_lr 1e-6"),
    "optim.warmup_lr": (0.0, "utils.cosine_scheduler(start_warmup_value=0): run_class_apt.py passes no --warmup_lr"),
    "optim.weight_decay": (1e-5, "script: --weight_decay 0.00001"),
    "optim.warmup_epochs": (10, "script: --warmup_epochs 10"),
    "optim.batch_size": (8, "script: --batch_size 8"),
    "optim.accum_steps": (1, f"{DEFAULTS}: --update_freq 1"),
    "optim.label_smoothing": (0.1, f"{DEFAULTS}: --smoothing 0.1"),
    "optim.layer_decay": (1.0, f"{DEFAULTS}: --layer_decay 1.0"),
    "optim.clip_grad": (None, f"{DEFAULTS}: --clip_grad None"),
    "optim.betas": ([0.9, 0.999], f"{DEFAULTS}: --opt_betas None (AdamW's own)"),
    "data.num_sample": (2, "script: --num_sample 2"),
    "data.rand_augment": ("rand-m4-n2-mstd0.2-inc1", "script: --is_aa --aa rand-m4-n2-mstd0.2-inc1"),
    "model.drop_path_rate": (0.0, f"{DEFAULTS}: --drop_path 0.0"),
    "model.head_dropout": (0.0, f"{DEFAULTS}: --fc_drop_rate 0.0"),
    "method.prompt_dropout": (0.1, "script: --prompt_dropout 0.1"),
    "method.reparam": (True, "script: --prompt_reparam"),
    "method.layers": (None, "script: --prompt_start 0 --prompt_end 11 (every block of ViT-B)"),
}

# field -> {dataset: value}, source: what differs between the scripts, or follows from the dataset
PER_DATASET = {
    "optim.epochs": ({"ucf101": 50, "hmdb51": 100, "ssv2": 100}, "script: --epochs"),
    "data.test_clips": ({"ucf101": 5, "hmdb51": 10, "ssv2": 2}, "script: --test_num_segment"),
    "data.test_crops": ({"ucf101": 3, "hmdb51": 3, "ssv2": 3}, "script: --test_num_crop 3"),
    "data.num_frames": ({"ucf101": 16, "hmdb51": 16, "ssv2": 16}, "script: --num_frames 16"),
    "data.img_size": ({"ucf101": 224, "hmdb51": 224, "ssv2": 224}, "script: --input_size 224"),
    "data.sampling": ({"ucf101": "dense", "hmdb51": "dense", "ssv2": "segment"},
                      "datasets.py: VideoClsDataset (kinetics.py) for UCF101/HMDB51, SSVideoClsDataset for SSV2"),
    "data.sampling_rate": ({"ucf101": 4, "hmdb51": 4}, f"{DEFAULTS}: --sampling_rate 4 (SSv2 segments ignore it)"),
    "data.flip": ({"ucf101": True, "hmdb51": True, "ssv2": False},
                  "kinetics.py / ssv2.py: random_horizontal_flip=False if data_set == 'SSV2'"),
    "model.name": ({"ucf101": "videomae-vit-b", "hmdb51": "videomae-vit-b", "ssv2": "videomae-vit-b"},
                   "script: --model vit_base_patch16_224 --tubelet_size 2 (default)"),
}

VIDEOMAE_APT = sorted(p for ds in ("ucf101", "hmdb51", "ssv2") for p in (CONFIGS / ds).glob("vit_b_apt*.yaml"))
IMAGE_APT = sorted((CONFIGS / "ssv2").glob("*_apt*.yaml"))
IMAGE_APT = [p for p in IMAGE_APT if p not in VIDEOMAE_APT]


def resolved(path: Path) -> dict:
    d = load_config(path).to_dict()
    return {f"{sec}.{k}": v for sec, fields in d.items() for k, v in fields.items()}


def test_every_apt_preset_is_covered():
    assert len(VIDEOMAE_APT) == 15                       # apt{1,5,100,200,400} x UCF101, HMDB51, SSv2
    image = {f"{b}_apt{m}" for b in ("clip_b16", "vit_b16_sup") for m in (200, 400, 600)}
    assert {p.stem for p in IMAGE_APT} == image | {"videomae_b_k400sup_apt200"}


@pytest.mark.parametrize("path", VIDEOMAE_APT, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_videomae_apt_preset_is_the_authors_script(path):
    ds, got = path.parent.name, resolved(path)
    wrong = [f"{k}: {got.get(k)!r}, the authors' {v!r} ({src}, {SCRIPT.format(ds)})"
             for k, (v, src) in RECIPE.items() if got.get(k) != v]
    wrong += [f"{k}: {got.get(k)!r}, the authors' {vals[ds]!r} ({src})"
              for k, (vals, src) in PER_DATASET.items() if ds in vals and got.get(k) != vals[ds]]
    assert not wrong, "\n".join(wrong)
    assert got["method.name"] == "apt" and got["method.num_prompts"] == int(path.stem.removeprefix("vit_b_apt"))


@pytest.mark.parametrize("path", IMAGE_APT, ids=lambda p: p.stem)
def test_table6_apt_presets_share_the_authors_recipe(path):
    """No script exists for Table 6's APT rows: they take the same recipe as the SSv2 script (the clip
    shape of the image backbones is checked in test_table6_presets.py)."""
    got = resolved(path)
    wrong = [f"{k}: {got.get(k)!r}, the authors' {v!r} ({src}, {SCRIPT.format('ssv2')})"
             for k, (v, src) in RECIPE.items() if got.get(k) != v]
    assert not wrong, "\n".join(wrong)
    assert got["optim.epochs"] == 100 and got["data.flip"] is False and got["data.sampling"] == "segment"


LINEAR_SCRIPT = "scripts/ucf101/videomae_vpt_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_2400/linearprobe_viu3.sh"
# the linear-probing script (--transfer_type linear: what trains is every parameter named *head*, i.e.
# head_norm = fc_norm and head) differs from the APT scripts only in these values
LINEAR = {"optim.lr": (0.01, "script: --lr 0.01"), "runtime.cache_features": (False, "the script trains on videos"),
          "method.name": ("linear", "script: --transfer_type linear")}


@pytest.mark.parametrize("ds", ["ucf101", "hmdb51", "ssv2"])
def test_linear_probing_presets_are_the_authors_script(ds):
    got = resolved(CONFIGS / ds / "vit_b_linear.yaml")
    want = {k: v for k, v in RECIPE.items() if not k.startswith("method.")} | LINEAR
    wrong = [f"{k}: {got.get(k)!r}, the authors' {v!r} ({src}, {LINEAR_SCRIPT})"
             for k, (v, src) in want.items() if got.get(k) != v]
    assert not wrong, "\n".join(wrong)
    assert got["optim.epochs"] == 100                    # script: --epochs 100 (UCF101's only script)


def test_full_tuning_takes_videomae_randaugment():
    """VideoMAE's run_class_finetuning.py --aa default, not the APT scripts' lighter policy."""
    for ds in ("ucf101", "hmdb51", "ssv2"):
        assert resolved(CONFIGS / ds / "vit_b_full.yaml")["data.rand_augment"] == "rand-m7-n4-mstd0.5-inc1"
