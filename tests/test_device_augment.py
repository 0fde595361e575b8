"""The training loader's split: the loader decodes and crops (uint8), the device finishes the batch
(RandAugment, flip, float, normalisation). Its batches equal the per-clip pipeline written out plainly
here, crop by crop, with timm's RandAugment applied frame by frame for the colour and geometry ops."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from aptune.data import VideoDataset
from aptune.data import transforms as TR
from aptune.data.decode import decode_all
from aptune.data.rand_augment import AUTHORS_POLICY
from aptune.engine.runtime import Runtime

from timm_ref import AA, AUTHORS_HPARAMS
from videos import make_video

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
KW = dict(mode="train", num_frames=4, sampling_rate=2, img_size=32, num_sample=2, seed=3)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("aug")
    for k in range(3):
        make_video(d / f"v{k}.mp4", num_frames=30 + 5 * k, width=128, height=64, gop=6)
    return d, [(f"v{k}.mp4", k) for k in range(3)]


def _plain_view(video, index, k, epoch, policy=None):
    """Today's per-clip training view, step by step: crop box, uint8 resize, [timm RandAugment on each
    frame], float, flip, normalise. Random choices from the item's generator in that order."""
    rng = random.Random(f"aptune/{KW['seed']}/{epoch}/{index}/{k}")
    top, left, h, w = TR.random_resized_crop_box(video.shape[1], video.shape[2], (0.08, 1.0), (0.75, 1.3333), rng)
    crop = TR.resize_uint8(video[:, top:top + h, left:left + w], 32, 32)      # (T, 32, 32, 3)
    flip = rng.random() < 0.5
    if policy is not None:
        ra = AA.rand_augment_transform(policy, dict(AUTHORS_HPARAMS))
        picked = [ra.ops[rng.randrange(len(ra.ops))] for _ in range(ra.num_layers)]
        state, frames = rng.getstate(), []
        for f in crop.numpy():
            random.setstate(state)                                           # the same draw for each frame
            for op in picked:
                f = np.asarray(op(Image.fromarray(f)))
            frames.append(f)
        crop = torch.from_numpy(np.stack(frames))
    x = crop.permute(0, 3, 1, 2).float().div_(255.0)
    if flip:
        x = x.flip(-1)
    return ((x - MEAN) / STD).permute(1, 0, 2, 3)                             # (3, T, 32, 32)


def _decoded(ds, root, index):
    video = decode_all(root / ds.entries[index][0])
    return video[ds.clip_indices(len(video), index)[0]]


@pytest.mark.parametrize("policy", [None, AUTHORS_POLICY])
def test_device_batches_equal_the_per_clip_pipeline(clips, policy):
    root, entries = clips
    ds = VideoDataset(entries, root=root, rand_augment=policy, defer_augment=True, **KW)
    ds.set_epoch(2)
    views, label, index, drawn = ds[1]
    assert views.dtype == torch.uint8 and views.shape == (2, 4, 32, 32, 3) and drawn.shape[0] == 2
    rt = Runtime(torch.device("cpu"), num_workers=1)
    (x, y, idx, skipped), = list(rt.batches(rt.loader(ds, batch_size=3)))
    assert x.shape == (3, 2, 3, 4, 32, 32) and x.dtype == torch.float32 and idx.tolist() == [0, 1, 2]
    for i in range(3):
        video = _decoded(ds, root, i)
        for k in range(2):
            assert torch.equal(x[i, k], _plain_view(video, i, k, 2, policy)), (i, k)
    # the same clips from the dataset without deferral (its items finish on the CPU, one by one)
    plain = VideoDataset(entries, root=root, rand_augment=policy, **KW)
    plain.set_epoch(2)
    assert torch.equal(plain[2][0], x[2])


def test_one_view_per_video_keeps_the_old_shapes(clips):
    root, entries = clips
    ds = VideoDataset(entries, root=root, defer_augment=True, **{**KW, "num_sample": 1})
    views, _, _, drawn = ds[0]
    assert views.shape == (4, 32, 32, 3) and drawn.shape == (1,)
    out = ds.augment_batch(views[None], drawn[None])
    assert out.shape == (1, 3, 4, 32, 32)
    assert torch.equal(out[0], _plain_view(_decoded(ds, root, 0), 0, 0, 0))
