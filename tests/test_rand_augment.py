"""RandAugment against timm's own (loaded without torchvision: timm_ref.py): the policy string parsed as
timm parses it, and every op drawn and applied as timm's `rand_augment_transform` does on each frame of a
clip (same draws, equal pixels)."""
import random
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from aptune.config import Config
from aptune.data.rand_augment import AUTHORS_POLICY, OPS_INCREASING, RandAugment, apply_op
from aptune.errors import ConfigError

from timm_ref import AA, AUTHORS_HPARAMS


def _frames(seed: int, t: int = 3, h: int = 40, w: int = 52) -> np.ndarray:
    """(t, h, w, 3) uint8: noise, a gradient and a low-contrast frame (so autocontrast/equalize act)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([(xx * 5) % 256, (yy * 6) % 256, ((xx + yy) * 3) % 256], -1)
    low = 60 + g.integers(0, 90, (h, w, 3))
    frames = np.stack([g.integers(0, 256, (h, w, 3)), grad, low] * t)[:t]
    return frames.astype(np.uint8)


def _timm_on_frames(policy: str, frames: np.ndarray, chosen: list[int], state) -> torch.Tensor:
    """timm's RandAugment on each frame, its op choice forced to `chosen` and Python's random module
    set to `state` before each frame (so every frame gets the same draw, as the authors' loader)."""
    ra = AA.rand_augment_transform(policy, dict(AUTHORS_HPARAMS))
    picked = [ra.ops[k] for k in chosen]
    out = []
    with mock.patch.object(AA.np.random, "choice", lambda *a, **k: picked):
        for f in frames:
            random.setstate(state)
            out.append(np.asarray(ra(Image.fromarray(f))))
    return torch.from_numpy(np.stack(out))                         # (T, H, W, 3)


def _ours(policy: RandAugment, frames: np.ndarray, row: list[float]) -> torch.Tensor:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None]  # (1, T, 3, H, W)
    out = policy.apply(x, torch.tensor([row], dtype=torch.float64))
    return out[0].permute(0, 2, 3, 1).to(torch.uint8)


def test_torchvision_is_not_needed():
    assert "torchvision" not in sys.modules and "timm" not in sys.modules


@pytest.mark.parametrize("policy", [AUTHORS_POLICY, "rand-m9-n3-mstd0.5", "rand-n1-m7-p0.8-mstd101-mmax12-inc0",
                                    "rand-m10"])
def test_policy_parsed_as_timm(policy):
    ra, ours = AA.rand_augment_transform(policy, dict(AUTHORS_HPARAMS)), RandAugment.parse(policy)
    op = ra.ops[0]
    assert tuple(o.name for o in ra.ops) == ours.ops
    assert (ra.num_layers, op.magnitude, op.prob) == (ours.num_layers, ours.magnitude, ours.prob)
    assert (op.magnitude_std, op.magnitude_max) == (ours.magnitude_std, ours.magnitude_max)
    assert ra.choice_weights is None


@pytest.mark.parametrize("policy", [AUTHORS_POLICY, "rand-m9-n2-mstd0.5-inc0"])
def test_every_op_equals_timm_on_every_frame(policy):
    """Each op of the set as the first of two layers, over seeds (applied and skipped, both signs): our
    draw and our batched op equal timm's draw and PIL op on every frame, pixel for pixel."""
    ours = RandAugment.parse(policy)
    applied = set()
    for k in range(len(ours.ops)):
        for seed in range(6):
            rng = random.Random(f"{policy}/{k}/{seed}")
            chosen = [k, rng.randrange(len(ours.ops))]
            state = rng.getstate()
            row = ours.draw_levels(chosen, rng)
            applied.update(int(op) for op in row[::2] if op >= 0)
            frames = _frames(seed)
            ref = _timm_on_frames(policy, frames, chosen, state)
            assert torch.equal(_ours(ours, frames, row), ref), (ours.ops[k], row)
    assert applied == set(range(len(ours.ops)))


def test_each_view_of_a_batch_as_alone():
    """Views that drew different ops, run as one batch, equal each view run alone (bitwise)."""
    ra = RandAugment.parse("rand-m8-n3-mstd0.5-p1.0-inc1")
    frames = [_frames(s, t=2, h=24, w=24) for s in range(12)]
    rows = [ra.draw(random.Random(s)) for s in range(12)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float()
    batch = ra.apply(x.clone(), torch.tensor(rows, dtype=torch.float64))
    for i in range(12):
        assert torch.equal(batch[i], ra.apply(x[i:i + 1].clone(), torch.tensor([rows[i]], dtype=torch.float64))[0])


def test_op_choice_is_uniform_with_replacement():
    """timm draws the ops with numpy's global generator; ours come from the item's generator, so the
    streams differ: the distribution is the same (uniform over the 15 ops, with replacement)."""
    ra = RandAugment.parse(AUTHORS_POLICY)
    rng = random.Random(0)
    draws = [ra.choose(rng) for _ in range(15000)]
    counts = np.bincount([k for d in draws for k in d], minlength=15)
    expected, sd = 30000 / 15, (30000 * (1 / 15) * (14 / 15)) ** 0.5
    assert np.all(np.abs(counts - expected) < 5 * sd), counts
    same = sum(a == b for a, b in draws) / len(draws)
    assert abs(same - 1 / 15) < 5 * (1 / 15 * 14 / 15 / len(draws)) ** 0.5


def test_solarize_and_geometry_by_hand():
    """Two ops written out: solarize inverts levels >= threshold; translating right by 0.25 of the width
    shifts columns and fills the uncovered ones with 128."""
    x = torch.arange(0, 256, 4, dtype=torch.float32).view(1, 1, 1, 1, 64).expand(1, 1, 3, 2, 64).clone()
    sol = apply_op("SolarizeIncreasing", x.clone(), [100])
    assert torch.equal(sol, torch.where(x < 100, x, 255 - x))
    moved = apply_op("TranslateXRel", x.clone(), [-0.25])              # PIL's data maps output -> input
    assert torch.equal(moved[..., 16:], x[..., :48]) and bool((moved[..., :16] == 128).all())


@pytest.mark.parametrize("value,stored", [(True, AUTHORS_POLICY), (False, None), (None, None),
                                          ("rand-m9-n3-mstd0.5", "rand-m9-n3-mstd0.5")])
def test_config_field(value, stored):
    assert Config.from_dict({"data": {"rand_augment": value}}).data.rand_augment == stored


@pytest.mark.parametrize("value,says", [("rnd-m4", "must start with 'rand-'"), ("rand-m4-x3", "section 'x3'"),
                                        ("rand-m4.5", "not an integer"), ("rand-tweights", "transform sets"),
                                        (7, "policy string"), ("rand-m4-m5", "repeated")])
def test_config_field_errors_name_the_field(value, says):
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: data\.rand_augment: .*" + says) as e:
        Config.from_dict({"data": {"rand_augment": value}}, source="cfg.yaml")
    assert "\n" not in str(e.value)
    cfg = Config()
    cfg.data.rand_augment = value
    with pytest.raises(ConfigError, match="data.rand_augment"):
        cfg.validate(need_train=False, check_files=False)


def test_increasing_set_is_timms():
    assert list(OPS_INCREASING) == AA._RAND_INCREASING_TRANSFORMS
