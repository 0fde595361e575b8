"""Sampling, transforms and VideoDataset: protocol indices computed by hand, determinism,
bad-video skip/stop behaviour."""
import random

import pytest
import torch
from torch.utils.data import DataLoader

from aptune.data import BadVideoError, VideoDataset, collate_skip_bad
from aptune.data import sampling as S
from aptune.data import transforms as TR
from aptune.data.decode import decode_all

from helpers import FixedDraw
from videos import frame_index, make_video

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
U8_TOL = 1.01 / 255 / 0.224  # resizing runs on uint8: at most one level from the float resize


# ------------------------------------------------------------------ sampling
# (the authors' rules over many lengths, and videos read back by frame index, are in
# test_sampling_protocol.py; these are small cases worked by hand)
def test_dense_test_clips_at_multiples_of_the_stride():
    # 100 frames, 16 x 4 -> buffer 0, 4, ..., 96 (25 entries), room 9; 5 clips: int(k * 2.25)
    clips = S.dense_test(100, 16, 4, 5)
    assert S.dense_test_starts(100, 16, 4, 5) == [0, 2, 4, 6, 9]
    assert [c[0] for c in clips] == [0, 8, 16, 24, 36]
    assert clips[4] == [36 + 4 * t for t in range(16)]
    assert S.dense_test(100, 16, 4, 1)[0][0] == 16  # one clip: the centre, 9 // 2 = 4 -> frame 16
    # a short video: the strided frames, then the last of them repeated (not the video's last)
    assert S.dense_test(10, 4, 4, 2) == [[0, 4, 8, 8], [0, 4, 8, 8]]
    assert S.dense_test(1, 3, 4, 2) == [[0, 0, 0]] * 2


def test_dense_train_window_and_short_videos():
    # 100 frames, 16 x 4: end drawn in [64, 100); end 70 -> linspace(6, 70, 16), last clipped to 69
    draw = FixedDraw(70)
    assert S.dense_train(100, 16, 4, draw) == [6 + int(t * 64 / 15) for t in range(15)] + [69]
    assert draw.calls == [(64, 100)]
    rng = random.Random(0)
    starts = {S.dense_train(100, 16, 4, rng)[0] for _ in range(300)}
    assert starts == set(range(0, 36))
    # n <= T*r: linspace(0, 20, 5) = 0, 5, ..., 20, then 20 repeated, clipped to 19
    assert S.dense_train(20, 16, 4, rng) == [0, 5, 10, 15] + [19] * 12
    assert S.dense_train(3, 4, 4, rng) == [2, 2, 2, 2]  # 3 // 4 = 0 spread frames: the last


def test_segment_sampling():
    # 32 frames, 8 segments, tick 4: view 0 at int(4x), view 1 at int(2 + 4x)
    assert S.segment_test(32, 8, 2) == [[4 * t for t in range(8)], [2 + 4 * t for t in range(8)]]
    assert S.segment_test(32, 8, 1) == [[4 * t for t in range(8)]]
    # 35 frames: segments of 35 // 8 = 4 (the last 3 frames never used), one random offset each
    offsets = [3, 0, 1, 2, 3, 0, 1, 2]
    draw = FixedDraw(*offsets)
    assert S.segment_train(35, 8, draw) == [4 * t + o for t, o in enumerate(offsets)]
    assert draw.calls == [(4,)] * 8
    rng = random.Random(1)
    for _ in range(50):
        idx = S.segment_train(35, 8, rng)
        assert all(4 * t <= i < 4 * t + 4 for t, i in enumerate(idx))
    assert S.segment_train(3, 8, rng) == [0] * 8  # fewer frames than segments: frame 0
    assert all(0 <= i < 3 for v in S.segment_test(3, 8, 2) for i in v)
    assert S.min_frames(8, 4, "segment") == 8 and S.min_frames(16, 4, "dense") == 61


# ------------------------------------------------------------------ transforms
def test_three_crops_along_long_side():
    # 4 frames 40 x 100 (H x W); short side -> 20 gives 20 x 50; crops at x = int(c * 15)
    video = torch.randint(0, 256, (4, 40, 100, 3), dtype=torch.uint8)
    views = TR.test_views(video, 20, 3)
    assert views.shape == (3, 3, 4, 20, 20)
    x = torch.nn.functional.interpolate(video.permute(0, 3, 1, 2).float() / 255, size=(20, 50),
                                        mode="bilinear", antialias=False, align_corners=False)
    ref = (x.permute(1, 0, 2, 3) - MEAN) / STD  # (3, T, 20, 50)
    for v, x0 in enumerate([0, 15, 30]):
        torch.testing.assert_close(views[v], ref[..., x0:x0 + 20], atol=U8_TOL, rtol=0)
    # portrait: crops along the height
    tall = video.transpose(1, 2).contiguous()  # (4, 100, 40, 3)
    assert TR.crop_offsets(50, 20, 3) == [0, 15, 30]
    torch.testing.assert_close(TR.test_views(tall, 20, 3)[2], ref.transpose(-1, -2)[..., 30:50, :],
                               atol=U8_TOL, rtol=0)


def test_train_transform_shapes_and_flip():
    video = torch.randint(0, 256, (4, 48, 64, 3), dtype=torch.uint8)
    cfg = TR.TrainTransformConfig(img_size=32, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), flip=False)
    out = TR.train_transform(video, cfg, random.Random(0))
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    # full-frame crop, no flip: equals a plain bilinear resize (no antialiasing, as the
    # authors' random_resized_crop) + normalise
    x = torch.nn.functional.interpolate(video.permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                                        mode="bilinear", antialias=False, align_corners=False)
    torch.testing.assert_close(out, (x.permute(1, 0, 2, 3) - MEAN) / STD, atol=U8_TOL, rtol=0)
    flips = set()
    for s in range(20):
        o = TR.train_transform(video, TR.TrainTransformConfig(img_size=32, scale=(1.0, 1.0),
                                                             ratio=(4 / 3, 4 / 3)), random.Random(s))
        flips.add(torch.allclose(o, out.flip(-1)))
    assert flips == {True, False}


def test_random_resized_crop_box_bounds():
    rng = random.Random(3)
    for _ in range(200):
        t, left, h, w = TR.random_resized_crop_box(120, 160, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= t and t + h <= 120 and 0 <= left and left + w <= 160
        assert 0.08 * 0.9 <= h * w / (120 * 160) <= 1.0


# ------------------------------------------------------------------ dataset
@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("vids")
    make_video(d / "a.mp4", num_frames=40, width=128, height=64, gop=8)
    make_video(d / "b.webm", num_frames=20, width=128, height=64)
    (d / "zero.mp4").write_bytes(b"")
    (d / "c.txt").write_text("hello\n")
    return d


def _uint8_frames(clip):
    """Undo normalisation of (3, T, H, W) -> frames (T, H, W, 3) uint8-ish for frame_index."""
    return ((clip * STD + MEAN).clamp(0, 1) * 255).round().permute(1, 2, 3, 0)


def _hand_view(full, frame_ids, x0):
    """Reference view: chosen frames (already 64 px high, so no resize), 64-px window at x0."""
    x = full[frame_ids][:, :, x0:x0 + 64].permute(3, 0, 1, 2).float() / 255  # (3, T, 64, 64)
    return (x - MEAN) / STD


def test_test_mode_views_clip_major(vids):
    full = decode_all(vids / "a.mp4")  # (40, 64, 128, 3)
    ds = VideoDataset([("a.mp4", 1)], root=vids, mode="test", num_frames=4, sampling_rate=3,
                      img_size=64, num_clips=3, num_crops=3)
    views, label, i = ds[0]
    assert views.shape == (9, 3, 4, 64, 64) and label == 1 and i == 0
    # buffer 0, 3, ..., 39 (14 entries), room 10 -> clips at buffer 0, 5, 10 = frames 0, 15, 30;
    # 3 crops of 64 along 128: x = int(c * 32)
    for v in range(9):
        start, x0 = [0, 15, 30][v // 3], [0, 32, 64][v % 3]
        torch.testing.assert_close(views[v], _hand_view(full, [start + 3 * t for t in range(4)], x0))
    # the frames are the right ones by content, too (left crop holds the low 4 index bits)
    assert [frame_index(f) % 16 for f in _uint8_frames(views[6])] == [(30 + 3 * t) % 16 for t in range(4)]
    # val: one window drawn like training's, fixed per item (the same every epoch), centre crop
    val = VideoDataset([("a.mp4", 1)], root=vids, mode="val", num_frames=4, sampling_rate=3, img_size=64)
    (frames,) = val.clip_indices(40, 0)
    start = frames[0]  # window of 12 ending in [12, 40): linspace(start, start + 12, 4), last - 1
    assert 0 <= start <= 27 and frames == [start, start + 4, start + 8, start + 11]
    centre, _, _ = val[0]
    torch.testing.assert_close(centre, _hand_view(full, frames, 32))
    val.set_epoch(3)
    assert torch.equal(val[0][0], centre)


def test_segment_views(vids):
    full = decode_all(vids / "a.mp4")
    ds = VideoDataset([("a.mp4", 0)], root=vids, mode="test", sampling="segment", num_frames=8,
                      img_size=64, num_clips=2, num_crops=1)
    views, _, _ = ds[0]
    assert views.shape == (2, 3, 8, 64, 64)
    # 40 frames, tick 5: view 0 at int(5x) = 0, 5, ...; view 1 at int(2.5 + 5x) = 2, 7, ...
    for v, off in enumerate([0, 2.5]):
        torch.testing.assert_close(views[v], _hand_view(full, [int(off + 5 * t) for t in range(8)], 32))


def test_determinism_and_epochs(vids):
    kw = dict(root=vids, mode="train", num_frames=4, sampling_rate=2, img_size=32, num_sample=2,
              rand_augment=True, seed=5)
    a, b = VideoDataset([("a.mp4", 0)] * 3, **kw), VideoDataset([("a.mp4", 0)] * 3, **kw)
    torch.manual_seed(123)
    x1 = a[2][0]
    torch.manual_seed(999)  # global RNG state must not matter
    random.seed(7)
    assert torch.equal(x1, b[2][0]) and x1.shape == (2, 3, 4, 32, 32)
    assert not torch.equal(x1[0], x1[1])  # two different augmentations of one decode
    assert not torch.equal(a[1][0], x1)  # other index, other draw
    b.set_epoch(1)
    assert not torch.equal(b[2][0], x1)
    a.set_epoch(1)
    assert torch.equal(a[2][0], b[2][0])
    # the same through DataLoader worker processes
    loader = DataLoader(b, batch_size=3, num_workers=1)
    assert torch.equal(next(iter(loader))[0][2], b[2][0])


def test_bad_videos_stop_or_skip(vids, tmp_path):
    entries = [("a.mp4", 0), ("zero.mp4", 1), ("b.webm", 1), ("c.txt", 0), ("gone.mp4", 1)]
    ds = VideoDataset(entries, root=vids, mode="val", num_frames=4, img_size=32)
    with pytest.raises(BadVideoError, match="zero.mp4"):
        ds[1]
    with pytest.raises(ValueError, match="c.txt"):
        ds[3]
    skip = VideoDataset(entries, root=vids, mode="val", num_frames=4, img_size=32, skip_bad_videos=True)
    assert skip[1].where == "entry 2" and skip[1].reason == "empty file (0 bytes)"
    assert skip[4].path == str(vids / "gone.mp4") and "missing" in skip[4].reason
    # a worker process hands the records (item, list position, path, reason) back through the batch
    loader = DataLoader(skip, batch_size=5, num_workers=1, collate_fn=collate_skip_bad)
    (clips, labels, idx), bad = next(iter(loader))
    assert clips.shape == (2, 3, 4, 32, 32) and idx.tolist() == [0, 2] and labels.tolist() == [0, 1]
    assert [(b.index, b.where) for b in bad] == [(1, "entry 2"), (3, "entry 4"), (4, "entry 5")]
    assert collate_skip_bad([skip[1], skip[4]]) == (None, [skip[1], skip[4]])


def test_list_file_and_classes(vids, tmp_path):
    (tmp_path / "train.csv").write_text("a.mp4 1\nb.webm 0\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = VideoDataset(tmp_path / "train.csv", root=vids, num_frames=4, img_size=32)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 2
    clip, label, _ = ds[1]
    assert clip.shape == (3, 4, 32, 32) and label == 0
    (tmp_path / "bad.csv").write_text("a.mp4 x\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        VideoDataset(tmp_path / "bad.csv")
    folder = tmp_path / "f"
    for c in ("walk", "jump"):
        (folder / c).mkdir(parents=True)
        make_video(folder / c / "v.mp4", num_frames=10)
    fd = VideoDataset.from_folder(folder, mode="val", num_frames=4, img_size=32)
    assert fd.class_names == ["jump", "walk"] and fd.entries == [("jump/v.mp4", 0), ("walk/v.mp4", 1)]
    assert fd[1][0].shape == (3, 4, 32, 32)


def test_the_backbone_normalisation_is_used(vids):
    """Views are normalised with the mean/std the dataset is given (each backbone carries its own)."""
    path = vids / "a.mp4"
    kw = dict(mode="test", num_frames=4, sampling_rate=2, img_size=32, num_clips=1, num_crops=1)
    raw = VideoDataset([(str(path), 0)], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kw)[0][0]
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    clip = VideoDataset([(str(path), 0)], mean=clip_mean, std=clip_std, **kw)[0][0]
    m, s = torch.tensor(clip_mean).view(3, 1, 1, 1), torch.tensor(clip_std).view(3, 1, 1, 1)
    torch.testing.assert_close(clip[0], (raw[0] - m) / s, rtol=1e-5, atol=1e-5)
    assert 0.0 <= raw.min() and raw.max() <= 1.0
